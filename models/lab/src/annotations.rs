//! Hand-drawn lesion annotations as CDD-CESM ships them (`Radiology_hand_drawn_segmentations_v2.csv`):
//! a VGG Image Annotator (VIA) export with one row per region, the image's file name in
//! `#filename` and the shape as JSON in `region_shape_attributes`. Evaluation scores ROIs as
//! boxes, so each shape becomes its bounding box in the image's pixel coordinates.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};

/// A region's bounding box in source-image pixels, `[row0, row1, col0, col1]`, ends exclusive.
pub type PixelBox = [usize; 4];

/// The boxes of a VIA CSV, keyed by image file stem (the name without its extension, so a case
/// converted from JPEG to DICOM or PNG still finds its annotations). Points have no extent to
/// score and are left out.
pub fn read_via_csv(path: &Path) -> anyhow::Result<HashMap<String, Vec<PixelBox>>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(file_col), Some(shape_col)) = (
        col("#filename").or_else(|| col("filename")),
        col("region_shape_attributes"),
    ) else {
        bail!(
            "{}: not a VIA annotation export (needs columns `#filename` and `region_shape_attributes`)",
            path.display()
        );
    };
    let mut boxes: HashMap<String, Vec<PixelBox>> = HashMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.with_context(|| format!("{} line {line}", path.display()))?;
        let file = record.get(file_col).unwrap_or_default().trim();
        let shape = record.get(shape_col).unwrap_or_default().trim();
        let entry = boxes.entry(stem(Path::new(file))).or_default();
        // An image without regions has a row with `{}`.
        if shape.is_empty() || shape == "{}" {
            continue;
        }
        let shape: serde_json::Value = serde_json::from_str(shape).with_context(|| {
            format!(
                "{} line {line}: region_shape_attributes is not JSON",
                path.display()
            )
        })?;
        if let Some(b) = bounding_box(&shape).with_context(|| format!("{} line {line}", path.display()))? {
            entry.push(b);
        }
    }
    Ok(boxes)
}

/// The key a file's annotations go by: its name without the extension.
pub fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned()
}

/// The bounding box of one VIA shape; `None` for a point.
fn bounding_box(shape: &serde_json::Value) -> anyhow::Result<Option<PixelBox>> {
    let num = |key: &str| {
        shape[key]
            .as_f64()
            .with_context(|| format!("{} without a numeric `{key}`", shape["name"]))
    };
    let nums = |key: &str| -> anyhow::Result<Vec<f64>> {
        shape[key]
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_f64()).collect::<Option<Vec<_>>>())
            .filter(|v| !v.is_empty())
            .with_context(|| format!("{} without a list of numbers `{key}`", shape["name"]))
    };
    // (x0, x1, y0, y1): x along columns, y along rows.
    let (x0, x1, y0, y1) = match shape["name"].as_str() {
        Some("polygon" | "polyline") => {
            let (xs, ys) = (nums("all_points_x")?, nums("all_points_y")?);
            let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (min(&xs), max(&xs), min(&ys), max(&ys))
        }
        Some("rect") => {
            let (x, y) = (num("x")?, num("y")?);
            (x, x + num("width")?, y, y + num("height")?)
        }
        Some("circle") => {
            let (cx, cy, r) = (num("cx")?, num("cy")?, num("r")?);
            (cx - r, cx + r, cy - r, cy + r)
        }
        Some("ellipse") => {
            let (cx, cy, rx, ry) = (num("cx")?, num("cy")?, num("rx")?, num("ry")?);
            // A rotated ellipse's half extents along the axes.
            let t = shape["theta"].as_f64().unwrap_or(0.0);
            let hx = ((rx * t.cos()).powi(2) + (ry * t.sin()).powi(2)).sqrt();
            let hy = ((rx * t.sin()).powi(2) + (ry * t.cos()).powi(2)).sqrt();
            (cx - hx, cx + hx, cy - hy, cy + hy)
        }
        Some("point") => return Ok(None),
        other => bail!("unknown VIA shape {other:?}"),
    };
    let lo = |v: f64| v.floor().max(0.0) as usize;
    let hi = |v: f64| v.ceil().max(0.0) as usize + 1;
    Ok(Some([lo(y0), hi(y1), lo(x0), hi(x1)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_via_shape_becomes_its_bounding_box() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("Radiology_hand_drawn_segmentations_v2.csv");
        std::fs::write(
            &csv,
            r#"#filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes
P1_L_CM_CC.jpg,1,{},4,0,"{""name"":""polygon"",""all_points_x"":[10,30,20],""all_points_y"":[5,8,40]}",{}
P1_L_CM_CC.jpg,1,{},4,1,"{""name"":""ellipse"",""cx"":100,""cy"":50,""rx"":10,""ry"":4,""theta"":0}",{}
P1_L_CM_CC.jpg,1,{},4,2,"{""name"":""circle"",""cx"":60,""cy"":60,""r"":5}",{}
P1_L_CM_CC.jpg,1,{},4,3,"{""name"":""point"",""cx"":1,""cy"":1}",{}
P1_L_DM_CC.jpg,1,{},1,0,"{""name"":""rect"",""x"":3,""y"":4,""width"":10,""height"":20}",{}
P2_R_CM_MLO.jpg,1,{},0,0,{},{}
"#,
        )
        .unwrap();
        let boxes = read_via_csv(&csv).unwrap();
        assert_eq!(
            boxes["P1_L_CM_CC"],
            vec![[5, 41, 10, 31], [46, 55, 90, 111], [55, 66, 55, 66]]
        );
        assert_eq!(boxes["P1_L_DM_CC"], vec![[4, 25, 3, 14]]);
        assert_eq!(boxes["P2_R_CM_MLO"], Vec::<PixelBox>::new());
        // A quarter turn swaps the ellipse's extents.
        let turned = serde_json::json!({"name": "ellipse", "cx": 100, "cy": 50, "rx": 10, "ry": 4,
                                        "theta": std::f64::consts::FRAC_PI_2});
        assert_eq!(bounding_box(&turned).unwrap(), Some([40, 61, 96, 105]));
    }

    #[test]
    fn a_csv_that_is_not_a_via_export_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("x.csv");
        std::fs::write(&csv, "le,rc\na.dcm,b.dcm\n").unwrap();
        let err = read_via_csv(&csv).unwrap_err().to_string();
        assert!(err.contains("not a VIA annotation export"), "{err}");
    }
}
