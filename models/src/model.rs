//! A generator ready for inference: weights loaded through their manifest (sha256 checked),
//! native (safetensors, Rust module paths) or TorchScript.

use std::path::Path;

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::manifest::{Manifest, ManifestError, WeightsFormat};
use crate::nets::Generator;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot load weights {path}: {source}")]
    Load { path: String, source: tch::TchError },
    #[error("weights {path} lack tensor {name} that the {model} architecture needs")]
    MissingTensor {
        path: String,
        name: String,
        model: String,
    },
    #[error("tensor {name} in {path} has shape {found:?}, the architecture expects {expected:?}")]
    Shape {
        path: String,
        name: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
}

/// The number format of the generator's weights and activations at inference. Pre- and
/// post-processing stay in f32 whatever this is: the input is converted on its way in, the
/// output back to f32 on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// bf16 on CUDA (tensor cores, and bf16 keeps f32's range, so no scaling is needed), f32 on
    /// the CPU, where bf16 convolutions are slower than f32 ones on most processors.
    Auto,
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The tensor kind the generator runs in on `device`.
    pub fn kind_on(self, device: Device) -> Kind {
        match self {
            Precision::Auto if device.is_cuda() => Kind::BFloat16,
            Precision::Auto | Precision::F32 => Kind::Float,
            Precision::Bf16 => Kind::BFloat16,
            Precision::F16 => Kind::Half,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(Precision::Auto),
            "f32" | "fp32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            "f16" | "fp16" => Ok(Precision::F16),
            other => Err(format!(
                "invalid precision {other:?}: expected auto, f32, bf16 or f16"
            )),
        }
    }
}

enum Backend {
    // Boxed: an enum as large as its largest variant would carry ~300 bytes for the TorchScript case.
    Native {
        vs: nn::VarStore,
        generator: Box<Generator>,
    },
    TorchScript(tch::CModule),
}

/// A loaded generator on its device.
pub struct RcModel {
    pub manifest: Manifest,
    pub device: Device,
    /// What the generator computes in ([`RcModel::set_precision`]); f32 after loading.
    pub kind: Kind,
    backend: Backend,
}

/// The generator's variables under this prefix in weights files.
pub const GENERATOR_PREFIX: &str = "generator";

impl RcModel {
    /// Loads the weights a manifest names onto `device`, after checking their sha256.
    pub fn load(manifest_path: &Path, device: Device) -> Result<RcModel, ModelError> {
        let manifest = Manifest::load(manifest_path)?;
        let path = manifest.verify(manifest_path)?;
        let shown = path.display().to_string();
        let backend = match manifest.weights.format {
            WeightsFormat::Torchscript => {
                let mut m =
                    tch::CModule::load_on_device(&path, device).map_err(|source| ModelError::Load {
                        path: shown.clone(),
                        source,
                    })?;
                m.set_eval();
                Backend::TorchScript(m)
            }
            WeightsFormat::Safetensors => {
                let mut vs = nn::VarStore::new(device);
                let generator = Generator::new(vs.root() / GENERATOR_PREFIX, &manifest.generator);
                load_safetensors(&mut vs, &path, manifest.model.name())?;
                Backend::Native {
                    vs,
                    generator: Box::new(generator),
                }
            }
        };
        if device.is_cuda() {
            // The input size is fixed by the manifest, so cuDNN's per-shape search pays once.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        Ok(RcModel {
            manifest,
            device,
            kind: Kind::Float,
            backend,
        })
    }

    /// Converts the weights to `precision`'s kind on this model's device.
    pub fn set_precision(&mut self, precision: Precision) {
        let kind = precision.kind_on(self.device);
        match &mut self.backend {
            Backend::Native { vs, .. } => vs.set_kind(kind),
            Backend::TorchScript(m) => m.to(self.device, kind, false),
        }
        self.kind = kind;
    }

    /// Runs one batch of `batch` blank inputs of the manifest's size, so that the first real
    /// image does not pay for CUDA's lazy initialization and cuDNN's algorithm search.
    pub fn warm_up(&self, batch: i64) {
        let (rows, cols) = (self.manifest.input.rows, self.manifest.input.cols);
        let x = Tensor::zeros([batch.max(1), 1, rows, cols], (Kind::Float, Device::Cpu));
        let _ = self.synthesize(&x);
    }

    /// Synthetic RC for a batch of normalized LE inputs [N, 1, H, W] (any device); returns
    /// the output on the CPU.
    pub fn synthesize(&self, input: &Tensor) -> Tensor {
        self.run(input, false).0
    }

    /// As [`RcModel::synthesize`], with the pixel-attention map of the last SCPA layer
    /// (mean over its channels, [N, 1, H, W]) when the model has SCPA blocks.
    pub fn synthesize_with_attention(&self, input: &Tensor) -> (Tensor, Option<Tensor>) {
        self.run(input, true)
    }

    fn run(&self, input: &Tensor, attention: bool) -> (Tensor, Option<Tensor>) {
        tch::no_grad(|| {
            let x = input.to_device(self.device).to_kind(self.kind);
            let back = |t: Tensor| t.to_kind(Kind::Float).to_device(Device::Cpu);
            match &self.backend {
                Backend::TorchScript(m) => (back(m.forward(&x)), None),
                Backend::Native { generator, .. } => {
                    let out = generator.run(&x, attention);
                    let att = out
                        .attention
                        .last()
                        .map(|a| back(a.mean_dim(1, true, Kind::Float)));
                    (back(out.image), att)
                }
            }
        })
    }
}

/// Loads safetensors into a var store, converting the stored dtype (f16/bf16/f32) to the
/// variables' f32, and naming any missing or misshapen tensor.
pub fn load_safetensors(vs: &mut nn::VarStore, path: &Path, model: &str) -> Result<(), ModelError> {
    let shown = path.display().to_string();
    let tensors = Tensor::read_safetensors(path).map_err(|source| ModelError::Load {
        path: shown.clone(),
        source,
    })?;
    let by_name: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let vars = vs.variables();
    tch::no_grad(|| {
        for (name, mut var) in vars {
            let t = by_name.get(&name).ok_or_else(|| ModelError::MissingTensor {
                path: shown.clone(),
                name: name.clone(),
                model: model.to_string(),
            })?;
            if t.size() != var.size() {
                return Err(ModelError::Shape {
                    path: shown.clone(),
                    name,
                    found: t.size(),
                    expected: var.size(),
                });
            }
            var.copy_(&t.to_kind(var.kind()));
        }
        Ok(())
    })
}

/// Writes a var store's tensors as safetensors in `kind` (e.g. Half to halve the file).
pub fn save_safetensors(vs: &nn::VarStore, path: &Path, kind: Kind) -> Result<(), tch::TchError> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(Device::Cpu).to_kind(kind)))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&named, path)
}
