//! The networks of the paper (DESIGN.md "The generators"): the SCPA block, the U-Net generator
//! with or without SCPA blocks, and the 70×70 PatchGAN discriminator.

mod patchgan;
mod scpa;
mod unet;

pub use patchgan::PatchGan;
pub use scpa::ScpaBlock;
pub use unet::{Generator, GeneratorOutput};

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::Tensor;

/// A convolution initialized as PyTorch's `nn.Conv2d` is (Kaiming-uniform with a = √5, bias
/// uniform in ±1/√fan_in) rather than with tch's He default, which starts √6 times larger:
/// training here then starts where a researcher's PyTorch run of the same network starts.
pub(crate) fn conv2d(p: nn::Path, c_in: i64, c_out: i64, k: i64, config: nn::ConvConfig) -> nn::Conv2D {
    let bound = 1.0 / ((c_in * k * k) as f64).sqrt();
    nn::conv2d(
        p,
        c_in,
        c_out,
        k,
        nn::ConvConfig {
            ws_init: nn::Init::Kaiming {
                dist: nn::init::NormalOrUniform::Uniform,
                fan: nn::init::FanInOut::FanIn,
                non_linearity: nn::init::NonLinearity::ExplicitGain((1.0f64 / 3.0).sqrt()),
            },
            bs_init: nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            ..config
        },
    )
}

/// How far one training batch moves the running statistics of a batch norm (PyTorch's
/// default); [`Generator::recalibrate_batch_norm`] relies on it to read a batch's statistics.
pub(crate) const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// Batch norm initialized as PyTorch's (scale 1, shift 0) rather than tch's (scale from
/// U(0, 1)), for the same reason as [`conv2d`]: a run here starts where PyTorch's starts.
pub(crate) fn batch_norm2d(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.0),
            momentum: BATCH_NORM_MOMENTUM,
            ..Default::default()
        },
    )
}

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

/// What follows each convolution of a U-Net stage, before the activation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageNorm {
    /// Nothing (manifests written before the field existed).
    #[default]
    None,
    /// Batch normalization, as in the U-Net and Pix2Pix reference implementations: batch
    /// statistics while training, running statistics at inference.
    Batch,
}

/// Generator architecture: widths per U-Net level (the depth is their count).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    pub channels: Vec<i64>,
    pub scpa: bool,
    pub output: OutputActivation,
    #[serde(default)]
    pub norm: StageNorm,
}

impl GeneratorConfig {
    /// The DESIGN.md reference network: 5 levels (32, 64, 128, 256, 256), about 7 M parameters.
    pub fn paper(scpa: bool) -> Self {
        GeneratorConfig {
            channels: vec![32, 64, 128, 256, 256],
            scpa,
            output: OutputActivation::Sigmoid,
            // Without it the generators learned the background but never started on the
            // lesions within the training budgets tried (models/weights/REPORT.md history).
            norm: StageNorm::Batch,
        }
    }

    /// The input side must be divisible by this.
    pub fn size_multiple(&self) -> i64 {
        1 << (self.channels.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn convolutions_and_batch_norms_start_as_in_pytorch() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _g = Generator::new(vs.root() / "g", &GeneratorConfig::paper(true));
        let _d = PatchGan::new(vs.root() / "d", 2, 8);
        let vars = vs.variables();
        let norms: Vec<_> = vars
            .iter()
            .filter(|(n, _)| n.contains("norm") && n.ends_with(".weight"))
            .collect();
        assert!(!norms.is_empty());
        for (name, t) in norms {
            assert!(
                bool::try_from(t.eq(1.0).all()).unwrap(),
                "{name} does not start at 1"
            );
        }
        // PyTorch's default conv bound is 1/√fan_in: the head's 32 input channels give 0.177,
        // the PatchGAN's first 4×4 conv over LE and RC 1/√32 as well.
        for name in ["g.head.weight", "d.conv0.weight"] {
            let max = f64::try_from(vars[name].abs().max()).unwrap();
            assert!(max <= 1.0 / 32f64.sqrt() + 1e-6 && max > 0.1, "{name}: {max}");
        }
    }
}
