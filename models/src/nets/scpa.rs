//! The self-calibrated pixel-attention (SCPA) block of Zhao et al. 2020 (PAN), as used by the
//! paper's generators.

use tch::nn::{self, Module};
use tch::Tensor;

use super::{conv2d, lrelu};

/// ```text
/// a = lrelu(conv1x1_a(x));  b = lrelu(conv1x1_b(x))          # nf -> gw each, gw = nf/2
/// a = conv3x3_k1(a)
/// b = k4_3x3( k3_3x3(b) * sigmoid(k2_1x1_bias(b)) )            # PAConv
/// out = conv1x1_c3( cat[lrelu(a), lrelu(b)] ) + x              # 2gw -> nf, residual
/// ```
#[derive(Debug)]
pub struct ScpaBlock {
    conv1_a: nn::Conv2D,
    conv1_b: nn::Conv2D,
    k1: nn::Conv2D,
    k2: nn::Conv2D,
    k3: nn::Conv2D,
    k4: nn::Conv2D,
    conv3: nn::Conv2D,
}

impl ScpaBlock {
    pub fn new(p: nn::Path, nf: i64) -> ScpaBlock {
        let gw = (nf / 2).max(1);
        let no_bias = |padding| nn::ConvConfig {
            padding,
            bias: false,
            ..Default::default()
        };
        ScpaBlock {
            conv1_a: conv2d(&p / "conv1_a", nf, gw, 1, no_bias(0)),
            conv1_b: conv2d(&p / "conv1_b", nf, gw, 1, no_bias(0)),
            k1: conv2d(&p / "k1", gw, gw, 3, no_bias(1)),
            k2: conv2d(&p / "k2", gw, gw, 1, nn::ConvConfig::default()),
            k3: conv2d(&p / "k3", gw, gw, 3, no_bias(1)),
            k4: conv2d(&p / "k4", gw, gw, 3, no_bias(1)),
            conv3: conv2d(&p / "conv3", 2 * gw, nf, 1, no_bias(0)),
        }
    }

    /// The block's output and its pixel-attention map (gw channels, values in (0, 1)).
    pub fn forward_with_attention(&self, x: &Tensor) -> (Tensor, Tensor) {
        let a = lrelu(&self.conv1_a.forward(x));
        let b = lrelu(&self.conv1_b.forward(x));
        let a = self.k1.forward(&a);
        let attention = self.k2.forward(&b).sigmoid();
        let b = self.k4.forward(&(self.k3.forward(&b) * &attention));
        let out = self.conv3.forward(&Tensor::cat(&[lrelu(&a), lrelu(&b)], 1)) + x;
        (out, attention)
    }
}

impl Module for ScpaBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_with_attention(x).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn keeps_shape_and_is_residual() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut block = ScpaBlock::new(vs.root() / "scpa", 8);
        let x = Tensor::randn([2, 8, 16, 12], (Kind::Float, Device::Cpu));
        let (y, att) = block.forward_with_attention(&x);
        assert_eq!(y.size(), vec![2, 8, 16, 12]);
        assert_eq!(att.size(), vec![2, 4, 16, 12]);
        assert!(f64::try_from(att.min()).unwrap() > 0.0 && f64::try_from(att.max()).unwrap() < 1.0);
        // With the last projection zeroed the block is the identity: the residual path.
        tch::no_grad(|| {
            let _ = block.conv3.ws.zero_();
        });
        let y = block.forward(&x);
        assert!(f64::try_from((y - &x).abs().max()).unwrap() < 1e-6);
    }
}
