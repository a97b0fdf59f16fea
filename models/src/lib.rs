//! The generators of vcnode and what a node needs to run them. Training, evaluation and the
//! phantom are the research lab's (`vcnode-lab`, in `lab/`), which builds on this crate.
//!
//! This crate knows tensors, not DICOM networking. What lives here:
//! - [`nets`]: the SCPA block, SCPA-UNet / U-Net generators, the PatchGAN discriminator.
//! - [`preprocess`]: the paper's preprocessing, shared by training and serving.
//! - [`ood`]: the out-of-distribution guard: statistics of the training inputs, kept in the
//!   manifest, and the distance of an LE image from them.
//! - [`model`]: loading weights through their [`manifest`] (sha256 checked) for inference.
//! - [`device`]: which torch device inference uses, including loading `libtorch_cuda.so` at run
//!   time so one CPU-built binary also runs on GPU machines.

pub mod device;
pub mod manifest;
pub mod model;
pub mod nets;
pub mod ood;
pub mod preprocess;

pub use device::{DeviceError, DeviceReport, DeviceRequest};
