//! Accepting and serving connections, with the limits a hostile or broken
//! client runs into: at most `max_connections` open at once, and a
//! connection that does not finish a request's headers in time is closed.
//!
//! Built on hyper's HTTP/1 connection (`header_read_timeout`, a bounded read
//! buffer) and hyper-util's graceful shutdown; the request timeout and the
//! body limit are the router's ([`crate::api`]).
//!
//! hyper starts the header-read timer when a connection opens and again
//! each time it goes idle after an answer, so the same timeout also closes
//! idle keep-alive connections: there is no separate idle timeout to set.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Default `--header-read-timeout-secs`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default `--max-connections`: a few thousand, below common open-file
/// limits, so the limit binds before `accept` fails for want of descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// hyper's read buffer per connection, so the largest request head: a
/// slow client cannot make the server hold more than this for it. hyper's
/// own default (~400 KiB) would let 2,000 of them hold 800 MiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Pending connections the kernel queues for `accept` (it caps this at
/// `net.core.somaxconn`). tokio's default, 1024, overflows when a few
/// thousand sidecars reconnect at once, and each dropped SYN costs its
/// client a second or more.
const LISTEN_BACKLOG: u32 = 4096;
/// Pause after `accept` fails (out of descriptors, mostly): retrying at
/// once would spin while nothing has been freed.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The connection-level limits, as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time from a connection's opening, or its previous answer, to the end
    /// of the next request's headers; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Connections open at once; more are accepted and closed at once.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `TcpListener::bind` sets it, so a restart can bind at once).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `stop` completes, then stops accepting
/// and waits for the open connections to finish their requests (idle ones
/// close at once). The caller bounds that wait (the drain timeout).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    // `Semaphore::new` panics past `MAX_PERMITS`; the CLI bounds it far lower.
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    let mut stop = std::pin::pin!(stop);
    // Set while connections are refused, so the log says so once per
    // episode, not once per connection.
    let mut refusing = false;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Closing at once frees the descriptor and tells the client,
            // where not accepting would leave it waiting in the backlog.
            drop(stream);
            metrics.connection_refused();
            if !refusing {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    "connection limit reached: refusing new connections"
                );
                refusing = true;
            }
            continue;
        };
        refusing = false;
        let open = OpenConnection::new(Arc::clone(&metrics));
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let result = conn.await;
            // A header timeout or a client that went away mid-request is
            // the client's problem, not the server's: counted, not logged
            // above debug.
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection closed with an error");
                if e.is_timeout() {
                    open.metrics.connection_timed_out();
                }
            }
            drop(open);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Counts a connection open while it lives.
struct OpenConnection {
    metrics: Arc<Metrics>,
}

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connection_opened();
        OpenConnection { metrics }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}
