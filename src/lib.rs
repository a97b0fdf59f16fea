//! vcnode: a DICOM node that receives low-energy CESM mammograms, queues them durably and
//! (in later stages) returns AI-synthesized recombined images as a derived series.
//!
//! Where things live:
//! - [`config`]: the configuration (embedded defaults, file, environment).
//! - [`node`]: wiring of the storage SCP, the store and the queue into a running node.
//! - [`ingest`]: the C-STORE handler: check, store durably, record, then acknowledge.
//! - [`metrics`]: the Prometheus metrics (`/metrics`).
//! - [`store`]: durable instance files under data_dir.
//! - [`queue`]: the SQLite job queue (instances, jobs, exports; one lease policy).
//! - [`supervisor`]: workers, exporters and the model thread; ordered shutdown.
//! - [`fixture`]: synthetic DICOM mammograms for tests and benchmarks.
//! - [`pipeline`]: workers and the model thread: LE instance → derived instance.
//! - [`derive`]: the derived Secondary Capture instance, tagged as AI-generated.
//! - [`export`]: delivery to destinations over DIMSE and STOW-RS, with retries.
//! - [`pull`]: on-demand processing of a study pulled from a DICOMweb PACS (`[[sources]]`);
//!   [`dicomweb_client`]: the HTTP clients of DICOMweb destinations and sources.
//!
//! DIMSE networking is in the `vcnode-scp` crate, the generators in `vcnode-models`; the
//! research lab (phantom, training, evaluation) is the `vcnode-lab` crate and binary in
//! `models/lab/`, apart from everything a node runs.

pub mod config;
pub mod derive;
pub mod dicomweb_client;
pub mod directory;
pub mod export;
pub mod fixture;
pub mod ingest;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod pixels;
pub mod pull;
pub mod queue;
pub mod store;
pub mod supervisor;
pub mod uid;
pub mod web;
