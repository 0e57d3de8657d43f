//! Accepting connections: plain TCP or TLS, HTTP/1.1, a bounded number at once, and a
//! shutdown that lets responses in flight finish.
//!
//! No client can hold the server for long, whatever it does: a request head must arrive within
//! [`ServeOptions::header_timeout`] (which also ends idle kept-alive connections), a response
//! that makes no progress for [`ServeOptions::write_timeout`] (a client that stopped reading)
//! ends its connection, and one peer address holds at most
//! [`ServeOptions::max_per_peer`] connections. When every slot is taken, a newcomer takes the
//! slot of the longest-idle connection, or else of a connection of the peer holding the most,
//! when that peer holds more than its share, or else of the response stalled longest, once it
//! has been stalled for a sixth of the write timeout; only when every slot moves bytes for
//! peers holding no more than the newcomer's does it wait.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use super::auth::Auth;
use super::body::{Body, SendfileIo, Spool};
use super::error::RegistryError;
use super::http::{self, RequestHook, State};
use super::index::Registry;

/// A client has this long to send a request's headers (also bounds idle keep-alive).
const HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// A response may make no progress for this long before its connection is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The share of all connection slots one peer address may hold.
const PEER_SHARE: usize = 8;
/// When every slot is taken, a response stalled for this part of the write timeout gives its
/// slot to a newcomer.
const STALLED_SHARE: u32 = 6;
/// How often a newcomer waiting for a slot looks again for one to free.
const MAKE_ROOM_EVERY: Duration = Duration::from_millis(250);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long responses in flight may take to finish after a stop is asked for.
const GRACE: Duration = Duration::from_secs(10);
/// How long a connection chosen to make room may take to finish a request that arrived just
/// as it was chosen.
const EVICT_GRACE: Duration = Duration::from_secs(1);
/// Request heads are small; this bounds what one connection can make us buffer.
const MAX_HEAD_BUF: usize = 64 << 10;

/// How the server runs, besides what it serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// TLS on every listener when set (see [`load_tls`]).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Basic authentication on every request when set.
    pub auth: Option<Arc<Auth>>,
    /// Connections served at once; more wait in the listen backlog. Each costs at most one
    /// 256 KiB read buffer while it downloads.
    pub max_connections: usize,
    /// Connections one peer address may hold; `None` is an eighth of `max_connections`.
    pub max_per_peer: Option<usize>,
    /// How long a client may take to send a request head, and stay idle between requests.
    pub header_timeout: Duration,
    /// How long a response may make no progress before its connection is dropped.
    pub write_timeout: Duration,
    /// Called after every request (tests, metrics).
    pub on_request: Option<RequestHook>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            auth: None,
            max_connections: crate::DEFAULT_MAX_CONNECTIONS,
            max_per_peer: None,
            header_timeout: HEADER_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            on_request: None,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .field("max_connections", &self.max_connections)
            .field("max_per_peer", &self.max_per_peer)
            .field("header_timeout", &self.header_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish()
    }
}

/// Loads a PEM certificate chain and private key into a server configuration offering
/// HTTP/1.1 only (the server speaks nothing else).
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, RegistryError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| RegistryError::TlsPem {
            path: cert.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(RegistryError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| RegistryError::TlsPem {
        path: key.to_path_buf(),
        source,
    })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(RegistryError::TlsConfig)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(RegistryError::TlsConfig)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `registry` on `listeners` until `shutdown` completes, then waits up to a few seconds
/// for responses in flight.
pub(crate) async fn run(
    registry: Arc<Registry>,
    listeners: Vec<TcpListener>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RegistryError> {
    let max = opts.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let per_peer = opts.max_per_peer.unwrap_or(max / PEER_SHARE).clamp(1, max);
    let state = Arc::new(State {
        registry,
        auth: opts.auth,
        hook: opts.on_request,
    });
    let limits = Limits {
        header_timeout: opts.header_timeout,
        write_timeout: opts.write_timeout,
    };
    let slots = Arc::new(Semaphore::new(max));
    let conns = Arc::new(Conns::new(per_peer));
    let acceptor = opts.tls.map(TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    for l in listeners {
        loops.spawn(accept_loop(
            l,
            Shared {
                state: state.clone(),
                slots: slots.clone(),
                conns: conns.clone(),
                acceptor: acceptor.clone(),
                limits,
            },
            stop_rx.clone(),
        ));
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    // Every connection holds a slot until it ends: all slots free means all are done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("stopping with connections still open after {GRACE:?}");
    }
    Ok(())
}

#[derive(Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    write_timeout: Duration,
}

/// What every accept loop shares.
#[derive(Clone)]
struct Shared {
    state: Arc<State>,
    slots: Arc<Semaphore>,
    conns: Arc<Conns>,
    acceptor: Option<TlsAcceptor>,
    limits: Limits,
}

async fn accept_loop(listener: TcpListener, shared: Shared, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let Some(conn) = shared.conns.admit(peer_key(peer.ip())) else {
            tracing::debug!("{peer}: connection closed, the peer holds its limit already");
            continue;
        };
        let slot = match shared.slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => loop {
                // Asked again now and then: a download may stall long enough meanwhile.
                shared
                    .conns
                    .make_room(&conn, shared.limits.write_timeout / STALLED_SHARE);
                tokio::select! {
                    s = shared.slots.clone().acquire_owned() => match s {
                        Ok(s) => break s,
                        Err(_) => return,
                    },
                    _ = tokio::time::sleep(MAKE_ROOM_EVERY) => continue,
                    _ = stopped(&mut stop) => return,
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (shared, stop) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, peer, shared, conn, slot, stop).await;
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Shared,
    conn: ConnGuard,
    _slot: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    let Shared {
        state,
        acceptor,
        limits,
        ..
    } = shared;
    match acceptor {
        None => {
            // Plain HTTP: blobs go out with sendfile (see body.rs).
            let spool = Spool::default();
            let io = Watched::new(
                SendfileIo::new(stream, spool.clone()),
                limits.write_timeout,
                &conn.0,
            );
            drive(io, peer, state, limits, &conn, stop, Some(spool)).await
        }
        Some(acc) => {
            let handshake = tokio::select! {
                r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acc.accept(stream)) => r,
                _ = conn.0.evict.notified() => return,
            };
            match handshake {
                Ok(Ok(tls)) => {
                    let io = Watched::new(tls, limits.write_timeout, &conn.0);
                    drive(io, peer, state, limits, &conn, stop, None).await
                }
                Ok(Err(e)) => tracing::debug!("{peer}: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("{peer}: TLS handshake timed out"),
            }
        }
    }
}

async fn drive<I>(
    io: I,
    peer: SocketAddr,
    state: Arc<State>,
    limits: Limits,
    conn: &ConnGuard,
    mut stop: watch::Receiver<bool>,
    spool: Option<Spool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let me = conn.0.clone();
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let spool = spool.clone();
        let busy = Busy::start(&me);
        async move {
            let resp = http::handle(state, req, peer).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                let b = match &spool {
                    Some(s) => b.with_spool(s),
                    None => b,
                };
                Tracked {
                    body: b,
                    _busy: busy,
                }
            }))
        }
    });
    let http = http1::Builder::new()
        // Body buffers are queued as they are, never copied: sendfile placeholders rely on it.
        .writev(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BUF)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(http);
    let res = tokio::select! {
        r = http.as_mut() => r,
        _ = conn.0.evict.notified() => {
            if conn.0.forced.load(Ordering::SeqCst) {
                tracing::debug!("{peer}: connection dropped for a peer holding fewer");
                return;
            }
            // Idle when chosen, it ends at once; a request that arrived meanwhile gets a moment
            // to finish, not the whole grace of a stop: someone waits for this slot.
            http.as_mut().graceful_shutdown();
            match tokio::time::timeout(EVICT_GRACE, http.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
        _ = stopped(&mut stop) => {
            http.as_mut().graceful_shutdown();
            match tokio::time::timeout(GRACE, http.as_mut()).await {
                Ok(r) => r,
                Err(_) => return,
            }
        }
    };
    if let Err(e) = res {
        // Clients hanging up mid-download are routine; a body read error was logged already.
        tracing::debug!("{peer}: connection ended: {e}");
    }
}

/// The address a client is counted under: an IPv6 client by its /64, which one host or
/// site usually holds whole (one address each would give it 2^64 shares), and an IPv4 client
/// reaching an IPv6 socket by its IPv4 address.
pub(crate) fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// One open connection, as the admission and eviction rules see it.
struct Conn {
    peer: IpAddr,
    opened: Instant,
    /// Responses started and not yet sent in full.
    in_flight: AtomicUsize,
    /// When the last response ended (or the connection opened).
    idle_since: Mutex<Instant>,
    /// Since when a response has been waiting for the client to take more of it.
    stalled_since: Mutex<Option<Instant>>,
    /// Set once the connection was chosen to make room, so it is not chosen twice.
    evicted: AtomicBool,
    /// Whether it ends at once (its peer holds more than its share) rather than gracefully.
    forced: AtomicBool,
    evict: Notify,
}

impl Conn {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stalled_since(&self) -> Option<Instant> {
        *self.stalled_since.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_stalled(&self, since: Option<Instant>) {
        *self.stalled_since.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }

    fn evict(&self, forced: bool) {
        self.evicted.store(true, Ordering::SeqCst);
        self.forced.store(forced, Ordering::SeqCst);
        self.evict.notify_one();
    }
}

/// Every open connection, by peer address.
struct Conns {
    per_peer: usize,
    open: Mutex<Vec<Arc<Conn>>>,
}

impl Conns {
    fn new(per_peer: usize) -> Conns {
        Conns {
            per_peer,
            open: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new connection from `peer`, unless the peer holds its limit already (those
    /// chosen to make room count until they end: they may still hold a stalled response).
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<ConnGuard> {
        let mut open = self.lock();
        if open.iter().filter(|c| c.peer == peer).count() >= self.per_peer {
            return None;
        }
        let now = Instant::now();
        let conn = Arc::new(Conn {
            peer,
            opened: now,
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(now),
            stalled_since: Mutex::new(None),
            evicted: AtomicBool::new(false),
            forced: AtomicBool::new(false),
            evict: Notify::new(),
        });
        open.push(conn.clone());
        Some(ConnGuard(conn, self.clone()))
    }

    /// Every slot is taken and `newcomer` waits for one: frees the longest-idle connection;
    /// else the oldest of the peer holding the most, when it holds more than one beyond what
    /// the newcomer's peer holds; else the response stalled longest, when it has been stalled
    /// for `stalled_for`.
    fn make_room(&self, newcomer: &ConnGuard, stalled_for: Duration) {
        let open = self.lock();
        let live = || {
            open.iter()
                .filter(|c| !c.evicted.load(Ordering::SeqCst) && !Arc::ptr_eq(c, &newcomer.0))
        };
        if let Some(c) = live()
            .filter(|c| c.is_idle())
            .min_by_key(|c| c.idle_since())
        {
            c.evict(false);
            return;
        }
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for c in live() {
            *held.entry(c.peer).or_default() += 1;
        }
        let mine = held.get(&newcomer.0.peer).copied().unwrap_or(0);
        if let Some((&greedy, &most)) = held.iter().max_by_key(|(_, n)| **n) {
            if most > mine + 1 {
                if let Some(c) = live().filter(|c| c.peer == greedy).min_by_key(|c| c.opened) {
                    c.evict(true);
                    return;
                }
            }
        }
        let now = Instant::now();
        if let Some(c) = live()
            .filter_map(|c| Some((c, c.stalled_since()?)))
            .filter(|(_, since)| now.duration_since(*since) >= stalled_for)
            .min_by_key(|(_, since)| *since)
            .map(|(c, _)| c)
        {
            c.evict(true);
        }
    }
}

/// Keeps a connection registered while it lives.
struct ConnGuard(Arc<Conn>, Arc<Conns>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.1.lock().retain(|c| !Arc::ptr_eq(c, &self.0));
    }
}

/// A response body that keeps its connection marked busy until hyper has sent it and drops it.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, io::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Marks a connection busy from a request's start until its response body is dropped.
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: &Arc<Conn>) -> Busy {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(conn.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's I/O that fails a write making no progress for `timeout`: a client that stops
/// reading a response gives its slot back.
struct Watched<I> {
    io: I,
    timeout: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Told when a write stalls and when it moves again, for the choice of a slot to free.
    conn: Arc<Conn>,
}

impl<I> Watched<I> {
    fn new(io: I, timeout: Duration, conn: &Arc<Conn>) -> Watched<I> {
        Watched {
            io,
            timeout,
            stalled: None,
            conn: conn.clone(),
        }
    }

    /// Passes a write's outcome on; a pending one starts (or checks) the stall timer.
    fn watch<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            if self.stalled.take().is_some() {
                self.conn.set_stalled(None);
            }
            return r;
        }
        let (timeout, conn) = (self.timeout, &self.conn);
        let timer = self.stalled.get_or_insert_with(|| {
            conn.set_stalled(Some(Instant::now()));
            Box::pin(tokio::time::sleep(timeout))
        });
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client took nothing for {timeout:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write(cx, buf);
        me.watch(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_write_vectored(cx, bufs);
        me.watch(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let r = Pin::new(&mut me.io).poll_flush(cx);
        me.watch(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Completes once a stop has been asked for (at once if it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns must not live across the caller's awaits: it is not Send.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_counted_by_ipv4_address_or_ipv6_prefix() {
        let key = |s: &str| peer_key(s.parse().unwrap()).to_string();
        assert_eq!(key("10.0.0.7"), "10.0.0.7");
        assert_eq!(key("::ffff:10.0.0.7"), "10.0.0.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::1"), "::");
    }
}
