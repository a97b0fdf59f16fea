//! What researchers run: training and evaluation of the generators on paired LE/RC data
//! (the phantom or real data), and the report with numbers and pictures.

pub mod annotations;
pub mod calibrate;
pub mod dataset;
pub mod eval;
pub mod report;
pub mod train;
