//! The storage SCU: one association to a remote SCP, C-ECHO and C-STORE over it, over plain
//! TCP or DICOM TLS.

use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::client::{AsyncTlsStream, ClientAssociationOptions};
use dicom_ul::association::AsyncClientAssociation;
use dicom_ul::pdu::{PDataValueType, PresentationContextResultReason};
use dicom_ul::Pdu;
use tokio::net::TcpStream;

use crate::command::{self, Command};

#[derive(Debug, thiserror::Error)]
/// The sources are boxed: dicom-ul's and dicom-object's errors are large, and every
/// `Result` of the SCU would carry their size.
pub enum ScuError {
    #[error("could not associate with {addr}: {}", error_chain(source.as_ref()))]
    Associate {
        addr: String,
        source: Box<dicom_ul::association::Error>,
    },
    #[error("{what} with {addr} timed out after {:.1} s", limit.as_secs_f64())]
    Timeout {
        addr: String,
        /// Which exchange: "connecting and negotiating", "the C-STORE data set (N bytes)", ...
        what: String,
        limit: Duration,
    },
    #[error("{addr} accepted transfer syntax {transfer_syntax} for {sop_class}, which was not proposed")]
    UnexpectedTransferSyntax {
        addr: String,
        sop_class: String,
        transfer_syntax: String,
    },
    #[error("the peer accepted no presentation context for SOP class {0}")]
    NoPresentationContext(String),
    #[error("network error: {0}")]
    Network(String),
    #[error("unexpected reply from the peer: {0}")]
    Protocol(String),
    #[error(transparent)]
    Command(Box<command::CommandError>),
}

/// An error with its causes: dicom-ul says "could not connect to server" and keeps why (a
/// refused connection, a certificate the CA did not sign) in its source.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl From<command::CommandError> for ScuError {
    fn from(e: command::CommandError) -> Self {
        ScuError::Command(Box::new(e))
    }
}

/// Where to send and what to propose.
#[derive(Debug, Clone)]
pub struct StoreScuOptions {
    pub calling_ae_title: String,
    pub called_ae_title: String,
    /// `host:port`
    pub address: String,
    /// (abstract syntax, proposed transfer syntaxes) per presentation context.
    pub presentation_contexts: Vec<(String, Vec<String>)>,
    pub max_pdu_length: u32,
    /// The floor of every limit: connecting, negotiation, each command and each response.
    pub timeout: Duration,
    /// The slowest transfer accepted, in bytes per second: a data set of N bytes may take
    /// `timeout + N / min_bytes_per_s` to write (0: the floor alone). A peer that stops reading
    /// then fails its export after a bounded time instead of holding the association forever.
    pub min_bytes_per_s: u64,
    /// DICOM TLS; None: plain TCP.
    pub tls: Option<ScuTls>,
}

/// DICOM TLS towards the peer: the client configuration ([`crate::tls::client_config`]) and the
/// name its certificate must carry.
#[derive(Clone)]
pub struct ScuTls {
    pub config: Arc<tokio_rustls::rustls::ClientConfig>,
    /// A DNS name or IP address.
    pub server_name: String,
}

impl std::fmt::Debug for ScuTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // rustls' ClientConfig Debug is long and says nothing a reader needs.
        f.debug_struct("ScuTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// The time allowed to move `bytes` over the network: `floor + bytes / min_bytes_per_s`.
/// One rule for every export path (C-STORE data sets and STOW-RS bodies).
pub fn transfer_timeout(floor: Duration, min_bytes_per_s: u64, bytes: usize) -> Duration {
    if min_bytes_per_s == 0 {
        return floor;
    }
    let nanos = bytes as u128 * 1_000_000_000 / min_bytes_per_s as u128;
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    floor.saturating_add(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// dicom-ul's limit on each PDU write: enough for the largest PDU at the slowest accepted rate.
fn pdu_write_limit(options: &StoreScuOptions) -> Duration {
    transfer_timeout(options.timeout, options.min_bytes_per_s, MAX_PDV_DATA + 12)
}

/// The largest command set accepted from a peer. Real ones are a few hundred bytes (Error
/// Comment is at most 64 characters); the cap keeps a hostile peer from growing the buffer.
const MAX_COMMAND_SET: usize = 16 * 1024;

/// The largest data fragment sent in one PDU, whatever the peer announces: each PDU is copied
/// once into dicom-ul's write buffer.
const MAX_PDV_DATA: usize = 1 << 20;

/// Command sets hold only group 0000 elements with defined lengths, so none can nest a
/// sequence; checking that before parsing keeps the recursive parser away from peer-built depth.
fn check_command_shape(bytes: &[u8]) -> Result<(), ScuError> {
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 8)
            .ok_or_else(|| ScuError::Protocol("truncated command set".into()))?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if group != 0x0000 || len == u32::MAX {
            return Err(ScuError::Protocol(format!(
                "command set holds element ({group:04X},{:04X}) that is not a command element",
                u16::from_le_bytes([header[2], header[3]])
            )));
        }
        at = at
            .checked_add(8 + len as usize)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| ScuError::Protocol("command element runs past the command set".into()))?;
    }
    Ok(())
}

/// The status of one C-STORE, as the peer answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreResponse {
    pub status: u16,
    pub error_comment: Option<String>,
}

/// dicom-ul's association over either transport (boxed: a TLS stream holds its buffers).
enum Link {
    Plain(Box<AsyncClientAssociation<TcpStream>>),
    Tls(Box<AsyncClientAssociation<AsyncTlsStream>>),
}

impl Link {
    fn presentation_contexts(&self) -> &[dicom_ul::pdu::PresentationContextNegotiated] {
        match self {
            Link::Plain(a) => a.presentation_contexts(),
            Link::Tls(a) => a.presentation_contexts(),
        }
    }
    fn acceptor_max_pdu_length(&self) -> u32 {
        match self {
            Link::Plain(a) => a.acceptor_max_pdu_length(),
            Link::Tls(a) => a.acceptor_max_pdu_length(),
        }
    }
    async fn send(&mut self, pdu: &Pdu) -> Result<(), dicom_ul::association::Error> {
        match self {
            Link::Plain(a) => a.send(pdu).await,
            Link::Tls(a) => a.send(pdu).await,
        }
    }
    async fn receive(&mut self) -> Result<Pdu, dicom_ul::association::Error> {
        match self {
            Link::Plain(a) => a.receive().await,
            Link::Tls(a) => a.receive().await,
        }
    }
    async fn release(self) -> Result<(), dicom_ul::association::Error> {
        match self {
            Link::Plain(a) => a.release().await,
            Link::Tls(a) => a.release().await,
        }
    }
    async fn abort(self) -> Result<(), dicom_ul::association::Error> {
        match self {
            Link::Plain(a) => a.abort().await,
            Link::Tls(a) => a.abort().await,
        }
    }
}

/// An open association to a storage SCP.
pub struct StoreScu {
    assoc: Link,
    address: String,
    timeout: Duration,
    min_bytes_per_s: u64,
    pdu_write_limit: Duration,
    /// What was proposed per abstract syntax, to check what the peer accepted.
    proposed: Vec<(String, Vec<String>)>,
    next_message_id: u16,
}

impl StoreScu {
    pub async fn connect(options: &StoreScuOptions) -> Result<Self, ScuError> {
        let mut opts = ClientAssociationOptions::new()
            .calling_ae_title(options.calling_ae_title.as_str())
            .called_ae_title(options.called_ae_title.as_str())
            .max_pdu_length(options.max_pdu_length)
            .read_timeout(options.timeout)
            .write_timeout(pdu_write_limit(options))
            .connection_timeout(options.timeout);
        for (abstract_syntax, ts) in &options.presentation_contexts {
            opts = opts
                .with_presentation_context(abstract_syntax.as_str(), ts.iter().map(String::as_str).collect());
        }
        // How errors name the peer: its address, and the transport when it is TLS.
        let address = match &options.tls {
            Some(_) => format!("{} over DICOM TLS", options.address),
            None => options.address.clone(),
        };
        // Connecting and negotiating each have the floor (dicom-ul's socket options); the
        // whole gets twice that, so a peer trickling the A-ASSOCIATE-AC is bounded too.
        let limit = options.timeout.saturating_mul(2);
        let establish = async {
            match &options.tls {
                Some(tls) => opts
                    .tls_config(tls.config.clone())
                    .server_name(&tls.server_name)
                    .establish_tls_async(options.address.as_str())
                    .await
                    .map(|a| Link::Tls(Box::new(a))),
                None => opts
                    .establish_async(options.address.as_str())
                    .await
                    .map(|a| Link::Plain(Box::new(a))),
            }
        };
        let assoc = tokio::time::timeout(limit, establish)
            .await
            .map_err(|_| ScuError::Timeout {
                addr: address.clone(),
                what: "connecting and negotiating".into(),
                limit,
            })?
            .map_err(|source| ScuError::Associate {
                addr: address.clone(),
                source: Box::new(source),
            })?;
        Ok(StoreScu {
            assoc,
            address,
            timeout: options.timeout,
            min_bytes_per_s: options.min_bytes_per_s,
            pdu_write_limit: pdu_write_limit(options),
            proposed: options.presentation_contexts.clone(),
            next_message_id: 1,
        })
    }

    /// The accepted presentation context for `sop_class`: (context id, transfer syntax).
    /// None when the peer accepted none; see [`StoreScu::usable_context`] for the checked form.
    pub fn accepted_context(&self, sop_class: &str) -> Option<(u8, &str)> {
        self.assoc
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.reason == PresentationContextResultReason::Acceptance && pc.abstract_syntax == sop_class
            })
            .map(|pc| (pc.id, pc.transfer_syntax.as_str()))
    }

    /// As [`StoreScu::accepted_context`], but an error unless the peer accepted one of the
    /// transfer syntaxes proposed for `sop_class` (dicom-ul takes the peer's word for it, and a
    /// data set written in a syntax we cannot encode would reach the PACS corrupt).
    pub fn usable_context(&self, sop_class: &str) -> Result<(u8, &str), ScuError> {
        let (id, ts) = self
            .accepted_context(sop_class)
            .ok_or_else(|| ScuError::NoPresentationContext(sop_class.into()))?;
        let proposed = self
            .proposed
            .iter()
            .any(|(class, tss)| class == sop_class && tss.iter().any(|t| t == crate::trim_value(ts)));
        if !proposed {
            return Err(ScuError::UnexpectedTransferSyntax {
                addr: self.address.clone(),
                sop_class: sop_class.into(),
                transfer_syntax: crate::trim_value(ts).chars().take(64).collect(),
            });
        }
        Ok((id, ts))
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    /// C-ECHO; returns the response status.
    pub async fn echo(&mut self) -> Result<u16, ScuError> {
        let (pc_id, _) = self
            .accepted_context(crate::VERIFICATION)
            .ok_or_else(|| ScuError::NoPresentationContext(crate::VERIFICATION.into()))?;
        let id = self.message_id();
        self.send_command(pc_id, command::c_echo_rq(id)?).await?;
        let rsp = self.read_response().await?;
        rsp.status
            .ok_or_else(|| ScuError::Protocol("C-ECHO-RSP without status".into()))
    }

    /// C-STORE of a data set already encoded in the accepted transfer syntax for its class.
    pub async fn store(
        &mut self,
        sop_class_uid: &str,
        sop_instance_uid: &str,
        dataset: &[u8],
    ) -> Result<StoreResponse, ScuError> {
        let (pc_id, _) = self.usable_context(sop_class_uid)?;
        let id = self.message_id();
        self.send_command(pc_id, command::c_store_rq(id, sop_class_uid, sop_instance_uid)?)
            .await?;
        // The whole data set has one limit that grows with its size, so a peer that stops
        // reading fails this store after a bounded time. The PDUs are built here rather than
        // with dicom-ul's P-DATA writer: that writer's Drop blocks the thread to flush what is
        // left, which, with a peer that stopped reading, would never return.
        let limit = transfer_timeout(self.timeout, self.min_bytes_per_s, dataset.len());
        tokio::time::timeout(limit, self.send_dataset(pc_id, dataset))
            .await
            .map_err(|_| ScuError::Timeout {
                addr: self.address.clone(),
                what: format!("writing the C-STORE data set ({} bytes)", dataset.len()),
                limit,
            })?
            .map_err(|e| {
                let what = format!("writing a PDU of the C-STORE data set ({} bytes)", dataset.len());
                self.ul_error(e, &what, self.pdu_write_limit)
            })?;
        let rsp = self.read_response().await?;
        if rsp.field != command::C_STORE_RSP {
            return Err(ScuError::Protocol(format!(
                "expected C-STORE-RSP, got command {:#06x}",
                rsp.field
            )));
        }
        Ok(StoreResponse {
            status: rsp
                .status
                .ok_or_else(|| ScuError::Protocol("C-STORE-RSP without status".into()))?,
            error_comment: rsp.error_comment,
        })
    }

    /// The data set as P-DATA-TF PDUs within the peer's maximum length (PS3.8 9.3.1: the
    /// limit counts the PDV items, each with a 6-byte header).
    async fn send_dataset(&mut self, pc_id: u8, dataset: &[u8]) -> Result<(), dicom_ul::association::Error> {
        let chunk = match self.assoc.acceptor_max_pdu_length() {
            0 => MAX_PDV_DATA,
            max => (max as usize).saturating_sub(6).clamp(1, MAX_PDV_DATA),
        };
        let mut pieces = dataset.chunks(chunk).peekable();
        if pieces.peek().is_none() {
            // An empty data set is still one (last) fragment.
            return self.send_pdv(pc_id, Vec::new(), true).await;
        }
        while let Some(piece) = pieces.next() {
            let is_last = pieces.peek().is_none();
            self.send_pdv(pc_id, piece.to_vec(), is_last).await?;
        }
        Ok(())
    }

    async fn send_pdv(
        &mut self,
        pc_id: u8,
        data: Vec<u8>,
        is_last: bool,
    ) -> Result<(), dicom_ul::association::Error> {
        let pdu = crate::pdu::pdata(pc_id, PDataValueType::Data, is_last, data);
        self.assoc.send(&pdu).await
    }

    async fn send_command(&mut self, pc_id: u8, data: Vec<u8>) -> Result<(), ScuError> {
        let limit = self.timeout;
        let pdu = crate::pdu::pdata(pc_id, PDataValueType::Command, true, data);
        tokio::time::timeout(limit, self.assoc.send(&pdu))
            .await
            .map_err(|_| ScuError::Timeout {
                addr: self.address.clone(),
                what: "writing a DIMSE command".into(),
                limit,
            })?
            .map_err(|e| self.ul_error(e, "writing a DIMSE command", self.pdu_write_limit))
    }

    /// dicom-ul's own socket timeouts (the floor) read as ours, with what was going on.
    fn ul_error(&self, e: dicom_ul::association::Error, what: &str, limit: Duration) -> ScuError {
        match e {
            dicom_ul::association::Error::Timeout { .. } => ScuError::Timeout {
                addr: self.address.clone(),
                what: what.into(),
                limit,
            },
            e => ScuError::Network(e.to_string()),
        }
    }

    /// Reads one response command set. The floor bounds the whole response, not each PDU, so
    /// a peer trickling PDUs (or data PDVs, which are skipped) cannot stretch it.
    async fn read_response(&mut self) -> Result<Command, ScuError> {
        let mut buf = Vec::new();
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let pdu = tokio::time::timeout_at(deadline, self.assoc.receive())
                .await
                .map_err(|_| ScuError::Timeout {
                    addr: self.address.clone(),
                    what: "waiting for the response".into(),
                    limit: self.timeout,
                })?
                .map_err(|e| self.ul_error(e, "waiting for the response", self.timeout))?;
            match pdu {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type != PDataValueType::Command {
                            continue;
                        }
                        if buf.len() + pdv.data.len() > MAX_COMMAND_SET {
                            return Err(ScuError::Protocol(format!(
                                "response command set over {MAX_COMMAND_SET} bytes"
                            )));
                        }
                        buf.extend_from_slice(&pdv.data);
                        if pdv.is_last {
                            check_command_shape(&buf)?;
                            return Ok(Command::parse(&buf)?);
                        }
                    }
                }
                Pdu::AbortRQ { source } => {
                    return Err(ScuError::Network(format!("peer aborted: {source:?}")))
                }
                other => return Err(ScuError::Protocol(other.short_description().to_string())),
            }
        }
    }

    /// Releases the association gracefully (A-RELEASE-RQ, then the RP), within twice the floor.
    pub async fn release(self) -> Result<(), ScuError> {
        let limit = self.timeout.saturating_mul(2);
        tokio::time::timeout(limit, self.assoc.release())
            .await
            .map_err(|_| ScuError::Timeout {
                addr: self.address,
                what: "releasing the association".into(),
                limit,
            })?
            .map_err(|e| ScuError::Network(e.to_string()))
    }

    /// Aborts the association; bounded by the floor, since a peer that stops reading would
    /// otherwise hold even the A-ABORT write.
    pub async fn abort(self) {
        let _ = tokio::time::timeout(self.timeout, self.assoc.abort()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::{read_pdu, write_pdu, AssociationAC, PresentationContextResult, UserVariableItem};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const MG: &str = crate::MG_FOR_PRESENTATION;

    /// A peer that reads the A-ASSOCIATE-RQ, accepts every context (with `ts`, or the first
    /// proposed syntax) and then never reads again, keeping the socket open: a stalled PACS.
    async fn stalled_acceptor(ts: Option<&'static str>) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut header = [0u8; 6];
            sock.read_exact(&mut header).await.unwrap();
            let len = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
            let mut pdu = header.to_vec();
            pdu.resize(6 + len, 0);
            sock.read_exact(&mut pdu[6..]).await.unwrap();
            let Some(Pdu::AssociationRQ(rq)) = read_pdu(&pdu[..], 1 << 20, false).unwrap() else {
                panic!("expected an A-ASSOCIATE-RQ");
            };
            let ac = Pdu::AssociationAC(AssociationAC {
                protocol_version: rq.protocol_version,
                calling_ae_title: rq.calling_ae_title,
                called_ae_title: rq.called_ae_title,
                application_context_name: rq.application_context_name,
                presentation_contexts: rq
                    .presentation_contexts
                    .iter()
                    .map(|pc| PresentationContextResult {
                        id: pc.id,
                        reason: PresentationContextResultReason::Acceptance,
                        transfer_syntax: ts
                            .map(str::to_string)
                            .unwrap_or_else(|| pc.transfer_syntaxes[0].clone()),
                    })
                    .collect(),
                user_variables: vec![UserVariableItem::MaxLength(16384)],
            });
            let mut out = Vec::new();
            write_pdu(&mut out, &ac).unwrap();
            sock.write_all(&out).await.unwrap();
            // Hold the connection without reading until the test ends.
            std::future::pending::<()>().await;
            drop(sock);
        });
        (addr, task)
    }

    fn options(addr: &str, timeout: Duration, min_bytes_per_s: u64) -> StoreScuOptions {
        StoreScuOptions {
            calling_ae_title: "VCNODE".into(),
            called_ae_title: "STALLED".into(),
            address: addr.into(),
            presentation_contexts: vec![(
                MG.into(),
                vec![crate::EXPLICIT_VR_LE.into(), crate::IMPLICIT_VR_LE.into()],
            )],
            max_pdu_length: 16384,
            timeout,
            min_bytes_per_s,
            tls: None,
        }
    }

    #[test]
    fn transfer_timeout_grows_with_the_payload() {
        let floor = Duration::from_secs(2);
        assert_eq!(transfer_timeout(floor, 0, 1 << 30), floor);
        assert_eq!(transfer_timeout(floor, 1_000_000, 0), floor);
        assert_eq!(
            transfer_timeout(floor, 1_000_000, 5_000_000),
            Duration::from_secs(7)
        );
        assert_eq!(transfer_timeout(Duration::MAX, 1, usize::MAX), Duration::MAX);
    }

    #[test]
    fn command_sets_with_foreign_or_undefined_length_elements_are_refused() {
        let ok = command::response(command::C_STORE_RQ, 1, Some(MG), Some("1.2.3"), 0, Some("fine")).unwrap();
        assert!(check_command_shape(&ok).is_ok());
        // (0008,1199) Referenced SOP Sequence, undefined length, nested items: never a command.
        let mut nested = ok.clone();
        nested.extend_from_slice(&[0x08, 0x00, 0x99, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(check_command_shape(&nested).is_err());
        let mut undefined = ok.clone();
        undefined.extend_from_slice(&[0x00, 0x00, 0x00, 0x09, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(check_command_shape(&undefined).is_err());
        let mut past_end = ok.clone();
        past_end.extend_from_slice(&[0x00, 0x00, 0x00, 0x09, 0x10, 0x00, 0x00, 0x00, 1, 2]);
        assert!(check_command_shape(&past_end).is_err());
        assert!(check_command_shape(&ok[..ok.len() - 3]).is_err());
    }

    #[tokio::test]
    async fn a_transfer_syntax_that_was_not_proposed_is_an_error_not_a_panic() {
        // JPEG Baseline: a real syntax, but not one we proposed or can write.
        let (addr, peer) = stalled_acceptor(Some("1.2.840.10008.1.2.4.50")).await;
        let mut scu = StoreScu::connect(&options(&addr, Duration::from_secs(5), 0))
            .await
            .unwrap();
        let err = scu.usable_context(MG).unwrap_err();
        assert!(matches!(err, ScuError::UnexpectedTransferSyntax { .. }), "{err}");
        let err = scu.store(MG, "1.2.3", b"x").await.unwrap_err();
        assert!(matches!(err, ScuError::UnexpectedTransferSyntax { .. }), "{err}");
        peer.abort();
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_the_store_out() {
        let (addr, peer) = stalled_acceptor(None).await;
        let timeout = Duration::from_millis(500);
        let mut scu = StoreScu::connect(&options(&addr, timeout, 10_000_000))
            .await
            .unwrap();
        assert_eq!(scu.usable_context(MG).unwrap().1, crate::EXPLICIT_VR_LE);
        // More than loopback's socket buffers hold, so the write itself stalls.
        let dataset = vec![0u8; 64 << 20];
        // The outer bound only turns a hang (no time limit) into a failure.
        let err = tokio::time::timeout(Duration::from_secs(60), scu.store(MG, "1.2.3", &dataset))
            .await
            .expect("the store's own time limit ends it")
            .unwrap_err();
        match &err {
            ScuError::Timeout { what, limit, .. } => {
                assert!(what.contains("data set"), "{err}");
                // One PDU without progress, or the whole data set, whichever ends first.
                assert!(
                    *limit <= transfer_timeout(timeout, 10_000_000, dataset.len()),
                    "{err}"
                );
            }
            other => panic!("expected a timeout, got {other}"),
        }
        assert!(err.to_string().contains("timed out"), "{err}");
        peer.abort();
    }
}
