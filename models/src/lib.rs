//! The generators of vcnode and the torch device they run on.
//!
//! This crate knows tensors, not DICOM networking. What lives here:
//! - [`device`]: which torch device inference uses (`auto`, `cpu`, `cuda`, `cuda:N`), including
//!   loading `libtorch_cuda.so` at run time so one CPU-built binary also runs on GPU machines.

pub mod device;

pub use device::{DeviceError, DeviceReport, DeviceRequest};
