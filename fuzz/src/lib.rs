//! Fuzzing of vcnode's peer-facing parsers on stable Rust (cargo-fuzz needs nightly).
//!
//! Inputs start from valid encodings built with the node's own writers ([`seeds`]) and are
//! mutated with knowledge of DICOM and PDU structure ([`mutate`]). Without coverage
//! instrumentation, a run's behaviour signature (which branch, which error) decides what is
//! kept in the corpus ([`engine`]). Each [`targets`] entry states the properties it checks.
//! Inputs that crashed are kept under `fuzz/regressions/<target>/` and replayed by the tests.

pub mod engine;
pub mod mutate;
pub mod seeds;
pub mod targets;
