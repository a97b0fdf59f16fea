/*
 * OHIF 3.13 configuration served by vcnode at /app-config.js (src/web/viewer.rs compiles this
 * file in; the app-config.js that OHIF ships, pointing at a public demo server, is never served).
 *
 * - One data source: this node's own DICOMweb (/dicomweb on the page's origin, so no CORS).
 * - A mammography hanging protocol, "@vcnode/mammo-le-rc": each low-energy (LE) image beside
 *   the synthetic recombined (RC) image vcnode derived from it, matched by Image Laterality
 *   and View Position and, among repeated exposures of a view, by the RC's Source Image
 *   Sequence. OHIF 3.13 takes extension objects in `extensions` (appInit's
 *   importItems passes non-strings through) and registers an extension's hanging protocol
 *   module with the hangingProtocolService; `modesConfiguration` (immutability-helper
 *   commands applied by the mode factory) makes the Basic Viewer mode consider it before
 *   OHIF's default protocol. It is chosen only for studies with MG images.
 * - The viewport overlay marks derived images: their Series Description ("AI SYNTHETIC RC –
 *   NOT ACQUIRED …", OHIF shows it top left) and, top right, "AI-GENERATED – NOT ACQUIRED"
 *   on every image whose Synthetic Data (0008,001C) is YES.
 */
(function () {
  'use strict';

  const dicomweb = window.location.origin + '/dicomweb';

  // Digital Mammography X-Ray Image Storage, For Presentation and For Processing.
  const MG_IMAGE_CLASSES = ['1.2.840.10008.5.1.4.1.1.1.2', '1.2.840.10008.5.1.4.1.1.1.2.1'];
  // vcnode's derived series (src/derive: SERIES_DESCRIPTION_PREFIX).
  const SYNTHETIC_RC = 'AI SYNTHETIC RC';

  const DERIVED_FROM_HUNG_LE = 'vcnodeDerivedFromHungLe';

  /**
   * Custom hanging protocol attribute (`this` is the rule): whether the display set's image
   * names, in its Source Image Sequence, the LE image matched for `this.leSelector`. OHIF
   * matches a stage's viewports in order, so the LE viewport of a pair is matched before its RC.
   */
  function derivedFromHungLe(displaySet, options) {
    const match = options?.displaySetMatchDetails?.get(this.leSelector);
    const le = match && options?.displaySets?.find(ds => ds.displaySetInstanceUID === match.displaySetInstanceUID);
    const leUid = (le?.instances?.[0] ?? le?.images?.[0])?.SOPInstanceUID;
    const source = (displaySet?.instances?.[0] ?? displaySet?.images?.[0])?.SourceImageSequence;
    const items = Array.isArray(source) ? source : source ? [source] : [];
    return Boolean(leUid) && items.some(item => item?.ReferencedSOPInstanceUID === leUid);
  }

  /** Display set selector: the LE image or the synthetic RC of one breast and view. */
  function selector(laterality, view, kind) {
    const rules = [
      { attribute: 'ImageLaterality', constraint: { equals: laterality }, required: true },
      { attribute: 'ViewPosition', constraint: { equals: view }, required: true },
    ];
    if (kind === 'LE') {
      rules.push(
        { attribute: 'SOPClassUID', constraint: { includes: MG_IMAGE_CLASSES }, required: true },
        // In a CESM study the acquired high-energy and recombined images share laterality
        // and view with the LE image: keep them out, and prefer images marked LOW_ENERGY.
        {
          attribute: 'ImageType',
          constraint: { doesNotInclude: ['HIGH_ENERGY', 'RECOMBINED', 'SUBTRACTION', 'ADDITION'] },
          required: true,
        },
        { attribute: 'ImageType', constraint: { includes: ['LOW_ENERGY'] }, weight: 10 }
      );
    } else {
      rules.push(
        {
          attribute: 'SeriesDescription',
          constraint: { startsWith: SYNTHETIC_RC },
          required: true,
        },
        // Among several RC images of one view (a repeated exposure), the one derived from
        // the LE image hung beside it.
        {
          attribute: DERIVED_FROM_HUNG_LE,
          leSelector: laterality + view + 'LE',
          constraint: { equals: true },
          weight: 20,
        }
      );
    }
    return { seriesMatchingRules: rules };
  }

  const views = [
    ['R', 'CC'],
    ['L', 'CC'],
    ['R', 'MLO'],
    ['L', 'MLO'],
  ];
  const displaySetSelectors = {};
  for (const [laterality, view] of views) {
    displaySetSelectors[laterality + view + 'LE'] = selector(laterality, view, 'LE');
    displaySetSelectors[laterality + view + 'RC'] = selector(laterality, view, 'RC');
  }

  /** The LE viewport and its RC viewport, zoom and pan kept in step. */
  function pair(laterality, view) {
    const sync = { type: 'zoompan', id: 'vcnode-' + laterality + view, source: true, target: true };
    return ['LE', 'RC'].map(kind => ({
      viewportOptions: {
        viewportId: laterality + view + kind,
        toolGroupId: 'default',
        allowUnmatchedView: true,
        syncGroups: [sync],
      },
      displaySets: [{ id: laterality + view + kind }],
    }));
  }

  const mammoLeRc = {
    id: '@vcnode/mammo-le-rc',
    name: 'Mammography: LE beside synthetic RC',
    protocolMatchingRules: [
      {
        id: 'Mammography',
        weight: 200,
        attribute: 'ModalitiesInStudy',
        constraint: { contains: 'MG' },
        required: true,
      },
    ],
    toolGroupIds: ['default'],
    numberOfPriorsReferenced: -1,
    displaySetSelectors,
    stages: [
      {
        // Right breast on the left of the screen, as mammograms are hung.
        name: 'CC and MLO: LE | synthetic RC',
        viewportStructure: { layoutType: 'grid', properties: { rows: 2, columns: 4 } },
        viewports: [...pair('R', 'CC'), ...pair('L', 'CC'), ...pair('R', 'MLO'), ...pair('L', 'MLO')],
        stageActivation: { enabled: { minViewportsMatched: 4 } },
      },
      // One view at a time, larger; also the first stage for a study with a single view.
      ...views.map(([laterality, view]) => ({
        name: laterality + ' ' + view + ': LE | synthetic RC',
        viewportStructure: { layoutType: 'grid', properties: { rows: 1, columns: 2 } },
        viewports: pair(laterality, view),
        stageActivation: { enabled: { minViewportsMatched: 2 } },
      })),
    ],
  };

  const vcnodeExtension = {
    id: '@vcnode/extension-mammography',
    preRegistration: ({ servicesManager }) => {
      servicesManager.services.hangingProtocolService.addCustomAttribute(
        DERIVED_FROM_HUNG_LE,
        'Derived from the LE image hung beside it',
        derivedFromHungLe
      );
    },
    getHangingProtocolModule: () => [{ name: mammoLeRc.id, protocol: mammoLeRc }],
  };

  const aiGenerated = {
    id: 'vcnodeAiGenerated',
    inheritsFrom: 'ohif.overlayItem',
    label: '',
    title: 'Derived by vcnode from the low-energy image; not an acquired image',
    color: '#ffd400',
    condition: ({ referenceInstance }) =>
      referenceInstance?.SyntheticData === 'YES' ||
      String(referenceInstance?.SeriesDescription ?? '').startsWith(SYNTHETIC_RC),
    contentF: () => 'AI-GENERATED – NOT ACQUIRED',
  };
  const lateralityView = {
    id: 'vcnodeLateralityView',
    inheritsFrom: 'ohif.overlayItem',
    label: '',
    title: 'Image Laterality and View Position',
    condition: ({ referenceInstance }) => referenceInstance?.ImageLaterality,
    contentF: ({ referenceInstance }) =>
      [referenceInstance.ImageLaterality, referenceInstance.ViewPosition].filter(Boolean).join(' '),
  };

  window.config = {
    name: 'vcnode',
    routerBasename: null,
    extensions: [vcnodeExtension],
    modes: [],
    modesConfiguration: {
      '@ohif/mode-longitudinal': {
        hangingProtocol: { $set: [mammoLeRc.id, 'default'] },
      },
    },
    customizationService: {
      global: {
        'viewportOverlay.topRight': { $push: [aiGenerated, lateralityView] },
      },
    },
    showStudyList: true,
    maxNumberOfWebWorkers: 3,
    showWarningMessageForCrossOrigin: false,
    showCPUFallbackMessage: true,
    showLoadingIndicator: true,
    strictZSpacingForVolumeViewport: true,
    groupEnabledModesFirst: true,
    maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
    showErrorDetails: 'always',
    defaultDataSourceName: 'vcnode',
    dataSources: [
      {
        namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
        sourceName: 'vcnode',
        configuration: {
          friendlyName: 'vcnode',
          name: 'vcnode',
          qidoRoot: dicomweb,
          wadoRoot: dicomweb,
          wadoUriRoot: dicomweb,
          qidoSupportsIncludeField: true,
          imageRendering: 'wadors',
          thumbnailRendering: 'wadors',
          enableStudyLazyLoad: true,
          supportsFuzzyMatching: false,
          supportsWildcard: true,
          staticWado: false,
          singlepart: 'bulkdata,video',
          bulkDataURI: { enabled: true, relativeResolution: 'studies' },
          omitQuotationForMultipartRequest: true,
        },
      },
    ],
  };
})();
