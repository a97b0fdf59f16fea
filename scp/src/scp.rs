//! The storage SCP: association acceptance and the C-ECHO / C-STORE service loop, with every
//! resource a peer can make it spend bounded.
//!
//! - A connection first counts against `max_pending` (negotiating connections, each under the
//!   ARTIM timer); when they are all taken, the oldest still-negotiating one is dropped, so
//!   silent connections cannot lock modalities out. An association slot is taken only once the
//!   A-ASSOCIATE-RQ has been read and its AE titles accepted. On a DICOM TLS port
//!   ([`Transport::Tls`]) the TLS handshake comes first, as part of negotiating: it holds a
//!   negotiating slot, not an association slot, and ARTIM bounds handshake and request together.
//! - Every PDU is length-checked before its body is read ([`crate::pdu`]) and must arrive whole
//!   within `idle_timeout`; an association ends after `association_lifetime` whatever it does.
//! - Data sets stream to a spool file in `spool_dir` as fragments arrive, up to
//!   `max_data_set_bytes`; the handler gets the file, not a buffer. Command sets are capped at
//!   [`crate::reassembly::MAX_COMMAND_BYTES`] and must be flat ([`Command::parse`]).
//!
//! Memory per association is therefore about three times `max_pdu_length` (the PDU read
//! buffer, dicom-ul's decoded copy, the fragment being written) plus the 64 KiB spool buffer
//! and the 16 KiB command cap; a connection still negotiating holds at most 64 KiB. A DICOM TLS
//! connection adds rustls' buffers (a few TLS records of at most 16 KiB each).

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationAC, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason, AssociationRJSource,
    PDataValueType, PresentationContextResult, PresentationContextResultReason, UserVariableItem,
};
use dicom_ul::Pdu;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::command::{self, Command};
use crate::pdu::{self, PduError, MAX_NEGOTIATION_PDU};
use crate::reassembly::{Event, Reassembly};
use crate::tls::TlsAcceptor;
use crate::{status, trim_value};

/// DICOM Application Context Name (PS3.7 A.2.1).
const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

/// An application entity allowed to send to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ae_title: String,
    /// When set, associations from this AE title are accepted only from this address.
    pub host: Option<IpAddr>,
}

/// The peers allowed to associate, shared with whoever edits them (the node's admin API): each
/// association request reads the list as it is at that moment, so a peer added is accepted at
/// once and one removed cannot start a new association; associations in progress are not
/// touched. Lock-free reads (arc-swap), as every request takes one.
pub type PeerList = Arc<arc_swap::ArcSwap<Vec<Peer>>>;

/// A [`PeerList`] that starts with `peers`.
pub fn peer_list(peers: Vec<Peer>) -> PeerList {
    Arc::new(arc_swap::ArcSwap::from_pointee(peers))
}

/// What the SCP accepts, how long it waits and how much it holds.
#[derive(Debug, Clone)]
pub struct ScpConfig {
    /// This node's AE title; a request calling another title is rejected.
    pub ae_title: String,
    /// Who may send. An unknown calling AE title, or a known one from another host, is rejected.
    /// Read at each association request ([`PeerList`]).
    pub peers: PeerList,
    /// Storage SOP classes accepted at negotiation (Verification is always accepted).
    pub storage_sop_classes: Vec<String>,
    /// Transfer syntaxes accepted at negotiation; of those a context proposes, the first
    /// proposed that is in this list is chosen.
    pub transfer_syntaxes: Vec<String>,
    /// Concurrent associations; beyond it a request gets a transient A-ASSOCIATE-RJ.
    pub max_associations: usize,
    /// Connections still negotiating (before their A-ASSOCIATE-RQ is read and accepted).
    pub max_pending: usize,
    /// The largest PDU this node receives (announced in A-ASSOCIATE-AC, enforced on every read).
    pub max_pdu_length: u32,
    /// ARTIM: how long a new connection may take to complete association negotiation.
    pub artim_timeout: Duration,
    /// How long one PDU may take to arrive, counted from the end of the previous one.
    pub idle_timeout: Duration,
    /// The longest an association may last, however active.
    pub association_lifetime: Duration,
    /// The largest data set accepted; a larger one aborts the association.
    pub max_data_set_bytes: u64,
    /// Where data sets are spooled while they arrive (the handler's file system, so that it
    /// can copy or rename them cheaply).
    pub spool_dir: PathBuf,
    pub implementation_class_uid: String,
    pub implementation_version_name: String,
}

/// A data set received into a spool file, removed when this is dropped.
#[derive(Debug)]
pub struct SpooledDataSet {
    path: PathBuf,
    len: u64,
}

/// The suffix of spool files, so a start-up sweep can tell them from anything else.
pub const SPOOL_SUFFIX: &str = "rx";

impl SpooledDataSet {
    /// Takes over a file holding a data set (as received, in its transfer syntax): it is
    /// removed when this is dropped.
    pub fn adopt(path: PathBuf) -> std::io::Result<Self> {
        let len = std::fs::metadata(&path)?.len();
        Ok(SpooledDataSet { path, len })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SpooledDataSet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One data set received by C-STORE, in its negotiated transfer syntax.
#[derive(Debug)]
pub struct ReceivedInstance {
    pub calling_ae_title: String,
    pub peer_addr: SocketAddr,
    /// Affected SOP Class UID of the C-STORE-RQ (equal to the presentation context's).
    pub sop_class_uid: String,
    /// Affected SOP Instance UID of the C-STORE-RQ, not yet validated.
    pub sop_instance_uid: String,
    pub transfer_syntax: String,
    pub dataset: SpooledDataSet,
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

/// Why the SCP turned a connection away before (or instead of) an association.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The called AE title is not this node's (A-ASSOCIATE-RJ).
    CalledAeTitle,
    /// The calling AE title is not a peer, or not from the peer's host (A-ASSOCIATE-RJ).
    CallingAeTitle,
    /// `max_associations` are in progress (transient A-ASSOCIATE-RJ).
    AssociationLimit,
    /// An unsupported protocol version or application context (A-ASSOCIATE-RJ).
    Unsupported,
    /// Something other than a readable A-ASSOCIATE-RQ (A-ABORT).
    Malformed,
    /// No A-ASSOCIATE-RQ within the ARTIM timeout.
    ArtimTimeout,
    /// Dropped while negotiating to make room for a newer connection (`max_pending`).
    TooManyNegotiating,
    /// The DICOM TLS handshake failed: not TLS at all, or a client certificate missing or not
    /// from the configured CA.
    TlsHandshake,
}

impl Rejection {
    /// A short stable name (a metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::CalledAeTitle => "called_ae_title",
            Rejection::CallingAeTitle => "calling_ae_title",
            Rejection::AssociationLimit => "association_limit",
            Rejection::Unsupported => "unsupported",
            Rejection::Malformed => "malformed",
            Rejection::ArtimTimeout => "artim_timeout",
            Rejection::TooManyNegotiating => "too_many_negotiating",
            Rejection::TlsHandshake => "tls_handshake",
        }
    }
}

/// Told of each association as it starts and ends and of each connection turned away, so the
/// node can count them (its metrics) without this crate knowing how they are exported.
/// Calls are made on the SCP's tasks: they must be quick and must not block.
pub trait AssociationObserver: Send + Sync + 'static {
    /// An association from `calling_ae` (a configured peer) was accepted.
    fn accepted(&self, calling_ae: &str);
    /// An accepted association from `calling_ae` ended, however it ended.
    fn ended(&self, calling_ae: &str);
    /// A connection was turned away. The calling AE title is not given: it is whatever the
    /// peer chose to send.
    fn rejected(&self, reason: Rejection);
}

/// The observer of an SCP nobody watches.
struct Unobserved;

impl AssociationObserver for Unobserved {
    fn accepted(&self, _: &str) {}
    fn ended(&self, _: &str) {}
    fn rejected(&self, _: Rejection) {}
}

/// Calls [`AssociationObserver::ended`] when dropped, so an association that ends by a panic
/// or by the drain timeout's abort is counted as ended too.
struct EndGuard {
    observer: Arc<dyn AssociationObserver>,
    calling: String,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.observer.ended(&self.calling);
    }
}

/// A storage SCP bound to a handler.
pub struct StorageScp<H> {
    config: Arc<ScpConfig>,
    handler: Arc<H>,
    observer: Arc<dyn AssociationObserver>,
}

/// How long a shutdown waits for associations in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the node waits to hand a peer an A-ABORT or A-ASSOCIATE-RJ it may not read.
const COURTESY_TIMEOUT: Duration = Duration::from_secs(2);

impl<H: StoreHandler> StorageScp<H> {
    pub fn new(config: ScpConfig, handler: Arc<H>) -> Self {
        StorageScp {
            config: Arc::new(config),
            handler,
            observer: Arc::new(Unobserved),
        }
    }

    /// Reports associations and rejections to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn AssociationObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Serves associations from `listener` (plain DIMSE) until `shutdown` resolves, then stops
    /// accepting, drops connections still negotiating and lets the associations in progress
    /// finish (up to a drain timeout).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        self.serve_listeners(vec![ScpListener::plain(listener)], shutdown)
            .await
    }

    /// As [`StorageScp::serve`], on several ports at once (plain DIMSE and DICOM TLS): they
    /// share the association slots and the negotiating-connection cap, so a second port does
    /// not double what peers can make the node hold.
    pub async fn serve_listeners(
        self,
        listeners: Vec<ScpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let slots = Arc::new(Semaphore::new(self.config.max_associations));
        let pending_slots = Arc::new(Semaphore::new(self.config.max_pending.max(1)));
        // Negotiating connections, oldest first; a token is cancelled once its connection has
        // negotiated (or is evicted, or ends).
        let mut negotiating: VecDeque<CancellationToken> = VecDeque::new();
        let stop_negotiating = CancellationToken::new();
        let mut running = JoinSet::new();
        // Where the next accept starts looking, so a flood on one port cannot starve another.
        let mut first = 0usize;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                (door, accepted) = accept_any(&listeners, &mut first), if !listeners.is_empty() => {
                    let (socket, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // e.g. EMFILE: keep serving, the condition is usually transient.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // ARTIM runs from the connection: a TLS handshake spends from it too.
                    let deadline = Instant::now() + self.config.artim_timeout;
                    let _ = socket.set_nodelay(true);
                    negotiating.retain(|t| !t.is_cancelled());
                    let pending = match pending_slots.clone().try_acquire_owned() {
                        Ok(p) => p,
                        Err(_) => {
                            // Every negotiating slot is held: drop the oldest, which has had
                            // the longest to send its request. A silent flood then only
                            // delays, never locks out, a modality that speaks promptly.
                            if let Some(oldest) = negotiating.pop_front() {
                                warn!(%peer, limit = self.config.max_pending, "too many connections negotiating; dropping the oldest");
                                oldest.cancel();
                                self.observer.rejected(Rejection::TooManyNegotiating);
                            }
                            match tokio::time::timeout(COURTESY_TIMEOUT, pending_slots.clone().acquire_owned()).await {
                                Ok(Ok(p)) => p,
                                _ => continue,
                            }
                        }
                    };
                    let token = stop_negotiating.child_token();
                    negotiating.push_back(token.clone());
                    let connection = Connection {
                        peer,
                        deadline,
                        pending: Pending { token, _permit: pending },
                        config: self.config.clone(),
                        handler: self.handler.clone(),
                        slots: slots.clone(),
                        observer: self.observer.clone(),
                    };
                    let transport = listeners[door].transport.clone();
                    running.spawn(async move {
                        match transport {
                            Transport::Plain => connection.run(socket, false).await,
                            Transport::Tls(acceptor) => {
                                let token = connection.pending.token.clone();
                                let secured = tokio::select! {
                                    _ = token.cancelled() => None,
                                    s = handshake(&acceptor, socket, peer, deadline, &*connection.observer) => s,
                                };
                                if let Some(stream) = secured {
                                    connection.run(stream, true).await;
                                }
                            }
                        }
                    });
                }
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        stop_negotiating.cancel();
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

/// How a port's connections carry DIMSE.
#[derive(Clone)]
pub enum Transport {
    /// TCP as it is (PS3.8).
    Plain,
    /// DICOM TLS (PS3.15 B.1): the TLS handshake comes first, within ARTIM.
    Tls(TlsAcceptor),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Plain => "Plain",
            Transport::Tls(_) => "Tls",
        })
    }
}

/// A listening port of the SCP and how its connections carry DIMSE.
#[derive(Debug)]
pub struct ScpListener {
    pub listener: TcpListener,
    pub transport: Transport,
}

impl ScpListener {
    pub fn plain(listener: TcpListener) -> Self {
        ScpListener {
            listener,
            transport: Transport::Plain,
        }
    }
    pub fn tls(listener: TcpListener, acceptor: TlsAcceptor) -> Self {
        ScpListener {
            listener,
            transport: Transport::Tls(acceptor),
        }
    }
}

/// The next connection on any of `listeners` (with the index of its listener), looking first
/// at `*first` and moving that on, so that every port gets its turn.
async fn accept_any(
    listeners: &[ScpListener],
    first: &mut usize,
) -> (usize, std::io::Result<(TcpStream, SocketAddr)>) {
    let n = listeners.len();
    let (door, accepted) = std::future::poll_fn(|cx| {
        for k in 0..n {
            let i = (*first + k) % n;
            if let std::task::Poll::Ready(r) = listeners[i].listener.poll_accept(cx) {
                return std::task::Poll::Ready((i, r));
            }
        }
        std::task::Poll::Pending
    })
    .await;
    *first = (door + 1) % n;
    (door, accepted)
}

/// A connection's place among those negotiating; given up (and its token cancelled, so the
/// accept loop forgets it) when dropped.
struct Pending {
    token: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A connection from accept to the end of its association.
struct Connection<H> {
    peer: SocketAddr,
    /// ARTIM: negotiation (a TLS handshake included) must be over by then.
    deadline: Instant,
    pending: Pending,
    config: Arc<ScpConfig>,
    handler: Arc<H>,
    slots: Arc<Semaphore>,
    observer: Arc<dyn AssociationObserver>,
}

impl<H: StoreHandler> Connection<H> {
    async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(self, stream: S, tls: bool) {
        let Connection {
            peer,
            deadline,
            pending,
            config,
            handler,
            slots,
            observer,
        } = self;
        let established = tokio::select! {
            _ = pending.token.cancelled() => None,
            r = negotiate(stream, peer, deadline, tls, &config, &slots, &*observer) => r,
        };
        drop(pending);
        if let Some(assoc) = established {
            observer.accepted(&assoc.calling);
            let _ended = EndGuard {
                observer: observer.clone(),
                calling: assoc.calling.clone(),
            };
            serve_association(assoc, &config, &*handler).await;
        }
    }
}

/// The server side of the TLS handshake, before `deadline`. None when it fails (logged at
/// warn: rustls' error names what went wrong, e.g. an unknown issuer, never key material).
async fn handshake(
    acceptor: &TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    observer: &dyn AssociationObserver,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout_at(deadline, acceptor.accept(socket)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            observer.rejected(Rejection::TlsHandshake);
            warn!(%peer, error = %e, "DICOM TLS handshake failed");
            None
        }
        Err(_) => {
            observer.rejected(Rejection::ArtimTimeout);
            warn!(%peer, "DICOM TLS handshake timed out (ARTIM)");
            None
        }
    }
}

/// An accepted association, holding its slot.
struct Established<S> {
    socket: S,
    peer: SocketAddr,
    calling: String,
    /// (id, abstract syntax, transfer syntax) of the accepted contexts.
    accepted: Vec<(u8, String, String)>,
    _slot: OwnedSemaphorePermit,
}

/// AE title policy: called title must be ours, calling title must be a configured peer,
/// from its configured host when it has one.
fn check_access(
    config: &ScpConfig,
    from: IpAddr,
    calling: &str,
    called: &str,
) -> Result<(), AssociationRJServiceUserReason> {
    if trim_value(called) != config.ae_title {
        return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
    }
    let calling = trim_value(calling);
    let from = from.to_canonical();
    let allowed = config
        .peers
        .load()
        .iter()
        .any(|p| p.ae_title == calling && p.host.is_none_or(|h| h.to_canonical() == from));
    if allowed {
        Ok(())
    } else {
        Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized)
    }
}

fn rejection(result: AssociationRJResult, source: AssociationRJSource) -> Pdu {
    Pdu::AssociationRJ(AssociationRJ { result, source })
}

fn abort_pdu(reason: AbortRQServiceProviderReason) -> Pdu {
    Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(reason),
    }
}

/// Sends `pdu` (a rejection or an abort) if the peer takes it promptly, then waits a moment for
/// the peer to close first, as PS3.8 has the acceptor do after either (state Sta13, under
/// ARTIM), and closes. Closing at once can cost the peer the PDU: a TLS peer (pynetdicom) may
/// see the stream end before it reads the A-ASSOCIATE-RJ and report an abort instead of the
/// reason, and bytes left unread on our side turn the close into a reset.
async fn send_and_close<S: AsyncRead + AsyncWrite + Unpin>(socket: &mut S, pdu: &Pdu) {
    if pdu::write(socket, pdu, COURTESY_TIMEOUT).await.is_ok() {
        let mut scratch = [0u8; 512];
        let _ = tokio::time::timeout(COURTESY_TIMEOUT, async {
            while matches!(socket.read(&mut scratch).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    let _ = tokio::time::timeout(COURTESY_TIMEOUT, socket.shutdown()).await;
}

/// Reads the A-ASSOCIATE-RQ under ARTIM, checks it, takes a slot and answers. None when the
/// connection ends here (rejected, aborted, silent, malformed).
async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    mut socket: S,
    peer: SocketAddr,
    deadline: Instant,
    tls: bool,
    config: &ScpConfig,
    slots: &Arc<Semaphore>,
    observer: &dyn AssociationObserver,
) -> Option<Established<S>> {
    let mut buf = Vec::new();
    let rq = match pdu::read_bounded(&mut socket, &mut buf, |_| MAX_NEGOTIATION_PDU, deadline).await {
        Ok(Pdu::AssociationRQ(rq)) => rq,
        Ok(other) => {
            observer.rejected(Rejection::Malformed);
            warn!(%peer, pdu = %other.short_description(), "expected an A-ASSOCIATE-RQ; aborting");
            send_and_close(
                &mut socket,
                &abort_pdu(AbortRQServiceProviderReason::UnexpectedPdu),
            )
            .await;
            return None;
        }
        Err(PduError::Timeout) => {
            observer.rejected(Rejection::ArtimTimeout);
            warn!(%peer, "association request timed out (ARTIM)");
            return None;
        }
        Err(PduError::Closed) => return None,
        Err(e) => {
            observer.rejected(Rejection::Malformed);
            warn!(%peer, error = %e, "association request refused");
            send_and_close(
                &mut socket,
                &abort_pdu(AbortRQServiceProviderReason::UnrecognizedPduParameter),
            )
            .await;
            return None;
        }
    };
    let permanent = |reason| {
        rejection(
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(reason),
        )
    };
    if rq.protocol_version & 1 == 0 {
        observer.rejected(Rejection::Unsupported);
        send_and_close(
            &mut socket,
            &permanent(AssociationRJServiceUserReason::NoReasonGiven),
        )
        .await;
        return None;
    }
    if trim_value(&rq.application_context_name) != APPLICATION_CONTEXT {
        observer.rejected(Rejection::Unsupported);
        send_and_close(
            &mut socket,
            &permanent(AssociationRJServiceUserReason::ApplicationContextNameNotSupported),
        )
        .await;
        return None;
    }
    if let Err(reason) = check_access(config, peer.ip(), &rq.calling_ae_title, &rq.called_ae_title) {
        observer.rejected(match reason {
            AssociationRJServiceUserReason::CalledAETitleNotRecognized => Rejection::CalledAeTitle,
            _ => Rejection::CallingAeTitle,
        });
        warn!(%peer, calling_ae = %trim_value(&rq.calling_ae_title), ?reason, "association rejected");
        send_and_close(&mut socket, &permanent(reason)).await;
        return None;
    }
    let Ok(slot) = slots.clone().try_acquire_owned() else {
        observer.rejected(Rejection::AssociationLimit);
        warn!(%peer, limit = config.max_associations, "association limit reached, rejecting (transient)");
        let busy = rejection(
            AssociationRJResult::Transient,
            AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        );
        send_and_close(&mut socket, &busy).await;
        return None;
    };
    let mut accepted = Vec::new();
    let results = rq
        .presentation_contexts
        .iter()
        .map(|pc| {
            let abstract_syntax = trim_value(&pc.abstract_syntax);
            let supported = abstract_syntax == crate::VERIFICATION
                || config.storage_sop_classes.iter().any(|c| c == abstract_syntax);
            let chosen = pc
                .transfer_syntaxes
                .iter()
                .map(|ts| trim_value(ts))
                .find(|ts| config.transfer_syntaxes.iter().any(|ours| ours == ts));
            let (reason, ts) = match (supported, chosen) {
                (false, _) => (
                    PresentationContextResultReason::AbstractSyntaxNotSupported,
                    crate::IMPLICIT_VR_LE,
                ),
                (true, None) => (
                    PresentationContextResultReason::TransferSyntaxesNotSupported,
                    crate::IMPLICIT_VR_LE,
                ),
                (true, Some(ts)) => {
                    accepted.push((pc.id, abstract_syntax.to_string(), ts.to_string()));
                    (PresentationContextResultReason::Acceptance, ts)
                }
            };
            PresentationContextResult {
                id: pc.id,
                reason,
                transfer_syntax: ts.to_string(),
            }
        })
        .collect();
    let ac = Pdu::AssociationAC(AssociationAC {
        protocol_version: 1,
        calling_ae_title: rq.calling_ae_title.clone(),
        called_ae_title: rq.called_ae_title.clone(),
        application_context_name: APPLICATION_CONTEXT.to_string(),
        presentation_contexts: results,
        user_variables: vec![
            UserVariableItem::MaxLength(config.max_pdu_length),
            UserVariableItem::ImplementationClassUID(config.implementation_class_uid.clone()),
            UserVariableItem::ImplementationVersionName(config.implementation_version_name.clone()),
        ],
    });
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(COURTESY_TIMEOUT);
    if let Err(e) = pdu::write(&mut socket, &ac, remaining).await {
        warn!(%peer, error = %e, "could not send the A-ASSOCIATE-AC");
        return None;
    }
    let calling = trim_value(&rq.calling_ae_title).to_string();
    info!(
        %peer, calling_ae = %calling, tls,
        accepted = accepted.len(),
        rejected = rq.presentation_contexts.len() - accepted.len(),
        "association accepted"
    );
    debug!(contexts = ?accepted, "accepted presentation contexts");
    Some(Established {
        socket,
        peer,
        calling,
        accepted,
        _slot: slot,
    })
}

/// Tallies for the per-association log line.
#[derive(Default)]
struct Tally {
    stored: u32,
    failed: u32,
    echoes: u32,
    bytes: u64,
}

/// The data set being received: its C-STORE-RQ, and the spool file unless it is discarded.
struct Incoming {
    cmd: Command,
    pc_id: u8,
    file: Option<BufWriter<tokio::fs::File>>,
    spooled: Option<SpooledDataSet>,
    /// A write to the spool failed: the data set is drained and refused.
    write_error: Option<std::io::Error>,
}

/// Small PDVs are gathered into writes of this size: a peer sending one-byte fragments must not
/// cost the node a system call per byte.
const SPOOL_BUFFER: usize = 64 * 1024;

async fn open_spool(dir: &Path) -> std::io::Result<(BufWriter<tokio::fs::File>, SpooledDataSet)> {
    let path = dir.join(format!("{}.{SPOOL_SUFFIX}", uuid::Uuid::new_v4().simple()));
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await?;
    Ok((
        BufWriter::with_capacity(SPOOL_BUFFER, file),
        SpooledDataSet { path, len: 0 },
    ))
}

/// Why an association ended.
enum Ending {
    Released,
    AbortedByPeer,
    Closed(String),
    /// The node aborts: the reason, and the A-ABORT reason to send.
    Abort(String, AbortRQServiceProviderReason),
}

async fn serve_association<S, H>(assoc: Established<S>, config: &ScpConfig, handler: &H)
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: StoreHandler,
{
    let Established {
        mut socket,
        peer,
        calling,
        accepted,
        _slot,
    } = assoc;
    let started = Instant::now();
    let end_of_life = started + config.association_lifetime;
    let mut tally = Tally::default();
    let mut buf = Vec::new();
    let mut reassembly = Reassembly::new(config.max_data_set_bytes);
    let mut incoming: Option<Incoming> = None;
    let max_pdu = config.max_pdu_length;
    let ending = 'assoc: loop {
        let deadline = (Instant::now() + config.idle_timeout).min(end_of_life);
        let pdu =
            match pdu::read_bounded(&mut socket, &mut buf, |t| pdu::limit_for(t, max_pdu), deadline).await {
                Ok(pdu) => pdu,
                Err(PduError::Timeout) if Instant::now() >= end_of_life => {
                    break Ending::Abort(
                        "association lifetime exceeded".into(),
                        AbortRQServiceProviderReason::ReasonNotSpecified,
                    )
                }
                Err(PduError::Timeout) => {
                    break Ending::Abort(
                        "idle: no complete PDU in time".into(),
                        AbortRQServiceProviderReason::ReasonNotSpecified,
                    )
                }
                Err(e @ PduError::TooLarge { .. }) => {
                    break Ending::Abort(
                        e.to_string(),
                        AbortRQServiceProviderReason::UnrecognizedPduParameter,
                    )
                }
                Err(e @ PduError::Malformed(_)) => {
                    break Ending::Abort(e.to_string(), AbortRQServiceProviderReason::UnrecognizedPdu)
                }
                Err(e) => break Ending::Closed(e.to_string()),
            };
        let data = match pdu {
            Pdu::PData { data } => data,
            Pdu::ReleaseRQ => {
                let _ = pdu::write(&mut socket, &Pdu::ReleaseRP, config.idle_timeout).await;
                // On TLS this sends close_notify, so the peer can tell the end from a cut. Not
                // send_and_close's wait for the peer to close: this association still holds its
                // slot, and a peer that keeps its socket open after the RP would hold it too.
                let _ = tokio::time::timeout(COURTESY_TIMEOUT, socket.shutdown()).await;
                break Ending::Released;
            }
            Pdu::AbortRQ { .. } => break Ending::AbortedByPeer,
            other => {
                break Ending::Abort(
                    format!("unexpected PDU {}", other.short_description()),
                    AbortRQServiceProviderReason::UnexpectedPdu,
                )
            }
        };
        for pdv in data {
            let events = match reassembly.push(pdv) {
                Ok(events) => events,
                Err(e) => {
                    break 'assoc Ending::Abort(
                        e.to_string(),
                        AbortRQServiceProviderReason::UnexpectedPduParameter,
                    )
                }
            };
            for event in events {
                match event {
                    Event::Command { pc_id, bytes } => {
                        let cmd = match Command::parse(&bytes) {
                            Ok(c) => c,
                            Err(e) => {
                                break 'assoc Ending::Abort(
                                    format!("unreadable command set: {e}"),
                                    AbortRQServiceProviderReason::UnexpectedPduParameter,
                                )
                            }
                        };
                        let reply = match cmd.field {
                            command::C_ECHO_RQ => {
                                tally.echoes += 1;
                                Some(command::c_echo_rsp(cmd.message_id, status::SUCCESS))
                            }
                            command::C_STORE_RQ if cmd.has_dataset => {
                                let (file, spooled, write_error) = match open_spool(&config.spool_dir).await {
                                    Ok((f, s)) => (Some(f), Some(s), None),
                                    Err(e) => (None, None, Some(e)),
                                };
                                incoming = Some(Incoming {
                                    cmd,
                                    pc_id,
                                    file,
                                    spooled,
                                    write_error,
                                });
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
                            if let Err(e) = send_command(&mut socket, pc_id, reply, config.idle_timeout).await
                            {
                                break 'assoc Ending::Closed(format!("could not send a response: {e}"));
                            }
                        }
                    }
                    Event::DataChunk { bytes, .. } => {
                        // A data set nobody asked to store (no C-STORE-RQ) is drained unread.
                        if let Some(inc) = incoming.as_mut() {
                            if let (Some(file), None) = (inc.file.as_mut(), &inc.write_error) {
                                if let Err(e) = file.write_all(&bytes).await {
                                    inc.write_error = Some(e);
                                }
                            }
                        }
                    }
                    Event::DataEnd { pc_id, total } => {
                        let Some(inc) = incoming.take() else {
                            warn!(%peer, "data set without a C-STORE-RQ; ignored");
                            continue;
                        };
                        tally.bytes += total;
                        let outcome = finish_store(inc, total, &accepted, peer, &calling, handler).await;
                        if outcome.status == status::SUCCESS
                            || status::kind(outcome.status) == status::StatusKind::Warning
                        {
                            tally.stored += 1;
                        } else {
                            tally.failed += 1;
                        }
                        let reply = command::response(
                            command::C_STORE_RQ,
                            outcome.message_id,
                            outcome.sop_class.as_deref(),
                            outcome.sop_instance.as_deref(),
                            outcome.status,
                            outcome.comment.as_deref(),
                        );
                        if let Err(e) = send_command(&mut socket, pc_id, reply, config.idle_timeout).await {
                            break 'assoc Ending::Closed(format!("could not send the C-STORE response: {e}"));
                        }
                    }
                }
            }
        }
    };
    // An unfinished data set's spool file goes with `incoming`.
    drop(incoming);
    let ending = match ending {
        Ending::Released => "released".to_string(),
        Ending::AbortedByPeer => "aborted by peer".to_string(),
        Ending::Closed(why) => format!("ended: {why}"),
        Ending::Abort(why, reason) => {
            warn!(%peer, calling_ae = %calling, reason = %why, "aborting association");
            send_and_close(&mut socket, &abort_pdu(reason)).await;
            format!("aborted: {why}")
        }
    };
    info!(
        %peer, calling_ae = %calling, stored = tally.stored, failed = tally.failed,
        echoes = tally.echoes, bytes = tally.bytes,
        ms = started.elapsed().as_millis() as u64,
        "association {ending}"
    );
}

/// A C-STORE's response fields.
struct StoreReply {
    message_id: u16,
    sop_class: Option<String>,
    sop_instance: Option<String>,
    status: u16,
    comment: Option<String>,
}

/// Closes the spool and hands the data set to the handler (unless the context or the spool
/// says no).
async fn finish_store<H: StoreHandler>(
    inc: Incoming,
    total: u64,
    accepted: &[(u8, String, String)],
    peer: SocketAddr,
    calling: &str,
    handler: &H,
) -> StoreReply {
    let Incoming {
        cmd,
        pc_id,
        file,
        spooled,
        write_error,
    } = inc;
    let reply = |outcome: StoreOutcome| StoreReply {
        message_id: cmd.message_id,
        sop_class: cmd.affected_sop_class_uid.clone(),
        sop_instance: cmd.affected_sop_instance_uid.clone(),
        status: outcome.status,
        comment: outcome.comment,
    };
    let mut write_error = write_error;
    if let (Some(mut f), None) = (file, &write_error) {
        if let Err(e) = f.flush().await {
            write_error = Some(e);
        }
    }
    if let Some(e) = write_error {
        warn!(%peer, error = %e, "could not spool a data set");
        let full = matches!(e.raw_os_error(), Some(28) | Some(122)); // ENOSPC, EDQUOT
        return reply(if full {
            StoreOutcome::failure(status::OUT_OF_RESOURCES, "vcnode disk full")
        } else {
            StoreOutcome::failure(
                status::PROCESSING_FAILURE,
                "vcnode could not receive the data set",
            )
        });
    }
    let Some(mut dataset) = spooled else {
        return reply(StoreOutcome::failure(
            status::PROCESSING_FAILURE,
            "vcnode could not receive the data set",
        ));
    };
    dataset.len = total;
    let Some((_, abstract_syntax, transfer_syntax)) = accepted.iter().find(|(id, _, _)| *id == pc_id) else {
        return reply(StoreOutcome::failure(
            status::SOP_CLASS_NOT_SUPPORTED,
            "presentation context not accepted",
        ));
    };
    let sop_class = cmd.affected_sop_class_uid.clone().unwrap_or_default();
    if *abstract_syntax != sop_class {
        return reply(StoreOutcome::failure(
            status::SOP_CLASS_NOT_SUPPORTED,
            "SOP class does not match the presentation context",
        ));
    }
    let outcome = handler
        .store(ReceivedInstance {
            calling_ae_title: calling.to_string(),
            peer_addr: peer,
            sop_class_uid: sop_class,
            sop_instance_uid: cmd.affected_sop_instance_uid.clone().unwrap_or_default(),
            transfer_syntax: transfer_syntax.clone(),
            dataset,
        })
        .await;
    reply(outcome)
}

async fn send_command<S: AsyncWrite + Unpin>(
    socket: &mut S,
    pc_id: u8,
    reply: Result<Vec<u8>, command::CommandError>,
    timeout: Duration,
) -> Result<(), String> {
    let data = reply.map_err(|e| e.to_string())?;
    let pdu = pdu::pdata(pc_id, PDataValueType::Command, true, data);
    pdu::write(socket, &pdu, timeout).await.map_err(|e| e.to_string())
}
