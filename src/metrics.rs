//! The node's Prometheus metrics (`GET /metrics`, [`crate::web::health`]).
//!
//! Events are counted where they happen with the `metrics` facade (`counter!`, `histogram!`);
//! [`install`] sets the Prometheus recorder once per process. Without it (unit tests, the CLI
//! commands) the macros do nothing. What the database already knows (jobs and exports by
//! state, disk free) is read at scrape time ([`crate::web::health`]), so it is right after a
//! restart too.
//!
//! Labels are bounded, configured names only: protocol, configured AE titles of accepted
//! associations, destinations, states, reasons, HTTP route templates. Never a UID, a path or a
//! value a peer chose (a rejected association's calling AE title is not a label).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use vcnode_scp::{AssociationObserver, Rejection};

pub const ASSOCIATIONS_ACTIVE: &str = "vcnode_associations_active";
pub const ASSOCIATIONS_TOTAL: &str = "vcnode_associations_total";
pub const ASSOCIATIONS_REJECTED: &str = "vcnode_associations_rejected_total";
pub const INSTANCES_RECEIVED: &str = "vcnode_instances_received_total";
pub const INSTANCES_RECEIVED_BYTES: &str = "vcnode_instances_received_bytes_total";
pub const INSTANCES_DUPLICATE: &str = "vcnode_instances_duplicate_total";
pub const INSTANCES_REFUSED: &str = "vcnode_instances_refused_total";
pub const JOBS: &str = "vcnode_jobs";
pub const EXPORTS: &str = "vcnode_exports";
pub const JOB_LATENCY: &str = "vcnode_job_latency_seconds";
pub const INFERENCE: &str = "vcnode_inference_seconds";
pub const OOD_INPUTS: &str = "vcnode_ood_inputs_total";
pub const EXPORT_ATTEMPTS: &str = "vcnode_export_attempts_total";
pub const EXPORT_LATENCY: &str = "vcnode_export_latency_seconds";
pub const DISK_FREE: &str = "vcnode_disk_free_bytes";
pub const DISK_MIN_FREE: &str = "vcnode_disk_min_free_bytes";
pub const HTTP_REQUESTS: &str = "vcnode_http_requests_total";
pub const BUILD_INFO: &str = "vcnode_build_info";

/// How an instance reached the one ingest (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// DIMSE C-STORE to the storage SCP.
    Dimse,
    /// STOW-RS to `/dicomweb`.
    Stow,
    /// Retrieved by WADO-RS from a `[[sources]]` PACS (on-demand processing).
    Pull,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Dimse => "dimse",
            Protocol::Stow => "stow",
            Protocol::Pull => "pull",
        }
    }
}

/// Seconds, from a quick inference to an export that waited out a PACS's outage.
const LATENCY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Seconds of one inference (a batch's wait included).
const INFERENCE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process; later calls return the same handle).
pub fn install() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(JOB_LATENCY.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(EXPORT_LATENCY.into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(INFERENCE.into()), INFERENCE_BUCKETS)?
        .install_recorder()?;
    describe();
    metrics::gauge!(ASSOCIATIONS_ACTIVE).set(0.0);
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// HELP lines.
fn describe() {
    describe_gauge!(ASSOCIATIONS_ACTIVE, "DIMSE associations in progress");
    describe_counter!(
        ASSOCIATIONS_TOTAL,
        "DIMSE associations accepted, by calling AE title"
    );
    describe_counter!(
        ASSOCIATIONS_REJECTED,
        "connections to the storage SCP turned away, by reason"
    );
    describe_counter!(
        INSTANCES_RECEIVED,
        "new instances stored by ingest, by protocol (dimse, stow, pull)"
    );
    describe_counter!(
        INSTANCES_RECEIVED_BYTES,
        Unit::Bytes,
        "bytes of the new instances stored by ingest, by protocol"
    );
    describe_counter!(
        INSTANCES_DUPLICATE,
        "instances acknowledged as already stored, by protocol"
    );
    describe_counter!(
        INSTANCES_REFUSED,
        "instances refused by ingest, by protocol and C-STORE status"
    );
    describe_gauge!(
        JOBS,
        "jobs by state (queued, running, done, dead), read at scrape time"
    );
    describe_gauge!(
        EXPORTS,
        "exports by destination and state (queued, running, done, dead), read at scrape time"
    );
    describe_histogram!(
        JOB_LATENCY,
        Unit::Seconds,
        "from receipt (the job queued) to its derived instances stored"
    );
    describe_histogram!(INFERENCE, Unit::Seconds, "one job's model inference");
    describe_counter!(
        OOD_INPUTS,
        "LE images unlike the model's training inputs, by action (flagged, refused)"
    );
    describe_counter!(
        EXPORT_ATTEMPTS,
        "instances sent to a destination, by destination and outcome (stored, failed)"
    );
    describe_histogram!(
        EXPORT_LATENCY,
        Unit::Seconds,
        "from an export queued (its derived instance stored) to its acknowledgement, by destination"
    );
    describe_gauge!(DISK_FREE, Unit::Bytes, "free space on data_dir's file system");
    describe_gauge!(
        DISK_MIN_FREE,
        Unit::Bytes,
        "storage.min_free_mb: below it ingest refuses and /readyz fails"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests, by method, route template and status"
    );
    describe_gauge!(BUILD_INFO, "1, labelled with the vcnode version");
}

/// The storage SCP's associations, counted.
pub struct ScpMetrics;

impl AssociationObserver for ScpMetrics {
    fn accepted(&self, calling_ae: &str) {
        metrics::gauge!(ASSOCIATIONS_ACTIVE).increment(1.0);
        metrics::counter!(ASSOCIATIONS_TOTAL, "calling_ae" => calling_ae.to_string()).increment(1);
    }
    fn ended(&self, _calling_ae: &str) {
        metrics::gauge!(ASSOCIATIONS_ACTIVE).decrement(1.0);
    }
    fn rejected(&self, reason: Rejection) {
        metrics::counter!(ASSOCIATIONS_REJECTED, "reason" => reason.as_str()).increment(1);
    }
}

/// LE images the out-of-distribution guard flagged and refused since the node started, for
/// `/api/status` (Prometheus reads [`OOD_INPUTS`]).
static OOD_SINCE_START: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Counts an LE image the guard found outside the training distribution (`action`: flagged
/// or refused).
pub fn count_ood_input(action: crate::config::OodAction) {
    metrics::counter!(OOD_INPUTS, "action" => action.as_str()).increment(1);
    let i = usize::from(action == crate::config::OodAction::Refuse);
    OOD_SINCE_START[i].fetch_add(1, Ordering::Relaxed);
}

/// (flagged, refused) since the node started.
pub fn ood_inputs_since_start() -> (u64, u64) {
    (
        OOD_SINCE_START[0].load(Ordering::Relaxed),
        OOD_SINCE_START[1].load(Ordering::Relaxed),
    )
}

/// Milliseconds since `from_ms` (Unix ms, as the queue stores times), as seconds; 0 when the
/// clock went back.
pub fn seconds_since(from_ms: i64) -> f64 {
    (crate::queue::now_ms() - from_ms).max(0) as f64 / 1000.0
}
