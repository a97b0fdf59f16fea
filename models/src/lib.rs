//! The generators of vcnode and everything needed to train, evaluate and run them.
//!
//! This crate knows tensors, not DICOM networking. What lives here:
//! - [`nets`]: the SCPA block, SCPA-UNet / U-Net generators, the PatchGAN discriminator.
//! - [`preprocess`]: the paper's preprocessing, shared by training and serving.
//! - [`train`]: training with the paper's losses and optimizer, on whole images or on crops
//!   centred on the target's enhancement; checkpoints and resume.
//! - [`ood`]: the out-of-distribution guard: statistics of the training inputs, kept in the
//!   manifest, and the distance of an LE image from them.
//! - [`model`]: loading weights through their [`manifest`] (sha256 checked) for inference.
//! - [`metrics`] and [`stats`]: MSE/PSNR/SSIM and the paired tests of the evaluation.
//! - [`phantom`]: the physics-based CESM phantom (paired LE/RC images with lesion boxes).
//! - [`device`]: which torch device inference uses, including loading `libtorch_cuda.so` at run
//!   time so one CPU-built binary also runs on GPU machines.

pub mod device;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod nets;
pub mod ood;
pub mod phantom;
pub mod preprocess;
pub mod stats;
pub mod train;

pub use device::{DeviceError, DeviceReport, DeviceRequest};
