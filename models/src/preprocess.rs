//! The paper's preprocessing, in one place for training and serving so they cannot drift:
//! window with the image's own VOI window, flip so the chest wall is on the left, crop to the
//! breast bounding box, resize keeping the aspect ratio into the model input (top-left, zero
//! padded), normalize. [`restore`] undoes it for the model's output, back to the source
//! geometry, so the synthetic RC overlays the LE pixel for pixel.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// How model inputs and targets are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Windowed values in [0, 1] (sigmoid output).
    ZeroOne,
    /// Windowed values mapped to [-1, 1] (tanh output).
    MinusOneOne,
}

/// The model input, from the weights manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputSpec {
    pub rows: i64,
    pub cols: i64,
    pub normalization: Normalization,
}

impl InputSpec {
    pub fn normalize(&self, t: &Tensor) -> Tensor {
        match self.normalization {
            Normalization::ZeroOne => t.shallow_clone(),
            Normalization::MinusOneOne => t * 2.0 - 1.0,
        }
    }
    pub fn denormalize(&self, t: &Tensor) -> Tensor {
        match self.normalization {
            Normalization::ZeroOne => t.clamp(0.0, 1.0),
            Normalization::MinusOneOne => ((t + 1.0) * 0.5).clamp(0.0, 1.0),
        }
    }
}

/// A linear VOI window (PS3.3 C.11.2.1.2), mapping to [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub center: f32,
    pub width: f32,
}

impl Window {
    pub fn apply(&self, values: &[f32]) -> Vec<f32> {
        let w = (self.width - 1.0).max(1.0);
        let lo = self.center - 0.5 - w / 2.0;
        values.iter().map(|&v| ((v - lo) / w).clamp(0.0, 1.0)).collect()
    }

    /// The inverse of [`Window::apply`], for writing a [0, 1] image back as stored values.
    pub fn unapply(&self, unit: f32) -> f32 {
        let w = (self.width - 1.0).max(1.0);
        self.center - 0.5 - w / 2.0 + unit * w
    }

    /// A window spanning the values present (a fallback for images without VOI attributes,
    /// such as For Processing mammograms).
    pub fn from_range(values: &[f32]) -> Window {
        let (mut lo, mut hi) = (f32::MAX, f32::MIN);
        for &v in values {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            (lo, hi) = (0.0, 1.0);
        }
        Window {
            center: (lo + hi) / 2.0 + 0.5,
            width: (hi - lo).max(1.0) + 1.0,
        }
    }
}

/// Where the model input came from in the source image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Geometry {
    pub src_rows: usize,
    pub src_cols: usize,
    /// The image was mirrored left-right to put the chest wall on the left.
    pub flipped: bool,
    /// Breast bounding box in the (flipped) source: rows r0..r1, columns c0..c1.
    pub crop: [usize; 4],
    /// Size of the resized crop inside the model input (the rest is padding).
    pub content: [i64; 2],
}

impl Geometry {
    /// Maps a box in source pixel coordinates (rows r0..r1, columns c0..c1) into model-input
    /// coordinates; None when it falls outside the crop.
    pub fn map_box(&self, [r0, r1, c0, c1]: [usize; 4]) -> Option<[usize; 4]> {
        let (c0, c1) = if self.flipped {
            (self.src_cols - c1, self.src_cols - c0)
        } else {
            (c0, c1)
        };
        let [cr0, cr1, cc0, cc1] = self.crop;
        let sy = self.content[0] as f64 / (cr1 - cr0) as f64;
        let sx = self.content[1] as f64 / (cc1 - cc0) as f64;
        let r0 = ((r0.max(cr0) - cr0) as f64 * sy).floor() as usize;
        let r1 = ((r1.min(cr1).saturating_sub(cr0)) as f64 * sy).ceil() as usize;
        let c0 = ((c0.max(cc0) - cc0) as f64 * sx).floor() as usize;
        let c1 = ((c1.min(cc1).saturating_sub(cc0)) as f64 * sx).ceil() as usize;
        (r1 > r0 + 1 && c1 > c0 + 1).then_some([r0, r1, c0, c1])
    }
}

/// Plans the crop and flip from a windowed LE image (values in [0, 1]).
pub fn plan(windowed: &[f32], rows: usize, cols: usize, spec: &InputSpec) -> Geometry {
    assert_eq!(windowed.len(), rows * cols);
    let threshold = air_threshold(windowed);
    // Chest wall side: the breast touches that edge, so its edge band is brighter.
    let band = (cols / 20).max(1);
    let edge_mean = |c0: usize| {
        let mut s = 0.0f64;
        for r in 0..rows {
            for c in c0..c0 + band {
                s += windowed[r * cols + c] as f64;
            }
        }
        s
    };
    let flipped = edge_mean(cols - band) > edge_mean(0);
    // Rows and columns in which a meaningful share of pixels is tissue; noise is ignored.
    let at = |r: usize, c: usize| windowed[r * cols + if flipped { cols - 1 - c } else { c }];
    let row_in: Vec<bool> = (0..rows)
        .map(|r| (0..cols).filter(|&c| at(r, c) >= threshold).count() * 100 > cols)
        .collect();
    let col_in: Vec<bool> = (0..cols)
        .map(|c| (0..rows).filter(|&r| at(r, c) >= threshold).count() * 100 > rows)
        .collect();
    let span = |v: &[bool]| {
        let first = v.iter().position(|&b| b);
        let last = v.iter().rposition(|&b| b);
        match (first, last) {
            (Some(a), Some(b)) => (a, b + 1),
            _ => (0, v.len()),
        }
    };
    let (mut r0, mut r1) = span(&row_in);
    let (_, mut c1) = span(&col_in);
    // The chest wall is at column 0; keep it, and keep a small margin around the skin line.
    let margin_r = rows / 50;
    let margin_c = cols / 50;
    r0 = r0.saturating_sub(margin_r);
    r1 = (r1 + margin_r).min(rows);
    c1 = (c1 + margin_c).min(cols);
    let (ch, cw) = ((r1 - r0) as f64, c1 as f64);
    let scale = (spec.rows as f64 / ch).min(spec.cols as f64 / cw);
    let content = [
        ((ch * scale).round() as i64).clamp(1, spec.rows),
        ((cw * scale).round() as i64).clamp(1, spec.cols),
    ];
    Geometry {
        src_rows: rows,
        src_cols: cols,
        flipped,
        crop: [r0, r1, 0, c1],
        content,
    }
}

/// The level between air and tissue: the lower of the two thresholds of a three-class Otsu
/// split (maximal between-class variance) of a 256-bin histogram of values in [0, 1]. Two
/// classes are not enough: in an MLO view of a fatty breast the bright pectoral muscle against
/// grey fat is a larger split than tissue against a small area of air, and the crop then held
/// the muscle alone (5% of the phantom's training images). With three classes air, fat and the
/// bright tissue each get one.
fn air_threshold(values: &[f32]) -> f32 {
    let mut hist = [0f64; 256];
    for &v in values {
        hist[(v.clamp(0.0, 1.0) * 255.0) as usize] += 1.0;
    }
    // Cumulative counts and first moments: a class's weight and sum in O(1).
    let (mut w, mut s) = ([0f64; 257], [0f64; 257]);
    for i in 0..256 {
        w[i + 1] = w[i] + hist[i];
        s[i + 1] = s[i] + i as f64 * hist[i];
    }
    // Σ sum²/weight over the classes; maximal where the between-class variance is.
    let class = |a: usize, b: usize| {
        let (wc, sc) = (w[b] - w[a], s[b] - s[a]);
        if wc > 0.0 {
            sc * sc / wc
        } else {
            0.0
        }
    };
    let (mut best, mut best_t) = (-1.0, 0usize);
    for t1 in 1..255 {
        for t2 in t1 + 1..256 {
            let between = class(0, t1) + class(t1, t2) + class(t2, 256);
            if between > best {
                best = between;
                best_t = t1;
            }
        }
    }
    // Bins below t1 are air: the threshold is bin t1's lower edge.
    best_t as f32 / 255.0
}

fn source_tensor(windowed: &[f32], geom: &Geometry) -> Tensor {
    let t = Tensor::from_slice(windowed).view([1, 1, geom.src_rows as i64, geom.src_cols as i64]);
    if geom.flipped {
        t.flip([3])
    } else {
        t
    }
}

/// The model input [1, 1, rows, cols] for a windowed image (LE at serving, LE and RC at
/// training) under `geom`.
pub fn to_model(windowed: &[f32], geom: &Geometry, spec: &InputSpec) -> Tensor {
    let [r0, r1, c0, c1] = geom.crop;
    let crop = source_tensor(windowed, geom)
        .narrow(2, r0 as i64, (r1 - r0) as i64)
        .narrow(3, c0 as i64, (c1 - c0) as i64);
    // Antialiased bilinear: mammograms shrink 4-6× here and plain bilinear would alias.
    let resized = crop.internal_upsample_bilinear2d_aa(geom.content, false, None, None);
    let canvas = Tensor::zeros([1, 1, spec.rows, spec.cols], (Kind::Float, Device::Cpu));
    canvas
        .narrow(2, 0, geom.content[0])
        .narrow(3, 0, geom.content[1])
        .copy_(&resized);
    spec.normalize(&canvas)
}

/// Maps a model output [1, 1, rows, cols] (or [rows, cols]) back to the source geometry as
/// values in [0, 1]; outside the breast crop it is 0.
pub fn restore(output: &Tensor, geom: &Geometry, spec: &InputSpec) -> Vec<f32> {
    let out = spec
        .denormalize(&output.to_device(Device::Cpu).to_kind(Kind::Float))
        .view([1, 1, spec.rows, spec.cols]);
    let [r0, r1, c0, c1] = geom.crop;
    let content = out.narrow(2, 0, geom.content[0]).narrow(3, 0, geom.content[1]);
    let resized = content.upsample_bilinear2d([(r1 - r0) as i64, (c1 - c0) as i64], false, None, None);
    let full = Tensor::zeros(
        [1, 1, geom.src_rows as i64, geom.src_cols as i64],
        (Kind::Float, Device::Cpu),
    );
    full.narrow(2, r0 as i64, (r1 - r0) as i64)
        .narrow(3, c0 as i64, (c1 - c0) as i64)
        .copy_(&resized);
    let full = if geom.flipped { full.flip([3]) } else { full };
    Vec::<f32>::try_from(full.flatten(0, -1)).expect("a float tensor")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bright half-disc against the right edge on a dark background.
    fn breast(rows: usize, cols: usize, chest_right: bool) -> Vec<f32> {
        let mut v = vec![0.05f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let x = if chest_right {
                    (cols - 1 - c) as f32
                } else {
                    c as f32
                };
                let d = ((r as f32 - rows as f32 / 2.0) / (rows as f32 * 0.4)).powi(2)
                    + (x / (cols as f32 * 0.6)).powi(2);
                if d < 1.0 {
                    v[r * cols + c] = 0.5 + 0.4 * (1.0 - d);
                }
            }
        }
        v
    }

    #[test]
    fn window_follows_the_dicom_formula() {
        let w = Window {
            center: 2048.0,
            width: 4096.0,
        };
        let v = w.apply(&[0.0, 2047.5, 4095.0, -10.0, 5000.0]);
        assert!(v[0].abs() < 1e-3 && (v[1] - 0.5).abs() < 1e-3 && (v[2] - 1.0).abs() < 1e-3);
        assert_eq!((v[3], v[4]), (0.0, 1.0));
        assert!((w.unapply(0.5) - 2047.5).abs() < 1e-3);
    }

    #[test]
    fn crops_to_the_breast_and_puts_the_chest_wall_left() {
        let spec = InputSpec {
            rows: 64,
            cols: 48,
            normalization: Normalization::ZeroOne,
        };
        for chest_right in [false, true] {
            let img = breast(400, 300, chest_right);
            let g = plan(&img, 400, 300, &spec);
            assert_eq!(g.flipped, chest_right);
            // The half-disc spans rows 40..360 and 180 columns from the chest wall.
            assert!(
                g.crop[0] >= 30 && g.crop[0] <= 42 && g.crop[1] >= 358 && g.crop[1] <= 370,
                "{g:?}"
            );
            assert!(g.crop[3] >= 175 && g.crop[3] <= 192, "{g:?}");
            let x = to_model(&img, &g, &spec);
            assert_eq!(x.size(), vec![1, 1, 64, 48]);
            // Chest wall (bright) on the left of the model input.
            let left = f64::try_from(x.narrow(3, 0, 2).mean(Kind::Float)).unwrap();
            let right = f64::try_from(x.narrow(3, 30, 2).mean(Kind::Float)).unwrap();
            assert!(left > right, "{left} {right}");
        }
    }

    #[test]
    fn restore_overlays_the_source_pixel_for_pixel() {
        let spec = InputSpec {
            rows: 128,
            cols: 96,
            normalization: Normalization::MinusOneOne,
        };
        for chest_right in [false, true] {
            let img = breast(256, 200, chest_right);
            let g = plan(&img, 256, 200, &spec);
            let back = restore(&to_model(&img, &g, &spec), &g, &spec);
            assert_eq!(back.len(), img.len());
            // Inside the crop the round trip is close; it is the same place, not mirrored.
            let [r0, r1, _, c1] = g.crop;
            let mut err = 0.0f64;
            let mut n = 0;
            for r in r0 + 4..r1 - 4 {
                for c in 4..c1 - 4 {
                    let c = if g.flipped { 199 - c } else { c };
                    err += (back[r * 200 + c] - img[r * 200 + c]).abs() as f64;
                    n += 1;
                }
            }
            assert!(err / (n as f64) < 0.02, "mean abs error {}", err / n as f64);
        }
    }
}
