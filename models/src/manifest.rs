//! The weights manifest: what a set of weights is, how it was made, how good it is, and the
//! sha256 that loading checks. Input size and normalization live here, not in code.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::nets::{GeneratorConfig, ModelKind};
use crate::ood::InputProfile;
use crate::preprocess::InputSpec;

pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid weights manifest: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("weights {path} do not match their manifest: sha256 is {actual}, the manifest says {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("manifest format {0} is newer than this vcnode understands ({MANIFEST_FORMAT})")]
    Format(u32),
}

/// How the weights file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsFormat {
    /// safetensors whose keys are the Rust module paths (also what a PyTorch port must use).
    Safetensors,
    /// A TorchScript generator (`torch.jit.save`), taking and returning [N, 1, H, W].
    Torchscript,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsRef {
    /// File name, relative to the manifest's folder.
    pub file: String,
    pub format: WeightsFormat,
    /// Storage dtype of the tensors: f32, f16 or bf16 (computation is f32 unless configured).
    pub dtype: String,
    pub sha256: String,
    pub parameters: u64,
}

/// How the weights were trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// What data, e.g. "vcnode phantom seed 1, patients 0-59 (240 pairs)".
    pub data: String,
    /// The data source as `vcnode-lab train` was given it (absolute path), so that an evaluation on
    /// the same source cannot call it held-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_path: Option<String>,
    /// Patients whose pairs the weights trained on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    /// Patients of the validation pairs, which chose the epoch and the seed: development data,
    /// never held-out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_patients: Vec<String>,
    pub pairs: usize,
    pub epochs: usize,
    pub steps: usize,
    pub batch: usize,
    pub learning_rate: f64,
    pub beta1: f64,
    pub lambda_l1: Option<f64>,
    /// PatchGAN width of a cGAN's discriminator (the paper's 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discriminator_base: Option<i64>,
    pub device: String,
    /// The arithmetic of the forward passes: "f32", or "bf16 autocast" (CUDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    pub seconds: f64,
    pub final_l1: f64,
    /// The epoch (counted from 1) whose weights these are, when they were chosen by the lowest
    /// validation L1 rather than taken from the last epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_epoch: Option<usize>,
    /// Crops instead of whole images, and how they were placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patches: Option<PatchSampling>,
    /// The seed of the run these weights come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// With several seeds: each one's short probe; the lowest validation enhancement L1 was
    /// trained on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seed_probes: Vec<SeedProbe>,
    /// Anything a reader must know, e.g. that a smaller CPU configuration was trained.
    pub note: String,
    /// The last epochs trained with the batch norms frozen on whole-image statistics
    /// (`TrainConfig::frozen_norm_epochs`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frozen_norm_epochs: usize,
    /// The weights this run started from, when it fine-tuned rather than started afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tuned_from: Option<FineTunedFrom>,
}

/// Patch training: each step draws `batch` square crops instead of whole images. Enhancing
/// tissue covers about 1% of a breast, so whole images spend nearly all of each step on the flat
/// background; crops centred on what the target RC enhances spend more of it on uptake. The
/// centres come from the RC itself, so no lesion annotations are needed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PatchSampling {
    /// Side of the square crop, in model-input pixels (a multiple of the generator's
    /// `size_multiple`).
    pub size: i64,
    /// Share of the crops centred on a pixel drawn in proportion to how far the RC rises above
    /// the breast's median; the others are placed uniformly.
    pub enhancement_share: f64,
}

/// One restart of a multi-seed run (`vcnode-lab train --seeds`): a seed trained for a few epochs,
/// and how close it then came on the validation pixels that enhance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeedProbe {
    pub seed: i64,
    pub epochs: usize,
    pub val_enhancement_l1: f64,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl TrainingRecord {
    /// Every patient these weights, and the weights they were fine-tuned from, trained on or were
    /// chosen on.
    pub fn development_patients(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .patients
            .iter()
            .chain(&self.validation_patients)
            .map(String::as_str)
            .collect();
        if let Some(before) = self.fine_tuned_from.as_ref().and_then(|f| f.training.as_ref()) {
            out.extend(before.development_patients());
        }
        out
    }

    /// Every data source these weights, and those they were fine-tuned from, were trained on.
    pub fn development_paths(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.data_path.iter().map(String::as_str).collect();
        if let Some(before) = self.fine_tuned_from.as_ref().and_then(|f| f.training.as_ref()) {
            out.extend(before.development_paths());
        }
        out
    }
}

/// The starting point of a fine-tuning run: which weights, and how they were trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTunedFrom {
    pub model_id: String,
    pub sha256: String,
    pub training: Option<Box<TrainingRecord>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub model: ModelKind,
    pub generator: GeneratorConfig,
    pub input: InputSpec,
    pub weights: WeightsRef,
    pub training: Option<TrainingRecord>,
    /// Held-out metrics as the evaluation wrote them.
    #[serde(default)]
    pub metrics: serde_json::Value,
    pub created_by: String,
    /// What the training inputs looked like, for the out-of-distribution guard
    /// ([`crate::ood`]); weights made before the guard have none until `vcnode-lab calibrate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_profile: Option<InputProfile>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
            path: path.into(),
            source,
        })?;
        let m: Manifest = serde_json::from_str(&text).map_err(|source| ManifestError::Parse {
            path: path.into(),
            source,
        })?;
        if m.format > MANIFEST_FORMAT {
            return Err(ManifestError::Format(m.format));
        }
        Ok(m)
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        std::fs::write(path, text + "\n")
    }

    /// The weights file next to `manifest_path`.
    pub fn weights_path(&self, manifest_path: &Path) -> PathBuf {
        manifest_path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.weights.file)
    }

    /// Checks the weights file against the manifest's sha256.
    pub fn verify(&self, manifest_path: &Path) -> Result<PathBuf, ManifestError> {
        let path = self.weights_path(manifest_path);
        let actual = sha256_file(&path)?;
        if !actual.eq_ignore_ascii_case(&self.weights.sha256) {
            return Err(ManifestError::Checksum {
                path,
                expected: self.weights.sha256.clone(),
                actual,
            });
        }
        Ok(path)
    }

    /// A short identifier: model name and the first 12 hex digits of the weights hash.
    pub fn model_id(&self) -> String {
        format!(
            "{}-{}",
            self.model.name(),
            &self.weights.sha256[..12.min(self.weights.sha256.len())]
        )
    }
}

pub fn sha256_file(path: &Path) -> Result<String, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.into(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
