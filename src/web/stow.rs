//! STOW-RS in (PS3.18 10.5): `POST /studies` and `POST /studies/{study}` with a
//! `multipart/related; type="application/dicom"` body, one DICOM Part 10 file per part.
//!
//! Each part streams to a spool file (never held in memory): its file meta group is read off
//! the front for the SOP Class, SOP Instance and Transfer Syntax, the data set that follows goes
//! to the spool, and the instance then goes through the one [`Ingest`](crate::ingest::Ingest),
//! exactly as a C-STORE would: the same checks and statuses, the file fsynced and its rows
//! (and job) committed before this answers. The HTTP client is routed like a calling AE named
//! `[dicomweb] sender`.
//!
//! STOW-RS does not negotiate, so each instance is checked as the SCP checks a presentation
//! context (SOP class 0122H, transfer syntax C122H), and against the study of
//! `/studies/{study}` (A900H). A part that is not DICOM fails on its own (C000H); so does one over
//! `storage.max_instance_mb` (A700H), the rest of the request going on.
//!
//! The answer is PS3.18 10.5.3's: a DICOM JSON data set with a Referenced SOP Sequence for what
//! was stored and a Failed SOP Sequence, with a Failure Reason (the C-STORE status) and an Error
//! Comment, for what was not; 200 when all were stored, 202 when some were (or with warnings),
//! 409 when none were. The request as a whole: 415 for another media type, 413 over
//! `[dicomweb] max_request_mb`, 400 for a body that is not valid multipart, 408 when it stops
//! arriving for `node.idle_timeout_s`. Instances stored before such an error stay stored (their
//! rows are committed); the reason says how many, and a retry finds them as duplicates.

use std::net::SocketAddr;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tracing::{debug, info, warn};
use vcnode_scp::status::{self, StatusKind};
use vcnode_scp::{ReceivedInstance, SpooledDataSet};

use super::{BaseUrl, WebError, WebState, DICOM_JSON};
use crate::ingest::part10::{self, FileMeta, Part10, SpoolError};

pub(super) fn routes() -> Router<Arc<WebState>> {
    Router::new()
        .route("/studies", post(store_instances))
        .route("/studies/{study}", post(store_study_instances))
}

/// The only part media type STOW-RS accepts here: DICOM Part 10 files (PS3.18 10.5.1.1). The
/// metadata and bulk data forms (application/dicom+json, +xml) are refused with 415.
const PART10: &str = "application/dicom";

/// Failure Reason: Referenced Transfer Syntax not supported (PS3.3 C.14.1.1). The SCP refuses
/// such a data set at negotiation; STOW-RS has no negotiation, so it is refused per instance.
const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;

/// The most parts one request may hold. Each leaves an item in the answer, and a part that is
/// not DICOM costs the client a few bytes: without a bound, a body of tiny parts within
/// max_request_mb would make an answer of gigabytes. A mammography study has a handful.
const MAX_PARTS: usize = 10_000;

/// Deflated Explicit VR Little Endian: its data set is walked as it inflates.
const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

async fn store_instances(State(state): State<Arc<WebState>>, base: BaseUrl, request: Request) -> Response {
    stow(&state, None, base, request).await
}

async fn store_study_instances(
    State(state): State<Arc<WebState>>,
    Path(study): Path<String>,
    base: BaseUrl,
    request: Request,
) -> Response {
    if !vcnode_scp::is_valid_uid(&study) {
        return WebError::bad_request("the Study Instance UID in the path is not a valid UID")
            .into_response();
    }
    stow(&state, Some(study), base, request).await
}

/// What became of one part.
enum Outcome {
    /// Stored (a duplicate of a stored instance counts: the node holds it).
    Stored {
        sop_class: String,
        sop_instance: String,
        /// Set when the store succeeded with a warning status.
        warning: Option<(u16, String)>,
    },
    Failed {
        sop_class: Option<String>,
        sop_instance: Option<String>,
        reason: u16,
        comment: String,
    },
}

impl Outcome {
    /// A C-STORE status from ingest, as STOW-RS reports it.
    fn of(meta: &FileMeta, outcome: vcnode_scp::StoreOutcome) -> Outcome {
        let comment = outcome.comment.unwrap_or_default();
        match status::kind(outcome.status) {
            StatusKind::Success => Outcome::Stored {
                sop_class: meta.sop_class_uid.clone(),
                sop_instance: meta.sop_instance_uid.clone(),
                warning: None,
            },
            StatusKind::Warning => Outcome::Stored {
                sop_class: meta.sop_class_uid.clone(),
                sop_instance: meta.sop_instance_uid.clone(),
                warning: Some((outcome.status, comment)),
            },
            StatusKind::Failure => Outcome::failed(meta, outcome.status, comment),
        }
    }
    fn failed(part: &FileMeta, reason: u16, comment: impl Into<String>) -> Outcome {
        Outcome::Failed {
            sop_class: Some(part.sop_class_uid.clone()),
            sop_instance: Some(part.sop_instance_uid.clone()),
            reason,
            comment: comment.into(),
        }
    }
    /// A part that is not a DICOM file: no UID to refer to it by.
    fn not_dicom(comment: impl Into<String>) -> Outcome {
        Outcome::Failed {
            sop_class: None,
            sop_instance: None,
            reason: status::CANNOT_UNDERSTAND,
            comment: comment.into(),
        }
    }
}

async fn stow(state: &WebState, study: Option<String>, BaseUrl(base): BaseUrl, request: Request) -> Response {
    let config = &state.config;
    let max_request = config.dicomweb.max_request_mb.saturating_mul(1 << 20);
    let (parts, body) = request.into_parts();
    let boundary = match boundary_of(&parts.headers) {
        Ok(b) => b,
        Err(e) => return cut_short(e, &[]),
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_request) {
        return cut_short(too_large(), &[]);
    }
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));

    let constraints =
        multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(max_request));
    let mut multipart = multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let request = Target {
        state,
        study,
        peer,
        sop_classes: crate::node::storage_sop_classes(config),
        transfer_syntaxes: crate::node::decodable_transfer_syntaxes(),
    };
    let max_dataset = config.storage.max_instance_mb.saturating_mul(1 << 20);
    let idle = config.idle_timeout();
    let mut outcomes = Vec::new();
    loop {
        if outcomes.len() == MAX_PARTS {
            return cut_short(
                WebError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("more than {MAX_PARTS} parts in one request"),
                ),
                &outcomes,
            );
        }
        let field = match tokio::time::timeout(idle, multipart.next_field()).await {
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => return cut_short(multipart_error(e), &outcomes),
            Err(_) => return cut_short(idle_timeout(), &outcomes),
        };
        if let Err(e) = check_part_type(field.headers()) {
            return cut_short(e, &outcomes);
        }
        let received = match receive_part(field, idle, &state.store.spool_dir(), max_dataset).await {
            Ok(r) => r,
            Err(e) => return cut_short(e, &outcomes),
        };
        let outcome = match received {
            Received::Failed(outcome) => request.refused(outcome),
            Received::Part(part) => request.store(&part.meta, part.dataset).await,
        };
        outcomes.push(outcome);
    }
    if outcomes.is_empty() {
        return cut_short(
            WebError::bad_request("the multipart/related body holds no instance"),
            &outcomes,
        );
    }
    respond(state, &base, request.study.as_deref(), &outcomes).await
}

/// One STOW-RS request's target and what it accepts.
struct Target<'a> {
    state: &'a WebState,
    /// The study of `/studies/{study}`.
    study: Option<String>,
    peer: SocketAddr,
    /// What the SCP accepts at negotiation; STOW-RS, which does not negotiate, checks each
    /// instance against the same lists.
    sop_classes: Vec<String>,
    transfer_syntaxes: Vec<String>,
}

impl Target<'_> {
    /// The SCP's negotiation checks and the target study's, then the one ingest, routed as
    /// `[dicomweb] sender`.
    async fn store(&self, meta: &FileMeta, dataset: SpooledDataSet) -> Outcome {
        if !self.sop_classes.contains(&meta.sop_class_uid) {
            return self.refused(Outcome::failed(
                meta,
                status::SOP_CLASS_NOT_SUPPORTED,
                "SOP Class not supported by this node",
            ));
        }
        if !self.transfer_syntaxes.contains(&meta.transfer_syntax) {
            return self.refused(Outcome::failed(
                meta,
                TRANSFER_SYNTAX_NOT_SUPPORTED,
                "Transfer Syntax not supported by this node",
            ));
        }
        if let Some(study) = &self.study {
            let found = study_of(&dataset, &meta.transfer_syntax, &self.state.config).await;
            if found.is_some_and(|found| &found != study) {
                return self.refused(Outcome::failed(
                    meta,
                    status::DATASET_DOES_NOT_MATCH_SOP_CLASS,
                    "Study Instance UID does not match the study of the request",
                ));
            }
        }
        // Ingest logs its own refusals.
        let outcome = self
            .state
            .ingest
            .store_from(
                crate::metrics::Protocol::Stow,
                ReceivedInstance {
                    calling_ae_title: self.state.config.dicomweb.sender.clone(),
                    peer_addr: self.peer,
                    sop_class_uid: meta.sop_class_uid.clone(),
                    sop_instance_uid: meta.sop_instance_uid.clone(),
                    transfer_syntax: meta.transfer_syntax.clone(),
                    dataset,
                },
            )
            .await;
        Outcome::of(meta, outcome)
    }

    /// A failure decided here, before ingest, logged as ingest logs its refusals. Parts that
    /// are not DICOM: at debug, the request's summary line counts them (a body of junk parts
    /// must not flood the log).
    fn refused(&self, outcome: Outcome) -> Outcome {
        match &outcome {
            Outcome::Failed {
                sop_instance: Some(uid),
                reason,
                comment,
                ..
            } => crate::ingest::log_refusal(uid, &self.state.config.dicomweb.sender, *reason, comment),
            Outcome::Failed { comment, .. } => debug!(reason = %comment, "STOW-RS part is not DICOM"),
            Outcome::Stored { .. } => {}
        }
        outcome
    }
}

/// The Study Instance UID of a spooled data set, by the same walk ingest does; None when the
/// walk fails (ingest then refuses the data set with its own reason).
async fn study_of(
    dataset: &SpooledDataSet,
    transfer_syntax: &str,
    config: &crate::config::Config,
) -> Option<String> {
    use crate::ingest::scan;
    let limits = config.ingest_limits();
    let (path, len, ts) = (
        dataset.path().to_path_buf(),
        dataset.len(),
        transfer_syntax.to_string(),
    );
    // A walk of the file: blocking work, off the runtime.
    tokio::task::spawn_blocking(move || {
        let file = std::io::BufReader::new(std::fs::File::open(path).ok()?);
        let scanned = if ts == DEFLATED {
            scan::scan_deflated(file, &limits)
        } else {
            scan::scan(file, len, TransferSyntaxRegistry.get(&ts)?, &limits)
        };
        scanned.ok()?.study_uid.filter(|s| !s.is_empty())
    })
    .await
    .ok()
    .flatten()
}

/// A part received: its file meta and its data set spooled, or a failure of its own.
enum Received {
    Part(Part10),
    Failed(Outcome),
}

/// Reads one part by the one Part 10 spooler, each read bounded by the node's idle timeout (as
/// a C-STORE's PDUs are: a client that stops sending mid-request gets 408, not a held spool
/// file). A part that is not DICOM, or too large, is read to its end and fails on its own; a
/// body that is not valid multipart ends the request (Err).
async fn receive_part(
    field: multer::Field<'_>,
    idle: Duration,
    spool_dir: &FsPath,
    max_dataset: u64,
) -> Result<Received, WebError> {
    let chunks = futures_util::stream::unfold(field, move |mut field| async move {
        let read = match tokio::time::timeout(idle, field.chunk()).await {
            Ok(read) => read.map_err(multipart_error).transpose()?,
            Err(_) => Err(idle_timeout()),
        };
        Some((read, field))
    })
    .fuse();
    let mut chunks = std::pin::pin!(chunks);
    let refused = match part10::spool(&mut chunks, spool_dir, max_dataset).await {
        Ok(part) => return Ok(Received::Part(part)),
        Err(SpoolError::Read(e)) => return Err(e),
        Err(refused) => refused,
    };
    let comment = refused.to_string();
    let failed = match refused {
        SpoolError::TooLarge(meta) => Outcome::failed(&meta, status::OUT_OF_RESOURCES, comment),
        SpoolError::Spool(meta, e) => {
            warn!(error = %e, "cannot spool a STOW-RS instance");
            if matches!(e.raw_os_error(), Some(c) if c == nix::libc::ENOSPC || c == nix::libc::EDQUOT) {
                Outcome::failed(&meta, status::OUT_OF_RESOURCES, "vcnode disk full")
            } else {
                Outcome::failed(
                    &meta,
                    status::PROCESSING_FAILURE,
                    "vcnode could not receive the data set",
                )
            }
        }
        SpoolError::NotPart10(_) | SpoolError::Read(_) => Outcome::not_dicom(comment),
    };
    // The rest of a part that will not be stored (so a bad body still ends the request).
    while let Some(chunk) = chunks.next().await {
        chunk?;
    }
    Ok(Received::Failed(failed))
}

fn idle_timeout() -> WebError {
    WebError::new(
        StatusCode::REQUEST_TIMEOUT,
        "the request body stopped arriving (node.idle_timeout_s)",
    )
}

fn too_large() -> WebError {
    WebError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request body larger than this node accepts ([dicomweb] max_request_mb)",
    )
}

fn multipart_error(e: multer::Error) -> WebError {
    match e {
        multer::Error::StreamSizeExceeded { .. } => too_large(),
        multer::Error::StreamReadFailed(_) => {
            WebError::bad_request("request body could not be read (truncated or aborted)")
        }
        other => WebError::bad_request(format!("malformed multipart/related body: {other}")),
    }
}

/// A request that ended in error after some parts: those already stored stay stored (a retry
/// finds them as duplicates, acknowledged as stored), and the reason says so.
fn cut_short(e: WebError, outcomes: &[Outcome]) -> Response {
    let stored = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Stored { .. }))
        .count();
    let e = if stored > 0 {
        WebError::new(
            e.status,
            format!("{}; {stored} instance(s) before it were stored", e.reason),
        )
    } else {
        e
    };
    info!(status = %e.status, reason = %e.reason, stored, "STOW-RS request refused");
    e.into_response()
}

/// The boundary of a `multipart/related; type="application/dicom"` body; 415 for any other
/// media type (PS3.18 10.5.1.1).
fn boundary_of(headers: &HeaderMap) -> Result<String, WebError> {
    let unsupported = |what: String| WebError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, what);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            unsupported("STOW-RS needs Content-Type: multipart/related; type=\"application/dicom\"".into())
        })?;
    let related = part10::multipart_related(content_type).map_err(|essence| {
        unsupported(format!(
            "STOW-RS accepts multipart/related; type=\"application/dicom\", not {}",
            printable(&essence)
        ))
    })?;
    if let Some(part_type) = related.part_type.filter(|t| t != PART10) {
        return Err(unsupported(format!(
            "this node stores DICOM Part 10 files (type=\"application/dicom\") only, not {}",
            printable(&part_type)
        )));
    }
    related
        .boundary
        .ok_or_else(|| WebError::bad_request("multipart/related without a boundary"))
}

/// A part's own Content-Type, when it has one, must be application/dicom too.
fn check_part_type(headers: &HeaderMap) -> Result<(), WebError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let (essence, _) = part10::parse_media_type(value.to_str().unwrap_or(""));
    if essence == PART10 {
        Ok(())
    } else {
        Err(WebError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "a part is {}; this node stores DICOM Part 10 files (application/dicom) only",
                printable(&essence)
            ),
        ))
    }
}

/// A client's text echoed in a reason: short, printable.
fn printable(s: &str) -> String {
    let s: String = s.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
    if s.is_empty() {
        "an empty media type".into()
    } else {
        s
    }
}

fn uid(value: &str) -> Value {
    json!({ "vr": "UI", "Value": [value] })
}

/// An element with no value (DICOM JSON: no "Value"), for a UID a part that is not DICOM lacks.
fn empty(vr: &str) -> Value {
    json!({ "vr": vr })
}

/// The PS3.18 10.5.3 answer; `base` is the DICOMweb root URL the client called.
async fn respond(state: &WebState, base: &str, study: Option<&str>, outcomes: &[Outcome]) -> Response {
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    let mut studies = std::collections::BTreeSet::new();
    let mut warnings = false;
    for outcome in outcomes {
        match outcome {
            Outcome::Stored {
                sop_class,
                sop_instance,
                warning,
            } => {
                let mut item = Map::new();
                item.insert("00081150".into(), uid(sop_class));
                item.insert("00081155".into(), uid(sop_instance));
                // Where the node holds it (a duplicate is where it was first stored).
                let row: Option<(String, String)> =
                    sqlx::query_as("SELECT study_uid, series_uid FROM instances WHERE sop_instance_uid = ?")
                        .bind(sop_instance)
                        .fetch_optional(state.queue.pool())
                        .await
                        .unwrap_or_else(|e| {
                            warn!(error = %e, "cannot look up a stored instance");
                            None
                        });
                if let Some((study_uid, series_uid)) = row {
                    item.insert(
                        "00081190".into(),
                        json!({ "vr": "UR", "Value": [format!(
                            "{base}/studies/{study_uid}/series/{series_uid}/instances/{sop_instance}"
                        )] }),
                    );
                    studies.insert(study_uid);
                }
                if let Some((reason, comment)) = warning {
                    warnings = true;
                    item.insert("00081196".into(), json!({ "vr": "US", "Value": [reason] }));
                    item.insert("00000902".into(), json!({ "vr": "LO", "Value": [comment] }));
                }
                referenced.push(Value::Object(item));
            }
            Outcome::Failed {
                sop_class,
                sop_instance,
                reason,
                comment,
            } => {
                let mut item = Map::new();
                item.insert(
                    "00081150".into(),
                    sop_class.as_deref().map(uid).unwrap_or(empty("UI")),
                );
                item.insert(
                    "00081155".into(),
                    sop_instance.as_deref().map(uid).unwrap_or(empty("UI")),
                );
                item.insert("00081197".into(), json!({ "vr": "US", "Value": [reason] }));
                // Error Comment, as a C-STORE-RSP carries it: what is wrong, in words.
                item.insert("00000902".into(), json!({ "vr": "LO", "Value": [comment] }));
                failed.push(Value::Object(item));
            }
        }
    }
    let mut body = Map::new();
    // The study's Retrieve URL: the request's study, or the one study everything stored is in.
    let study_url = match (study, studies.len()) {
        (Some(s), _) => Some(s.to_string()),
        (None, 1) => studies.iter().next().cloned(),
        _ => None,
    };
    if let Some(s) = study_url {
        body.insert(
            "00081190".into(),
            json!({ "vr": "UR", "Value": [format!("{base}/studies/{s}")] }),
        );
    }
    if !failed.is_empty() {
        body.insert("00081198".into(), json!({ "vr": "SQ", "Value": failed }));
    }
    if !referenced.is_empty() {
        body.insert("00081199".into(), json!({ "vr": "SQ", "Value": referenced }));
    }
    let status = if referenced.is_empty() {
        StatusCode::CONFLICT
    } else if failed.is_empty() && !warnings {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    info!(
        status = status.as_u16(),
        stored = referenced.len(),
        failed = failed.len(),
        "STOW-RS request answered"
    );
    (
        status,
        [(header::CONTENT_TYPE, DICOM_JSON)],
        Value::Object(body).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        h
    }

    #[test]
    fn boundary_with_and_without_quotes() {
        for ct in [
            "multipart/related; type=\"application/dicom\"; boundary=\"a;b c\"",
            "Multipart/Related;type=application/dicom;boundary=a;b c",
        ] {
            let b = boundary_of(&headers(ct));
            assert!(b.is_ok(), "{ct}: {b:?}");
        }
        assert_eq!(
            boundary_of(&headers(
                "multipart/related; type=\"application/dicom\"; boundary=\"a;b c\""
            ))
            .unwrap(),
            "a;b c"
        );
        assert_eq!(
            boundary_of(&headers("multipart/related; boundary=xyz")).unwrap(),
            "xyz",
            "type may be left out; parts are checked one by one"
        );
    }

    #[test]
    fn other_media_types_are_415_with_a_reason() {
        for ct in [
            "application/dicom",
            "multipart/form-data; boundary=x",
            "multipart/related; type=\"application/dicom+xml\"; boundary=x",
            "multipart/related; type=application/dicom+json; boundary=x",
        ] {
            let e = boundary_of(&headers(ct)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
            assert!(e.reason.contains("application/dicom"), "{}", e.reason);
        }
        let e = boundary_of(&HeaderMap::new()).unwrap_err();
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let e = boundary_of(&headers("multipart/related; type=application/dicom")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(check_part_type(&headers("application/dicom; transfer-syntax=1.2.840.10008.1.2.1")).is_ok());
        assert_eq!(
            check_part_type(&headers("application/dicom+json"))
                .unwrap_err()
                .status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
