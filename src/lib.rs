//! vcnode: a DICOM node that receives low-energy CESM mammograms, queues them durably and
//! (in later stages) returns AI-synthesized recombined images as a derived series.
//!
//! Where things live:
//! - [`config`]: the configuration (embedded defaults, file, environment).
//! - [`node`]: wiring of the storage SCP, the store and the queue into a running node.
//! - [`ingest`]: the C-STORE handler: check, store durably, record, then acknowledge.
//! - [`store`]: durable instance files under data_dir.
//! - [`queue`]: the SQLite job queue (instances, jobs, exports; leases).
//! - [`fixture`]: synthetic DICOM mammograms for tests and benchmarks.
//!
//! DIMSE networking is in the `vcnode-scp` crate, the generators in `vcnode-models`.

pub mod config;
pub mod derive;
pub mod fixture;
pub mod ingest;
pub mod node;
pub mod phantom;
pub mod pipeline;
pub mod pixels;
pub mod queue;
pub mod research;
pub mod store;
pub mod uid;
