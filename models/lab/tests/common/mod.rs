//! Toy data shared by the training tests.

use tch::{Device, Kind, Tensor};
use vcnode_lab::train::fit::PairTensors;
use vcnode_models::preprocess::{InputSpec, Normalization};

/// The 32×32 model input of [`toy_pairs`].
pub fn toy_input() -> InputSpec {
    InputSpec {
        rows: 32,
        cols: 32,
        normalization: Normalization::ZeroOne,
    }
}

/// LE-like inputs with blobs that the target shows brighter: learnable in a few steps.
pub fn toy_pairs(n: i64) -> PairTensors {
    tch::manual_seed(7);
    let le = Tensor::rand([n, 1, 32, 32], (Kind::Float, Device::Cpu)) * 0.2 + 0.4;
    let rc = (&le - 0.4) * 2.0 + 0.1;
    PairTensors { le, rc }
}
