//! The storage SCP: association acceptance and the C-ECHO / C-STORE service loop.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dicom_ul::association::server::AccessControl;
use dicom_ul::association::{Association, ServerAssociationOptions};
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType,
    PresentationContextResultReason, UserIdentity,
};
use dicom_ul::Pdu;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::command::{self, Command};
use crate::{status, trim_value};

/// An application entity allowed to send to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ae_title: String,
    /// When set, associations from this AE title are accepted only from this address.
    pub host: Option<IpAddr>,
}

/// What the SCP accepts and how long it waits.
#[derive(Debug, Clone)]
pub struct ScpConfig {
    /// This node's AE title; a request calling another title is rejected.
    pub ae_title: String,
    /// Who may send. An unknown calling AE title, or a known one from another host, is rejected.
    pub peers: Vec<Peer>,
    /// Storage SOP classes accepted at negotiation (Verification is always accepted).
    pub storage_sop_classes: Vec<String>,
    /// Transfer syntaxes accepted at negotiation, in order of preference.
    pub transfer_syntaxes: Vec<String>,
    /// Concurrent associations; beyond it a request gets a transient A-ASSOCIATE-RJ.
    pub max_associations: usize,
    /// The largest PDU this node receives (announced in A-ASSOCIATE-AC).
    pub max_pdu_length: u32,
    /// ARTIM: how long a new connection may take to complete association negotiation.
    pub artim_timeout: Duration,
    /// How long an established association may stay silent before it is dropped.
    pub idle_timeout: Duration,
}

/// One data set received by C-STORE, as raw bytes in its negotiated transfer syntax.
#[derive(Debug)]
pub struct ReceivedInstance {
    pub calling_ae_title: String,
    pub peer_addr: SocketAddr,
    /// Affected SOP Class UID of the C-STORE-RQ (equal to the presentation context's).
    pub sop_class_uid: String,
    /// Affected SOP Instance UID of the C-STORE-RQ, not yet validated.
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub dataset: Vec<u8>,
}

/// The handler's verdict; becomes the C-STORE-RSP Status and Error Comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    pub status: u16,
    pub comment: Option<String>,
}

impl StoreOutcome {
    pub fn success() -> Self {
        StoreOutcome {
            status: status::SUCCESS,
            comment: None,
        }
    }
    pub fn failure(status: u16, comment: impl Into<String>) -> Self {
        StoreOutcome {
            status,
            comment: Some(comment.into()),
        }
    }
}

/// Receives each data set. It must return success only once the instance is durable.
#[async_trait::async_trait]
pub trait StoreHandler: Send + Sync + 'static {
    async fn store(&self, instance: ReceivedInstance) -> StoreOutcome;
}

/// A storage SCP bound to a handler.
pub struct StorageScp<H> {
    config: Arc<ScpConfig>,
    handler: Arc<H>,
}

/// How long a shutdown waits for associations in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl<H: StoreHandler> StorageScp<H> {
    pub fn new(config: ScpConfig, handler: Arc<H>) -> Self {
        StorageScp {
            config: Arc::new(config),
            handler,
        }
    }

    /// Serves associations from `listener` until `shutdown` resolves, then stops accepting and
    /// lets the associations in progress finish (up to a drain timeout).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.config.max_associations));
        let mut running = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (socket, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // e.g. EMFILE: keep serving, the condition is usually transient.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = socket.set_nodelay(true);
                    let config = self.config.clone();
                    match slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let handler = self.handler.clone();
                            running.spawn(async move {
                                serve_association(socket, peer, &config, &*handler).await;
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            warn!(%peer, limit = config.max_associations, "association limit reached, rejecting (transient)");
                            running.spawn(async move { reject_busy(socket, &config).await });
                        }
                    }
                }
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        info!(
            in_progress = running.len(),
            "storage SCP stops accepting associations"
        );
        let drain = async { while running.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            warn!("associations still open after the drain timeout; aborting them");
        }
        Ok(())
    }
}

/// AE title policy: called title must be ours, calling title must be a configured peer,
/// from its configured host when it has one.
struct PeerAccess<'a> {
    peers: &'a [Peer],
    from: IpAddr,
}

impl AccessControl for PeerAccess<'_> {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if trim_value(called_ae_title) != this_ae_title {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let calling = trim_value(calling_ae_title);
        let allowed = self
            .peers
            .iter()
            .any(|p| p.ae_title == calling && p.host.is_none_or(|h| h.to_canonical() == self.from));
        if allowed {
            Ok(())
        } else {
            Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
        }
    }
}

async fn reject_busy(mut socket: TcpStream, config: &ScpConfig) {
    // Read the A-ASSOCIATE-RQ first so the peer sees a proper RJ, not a reset.
    let mut buf = BytesMut::with_capacity(4096);
    let read =
        dicom_ul::association::read_pdu_from_wire_async(&mut socket, &mut buf, config.max_pdu_length, false);
    if tokio::time::timeout(config.artim_timeout, read).await.is_err() {
        return;
    }
    let rj = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut out = Vec::with_capacity(16);
    if dicom_ul::pdu::write_pdu(&mut out, &rj).is_ok() {
        let _ = socket.write_all(&out).await;
        let _ = socket.shutdown().await;
    }
}

/// Tallies for the per-association log line.
#[derive(Default)]
struct Tally {
    stored: u32,
    failed: u32,
    echoes: u32,
    bytes: u64,
}

async fn serve_association<H: StoreHandler>(
    socket: TcpStream,
    peer: SocketAddr,
    config: &ScpConfig,
    handler: &H,
) {
    let started = Instant::now();
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(PeerAccess {
            peers: &config.peers,
            from: peer.ip().to_canonical(),
        })
        .ae_title(config.ae_title.as_str())
        .max_pdu_length(config.max_pdu_length)
        .read_timeout(config.idle_timeout)
        .write_timeout(config.idle_timeout)
        .with_abstract_syntax(crate::VERIFICATION);
    for uid in &config.storage_sop_classes {
        options = options.with_abstract_syntax(uid.as_str());
    }
    for uid in &config.transfer_syntaxes {
        options = options.with_transfer_syntax(uid.as_str());
    }
    let mut assoc = match tokio::time::timeout(config.artim_timeout, options.establish_async(socket)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "association not established");
            return;
        }
        Err(_) => {
            warn!(%peer, "association request timed out (ARTIM)");
            return;
        }
    };
    let calling = trim_value(assoc.peer_ae_title()).to_string();
    let accepted: Vec<_> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| format!("{}@{}", pc.abstract_syntax, pc.transfer_syntax))
        .collect();
    info!(
        %peer, calling_ae = %calling,
        max_pdu = assoc.requestor_max_pdu_length(),
        accepted = accepted.len(),
        rejected = assoc.presentation_contexts().len() - accepted.len(),
        "association accepted"
    );
    debug!(contexts = ?accepted, "accepted presentation contexts");

    let mut tally = Tally::default();
    let mut command_buf: Vec<u8> = Vec::new();
    let mut data_buf: Vec<u8> = Vec::new();
    // The C-STORE-RQ whose data set is being received, with its presentation context id.
    let mut pending: Option<(Command, u8)> = None;
    let ending = 'assoc: loop {
        let pdu = match assoc.receive().await {
            Ok(pdu) => pdu,
            Err(e) => break format!("connection ended: {e}"),
        };
        match pdu {
            Pdu::PData { data } => {
                for pdv in data {
                    let pc_id = pdv.presentation_context_id;
                    match pdv.value_type {
                        PDataValueType::Command => {
                            append(&mut command_buf, pdv.data);
                            if !pdv.is_last {
                                continue;
                            }
                            let parsed = Command::parse(&command_buf);
                            command_buf.clear();
                            let cmd = match parsed {
                                Ok(c) => c,
                                Err(e) => {
                                    warn!(%peer, error = %e, "unreadable command set; aborting association");
                                    let _ = assoc.abort().await;
                                    return;
                                }
                            };
                            let reply = match cmd.field {
                                command::C_ECHO_RQ => {
                                    tally.echoes += 1;
                                    Some(command::c_echo_rsp(cmd.message_id, status::SUCCESS))
                                }
                                command::C_STORE_RQ if cmd.has_dataset => {
                                    data_buf.clear();
                                    pending = Some((cmd, pc_id));
                                    None
                                }
                                other => {
                                    warn!(%peer, command = format!("{other:#06x}"), "unsupported DIMSE command");
                                    Some(command::response(
                                        other,
                                        cmd.message_id,
                                        cmd.affected_sop_class_uid.as_deref(),
                                        cmd.affected_sop_instance_uid.as_deref(),
                                        status::UNRECOGNIZED_OPERATION,
                                        Some("vcnode accepts C-ECHO and C-STORE only"),
                                    ))
                                }
                            };
                            if let Some(reply) = reply {
                                if send_command(&mut assoc, pc_id, reply).await.is_err() {
                                    break 'assoc "could not send a response".to_string();
                                }
                            }
                        }
                        PDataValueType::Data => {
                            append(&mut data_buf, pdv.data);
                            if !pdv.is_last {
                                continue;
                            }
                            let Some((cmd, cmd_pc)) = pending.take() else {
                                warn!(%peer, "data set without a C-STORE-RQ; ignored");
                                data_buf.clear();
                                continue;
                            };
                            let dataset = std::mem::take(&mut data_buf);
                            tally.bytes += dataset.len() as u64;
                            let outcome = store(&assoc, handler, &cmd, cmd_pc, peer, &calling, dataset).await;
                            if outcome.status == status::SUCCESS
                                || status::kind(outcome.status) == status::StatusKind::Warning
                            {
                                tally.stored += 1;
                            } else {
                                tally.failed += 1;
                            }
                            let reply = command::response(
                                command::C_STORE_RQ,
                                cmd.message_id,
                                cmd.affected_sop_class_uid.as_deref(),
                                cmd.affected_sop_instance_uid.as_deref(),
                                outcome.status,
                                outcome.comment.as_deref(),
                            );
                            if send_command(&mut assoc, pc_id, reply).await.is_err() {
                                break 'assoc "could not send the C-STORE response".to_string();
                            }
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                let _ = assoc.send(&Pdu::ReleaseRP).await;
                break "released".to_string();
            }
            Pdu::AbortRQ { source } => break format!("aborted by peer ({source:?})"),
            other => {
                warn!(%peer, pdu = %other.short_description(), "unexpected PDU; aborting association");
                let _ = assoc.abort().await;
                break "aborted (unexpected PDU)".to_string();
            }
        }
    };
    info!(
        %peer, calling_ae = %calling, stored = tally.stored, failed = tally.failed,
        echoes = tally.echoes, bytes = tally.bytes,
        ms = started.elapsed().as_millis() as u64,
        "association {ending}"
    );
}

fn append(buf: &mut Vec<u8>, mut data: Vec<u8>) {
    // The first fragment is usually the whole value: take it without a copy.
    if buf.is_empty() {
        std::mem::swap(buf, &mut data);
    } else {
        buf.extend_from_slice(&data);
    }
}

async fn store<H: StoreHandler, S>(
    assoc: &dicom_ul::association::AsyncServerAssociation<S>,
    handler: &H,
    cmd: &Command,
    pc_id: u8,
    peer: SocketAddr,
    calling: &str,
    dataset: Vec<u8>,
) -> StoreOutcome {
    let Some(pc) = assoc.presentation_contexts().iter().find(|pc| pc.id == pc_id) else {
        return StoreOutcome::failure(status::PROCESSING_FAILURE, "unknown presentation context");
    };
    let sop_class = cmd.affected_sop_class_uid.clone().unwrap_or_default();
    if pc.reason != PresentationContextResultReason::Acceptance || pc.abstract_syntax != sop_class {
        return StoreOutcome::failure(
            status::SOP_CLASS_NOT_SUPPORTED,
            "SOP class does not match the presentation context",
        );
    }
    handler
        .store(ReceivedInstance {
            calling_ae_title: calling.to_string(),
            peer_addr: peer,
            sop_class_uid: sop_class,
            sop_instance_uid: cmd.affected_sop_instance_uid.clone().unwrap_or_default(),
            transfer_syntax: pc.transfer_syntax.clone(),
            dataset,
        })
        .await
}

async fn send_command<S>(
    assoc: &mut dicom_ul::association::AsyncServerAssociation<S>,
    pc_id: u8,
    reply: Result<Vec<u8>, command::CommandError>,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let data = reply.map_err(|e| e.to_string())?;
    assoc
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .await
        .map_err(|e| e.to_string())
}
