//! `bale install`: parse the hosts, then run the install phases on every host over SSH (or on
//! this machine when no host is given).

use crate::clusterfile::Clusterfile;
use crate::engine::{BundleInfo, Ctx, Event, Manager, Node, Reporter};
use crate::hosts::{self, Secret, SshOverrides};
use crate::site::{Site, Vips};
use crate::ssh::{sq, SshOptions};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::Arc;

pub const PASSWORD_ENV: &str = "BALE_SSH_PASSWORD";

const AFTER_HELP: &str = "\
Hosts: --masters 10.0.0.2,10.0.0.3 --nodes 10.0.0.5-10.0.0.9, or -f Clusterfile (sealer.io/v2).
No hosts: install on this machine only.
Passwords are never taken on the command line: --password-file FILE or BALE_SSH_PASSWORD.
Completed phases are recorded on each host (<data-dir>/journal.json) and skipped on a re-run.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct InstallArgs {
    #[command(flatten)]
    pub target: Target,
    /// Preflight checks to ignore, comma-separated (arch, os, kernel, disk, tmp, hostname,
    /// clock, ports, systemd, conflicts, reach, features)
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',')]
    pub ignore_preflight: Vec<String>,
    /// Stop after this phase, e.g. `--until upload` to stage the bundle on every host ahead of
    /// a maintenance window (a later run goes on from there)
    #[arg(long, value_name = "PHASE")]
    pub until: Option<String>,
    /// The API servers' virtual IP: every worker's guardian (bale-lvscare.service) keeps
    /// VIP:6443 pointing at the healthy masters, and apiserver.cluster.local names it
    #[arg(long, value_name = "IP", default_value_t = crate::node::context::DEFAULT_VIP)]
    pub vip: std::net::Ipv4Addr,
    /// Also guard the masters' registries behind this virtual IP (at the registry port, 5050):
    /// each worker gets a second guardian (bale-lvscare-registry.service), and its containerd
    /// pulls through the VIP whenever the worker's own registry does not answer. Off unless
    /// given; a later install without it removes that guardian
    #[arg(long, value_name = "IP")]
    pub registry_vip: Option<std::net::Ipv4Addr>,
}

/// A registry VIP for messages: the next address after the default API-server VIP.
const REGISTRY_VIP_EXAMPLE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 103, 97, 3);

impl InstallArgs {
    /// The VIPs asked for, checked against each other.
    fn vips(&self) -> Result<Vips> {
        let usable = |flag: &str, ip: std::net::Ipv4Addr, e_g: std::net::Ipv4Addr| {
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
                bail!(
                    "{flag} {ip}: a virtual IP must be a unicast address that is not loopback \
                     (e.g. {e_g})"
                );
            }
            Ok(())
        };
        usable("--vip", self.vip, crate::node::context::DEFAULT_VIP)?;
        if let Some(r) = self.registry_vip {
            usable("--registry-vip", r, REGISTRY_VIP_EXAMPLE)?;
            if r == self.vip {
                bail!(
                    "--registry-vip {r} is also --vip: the registries need a VIP of their own \
                     (e.g. {REGISTRY_VIP_EXAMPLE})"
                );
            }
        }
        Ok(Vips {
            apiserver: self.vip.into(),
            registry: self.registry_vip.map(Into::into),
        })
    }
}

/// The hosts of a run and how to reach them (shared by install, reset and check).
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// Control-plane hosts: addresses and ranges, comma-separated
    #[arg(short = 'm', long)]
    pub masters: Option<String>,
    /// Worker hosts: addresses and ranges, comma-separated
    #[arg(short = 'n', long)]
    pub nodes: Option<String>,
    /// A Clusterfile (apiVersion sealer.io/v2, kind Cluster) with hosts and per-host login
    #[arg(short = 'f', long = "clusterfile", value_name = "FILE")]
    pub clusterfile: Option<PathBuf>,
    /// Login user [default: root]
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// SSH port [default: 22]
    #[arg(long)]
    pub port: Option<u16>,
    /// Private key file
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// File holding the private key's passphrase
    #[arg(long, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
    /// File holding the login (and sudo) password
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run privileged commands through sudo (the default for users other than root)
    #[arg(long)]
    pub sudo: bool,
    /// known_hosts file that host keys are checked against [default: ~/.ssh/known_hosts]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Record host keys never seen before (a changed key is still refused)
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds to wait for an SSH connection
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u32,
    /// Where the bundle and the journal go on each host
    #[arg(long, default_value = "/var/lib/bale")]
    pub data_dir: String,
    /// Hosts worked on at the same time
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
    /// Connect and check, then print what would be done on each host
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object per event on stdout
    #[arg(long)]
    pub json: bool,
}

fn home_known_hosts() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".ssh/known_hosts")
}

/// Everything a run over the hosts needs, ready to go.
pub struct Prepared {
    pub ctx: Arc<Ctx>,
    pub nodes: Vec<Node>,
}

/// Runs the install with the bundle at `this_bundle` (the running program when it is one).
pub fn run(args: InstallArgs, this_bundle: Option<PathBuf>) -> Result<()> {
    for name in &args.ignore_preflight {
        if !crate::preflight::CHECKS.contains(&name.as_str()) {
            bail!(
                "--ignore-preflight: unknown check {name:?} (checks: {})",
                crate::preflight::CHECKS.join(", ")
            );
        }
    }
    let mut phases = crate::phases::install();
    if let Some(last) = &args.until {
        let Some(i) = phases.iter().position(|p| p.title() == last) else {
            let names: Vec<&str> = phases.iter().map(|p| p.title()).collect();
            bail!(
                "--until: no phase {last:?} (the phases, in order: {})",
                names.join(", ")
            );
        };
        phases.truncate(i + 1);
    }
    let t = &args.target;
    let vips = args.vips()?;
    let p = prepare(
        t,
        &args.ignore_preflight,
        this_bundle,
        "install",
        vips.clone(),
    )?;
    // Only install sets VIPs up; reset, delete and check pass the defaults and must not trip
    // on them.
    if let Some(clash) = p
        .nodes
        .iter()
        .filter_map(|n| n.host.as_ref().map(|h| h.addr))
        .find(|a| *a == vips.apiserver || Some(*a) == vips.registry)
    {
        bail!("{clash} is a host and a virtual IP at once: pick a --vip / --registry-vip that no host has");
    }
    execute(p, phases, t.dry_run, t.parallel, "install")
}

/// Reads the bundle, the hosts and the Clusterfile, and builds the nodes of the run.
pub fn prepare(
    args: &Target,
    ignore_preflight: &[String],
    this_bundle: Option<PathBuf>,
    verb: &str,
    vips: Vips,
) -> Result<Prepared> {
    let bundle_path = this_bundle.with_context(|| {
        format!("this bale program carries no payload: run {verb} from a bundle (./app.bale {verb} ...)")
    })?;
    let bundle = bale_payload::Bundle::open(&bundle_path)
        .with_context(|| format!("{}", bundle_path.display()))?;
    let info = BundleInfo::of(&bundle);
    if !args.data_dir.starts_with('/') || args.data_dir.len() < 2 {
        bail!(
            "--data-dir: {:?} must be an absolute path below /",
            args.data_dir
        );
    }
    let data_dir = args.data_dir.trim_end_matches('/').to_string();

    let password = match (&args.password_file, Secret::take_env(PASSWORD_ENV)) {
        (Some(f), _) => Some(Secret::from_file("--password-file", f)?),
        (None, p) => p,
    };
    let flags = SshOverrides {
        user: args.user.clone(),
        port: args.port,
        key: args.key.clone(),
        key_passphrase: args
            .key_passphrase_file
            .as_deref()
            .map(|f| Secret::from_file("--key-passphrase-file", f))
            .transpose()?,
        password,
        sudo: args.sudo.then_some(true),
    };
    let mut cluster_env = Vec::new();
    let mut cluster_text = None;
    let mut warnings = Vec::new();
    let host_list = match &args.clusterfile {
        Some(f) => {
            let cf = Clusterfile::load(f)?;
            cluster_env = cf.env.clone();
            cluster_text =
                Some(std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?);
            warnings = cf.warnings.clone();
            cf.host_list(args.masters.as_deref(), args.nodes.as_deref(), &flags)?
        }
        None => hosts::from_flags(args.masters.as_deref(), args.nodes.as_deref(), &flags)?,
    };
    if let Some(k) = host_list
        .iter()
        .filter_map(|h| h.ssh.key.as_ref())
        .find(|k| !k.is_file())
    {
        bail!("key {}: no such file", k.display());
    }

    let cf_name = args
        .clusterfile
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    let mut site = Site::load(
        &bundle,
        &host_list,
        cluster_text.as_deref().map(|t| (cf_name.as_str(), t)),
        &cluster_env,
    )?;
    drop(bundle);
    site.vips = vips;
    let ctx = Arc::new(Ctx {
        bundle: info,
        data_dir,
        ssh: SshOptions {
            known_hosts: args.known_hosts.clone().unwrap_or_else(home_known_hosts),
            accept_new_host_keys: args.accept_new_host_keys,
            connect_timeout_secs: args.connect_timeout.max(1),
            askpass_exe: std::env::current_exe().context("locate this program for SSH_ASKPASS")?,
        },
        ignore_preflight: ignore_preflight.to_vec(),
        peers: host_list.iter().map(|h| (h.addr, h.ssh.port)).collect(),
        reporter: Reporter::new(args.json),
        site,
    });
    for w in warnings.iter().chain(&ctx.site.warnings) {
        ctx.reporter.emit(&Event::Info {
            node: "site",
            message: &format!("warning: {w}"),
        });
    }
    let nodes: Vec<Node> = if host_list.is_empty() {
        vec![Node::new(0, None, ctx.clone())]
    } else {
        host_list
            .into_iter()
            .enumerate()
            .map(|(i, h)| Node::new(i, Some(h), ctx.clone()))
            .collect()
    };
    Ok(Prepared { ctx, nodes })
}

/// Runs `phases` on the prepared nodes and reports; an error when any node failed.
pub fn execute(
    p: Prepared,
    phases: Vec<Box<dyn crate::engine::Phase>>,
    dry_run: bool,
    parallel: usize,
    verb: &str,
) -> Result<()> {
    let Prepared { ctx, nodes } = p;
    let manager = Manager {
        phases,
        parallel: parallel.max(1),
        dry_run,
    };
    let report = manager.run(&nodes);
    // Close every session before the summary.
    for n in &nodes {
        n.set_conn(None);
    }
    let retry = (!report.success()).then(retry_command);
    ctx.reporter.emit(&Event::Summary {
        verb,
        ok: &report.ok,
        failed: &report.failed,
        stopped: report.stopped.as_deref(),
        retry: retry.as_deref(),
        timings: &report.timings,
    });
    if let Some(s) = &report.stopped {
        bail!("{verb} stopped: {s}");
    }
    if !report.failed.is_empty() {
        bail!(
            "{verb} failed on {} of {} host(s)",
            report.failed.len(),
            nodes.len()
        );
    }
    Ok(())
}

/// The command line of this run, quoted for a shell (it never holds a secret).
fn retry_command() -> String {
    std::env::args()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
            {
                a
            } else {
                sq(&a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: InstallArgs,
    }

    fn vips(v: &[&str]) -> Result<Vips> {
        let cli = Cli::try_parse_from(std::iter::once("install").chain(v.iter().copied()))
            .expect("flags parse");
        cli.a.vips()
    }

    #[test]
    fn vips_default_and_are_checked_against_each_other() {
        let v = vips(&[]).unwrap();
        assert_eq!(v, Vips::default());
        let v = vips(&["--vip", "10.96.0.2", "--registry-vip", "10.96.0.3"]).unwrap();
        assert_eq!(v.apiserver.to_string(), "10.96.0.2");
        assert_eq!(
            v.registry.map(|r| r.to_string()).as_deref(),
            Some("10.96.0.3")
        );
        let e = |v: &[&str]| vips(v).unwrap_err().to_string();
        assert!(e(&["--registry-vip", "10.103.97.2"]).contains("is also --vip"));
        assert!(e(&["--vip", "127.0.0.1"]).contains("--vip 127.0.0.1"));
        assert!(e(&["--registry-vip", "0.0.0.0"]).contains("--registry-vip"));
        assert!(Cli::try_parse_from(["install", "--registry-vip", "fd00::1"]).is_err());
    }
}
