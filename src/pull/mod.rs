//! On-demand processing of a study that is already in a PACS: `vcnode pull --source NAME
//! --study UID` and `POST /api/process` pull it from a DICOMweb PACS named in `[[sources]]`,
//! so a radiologist gets the synthetic RC without a technologist resending from the modality.
//!
//! 1. QIDO-RS `GET {url}/studies/{study}/instances` lists the study's instances, asking for
//!    SOP Class UID, Image Type and Series Instance UID.
//! 2. Which instances are pulled: where the source returns Image Type, only those that
//!    [`becomes_job`] under `[jobs] select` (with the default, the CESM low-energy images; the
//!    recombined and high-energy ones stay in the PACS). Image Type is not among the attributes
//!    PS3.18 requires a QIDO-RS answer to hold, so where a source leaves it out, every
//!    mammogram (MG For Presentation / For Processing) of the study is pulled and ingest decides
//!    from the data set itself, as for a C-STORE. Other classes are never pulled.
//! 3. An instance the node holds already (same SOP Instance UID) is not retrieved again: a
//!    second pull of a study queues no job and makes no derived instance.
//! 4. Each instance is retrieved by WADO-RS (`multipart/related; type="application/dicom"`, in
//!    the transfer syntax the source holds), streamed part by part into a spool file in the
//!    store's spool folder (never a whole study or instance in memory), its Part 10 file meta
//!    read on the way (by [`crate::ingest::part10`], STOW-RS's spooler too), and handed to
//!    the one [`Ingest`](crate::ingest::Ingest) as a [`ReceivedInstance`] whose calling AE
//!    title is the source's name: checked, stored durably, indexed and queued exactly like a
//!    C-STORE, and its derived series follows the `[[routes]]` whose `from_ae` is the
//!    source's name.
//!
//! Time limits are `[export]`'s: `timeout_s` for connecting and for each wait on the source,
//! and `min_rate_kbps` as the slowest retrieval accepted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vcnode_scp::{status, ReceivedInstance, StoreHandler};

use crate::config::{Config, SourceConfig};
use crate::dicomweb_client::{authorized, with_causes};
use crate::ingest::part10::{self, Part10, SpoolError};
use crate::ingest::{becomes_job, ImageType};
use crate::queue::Queue;
use crate::store::InstanceStore;

/// The largest QIDO-RS answer read: a study's instance list is about 500 bytes per instance.
const MAX_QIDO_RESPONSE: usize = 16 << 20;

/// Instances retrieved at once from one source.
const CONCURRENT_RETRIEVALS: usize = 4;

/// Why a pull did not run (per-instance failures are in [`PullReport::failed`]).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no source named {0:?} in [[sources]]")]
    UnknownSource(String),
    #[error("{0:?} is not a valid Study Instance UID")]
    BadStudyUid(String),
    #[error("source {name:?} is unreachable: {reason}")]
    Unreachable { name: String, reason: String },
    #[error("source {name:?} failed: {reason}")]
    SourceFailed { name: String, reason: String },
    #[error("study {study} not found on source {name:?}")]
    StudyNotFound { name: String, study: String },
    #[error("source {name:?}: {reason}")]
    Client { name: String, reason: String },
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
}

/// What a pull did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    pub source: String,
    pub study: String,
    /// Instances of the study the source listed.
    pub found: usize,
    /// Those that may become jobs (see the module's documentation).
    pub selected: usize,
    /// Selected instances the node held already: not retrieved again.
    pub already_present: usize,
    /// Selected instances the source sent.
    pub retrieved: usize,
    /// Retrieved instances ingest stored.
    pub stored: usize,
    /// Selected instances not stored, with the reason.
    pub failed: Vec<FailedInstance>,
    /// Jobs queued for the stored instances.
    pub jobs_queued: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedInstance {
    pub sop_instance_uid: String,
    pub reason: String,
}

/// An instance as QIDO-RS listed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listed {
    sop_instance_uid: String,
    sop_class_uid: Option<String>,
    series_uid: Option<String>,
    image_type: Option<ImageType>,
}

/// What the node shares with a pull.
pub struct PullContext<'a> {
    pub config: &'a Config,
    pub store: &'a InstanceStore,
    pub queue: &'a Queue,
    /// The one ingest.
    pub ingest: &'a dyn StoreHandler,
}

/// Pulls the study `study` from the source named `source` and ingests what may become jobs.
pub async fn pull_study(node: &PullContext<'_>, source: &str, study: &str) -> Result<PullReport, PullError> {
    let src = node
        .config
        .sources
        .iter()
        .find(|s| s.name == source)
        .ok_or_else(|| PullError::UnknownSource(source.to_string()))?;
    if !vcnode_scp::is_valid_uid(study) {
        return Err(PullError::BadStudyUid(study.to_string()));
    }
    let floor = node.config.export.timeout();
    let client_error = |reason: String| PullError::Client {
        name: src.name.clone(),
        reason,
    };
    let peer = crate::dicomweb_client::Peer {
        role: "source",
        name: &src.name,
        url: &src.url,
        tls: src.tls.as_ref(),
    };
    // A source that stops sending mid-instance fails after `timeout_s`, not never.
    let http = crate::dicomweb_client::builder(peer, floor)
        .map_err(|e| client_error(e.to_string()))?
        .read_timeout(floor)
        .build()
        .map_err(|e| client_error(with_causes(&e)))?;
    let source = Source {
        config: src,
        http,
        base: src.url.trim_end_matches('/').to_string(),
        floor,
        min_bytes_per_s: node.config.export.min_bytes_per_s().max(1),
        max_instance_bytes: node.config.storage.max_instance_mb.saturating_mul(1 << 20),
    };

    let listed = source.instances_of(study).await?;
    let mut report = PullReport {
        source: src.name.clone(),
        study: study.to_string(),
        found: listed.len(),
        ..Default::default()
    };
    let selected: Vec<&Listed> = listed
        .iter()
        .filter(|l| selected(node.config.jobs.select, l))
        .collect();
    report.selected = selected.len();
    let mut wanted = Vec::new();
    for l in selected {
        if node.queue.instance_exists(&l.sop_instance_uid).await? {
            report.already_present += 1;
        } else {
            wanted.push(l);
        }
    }
    // Futures made up front, not by a closure over borrowed items: a stream of those is not
    // Send for every lifetime (rustc #102211), and the HTTP handler spawns this.
    let retrievals: Vec<_> = wanted
        .into_iter()
        .map(|l| source.retrieve_and_ingest(node, study, l))
        .collect();
    let outcomes: Vec<(String, Result<bool, Failure>)> = futures_util::stream::iter(retrievals)
        .buffer_unordered(CONCURRENT_RETRIEVALS)
        .collect()
        .await;
    for (uid, outcome) in outcomes {
        match outcome {
            Ok(job) => {
                report.retrieved += 1;
                report.stored += 1;
                report.jobs_queued += usize::from(job);
            }
            Err(f) => {
                report.retrieved += usize::from(f.retrieved);
                report.failed.push(FailedInstance {
                    sop_instance_uid: uid,
                    reason: f.reason,
                });
            }
        }
    }
    report
        .failed
        .sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
    info!(
        source = %report.source,
        study = %report.study,
        found = report.found,
        selected = report.selected,
        already_present = report.already_present,
        stored = report.stored,
        failed = report.failed.len(),
        jobs_queued = report.jobs_queued,
        "study pulled"
    );
    Ok(report)
}

/// Whether a listed instance is pulled (see the module's documentation).
fn selected(select: crate::config::JobSelect, l: &Listed) -> bool {
    let Some(class) = l.sop_class_uid.as_deref() else {
        // PS3.18 requires SOP Class UID in the answer; without it, ingest decides.
        return true;
    };
    match &l.image_type {
        Some(image_type) => becomes_job(select, class, image_type),
        None => class == vcnode_scp::MG_FOR_PRESENTATION || class == vcnode_scp::MG_FOR_PROCESSING,
    }
}

/// Why one instance was not stored; `retrieved` when the source had sent it.
struct Failure {
    reason: String,
    retrieved: bool,
}

fn failure(reason: impl Into<String>) -> Failure {
    Failure {
        reason: reason.into(),
        retrieved: false,
    }
}

/// One configured source with its HTTP client.
struct Source<'a> {
    config: &'a SourceConfig,
    http: reqwest::Client,
    /// The DICOMweb root without a trailing slash.
    base: String,
    floor: Duration,
    min_bytes_per_s: u64,
    max_instance_bytes: u64,
}

impl Source<'_> {
    fn unreachable(&self, e: &reqwest::Error) -> PullError {
        PullError::Unreachable {
            name: self.config.name.clone(),
            reason: with_causes(e),
        }
    }

    fn failed(&self, reason: impl Into<String>) -> PullError {
        PullError::SourceFailed {
            name: self.config.name.clone(),
            reason: reason.into(),
        }
    }

    /// QIDO-RS: the study's instances.
    async fn instances_of(&self, study: &str) -> Result<Vec<Listed>, PullError> {
        let url = format!(
            "{}/studies/{study}/instances?includefield=00080016&includefield=00080008&includefield=0020000E",
            self.base
        );
        let req = self
            .http
            .get(&url)
            .timeout(self.floor)
            .header("Accept", "application/dicom+json");
        let mut rsp = authorized(req, self.config.auth.as_ref())
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = rsp.status();
        let not_found = || PullError::StudyNotFound {
            name: self.config.name.clone(),
            study: study.to_string(),
        };
        // PS3.18 8.3.4: 204 when nothing matches; some servers answer 404 for an unknown study.
        if status == reqwest::StatusCode::NO_CONTENT || status == reqwest::StatusCode::NOT_FOUND {
            return Err(not_found());
        }
        if !status.is_success() {
            return Err(self.failed(format!("QIDO-RS answered HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = rsp.chunk().await.map_err(|e| self.unreachable(&e))? {
            if body.len() + chunk.len() > MAX_QIDO_RESPONSE {
                return Err(self.failed(format!("QIDO-RS answer over {MAX_QIDO_RESPONSE} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(not_found());
        }
        let listed = parse_qido(&body).map_err(|reason| self.failed(reason))?;
        if listed.is_empty() {
            return Err(not_found());
        }
        Ok(listed)
    }

    /// [`Source::retrieve_and_ingest_one`], with the instance's UID for the report.
    async fn retrieve_and_ingest(
        &self,
        node: &PullContext<'_>,
        study: &str,
        l: &Listed,
    ) -> (String, Result<bool, Failure>) {
        (
            l.sop_instance_uid.clone(),
            self.retrieve_and_ingest_one(node, study, l).await,
        )
    }

    /// WADO-RS retrieval of one instance into a spool file, then the one ingest. Ok(true) when
    /// ingest queued a job for it.
    async fn retrieve_and_ingest_one(
        &self,
        node: &PullContext<'_>,
        study: &str,
        l: &Listed,
    ) -> Result<bool, Failure> {
        let uid = &l.sop_instance_uid;
        let series = l
            .series_uid
            .as_deref()
            .ok_or_else(|| failure("the QIDO-RS answer has no Series Instance UID for it"))?;
        let url = format!("{}/studies/{study}/series/{series}/instances/{uid}", self.base);
        let req = self.http.get(&url).header(
            "Accept",
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
        );
        let rsp = authorized(req, self.config.auth.as_ref())
            .send()
            .await
            .map_err(|e| failure(format!("WADO-RS: {}", with_causes(&e))))?;
        if !rsp.status().is_success() {
            return Err(failure(format!("WADO-RS answered HTTP {}", rsp.status())));
        }
        let peer_addr = rsp
            .remote_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let spooled = self
            .spool_first_part(rsp, node.store.spool_dir())
            .await
            .map_err(failure)?;
        let retrieved = |reason: String| Failure {
            reason,
            retrieved: true,
        };
        if spooled.meta.sop_instance_uid != *uid {
            return Err(retrieved(format!(
                "the source sent instance {} instead",
                spooled.meta.sop_instance_uid
            )));
        }
        let outcome = node
            .ingest
            .store(ReceivedInstance {
                calling_ae_title: self.config.name.clone(),
                peer_addr,
                sop_class_uid: spooled.meta.sop_class_uid,
                sop_instance_uid: spooled.meta.sop_instance_uid,
                transfer_syntax: spooled.meta.transfer_syntax,
                dataset: spooled.dataset,
            })
            .await;
        if status::kind(outcome.status) == status::StatusKind::Failure {
            return Err(retrieved(format!(
                "refused by ingest (status {:04X}H: {})",
                outcome.status,
                outcome.comment.as_deref().unwrap_or("no comment")
            )));
        }
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE source_uid = ?")
            .bind(uid)
            .fetch_one(node.queue.pool())
            .await
            .map_err(|e| {
                warn!(error = %e, "cannot read the job queue");
                retrieved("stored; vcnode could not read its job queue".into())
            })?;
        Ok(jobs > 0)
    }

    /// Streams the first part of a WADO-RS answer into a spool file by the one Part 10
    /// spooler, no slower than `export.min_rate_kbps`. Errors are the reason for the report.
    async fn spool_first_part(&self, rsp: reqwest::Response, spool_dir: PathBuf) -> Result<Part10, String> {
        let content_type = rsp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let boundary = part10::multipart_related(content_type)
            .map_err(|essence| format!("the WADO-RS answer is {essence:?}, not multipart/related"))?
            .boundary
            .ok_or("the WADO-RS answer's Content-Type has no boundary")?;
        let body = futures_util::stream::unfold(Some(rsp), |rsp| async move {
            let mut rsp = rsp?;
            match rsp.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(rsp))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        });
        let mut multipart = multer::Multipart::new(body, boundary);
        let part = multipart
            .next_field()
            .await
            .map_err(|e| format!("WADO-RS answer: {}", with_causes(&e)))?
            .ok_or("the WADO-RS answer holds no part")?;
        if let Some(ct) = part.content_type() {
            if ct.essence_str() != "application/dicom" {
                return Err(format!("the WADO-RS part is {ct}, not application/dicom"));
            }
        }
        let started = Instant::now();
        let mut received: u64 = 0;
        let chunks = part.map(|chunk| {
            let chunk = chunk.map_err(|e| format!("WADO-RS answer: {}", with_causes(&e)))?;
            received += chunk.len() as u64;
            // The slowest retrieval accepted: `floor` to start, then the minimum rate.
            let allowed =
                self.floor * 2 + Duration::from_secs_f64(received as f64 / self.min_bytes_per_s as f64);
            if started.elapsed() > allowed {
                return Err("the source sends slower than export.min_rate_kbps".to_string());
            }
            Ok(chunk)
        });
        part10::spool(chunks, &spool_dir, self.max_instance_bytes)
            .await
            .map_err(|e| {
                if let SpoolError::Spool(_, cause) = &e {
                    warn!(error = %cause, "cannot spool a pulled instance");
                }
                match e {
                    SpoolError::Read(reason) => reason,
                    refused => refused.to_string(),
                }
            })
    }
}

/// The instances of a QIDO-RS answer (a DICOM JSON array); instances without a valid SOP
/// Instance UID are left out (their UID goes into a URL).
fn parse_qido(body: &[u8]) -> Result<Vec<Listed>, String> {
    let items: Vec<serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| format!("QIDO-RS answer is not a DICOM JSON array: {e}"))?;
    let first = |item: &serde_json::Value, tag: &str| {
        item.get(tag)
            .and_then(|e| e.get("Value"))
            .and_then(|v| v.get(0))
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_string())
    };
    let valid_uid = |s: Option<String>| s.filter(|u| vcnode_scp::is_valid_uid(u));
    let mut out: Vec<Listed> = Vec::new();
    for item in &items {
        let Some(sop_instance_uid) = valid_uid(first(item, "00080018")) else {
            continue;
        };
        if out.iter().any(|l| l.sop_instance_uid == sop_instance_uid) {
            continue;
        }
        let image_type = item.get("00080008").and_then(|e| e.get("Value")).and_then(|v| {
            let values: Vec<String> = v
                .as_array()?
                .iter()
                .map(|s| s.as_str().unwrap_or("").to_string())
                .collect();
            Some(ImageType::from_values(Some(&values)))
        });
        out.push(Listed {
            sop_instance_uid,
            sop_class_uid: first(item, "00080016"),
            series_uid: valid_uid(first(item, "0020000E")),
            image_type,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JobSelect;
    use serde_json::json;

    fn listed(class: Option<&str>, image_type: Option<&[&str]>) -> Listed {
        Listed {
            sop_instance_uid: "1.2.3".into(),
            sop_class_uid: class.map(String::from),
            series_uid: Some("1.2".into()),
            image_type: image_type.map(|v| {
                let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
                ImageType::from_values(Some(&v))
            }),
        }
    }

    #[test]
    fn low_energy_images_are_pulled_recombined_ones_not_and_without_image_type_every_mammogram() {
        let mg = Some(vcnode_scp::MG_FOR_PRESENTATION);
        let le: &[&str] = &["ORIGINAL", "PRIMARY", "POST_CONTRAST", "", "LOW_ENERGY"];
        let rc: &[&str] = &["DERIVED", "SECONDARY", "POST_CONTRAST", "", "RECOMBINED"];
        let select = JobSelect::LowEnergy;
        assert!(selected(select, &listed(mg, Some(le))));
        assert!(!selected(select, &listed(mg, Some(rc))));
        assert!(!selected(select, &listed(mg, Some(&["ORIGINAL", "PRIMARY"]))));
        assert!(selected(
            JobSelect::MgPresentation,
            &listed(mg, Some(&["ORIGINAL", "PRIMARY"]))
        ));
        // No Image Type in the answer: every mammogram, ingest decides.
        assert!(selected(select, &listed(mg, None)));
        assert!(selected(
            select,
            &listed(Some(vcnode_scp::MG_FOR_PROCESSING), None)
        ));
        // A derived Secondary Capture (vcnode's own result in the same study) never.
        assert!(!selected(
            select,
            &listed(Some("1.2.840.10008.5.1.4.1.1.7"), None)
        ));
        assert!(!selected(
            select,
            &listed(Some("1.2.840.10008.5.1.4.1.1.7"), Some(le))
        ));
    }

    #[test]
    fn qido_answers_are_read_and_uids_unfit_for_a_url_left_out() {
        let body = json!([
            { "00080016": { "vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.1.2"] },
              "00080018": { "vr": "UI", "Value": ["1.2.3.4"] },
              "0020000E": { "vr": "UI", "Value": ["1.2.3"] },
              "00080008": { "vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "POST_CONTRAST", null, "LOW_ENERGY"] } },
            { "00080018": { "vr": "UI", "Value": ["1.2.3.4"] } },
            { "00080018": { "vr": "UI", "Value": ["../../studies"] } },
            { "00080018": { "vr": "UI", "Value": ["1.2.3.5"] },
              "0020000E": { "vr": "UI", "Value": ["1.2/3"] } }
        ]);
        let listed = parse_qido(body.to_string().as_bytes()).unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed[0].image_type.as_ref().unwrap().is_low_energy());
        assert_eq!(listed[0].series_uid.as_deref(), Some("1.2.3"));
        assert_eq!(listed[1].sop_class_uid, None);
        assert_eq!(listed[1].series_uid, None, "not a UID, not put into a URL");
        assert!(parse_qido(b"{\"not\": \"an array\"}").is_err());
    }
}
