//! The CESM phantom of [`super::physics`] written out as a DICOM dataset: per patient the
//! four screening views as low-energy (LE) and recombined (RC) Digital Mammography For
//! Presentation images, a JSON file of lesion boxes per view, and a `pairs.csv` index.
//! Everything, UIDs included, is a function of the spec, so writing twice gives the same files.

use std::fmt::Write as _;
use std::path::Path;

use crate::phantom::{self, PhantomCase, RoiBox};
use anyhow::Context;
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};

use vcnode::uid::uid_from_name;

/// What to write: `patients` patients of `seed`, images of `rows` × `cols`.
pub struct PhantomDatasetSpec {
    pub patients: usize,
    pub seed: u64,
    pub rows: usize,
    pub cols: usize,
    /// Enhancing lesions per breast, instead of the phantom's own 0 to 3 (non-enhancing masses
    /// keep the phantom's own count).
    pub lesions: Option<usize>,
}

/// Writes, for each patient, 4 views (R CC, L CC, R MLO, L MLO) as LE and RC DICOM files plus a
/// ROI JSON per case, and a `pairs.csv` at the root with header
/// `le,rc,rois,patient,laterality,view,density` (paths relative to the CSV's folder). Returns the
/// number of pairs written.
///
/// Layout: `out/<patient id>/<laterality><view>_LE.dcm`, `…_RC.dcm` and `…_rois.json`
/// (`{"rows":R,"cols":C,"lesions":[RoiBox…]}` in pixel coordinates; each box has
/// `row0,col0,row1,col1` (ends exclusive), `hidden` (hard to see on LE), `iodine_mg_cm2` and
/// `kind`: `"mass"`, `"rim"`, `"non-mass"` (enhancing) or `"non-enhancing"` (a cyst or
/// fibroadenoma, on LE only; not a lesion ROI for evaluation)).
pub fn write_dataset(out: &Path, spec: &PhantomDatasetSpec) -> anyhow::Result<usize> {
    let sizes = 32..=usize::from(u16::MAX);
    anyhow::ensure!(
        sizes.contains(&spec.rows) && sizes.contains(&spec.cols),
        "phantom images are 32 to 65535 pixels a side, not {}x{}",
        spec.rows,
        spec.cols
    );
    let mut csv = String::from("le,rc,rois,patient,laterality,view,density\n");
    let mut pairs = 0;
    for patient in 0..spec.patients {
        let study = Study::new(spec, patient);
        let dir = out.join(&study.patient_id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for image in 0..phantom::VIEWS.len() {
            let mut config = phantom::case_config(spec.seed, patient, image, spec.rows, spec.cols);
            config.lesions = spec.lesions.unwrap_or(config.lesions);
            let case = phantom::simulate(&config);
            let stem = format!("{}{}", case.laterality, case.view);
            let le = study.image(&case, Kind::LowEnergy, image);
            let rc = study.image(&case, Kind::Recombined, image);
            for (object, kind) in [(le, Kind::LowEnergy), (rc, Kind::Recombined)] {
                let path = dir.join(format!("{stem}_{}.dcm", kind.suffix()));
                object
                    .write_to_file(&path)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            let rois = RoiFile {
                rows: case.rows,
                cols: case.cols,
                lesions: &case.lesions,
            };
            let path = dir.join(format!("{stem}_rois.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(&rois)?)
                .with_context(|| format!("writing {}", path.display()))?;
            let id = &study.patient_id;
            writeln!(
                csv,
                "{id}/{stem}_LE.dcm,{id}/{stem}_RC.dcm,{id}/{stem}_rois.json,{id},{},{},{}",
                case.laterality,
                case.view,
                case.density.as_str()
            )?;
            pairs += 1;
        }
    }
    let path = out.join("pairs.csv");
    std::fs::write(&path, csv).with_context(|| format!("writing {}", path.display()))?;
    Ok(pairs)
}

/// The lesion boxes of one view, as written next to its images.
#[derive(serde::Serialize)]
struct RoiFile<'a> {
    rows: usize,
    cols: usize,
    lesions: &'a [RoiBox],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LowEnergy,
    Recombined,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::LowEnergy => "LE",
            Kind::Recombined => "RC",
        }
    }
}

/// The identifiers one patient's images share: one study, one LE and one RC series.
struct Study {
    /// Names every UID of this patient derives from: dataset seed, patient and image size.
    name: String,
    patient_id: String,
    patient_name: String,
    study_uid: String,
}

impl Study {
    fn new(spec: &PhantomDatasetSpec, patient: usize) -> Study {
        let name = format!(
            "vcnode-phantom-{}-{patient}-{}x{}",
            spec.seed, spec.rows, spec.cols
        );
        Study {
            study_uid: uid_from_name(&format!("{name}-study")),
            name,
            patient_id: format!("PHANTOM-{}-{patient:04}", spec.seed),
            patient_name: format!("PHANTOM^{}-{patient}", spec.seed),
        }
    }

    fn series_uid(&self, kind: Kind) -> String {
        uid_from_name(&format!("{}-series-{}", self.name, kind.suffix()))
    }

    fn sop_uid(&self, case: &PhantomCase, kind: Kind) -> String {
        uid_from_name(&format!(
            "{}-{}{}-{}",
            self.name,
            case.laterality,
            case.view,
            kind.suffix()
        ))
    }

    /// One image of `case` as a Part 10 object in Explicit VR Little Endian.
    fn image(&self, case: &PhantomCase, kind: Kind, image: usize) -> FileDicomObject<InMemDicomObject> {
        let sop_class = vcnode_scp::MG_FOR_PRESENTATION;
        let sop = self.sop_uid(case, kind);
        // Image Type per PS3.3 C.8.11.7.1.4 for contrast-enhanced mammography: value 3 is the
        // contrast phase, value 4 SUBTRACTION marks the recombined image, value 5 the energy;
        // values 4 and 5 are present for contrast-enhanced images even when empty.
        let (image_type, series_number, description, pixels, (center, width)) = match kind {
            Kind::LowEnergy => (
                ["ORIGINAL", "PRIMARY", "POST_CONTRAST", "", "LOW_ENERGY"].as_slice(),
                "1",
                "CESM low energy (phantom)",
                &case.le,
                case.le_window,
            ),
            Kind::Recombined => (
                ["DERIVED", "PRIMARY", "POST_CONTRAST", "SUBTRACTION", ""].as_slice(),
                "2",
                "CESM recombined (phantom)",
                &case.rc,
                case.rc_window,
            ),
        };
        let spacing = ds(phantom::pixel_spacing_mm(case.rows, case.cols));
        let spacing = format!("{spacing}\\{spacing}");
        let laterality = case.laterality.to_string();

        let mut obj = InMemDicomObject::new_empty();
        let mut s = |tag, vr, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
        s(tags::SOP_CLASS_UID, VR::UI, sop_class);
        s(tags::SOP_INSTANCE_UID, VR::UI, &sop);
        // Patient and study.
        s(tags::PATIENT_NAME, VR::PN, &self.patient_name);
        s(tags::PATIENT_ID, VR::LO, &self.patient_id);
        s(tags::PATIENT_BIRTH_DATE, VR::DA, "");
        s(tags::PATIENT_SEX, VR::CS, "F");
        s(tags::STUDY_INSTANCE_UID, VR::UI, &self.study_uid);
        s(tags::STUDY_DATE, VR::DA, "20260101");
        s(tags::STUDY_TIME, VR::TM, "090000");
        s(tags::STUDY_ID, VR::SH, "1");
        s(tags::ACCESSION_NUMBER, VR::SH, "");
        s(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
        s(tags::STUDY_DESCRIPTION, VR::LO, "CESM phantom");
        // Series and equipment.
        s(tags::MODALITY, VR::CS, "MG");
        s(tags::SERIES_INSTANCE_UID, VR::UI, &self.series_uid(kind));
        s(tags::SERIES_NUMBER, VR::IS, series_number);
        s(tags::SERIES_DATE, VR::DA, "20260101");
        s(tags::SERIES_TIME, VR::TM, "090000");
        s(tags::SERIES_DESCRIPTION, VR::LO, description);
        s(tags::BODY_PART_EXAMINED, VR::CS, "BREAST");
        s(tags::ORGAN_EXPOSED, VR::CS, "BREAST");
        s(tags::PRESENTATION_INTENT_TYPE, VR::CS, "FOR PRESENTATION");
        s(tags::MANUFACTURER, VR::LO, "vcnode phantom");
        // Image.
        s(tags::INSTANCE_NUMBER, VR::IS, &(image + 1).to_string());
        s(tags::CONTENT_DATE, VR::DA, "20260101");
        s(tags::CONTENT_TIME, VR::TM, "090000");
        s(tags::IMAGE_LATERALITY, VR::CS, &laterality);
        s(tags::VIEW_POSITION, VR::CS, case.view);
        s(
            tags::PATIENT_ORIENTATION,
            VR::CS,
            &patient_orientation(case.laterality, case.view),
        );
        s(tags::POSITIONER_TYPE, VR::CS, "MAMMOGRAPHIC");
        s(tags::DETECTOR_TYPE, VR::CS, "DIRECT");
        s(tags::PIXEL_SPACING, VR::DS, &spacing);
        s(tags::IMAGER_PIXEL_SPACING, VR::DS, &spacing);
        s(tags::BREAST_IMPLANT_PRESENT, VR::CS, "NO");
        s(tags::BURNED_IN_ANNOTATION, VR::CS, "NO");
        s(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        s(tags::CONTRAST_BOLUS_AGENT, VR::LO, "IODINE");
        s(tags::CONTRAST_BOLUS_ROUTE, VR::LO, "IV");
        // Pixels: log attenuation, so higher values mean less X-ray intensity (sign -1).
        s(tags::PIXEL_INTENSITY_RELATIONSHIP, VR::CS, "LOG");
        s(tags::RESCALE_INTERCEPT, VR::DS, "0");
        s(tags::RESCALE_SLOPE, VR::DS, "1");
        s(tags::RESCALE_TYPE, VR::LO, "US");
        s(tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
        s(tags::WINDOW_CENTER, VR::DS, &ds(center));
        s(tags::WINDOW_WIDTH, VR::DS, &ds(width));
        if kind == Kind::Recombined {
            s(
                tags::DERIVATION_DESCRIPTION,
                VR::ST,
                "Recombined: ln(HE) - w ln(LE), w cancels glandular tissue",
            );
        }

        let strings = |values: &[&str]| PrimitiveValue::Strs(values.iter().map(|v| v.to_string()).collect());
        obj.put(DataElement::new(tags::IMAGE_TYPE, VR::CS, strings(image_type)));
        obj.put(DataElement::new(
            tags::PIXEL_INTENSITY_RELATIONSHIP_SIGN,
            VR::SS,
            PrimitiveValue::from(-1i16),
        ));
        put_sequence(
            &mut obj,
            tags::ANATOMIC_REGION_SEQUENCE,
            vec![code("76752008", "Breast")],
        );
        let mut view = match case.view {
            "CC" => code("399162004", "cranio-caudal"),
            _ => code("399368009", "medio-lateral oblique"),
        };
        put_sequence(&mut view, tags::VIEW_MODIFIER_CODE_SEQUENCE, Vec::new());
        put_sequence(&mut obj, tags::VIEW_CODE_SEQUENCE, vec![view]);
        put_sequence(&mut obj, tags::ACQUISITION_CONTEXT_SEQUENCE, Vec::new());
        if kind == Kind::Recombined {
            let mut source = InMemDicomObject::new_empty();
            let le_uid = self.sop_uid(case, Kind::LowEnergy);
            for (tag, uid) in [
                (tags::REFERENCED_SOP_CLASS_UID, sop_class),
                (tags::REFERENCED_SOP_INSTANCE_UID, &le_uid),
            ] {
                source.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(uid)));
            }
            put_sequence(&mut obj, tags::SOURCE_IMAGE_SEQUENCE, vec![source]);
        }

        vcnode::pixels::put_monochrome12(&mut obj, case.rows, case.cols, pixels.to_vec());

        let meta = vcnode::store::explicit_le_meta(sop_class, &sop).expect("complete file meta");
        obj.with_exact_meta(meta)
    }
}

/// Patient Orientation (0020,0020) of a mammogram as the phantom lays it out. Along a row the
/// image runs away from the chest wall (anterior, A) when the chest wall is on the left, else
/// towards it (posterior, P). Down a column it runs from the lateral side of the breast towards
/// the other breast, so to the patient's left for a right breast, and also to the feet (F) in
/// MLO. Right breast: `P\L` (CC), `P\FL` (MLO); left breast: `A\R`, `A\FR`.
fn patient_orientation(laterality: char, view: &str) -> String {
    let row = if phantom::chest_wall_on_left(laterality) {
        "A"
    } else {
        "P"
    };
    let medial = if laterality == 'R' { "L" } else { "R" };
    let feet = if view == "MLO" { "F" } else { "" };
    format!("{row}\\{feet}{medial}")
}

/// A SNOMED CT code sequence item.
fn code(value: &str, meaning: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
        DataElement::new(
            tags::CODING_SCHEME_DESIGNATOR,
            VR::SH,
            PrimitiveValue::from("SCT"),
        ),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
    ])
}

fn put_sequence(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A decimal string (DS) for `v` to 4 decimals, without trailing zeros.
fn ds(v: f32) -> String {
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_object::open_file;

    fn strings(obj: &InMemDicomObject, tag: Tag) -> Vec<String> {
        obj.element(tag).unwrap().to_multi_str().unwrap().to_vec()
    }

    fn string(obj: &InMemDicomObject, tag: Tag) -> String {
        obj.element(tag).unwrap().to_str().unwrap().trim().to_string()
    }

    #[test]
    fn writes_a_deterministic_paired_dataset() {
        let spec = PhantomDatasetSpec {
            patients: 1,
            seed: 9,
            rows: 256,
            cols: 208,
            lesions: None,
        };
        let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        assert_eq!(write_dataset(first.path(), &spec).unwrap(), 4);
        assert_eq!(write_dataset(second.path(), &spec).unwrap(), 4);

        let csv = std::fs::read_to_string(first.path().join("pairs.csv")).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("le,rc,rois,patient,laterality,view,density"));
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 4);
        let views: Vec<(&str, &str)> = rows.iter().map(|r| (r[4], r[5])).collect();
        assert_eq!(views, [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]);

        for row in &rows {
            assert_eq!(row[3], "PHANTOM-9-0000");
            assert!(["A", "B", "C", "D"].contains(&row[6]));
            let rois: serde_json::Value =
                serde_json::from_slice(&std::fs::read(first.path().join(row[2])).unwrap()).unwrap();
            assert_eq!(
                (rois["rows"].as_u64(), rois["cols"].as_u64()),
                (Some(256), Some(208))
            );
            let lesions: Vec<RoiBox> = serde_json::from_value(rois["lesions"].clone()).unwrap();
            assert!(lesions
                .iter()
                .all(|b| b.row0 < b.row1 && b.row1 <= 256 && b.col1 <= 208));
            // Every box says what it holds.
            assert!(rois["lesions"].as_array().unwrap().iter().all(|l| [
                "mass",
                "rim",
                "non-mass",
                "non-enhancing"
            ]
            .contains(&l["kind"].as_str().unwrap())));

            let le = open_file(first.path().join(row[0])).unwrap();
            let rc = open_file(first.path().join(row[1])).unwrap();
            assert_eq!(
                strings(&le, tags::IMAGE_TYPE),
                ["ORIGINAL", "PRIMARY", "POST_CONTRAST", "", "LOW_ENERGY"]
            );
            assert_eq!(
                strings(&rc, tags::IMAGE_TYPE),
                ["DERIVED", "PRIMARY", "POST_CONTRAST", "SUBTRACTION", ""]
            );
            for obj in [&le, &rc] {
                assert_eq!(string(obj, tags::SOP_CLASS_UID), vcnode_scp::MG_FOR_PRESENTATION);
                assert_eq!(obj.meta().transfer_syntax(), vcnode_scp::EXPLICIT_VR_LE);
                assert_eq!(string(obj, tags::MODALITY), "MG");
                assert_eq!(string(obj, tags::IMAGE_LATERALITY), row[4]);
                assert_eq!(string(obj, tags::VIEW_POSITION), row[5]);
                assert_eq!(obj.element(tags::ROWS).unwrap().to_int::<u16>().unwrap(), 256);
                assert_eq!(obj.element(tags::COLUMNS).unwrap().to_int::<u16>().unwrap(), 208);
                assert_eq!(
                    obj.element(tags::BITS_STORED).unwrap().to_int::<u16>().unwrap(),
                    12
                );
                let bytes = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
                assert_eq!(bytes.len(), 2 * 256 * 208);
                assert!(bytes.chunks(2).all(|v| u16::from_le_bytes([v[0], v[1]]) <= 4095));
            }
            let orientation = strings(&le, tags::PATIENT_ORIENTATION);
            let expected = match (row[4], row[5]) {
                ("R", "CC") => ["P", "L"],
                ("L", "CC") => ["A", "R"],
                ("R", "MLO") => ["P", "FL"],
                _ => ["A", "FR"],
            };
            assert_eq!(orientation, expected);
            assert_eq!(
                string(&le, tags::STUDY_INSTANCE_UID),
                string(&rc, tags::STUDY_INSTANCE_UID)
            );
            assert_ne!(
                string(&le, tags::SERIES_INSTANCE_UID),
                string(&rc, tags::SERIES_INSTANCE_UID)
            );
            assert_ne!(
                string(&le, tags::SOP_INSTANCE_UID),
                string(&rc, tags::SOP_INSTANCE_UID)
            );

            // The second run wrote the same instances, byte for byte.
            for path in [row[0], row[1], row[2]] {
                let again = std::fs::read(second.path().join(path)).unwrap();
                assert_eq!(std::fs::read(first.path().join(path)).unwrap(), again, "{path}");
            }
            let le_again = open_file(second.path().join(row[0])).unwrap();
            assert_eq!(
                string(&le, tags::SOP_INSTANCE_UID),
                string(&le_again, tags::SOP_INSTANCE_UID)
            );
        }
        let study_uids: std::collections::HashSet<String> = rows
            .iter()
            .map(|r| {
                string(
                    &open_file(first.path().join(r[0])).unwrap(),
                    tags::STUDY_INSTANCE_UID,
                )
            })
            .collect();
        assert_eq!(study_uids.len(), 1, "one study per patient");
    }

    #[test]
    fn an_enriched_dataset_has_the_asked_lesions_per_breast() {
        let out = tempfile::tempdir().unwrap();
        let spec = PhantomDatasetSpec {
            patients: 2,
            seed: 5,
            rows: 512,
            cols: 416,
            lesions: Some(3),
        };
        assert_eq!(write_dataset(out.path(), &spec).unwrap(), 8);
        let counts: Vec<usize> = std::fs::read_to_string(out.path().join("pairs.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|line| {
                let rois = std::fs::read(out.path().join(line.split(',').nth(2).unwrap())).unwrap();
                let rois: serde_json::Value = serde_json::from_slice(&rois).unwrap();
                let lesions: Vec<RoiBox> = serde_json::from_value(rois["lesions"].clone()).unwrap();
                lesions.iter().filter(|b| b.kind.enhances()).count()
            })
            .collect();
        // Three each, fewer only where a breast has no room for another.
        assert!(counts.iter().all(|&n| (1..=3).contains(&n)), "{counts:?}");
        assert!(counts.iter().sum::<usize>() >= 20, "{counts:?}");
    }

    #[test]
    fn refuses_sizes_dicom_or_the_phantom_cannot_hold() {
        let out = tempfile::tempdir().unwrap();
        for (rows, cols) in [(16, 208), (256, 70_000)] {
            let spec = PhantomDatasetSpec {
                patients: 1,
                seed: 1,
                rows,
                cols,
                lesions: None,
            };
            assert!(write_dataset(out.path(), &spec).is_err());
        }
    }

    #[test]
    fn decimal_strings_are_short() {
        assert_eq!(ds(0.1), "0.1");
        assert_eq!(ds(2871.5), "2871.5");
        assert_eq!(ds(1000.0), "1000");
        assert_eq!(ds(1113.3334), "1113.3334");
        assert_eq!(ds(25.6 * 10.0 / 208.0), "1.2308");
    }
}
