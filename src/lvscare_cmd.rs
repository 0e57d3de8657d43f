//! `bale lvscare`: the command line of the VIP guard. The guard itself is the `bale-lvscare`
//! crate, which knows nothing of clap; this module turns the flags into its
//! [`bale_lvscare::Options`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bale_lvscare::{parse_duration, parse_status, StatusSet};

/// The guardian's command line. Every flag may also come from `--config`.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(
    about = "Keep a virtual server (the apiserver VIP) pointing only at healthy masters",
    long_about = "Keep a virtual server (the apiserver VIP) pointing only at healthy masters.\n\n\
Every --interval all real servers are probed at once. The first failed probe drains a server \
(weight 0: no new connections); --fall failures in a row remove it; --rise successes in a row \
bring it back. If every probe fails in the same round, the problem is almost surely this \
node's network, not every master, so the last good set is kept and that is logged.\n\n\
The data plane is IPVS (kernel module ip_vs, driven over netlink) or, on kernels without it, \
one nftables table `ip bale_lvscare` replaced atomically on each change. The VIP is reached \
through a /32 route via this node's address (--mode route) or a dummy interface bale-lvs0 \
(--mode link). Stopping the guardian leaves the rules in place so the node keeps reaching the \
apiserver while it restarts; --clean removes them.\n\n\
Examples:\n  \
bale lvscare --rs 192.168.0.2:6443 --rs 192.168.0.3:6443 --insecure-skip-verify\n  \
bale lvscare --config /etc/bale/lvscare.yaml   # kill -HUP reloads it\n  \
bale lvscare --clean\n  \
bale lvscare --instance registry --vs 10.103.97.3:5050 --rs 192.168.0.2:5050 \
--health-scheme http --health-path /v2/   # a second guardian beside the first\n\n\
Config file (YAML or JSON; flags win over it):\n  \
vs: 10.103.97.2:6443\n  \
rs: [192.168.0.2:6443, {addr: 192.168.0.3:6443, weight: 2}]\n  \
health: {scheme: https, path: /healthz, timeout: 2s, status: 200-399, insecure_skip_verify: true}\n  \
interval: 5s\n  \
fall: 2\n  \
rise: 1"
)]
pub struct LvscareArgs {
    /// Virtual server IP:PORT that clients dial [default: 10.103.97.2:6443]
    #[arg(long, value_name = "IP:PORT")]
    pub vs: Option<SocketAddr>,

    /// A real server IP:PORT (a master's apiserver); repeat, or separate with commas
    #[arg(long, value_name = "IP:PORT", value_delimiter = ',')]
    pub rs: Vec<SocketAddr>,

    /// How new connections are spread [default: rr]
    #[arg(long, value_enum)]
    pub scheduler: Option<Scheduler>,

    /// Time between probe rounds, e.g. 5s, 500ms [default: 5s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Option<Duration>,

    /// HTTP path to GET [default: /healthz]
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,

    /// How to probe: https, http, or tcp (connect only) [default: https]
    #[arg(long, value_enum, alias = "health-schem")]
    pub health_scheme: Option<HealthScheme>,

    /// Give up on one probe after this long [default: 2s]
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub health_timeout: Option<Duration>,

    /// Accepted HTTP status codes: list and ranges, e.g. 200,401 or 200-399 [default: 200-399]
    #[arg(long, value_parser = parse_status, value_name = "CODES")]
    pub health_status: Option<StatusSet>,

    /// Do not verify the server certificate (needed when no --ca-file is at hand,
    /// e.g. on a worker before it joins; the probe sends no credentials)
    #[arg(long)]
    pub insecure_skip_verify: bool,

    /// PEM file of CAs that sign the masters' serving certificates (e.g. /etc/kubernetes/pki/ca.crt)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Consecutive failed probes before a server is removed [default: 2]
    #[arg(long, value_name = "N")]
    pub fall: Option<u32>,

    /// Consecutive good probes before a removed or drained server returns [default: 1]
    #[arg(long, value_name = "N")]
    pub rise: Option<u32>,

    /// Set up the virtual server, probe once, apply, and exit
    #[arg(long)]
    pub run_once: bool,

    /// Remove the virtual server, bale's nftables table and the VIP route/link, then exit
    #[arg(long, short = 'C')]
    pub clean: bool,

    /// Data plane: auto (IPVS if the kernel has it, else nftables), ipvs, nftables [default: auto]
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,

    /// How this node reaches the VIP: route (/32 via the node address) or link (dummy interface) [default: route]
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,

    /// Node address the VIP route points at [default: the source address the kernel picks towards the first real server]
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<Ipv4Addr>,

    /// YAML or JSON file with the same settings (vs, rs, health, ...); reloaded on SIGHUP
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Name of a second guardian on this node (1-10 lowercase letters or digits, e.g.
    /// registry): it owns table ip bale_lvscare_NAME and link bale-NAME instead of the
    /// plain ones, so it and the first guardian never touch each other's rules; give it to
    /// --clean too
    #[arg(long, value_name = "NAME")]
    pub instance: Option<String>,
}

/// `--scheduler`; the names and help of [`bale_lvscare::Scheduler`]'s settable values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections (IPVS only; nftables falls back to round robin).
    Lc,
    /// Source hashing: one client keeps one master.
    Sh,
}

/// `--health-scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthScheme {
    /// TLS then `GET <path>`; the apiserver's own port speaks only TLS.
    Https,
    /// Plain `GET <path>`.
    Http,
    /// TCP connect only: proves something listens, not that it is healthy.
    Tcp,
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// IPVS when the kernel has it, else nftables.
    Auto,
    /// IPVS over generic netlink (needs the ip_vs module).
    Ipvs,
    /// An nftables table `ip bale_lvscare` (needs the `nft` tool).
    Nftables,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A /32 route to the VIP via this node's own address: no interface, no
    /// address that other hosts could see.
    Route,
    /// A dummy interface `bale-lvs0` holding the VIP (what kube-proxy's IPVS
    /// mode does with kube-ipvs0).
    Link,
}

impl From<Scheduler> for bale_lvscare::Scheduler {
    fn from(s: Scheduler) -> Self {
        match s {
            Scheduler::Rr => Self::Rr,
            Scheduler::Wrr => Self::Wrr,
            Scheduler::Lc => Self::Lc,
            Scheduler::Sh => Self::Sh,
        }
    }
}

impl From<HealthScheme> for bale_lvscare::HealthScheme {
    fn from(s: HealthScheme) -> Self {
        match s {
            HealthScheme::Https => Self::Https,
            HealthScheme::Http => Self::Http,
            HealthScheme::Tcp => Self::Tcp,
        }
    }
}

impl From<Backend> for bale_lvscare::BackendKind {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => Self::Auto,
            Backend::Ipvs => Self::Ipvs,
            Backend::Nftables => Self::Nftables,
        }
    }
}

impl From<Mode> for bale_lvscare::VipMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Route => Self::Route,
            Mode::Link => Self::Link,
        }
    }
}

impl From<LvscareArgs> for bale_lvscare::Options {
    fn from(a: LvscareArgs) -> Self {
        bale_lvscare::Options {
            vs: a.vs,
            rs: a.rs,
            scheduler: a.scheduler.map(Into::into),
            interval: a.interval,
            health_path: a.health_path,
            health_scheme: a.health_scheme.map(Into::into),
            health_timeout: a.health_timeout,
            health_status: a.health_status,
            insecure_skip_verify: a.insecure_skip_verify,
            ca_file: a.ca_file,
            fall: a.fall,
            rise: a.rise,
            run_once: a.run_once,
            clean: a.clean,
            backend: a.backend.map(Into::into),
            mode: a.mode.map(Into::into),
            node_ip: a.node_ip,
            config: a.config,
            instance: a.instance,
        }
    }
}

/// Runs the guardian until it is stopped (or once, or `--clean`).
pub fn run(args: LvscareArgs) -> anyhow::Result<()> {
    bale_lvscare::run(args.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: LvscareArgs,
    }

    fn options(v: &[&str]) -> bale_lvscare::Options {
        Cli::try_parse_from(std::iter::once("lvscare").chain(v.iter().copied()))
            .unwrap()
            .a
            .into()
    }

    #[test]
    fn help_text_teaches() {
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "--fall",
            "--health-status",
            "last good set",
            "--clean",
            "SIGHUP",
            "Least connections",
            "kube-ipvs0",
        ] {
            assert!(help.contains(needle), "help lacks {needle}");
        }
    }

    #[test]
    fn lvscare_spelling_of_scheme_is_accepted() {
        let o = options(&["--health-schem", "http", "-C"]);
        assert_eq!(o.health_scheme, Some(bale_lvscare::HealthScheme::Http));
        assert!(o.clean);
    }

    /// Every flag arrives in the options, and the resolved config shows it won.
    #[test]
    fn flags_reach_the_guardian() {
        let o = options(&[
            "--vs",
            "10.103.97.9:6443",
            "--rs",
            "10.0.0.2:6443",
            "--rs",
            "10.0.0.1:6443,10.0.0.3:6443",
            "--scheduler",
            "wrr",
            "--interval",
            "500ms",
            "--health-path",
            "/readyz",
            "--health-scheme",
            "tcp",
            "--health-timeout",
            "1s",
            "--health-status",
            "200,401",
            "--fall",
            "3",
            "--rise",
            "2",
            "--backend",
            "nftables",
            "--mode",
            "link",
            "--node-ip",
            "10.0.0.9",
            "--instance",
            "registry",
            "--run-once",
        ]);
        let c = bale_lvscare::Config::resolve(&o).unwrap();
        assert_eq!(c.vs, "10.103.97.9:6443".parse().unwrap());
        assert_eq!(c.rs.len(), 3);
        assert_eq!(c.rs[0].0, "10.0.0.1:6443".parse().unwrap());
        assert_eq!(c.scheduler, bale_lvscare::Scheduler::Wrr);
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.health.path, "/readyz");
        assert_eq!(c.health.scheme, bale_lvscare::HealthScheme::Tcp);
        assert_eq!(c.health.timeout, Duration::from_secs(1));
        assert!(c.health.status.contains(401) && !c.health.status.contains(302));
        assert_eq!((c.fall, c.rise), (3, 2));
        assert_eq!(c.backend, bale_lvscare::BackendKind::Nftables);
        assert_eq!(c.mode, bale_lvscare::VipMode::Link);
        assert_eq!(c.node_ip, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(c.names.link, "bale-registry");
        assert!(c.run_once);
    }

    #[test]
    fn bad_values_are_usage_errors_that_say_why() {
        let e = |v: &[&str]| {
            let args = std::iter::once("lvscare").chain(v.iter().copied());
            Cli::try_parse_from(args).err().map(|e| e.to_string())
        };
        let msg = e(&["--interval", "5 parsecs"]).expect("refused");
        assert!(msg.contains("unknown unit"), "{msg}");
        let msg = e(&["--health-status", "300-200"]).expect("refused");
        assert!(msg.contains("backwards"), "{msg}");
        let msg = e(&["--scheduler", "other"]).expect("refused");
        assert!(msg.contains("rr, wrr, lc, sh"), "{msg}");
    }
}
