//! The CESM phantom: [`physics`] simulates paired LE/RC mammograms with lesion boxes, [`dicom`]
//! writes them out as a DICOM data set with a `pairs.csv` index.

pub mod dicom;
pub mod physics;

pub use dicom::{write_dataset, PhantomDatasetSpec};
pub use physics::*;
