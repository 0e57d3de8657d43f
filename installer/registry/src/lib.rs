//! `bale registry serve`: a read-only OCI distribution registry that serves the container
//! images bundled in a bale file, straight from the file by offset (no second copy on disk),
//! so that containerd on every node pulls `docker.io/...`, `registry.k8s.io/...` images under
//! their original names without internet access.
//!
//! The images sit in the bundle as an OCI image layout under `registry/`: `index.json` names
//! every image by its full original reference (annotation `org.opencontainers.image.ref.name`),
//! and `registry/blobs/sha256/<hex>` holds every manifest, config and layer as a raw,
//! contiguous blob.
//!
//! Names are resolved three ways, so the registry works both as a containerd mirror and as a
//! plain registry:
//! - with `?ns=HOST` (what containerd sends to a mirror): exactly `HOST/NAME`;
//! - the full name as the path: `/v2/docker.io/library/busybox/manifests/1.36`;
//! - the name without its host, when only one registry's image has it:
//!   `/v2/library/busybox/...`, and for Docker Hub also `/v2/busybox/...`.
//!
//! Layout: [`names`] (grammar), `index` (what is served), `http` (the API), `body`
//! (streaming blobs), `auth` (basic auth), `server` (connections, TLS, limits, shutdown).

mod auth;
mod body;
mod error;
mod http;
mod index;
pub mod names;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bale_payload::Bundle;

pub use auth::Auth;
pub use error::{IndexError, RegistryError};
pub use http::{RequestHook, RequestRecord};
pub use index::{Lookup, Manifest, Registry, Repository, INDEX_PATH, REF_NAME};
pub use server::{load_tls, ServeOptions};

/// The port the registry listens on, on 127.0.0.1, when no `--listen` is given.
pub const DEFAULT_PORT: u16 = 5050;

/// What `bale registry serve` was asked to do.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Bundle whose images to serve; `None`: this program's own payload.
    pub bundle: Option<PathBuf>,
    /// Addresses to listen on, only these; empty: 127.0.0.1 at [`DEFAULT_PORT`].
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain: serve HTTPS instead of plain HTTP (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Require basic auth from this file of `user:HASH` lines (bcrypt or `sha256:HEX`).
    pub htpasswd: Option<PathBuf>,
    /// Require basic auth for the one account in this file (a line `user:password`).
    pub basic_auth: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client address may hold; `None`: an eighth of `max_connections`.
    pub max_connections_per_peer: Option<usize>,
    /// Log every request.
    pub verbose: bool,
}

/// Connections served at once when nothing else is asked for.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

impl Default for RegistryOptions {
    /// This program's own images on 127.0.0.1:5050, plain HTTP, no auth.
    fn default() -> Self {
        RegistryOptions {
            bundle: None,
            listen: Vec::new(),
            tls_cert: None,
            tls_key: None,
            htpasswd: None,
            basic_auth: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: None,
            verbose: false,
        }
    }
}

/// Runs the registry until SIGTERM or SIGINT.
pub fn serve(options: RegistryOptions) -> Result<(), RegistryError> {
    let level = if options.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .try_init();

    let bundle = match &options.bundle {
        Some(p) => Bundle::open(p)?,
        None => Bundle::open_self()?.ok_or(RegistryError::NoBundle)?,
    };
    let registry = Registry::from_bundle(&bundle)?;
    let mut serving = ServeOptions {
        max_connections: options.max_connections,
        max_per_peer: options.max_connections_per_peer,
        ..ServeOptions::default()
    };
    if let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) {
        serving.tls = Some(load_tls(cert, key)?);
    }
    if let Some(p) = &options.htpasswd {
        serving.auth = Some(Arc::new(Auth::from_htpasswd(p)?));
    } else if let Some(p) = &options.basic_auth {
        serving.auth = Some(Arc::new(Auth::from_credentials_file(p)?));
    }
    let addrs = if options.listen.is_empty() {
        vec![SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))]
    } else {
        options.listen.clone()
    };
    let listeners = bind(&addrs)?;

    let (repos, tags, manifests, blobs) = registry.counts();
    tracing::info!(
        "serving {repos} repositories ({tags} tags, {manifests} manifests, {blobs} blobs) from {} \
         on {} over {}{}",
        bundle.path().display(),
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if serving.tls.is_some() {
            "HTTPS"
        } else {
            "HTTP"
        },
        if serving.auth.is_some() {
            " with basic auth"
        } else {
            ""
        },
    );
    drop(bundle);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bale-registry")
        .build()
        .map_err(|source| RegistryError::Start {
            what: "async runtime",
            source,
        })?;
    rt.block_on(async move {
        let listeners = to_tokio(listeners)?;
        server::run(Arc::new(registry), listeners, serving, stop_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            tracing::warn!("cannot watch SIGTERM/SIGINT; stop the registry with SIGKILL");
            std::future::pending::<()>().await
        }
    }
}

/// Binds every address before serving any, so a typo fails the start instead of leaving a
/// half-reachable registry.
fn bind(addrs: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, RegistryError> {
    addrs
        .iter()
        .map(|a| {
            std::net::TcpListener::bind(a).map_err(|source| RegistryError::Bind {
                addr: a.to_string(),
                source,
            })
        })
        .collect()
}

fn to_tokio(
    listeners: Vec<std::net::TcpListener>,
) -> Result<Vec<tokio::net::TcpListener>, RegistryError> {
    listeners
        .into_iter()
        .map(|l| {
            let addr = l
                .local_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            l.set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(l))
                .map_err(|source| RegistryError::Bind { addr, source })
        })
        .collect()
}

/// A registry running on its own threads; dropping it stops it.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), RegistryError>>>,
}

impl ServerHandle {
    /// The addresses actually bound (with the port the system chose for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, lets responses in flight finish, and waits for the threads.
    pub fn stop(mut self) -> Result<(), RegistryError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), RegistryError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| RegistryError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Serves the images of an opened bundle on already bound listeners, on a runtime of its own:
/// the entry point for tests and for embedding in a synchronous program.
pub fn spawn(
    bundle: &Bundle,
    listeners: Vec<std::net::TcpListener>,
    opts: ServeOptions,
) -> Result<ServerHandle, RegistryError> {
    spawn_registry(Registry::from_bundle(bundle)?, listeners, opts)
}

/// Like [`spawn`], for a registry already built.
fn spawn_registry(
    registry: Registry,
    listeners: Vec<std::net::TcpListener>,
    opts: ServeOptions,
) -> Result<ServerHandle, RegistryError> {
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RegistryError::Bind {
            addr: "listener".into(),
            source,
        })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bale-registry")
        .build()
        .map_err(|source| RegistryError::Start {
            what: "async runtime",
            source,
        })?;
    // Converted inside the runtime: tokio listeners must be registered with its reactor.
    let listeners = rt.block_on(async { to_tokio(listeners) })?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bale-registry".into())
        .spawn(move || {
            rt.block_on(server::run(Arc::new(registry), listeners, opts, async {
                let _ = rx.await;
            }))
        })
        .map_err(|source| RegistryError::Start {
            what: "server thread",
            source,
        })?;
    Ok(ServerHandle {
        addrs,
        stop: Some(tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_fails_fast_on_a_missing_bundle() {
        let opts = RegistryOptions {
            bundle: Some("/nonexistent/bundle.bale".into()),
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..RegistryOptions::default()
        };
        let err = serve(opts).unwrap_err();
        // The bundle's error stays the source, for the binary's damaged-bundle exit code.
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            matches!(err, RegistryError::Bundle(_))
                && source
                    .as_deref()
                    .is_some_and(|s| s.contains("/nonexistent/bundle.bale")),
            "{err}: {source:?}"
        );
    }
}
