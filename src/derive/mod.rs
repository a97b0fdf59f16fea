//! The derived instance: a Secondary Capture image holding the synthetic RC for one LE image,
//! pixel-aligned with it, in a new series of the same study, marked as AI-generated in every
//! way DICOM offers (DESIGN.md "DICOM output") and with a burned-in label.

mod label;

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};

pub use label::burn_in;

use crate::uid::uid_from_name;

/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// The start of every synthetic RC series' description.
pub const SERIES_DESCRIPTION_PREFIX: &str = "AI SYNTHETIC RC – NOT ACQUIRED";

/// The burned-in line under the label of an image made from an input the out-of-distribution
/// guard flagged.
pub const OOD_LABEL: &str = "INPUT OUTSIDE TRAINING DATA - UNRELIABLE";

/// What a derived instance shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DerivedKind {
    /// The synthetic recombined image.
    SyntheticRc,
    /// The pixel-attention map of the generator's last SCPA layer (values 0–1 as 0–4095).
    AttentionMap,
}

impl DerivedKind {
    fn name(self) -> &'static str {
        match self {
            DerivedKind::SyntheticRc => "rc",
            DerivedKind::AttentionMap => "attention",
        }
    }
    fn series_description(self) -> &'static str {
        match self {
            DerivedKind::SyntheticRc => SERIES_DESCRIPTION_PREFIX,
            DerivedKind::AttentionMap => "AI ATTENTION MAP – NOT ACQUIRED",
        }
    }
    fn series_number(self) -> &'static str {
        match self {
            DerivedKind::SyntheticRc => "9901",
            DerivedKind::AttentionMap => "9902",
        }
    }
    /// The burned-in label.
    pub fn label(self) -> [&'static str; 2] {
        match self {
            DerivedKind::SyntheticRc => ["AI-GENERATED", "SYNTHETIC RC - NOT ACQUIRED"],
            DerivedKind::AttentionMap => ["AI-GENERATED", "ATTENTION MAP - NOT ACQUIRED"],
        }
    }
    fn what(self) -> &'static str {
        match self {
            DerivedKind::SyntheticRc => "Synthetic recombined (RC) image computed by the AI model",
            DerivedKind::AttentionMap => {
                "Synthetic: pixel-attention map of the last SCPA layer of the AI model"
            }
        }
    }
}

/// Which model made the image; goes into UIDs and the equipment attributes.
#[derive(Debug, Clone)]
pub struct Synthesizer {
    /// e.g. `scpa-unet-1a2b3c4d5e6f`
    pub model_id: String,
    pub weights_sha256: String,
    /// Burn the label into the pixels.
    pub burn_in_label: bool,
}

/// The synthetic RC in the LE's geometry, as [0, 1] values of the RC display window.
pub struct SyntheticRc<'a> {
    pub rows: usize,
    pub cols: usize,
    pub unit: &'a [f32],
    pub chest_wall_left: bool,
    /// How the input window was chosen, for the derivation description.
    pub input_window_note: &'a str,
    /// Set when the out-of-distribution guard flagged the input: the sentence for the
    /// Derivation Description (and Image Comments); [`OOD_LABEL`] is burned in too.
    pub out_of_distribution: Option<&'a str>,
}

/// Deterministic (series, instance) UIDs: the same source and weights always give the same
/// UIDs, so reprocessing and retries are de-duplicated by the receiving PACS.
pub fn derived_uids(
    source_series: &str,
    source_sop: &str,
    synth: &Synthesizer,
    kind: DerivedKind,
) -> (String, String) {
    // The synthetic RC keeps the names it had before attention maps existed.
    let k = match kind {
        DerivedKind::SyntheticRc => String::new(),
        other => format!(" {}", other.name()),
    };
    (
        uid_from_name(&format!(
            "vcnode derived series{k} {source_series} {}",
            synth.weights_sha256
        )),
        uid_from_name(&format!(
            "vcnode derived instance{k} {source_sop} {}",
            synth.weights_sha256
        )),
    )
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
}

/// UTC now as DICOM DA, TM and DT.
pub fn now_utc() -> (String, String, String) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let da = format!("{y:04}{m:02}{d:02}");
    let tm = format!("{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    let dt = format!("{da}{tm}+0000");
    (da, tm, dt)
}

fn code_item(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from(scheme),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ])
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// Patient and Study attributes copied from the source, so the series joins the real study;
/// `true` marks Type 2 attributes of the SC IOD, present (empty) even when the source lacks them.
const COPIED: &[(Tag, VR, bool)] = &[
    (tags::PATIENT_NAME, VR::PN, true),
    (tags::PATIENT_ID, VR::LO, true),
    (tags::ISSUER_OF_PATIENT_ID, VR::LO, false),
    (tags::PATIENT_BIRTH_DATE, VR::DA, true),
    (tags::PATIENT_SEX, VR::CS, true),
    (tags::PATIENT_AGE, VR::AS, false),
    (tags::STUDY_INSTANCE_UID, VR::UI, true),
    (tags::STUDY_DATE, VR::DA, true),
    (tags::STUDY_TIME, VR::TM, true),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN, true),
    (tags::STUDY_ID, VR::SH, true),
    (tags::ACCESSION_NUMBER, VR::SH, true),
    (tags::STUDY_DESCRIPTION, VR::LO, false),
    (tags::PATIENT_ORIENTATION, VR::CS, true),
    (tags::INSTANCE_NUMBER, VR::IS, true),
];

/// Builds the derived Secondary Capture instance for `source` (the LE data set).
pub fn build(
    source: &InMemDicomObject,
    rc: &SyntheticRc,
    synth: &Synthesizer,
    kind: DerivedKind,
) -> anyhow::Result<FileDicomObject<InMemDicomObject>> {
    anyhow::ensure!(
        rc.unit.len() == rc.rows * rc.cols,
        "synthetic RC size does not match"
    );
    let source_sop = text(source, tags::SOP_INSTANCE_UID)
        .ok_or_else(|| anyhow::anyhow!("source lacks SOP Instance UID"))?;
    let source_class =
        text(source, tags::SOP_CLASS_UID).ok_or_else(|| anyhow::anyhow!("source lacks SOP Class UID"))?;
    let source_series = text(source, tags::SERIES_INSTANCE_UID)
        .ok_or_else(|| anyhow::anyhow!("source lacks Series Instance UID"))?;
    let (series_uid, sop_uid) = derived_uids(&source_series, &source_sop, synth, kind);
    let (da, tm, dt) = now_utc();

    let mut obj = InMemDicomObject::new_empty();
    // UTF-8 throughout: the description uses an en dash and names may come from any charset.
    obj.put(DataElement::new(
        tags::SPECIFIC_CHARACTER_SET,
        VR::CS,
        PrimitiveValue::from("ISO_IR 192"),
    ));
    for &(tag, vr, type2) in COPIED {
        match source.element(tag) {
            Ok(e) => obj.put(DataElement::new(tag, vr, e.value().clone())),
            Err(_) if type2 => obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty)),
            Err(_) => None,
        };
    }
    let mut put = |tag: Tag, vr: VR, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    put(tags::SOP_CLASS_UID, VR::UI, SECONDARY_CAPTURE);
    put(tags::SOP_INSTANCE_UID, VR::UI, &sop_uid);
    put(tags::INSTANCE_CREATION_DATE, VR::DA, &da);
    put(tags::INSTANCE_CREATION_TIME, VR::TM, &tm);
    put(tags::CONTENT_DATE, VR::DA, &da);
    put(tags::CONTENT_TIME, VR::TM, &tm);
    put(tags::SERIES_INSTANCE_UID, VR::UI, &series_uid);
    put(tags::SERIES_NUMBER, VR::IS, kind.series_number());
    put(tags::MODALITY, VR::CS, "MG");
    put(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &format!("{} {}", kind.series_description(), synth.model_id),
    );
    put(tags::SYNTHETIC_DATA, VR::CS, "YES");
    put(tags::CONVERSION_TYPE, VR::CS, "SYN");
    put(tags::MANUFACTURER, VR::LO, "vcnode");
    put(tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER, VR::LO, "vcnode");
    put(
        tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME,
        VR::LO,
        &synth.model_id,
    );
    put(
        tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    put(
        tags::BURNED_IN_ANNOTATION,
        VR::CS,
        if synth.burn_in_label { "YES" } else { "NO" },
    );
    let mut derivation = format!(
        "{} {} from the low-energy image only; \
         no contrast-enhanced acquisition. Not for diagnosis without the acquired images. Input window: {}.",
        kind.what(),
        synth.model_id,
        rc.input_window_note
    );
    if let Some(warning) = rc.out_of_distribution {
        // First, so that a viewer showing only the start of the text shows the warning.
        derivation = format!("{warning} {derivation}");
        put(tags::IMAGE_COMMENTS, VR::LT, warning);
    }
    put(tags::DERIVATION_DESCRIPTION, VR::ST, &derivation);
    // Image Laterality, not the series' Laterality: the SC IOD forbids Laterality when Image
    // Laterality is present.
    if let Some(lat) = text(source, tags::IMAGE_LATERALITY).or_else(|| text(source, tags::LATERALITY)) {
        put(tags::IMAGE_LATERALITY, VR::CS, &lat);
    }
    if let Some(view) = text(source, tags::VIEW_POSITION) {
        put(tags::VIEW_POSITION, VR::CS, &view);
    }
    // The RC display window of the model's training data maps to the full 12-bit range.
    put(tags::WINDOW_CENTER, VR::DS, "2048");
    put(tags::WINDOW_WIDTH, VR::DS, "4096");
    obj.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(["DERIVED".to_string(), "SECONDARY".to_string()].into()),
    ));

    obj.put(sequence(
        tags::SOURCE_IMAGE_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(source_class.as_str()),
            ),
            DataElement::new(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from(source_sop.as_str()),
            ),
            sequence(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code_item(
                    "121322",
                    "DCM",
                    "Source image for image processing operation",
                )],
            ),
        ])],
    ));
    obj.put(sequence(
        tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
        vec![InMemDicomObject::from_element_iter([
            sequence(
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code_item("109100", "DCM", "Synthesizing Equipment")],
            ),
            DataElement::new(tags::MANUFACTURER, VR::LO, PrimitiveValue::from("vcnode")),
            DataElement::new(
                tags::MANUFACTURER_MODEL_NAME,
                VR::LO,
                PrimitiveValue::from(synth.model_id.as_str()),
            ),
            DataElement::new(
                tags::SOFTWARE_VERSIONS,
                VR::LO,
                PrimitiveValue::Strs(
                    [
                        format!("vcnode {}", env!("CARGO_PKG_VERSION")),
                        format!(
                            "weights sha256 {}",
                            &synth.weights_sha256[..16.min(synth.weights_sha256.len())]
                        ),
                    ]
                    .into(),
                ),
            ),
            DataElement::new(
                tags::CONTRIBUTION_DATE_TIME,
                VR::DT,
                PrimitiveValue::from(dt.as_str()),
            ),
            DataElement::new(
                tags::CONTRIBUTION_DESCRIPTION,
                VR::ST,
                PrimitiveValue::from("AI synthesis of a recombined CESM image from the low-energy image"),
            ),
        ])],
    ));

    let mut pixels: Vec<u16> = rc
        .unit
        .iter()
        .map(|&u| (u.clamp(0.0, 1.0) * 4095.0).round() as u16)
        .collect();
    if synth.burn_in_label {
        let mut lines = kind.label().to_vec();
        if rc.out_of_distribution.is_some() {
            lines.push(OOD_LABEL);
        }
        burn_in(&mut pixels, rc.rows, rc.cols, &lines, rc.chest_wall_left, 4095);
    }
    crate::pixels::put_monochrome12(&mut obj, rc.rows, rc.cols, pixels);
    let meta = crate::store::explicit_le_meta(SECONDARY_CAPTURE, &sop_uid)?;
    Ok(obj.with_exact_meta(meta))
}
