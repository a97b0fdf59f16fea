//! The networks of the paper (DESIGN.md "The generators"): the SCPA block, the U-Net generator
//! with or without SCPA blocks, and the 70×70 PatchGAN discriminator.

mod patchgan;
mod scpa;
mod unet;

pub use patchgan::PatchGan;
pub use scpa::ScpaBlock;
pub use unet::{Generator, GeneratorOutput};

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// LeakyReLU with slope 0.2 (tch's `leaky_relu` has a fixed 0.01 slope).
pub(crate) fn lrelu(x: &Tensor) -> Tensor {
    x.maximum(&(x * 0.2))
}

/// The four models of the paper's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    /// U-Net with SCPA blocks, L1 loss.
    ScpaUnet,
    /// SCPA-UNet generator with a PatchGAN discriminator: GAN loss + λ·L1.
    ScpaCgan,
    /// The same U-Net without SCPA blocks, L1 loss.
    Unet,
    /// U-Net generator without SCPA with a PatchGAN discriminator (Pix2Pix).
    Pix2pix,
}

impl ModelKind {
    pub fn uses_scpa(self) -> bool {
        matches!(self, ModelKind::ScpaUnet | ModelKind::ScpaCgan)
    }
    pub fn adversarial(self) -> bool {
        matches!(self, ModelKind::ScpaCgan | ModelKind::Pix2pix)
    }
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::ScpaUnet => "scpa-unet",
            ModelKind::ScpaCgan => "scpa-cgan",
            ModelKind::Unet => "unet",
            ModelKind::Pix2pix => "pix2pix",
        }
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scpa-unet" => Ok(ModelKind::ScpaUnet),
            "scpa-cgan" => Ok(ModelKind::ScpaCgan),
            "unet" => Ok(ModelKind::Unet),
            "pix2pix" => Ok(ModelKind::Pix2pix),
            other => Err(format!(
                "unknown model {other:?}: expected scpa-unet, scpa-cgan, unet or pix2pix"
            )),
        }
    }
}

/// The output activation, which must match the normalization of the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputActivation {
    /// Targets in [0, 1].
    Sigmoid,
    /// Targets in [-1, 1].
    Tanh,
}

/// Generator architecture: widths per U-Net level (the depth is their count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    pub channels: Vec<i64>,
    pub scpa: bool,
    pub output: OutputActivation,
}

impl GeneratorConfig {
    /// The DESIGN.md reference network: 5 levels (32, 64, 128, 256, 256), about 7 M parameters.
    pub fn paper(scpa: bool) -> Self {
        GeneratorConfig {
            channels: vec![32, 64, 128, 256, 256],
            scpa,
            output: OutputActivation::Sigmoid,
        }
    }

    /// The input side must be divisible by this.
    pub fn size_multiple(&self) -> i64 {
        1 << (self.channels.len() - 1)
    }
}
