//! C-STORE SCU delivery: one association for a batch (one series), each data set sent in the
//! transfer syntax the destination accepted (Explicit VR LE preferred, Implicit VR LE).

use std::path::PathBuf;
use std::time::Duration;

use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use vcnode_scp::status::{self, StatusKind};
use vcnode_scp::{ScuError, StoreScu, StoreScuOptions};

use super::Outcome;
use crate::config::DestinationConfig;

fn options(
    dest: &DestinationConfig,
    calling: &str,
    classes: &[String],
    timeout: Duration,
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
        timeout,
    }
}

/// A rejected association is permanent unless the rejection says transient.
fn connect_failure(e: &ScuError) -> Outcome {
    let reason = e.to_string();
    let permanent = matches!(e, ScuError::Associate { source: dicom_ul::association::Error::Rejected { association_rj, .. }, .. }
        if association_rj.result == dicom_ul::pdu::AssociationRJResult::Permanent);
    Outcome::Failed { reason, permanent }
}

pub async fn send(
    dest: &DestinationConfig,
    calling: &str,
    files: &[PathBuf],
    timeout: Duration,
) -> Vec<Outcome> {
    let mut objects = Vec::with_capacity(files.len());
    for f in files {
        objects.push(dicom_object::open_file(f).map_err(|e| format!("cannot read {}: {e}", f.display())));
    }
    let mut classes: Vec<String> = objects
        .iter()
        .flatten()
        .map(|o| {
            o.meta()
                .media_storage_sop_class_uid()
                .trim_end_matches('\0')
                .to_string()
        })
        .collect();
    classes.sort();
    classes.dedup();
    let mut scu = match StoreScu::connect(&options(dest, calling, &classes, timeout)).await {
        Ok(s) => s,
        Err(e) => {
            let failure = connect_failure(&e);
            return files.iter().map(|_| failure.clone()).collect();
        }
    };
    let mut out = Vec::with_capacity(files.len());
    for obj in objects {
        let outcome = match obj {
            Err(reason) => Outcome::Failed {
                reason,
                permanent: true,
            },
            Ok(obj) => {
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
                match scu.accepted_context(&class).map(|(_, ts)| ts.to_string()) {
                    None => Outcome::Failed {
                        reason: format!("{} accepted no presentation context for {class}", dest.name),
                        permanent: true,
                    },
                    Some(ts_uid) => {
                        let ts = TransferSyntaxRegistry
                            .get(&ts_uid)
                            .expect("a proposed transfer syntax");
                        let mut bytes = Vec::new();
                        match obj.write_dataset_with_ts(&mut bytes, ts) {
                            Err(e) => Outcome::Failed {
                                reason: format!("cannot encode: {e}"),
                                permanent: true,
                            },
                            Ok(()) => match scu.store(&class, &uid, &bytes).await {
                                Ok(rsp) => match status::kind(rsp.status) {
                                    StatusKind::Success => Outcome::Stored(None),
                                    StatusKind::Warning => Outcome::Stored(Some(format!(
                                        "warning {:04X}H{}",
                                        rsp.status,
                                        rsp.error_comment.map(|c| format!(": {c}")).unwrap_or_default()
                                    ))),
                                    StatusKind::Failure => Outcome::Failed {
                                        reason: format!(
                                            "C-STORE status {:04X}H{}",
                                            rsp.status,
                                            rsp.error_comment.map(|c| format!(": {c}")).unwrap_or_default()
                                        ),
                                        // Out of resources (A7xx) may pass; other refusals will not.
                                        permanent: rsp.status & 0xFF00 != 0xA700,
                                    },
                                },
                                Err(e) => {
                                    out.push(Outcome::Failed {
                                        reason: e.to_string(),
                                        permanent: false,
                                    });
                                    // The association is unusable now: the rest fail transiently.
                                    while out.len() < files.len() {
                                        out.push(Outcome::Failed {
                                            reason: format!("association lost: {e}"),
                                            permanent: false,
                                        });
                                    }
                                    return out;
                                }
                            },
                        }
                    }
                }
            }
        };
        out.push(outcome);
    }
    let _ = scu.release().await;
    out
}

pub async fn echo(dest: &DestinationConfig, calling: &str, timeout: Duration) -> Result<String, String> {
    let mut scu = StoreScu::connect(&options(dest, calling, &[], timeout))
        .await
        .map_err(|e| e.to_string())?;
    let st = scu.echo().await.map_err(|e| e.to_string())?;
    let _ = scu.release().await;
    if st == status::SUCCESS {
        Ok(format!(
            "C-ECHO to {} at {}:{} succeeded",
            dest.ae_title.as_deref().unwrap_or(""),
            dest.host.as_deref().unwrap_or(""),
            dest.port.unwrap_or(0)
        ))
    } else {
        Err(format!("C-ECHO status {st:04X}H"))
    }
}
