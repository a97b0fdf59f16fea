//! The research lab of vcnode: everything that trains and judges the generators, and nothing a
//! node needs to serve them. The node (the `vcnode` crate) and the generators, their manifest,
//! preprocessing and device (`vcnode-models`) never depend on this crate.
//!
//! - [`phantom`]: the physics-based CESM phantom (paired LE/RC images with lesion boxes) and
//!   its DICOM data sets.
//! - [`dataset`]: paired LE/RC data sets (the phantom's, CDD-CESM) read and preprocessed as the
//!   node would; [`annotations`]: hand-drawn lesion outlines as boxes.
//! - [`train`]: `vcnode-lab train`, the paper's losses and optimizer ([`train::fit`]), on whole
//!   images or crops centred on the target's enhancement; checkpoints and resume.
//! - [`calibrate`]: `vcnode-lab calibrate`, the out-of-distribution guard's profile of a
//!   model's training inputs, for weights trained before the guard.
//! - [`eval`]: `vcnode-lab eval`, with [`metrics`] (MSE/PSNR/SSIM, ROI scores), [`stats`] (paired
//!   tests on per-patient means, Holm) and [`report`] (REPORT.md with pictures).
//!
//! It reads DICOM through the node's own pixel decoding (`vcnode::pixels`) and preprocesses
//! through `vcnode_models::preprocess`, so that what it evaluates is what the node serves.

pub mod annotations;
pub mod calibrate;
pub mod dataset;
pub mod eval;
pub mod metrics;
pub mod phantom;
pub mod report;
pub mod stats;
pub mod train;
