//! HTTPS on the HTTP port (`node.http_tls`): a listener for `axum::serve` that hands over
//! connections once their TLS handshake is done, so the one server (its routes, graceful
//! shutdown, connect info) serves HTTP and HTTPS alike.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tracing::debug;
use vcnode_scp::tls::TlsAcceptor;

/// How long a client may take over its handshake. Handshakes run beside the accept loop, so a
/// slow or silent client holds only its own connection, and only this long.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Connections whose handshake is done and not yet taken by the server; beyond that the accept
/// loop waits (the kernel's backlog holds the rest).
const READY_QUEUE: usize = 64;

/// TLS connections on a TCP listener, handshaken in their own tasks.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    /// The accept loop: it ends with the listener (when the server stops).
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: as axum's own listener does,
                        // wait a moment rather than spin.
                        debug!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        // Plain HTTP to this port, an untrusting client, a scanner: the
                        // connection ends here and the server never sees it.
                        Ok(Err(e)) => debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => debug!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop holds a sender until it is aborted on drop, so this is not
            // reached while the listener lives; wait for shutdown rather than end the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}
