//! `bale install`: parse the hosts, then run the install phases on every host over SSH (or on
//! this machine when no host is given).

use crate::run::{execute, prepare, RunError, RunResult, Target};
use crate::site::Vips;
use std::path::PathBuf;

pub use crate::run::PASSWORD_ENV;

const AFTER_HELP: &str = "\
Hosts: --masters 10.0.0.2,10.0.0.3 --nodes 10.0.0.5-10.0.0.9, or -f Clusterfile (sealer.io/v2).
No hosts: install on this machine only.
Passwords are never taken on the command line: --password-file FILE or BALE_SSH_PASSWORD.
Completed phases are recorded on each host (<data-dir>/journal.json) and skipped on a re-run.
A failure never uninstalls: the host is left as it is, and the same command, run again once
the cause is fixed, goes on from there. Only reset and delete take things apart.";

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
    fn vips(&self) -> RunResult<Vips> {
        let usable = |flag: &'static str, ip: std::net::Ipv4Addr, example| {
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() {
                return Err(RunError::BadVip { flag, ip, example });
            }
            Ok(())
        };
        usable("--vip", self.vip, crate::node::context::DEFAULT_VIP)?;
        if let Some(r) = self.registry_vip {
            usable("--registry-vip", r, REGISTRY_VIP_EXAMPLE)?;
            if r == self.vip {
                return Err(RunError::SameVip(r, REGISTRY_VIP_EXAMPLE));
            }
        }
        Ok(Vips {
            apiserver: self.vip.into(),
            registry: self.registry_vip.map(Into::into),
        })
    }
}

/// Runs the install with the bundle at `this_bundle` (the running program when it is one).
pub fn run(args: InstallArgs, this_bundle: Option<PathBuf>) -> RunResult<()> {
    for name in &args.ignore_preflight {
        if !crate::preflight::CHECKS.contains(&name.as_str()) {
            return Err(RunError::UnknownCheck {
                name: name.clone(),
                known: crate::preflight::CHECKS.join(", "),
            });
        }
    }
    let mut phases = crate::phases::install();
    if let Some(last) = &args.until {
        let Some(i) = phases.iter().position(|p| p.title() == last) else {
            let names: Vec<&str> = phases.iter().map(|p| p.title()).collect();
            return Err(RunError::UnknownPhase {
                phase: last.clone(),
                known: names.join(", "),
            });
        };
        phases.truncate(i + 1);
    }
    // Before any host is contacted: a bundle that trust refuses never reaches one.
    if let Some(path) = &this_bundle {
        trust_gate(path)?;
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
        return Err(RunError::HostIsVip(clash));
    }
    execute(p, phases, t.dry_run, t.parallel, "install")
}

/// Refuses the bundle at `path` when trust is configured (keys baked into this program,
/// `BALE_TRUSTED_KEYS`, `/etc/bale/trusted-keys/`) and it is not signed by a trusted key.
pub fn trust_gate(path: &std::path::Path) -> RunResult<()> {
    let fail = |source| RunError::Trust {
        path: path.to_path_buf(),
        source,
    };
    let bundle = bale_payload::Bundle::open(path).map_err(|source| RunError::Bundle {
        path: path.to_path_buf(),
        source,
    })?;
    let policy = bale_trust::TrustPolicy::system().map_err(fail)?;
    bale_trust::enforce(&bundle, &policy).map_err(fail)?;
    Ok(())
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

    fn vips(v: &[&str]) -> RunResult<Vips> {
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
