// Drives headless Chromium through the OHIF viewer that vcnode serves (tests/viewer.rs).
//
//   node drive.mjs BASE_URL STUDY_UID OUT_DIR PATIENT_ID
//
// 0. With VIEWER_USER and VIEWER_PASSWORD set (a node with [auth] required): opens /, which
//    must send the browser to the login page, signs in there with the form, and comes back to /
//    with the session cookie, which then rides on OHIF's DICOMweb requests (same origin).
// 1. Opens the study list (/) and waits until the study's row (its Patient ID) shows,
//    recording the DICOMweb requests the page made.
// 2. Opens the viewer on the study (/viewer?StudyInstanceUIDs=…) and waits until every
//    viewport of the hanging protocol that holds an image has rendered it (pixel variance of
//    the viewport's canvas above a floor), or until the time limit.
// 3. Saves OUT_DIR/viewer.png and prints one JSON report on stdout: the active hanging
//    protocol and stage, each viewport's id, displayed SOP Instance UID, Series Description,
//    canvas pixel variance and overlay text. The Rust test decides what passes.
//
// Chromium's own path: CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import path from 'node:path';

const [base, study, outDir, patientId] = process.argv.slice(2);
if (!base || !study || !outDir || !patientId) {
  console.error('usage: node drive.mjs BASE_URL STUDY_UID OUT_DIR PATIENT_ID');
  process.exit(2);
}
const LIMIT_MS = Number(process.env.VIEWER_LIMIT_MS || 120000);
const started = Date.now();
const left = () => Math.max(1000, LIMIT_MS - (Date.now() - started));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--headless=new',
    '--no-sandbox',
    '--use-gl=angle',
    '--use-angle=swiftshader',
    '--enable-unsafe-swiftshader',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
  ],
});
const report = { qido: [], console_errors: [], failed_requests: [] };
let page;
try {
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  // Before any page script: no onboarding tour over the image, no investigational-use banner.
  await context.addInitScript(() => {
    localStorage.setItem('shownTours', '["basicViewerTour"]');
    localStorage.setItem(
      'investigationalUseDialog',
      JSON.stringify({ expiryDate: new Date(Date.now() + 864e5).toISOString() })
    );
    sessionStorage.setItem('investigationalUseDialog', 'hidden');
  });
  page = await context.newPage();
  page.on('request', r => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/dicomweb/')) {
      report.qido.push(`${r.method()} ${u.pathname}${u.search}`);
    }
  });
  page.on('requestfailed', r => report.failed_requests.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', r => {
    if (r.status() >= 400) report.failed_requests.push(`${r.status()} ${r.url()}`);
  });
  page.on('console', m => {
    if (m.type() === 'error') report.console_errors.push(m.text().slice(0, 300));
  });

  if (process.env.VIEWER_USER) {
    await page.goto(base + '/', { waitUntil: 'domcontentloaded', timeout: left() });
    const login = new URL(page.url());
    report.login = { page: login.pathname + login.search };
    await page.fill('input[name=username]', process.env.VIEWER_USER);
    await page.fill('input[name=password]', process.env.VIEWER_PASSWORD || '');
    await Promise.all([
      page.waitForURL(u => u.pathname === '/', { timeout: left() }),
      page.click('button[type=submit]'),
    ]);
    report.login.signed_in_at = new URL(page.url()).pathname;
    report.login.cookie_http_only = (await context.cookies()).some(
      c => c.name === 'vcnode_session' && c.httpOnly && c.sameSite === 'Strict'
    );
  }

  // The study list.
  await page.goto(base + '/', { waitUntil: 'domcontentloaded', timeout: left() });
  // Until the row shows, or the node refused a DICOMweb request (no point waiting then).
  const refused = () => report.failed_requests.some(r => r.includes('/dicomweb/'));
  let listed = false;
  for (const until = Date.now() + left(); !listed && !refused() && Date.now() < until; ) {
    listed = await page
      .waitForFunction(id => document.body.innerText.includes(id), patientId, { timeout: 500 })
      .then(() => true)
      .catch(() => false);
  }
  report.study_list_text = (await page.evaluate(() => document.body.innerText)).slice(0, 2000);
  report.study_listed = listed;

  if (!listed) {
    throw new Error('the study list does not show the study');
  }

  // The viewer on the study.
  await page.goto(`${base}/viewer?StudyInstanceUIDs=${encodeURIComponent(study)}`, {
    waitUntil: 'domcontentloaded',
    timeout: left(),
  });
  const probe = () => {
    const cs = window.cornerstone;
    const services = window.services;
    const out = { viewports: [] };
    if (!cs || !services) return out;
    const active = services.hangingProtocolService.getActiveProtocol?.();
    out.protocol = active?.protocol?.id;
    out.stage = active?.stage?.name;
    // The viewports the hanging protocol gave a display set: each must come to show an image.
    const grid = services.viewportGridService.getState().viewports;
    const gridViewports = grid instanceof Map ? [...grid.values()] : Object.values(grid || {});
    out.filled = gridViewports.filter(v => v.displaySetInstanceUIDs?.length).map(v => v.viewportId);
    const engine = cs.getRenderingEngines?.()[0];
    if (!engine) return out;
    for (const vp of engine.getViewports()) {
      const imageId = vp.getCurrentImageId?.();
      const item = { id: vp.id, imageId };
      if (imageId) {
        const sop = cs.metaData.get('sopCommonModule', imageId);
        const series = cs.metaData.get('generalSeriesModule', imageId);
        const instance = cs.metaData.get('instance', imageId);
        item.sop = sop?.sopInstanceUID;
        item.series_description = series?.seriesDescription ?? instance?.SeriesDescription;
        item.laterality = instance?.ImageLaterality;
        item.view = instance?.ViewPosition;
      }
      // The canvas the user sees (2D, filled from the WebGL render).
      const canvas = vp.canvas;
      if (canvas && canvas.width > 0 && canvas.height > 0) {
        const ctx = canvas.getContext('2d', { willReadFrequently: true });
        const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
        let n = 0, sum = 0, sq = 0;
        for (let i = 0; i < data.length; i += 16) {
          const y = 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
          n++; sum += y; sq += y * y;
        }
        const mean = sum / n;
        item.variance = sq / n - mean * mean;
        item.canvas = [canvas.width, canvas.height];
      }
      // The overlay is drawn beside the viewport's element: climb to the largest ancestor
      // that holds this viewport only.
      let pane = vp.element;
      while (pane?.parentElement && pane.parentElement.querySelectorAll('[data-viewportid]').length === 1) {
        pane = pane.parentElement;
      }
      item.overlay = pane?.innerText ?? '';
      out.viewports.push(item);
    }
    return out;
  };
  // Done when every viewport the protocol filled shows an image with non-blank pixels, and
  // the derived series is among them (the Rust test judges the result either way).
  const deadline = Date.now() + left();
  let state = { viewports: [] };
  for (;;) {
    state = await page.evaluate(probe).catch(e => ({ viewports: [], error: String(e) }));
    const byId = new Map(state.viewports.map(v => [v.id, v]));
    const filled = state.filled || [];
    const rendered = filled.filter(id => byId.get(id)?.imageId && byId.get(id).variance > 20);
    const derived = state.viewports.filter(v => String(v.series_description || '').startsWith('AI SYNTHETIC RC'));
    if (filled.length > 0 && rendered.length === filled.length && derived.length > 0) break;
    if (Date.now() > deadline) break;
    await page.waitForTimeout(500);
  }
  // Let the overlays (drawn by React after the render) settle, then read them again.
  await page.waitForTimeout(1500);
  state = await page.evaluate(probe).catch(e => ({ viewports: [], error: String(e) }));
  Object.assign(report, state);
  report.page_text = (await page.evaluate(() => document.body.innerText)).slice(0, 4000);
  report.screenshot = path.join(outDir, 'viewer.png');
  await page.screenshot({ path: report.screenshot });
  report.elapsed_ms = Date.now() - started;
} catch (e) {
  report.error = String(e && e.stack ? e.stack : e);
  // What the page showed when it failed.
  report.screenshot = path.join(outDir, 'viewer.png');
  await page?.screenshot({ path: report.screenshot }).catch(() => {});
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));
