//! The HTTP listener: what a connection may cost before it has sent a request.
//!
//! `axum::serve` has no header-read timeout, no request timeout and no connection cap, so
//! connections that send half a request and stop (slow-loris) pile up until the process runs
//! out of file descriptors and every tenant's new connections fail. This module serves the
//! same router with hyper's own HTTP/1.1 connection builder (HTTP/1.1 only, as before) and a
//! counting accept loop:
//!
//! - **Header-read timeout** ([`ConnectionSettings::header_read_timeout`]): a connection whose
//!   first request head is not complete within it is closed; hyper applies the same clock to
//!   every later request head on an HTTP/1.1 connection, which also closes idle keep-alive
//!   connections after it (hyper starts that clock when it waits for the next request).
//! - **Request timeout** ([`ConnectionSettings::request_timeout`]): reading the body and
//!   answering must finish within it, else 408 (a slow body holds nothing longer).
//! - **Idle timeout** ([`ConnectionSettings::idle_timeout`]): a connection on which no byte moved
//!   either way for this long is closed (a client that stops reading its answer).
//! - **Connection caps**: at most [`ConnectionSettings::max_connections`] open at once (below
//!   the descriptor limit, checked at start) and [`ConnectionSettings::max_connections_per_address`]
//!   from one client address (IPv6 counted per /64; trusted proxies count only toward the
//!   total). A connection over a cap is closed as soon as it is accepted, so the descriptors
//!   held never exceed the cap and the accept queue keeps moving.
//! - **Eviction at the total cap**: when every place is taken, the oldest connection that has
//!   not yet delivered its first request head is closed to make room for the new one. Many
//!   addresses (or many IPv6 /64s) holding half-sent requests could otherwise fill the total
//!   cap and lock every new client out until the header timeout; a real client sends its head
//!   within milliseconds of connecting, so the oldest such connection is almost always the
//!   flood's.
//!
//! The operator's metrics listener (`--metrics-listen`) runs the same loop with the same
//! timeouts and caps of its own ([`ConnectionSettings::for_metrics`]: at most
//! [`METRICS_MAX_CONNECTIONS`], kept out of the descriptors the API listener may use), so a
//! slow-loris against the metrics port is cut off too and cannot take the process's descriptors.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::ConnectionSettings;
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The key a connection is counted under: the address, IPv4-mapped IPv6 as IPv4, other IPv6
/// by its /64 (one host usually owns the whole /64).
pub fn address_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Counts open connections per address bucket.
#[derive(Debug, Default)]
struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place under the caps; dropping it frees both.
struct Slot {
    _total: OwnedSemaphorePermit,
    address: Option<(Arc<PerAddress>, IpAddr)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((counts, bucket)) = &self.address {
            let mut open = counts.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = open.get_mut(bucket) {
                *count -= 1;
                if *count == 0 {
                    open.remove(bucket);
                }
            }
        }
        metrics::gauge!("bulkhead_http_connections_open").decrement(1.0);
    }
}

/// The caps of one listener.
struct Caps {
    total: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    max_per_address: usize,
    trusted_proxies: Vec<ipnet::IpNet>,
}

impl Caps {
    fn admit(&self, peer: IpAddr) -> Result<Slot, &'static str> {
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| "total")?;
        self.admit_holding(total, peer)
    }

    /// [`Caps::admit`] once a place in the total is held.
    fn admit_holding(
        &self,
        total: OwnedSemaphorePermit,
        peer: IpAddr,
    ) -> Result<Slot, &'static str> {
        let address = if self.trusted_proxies.iter().any(|net| net.contains(&peer)) {
            // Every client of a reverse proxy arrives from its address: only the total applies.
            None
        } else {
            let bucket = address_bucket(peer);
            let mut open = self
                .per_address
                .open
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let count = open.entry(bucket).or_insert(0);
            if *count >= self.max_per_address {
                return Err("address");
            }
            *count += 1;
            Some((self.per_address.clone(), bucket))
        };
        metrics::gauge!("bulkhead_http_connections_open").increment(1.0);
        Ok(Slot {
            _total: total,
            address,
        })
    }
}

/// A connection that has not yet delivered its first request head: the one evicted when the
/// total cap is full.
#[derive(Default)]
struct Unproven {
    /// Set when the first request head has arrived (the connection is no longer evictable).
    first_request: AtomicBool,
    /// Told to close.
    evict: Notify,
}

/// Connections not yet proven by a first request, oldest first (weak: an ended connection's
/// entry is skipped and pruned).
#[derive(Default)]
struct Evictable {
    queue: Mutex<VecDeque<Weak<Unproven>>>,
}

impl Evictable {
    fn push(&self, connection: &Arc<Unproven>, bound: usize) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= bound.saturating_mul(2) {
            queue.retain(|weak| {
                weak.upgrade()
                    .is_some_and(|c| !c.first_request.load(Ordering::Relaxed))
            });
        }
        queue.push_back(Arc::downgrade(connection));
    }

    /// Tells the oldest unproven connection to close; false when there is none.
    fn evict_oldest(&self) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(weak) = queue.pop_front() {
            if let Some(connection) = weak.upgrade() {
                if !connection.first_request.load(Ordering::Relaxed) {
                    connection.evict.notify_one();
                    return true;
                }
            }
        }
        false
    }
}

/// Where connections come from: a TCP listener, or the operator's Unix socket. The same accept
/// loop, caps and timeouts serve both.
pub trait Incoming: Send + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and the address it is counted under.
    fn accept_next(&self) -> impl Future<Output = std::io::Result<(Self::Io, SocketAddr)>> + Send;
    /// The operating-system account of the process at the other end, where the transport
    /// knows it (a Unix socket's peer credentials); `None` for TCP.
    fn peer_account(_io: &Self::Io) -> Option<PeerAccount> {
        None
    }
}

/// The account of a local peer (`SO_PEERCRED`), put into each request's extensions: the
/// operator API treats a socket peer running as the server's own account as the owner
/// (docs/operator-api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAccount {
    /// The peer's user id.
    pub uid: u32,
}

impl Incoming for TcpListener {
    type Io = TcpStream;
    async fn accept_next(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        self.accept().await
    }
}

/// The address every Unix-socket client is counted (and audited) under: a local process has no
/// network address, and all of them share one per-address cap, as one machine would.
pub const LOCAL_PEER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

impl Incoming for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept_next(&self) -> std::io::Result<(tokio::net::UnixStream, SocketAddr)> {
        let (stream, _) = self.accept().await?;
        Ok((stream, LOCAL_PEER))
    }
    fn peer_account(io: &Self::Io) -> Option<PeerAccount> {
        io.peer_cred()
            .ok()
            .map(|cred| PeerAccount { uid: cred.uid() })
    }
}

/// A stream that remembers when a byte last moved, for the idle timeout.
struct Watched<S> {
    inner: S,
    started: Instant,
    /// Milliseconds after `started` of the last read or write that moved bytes.
    last_activity: Arc<AtomicU64>,
}

impl<S> Watched<S> {
    fn touch(&self) {
        let millis = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity.store(millis, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn builder(settings: &ConnectionSettings) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
}

/// Middleware: the request timeout (outermost, so it covers reading the body too).
pub async fn request_timeout(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.config().connections.request_timeout;
    within(limit, request, next).await
}

/// The request timeout of `limit` around the rest of the stack (408 beyond); for routers
/// without the application state (the metrics listener's).
pub async fn within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!("bulkhead_http_request_timeouts_total").increment(1);
            ApiError::RequestTimeout(limit.as_secs()).into_response()
        }
    }
}

/// Serves `router` on `listener` under `settings` until `shutdown` completes, then lets open
/// connections finish their requests.
pub async fn serve<L: Incoming>(
    listener: L,
    router: Router,
    settings: ConnectionSettings,
    trusted_proxies: Vec<ipnet::IpNet>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let caps = Caps {
        total: Arc::new(Semaphore::new(settings.max_connections)),
        per_address: Arc::default(),
        max_per_address: settings.max_connections_per_address,
        trusted_proxies,
    };
    let builder = Arc::new(builder(&settings));
    let evictable = Evictable::default();
    // Dropped to tell connections to finish; every connection task holds a receiver, so
    // `closed()` on `done` completes when the last one has ended.
    let (stop, stopping) = watch::channel(());
    let (done, _) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept_next() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a transient error: keep serving the connections we
                    // have and try again shortly, as axum::serve did.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let mut admitted = caps.admit(peer.ip());
        if matches!(admitted, Err("total")) && evictable.evict_oldest() {
            // The evicted connection's task drops its place as soon as it runs; wait for that
            // place (bounded, so a stuck task cannot stall the accept loop for long).
            metrics::counter!("bulkhead_http_connections_evicted_total").increment(1);
            let freed = tokio::time::timeout(
                Duration::from_millis(50),
                caps.total.clone().acquire_owned(),
            )
            .await;
            if let Ok(Ok(total)) = freed {
                admitted = caps.admit_holding(total, peer.ip());
            }
        }
        let slot = match admitted {
            Ok(slot) => slot,
            Err(cap) => {
                metrics::counter!("bulkhead_http_connections_refused_total", "cap" => cap)
                    .increment(1);
                tracing::debug!(client_ip = %peer.ip(), cap, "connection over the cap closed");
                drop(stream);
                continue;
            }
        };
        let unproven = Arc::new(Unproven::default());
        evictable.push(&unproven, settings.max_connections);
        let account = L::peer_account(&stream);
        tokio::spawn(serve_connection(
            stream,
            (peer, account),
            slot,
            unproven,
            router.clone(),
            builder.clone(),
            settings.clone(),
            stopping.clone(),
            done.subscribe(),
        ));
    }
    drop(listener);
    drop(stop);
    done.closed().await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    (peer, account): (SocketAddr, Option<PeerAccount>),
    slot: Slot,
    unproven: Arc<Unproven>,
    router: Router,
    builder: Arc<http1::Builder>,
    settings: ConnectionSettings,
    mut stopping: watch::Receiver<()>,
    _done: watch::Receiver<()>,
) {
    let last_activity = Arc::new(AtomicU64::new(0));
    let io = Watched {
        inner: stream,
        started: Instant::now(),
        last_activity: last_activity.clone(),
    };
    let started = io.started;
    let seen = unproven.clone();
    let service = tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        seen.first_request.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(account) = account {
            request.extensions_mut().insert(account);
        }
        let router = router.clone();
        async move {
            Ok::<_, Infallible>(
                router
                    .oneshot(request.map(axum::body::Body::new))
                    .await
                    .unwrap_or_else(|never| match never {}),
            )
        }
    });
    let service = hyper_util::service::TowerToHyperService::new(service);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    // Beside hyper's own header timeout: whatever hyper does, a connection that has not
    // delivered a whole first request head in time is dropped.
    let first_deadline = tokio::time::sleep(settings.header_read_timeout);
    let mut first_deadline = std::pin::pin!(first_deadline);
    let mut first_checked = false;
    let idle = tokio::time::sleep(settings.idle_timeout);
    let mut idle = std::pin::pin!(idle);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::trace!(error = %err, "connection ended with an error");
                }
                break;
            }
            () = &mut first_deadline, if !first_checked => {
                first_checked = true;
                if !unproven.first_request.load(Ordering::Relaxed) {
                    metrics::counter!("bulkhead_http_connections_timed_out_total", "timeout" => "header").increment(1);
                    break;
                }
            }
            () = unproven.evict.notified(), if !first_checked => {
                if !unproven.first_request.load(Ordering::Relaxed) {
                    tracing::debug!(client_ip = %peer.ip(), "unproven connection evicted at the total cap");
                    break;
                }
            }
            () = &mut idle => {
                let last = Duration::from_millis(last_activity.load(Ordering::Relaxed));
                let quiet_since = started + last;
                if quiet_since.elapsed() >= settings.idle_timeout {
                    metrics::counter!("bulkhead_http_connections_timed_out_total", "timeout" => "idle").increment(1);
                    break;
                }
                idle.as_mut().reset(quiet_since + settings.idle_timeout);
            }
            changed = stopping.changed(), if !shutting_down => {
                // The sender is dropped at shutdown (an error here): finish and close.
                let _ = changed;
                shutting_down = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    drop(slot);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_bucket(a), address_bucket(b));
        assert_ne!(address_bucket(a), address_bucket(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            address_bucket(mapped),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn caps_count_per_address_and_in_total() {
        let caps = Caps {
            total: Arc::new(Semaphore::new(3)),
            per_address: Arc::default(),
            max_per_address: 2,
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        };
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let first = caps.admit(one).unwrap();
        let _second = caps.admit(one).unwrap();
        assert_eq!(caps.admit(one).err(), Some("address"));
        drop(first);
        let _third = caps.admit(one).unwrap();
        // A trusted proxy is not capped per address, only by the total.
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let _fourth = caps.admit(proxy).unwrap();
        assert_eq!(caps.admit(proxy).err(), Some("total"));
    }
}
