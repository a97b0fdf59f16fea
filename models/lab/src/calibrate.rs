//! `vcnode-lab calibrate`: gives a model's manifest the input profile of the out-of-distribution
//! guard ([`vcnode_models::ood`]), fitted on the preprocessed LE images of its training data,
//! so that weights trained before the guard existed get one. The weights and their sha256 are
//! not touched. `vcnode-lab train` calls [`input_profile`] too, on the pairs it trained on.

use std::path::PathBuf;

use anyhow::Context;
use vcnode_models::manifest::Manifest;
use vcnode_models::ood::{input_features, InputProfile, OodScorer};
use vcnode_models::preprocess::InputSpec;

use super::dataset::{discover, prepare_all, PreparedPair};

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// The model's weights manifest.
    #[arg(long)]
    pub model: PathBuf,
    /// The model's training data: a pairs CSV or a folder (as `vcnode-lab train --data`); only the
    /// LE images are read.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the manifest with its profile (default: over --model). It names the
    /// weights by a path relative to itself, so keep it beside them or copy them along.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The guard's features of the LE images of `pairs` (already through the model's preprocessing).
fn features(pairs: &[PreparedPair], spec: &InputSpec) -> Vec<Vec<f64>> {
    pairs
        .iter()
        .map(|p| input_features(&p.le, &p.geometry, spec))
        .collect()
}

/// The input profile of the LE images of `pairs`.
pub fn input_profile(pairs: &[PreparedPair], spec: &InputSpec, data: &str) -> anyhow::Result<InputProfile> {
    Ok(InputProfile::fit(&features(pairs, spec), data)?)
}

/// Adds (or replaces) the input profile of `args.model`; returns the manifest written.
pub fn run(args: &CalibrateArgs) -> anyhow::Result<PathBuf> {
    let mut manifest =
        Manifest::load(&args.model).with_context(|| format!("--model {}", args.model.display()))?;
    let pairs = discover(&args.data)?;
    let prepared = prepare_all(&pairs, &manifest.input)?;
    let data = super::train::absolute(&args.data);
    let profile = input_profile(&prepared, &manifest.input, &data)?;
    eprintln!(
        "{} training images: leave-one-out distances median {:.2}, {:.2} at the 0.99 quantile, \
         max {:.2}; threshold {:.2} (Ledoit-Wolf shrinkage {:.3})",
        profile.images,
        profile.training_scores.median,
        profile.training_scores.quantile,
        profile.training_scores.max,
        profile.threshold,
        profile.shrinkage
    );
    OodScorer::new(profile.clone())?;
    manifest.input_profile = Some(profile);
    let out = args.out.clone().unwrap_or_else(|| args.model.clone());
    // The weights stay where they are: a manifest written elsewhere names them by an absolute
    // path (Path::join keeps an absolute file name as it is), and its sha256 still checks them.
    if out != args.model {
        let weights = manifest.weights_path(&args.model);
        if out.parent() != args.model.parent() {
            manifest.weights.file = super::train::absolute(&weights);
        }
    }
    manifest
        .save(&out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out)
}

/// What the out-of-distribution guard of one model says about an evaluation set: on data of the
/// training kind, the share it flags is its false-positive rate.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GuardRate {
    pub model_id: String,
    pub images: usize,
    pub flagged: usize,
    pub threshold: f64,
    pub median_score: f64,
    pub max_score: f64,
}

impl GuardRate {
    pub fn share(&self) -> f64 {
        self.flagged as f64 / self.images.max(1) as f64
    }
}

/// The guard's verdicts on `pairs` for each manifest that has a profile.
pub fn guard_rates(
    manifests: &[&Manifest],
    pairs: &[PreparedPair],
    spec: &InputSpec,
) -> anyhow::Result<Vec<GuardRate>> {
    let features = features(pairs, spec);
    let mut out = Vec::new();
    for m in manifests {
        let Some(profile) = m.input_profile.clone() else {
            continue;
        };
        let scorer = OodScorer::new(profile).with_context(|| format!("{}'s input profile", m.model_id()))?;
        let verdicts: Vec<_> = features.iter().map(|f| scorer.verdict(f)).collect();
        let mut scores: Vec<f64> = verdicts.iter().map(|v| v.score).collect();
        scores.sort_by(f64::total_cmp);
        out.push(GuardRate {
            model_id: m.model_id(),
            images: verdicts.len(),
            flagged: verdicts.iter().filter(|v| v.outside()).count(),
            threshold: scorer.profile().threshold,
            median_score: scores.get(scores.len() / 2).copied().unwrap_or(f64::NAN),
            max_score: scores.last().copied().unwrap_or(f64::NAN),
        });
    }
    Ok(out)
}
