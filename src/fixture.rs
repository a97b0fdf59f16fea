//! Synthetic DICOM mammograms for tests and benchmarks: a breast-shaped, noisy 12-bit image
//! with the attributes a modality sends. Deterministic for a seed. Not a physics phantom: the
//! paired LE/RC phantom for training and evaluation lives in the research lab (`vcnode-lab`).

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};

use crate::uid::uid_from_name;

/// CT Image Storage, for "wrong class" tests.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";

#[derive(Debug, Clone)]
pub struct MammogramSpec {
    pub rows: u16,
    pub columns: u16,
    pub sop_class_uid: String,
    /// Image Type values, e.g. `ORIGINAL\PRIMARY\POST_CONTRAST\\LOW_ENERGY`.
    pub image_type: String,
    /// "L" or "R".
    pub laterality: String,
    pub view: String,
    pub seed: u64,
    /// Instances with the same study seed share Study and Series UIDs.
    pub study_seed: u64,
}

impl MammogramSpec {
    /// A CESM low-energy For Presentation image.
    pub fn low_energy(seed: u64) -> Self {
        MammogramSpec {
            rows: 512,
            columns: 416,
            sop_class_uid: vcnode_scp::MG_FOR_PRESENTATION.into(),
            image_type: "ORIGINAL\\PRIMARY\\POST_CONTRAST\\\\LOW_ENERGY".into(),
            laterality: if seed % 2 == 0 { "L" } else { "R" }.into(),
            view: "CC".into(),
            seed,
            study_seed: 1,
        }
    }
}

/// Deterministic xorshift64*, enough for texture noise.
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Pixel values: 12-bit, a half ellipse against the chest wall, which is on the right edge of
/// an R image and the left edge of an L image (PS3.3 C.7.6.1.1.1 with the orientations below).
pub fn pixels(spec: &MammogramSpec) -> Vec<u16> {
    let (rows, cols) = (spec.rows as usize, spec.columns as usize);
    let mut noise = Noise(spec.seed.wrapping_mul(0x9E3779B97F4A7C15) | 1);
    let mut out = vec![0u16; rows * cols];
    let (cy, ry, rx) = (rows as f32 / 2.0, rows as f32 * 0.45, cols as f32 * 0.8);
    for r in 0..rows {
        for c in 0..cols {
            let x = if spec.laterality == "R" {
                (cols - 1 - c) as f32
            } else {
                c as f32
            };
            let d = ((r as f32 - cy) / ry).powi(2) + (x / rx).powi(2);
            let tissue = if d < 1.0 {
                1500.0 + 1200.0 * (1.0 - d).sqrt()
            } else {
                150.0
            };
            let v = tissue + 60.0 * (noise.next() - 0.5);
            out[r * cols + c] = v.clamp(0.0, 4095.0) as u16;
        }
    }
    out
}

/// A complete Part 10 object for `spec`, in Explicit VR Little Endian.
pub fn mammogram(spec: &MammogramSpec) -> FileDicomObject<InMemDicomObject> {
    let study = uid_from_name(&format!("vcnode-fixture-study-{}", spec.study_seed));
    let series = uid_from_name(&format!(
        "vcnode-fixture-series-{}-{}",
        spec.study_seed, spec.sop_class_uid
    ));
    let sop = uid_from_name(&format!(
        "vcnode-fixture-instance-{}-{}",
        spec.seed, spec.sop_class_uid
    ));
    let modality = if spec.sop_class_uid == CT_IMAGE_STORAGE {
        "CT"
    } else {
        "MG"
    };
    let mut obj = InMemDicomObject::new_empty();
    let mut s = |tag, vr, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    s(tags::SOP_CLASS_UID, VR::UI, &spec.sop_class_uid);
    s(tags::SOP_INSTANCE_UID, VR::UI, &sop);
    s(tags::STUDY_INSTANCE_UID, VR::UI, &study);
    s(tags::SERIES_INSTANCE_UID, VR::UI, &series);
    s(tags::STUDY_DATE, VR::DA, "20261126");
    s(tags::STUDY_TIME, VR::TM, "101500");
    s(tags::ACCESSION_NUMBER, VR::SH, &format!("ACC{}", spec.study_seed));
    s(tags::MODALITY, VR::CS, modality);
    s(tags::MANUFACTURER, VR::LO, "vcnode fixture");
    s(tags::PATIENT_NAME, VR::PN, "FIXTURE^MAMMO");
    s(tags::PATIENT_ID, VR::LO, &format!("FIX{}", spec.study_seed));
    s(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101");
    s(tags::PATIENT_SEX, VR::CS, "F");
    s(tags::STUDY_ID, VR::SH, "1");
    s(tags::SERIES_NUMBER, VR::IS, "1");
    s(tags::INSTANCE_NUMBER, VR::IS, &(spec.seed % 10000).to_string());
    s(tags::IMAGE_LATERALITY, VR::CS, &spec.laterality);
    s(tags::VIEW_POSITION, VR::CS, &spec.view);
    s(
        tags::PATIENT_ORIENTATION,
        VR::CS,
        if spec.laterality == "R" { "P\\L" } else { "A\\R" },
    );
    s(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PRESENTATION");
    s(tags::WINDOW_CENTER, VR::DS, "2000");
    s(tags::WINDOW_WIDTH, VR::DS, "4000");
    s(tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
    let image_type: Vec<String> = spec.image_type.split('\\').map(String::from).collect();
    obj.put(DataElement::new(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(image_type.into()),
    ));
    crate::pixels::put_monochrome12(&mut obj, spec.rows as usize, spec.columns as usize, pixels(spec));
    let meta = crate::store::explicit_le_meta(&spec.sop_class_uid, &sop).expect("complete file meta");
    obj.with_exact_meta(meta)
}
