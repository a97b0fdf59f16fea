//! The 70×70 PatchGAN discriminator of pix2pix (Isola et al. 2017): C64-C128-C256-C512, 4×4
//! convolutions, no SCPA. It judges (LE, RC) pairs patch by patch.

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

use super::{batch_norm2d, conv2d, lrelu};

#[derive(Debug)]
pub struct PatchGan {
    convs: Vec<nn::Conv2D>,
    norms: Vec<Option<nn::BatchNorm>>,
    last: nn::Conv2D,
}

impl PatchGan {
    /// `input_channels` is LE + RC (2); `base` is 64 in the paper.
    pub fn new(p: nn::Path, input_channels: i64, base: i64) -> PatchGan {
        let widths = [base, base * 2, base * 4, base * 8];
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut c_in = input_channels;
        for (i, &w) in widths.iter().enumerate() {
            // The first three layers halve the size; C512 keeps it (receptive field 70×70).
            let stride = if i < 3 { 2 } else { 1 };
            let cfg = nn::ConvConfig {
                stride,
                padding: 1,
                bias: i == 0,
                ..Default::default()
            };
            convs.push(conv2d(&p / format!("conv{i}"), c_in, w, 4, cfg));
            norms.push((i > 0).then(|| batch_norm2d(&p / format!("norm{i}"), w)));
            c_in = w;
        }
        let last = conv2d(
            &p / "out",
            c_in,
            1,
            4,
            nn::ConvConfig {
                padding: 1,
                ..Default::default()
            },
        );
        PatchGan { convs, norms, last }
    }
}

impl ModuleT for PatchGan {
    /// Logits, one per patch.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for (conv, norm) in self.convs.iter().zip(&self.norms) {
            h = conv.forward(&h);
            if let Some(n) = norm {
                h = n.forward_t(&h, train);
            }
            h = lrelu(&h);
        }
        self.last.forward(&h)
    }
}
