//! C-STORE SCU delivery: one association for a batch (one series), each data set sent in the
//! transfer syntax the destination accepted (Explicit VR LE preferred, Implicit VR LE).
//! Every exchange is time-limited (see [`vcnode_scp::scu::transfer_timeout`]), so a destination
//! that stops reading fails its own batch and frees the worker. A destination with `tls` is
//! reached over DICOM TLS ([`scu_tls`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::OpenFileOptions;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use vcnode_scp::status::{self, StatusKind};
use vcnode_scp::tls::{ClientTls, Identity};
use vcnode_scp::{ScuError, ScuTls, StoreScu, StoreScuOptions};

use tokio::sync::mpsc::UnboundedSender;

use super::Outcome;
use crate::config::DestinationConfig;

/// Time limits of one export: the floor of every exchange and the slowest transfer accepted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub floor: Duration,
    pub min_bytes_per_s: u64,
}

/// DICOM TLS towards `dest`, if it has `tls`: its CA, the client certificate it names or else
/// the node's own (`node_identity`, from `[node.tls]`; IHE ATNA nodes authenticate each other),
/// and the name its certificate must carry (`tls.server_name`, else `host`). The files are read
/// at each connection, so replaced certificates apply without a restart; errors name files,
/// never their contents.
pub fn scu_tls(dest: &DestinationConfig, node_identity: Option<&Identity>) -> Result<Option<ScuTls>, String> {
    let Some(tls) = &dest.tls else {
        return Ok(None);
    };
    let Some(ca_file) = tls.ca_file.clone() else {
        return Err(format!(
            "destination {:?}: DICOM TLS needs tls.ca_file",
            dest.name
        ));
    };
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => Some(Identity {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        }),
        _ => node_identity.cloned(),
    };
    let config = vcnode_scp::tls::client_config(&ClientTls { ca_file, identity })
        .map_err(|e| format!("destination {:?}: DICOM TLS: {e}", dest.name))?;
    let server_name = tls
        .server_name
        .clone()
        .or_else(|| dest.host.clone())
        .unwrap_or_default();
    Ok(Some(ScuTls { config, server_name }))
}

fn options(
    dest: &DestinationConfig,
    calling: &str,
    classes: &[String],
    limits: Limits,
    tls: Option<ScuTls>,
) -> StoreScuOptions {
    let ts = vec![
        vcnode_scp::EXPLICIT_VR_LE.to_string(),
        vcnode_scp::IMPLICIT_VR_LE.to_string(),
    ];
    let mut contexts: Vec<(String, Vec<String>)> = classes.iter().map(|c| (c.clone(), ts.clone())).collect();
    contexts.push((
        vcnode_scp::VERIFICATION.into(),
        vec![vcnode_scp::IMPLICIT_VR_LE.into()],
    ));
    StoreScuOptions {
        calling_ae_title: calling.to_string(),
        called_ae_title: dest.ae_title.clone().unwrap_or_default(),
        address: format!(
            "{}:{}",
            dest.host.as_deref().unwrap_or(""),
            dest.port.unwrap_or(104)
        ),
        presentation_contexts: contexts,
        max_pdu_length: 65536,
        timeout: limits.floor,
        min_bytes_per_s: limits.min_bytes_per_s,
        tls,
    }
}

/// A rejected association is permanent unless the rejection says transient.
fn connect_failure(e: &ScuError) -> Outcome {
    let reason = e.to_string();
    let permanent = matches!(e, ScuError::Associate { source, .. }
        if matches!(source.as_ref(), dicom_ul::association::Error::Rejected { association_rj, .. }
            if association_rj.result == dicom_ul::pdu::AssociationRJResult::Permanent));
    Outcome::Failed { reason, permanent }
}

/// The peer's Error Comment, as it may appear in a reason: LO is at most 64 characters, and
/// control characters would garble `vcnode jobs` and the log.
fn comment(c: Option<String>) -> String {
    c.map(|c| {
        let c: String = c.chars().filter(|ch| !ch.is_control()).take(64).collect();
        format!(": {c}")
    })
    .unwrap_or_default()
}

/// What a C-STORE response status means for the export.
fn outcome_of(rsp: vcnode_scp::scu::StoreResponse) -> Outcome {
    match (rsp.status, status::kind(rsp.status)) {
        // PS3.4 lists 0111H as a failure, but it says the destination already holds an instance
        // with this SOP Instance UID: ours, sent before and acknowledged on a lost association.
        (status::DUPLICATE_SOP_INSTANCE, _) => Outcome::Stored(Some(format!(
            "already stored (C-STORE status 0111H, duplicate SOP instance{})",
            comment(rsp.error_comment)
        ))),
        (_, StatusKind::Success) => Outcome::Stored(None),
        (s, StatusKind::Warning) => {
            Outcome::Stored(Some(format!("warning {s:04X}H{}", comment(rsp.error_comment))))
        }
        (s, StatusKind::Failure) => Outcome::Failed {
            reason: format!("C-STORE status {s:04X}H{}", comment(rsp.error_comment)),
            // Out of resources (A7xx) may pass; other refusals will not.
            permanent: s & 0xFF00 != 0xA700,
        },
    }
}

/// The SOP class of a file, read from its meta group without loading the pixel data.
fn sop_class_of(path: &Path) -> Result<String, String> {
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        .to_string())
}

/// One instance over an open association. Err when the association is no longer usable.
async fn store_one(scu: &mut StoreScu, dest: &DestinationConfig, path: &Path) -> Result<Outcome, ScuError> {
    // Read one instance at a time: a batch of real-size mammograms stays out of memory.
    let obj = match dicom_object::open_file(path) {
        Ok(o) => o,
        Err(e) => {
            return Ok(Outcome::Failed {
                reason: format!("cannot read {}: {e}", path.display()),
                permanent: true,
            })
        }
    };
    let class = obj
        .meta()
        .media_storage_sop_class_uid()
        .trim_end_matches('\0')
        .to_string();
    let uid = obj
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string();
    let ts_uid = match scu.usable_context(&class) {
        Ok((_, ts)) => vcnode_scp::trim_value(ts).to_string(),
        Err(ScuError::NoPresentationContext(_)) => {
            return Ok(Outcome::Failed {
                reason: format!("{} accepted no presentation context for {class}", dest.name),
                permanent: true,
            })
        }
        // A destination that answers with a syntax it was not offered will answer the same
        // way next time: a refusal, not an outage.
        Err(e) => {
            return Ok(Outcome::Failed {
                reason: e.to_string(),
                permanent: true,
            })
        }
    };
    let Some(ts) = TransferSyntaxRegistry.get(&ts_uid) else {
        return Ok(Outcome::Failed {
            reason: format!(
                "{} accepted transfer syntax {ts_uid}, which this node does not know",
                dest.name
            ),
            permanent: true,
        });
    };
    let mut bytes = Vec::new();
    if let Err(e) = obj.write_dataset_with_ts(&mut bytes, ts) {
        return Ok(Outcome::Failed {
            reason: format!("cannot encode: {e}"),
            permanent: true,
        });
    }
    drop(obj);
    let rsp = scu.store(&class, &uid, &bytes).await?;
    Ok(outcome_of(rsp))
}

/// Sends `files` on one association, reporting each file's outcome (by index) on `report` as
/// soon as the destination answers, so that what was delivered is recorded even if the node
/// dies before the batch ends.
/// `node_identity`: the node's certificate, presented to DICOM TLS destinations that name none.
pub async fn send(
    dest: &DestinationConfig,
    calling: &str,
    node_identity: Option<&Identity>,
    files: &[PathBuf],
    limits: Limits,
    report: &UnboundedSender<(usize, Outcome)>,
) {
    let fail_all = |failure: Outcome| {
        for i in 0..files.len() {
            let _ = report.send((i, failure.clone()));
        }
    };
    let tls = match scu_tls(dest, node_identity) {
        Ok(tls) => tls,
        // A certificate file that cannot be read may be replaced: retried, not dead.
        Err(reason) => {
            return fail_all(Outcome::Failed {
                reason,
                permanent: false,
            })
        }
    };
    let mut classes: Vec<String> = files.iter().filter_map(|f| sop_class_of(f).ok()).collect();
    classes.sort();
    classes.dedup();
    let mut scu = match StoreScu::connect(&options(dest, calling, &classes, limits, tls)).await {
        Ok(s) => s,
        Err(e) => return fail_all(connect_failure(&e)),
    };
    for (i, f) in files.iter().enumerate() {
        match store_one(&mut scu, dest, f).await {
            Ok(outcome) => {
                let _ = report.send((i, outcome));
            }
            Err(e) => {
                let _ = report.send((
                    i,
                    Outcome::Failed {
                        reason: e.to_string(),
                        permanent: false,
                    },
                ));
                // The association is unusable now (perhaps mid-PDU): the rest fail transiently,
                // and dropping it closes the socket without waiting on the peer.
                for j in i + 1..files.len() {
                    let _ = report.send((
                        j,
                        Outcome::Failed {
                            reason: format!("association lost: {e}"),
                            permanent: false,
                        },
                    ));
                }
                return;
            }
        }
    }
    let _ = scu.release().await;
}

pub async fn echo(
    dest: &DestinationConfig,
    calling: &str,
    node_identity: Option<&Identity>,
    limits: Limits,
) -> Result<String, String> {
    let tls = scu_tls(dest, node_identity)?;
    let over = if tls.is_some() { " over DICOM TLS" } else { "" };
    let mut scu = StoreScu::connect(&options(dest, calling, &[], limits, tls))
        .await
        .map_err(|e| e.to_string())?;
    let st = scu.echo().await.map_err(|e| e.to_string())?;
    let _ = scu.release().await;
    if st == status::SUCCESS {
        Ok(format!(
            "C-ECHO to {} at {}:{}{over} succeeded",
            dest.ae_title.as_deref().unwrap_or(""),
            dest.host.as_deref().unwrap_or(""),
            dest.port.unwrap_or(0)
        ))
    } else {
        Err(format!("C-ECHO status {st:04X}H"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vcnode_scp::scu::StoreResponse;

    fn rsp(status: u16, comment: Option<&str>) -> StoreResponse {
        StoreResponse {
            status,
            error_comment: comment.map(str::to_string),
        }
    }

    #[test]
    fn duplicate_sop_instance_counts_as_delivered_with_a_note() {
        match outcome_of(rsp(0x0111, Some("exists"))) {
            Outcome::Stored(Some(note)) => {
                assert!(note.contains("0111H") && note.contains("exists"), "{note}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses_read_as_ps3_4_says() {
        assert_eq!(outcome_of(rsp(0x0000, None)), Outcome::Stored(None));
        assert!(matches!(outcome_of(rsp(0xB000, None)), Outcome::Stored(Some(n)) if n.contains("B000H")));
        assert!(matches!(
            outcome_of(rsp(0xA700, None)),
            Outcome::Failed { permanent: false, .. }
        ));
        assert!(matches!(
            outcome_of(rsp(0xA900, None)),
            Outcome::Failed { permanent: true, .. }
        ));
        // Processing failure (0110H) is next to 0111H but is not "already have it".
        assert!(matches!(
            outcome_of(rsp(0x0110, None)),
            Outcome::Failed { permanent: true, .. }
        ));
    }

    #[test]
    fn peer_comments_are_bounded_and_printable() {
        let long = format!("a\nb\u{1b}[31m{}", "x".repeat(10_000));
        let Outcome::Failed { reason, .. } = outcome_of(rsp(0xC000, Some(&long))) else {
            panic!()
        };
        assert!(reason.len() < 120, "{reason}");
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
    }
}
