//! STOW-RS delivery (PS3.18 10.5): one multipart/related request per batch, read per instance
//! from the response's Referenced SOP Sequence (0008,1199) and Failed SOP Sequence (0008,1198).
//! The request's time limit grows with its body, like a C-STORE data set's.

use std::path::PathBuf;

use super::dimse::Limits;
use super::Outcome;
use crate::config::DestinationConfig;
use crate::dicomweb_client::with_causes;

const BOUNDARY: &str = "vcnode-stow-7d1c0a5e4b3f";

/// The largest response body read: a STOW-RS answer lists UIDs and reasons, a few KB per
/// batch; a destination streaming more is not answering STOW-RS.
const MAX_RESPONSE: usize = 4 << 20;

/// Failure Reason 0111H: the destination already has an instance with this SOP Instance UID.
const DUPLICATE_SOP_INSTANCE: u64 = 0x0111;

/// The request with the destination's credentials.
fn authorized(req: reqwest::RequestBuilder, dest: &DestinationConfig) -> reqwest::RequestBuilder {
    crate::dicomweb_client::authorized(req, dest.auth.as_ref())
}

/// The SOP Instance UIDs in a response sequence, with the failure reason where given.
fn uids_in(json: &serde_json::Value, tag: &str) -> Vec<(String, Option<u64>)> {
    json.get(tag)
        .and_then(|s| s.get("Value"))
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let uid = item.get("00081155")?.get("Value")?.get(0)?.as_str()?.to_string();
                    let reason = item
                        .get("00081197")
                        .and_then(|r| r.get("Value"))
                        .and_then(|v| v.get(0))
                        .and_then(|v| v.as_u64());
                    Some((uid, reason))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The response body, up to [`MAX_RESPONSE`] bytes.
async fn body_of(mut rsp: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = rsp.chunk().await.map_err(|e| with_causes(&e))? {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(format!("response body over {MAX_RESPONSE} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Each instance's outcome from a response with a DICOM JSON body (200, 202 or 409).
fn outcomes_of(status: u16, json: &serde_json::Value, uids: &[&str]) -> Vec<Outcome> {
    let failed = uids_in(json, "00081198");
    let stored = uids_in(json, "00081199");
    uids.iter()
        .map(|uid| {
            if let Some((_, reason)) = failed.iter().find(|(u, _)| u == uid) {
                if *reason == Some(DUPLICATE_SOP_INSTANCE) {
                    // Sent before, acknowledged on a response that was lost: delivered.
                    return Outcome::Stored(Some(format!(
                        "already stored (STOW-RS {status}, failure reason 0111H, duplicate SOP instance)"
                    )));
                }
                Outcome::Failed {
                    reason: format!(
                        "STOW-RS {status}: failure reason {}",
                        reason.map(|r| format!("{r:04X}H")).unwrap_or("unknown".into())
                    ),
                    // 0xA7xx out of resources may pass; the rest are refusals.
                    permanent: !matches!(reason, Some(r) if r & 0xFF00 == 0xA700),
                }
            } else if stored.iter().any(|(u, _)| u == uid) || status == 200 {
                Outcome::Stored((status == 202).then(|| "STOW-RS 202: stored with warnings".to_string()))
            } else {
                Outcome::Failed {
                    reason: format!("STOW-RS {status}: instance not in the response"),
                    permanent: false,
                }
            }
        })
        .collect()
}

/// Sends `files` with their SOP Instance UIDs (from the export rows, so no file is parsed).
pub async fn send(
    http: &reqwest::Client,
    dest: &DestinationConfig,
    files: &[PathBuf],
    uids: &[&str],
    limits: Limits,
) -> Vec<Outcome> {
    let all = |reason: String, permanent: bool| {
        files
            .iter()
            .map(|_| Outcome::Failed {
                reason: reason.clone(),
                permanent,
            })
            .collect()
    };
    let mut body = Vec::new();
    for f in files {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => return all(format!("cannot read {}: {e}", f.display()), false),
        };
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(&bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    let body_len = body.len();
    let url = format!(
        "{}/studies",
        dest.url.as_deref().unwrap_or("").trim_end_matches('/')
    );
    // Writing the body at the slowest accepted rate, then the floor for the destination to
    // store and answer; reqwest's per-request limit covers connecting through the last byte.
    let limit = vcnode_scp::scu::transfer_timeout(limits.floor, limits.min_bytes_per_s, body.len())
        .saturating_add(limits.floor);
    let req = http
        .post(&url)
        .timeout(limit)
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        )
        .header("Accept", "application/dicom+json")
        .body(body);
    let rsp = match authorized(req, dest).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => {
            return all(
                format!(
                    "STOW-RS to {url} timed out after {:.1} s ({} bytes)",
                    limit.as_secs_f64(),
                    body_len
                ),
                false,
            )
        }
        Err(e) => return all(format!("STOW-RS to {url}: {}", with_causes(&e)), false),
    };
    let status = rsp.status();
    let json: serde_json::Value = match body_of(rsp).await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        Err(e) => return all(format!("STOW-RS {url}: HTTP {status}, {e}"), false),
    };
    match status.as_u16() {
        s @ (200 | 202 | 409) => outcomes_of(s, &json, uids),
        // Other client errors will not change by retrying (bad URL, refused credentials).
        400..=499 if status.as_u16() != 408 && status.as_u16() != 429 => {
            all(format!("STOW-RS {url}: HTTP {status}"), true)
        }
        _ => all(format!("STOW-RS {url}: HTTP {status}"), false),
    }
}

pub async fn qido(
    http: &reqwest::Client,
    dest: &DestinationConfig,
    timeout: std::time::Duration,
) -> Result<String, String> {
    let url = format!(
        "{}/studies?limit=1",
        dest.url.as_deref().unwrap_or("").trim_end_matches('/')
    );
    let rsp = authorized(
        http.get(&url)
            .timeout(timeout)
            .header("Accept", "application/dicom+json"),
        dest,
    )
    .send()
    .await
    .map_err(|e| format!("QIDO-RS {url}: {}", with_causes(&e)))?;
    if rsp.status().is_success() {
        Ok(format!("QIDO-RS {url}: HTTP {}", rsp.status()))
    } else {
        Err(format!("QIDO-RS {url}: HTTP {}", rsp.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A STOW-RS response body (PS3.18 10.5.3) with one failed instance.
    fn failed(uid: &str, reason: u64) -> serde_json::Value {
        json!({ "00081198": { "vr": "SQ", "Value": [ {
            "00081150": { "vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.1.2"] },
            "00081155": { "vr": "UI", "Value": [uid] },
            "00081197": { "vr": "US", "Value": [reason] }
        } ] } })
    }

    #[test]
    fn conflict_for_the_same_uid_counts_as_delivered() {
        let out = outcomes_of(409, &failed("1.2.3", 0x0111), &["1.2.3"]);
        assert!(
            matches!(&out[0], Outcome::Stored(Some(n)) if n.contains("0111H")),
            "{out:?}"
        );
    }

    #[test]
    fn conflict_for_another_reason_is_not_delivered() {
        let out = outcomes_of(409, &failed("1.2.3", 0xA900), &["1.2.3"]);
        assert!(
            matches!(&out[0], Outcome::Failed { reason, permanent: true } if reason.contains("A900H")),
            "{out:?}"
        );
        // A 409 that does not name the instance at all says nothing about it.
        let out = outcomes_of(409, &serde_json::Value::Null, &["1.2.3"]);
        assert!(
            matches!(&out[0], Outcome::Failed { permanent: false, .. }),
            "{out:?}"
        );
    }

    #[test]
    fn partial_success_is_read_per_instance() {
        let mut body = failed("1.2.4", 0xA700);
        body["00081199"] =
            json!({ "vr": "SQ", "Value": [ { "00081155": { "vr": "UI", "Value": ["1.2.3"] } } ] });
        let out = outcomes_of(202, &body, &["1.2.3", "1.2.4", "1.2.5"]);
        assert!(matches!(&out[0], Outcome::Stored(Some(_))), "{out:?}");
        assert!(
            matches!(&out[1], Outcome::Failed { permanent: false, .. }),
            "{out:?}"
        );
        assert!(
            matches!(&out[2], Outcome::Failed { permanent: false, .. }),
            "{out:?}"
        );
    }

    /// An HTTP server that accepts the connection and never reads the request: the STOW-RS
    /// body's time limit, not the peer, ends the export.
    #[tokio::test]
    async fn a_destination_that_stops_reading_the_body_times_the_request_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(sock);
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.dcm");
        // More than loopback's socket buffers hold.
        std::fs::write(&file, vec![0u8; 16 << 20]).unwrap();
        let dest = DestinationConfig {
            name: "stalled".into(),
            kind: crate::config::DestinationKind::Dicomweb,
            ae_title: None,
            host: None,
            port: None,
            url: Some(format!("http://127.0.0.1:{port}/dicom-web")),
            tls: None,
            auth: None,
            allow_insecure_auth: false,
        };
        let limits = Limits {
            floor: std::time::Duration::from_millis(300),
            min_bytes_per_s: 100_000_000,
        };
        // The limit is 0.3 s + 16 MiB at 100 MB/s + 0.3 s; the outer bound only turns a hang
        // into a failure, with a wide margin because machines are noisy.
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            send(&reqwest::Client::new(), &dest, &[file], &["1.2.3"], limits),
        )
        .await
        .expect("the request's own time limit ends it");
        assert!(
            matches!(&out[0], Outcome::Failed { reason, permanent: false } if reason.contains("timed out")),
            "{out:?}"
        );
        server.abort();
    }
}
