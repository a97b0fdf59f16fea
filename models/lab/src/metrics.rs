//! Image-similarity metrics for judging synthesized images against their references.
//!
//! The evaluation compares each generated image with the real one by MSE, PSNR and SSIM, once on the
//! whole image and once on each region of interest (a rectangle around contrast uptake). In a region,
//! MSE and PSNR are those of its pixels and SSIM is the mean of the whole image's SSIM map over its
//! pixels ([`SsimMap::mean_over`]), so small regions get a value too.
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
//! with the same reflection ([`SsimMap`]), so the mean over the interior is scikit-image's mean SSIM and
//! the map itself is scikit-image's `full=True` map.
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
    /// Rows `row0..row1`, columns `col0..col1`.
    pub const fn new(row0: usize, row1: usize, col0: usize, col1: usize) -> Region {
        Region {
            row0,
            col0,
            row1,
            col1,
        }
    }

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
/// documentation): the mean of [`SsimMap`] over the pixels at least [`SSIM_WIN_SIZE`]` / 2` from every
/// border. Identical images score exactly 1.
///
/// `NaN` if the slices are not both `rows × cols` long, `data_range` is not positive and finite, or the
/// image is smaller than [`SSIM_WIN_SIZE`] in either dimension.
pub fn ssim(a: &[f32], b: &[f32], rows: usize, cols: usize, data_range: f64) -> f64 {
    SsimMap::new(a, b, rows, cols, data_range).map_or(f64::NAN, |m| m.mean())
}

/// The local SSIM of every pixel of an image pair: scikit-image's
/// `structural_similarity(..., full=True)[1]` with the window of the module documentation, the five
/// local moments filtered with `mode='reflect'` (the edge pixel repeated, `d c b a | a b c d | d c b a`)
/// so that the map covers the whole image.
///
/// Region scores average this map inside the region ([`SsimMap::mean_over`]) rather than computing SSIM
/// on a crop: a crop smaller than the window has no SSIM at all, and a crop's border pixels would be
/// judged on reflected copies of the crop instead of on their real neighbourhood.
#[derive(Debug, Clone)]
pub struct SsimMap {
    rows: usize,
    cols: usize,
    values: Vec<f64>,
}

impl SsimMap {
    /// The SSIM map of two `rows × cols` images; `None` when [`ssim`] would be `NaN`.
    pub fn new(a: &[f32], b: &[f32], rows: usize, cols: usize, data_range: f64) -> Option<SsimMap> {
        if !same_shape(a, b, rows, cols)
            || rows < SSIM_WIN_SIZE
            || cols < SSIM_WIN_SIZE
            || !valid_range(data_range)
        {
            return None;
        }
        let c1 = (SSIM_K1 * data_range).powi(2);
        let c2 = (SSIM_K2 * data_range).powi(2);
        let w = gaussian_window();
        let moments = |f: &dyn Fn(f64, f64) -> f64| {
            let m: Vec<f64> = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| f(f64::from(x), f64::from(y)))
                .collect();
            filter_reflect(&m, rows, cols, &w)
        };
        let mx = moments(&|x, _| x);
        let my = moments(&|_, y| y);
        let mxx = moments(&|x, _| x * x);
        let myy = moments(&|_, y| y * y);
        let mxy = moments(&|x, y| x * y);
        let values = (0..rows * cols)
            .map(|i| {
                let (ux, uy) = (mx[i], my[i]);
                let vx = mxx[i] - ux * ux;
                let vy = myy[i] - uy * uy;
                let vxy = mxy[i] - ux * uy;
                (2.0 * ux * uy + c1) * (2.0 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
            })
            .collect();
        Some(SsimMap { rows, cols, values })
    }

    /// The mean SSIM: the map's mean over the pixels whose window lies inside the image, as
    /// scikit-image reports it.
    pub fn mean(&self) -> f64 {
        self.mean_over(Region {
            row0: SSIM_RADIUS,
            col0: SSIM_RADIUS,
            row1: self.rows - SSIM_RADIUS,
            col1: self.cols - SSIM_RADIUS,
        })
    }

    /// The map's mean over the pixels of `region` (any non-empty size); `NaN` if the region is empty or
    /// reaches outside the image.
    pub fn mean_over(&self, region: Region) -> f64 {
        if !region.fits(self.rows, self.cols) {
            return f64::NAN;
        }
        let sum: f64 = (region.row0..region.row1)
            .map(|r| {
                self.values[r * self.cols + region.col0..r * self.cols + region.col1]
                    .iter()
                    .sum::<f64>()
            })
            .sum();
        sum / (region.rows() * region.cols()) as f64
    }
}

/// Separable filtering of a `rows × cols` image with the window `w`, reflecting at the borders as
/// `scipy.ndimage` does with `mode='reflect'`. Callers guarantee both sides are at least the window's
/// radius, so one reflection always suffices.
fn filter_reflect(img: &[f64], rows: usize, cols: usize, w: &[f64; SSIM_WIN_SIZE]) -> Vec<f64> {
    let reflect = |i: isize, n: usize| -> usize {
        if i < 0 {
            (-i - 1) as usize
        } else if i as usize >= n {
            2 * n - 1 - i as usize
        } else {
            i as usize
        }
    };
    let r = SSIM_RADIUS as isize;
    let mut across = vec![0.0; rows * cols];
    for row in 0..rows {
        let line = &img[row * cols..(row + 1) * cols];
        for c in 0..cols {
            across[row * cols + c] = w
                .iter()
                .enumerate()
                .map(|(k, wk)| wk * line[reflect(c as isize + k as isize - r, cols)])
                .sum();
        }
    }
    let mut out = vec![0.0; rows * cols];
    for row in 0..rows {
        let dst = &mut out[row * cols..(row + 1) * cols];
        for (k, wk) in w.iter().enumerate() {
            let src_row = reflect(row as isize + k as isize - r, rows);
            for (d, s) in dst.iter_mut().zip(&across[src_row * cols..(src_row + 1) * cols]) {
                *d += wk * s;
            }
        }
    }
    out
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

/// MSE, PSNR and SSIM of the pair restricted to `region`: MSE and PSNR of the pixels inside it, SSIM
/// the mean of the whole image's [`SsimMap`] inside it, so every window sees the region's real
/// surroundings and a region of any size has an SSIM. All `NaN` when the region does not fit the image;
/// SSIM alone is `NaN` when the image is smaller than [`SSIM_WIN_SIZE`]. To score many regions of one
/// pair, build the map once and call [`roi_scores`].
pub fn region_scores(
    a: &[f32],
    b: &[f32],
    rows: usize,
    cols: usize,
    region: Region,
    data_range: f64,
) -> ImageScores {
    let map = SsimMap::new(a, b, rows, cols, data_range);
    roi_scores(a, b, rows, cols, map.as_ref(), region, data_range)
}

/// [`region_scores`] with the pair's SSIM map already computed (`None` where the image has none).
pub fn roi_scores(
    a: &[f32],
    b: &[f32],
    rows: usize,
    cols: usize,
    map: Option<&SsimMap>,
    region: Region,
    data_range: f64,
) -> ImageScores {
    if !same_shape(a, b, rows, cols) || !region.fits(rows, cols) {
        return ImageScores::UNSCORABLE;
    }
    let mse = mse(&crop(a, cols, region), &crop(b, cols, region));
    ImageScores {
        mse,
        psnr: psnr_from_mse(mse, data_range),
        ssim: map.map_or(f64::NAN, |m| m.mean_over(region)),
    }
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

    // Masked SSIM references: the same scikit-image 0.26.0 call with `full=True`, then the mean of the
    // map over a box (rows r0..r1, columns c0..c1, ends exclusive):
    //
    //   m, S = structural_similarity(a, b, data_range=R, gaussian_weights=True, sigma=1.5,
    //                                use_sample_covariance=False, full=True)
    //   S[r0:r1, c0:c1].mean()
    //
    // pair_12bit(48, 40), R = 4095:
    //   (0, 3, 0, 4): 0.8327625795491618       (20, 26, 10, 16): 0.8667016066209042
    //   (47, 48, 39, 40): 0.6977559047133063   (5, 30, 7, 33): 0.8463830084512393
    //   (0, 48, 0, 40): 0.8456038690454849
    // pair_8bit(64, 64, 1), R = 1:
    //   (60, 64, 0, 64): 0.6274874029424273    (30, 34, 28, 36): 0.8692948849304707

    #[test]
    fn masked_ssim_matches_scikit_image() {
        let (a, b) = pair_12bit(48, 40);
        let map = SsimMap::new(&a, &b, 48, 40, 4095.0).expect("an SSIM map");
        assert_close(map.mean(), 0.8443300184198217, 1e-6, "mean SSIM from the map");
        for (r, want) in [
            (Region::new(0, 3, 0, 4), 0.8327625795491618),
            (Region::new(20, 26, 10, 16), 0.8667016066209042),
            (Region::new(47, 48, 39, 40), 0.6977559047133063),
            (Region::new(5, 30, 7, 33), 0.8463830084512393),
            (Region::new(0, 48, 0, 40), 0.8456038690454849),
        ] {
            assert_close(map.mean_over(r), want, 1e-6, &format!("12bit {r:?}"));
        }
        let (a, b) = pair_8bit(64, 64, 1);
        let map = SsimMap::new(&a, &b, 64, 64, 1.0).expect("an SSIM map");
        for (r, want) in [
            (Region::new(60, 64, 0, 64), 0.6274874029424273),
            (Region::new(30, 34, 28, 36), 0.8692948849304707),
        ] {
            assert_close(map.mean_over(r), want, 1e-6, &format!("8bit {r:?}"));
        }
    }

    #[test]
    fn region_scores_take_mse_from_the_box_and_ssim_from_the_whole_map() {
        let (rows, cols) = (48, 40);
        let (a, b) = pair_12bit(rows, cols);
        let box_ = Region::new(5, 30, 7, 33);
        let ca = crop(&a, cols, box_);
        let cb = crop(&b, cols, box_);
        assert_eq!(ca.len(), 25 * 26);
        assert_eq!(ca[0], a[5 * cols + 7]);
        assert_eq!(ca[ca.len() - 1], a[29 * cols + 32]);
        let got = region_scores(&a, &b, rows, cols, box_, 4095.0);
        assert_eq!(got.mse, mse(&ca, &cb));
        assert_eq!(got.psnr, psnr_from_mse(got.mse, 4095.0));
        assert_close(got.ssim, 0.8463830084512393, 1e-6, "SSIM map over the box");
        // Not the SSIM of the crop on its own, whose border windows see reflected copies of the crop.
        assert!((got.ssim - ssim(&ca, &cb, 25, 26, 4095.0)).abs() > 1e-4);

        // A box smaller than the window still has an SSIM.
        let small = region_scores(&a, &b, rows, cols, Region::new(0, 3, 0, 4), 4095.0);
        assert_close(small.ssim, 0.8327625795491618, 1e-6, "3x4 box");
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

        // No SSIM map for an image smaller than the window, so its regions have MSE and PSNR only.
        let tiny = region_scores(&a[..100], &b[..100], 10, 10, Region::new(0, 5, 0, 5), 4095.0);
        assert!(tiny.mse.is_finite() && tiny.psnr.is_finite() && tiny.ssim.is_nan());
        assert!(SsimMap::new(&a[..100], &b[..100], 10, 10, 4095.0).is_none());

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
