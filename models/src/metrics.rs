//! Image-similarity metrics for judging synthesized images against their references.
//!
//! The evaluation compares each generated image with the real one by MSE, PSNR and SSIM, once on the
//! whole image and once on each region of interest (a rectangular crop around contrast uptake).
//!
//! Images are row-major `&[f32]` slices of `rows × cols` values. `data_range` is the span of the value
//! scale (max − min), e.g. `1.0` for images normalised to `[0, 1]` or `4095.0` for 12-bit pixel values;
//! PSNR and the SSIM stabilising constants depend on it. All sums are taken in `f64`.
//!
//! SSIM follows Wang et al. (2004) exactly as scikit-image computes it with
//! `structural_similarity(a, b, data_range=R, gaussian_weights=True, sigma=1.5,
//! use_sample_covariance=False)`: local statistics under an 11×11 Gaussian window (σ = 1.5, truncated at
//! 3.5σ), K1 = 0.01, K2 = 0.03, and the SSIM map averaged over the pixels at least 5 pixels from every
//! border. scikit-image filters with `mode='reflect'` and then crops those border pixels away, so only
//! windows that lie entirely inside the image ever reach the mean; this module filters those windows
//! directly, separably, with no padding.
//!
//! Inputs that cannot be scored (slices whose lengths disagree with each other or with `rows × cols`,
//! empty images, a non-positive `data_range`, or an image smaller than the SSIM window) give `NaN` rather
//! than a panic, so one bad case shows up in a table instead of aborting a whole evaluation run.

/// Side of the square SSIM window: `2·r + 1` with radius `r = ⌊3.5·σ + 0.5⌋ = 5` for σ = 1.5, the
/// truncation scikit-image uses. Images (and regions) smaller than this in either dimension have no SSIM.
pub const SSIM_WIN_SIZE: usize = 2 * SSIM_RADIUS + 1;

/// Radius of the SSIM Gaussian window.
const SSIM_RADIUS: usize = 5;
/// Standard deviation of the SSIM Gaussian window, in pixels.
const SSIM_SIGMA: f64 = 1.5;
/// SSIM luminance constant: C1 = (K1·R)².
const SSIM_K1: f64 = 0.01;
/// SSIM contrast/structure constant: C2 = (K2·R)².
const SSIM_K2: f64 = 0.03;

/// A rectangle of pixels: rows `row0..row1` and columns `col0..col1` (ends exclusive).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// First row inside the region.
    pub row0: usize,
    /// First column inside the region.
    pub col0: usize,
    /// One past the last row inside the region.
    pub row1: usize,
    /// One past the last column inside the region.
    pub col1: usize,
}

impl Region {
    /// Number of rows the region spans (0 if it is empty or inverted).
    pub fn rows(&self) -> usize {
        self.row1.saturating_sub(self.row0)
    }

    /// Number of columns the region spans (0 if it is empty or inverted).
    pub fn cols(&self) -> usize {
        self.col1.saturating_sub(self.col0)
    }

    /// Whether the region is non-empty and lies entirely inside a `rows × cols` image.
    pub fn fits(&self, rows: usize, cols: usize) -> bool {
        self.row0 < self.row1 && self.col0 < self.col1 && self.row1 <= rows && self.col1 <= cols
    }
}

/// The three scores of one image pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageScores {
    /// Mean squared error, in squared units of the value scale.
    pub mse: f64,
    /// Peak signal-to-noise ratio in dB (`+inf` for identical images).
    pub psnr: f64,
    /// Mean structural similarity, at most 1.
    pub ssim: f64,
}

impl ImageScores {
    /// The scores of a pair that cannot be scored: all `NaN`.
    pub const UNSCORABLE: ImageScores = ImageScores {
        mse: f64::NAN,
        psnr: f64::NAN,
        ssim: f64::NAN,
    };
}

/// Mean squared error between two images of the same length; `NaN` if the lengths differ or are zero.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum();
    sum / a.len() as f64
}

/// PSNR in dB from a mean squared error: `10·log10(R² / mse)`.
///
/// Returns `+inf` when `mse == 0` and `NaN` when `mse` is negative or `NaN` or `data_range` is not a
/// positive finite number.
pub fn psnr_from_mse(mse: f64, data_range: f64) -> f64 {
    if !valid_range(data_range) || mse.is_nan() || mse < 0.0 {
        return f64::NAN;
    }
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (data_range * data_range / mse).log10()
}

/// Peak signal-to-noise ratio in dB between two images; see [`psnr_from_mse`].
pub fn psnr(a: &[f32], b: &[f32], data_range: f64) -> f64 {
    psnr_from_mse(mse(a, b), data_range)
}

/// Mean structural similarity of two `rows × cols` images, as scikit-image computes it (see the module
/// documentation). Identical images score exactly 1.
///
/// `NaN` if the slices are not both `rows × cols` long, `data_range` is not positive and finite, or the
/// image is smaller than [`SSIM_WIN_SIZE`] in either dimension.
pub fn ssim(a: &[f32], b: &[f32], rows: usize, cols: usize, data_range: f64) -> f64 {
    if !same_shape(a, b, rows, cols)
        || rows < SSIM_WIN_SIZE
        || cols < SSIM_WIN_SIZE
        || !valid_range(data_range)
    {
        return f64::NAN;
    }
    let c1 = (SSIM_K1 * data_range).powi(2);
    let c2 = (SSIM_K2 * data_range).powi(2);
    let weights = gaussian_window();
    let moments = LocalMoments::new(a, b, rows, cols, &weights);

    let out_cols = cols - 2 * SSIM_RADIUS;
    let out_rows = rows - 2 * SSIM_RADIUS;
    let mut local: [Vec<f64>; 5] = std::array::from_fn(|_| vec![0.0; out_cols]);
    let mut sum = 0.0;
    for i in 0..out_rows {
        moments.vertical(i, &weights, &mut local);
        let [mx, my, mxx, myy, mxy] = &local;
        for j in 0..out_cols {
            let (ux, uy) = (mx[j], my[j]);
            let vx = mxx[j] - ux * ux;
            let vy = myy[j] - uy * uy;
            let vxy = mxy[j] - ux * uy;
            let num = (2.0 * ux * uy + c1) * (2.0 * vxy + c2);
            let den = (ux * ux + uy * uy + c1) * (vx + vy + c2);
            sum += num / den;
        }
    }
    sum / (out_rows * out_cols) as f64
}

/// Copies `r` out of a row-major image that is `cols` wide, row by row.
///
/// Returns an empty vector when the region is empty or does not lie entirely inside the image.
pub fn crop(img: &[f32], cols: usize, r: Region) -> Vec<f32> {
    if cols == 0 || !r.fits(img.len() / cols, cols) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(r.rows() * r.cols());
    for row in r.row0..r.row1 {
        let start = row * cols;
        out.extend_from_slice(&img[start + r.col0..start + r.col1]);
    }
    out
}

/// MSE, PSNR and SSIM of a whole `rows × cols` image pair.
pub fn scores(a: &[f32], b: &[f32], rows: usize, cols: usize, data_range: f64) -> ImageScores {
    if !same_shape(a, b, rows, cols) {
        return ImageScores::UNSCORABLE;
    }
    let mse = mse(a, b);
    ImageScores {
        mse,
        psnr: psnr_from_mse(mse, data_range),
        ssim: ssim(a, b, rows, cols, data_range),
    }
}

/// MSE, PSNR and SSIM of the pair restricted to `region`: the scores of the two crops, so SSIM windows
/// never reach outside the region. All `NaN` when the region does not fit the image; SSIM alone is `NaN`
/// when the region is smaller than [`SSIM_WIN_SIZE`] in either dimension.
pub fn region_scores(
    a: &[f32],
    b: &[f32],
    rows: usize,
    cols: usize,
    region: Region,
    data_range: f64,
) -> ImageScores {
    if !same_shape(a, b, rows, cols) || !region.fits(rows, cols) {
        return ImageScores::UNSCORABLE;
    }
    scores(
        &crop(a, cols, region),
        &crop(b, cols, region),
        region.rows(),
        region.cols(),
        data_range,
    )
}

/// Whether both images hold exactly `rows × cols` values.
fn same_shape(a: &[f32], b: &[f32], rows: usize, cols: usize) -> bool {
    rows.checked_mul(cols)
        .is_some_and(|len| a.len() == len && b.len() == len)
}

/// Whether `data_range` can scale PSNR and the SSIM constants.
fn valid_range(data_range: f64) -> bool {
    data_range.is_finite() && data_range > 0.0
}

/// The normalised 1-D Gaussian weights of the SSIM window (as `scipy.ndimage` builds them).
fn gaussian_window() -> [f64; SSIM_WIN_SIZE] {
    let mut w = [0.0; SSIM_WIN_SIZE];
    for (k, wk) in w.iter_mut().enumerate() {
        let x = k as f64 - SSIM_RADIUS as f64;
        *wk = (-0.5 * x * x / (SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let total: f64 = w.iter().sum();
    w.iter_mut().for_each(|wk| *wk /= total);
    w
}

/// The five SSIM moment images (`x`, `y`, `x²`, `y²`, `x·y`) filtered along rows with the Gaussian window,
/// keeping only the columns whose window fits inside the image: `rows × (cols − 2r)` each, row-major.
struct LocalMoments {
    cols: usize,
    rows_filtered: [Vec<f64>; 5],
}

impl LocalMoments {
    /// Filters the moment images of `a` and `b` along rows. Callers guarantee `cols >= SSIM_WIN_SIZE`.
    fn new(a: &[f32], b: &[f32], rows: usize, cols: usize, w: &[f64; SSIM_WIN_SIZE]) -> Self {
        let out_cols = cols - 2 * SSIM_RADIUS;
        let mut rows_filtered: [Vec<f64>; 5] = Default::default();
        rows_filtered
            .iter_mut()
            .for_each(|m| m.reserve_exact(rows * out_cols));
        let mut line: [Vec<f64>; 5] = Default::default();
        for (ra, rb) in a.chunks_exact(cols).zip(b.chunks_exact(cols)) {
            for l in &mut line {
                l.clear();
            }
            for (&x, &y) in ra.iter().zip(rb) {
                let (x, y) = (f64::from(x), f64::from(y));
                line[0].push(x);
                line[1].push(y);
                line[2].push(x * x);
                line[3].push(y * y);
                line[4].push(x * y);
            }
            for (src, dst) in line.iter().zip(&mut rows_filtered) {
                dst.extend(
                    src.windows(SSIM_WIN_SIZE)
                        .map(|win| win.iter().zip(w).map(|(s, wk)| s * wk).sum::<f64>()),
                );
            }
        }
        Self {
            cols: out_cols,
            rows_filtered,
        }
    }

    /// Filters along columns to get the local means of the five moments for output row `i` (the image
    /// row `i + r`), writing them into `out`.
    fn vertical(&self, i: usize, w: &[f64; SSIM_WIN_SIZE], out: &mut [Vec<f64>; 5]) {
        for (src, dst) in self.rows_filtered.iter().zip(out.iter_mut()) {
            dst.iter_mut().for_each(|d| *d = 0.0);
            for (k, &wk) in w.iter().enumerate() {
                let row = &src[(i + k) * self.cols..(i + k + 1) * self.cols];
                for (d, &s) in dst.iter_mut().zip(row) {
                    *d += wk * s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32-bit integer hash used as deterministic "noise"; identical to `hash32` in the reference script.
    fn hash32(i: u32) -> u32 {
        let mut x = i.wrapping_mul(0x9E37_79B1);
        x ^= x >> 15;
        x = x.wrapping_mul(0x85EB_CA77);
        x ^= x >> 13;
        x
    }

    /// 12-bit ramp-and-texture image and a copy with noise in [-200, 200]; data range 4095.
    fn pair_12bit(rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in 0..rows {
            for c in 0..cols {
                let v = (500 + 35 * r + 30 * c + ((r * c) % 13) * 40) as i64;
                let n = i64::from(hash32((r * cols + c) as u32) % 401);
                a.push(v as f32);
                b.push((v + n - 200).clamp(0, 4095) as f32);
            }
        }
        (a, b)
    }

    /// 8-bit banded, textured image scaled to [0, 1] and a noisy, half-brightened/half-darkened copy.
    fn pair_8bit(rows: usize, cols: usize, seed: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in 0..rows {
            for c in 0..cols {
                let texture = hash32((seed + r * cols + c) as u32) % 16;
                let v = (((r + c) * 2 + ((r / 8) % 2) * 60 + texture as usize) % 256) as i64;
                let n = i64::from(hash32((seed + 7919 + r * cols + c) as u32) % 41);
                let shift = if c < cols / 2 { 10 } else { -10 };
                let w = (v + n - 20 + shift).clamp(0, 255);
                a.push(v as f32 / 255.0);
                b.push(w as f32 / 255.0);
            }
        }
        (a, b)
    }

    /// Two independent hash-noise images in [0, 1].
    fn pair_unrelated(rows: usize, cols: usize) -> (Vec<f32>, Vec<f32>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..rows * cols {
            a.push((hash32(i as u32) % 256) as f32 / 255.0);
            b.push((hash32((100_000 + i) as u32) % 256) as f32 / 255.0);
        }
        (a, b)
    }

    // Reference values from scikit-image 0.26.0 (numpy 2.4.6, Python 3.11). The script builds the same
    // images as the generators above (as float32, then `.astype(np.float64)`), then calls
    //
    //   structural_similarity(a, b, data_range=R, gaussian_weights=True, sigma=1.5,
    //                         use_sample_covariance=False)
    //   mean_squared_error(a, b);  peak_signal_noise_ratio(a, b, data_range=R)
    //
    // with the generators written in Python as:
    //
    //   def hash32(i):
    //       x = (i * 0x9E3779B1) & 0xFFFFFFFF; x ^= x >> 15
    //       x = (x * 0x85EBCA77) & 0xFFFFFFFF; x ^= x >> 13; return x
    //   def pair_12bit(rows, cols):   # R = 4095
    //       for r, c: v = 500 + 35*r + 30*c + ((r*c) % 13)*40; n = hash32(r*cols + c) % 401
    //                 a[r, c] = v; b[r, c] = min(max(v + n - 200, 0), 4095)
    //   def pair_8bit(rows, cols, seed):   # R = 1
    //       for r, c: v = ((r + c)*2 + ((r//8) % 2)*60 + hash32(seed + r*cols + c) % 16) % 256
    //                 n = hash32(seed + 7919 + r*cols + c) % 41
    //                 w = min(max(v + n - 20 + (10 if c < cols//2 else -10), 0), 255)
    //                 a[r, c] = float32(v)/float32(255); b[r, c] = float32(w)/float32(255)
    //   def pair_unrelated(rows, cols):   # R = 1
    //       for r, c: a[r, c] = float32(hash32(r*cols + c) % 256)/float32(255)
    //                 b[r, c] = float32(hash32(100000 + r*cols + c) % 256)/float32(255)
    //
    // Results (SSIM, MSE, PSNR):
    //   pair_12bit(48, 40):     0.8443300184198217, 13476.0390625,         30.949455510084867
    //   pair_8bit(64, 64, 1):   0.8146681830692737, 0.0035109843360851085, 24.545711080928875
    //   pair_unrelated(33, 57): -0.02291594772059253, 0.17362459895570087, 7.6038874440207325
    //   pair_12bit(11, 11):     0.8324489526168186, 14381.173553719009,    30.667134847615543

    fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
        assert!(
            (got - want).abs() <= tol,
            "{what}: got {got}, want {want} (tolerance {tol})"
        );
    }

    #[test]
    fn psnr_from_known_mse() {
        assert_close(psnr_from_mse(0.01, 1.0), 20.0, 1e-12, "MSE 0.01, range 1");
        assert_close(
            psnr_from_mse(4095.0 * 4095.0 / 1000.0, 4095.0),
            30.0,
            1e-12,
            "range 4095",
        );
        assert_eq!(psnr_from_mse(0.0, 1.0), f64::INFINITY);
        assert!(psnr_from_mse(0.01, 0.0).is_nan());
        assert!(psnr_from_mse(-1.0, 1.0).is_nan());
    }

    #[test]
    fn mse_of_known_difference() {
        assert_close(
            mse(&[0.0, 1.0, 2.0, 3.0], &[1.0, 1.0, 0.0, 3.0]),
            5.0 / 4.0,
            1e-15,
            "mse",
        );
        assert!(mse(&[1.0], &[1.0, 2.0]).is_nan());
        assert!(mse(&[], &[]).is_nan());
    }

    #[test]
    fn identical_images_are_perfect() {
        let (a, _) = pair_8bit(64, 48, 3);
        let s = scores(&a, &a, 64, 48, 1.0);
        assert_eq!(s.mse, 0.0);
        assert_eq!(s.psnr, f64::INFINITY);
        assert_close(s.ssim, 1.0, 1e-9, "ssim of identical images");
        let flat = vec![0.5_f32; 20 * 30];
        assert_close(
            ssim(&flat, &flat, 20, 30, 1.0),
            1.0,
            1e-9,
            "ssim of identical flat images",
        );
    }

    /// Scores `(a, b)` as a `rows × cols` pair and compares them with scikit-image's values.
    fn check_against_skimage(
        name: &str,
        (a, b): (Vec<f32>, Vec<f32>),
        rows: usize,
        cols: usize,
        range: f64,
        want: ImageScores,
    ) {
        let got = scores(&a, &b, rows, cols, range);
        assert_close(got.ssim, want.ssim, 1e-6, name);
        assert_close(got.mse, want.mse, 1e-9 * want.mse, name);
        assert_close(got.psnr, want.psnr, 1e-9, name);
    }

    #[test]
    fn matches_scikit_image() {
        let want = ImageScores {
            ssim: 0.8443300184198217,
            mse: 13476.0390625,
            psnr: 30.949455510084867,
        };
        check_against_skimage("12bit 48x40", pair_12bit(48, 40), 48, 40, 4095.0, want);
        let want = ImageScores {
            ssim: 0.8146681830692737,
            mse: 0.0035109843360851085,
            psnr: 24.545711080928875,
        };
        check_against_skimage("8bit 64x64", pair_8bit(64, 64, 1), 64, 64, 1.0, want);
        let want = ImageScores {
            ssim: -0.02291594772059253,
            mse: 0.17362459895570087,
            psnr: 7.6038874440207325,
        };
        check_against_skimage("unrelated 33x57", pair_unrelated(33, 57), 33, 57, 1.0, want);
        let want = ImageScores {
            ssim: 0.8324489526168186,
            mse: 14381.173553719009,
            psnr: 30.667134847615543,
        };
        check_against_skimage("12bit 11x11", pair_12bit(11, 11), 11, 11, 4095.0, want);
    }

    #[test]
    fn region_scores_are_scores_of_the_crop() {
        let (rows, cols) = (48, 40);
        let (a, b) = pair_12bit(rows, cols);
        let region = Region {
            row0: 5,
            col0: 7,
            row1: 30,
            col1: 33,
        };
        let ca = crop(&a, cols, region);
        let cb = crop(&b, cols, region);
        assert_eq!(ca.len(), 25 * 26);
        assert_eq!(ca[0], a[5 * cols + 7]);
        assert_eq!(ca[ca.len() - 1], a[29 * cols + 32]);
        let want = scores(&ca, &cb, 25, 26, 4095.0);
        assert_eq!(region_scores(&a, &b, rows, cols, region, 4095.0), want);
        assert!(want.ssim.is_finite() && want.ssim < 1.0);

        let whole = Region {
            row0: 0,
            col0: 0,
            row1: rows,
            col1: cols,
        };
        assert_eq!(
            region_scores(&a, &b, rows, cols, whole, 4095.0),
            scores(&a, &b, rows, cols, 4095.0)
        );
    }

    #[test]
    fn unscorable_inputs_give_nan() {
        let (a, b) = pair_12bit(48, 40);
        let outside = Region {
            row0: 40,
            col0: 0,
            row1: 49,
            col1: 10,
        };
        assert!(crop(&a, 40, outside).is_empty());
        assert!(region_scores(&a, &b, 48, 40, outside, 4095.0).mse.is_nan());

        let small = Region {
            row0: 0,
            col0: 0,
            row1: 10,
            col1: 20,
        };
        let s = region_scores(&a, &b, 48, 40, small, 4095.0);
        assert!(s.mse.is_finite() && s.psnr.is_finite() && s.ssim.is_nan());

        assert!(scores(&a, &b, 40, 40, 4095.0).ssim.is_nan());
        assert!(ssim(&a, &b, 48, 40, 0.0).is_nan());
    }

    #[test]
    fn full_size_image_is_scored() {
        let (rows, cols) = (640, 512);
        let (a, b) = pair_8bit(rows, cols, 11);
        let s = scores(&a, &b, rows, cols, 1.0);
        assert!(s.ssim > 0.0 && s.ssim < 1.0 && s.psnr > 20.0);
    }
}
