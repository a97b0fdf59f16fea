//! The U-Net generator. With `scpa`, an SCPA block follows each encoder and each decoder stage
//! (SCPA-UNet); without, it is the paper's plain U-Net baseline and the Pix2Pix generator.

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::{
    batch_norm2d, conv2d, lrelu, GeneratorConfig, OutputActivation, ScpaBlock, StageNorm, BATCH_NORM_MOMENTUM,
};

#[derive(Debug)]
struct Stage {
    conv: nn::Conv2D,
    norm: Option<nn::BatchNorm>,
    conv2: nn::Conv2D,
    norm2: Option<nn::BatchNorm>,
    scpa: Option<ScpaBlock>,
}

fn normed(norm: &Option<nn::BatchNorm>, x: Tensor, train: bool) -> Tensor {
    match norm {
        Some(n) => n.forward_t(&x, train),
        None => x,
    }
}

impl Stage {
    fn forward(&self, x: &Tensor, train: bool, attention: Option<&mut Vec<Tensor>>) -> Tensor {
        let h = lrelu(&normed(&self.norm, self.conv.forward(x), train));
        let h = lrelu(&normed(&self.norm2, self.conv2.forward(&h), train));
        match (&self.scpa, attention) {
            (Some(s), Some(maps)) => {
                let (h, a) = s.forward_with_attention(&h);
                maps.push(a);
                h
            }
            (Some(s), None) => s.forward(&h),
            (None, _) => h,
        }
    }
}

/// What a forward pass returns: the synthetic RC and, when asked, the SCPA attention maps from
/// the first encoder stage to the last decoder stage.
pub struct GeneratorOutput {
    pub image: Tensor,
    pub attention: Vec<Tensor>,
}

#[derive(Debug)]
pub struct Generator {
    config: GeneratorConfig,
    encoder: Vec<Stage>,
    /// Upsampling projections, deepest first.
    up: Vec<nn::Conv2D>,
    decoder: Vec<Stage>,
    head: nn::Conv2D,
}

impl Generator {
    pub fn new(p: nn::Path, config: &GeneratorConfig) -> Generator {
        let ch = &config.channels;
        assert!(ch.len() >= 2, "a U-Net needs at least two levels");
        let norm = |p: nn::Path, c: i64| match config.norm {
            StageNorm::Batch => Some(batch_norm2d(p, c)),
            StageNorm::None => None,
        };
        let stage = |p: nn::Path, c_in: i64, c_out: i64, stride: i64| Stage {
            norm: norm(&p / "norm", c_out),
            norm2: norm(&p / "norm2", c_out),
            conv: conv2d(
                &p / "conv",
                c_in,
                c_out,
                3,
                nn::ConvConfig {
                    stride,
                    padding: 1,
                    ..Default::default()
                },
            ),
            conv2: conv2d(
                &p / "conv2",
                c_out,
                c_out,
                3,
                nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                },
            ),
            scpa: config.scpa.then(|| ScpaBlock::new(&p / "scpa", c_out)),
        };
        let enc = &p / "encoder";
        let mut encoder = Vec::new();
        for (i, &c) in ch.iter().enumerate() {
            // Level 0 keeps the resolution; each deeper level halves it with a strided conv.
            let (c_in, stride) = if i == 0 { (1, 1) } else { (ch[i - 1], 2) };
            encoder.push(stage(&enc / i, c_in, c, stride));
        }
        let dec = &p / "decoder";
        let mut up = Vec::new();
        let mut decoder = Vec::new();
        for i in (0..ch.len() - 1).rev() {
            let cfg = nn::ConvConfig {
                padding: 1,
                ..Default::default()
            };
            up.push(conv2d(&dec / format!("up{i}"), ch[i + 1], ch[i], 3, cfg));
            decoder.push(stage(&dec / i, 2 * ch[i], ch[i], 1));
        }
        let head = conv2d(&p / "head", ch[0], 1, 1, Default::default());
        Generator {
            config: config.clone(),
            encoder,
            up,
            decoder,
            head,
        }
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    fn batch_norms(&self) -> impl Iterator<Item = &nn::BatchNorm> {
        self.encoder
            .iter()
            .chain(&self.decoder)
            .flat_map(|s| [&s.norm, &s.norm2])
            .flatten()
    }

    /// Sets the running statistics of every batch norm to their plain average over `batches`
    /// of inputs; returns how many batches it saw (0 leaves the statistics as they were).
    ///
    /// Why: training on crops leaves running statistics that follow the last few crop batches,
    /// while inference sees whole images (more air, less lesion). Statistics from whole images
    /// make inference match what it is used on; the weights themselves do not change.
    pub fn recalibrate_batch_norm(&self, batches: impl IntoIterator<Item = Tensor>) -> usize {
        let norms: Vec<&nn::BatchNorm> = self.batch_norms().collect();
        if norms.is_empty() {
            return 0;
        }
        let mut sums: Vec<(Tensor, Tensor)> = norms
            .iter()
            .map(|n| (n.running_mean.zeros_like(), n.running_var.zeros_like()))
            .collect();
        let mut seen = 0;
        tch::no_grad(|| {
            for x in batches {
                // From zero, one training-mode pass leaves momentum × this batch's statistics.
                for n in &norms {
                    let _ = n.running_mean.shallow_clone().zero_();
                    let _ = n.running_var.shallow_clone().zero_();
                }
                let _ = self.run_t(&x, true, false);
                for (n, (mean, var)) in norms.iter().zip(sums.iter_mut()) {
                    *mean += &n.running_mean / BATCH_NORM_MOMENTUM;
                    *var += &n.running_var / BATCH_NORM_MOMENTUM;
                }
                seen += 1;
            }
            // Without batches the statistics were never touched.
            if seen > 0 {
                for (n, (mean, var)) in norms.iter().zip(sums) {
                    n.running_mean.shallow_clone().copy_(&(mean / seen as f64));
                    n.running_var.shallow_clone().copy_(&(var / seen as f64));
                }
            }
        });
        seen
    }

    /// Inference. `x`: [N, 1, H, W] normalized LE, H and W multiples of `size_multiple()`.
    pub fn run(&self, x: &Tensor, with_attention: bool) -> GeneratorOutput {
        self.run_t(x, false, with_attention)
    }

    /// A forward pass; `train` uses batch statistics in the normalization layers (and updates
    /// their running statistics).
    pub fn run_t(&self, x: &Tensor, train: bool, with_attention: bool) -> GeneratorOutput {
        let mut maps = Vec::new();
        let mut skips = Vec::with_capacity(self.encoder.len());
        let mut h = x.shallow_clone();
        for stage in &self.encoder {
            h = stage.forward(&h, train, with_attention.then_some(&mut maps));
            skips.push(h.shallow_clone());
        }
        skips.pop();
        for (up, stage) in self.up.iter().zip(&self.decoder) {
            let skip = skips.pop().expect("one skip per decoder stage");
            let size = skip.size();
            h = lrelu(&up.forward(&h.upsample_bilinear2d([size[2], size[3]], false, None, None)));
            h = stage.forward(
                &Tensor::cat(&[h, skip], 1),
                train,
                with_attention.then_some(&mut maps),
            );
        }
        let logits = self.head.forward(&h);
        let image = match self.config.output {
            OutputActivation::Sigmoid => logits.sigmoid(),
            OutputActivation::Tanh => logits.tanh(),
        };
        GeneratorOutput {
            image,
            attention: maps,
        }
    }
}

impl Module for Generator {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.run(x, false).image
    }
}
