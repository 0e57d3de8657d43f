//! Accepting connections: plain TCP or TLS, HTTP/1.1, a bounded number at once, and a
//! shutdown that lets responses in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

use super::auth::Auth;
use super::body::{SendfileIo, Spool};
use super::error::RegistryError;
use super::http::{self, RequestHook, State};
use super::index::Registry;

/// A client has this long to send a request's headers (also bounds idle keep-alive).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long responses in flight may take to finish after a stop is asked for.
const GRACE: Duration = Duration::from_secs(10);
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
    /// Called after every request (tests, metrics).
    pub on_request: Option<RequestHook>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tls: None,
            auth: None,
            max_connections: 512,
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
        .map_err(|e| RegistryError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(RegistryError::Tls(format!(
            "{}: no certificate found",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| RegistryError::Tls(format!("{}: {e}", key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| RegistryError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| RegistryError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serves `registry` on `listeners` until `shutdown` completes, then waits up to a few seconds
/// for responses in flight.
pub async fn run(
    registry: Arc<Registry>,
    listeners: Vec<TcpListener>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RegistryError> {
    let max = opts.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let state = Arc::new(State {
        registry,
        auth: opts.auth,
        hook: opts.on_request,
    });
    let slots = Arc::new(Semaphore::new(max));
    let acceptor = opts.tls.map(TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = tokio::task::JoinSet::new();
    for l in listeners {
        loops.spawn(accept_loop(
            l,
            state.clone(),
            slots.clone(),
            acceptor.clone(),
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

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    slots: Arc<Semaphore>,
    acceptor: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
            _ = stopped(&mut stop) => return,
        };
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
        let _ = stream.set_nodelay(true);
        let (state, acceptor, stop) = (state.clone(), acceptor.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            connection(stream, peer, state, acceptor, stop).await;
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    acceptor: Option<TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    match acceptor {
        None => {
            // Plain HTTP: blobs go out with sendfile (see body.rs).
            let spool = Spool::default();
            let io = SendfileIo::new(stream, spool.clone());
            drive(io, peer, state, stop, Some(spool)).await
        }
        Some(acc) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acc.accept(stream)).await {
            Ok(Ok(tls)) => drive(tls, peer, state, stop, None).await,
            Ok(Err(e)) => tracing::debug!("{peer}: TLS handshake failed: {e}"),
            Err(_) => tracing::debug!("{peer}: TLS handshake timed out"),
        },
    }
}

async fn drive<I>(
    io: I,
    peer: SocketAddr,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
    spool: Option<Spool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        let spool = spool.clone();
        async move {
            let resp = http::handle(state, req, peer).await?;
            Ok::<_, std::convert::Infallible>(match &spool {
                Some(s) => resp.map(|b| b.with_spool(s)),
                None => resp,
            })
        }
    });
    let conn = http1::Builder::new()
        // Body buffers are queued as they are, never copied: sendfile placeholders rely on it.
        .writev(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BUF)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(GRACE, conn.as_mut()).await {
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

/// Completes once a stop has been asked for (at once if it already has).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard wait_for returns must not live across the caller's awaits: it is not Send.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}
