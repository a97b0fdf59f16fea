//! STOW-RS delivery (PS3.18 10.5): one multipart/related request per batch, read per instance
//! from the response's Referenced SOP Sequence (0008,1199) and Failed SOP Sequence (0008,1198).

use std::path::PathBuf;

use super::Outcome;
use crate::config::DestinationConfig;

const BOUNDARY: &str = "vcnode-stow-7d1c0a5e4b3f";

fn authorized(req: reqwest::RequestBuilder, dest: &DestinationConfig) -> reqwest::RequestBuilder {
    match &dest.auth {
        Some(a) if a.bearer.is_some() => req.bearer_auth(a.bearer.as_deref().unwrap_or("")),
        Some(a) => match a.basic.as_deref().and_then(|b| b.split_once(':')) {
            Some((user, pass)) => req.basic_auth(user, Some(pass)),
            None => req,
        },
        None => req,
    }
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

/// Sends `files` with their SOP Instance UIDs (from the export rows, so no file is parsed).
pub async fn send(
    http: &reqwest::Client,
    dest: &DestinationConfig,
    files: &[PathBuf],
    uids: &[&str],
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
    let url = format!(
        "{}/studies",
        dest.url.as_deref().unwrap_or("").trim_end_matches('/')
    );
    let req = http
        .post(&url)
        .header(
            "Content-Type",
            format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}"),
        )
        .header("Accept", "application/dicom+json")
        .body(body);
    let rsp = match authorized(req, dest).send().await {
        Ok(r) => r,
        Err(e) => return all(format!("STOW-RS to {url}: {e}"), false),
    };
    let status = rsp.status();
    let json: serde_json::Value = rsp.json().await.unwrap_or(serde_json::Value::Null);
    match status.as_u16() {
        200 | 202 | 409 => {
            let failed = uids_in(&json, "00081198");
            let stored = uids_in(&json, "00081199");
            uids.iter()
                .map(|uid| {
                    if let Some((_, reason)) = failed.iter().find(|(u, _)| u == uid) {
                        Outcome::Failed {
                            reason: format!(
                                "STOW-RS {status}: failure reason {}",
                                reason.map(|r| format!("{r:04X}H")).unwrap_or("unknown".into())
                            ),
                            // 0xA7xx out of resources may pass; the rest are refusals.
                            permanent: !matches!(reason, Some(r) if r & 0xFF00 == 0xA700),
                        }
                    } else if status.as_u16() == 200 || stored.iter().any(|(u, _)| u == uid) {
                        Outcome::Stored(
                            (status.as_u16() == 202).then(|| "STOW-RS 202: stored with warnings".to_string()),
                        )
                    } else {
                        Outcome::Failed {
                            reason: format!("STOW-RS {status}: instance not in the response"),
                            permanent: false,
                        }
                    }
                })
                .collect()
        }
        // Other client errors will not change by retrying (bad URL, refused credentials).
        400..=499 if status.as_u16() != 408 && status.as_u16() != 429 => {
            all(format!("STOW-RS {url}: HTTP {status}"), true)
        }
        _ => all(format!("STOW-RS {url}: HTTP {status}"), false),
    }
}

pub async fn qido(http: &reqwest::Client, dest: &DestinationConfig) -> Result<String, String> {
    let url = format!(
        "{}/studies?limit=1",
        dest.url.as_deref().unwrap_or("").trim_end_matches('/')
    );
    let rsp = authorized(http.get(&url).header("Accept", "application/dicom+json"), dest)
        .send()
        .await
        .map_err(|e| format!("QIDO-RS {url}: {e}"))?;
    if rsp.status().is_success() {
        Ok(format!("QIDO-RS {url}: HTTP {}", rsp.status()))
    } else {
        Err(format!("QIDO-RS {url}: HTTP {}", rsp.status()))
    }
}
