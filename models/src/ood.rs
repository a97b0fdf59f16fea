//! The out-of-distribution guard: what the model's training inputs looked like
//! ([`InputProfile`], kept in the weights manifest), and how far one LE image is from them
//! ([`OodScorer::score`]).
//!
//! Design, and why:
//! - **Features** ([`input_features`]) are taken from the preprocessed model input, the very
//!   tensor the generator sees, so an image is judged after the same windowing, flip, crop and
//!   resize as training applied: the share of the content that is breast (above
//!   [`AIR_LEVEL`]), five quantiles and the spread of the breast's intensities, the level
//!   beyond the skin line (air, black in a displayed mammogram), and the gradient energy inside
//!   the breast at two scales (full input resolution and 4×4 means), in decades. Together they
//!   separate what the issue names: uniform noise (texture everywhere, no black air), an
//!   inverted image (bright air, a breast without texture), a For Processing raw image (linear
//!   detector signal: bright air, the breast's intensities bunched where the log image spreads
//!   them), another vendor's processing (other quantiles and texture). The generator's
//!   bottleneck features were left out on purpose: these come before inference, so a refused
//!   image costs no model time, and they work for every backend, TorchScript included, without
//!   touching the model thread.
//! - **Distance**: the Mahalanobis distance to the training mean, each feature first scaled by
//!   its training standard deviation (floored at [`MIN_SCALE`]), with the covariance shrunk
//!   towards the identity by Ledoit and Wolf's rule (J. Multivariate Anal. 88 (2004) 365–411;
//!   the formula of scikit-learn's `ledoit_wolf_shrinkage`). Training sets are small (tens to a
//!   few hundred images against ten features): the plain sample covariance would be nearly
//!   singular and overstate distances along its weakest directions; the Ledoit–Wolf amount is
//!   chosen from the data, not by hand.
//! - **Threshold**: the median of the training images' leave-one-out distances (each image
//!   scored against a profile fitted without it) plus [`THRESHOLD_ROBUST_SDS`] robust standard
//!   deviations of them (1.4826 × their median absolute deviation). In-sample distances
//!   understate those of new images from the same source, since the mean and covariance were
//!   fitted to them; leave-one-out distances do not. Median and MAD rather than a high
//!   quantile: a feature that is nearly constant in training (air beyond the skin line) makes
//!   the one image that differs there land very far when it is left out, and a quantile would
//!   then follow that single image (on phantom v2 one MLO of 48 moved the 0.99 quantile from
//!   about 7 to 82). What the rule lets through is measured by `vcnode-lab eval` on held-out
//!   data.
//!
//! Everything is deterministic and costs a few milliseconds per image.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::preprocess::{Geometry, InputSpec};

/// How many robust standard deviations of the leave-one-out training distances above their
/// median an image must lie to be called out of distribution. For Gaussian features (a
/// chi distribution with ten degrees of freedom) ten of them is beyond any realistic tail;
/// the margin is for the heavier tails of real images.
pub const THRESHOLD_ROBUST_SDS: f64 = 10.0;
/// The quantile of the leave-one-out training distances reported beside the threshold.
pub const REPORTED_QUANTILE: f64 = 0.99;
/// The smallest standard deviation a feature is scaled by: differences below 1% of the display
/// range (or 0.01 decade of gradient energy) are no evidence of another source, even when the
/// training images did not vary at all in that feature (e.g. a background that is always 0).
pub const MIN_SCALE: f64 = 0.01;
/// Windowed values at or below this are air (a displayed mammogram shows air black).
pub const AIR_LEVEL: f32 = 0.05;
/// Fewer training images than this give no usable covariance.
pub const MIN_IMAGES: usize = 8;

/// The features, in the order of [`input_features`].
pub const FEATURE_NAMES: [&str; 10] = [
    "breast_fraction",
    "breast_q05",
    "breast_q25",
    "breast_q50",
    "breast_q75",
    "breast_q95",
    "skin_side_median",
    "log10_gradient_fine",
    "log10_gradient_coarse",
    "log10_breast_sd",
];

#[derive(Debug, thiserror::Error)]
pub enum OodError {
    #[error("an input profile needs at least {MIN_IMAGES} training images, got {0}")]
    TooFewImages(usize),
    #[error("the input profile is inconsistent: {0}")]
    Inconsistent(String),
}

/// Statistics of a model's training inputs, stored in its manifest (`input_profile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputProfile {
    /// Feature names ([`FEATURE_NAMES`] when it was made): a profile of other features is not
    /// used by this vcnode.
    pub features: Vec<String>,
    /// Training images it was fitted on.
    pub images: usize,
    /// Where they came from, e.g. the data path.
    pub data: String,
    pub mean: Vec<f64>,
    /// Each feature's training standard deviation, floored at [`MIN_SCALE`].
    pub scale: Vec<f64>,
    /// Ledoit–Wolf shrinkage towards the identity, in [0, 1].
    pub shrinkage: f64,
    /// The shrunk covariance of the scaled features (row-major, features × features).
    pub covariance: Vec<Vec<f64>>,
    /// Images scoring above this are out of distribution.
    pub threshold: f64,
    /// How the threshold was derived, in words.
    pub threshold_rule: String,
    /// Leave-one-out training distances: median, the threshold's quantile, maximum.
    pub training_scores: TrainingScores,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainingScores {
    pub median: f64,
    /// The [`REPORTED_QUANTILE`] quantile.
    pub quantile: f64,
    pub max: f64,
}

/// One image's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OodVerdict {
    pub score: f64,
    pub threshold: f64,
}

impl OodVerdict {
    pub fn outside(&self) -> bool {
        // A score that is not a number is no evidence of a familiar input.
        self.score > self.threshold || self.score.is_nan()
    }
}

/// The features of one preprocessed model input ([`crate::preprocess::to_model`]'s tensor,
/// [1, 1, rows, cols] or [rows, cols]), inside the content area `geometry` says was filled.
pub fn input_features(input: &Tensor, geometry: &Geometry, spec: &InputSpec) -> Vec<f64> {
    let unit = spec
        .denormalize(&input.to_device(Device::Cpu).to_kind(Kind::Float))
        .view([spec.rows, spec.cols]);
    let (h, w) = (geometry.content[0], geometry.content[1]);
    let content = unit.narrow(0, 0, h).narrow(1, 0, w).contiguous();
    let v = Vec::<f32>::try_from(content.flatten(0, -1)).expect("a float tensor");
    features_of(&v, h as usize, w as usize)
}

/// [`input_features`] on a row-major image of values in [0, 1].
pub fn features_of(v: &[f32], rows: usize, cols: usize) -> Vec<f64> {
    assert_eq!(v.len(), rows * cols);
    // Breast: above the air level. Otsu's threshold would split the pectoral muscle from the
    // breast in MLO views instead, making the training features two clusters.
    let mask: Vec<bool> = v.iter().map(|&x| x > AIR_LEVEL).collect();
    let mut breast: Vec<f32> = v.iter().zip(&mask).filter(|(_, &m)| m).map(|(&x, _)| x).collect();
    breast.sort_by(f32::total_cmp);
    let q = |s: &[f32], p: f64| -> f64 {
        if s.is_empty() {
            return 0.0;
        }
        s[((s.len() - 1) as f64 * p).round() as usize] as f64
    };
    // Beyond the skin line: the preprocessing's crop keeps a margin of air past the breast on the
    // side away from the chest wall, so these columns are air (dark) in a displayed mammogram.
    let band = (cols / 50).max(2).min(cols);
    let mut skin_side: Vec<f32> = (0..rows)
        .flat_map(|r| v[r * cols + cols - band..(r + 1) * cols].iter().copied())
        .collect();
    skin_side.sort_by(f32::total_cmp);
    let fraction = breast.len() as f64 / v.len().max(1) as f64;
    let fine = gradient_energy(v, &mask, rows, cols);
    // 4×4 means: texture at the scale of ducts and lesions rather than of pixel noise.
    let (r4, c4) = (rows / 4, cols / 4);
    let mut coarse = vec![0f32; r4 * c4];
    let mut coarse_mask = vec![false; r4 * c4];
    for r in 0..r4 {
        for c in 0..c4 {
            let (mut s, mut all) = (0f32, true);
            for dr in 0..4 {
                for dc in 0..4 {
                    let i = (4 * r + dr) * cols + 4 * c + dc;
                    s += v[i];
                    all &= mask[i];
                }
            }
            coarse[r * c4 + c] = s / 16.0;
            coarse_mask[r * c4 + c] = all;
        }
    }
    let coarse = gradient_energy(&coarse, &coarse_mask, r4, c4);
    let n = breast.len().max(1) as f64;
    let mean = breast.iter().map(|&x| x as f64).sum::<f64>() / n;
    let sd = (breast.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
    // Decades, floored: an image without texture is simply far, not infinitely far.
    let decades = |x: f64| x.max(1e-6).log10();
    vec![
        fraction,
        q(&breast, 0.05),
        q(&breast, 0.25),
        q(&breast, 0.5),
        q(&breast, 0.75),
        q(&breast, 0.95),
        q(&skin_side, 0.5),
        decades(fine),
        decades(coarse),
        decades(sd),
    ]
}

/// Mean absolute difference between neighbours (right and down) that are both in the mask.
fn gradient_energy(v: &[f32], mask: &[bool], rows: usize, cols: usize) -> f64 {
    let (mut s, mut n) = (0f64, 0usize);
    for r in 0..rows {
        for c in 0..cols {
            let i = r * cols + c;
            if !mask[i] {
                continue;
            }
            if c + 1 < cols && mask[i + 1] {
                s += (v[i + 1] - v[i]).abs() as f64;
                n += 1;
            }
            if r + 1 < rows && mask[i + cols] {
                s += (v[i + cols] - v[i]).abs() as f64;
                n += 1;
            }
        }
    }
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Ledoit–Wolf shrinkage of the covariance of centred rows `x` (n × p) towards μ·I, μ the mean
/// variance; returns (the biased sample covariance, μ, the shrinkage in [0, 1]).
pub fn ledoit_wolf(x: &[Vec<f64>]) -> (Vec<Vec<f64>>, f64, f64) {
    let n = x.len() as f64;
    let p = x.first().map_or(0, Vec::len);
    let mut s = vec![vec![0.0; p]; p];
    for row in x {
        for i in 0..p {
            for j in 0..p {
                s[i][j] += row[i] * row[j] / n;
            }
        }
    }
    let mu = (0..p).map(|i| s[i][i]).sum::<f64>() / p as f64;
    // δ: how far the sample covariance is from μ·I; β: how noisy the sample covariance is
    // (the mean squared distance of each sample's outer product from it, over n).
    let delta = (0..p)
        .flat_map(|i| (0..p).map(move |j| (i, j)))
        .map(|(i, j)| (s[i][j] - if i == j { mu } else { 0.0 }).powi(2))
        .sum::<f64>()
        / p as f64;
    let fourth: f64 = x
        .iter()
        .map(|r| r.iter().map(|v| v * v).sum::<f64>().powi(2))
        .sum();
    let s_norm: f64 = s.iter().flatten().map(|v| v * v).sum();
    let beta = (fourth / n - s_norm) / (p as f64 * n);
    let beta = beta.min(delta);
    let shrinkage = if beta <= 0.0 { 0.0 } else { beta / delta };
    (s, mu, shrinkage)
}

/// Lower Cholesky factor of a symmetric positive definite matrix.
fn cholesky(a: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, OodError> {
    let p = a.len();
    let mut l = vec![vec![0.0; p]; p];
    for i in 0..p {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s.is_nan() || s <= 0.0 {
                    return Err(OodError::Inconsistent(
                        "covariance is not positive definite".into(),
                    ));
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Ok(l)
}

/// √(zᵀ Σ⁻¹ z) given Σ's Cholesky factor: ‖L⁻¹z‖ by forward substitution.
fn mahalanobis_with(l: &[Vec<f64>], z: &[f64]) -> f64 {
    let mut y = vec![0.0; z.len()];
    for i in 0..z.len() {
        y[i] = (z[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    y.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// The Mahalanobis distance of `z` under covariance `cov`.
pub fn mahalanobis(cov: &[Vec<f64>], z: &[f64]) -> Result<f64, OodError> {
    Ok(mahalanobis_with(&cholesky(cov)?, z))
}

/// Mean, scale and shrunk covariance of feature rows.
struct Fit {
    mean: Vec<f64>,
    scale: Vec<f64>,
    shrinkage: f64,
    covariance: Vec<Vec<f64>>,
}

fn fit(rows: &[&Vec<f64>]) -> Fit {
    let n = rows.len() as f64;
    let p = rows[0].len();
    let mean: Vec<f64> = (0..p)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let scale: Vec<f64> = (0..p)
        .map(|j| {
            let var = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
            var.sqrt().max(MIN_SCALE)
        })
        .collect();
    let z: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| (0..p).map(|j| (r[j] - mean[j]) / scale[j]).collect())
        .collect();
    let (s, mu, shrinkage) = ledoit_wolf(&z);
    let covariance = (0..p)
        .map(|i| {
            (0..p)
                .map(|j| (1.0 - shrinkage) * s[i][j] + if i == j { shrinkage * mu } else { 0.0 })
                .collect()
        })
        .collect();
    Fit {
        mean,
        scale,
        shrinkage,
        covariance,
    }
}

impl Fit {
    fn distance(&self, l: &[Vec<f64>], x: &[f64]) -> f64 {
        let z: Vec<f64> = x
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .map(|((v, m), s)| (v - m) / s)
            .collect();
        mahalanobis_with(l, &z)
    }
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    // Linear interpolation between order statistics (numpy's default).
    let h = (sorted.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

impl InputProfile {
    /// Fits a profile to the features ([`input_features`]) of the training inputs.
    pub fn fit(features: &[Vec<f64>], data: &str) -> Result<InputProfile, OodError> {
        if features.len() < MIN_IMAGES {
            return Err(OodError::TooFewImages(features.len()));
        }
        if features.iter().any(|f| f.len() != FEATURE_NAMES.len()) {
            return Err(OodError::Inconsistent(
                "feature vectors of different lengths".into(),
            ));
        }
        let all: Vec<&Vec<f64>> = features.iter().collect();
        let whole = fit(&all);
        // Leave-one-out distances: each image against a profile that never saw it.
        let mut loo = Vec::with_capacity(features.len());
        for (i, held) in features.iter().enumerate() {
            let rest: Vec<&Vec<f64>> = all
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != i)
                .map(|(_, r)| *r)
                .collect();
            let f = fit(&rest);
            loo.push(f.distance(&cholesky(&f.covariance)?, held));
        }
        loo.sort_by(f64::total_cmp);
        let q = quantile(&loo, REPORTED_QUANTILE);
        let median = quantile(&loo, 0.5);
        let mut deviations: Vec<f64> = loo.iter().map(|d| (d - median).abs()).collect();
        deviations.sort_by(f64::total_cmp);
        let robust_sd = 1.4826 * quantile(&deviations, 0.5);
        cholesky(&whole.covariance)?;
        Ok(InputProfile {
            features: FEATURE_NAMES.iter().map(|s| s.to_string()).collect(),
            images: features.len(),
            data: data.to_string(),
            mean: whole.mean,
            scale: whole.scale,
            shrinkage: whole.shrinkage,
            covariance: whole.covariance,
            threshold: median + THRESHOLD_ROBUST_SDS * robust_sd,
            threshold_rule: format!(
                "the median of the training images' leave-one-out Mahalanobis distances (Ledoit-Wolf \
                 shrunk covariance) + {THRESHOLD_ROBUST_SDS} x 1.4826 x their median absolute deviation"
            ),
            training_scores: TrainingScores {
                median,
                quantile: q,
                max: *loo.last().expect("at least MIN_IMAGES"),
            },
        })
    }
}

/// A profile ready to score images (its covariance factorized once).
#[derive(Debug, Clone)]
pub struct OodScorer {
    profile: InputProfile,
    factor: Vec<Vec<f64>>,
}

impl OodScorer {
    pub fn new(profile: InputProfile) -> Result<OodScorer, OodError> {
        let p = FEATURE_NAMES.len();
        if profile.features != FEATURE_NAMES {
            return Err(OodError::Inconsistent(format!(
                "its features {:?} are not the ones this vcnode computes ({FEATURE_NAMES:?})",
                profile.features
            )));
        }
        if profile.mean.len() != p
            || profile.scale.len() != p
            || profile.covariance.len() != p
            || profile.covariance.iter().any(|r| r.len() != p)
        {
            return Err(OodError::Inconsistent("sizes do not match its features".into()));
        }
        let factor = cholesky(&profile.covariance)?;
        Ok(OodScorer { profile, factor })
    }

    pub fn profile(&self) -> &InputProfile {
        &self.profile
    }

    /// The distance of a feature vector from the training inputs, and the threshold.
    pub fn verdict(&self, features: &[f64]) -> OodVerdict {
        let z: Vec<f64> = features
            .iter()
            .zip(&self.profile.mean)
            .zip(&self.profile.scale)
            .map(|((v, m), s)| (v - m) / s)
            .collect();
        OodVerdict {
            score: mahalanobis_with(&self.factor, &z),
            threshold: self.profile.threshold,
        }
    }

    /// [`Self::verdict`] of a preprocessed model input.
    pub fn score(&self, input: &Tensor, geometry: &Geometry, spec: &InputSpec) -> OodVerdict {
        self.verdict(&input_features(input, geometry, spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::{plan, to_model, Normalization};

    /// Hand-computed: x = (2,0), (−2,0), (0,1), (0,−1). S = diag(2, 0.5), μ = 1.25,
    /// δ = ((0.75)² + (0.75)²)/2 = 0.5625, Σ‖x‖⁴ = 34, ‖S‖² = 4.25,
    /// β = (34/4 − 4.25)/(2·4) = 0.53125, shrinkage = β/δ = 17/18.
    #[test]
    fn ledoit_wolf_and_mahalanobis_match_a_hand_computed_case() {
        let x = vec![vec![2.0, 0.0], vec![-2.0, 0.0], vec![0.0, 1.0], vec![0.0, -1.0]];
        let (s, mu, shrinkage) = ledoit_wolf(&x);
        assert_eq!(s, vec![vec![2.0, 0.0], vec![0.0, 0.5]]);
        assert!((mu - 1.25).abs() < 1e-12);
        assert!((shrinkage - 17.0 / 18.0).abs() < 1e-12, "{shrinkage}");
        // Σ = S/18 + (17/18)·1.25·I = diag(23.25, 21.75)/18; d² of (1, 1) = 18/23.25 + 18/21.75.
        let cov = vec![vec![23.25 / 18.0, 0.0], vec![0.0, 21.75 / 18.0]];
        let d = mahalanobis(&cov, &[1.0, 1.0]).unwrap();
        assert!((d - (18.0f64 / 23.25 + 18.0 / 21.75).sqrt()).abs() < 1e-12, "{d}");
        // A correlated case: Σ = [[2, 1], [1, 2]], Σ⁻¹ = [[2, −1], [−1, 2]]/3, d²(1, −1) = 2.
        let d = mahalanobis(&[vec![2.0, 1.0], vec![1.0, 2.0]], &[1.0, -1.0]).unwrap();
        assert!((d - 2f64.sqrt()).abs() < 1e-12, "{d}");
    }

    /// A smooth bright half-disc with mild texture on a dark background, like a windowed LE.
    fn breast(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut rand = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let radius = 0.55 + 0.1 * rand();
        let level = 0.45 + 0.1 * rand();
        let mut v = vec![0.0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let d = ((r as f32 / rows as f32 - 0.5) / 0.4).powi(2)
                    + (c as f32 / (cols as f32 * radius)).powi(2);
                if d < 1.0 {
                    let wave = 0.05 * ((r as f32 * 0.3).sin() * (c as f32 * 0.2).cos());
                    v[r * cols + c] = level + 0.3 * (1.0 - d) + wave + 0.02 * rand();
                }
            }
        }
        v
    }

    fn spec() -> InputSpec {
        InputSpec {
            rows: 64,
            cols: 48,
            normalization: Normalization::MinusOneOne,
        }
    }

    fn features(img: &[f32]) -> Vec<f64> {
        let g = plan(img, 128, 96, &spec());
        input_features(&to_model(img, &g, &spec()), &g, &spec())
    }

    #[test]
    fn the_profile_round_trips_through_a_manifest_and_separates_noise_from_breasts() {
        let training: Vec<Vec<f64>> = (0..20).map(|s| features(&breast(128, 96, s))).collect();
        let profile = InputProfile::fit(&training, "synthetic half-discs").unwrap();
        assert!(profile.shrinkage > 0.0 && profile.shrinkage <= 1.0);
        assert!(profile.threshold > profile.training_scores.median);

        // A manifest written before the guard (no input_profile) loads, and takes one.
        let text = include_str!("../weights/scpa-unet.json");
        let mut manifest: crate::manifest::Manifest = serde_json::from_str(text).unwrap();
        manifest.input_profile = Some(profile.clone());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        manifest.save(&path).unwrap();
        let back = crate::manifest::Manifest::load(&path).unwrap();
        let loaded = back.input_profile.expect("the profile is kept");
        assert_eq!(
            (&loaded.features, loaded.images, &loaded.data),
            (&profile.features, profile.images, &profile.data)
        );
        // JSON keeps floats to their last bit or so: the same verdicts, to 1e-9.
        let scorer = OodScorer::new(loaded).unwrap();
        let original = OodScorer::new(profile).unwrap();
        let same = |f: &[f64]| {
            let (a, b) = (scorer.verdict(f), original.verdict(f));
            assert!((a.score - b.score).abs() < 1e-9 && (a.threshold - b.threshold).abs() < 1e-9);
            a
        };
        let held_out = same(&features(&breast(128, 96, 99)));
        assert!(!held_out.outside(), "{held_out:?}");
        let mut state = 7u32;
        let noise: Vec<f32> = (0..128 * 96)
            .map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 8) as f32 / (1u32 << 24) as f32
            })
            .collect();
        let v = same(&features(&noise));
        assert!(v.outside(), "{v:?}");
        let inverted: Vec<f32> = breast(128, 96, 99).iter().map(|x| 1.0 - x).collect();
        let v = same(&features(&inverted));
        assert!(v.outside(), "{v:?}");
    }

    #[test]
    fn too_few_images_or_foreign_features_are_errors() {
        let few: Vec<Vec<f64>> = (0..3).map(|s| features(&breast(128, 96, s))).collect();
        assert!(matches!(
            InputProfile::fit(&few, ""),
            Err(OodError::TooFewImages(3))
        ));
        let training: Vec<Vec<f64>> = (0..10).map(|s| features(&breast(128, 96, s))).collect();
        let mut p = InputProfile::fit(&training, "").unwrap();
        p.features[0] = "something else".into();
        assert!(OodScorer::new(p).is_err());
    }
}
