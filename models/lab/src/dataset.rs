//! Paired LE/RC training and evaluation data: where the pairs are, and loading them through
//! the shared preprocessing.
//!
//! A data source is either a CSV file with columns `le,rc[,rois]` (paths relative to the CSV;
//! `vcnode-lab phantom` writes one as `pairs.csv`), or a folder searched recursively for pairs
//! named `<case>_LE.dcm` / `<case>_RC.dcm`, or named like CDD-CESM (`P1_L_DM_MLO.jpg` low
//! energy / `P1_L_CM_MLO.jpg` recombined, in the same folder or, as CDD-CESM ships them, in
//! sibling folders). Images are DICOM, or rendered JPEG/PNG ([`pixels::read_rendered`]).
//!
//! Lesion ROIs come from `<case>_rois.json` beside a `<case>_LE.dcm` (the phantom's layout; only
//! its enhancing lesions: a non-enhancing mass has nothing for an RC to show) or,
//! for a CDD-CESM folder, from the hand-drawn segmentation CSV anywhere in it
//! ([`annotations::read_via_csv`]): the regions drawn on the recombined image, else those drawn
//! on the low-energy image.

use std::path::{Path, PathBuf};

use crate::phantom::RoiBox;
use anyhow::{bail, Context};
use tch::Tensor;
use vcnode_models::preprocess::{plan, to_model, Geometry, InputSpec};

use crate::annotations::{self, PixelBox};
use vcnode::pixels;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPaths {
    pub le: PathBuf,
    pub rc: PathBuf,
    pub rois: Option<RoiSource>,
    /// Whose breast: the views of one patient are not independent cases, so the evaluation
    /// averages them per patient. From the CSV's `patient` column, the LE file's Patient ID
    /// (`<case>_LE.dcm` folders) or the CDD-CESM file name (`P12_L_DM_CC.jpg` → `P12`).
    pub patient: Option<String>,
}

/// Where a pair's lesion ROIs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoiSource {
    /// A `{"lesions": [RoiBox…]}` file, as `vcnode-lab phantom` writes.
    File(PathBuf),
    /// Boxes in the source image's pixels, from a hand-drawn annotation CSV.
    Boxes(Vec<PixelBox>),
}

/// A pair through the preprocessing, with its lesion boxes in model-input coordinates.
pub struct PreparedPair {
    pub name: String,
    pub le: Tensor,
    pub rc: Tensor,
    pub geometry: Geometry,
    /// [r0, r1, c0, c1] in the model input, and whether the lesion hides in dense tissue.
    pub rois: Vec<([usize; 4], bool)>,
    /// Boxes of non-enhancing masses (cysts, fibroadenomas) in the model input: not lesion
    /// ROIs, but where a model that paints masses as uptake shows it.
    pub non_enhancing: Vec<[usize; 4]>,
    /// See [`PairPaths::patient`].
    pub patient: Option<String>,
}

/// The pairs of a CSV manifest or a folder.
pub fn discover(source: &Path) -> anyhow::Result<Vec<PairPaths>> {
    let pairs = if source.is_file() {
        read_csv(source)?
    } else {
        scan_folder(source)?
    };
    if pairs.is_empty() {
        bail!("no LE/RC pairs found in {}", source.display());
    }
    Ok(pairs)
}

fn read_csv(path: &Path) -> anyhow::Result<Vec<PairPaths>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("empty CSV")?
        .split(',')
        .map(str::trim)
        .collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (le, rc) = match (col("le"), col("rc")) {
        (Some(a), Some(b)) => (a, b),
        _ => bail!("{}: the header must name columns `le` and `rc`", path.display()),
    };
    let rois = col("rois");
    let patient = col("patient");
    lines
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let get = |c: usize| f.get(c).filter(|s| !s.is_empty()).map(|s| base.join(s));
            Ok(PairPaths {
                le: get(le).with_context(|| format!("{} line {}: no le path", path.display(), i + 2))?,
                rc: get(rc).with_context(|| format!("{} line {}: no rc path", path.display(), i + 2))?,
                rois: rois.and_then(get).map(RoiSource::File),
                patient: patient
                    .and_then(|c| f.get(c))
                    .filter(|s| !s.is_empty())
                    .map(|s| s.to_string()),
            })
        })
        .collect()
}

fn scan_folder(dir: &Path) -> anyhow::Result<Vec<PairPaths>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = entry?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut drawn: std::collections::HashMap<String, Vec<PixelBox>> = Default::default();
    for csv in files.iter().filter(|f| is_segmentation_csv(f)) {
        drawn.extend(annotations::read_via_csv(csv)?);
    }
    // CDD-CESM keeps low-energy and recombined images in separate folders: find a partner by
    // its name anywhere in the tree when it is not beside the LE image.
    let mut by_name: std::collections::HashMap<&str, Vec<&PathBuf>> = Default::default();
    for f in &files {
        if let Some(n) = f.file_name().and_then(|n| n.to_str()) {
            by_name.entry(n).or_default().push(f);
        }
    }
    let mut pairs = Vec::new();
    for le in &files {
        let name = le.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let partner = if let Some(stem) = name.strip_suffix("_LE.dcm") {
            format!("{stem}_RC.dcm")
        } else if name.contains("_DM_") && is_image_file(le) {
            name.replacen("_DM_", "_CM_", 1)
        } else {
            continue;
        };
        let beside = le.with_file_name(&partner);
        let rc = if beside.exists() {
            Some(beside)
        } else {
            match by_name.get(partner.as_str()).map(Vec::as_slice) {
                Some([only]) => Some((*only).clone()),
                Some(many) if !many.is_empty() => {
                    bail!(
                        "{partner} is in {} folders; cannot tell which pairs with {}",
                        many.len(),
                        le.display()
                    )
                }
                _ => None,
            }
        };
        if let Some(rc) = rc {
            // Lesion boxes sit beside `<case>_LE.dcm` as `<case>_rois.json` (the phantom's layout),
            // or were drawn on the uptake (recombined) image, else on the LE image.
            let rois = match name.strip_suffix("_LE.dcm") {
                Some(case) => Some(le.with_file_name(format!("{case}_rois.json")))
                    .filter(|p| p.exists())
                    .map(RoiSource::File),
                None => [annotations::stem(&rc), annotations::stem(le)]
                    .iter()
                    .filter_map(|s| drawn.get(s))
                    .find(|b| !b.is_empty())
                    .map(|b| RoiSource::Boxes(b.clone())),
            };
            let patient = match name.strip_suffix("_LE.dcm") {
                Some(_) => dicom_patient_id(le),
                None => name.split('_').next().map(str::to_string),
            };
            pairs.push(PairPaths {
                le: le.clone(),
                rc,
                rois,
                patient,
            });
        }
    }
    Ok(pairs)
}

/// The Patient ID of a DICOM file, read from its header only; `None` if unreadable or empty.
fn dicom_patient_id(path: &Path) -> Option<String> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(path)
        .ok()?;
    let id = obj
        .element(dicom_dictionary_std::tags::PATIENT_ID)
        .ok()?
        .to_str()
        .ok()?;
    let id = id.trim_end_matches(['\0', ' ']).trim();
    (!id.is_empty()).then(|| id.to_string())
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// CDD-CESM's `Radiology_hand_drawn_segmentations_v2.csv` and the like.
fn is_segmentation_csv(path: &Path) -> bool {
    extension(path).as_deref() == Some("csv")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.to_ascii_lowercase().contains("segmentation"))
}

fn is_image_file(path: &Path) -> bool {
    matches!(extension(path).as_deref(), Some("dcm" | "jpg" | "jpeg" | "png"))
}

/// One image of a pair: rendered JPEG/PNG by extension, DICOM otherwise.
fn read_image(path: &Path) -> Result<pixels::MgImage, pixels::PixelError> {
    match extension(path).as_deref() {
        Some("jpg" | "jpeg" | "png") => pixels::read_rendered(path),
        _ => pixels::read_file(path),
    }
}

#[derive(serde::Deserialize)]
struct RoiFile {
    lesions: Vec<RoiBox>,
}

/// Loads and preprocesses one pair: the crop is planned on the LE and applied to both.
pub fn prepare(pair: &PairPaths, spec: &InputSpec) -> anyhow::Result<PreparedPair> {
    let le = read_image(&pair.le).with_context(|| format!("LE {}", pair.le.display()))?;
    let rc = read_image(&pair.rc).with_context(|| format!("RC {}", pair.rc.display()))?;
    if (le.rows, le.cols) != (rc.rows, rc.cols) {
        bail!("{} and {} differ in size", pair.le.display(), pair.rc.display());
    }
    let le_w = le.windowed();
    let geometry = plan(&le_w, le.rows, le.cols, spec);
    let mut non_enhancing: Vec<PixelBox> = Vec::new();
    let boxes: Vec<(PixelBox, bool)> = match &pair.rois {
        None => Vec::new(),
        Some(RoiSource::File(path)) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let file: RoiFile =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            let (enhancing, other): (Vec<RoiBox>, Vec<RoiBox>) =
                file.lesions.into_iter().partition(|b| b.kind.enhances());
            non_enhancing = other.iter().map(|b| [b.row0, b.row1, b.col0, b.col1]).collect();
            enhancing
                .into_iter()
                .map(|b| ([b.row0, b.row1, b.col0, b.col1], b.hidden))
                .collect()
        }
        // Whether a drawn lesion is hard to see on LE is not annotated: counted as visible.
        Some(RoiSource::Boxes(boxes)) => boxes.iter().map(|b| (*b, false)).collect(),
    };
    // Hand-drawn shapes may reach past the image; the crop mapping expects boxes inside it.
    let map = |[r0, r1, c0, c1]: PixelBox| {
        geometry.map_box([r0.min(le.rows), r1.min(le.rows), c0.min(le.cols), c1.min(le.cols)])
    };
    let rois = boxes
        .into_iter()
        .filter_map(|(b, hidden)| map(b).map(|m| (m, hidden)))
        .collect();
    let non_enhancing = non_enhancing.into_iter().filter_map(map).collect();
    Ok(PreparedPair {
        name: pair
            .le
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        le: to_model(&le_w, &geometry, spec),
        rc: to_model(&rc.windowed(), &geometry, spec),
        geometry,
        rois,
        non_enhancing,
        patient: pair.patient.clone(),
    })
}

/// Prepares all pairs on the available cores.
pub fn prepare_all(pairs: &[PairPaths], spec: &InputSpec) -> anyhow::Result<Vec<PreparedPair>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(pairs.len().max(1));
    let chunk = pairs.len().div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = pairs
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|p| prepare(p, spec))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(pairs.len());
        for h in handles {
            out.extend(h.join().expect("preprocessing thread panicked")?);
        }
        Ok(out)
    })
}

/// Stacks prepared pairs into training tensors.
pub fn stack(pairs: &[PreparedPair]) -> crate::train::fit::PairTensors {
    let le: Vec<&Tensor> = pairs.iter().map(|p| &p.le).collect();
    let rc: Vec<&Tensor> = pairs.iter().map(|p| &p.rc).collect();
    crate::train::fit::PairTensors {
        le: Tensor::cat(&le, 0),
        rc: Tensor::cat(&rc, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phantom::{write_dataset, PhantomDatasetSpec};

    fn render(img: &pixels::MgImage, path: &Path) {
        let bytes: Vec<u8> = img.windowed().iter().map(|v| (v * 255.0).round() as u8).collect();
        image::GrayImage::from_raw(img.cols as u32, img.rows as u32, bytes)
            .unwrap()
            .save(path)
            .unwrap();
    }

    #[test]
    fn a_cdd_cesm_layout_of_rendered_images_pairs_up_and_preprocesses_like_the_dicom() {
        use std::fmt::Write;
        let dir = tempfile::tempdir().unwrap();
        let spec = PhantomDatasetSpec {
            patients: 1,
            seed: 4,
            rows: 416,
            cols: 320,
            lesions: Some(1),
        };
        write_dataset(&dir.path().join("dicom"), &spec).unwrap();
        let dicom = discover(&dir.path().join("dicom")).unwrap();
        assert_eq!(dicom.len(), 4);
        // CDD-CESM: low energy and recombined ("subtracted") images in sibling folders.
        let root = dir.path().join("cdd");
        let (low, sub) = (root.join("Low energy images"), root.join("Subtracted images"));
        std::fs::create_dir_all(&low).unwrap();
        std::fs::create_dir_all(&sub).unwrap();
        // The phantom's lesion boxes, drawn as CDD-CESM's radiologists did: polygons on the
        // recombined image, in a VIA export at the dataset's root.
        let mut csv = String::from("#filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes\n");
        for (i, pair) in dicom.iter().enumerate() {
            let Some(RoiSource::File(path)) = &pair.rois else {
                panic!("the phantom writes ROI files")
            };
            let file: RoiFile = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            for (k, b) in file.lesions.iter().filter(|b| b.kind.enhances()).enumerate() {
                let (x0, x1, y0, y1) = (b.col0, b.col1 - 1, b.row0, b.row1 - 1);
                writeln!(
                    csv,
                    r#"P{i}_L_CM_CC.jpg,1,{{}},1,{k},"{{""name"":""polygon"",""all_points_x"":[{x0},{x1},{x1},{x0}],""all_points_y"":[{y0},{y0},{y1},{y1}]}}",{{}}"#
                )
                .unwrap();
            }
        }
        std::fs::write(root.join("Radiology_hand_drawn_segmentations_v2.csv"), csv).unwrap();
        for (i, pair) in dicom.iter().enumerate() {
            let ext = if i == 0 { "jpg" } else { "png" };
            render(
                &pixels::read_file(&pair.le).unwrap(),
                &low.join(format!("P{i}_L_DM_CC.{ext}")),
            );
            render(
                &pixels::read_file(&pair.rc).unwrap(),
                &sub.join(format!("P{i}_L_CM_CC.{ext}")),
            );
        }
        let rendered = discover(&root).unwrap();
        assert_eq!(rendered.len(), 4, "{rendered:?}");
        // One phantom patient: its Patient ID from the DICOM headers, and CDD-CESM's from the names.
        assert!(dicom
            .iter()
            .all(|p| p.patient.as_deref() == Some("PHANTOM-4-0000")));
        let mut named: Vec<_> = rendered.iter().filter_map(|p| p.patient.clone()).collect();
        named.sort();
        assert_eq!(named, ["P0", "P1", "P2", "P3"]);
        let input = InputSpec {
            rows: 128,
            cols: 96,
            normalization: vcnode_models::preprocess::Normalization::ZeroOne,
        };
        let mut lesions = 0;
        for (i, (a, b)) in dicom.iter().zip(&rendered).enumerate() {
            assert!(b.le.starts_with(&low) && b.rc.starts_with(&sub));
            let (a, b) = (prepare(a, &input).unwrap(), prepare(b, &input).unwrap());
            assert_eq!(a.geometry, b.geometry, "pair {i}: the same breast crop");
            let boxes = |p: &PreparedPair| p.rois.iter().map(|(b, _)| *b).collect::<Vec<_>>();
            assert_eq!(boxes(&a), boxes(&b), "pair {i}: the same lesion boxes");
            lesions += a.rois.len();
            for (x, y) in [(&a.le, &b.le), (&a.rc, &b.rc)] {
                let diff = (x - y).abs();
                let (max, mean) = (
                    f64::try_from(diff.max()).unwrap(),
                    f64::try_from(diff.mean(tch::Kind::Float)).unwrap(),
                );
                // PNG: 8-bit rounding only; JPEG: also its compression loss.
                if i == 0 {
                    assert!(mean < 0.02, "pair {i}: mean difference {mean}");
                } else {
                    assert!(max < 0.003, "pair {i}: max difference {max}");
                }
            }
        }
        assert!(lesions > 0, "the phantom drew no lesion to compare");
    }

    #[test]
    fn non_enhancing_masses_are_not_lesion_rois() {
        let dir = tempfile::tempdir().unwrap();
        let spec = PhantomDatasetSpec {
            patients: 1,
            seed: 4,
            rows: 416,
            cols: 320,
            lesions: Some(0),
        };
        write_dataset(dir.path(), &spec).unwrap();
        let pair = discover(dir.path()).unwrap().remove(0);
        let Some(RoiSource::File(path)) = &pair.rois else {
            panic!("the phantom writes ROI files")
        };
        // A mass and a cyst in the middle of the image; a file from before phantom v2 (no
        // `kind`) reads as a mass.
        std::fs::write(
            path,
            r#"{"rows":416,"cols":320,"lesions":[
                {"row0":200,"col0":150,"row1":220,"col1":170,"hidden":false,"iodine_mg_cm2":1.0,"kind":"mass"},
                {"row0":240,"col0":150,"row1":260,"col1":170,"hidden":false,"iodine_mg_cm2":0.0,"kind":"non-enhancing"},
                {"row0":160,"col0":150,"row1":180,"col1":170,"hidden":true,"iodine_mg_cm2":1.5}]}"#,
        )
        .unwrap();
        let input = InputSpec {
            rows: 128,
            cols: 96,
            normalization: vcnode_models::preprocess::Normalization::ZeroOne,
        };
        let prepared = prepare(&pair, &input).unwrap();
        let hidden: Vec<bool> = prepared.rois.iter().map(|(_, h)| *h).collect();
        assert_eq!(
            hidden,
            [false, true],
            "the mass and the old-style box, not the cyst"
        );
    }
}
