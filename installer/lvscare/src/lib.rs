//! `bale lvscare`: a guardian that keeps a virtual server (the apiserver VIP,
//! 10.103.97.2:6443 by default) pointing only at healthy masters.
//!
//! The binary gives it [`Options`] (its command line) and calls [`run`]; the installer writes
//! its config file ([`worker_config`], [`registry_config`]) and removes its rules ([`clean`]).
//!
//! Layout:
//! - `config`: the options, the YAML/JSON file, defaults, validation;
//! - `state`: the pure fall/rise state machine;
//! - `health`: HTTP(S)/TCP probes (`--insecure-skip-verify` takes `bale_tls`'s verifier);
//! - `backend`: the data-plane trait and reconcile; `ipvs` (generic netlink)
//!   and `nft` (one nftables table) implement it;
//! - `vip`: the /32 route or dummy link that makes the VIP reachable;
//! - `netlink`: the message layer under `ipvs` and `vip`;
//! - `caps`: dropping to CAP_NET_ADMIN + CAP_NET_RAW;
//! - `error`: the errors of the whole.

mod backend;
mod caps;
mod config;
mod error;
mod health;
mod ipvs;
mod netlink;
mod nft;
mod state;
mod vip;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use tokio::sync::Notify;

use backend::{Backend, ServiceState};
pub use backend::{BackendError, Scheduler, UnknownScheduler};
pub use config::{
    parse_duration, parse_status, BackendKind, Config, ConfigError, DurationError, HealthConfig,
    HealthScheme, InstanceError, Names, Options, StatusError, StatusSet, VipMode, DEFAULT_VS,
    LINK_NAME,
};
use error::CleanFailure;
pub use error::{error_chain, CleanError, Error};
pub use health::{CaFileError, HealthError};
pub use netlink::NetlinkError;
pub use nft::NftError;
pub use state::{Event, Probe};
use state::{Pool, Thresholds};
pub use vip::{
    ensure_prefix_route, ensure_unreachable_route, remove_link, remove_prefix_route,
    remove_unreachable_route, VipError,
};

/// The name every node resolves to reach the apiserver.
pub const APISERVER_NAME: &str = "apiserver.cluster.local";

/// The command's entry: logs to stderr, handles SIGHUP (reload), SIGTERM/SIGINT
/// (stop, leaving the rules in place), and drops capabilities.
pub fn run(args: Options) -> Result<(), Error> {
    init_logging();
    run_with(args, Control::cli())
}

/// Sets up a compact stderr logger once; later calls do nothing.
fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

/// What the guardian reports besides its log (tests and embedding).
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// The backend in use and why.
    Backend(String),
    /// One probe round's results.
    Round(BTreeMap<SocketAddr, Probe>),
    /// A health state change.
    State(Event),
    /// Changes made to the data plane (empty rounds are not reported).
    Applied(Vec<String>),
    /// A data-plane or VIP error; the guardian retries next round.
    Error(String),
    /// The outcome of dropping capabilities.
    Capabilities(String),
    /// The config file was re-read.
    Reloaded,
}

/// How the guardian is driven: stop and reload from outside, reports out.
pub struct Control {
    pub stop: Arc<Notify>,
    pub reload: Arc<Notify>,
    pub reports: Option<Sender<Report>>,
    /// Drop to CAP_NET_ADMIN + CAP_NET_RAW after start (only the calling
    /// thread and threads it creates are affected).
    pub drop_caps: bool,
    /// Install SIGHUP/SIGTERM/SIGINT handlers (process-wide; off in tests).
    pub signals: bool,
}

impl Control {
    pub fn cli() -> Self {
        Control {
            stop: Arc::new(Notify::new()),
            reload: Arc::new(Notify::new()),
            reports: None,
            drop_caps: true,
            signals: true,
        }
    }

    /// For embedding and tests: no signal handlers, reports to `tx`.
    pub fn embedded(tx: Sender<Report>) -> Self {
        Control {
            signals: false,
            reports: Some(tx),
            ..Self::cli()
        }
    }

    fn report(&self, r: Report) {
        if let Some(tx) = &self.reports {
            let _ = tx.send(r);
        }
    }
}

/// Runs the guardian until stopped (or once, or `--clean`), on a
/// current-thread runtime: one thread, small RSS.
pub fn run_with(args: Options, control: Control) -> Result<(), Error> {
    let cfg = Config::resolve(&args)?;
    if cfg.clean {
        return Ok(clean(&cfg)?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    rt.block_on(guard(args, cfg, control))
}

/// `--clean`: removes the virtual server from every backend present, the
/// VIP route and link: those of this guardian's instance only. Each part is
/// attempted even if another fails.
pub fn clean(cfg: &Config) -> Result<(), CleanError> {
    let mut failures = Vec::new();
    let want_ipvs = cfg.backend != BackendKind::Nftables;
    let want_nft = cfg.backend != BackendKind::Ipvs;
    // Only a loaded IPVS can hold a service: no module is loaded to clean.
    if want_ipvs && std::path::Path::new("/proc/net/ip_vs").exists() {
        match ipvs::IpvsBackend::open().and_then(|mut b| b.clean(cfg.vs)) {
            Ok(()) => tracing::info!("removed IPVS service {}", cfg.vs),
            Err(e) => failures.push(CleanFailure::Ipvs(e)),
        }
    }
    if want_ipvs {
        if let Some(p) = nft::find_nft() {
            if let Err(e) = nft::NftBackend::new(p, &cfg.names.masq_table).remove_table() {
                failures.push(CleanFailure::Masquerade(e));
            }
        }
    }
    if want_nft {
        match nft::find_nft() {
            Some(p) => match nft::NftBackend::new(p, &cfg.names.table).remove_table() {
                Ok(()) => tracing::info!("removed nftables table ip {}", cfg.names.table),
                Err(e) => failures.push(CleanFailure::Nftables(e)),
            },
            None if cfg.backend == BackendKind::Nftables => {
                failures.push(CleanFailure::Nftables(nft::NftError::NotFound))
            }
            None => {}
        }
    }
    match vip::remove_route(cfg.vs.ip()) {
        Ok(true) => tracing::info!("removed route {}/32", cfg.vs.ip()),
        Ok(false) => {}
        Err(e) => failures.push(CleanFailure::Route(e)),
    }
    match vip::remove_link(&cfg.names.link) {
        Ok(true) => tracing::info!("removed interface {}", cfg.names.link),
        Ok(false) => {}
        Err(e) => failures.push(CleanFailure::Link(e)),
    }
    CleanError::check(failures)
}

/// Why IPVS link mode has no source NAT for local clients.
#[derive(Debug, thiserror::Error)]
enum MasqueradeError {
    #[error("writing 1 to {0}")]
    Sysctl(&'static str, #[source] std::io::Error),
    #[error(transparent)]
    Nft(#[from] nft::NftError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// IPVS in link mode: local clients dial the VIP from the VIP (it is a local
/// address) and IPVS rewrites only the destination, so the masters would
/// answer an address they cannot route back. Source NAT fixes that, as
/// lvscare's iptables masquerade and kube-proxy's do: conntrack must follow
/// IPVS (net.ipv4.vs.conntrack=1) and a postrouting masquerade matches the
/// connections made to the virtual server. Failures are logged, not fatal:
/// route mode and remote clients work without it.
fn ipvs_link_masquerade(vs: SocketAddr, names: &Names, control: &Control) {
    let table = &names.masq_table;
    let result = (|| -> Result<(), MasqueradeError> {
        let sysctl = "/proc/sys/net/ipv4/vs/conntrack";
        std::fs::write(sysctl, "1").map_err(|e| MasqueradeError::Sysctl(sysctl, e))?;
        let nft = nft::NftBackend::locate(table)?;
        nft.apply(&nft::render_ipvs_masquerade(table, vs)?)?;
        Ok(())
    })();
    match result {
        Ok(()) => tracing::info!(
            "link mode: source NAT for local clients of {vs} (table ip {table}, net.ipv4.vs.conntrack=1)"
        ),
        Err(e) => {
            let why = error_chain(&e);
            tracing::error!(
                "link mode: no source NAT for local clients of {vs}, they will get no answers \
                 (--mode route needs none): {why}"
            );
            control.report(Report::Error(format!("link-mode masquerade: {why}")));
        }
    }
}

fn open_backend(kind: BackendKind, names: &Names) -> Result<(Box<dyn Backend>, String), Error> {
    let ipvs = || -> Result<Box<dyn Backend>, Error> {
        let b = ipvs::IpvsBackend::open().map_err(|source| Error::OpenBackend {
            backend: "ipvs",
            source,
        })?;
        Ok(Box::new(b))
    };
    let nftables = || -> Result<Box<dyn Backend>, Error> {
        let b = nft::NftBackend::locate(&names.table).map_err(|e| Error::OpenBackend {
            backend: "nftables",
            source: e.into(),
        })?;
        Ok(Box::new(b))
    };
    Ok(match kind {
        BackendKind::Ipvs => (ipvs()?, "ipvs (--backend ipvs)".into()),
        BackendKind::Nftables => (nftables()?, "nftables (--backend nftables)".into()),
        BackendKind::Auto if ipvs::kernel_has_ipvs() => {
            (ipvs()?, "ipvs (the kernel has IP_VS)".into())
        }
        BackendKind::Auto => (nftables()?, "nftables (the kernel has no IP_VS)".into()),
    })
}

/// Makes the VIP reachable; idempotent, so it runs every round and repairs a
/// route or address someone removed.
fn ensure_vip(cfg: &Config) -> Result<(), VipError> {
    match cfg.mode {
        VipMode::Route => {
            let gw = match cfg.node_ip {
                Some(ip) => ip,
                None => {
                    let first = cfg.rs.first().map(|(a, _)| *a);
                    vip::node_ip_towards(first.ok_or(VipError::NoRealServers)?)?
                }
            };
            vip::ensure_route(cfg.vs.ip(), gw)?;
        }
        VipMode::Link => vip::ensure_link(&cfg.names.link, cfg.vs.ip())?,
    }
    Ok(())
}

fn desired(cfg: &Config, pool: &Pool) -> ServiceState {
    ServiceState {
        vs: cfg.vs,
        scheduler: cfg.scheduler,
        dests: pool.desired(),
    }
}

fn apply(backend: &mut dyn Backend, cfg: &Config, pool: &Pool, control: &Control) {
    if let Err(e) = ensure_vip(cfg) {
        let why = error_chain(&e);
        tracing::error!("VIP {} not reachable from this node: {why}", cfg.vs.ip());
        control.report(Report::Error(format!("vip: {why}")));
    }
    match backend::reconcile(backend, &desired(cfg, pool)) {
        Ok(changes) if changes.is_empty() => {}
        Ok(changes) => {
            for c in &changes {
                tracing::info!("{}: {c}", backend.name());
            }
            control.report(Report::Applied(changes));
        }
        Err(e) => {
            let why = error_chain(&e);
            tracing::error!(
                "{}: applying failed, retrying next round: {why}",
                backend.name()
            );
            control.report(Report::Error(why));
        }
    }
}

async fn guard(args: Options, mut cfg: Config, control: Control) -> Result<(), Error> {
    let (mut backend, why) = open_backend(cfg.backend, &cfg.names)?;
    tracing::info!(
        "guarding {} -> [{}] with {why}",
        cfg.vs,
        cfg.rs
            .iter()
            .map(|(a, _)| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    control.report(Report::Backend(backend.name().to_string()));
    if backend.name() == "ipvs" && cfg.mode == VipMode::Link {
        ipvs_link_masquerade(cfg.vs, &cfg.names, &control);
    }

    let mut prober = Arc::new(health::Prober::new(&cfg.health)?);
    let th = |c: &Config| Thresholds {
        fall: c.fall,
        rise: c.rise,
    };
    let mut pool = Pool::new(&cfg.rs, th(&cfg));
    // The first apply adopts whatever an earlier run left behind.
    apply(backend.as_mut(), &cfg, &pool, &control);

    if control.drop_caps {
        let msg = match caps::drop_to_net_admin() {
            Ok(caps::Dropped::Kept(k)) => format!("dropped all capabilities but {}", k.join(", ")),
            Ok(caps::Dropped::NothingToDrop) => "no capabilities to drop (not root)".into(),
            Err(e) => format!("could not drop capabilities: {}", error_chain(&e)),
        };
        tracing::info!("{msg}");
        control.report(Report::Capabilities(msg));
    }

    let mut signals = if control.signals {
        Some(Signals::new()?)
    } else {
        None
    };
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate

    loop {
        let results = prober.probe_all(&pool.addrs()).await;
        for ev in pool.observe(&results) {
            match &ev {
                Event::HeldLastGood { .. } => tracing::warn!("{ev}"),
                _ => tracing::info!("{ev}"),
            }
            control.report(Report::State(ev));
        }
        control.report(Report::Round(results));
        apply(backend.as_mut(), &cfg, &pool, &control);
        if cfg.run_once {
            return Ok(());
        }

        let wake = tokio::select! {
            _ = ticker.tick() => Wake::Tick,
            _ = control.stop.notified() => Wake::Stop,
            _ = control.reload.notified() => Wake::Reload,
            w = wait_signal(&mut signals) => w,
        };
        match wake {
            Wake::Tick => {}
            Wake::Stop => {
                tracing::info!(
                    "stopping; the {} rules stay so this node keeps reaching the apiserver \
                     (--clean removes them)",
                    backend.name()
                );
                return Ok(());
            }
            Wake::Reload => match Config::resolve(&args) {
                Ok(new) => {
                    if new.vs != cfg.vs {
                        if let Err(e) = backend
                            .delete_service(cfg.vs)
                            .and_then(|_| backend.commit())
                        {
                            tracing::error!(
                                "removing old virtual server {}: {}",
                                cfg.vs,
                                error_chain(&e)
                            );
                        }
                        // The new VIP gets its route on the next apply; the old one's must not
                        // linger and catch traffic for an address nothing serves any more.
                        if cfg.mode == VipMode::Route && new.vs.ip() != cfg.vs.ip() {
                            if let Err(e) = vip::remove_route(cfg.vs.ip()) {
                                tracing::error!(
                                    "removing the route to {}: {}",
                                    cfg.vs.ip(),
                                    error_chain(&e)
                                );
                            }
                        }
                    }
                    if new.vs != cfg.vs && backend.name() == "ipvs" && cfg.mode == VipMode::Link {
                        ipvs_link_masquerade(new.vs, &cfg.names, &control);
                    }
                    if new.backend != cfg.backend || new.mode != cfg.mode {
                        tracing::warn!("backend and mode changes take effect on restart");
                    }
                    match health::Prober::new(&new.health) {
                        Ok(p) => prober = Arc::new(p),
                        Err(e) => {
                            tracing::error!("keeping old probe settings: {}", error_chain(&e))
                        }
                    }
                    for ev in pool.set_servers(&new.rs) {
                        tracing::info!("{ev}");
                        control.report(Report::State(ev));
                    }
                    pool = pool.with_thresholds(th(&new));
                    if new.interval != cfg.interval {
                        ticker = tokio::time::interval(new.interval);
                        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        ticker.tick().await;
                    }
                    cfg = Config {
                        backend: cfg.backend,
                        mode: cfg.mode,
                        ..new
                    };
                    tracing::info!("config reloaded");
                    control.report(Report::Reloaded);
                    apply(backend.as_mut(), &cfg, &pool, &control);
                }
                Err(e) => tracing::error!(
                    "reload failed, keeping the running config: {}",
                    error_chain(&e)
                ),
            },
        }
    }
}

enum Wake {
    Tick,
    Stop,
    Reload,
}

struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        use tokio::signal::unix::{signal, SignalKind};
        let handler = |name, kind| signal(kind).map_err(|e| Error::Signal(name, e));
        Ok(Signals {
            hup: handler("SIGHUP", SignalKind::hangup())?,
            term: handler("SIGTERM", SignalKind::terminate())?,
            int: handler("SIGINT", SignalKind::interrupt())?,
        })
    }
}

async fn wait_signal(s: &mut Option<Signals>) -> Wake {
    match s {
        Some(s) => tokio::select! {
            _ = s.hup.recv() => Wake::Reload,
            _ = s.term.recv() => Wake::Stop,
            _ = s.int.recv() => Wake::Stop,
        },
        None => std::future::pending().await,
    }
}

/// The config file the installer writes on a worker: every master's
/// apiserver behind `vip`, probed over https without CA (a worker has no
/// cluster CA before it joins; the probe carries no credentials).
pub fn worker_config(vip: SocketAddr, masters: &[IpAddr]) -> String {
    let port = vip.port();
    let mut out = format!(
        "# Written by bale: the apiserver VIP and the masters behind it.\n\
         # bale lvscare --config <this file>; kill -HUP reloads it.\n\
         vs: \"{vip}\"\nrs:\n"
    );
    for m in masters {
        out.push_str(&format!("  - \"{}\"\n", SocketAddr::new(*m, port)));
    }
    out.push_str(
        "scheduler: rr\ninterval: 5s\nfall: 2\nrise: 1\n\
         health:\n  scheme: https\n  path: /healthz\n  timeout: 2s\n  status: \"200-399\"\n  \
         insecure_skip_verify: true\n",
    );
    out
}

/// The config file of a worker's registry guardian: every master's registry behind `vip`,
/// probed with `GET /v2/` over plain http (what the bale registry serves on the node address);
/// 401 counts as alive, for a registry that asks for credentials.
pub fn registry_config(vip: SocketAddr, masters: &[IpAddr]) -> String {
    let port = vip.port();
    let mut out = format!(
        "# Written by bale: the registries' VIP and the masters' registries behind it.\n\
         # bale lvscare --instance registry --config <this file>; kill -HUP reloads it.\n\
         vs: \"{vip}\"\nrs:\n"
    );
    for m in masters {
        out.push_str(&format!("  - \"{}\"\n", SocketAddr::new(*m, port)));
    }
    out.push_str(
        "scheduler: rr\ninterval: 5s\nfall: 2\nrise: 1\n\
         health:\n  scheme: http\n  path: /v2/\n  timeout: 2s\n  status: \"200,401\"\n",
    );
    out
}

/// The /etc/hosts line that points `apiserver.cluster.local` at the VIP.
pub fn hosts_line(vip: IpAddr) -> String {
    format!("{vip} {APISERVER_NAME}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_config_round_trips_through_the_parser() {
        let masters: Vec<IpAddr> = vec![
            "192.168.0.2".parse().unwrap(),
            "192.168.0.3".parse().unwrap(),
        ];
        let text = worker_config(DEFAULT_VS.parse().unwrap(), &masters);
        let cfg = Config::from_text(&Options::default(), &text).unwrap();
        assert_eq!(cfg.vs, DEFAULT_VS.parse().unwrap());
        assert_eq!(
            cfg.rs,
            vec![
                ("192.168.0.2:6443".parse().unwrap(), 1),
                ("192.168.0.3:6443".parse().unwrap(), 1)
            ]
        );
        assert!(cfg.health.insecure_skip_verify);
    }

    #[test]
    fn hosts_line_names_the_apiserver() {
        assert_eq!(
            hosts_line("10.103.97.2".parse().unwrap()),
            "10.103.97.2 apiserver.cluster.local"
        );
    }
}
