//! `bale install`: parse the hosts, then run the install phases on every host over SSH (or on
//! this machine when no host is given).

use crate::run::{execute, prepare, RunError, RunResult, Target};
use crate::site::Vips;
use std::path::PathBuf;

pub use crate::run::PASSWORD_ENV;

/// What `bale install` was asked to do.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The hosts and how to reach them.
    pub target: Target,
    /// Preflight checks to ignore, by name (see [`crate::preflight::CHECKS`]).
    pub ignore_preflight: Vec<String>,
    /// Stop after the phase of this title (a later run goes on from there).
    pub until: Option<String>,
    /// The API servers' virtual IP, guarded by every worker's lvscare.
    pub vip: std::net::Ipv4Addr,
    /// A second virtual IP in front of the masters' registries; `None`: no registry guard.
    pub registry_vip: Option<std::net::Ipv4Addr>,
}

impl Default for InstallOptions {
    /// This machine only, with the defaults of the command line.
    fn default() -> Self {
        InstallOptions {
            target: Target::default(),
            ignore_preflight: Vec::new(),
            until: None,
            vip: crate::node::context::DEFAULT_VIP,
            registry_vip: None,
        }
    }
}

/// A registry VIP for messages: the next address after the default API-server VIP.
const REGISTRY_VIP_EXAMPLE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 103, 97, 3);

impl InstallOptions {
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
pub fn run(opts: InstallOptions, this_bundle: Option<PathBuf>) -> RunResult<()> {
    for name in &opts.ignore_preflight {
        if !crate::preflight::CHECKS.contains(&name.as_str()) {
            return Err(RunError::UnknownCheck {
                name: name.clone(),
                known: crate::preflight::CHECKS.join(", "),
            });
        }
    }
    let mut phases = crate::phases::install();
    if let Some(last) = &opts.until {
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
    let t = &opts.target;
    let vips = opts.vips()?;
    let p = prepare(
        t,
        &opts.ignore_preflight,
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
    let members = (!t.dry_run).then(|| cluster_members(&p.nodes)).flatten();
    execute(p, phases, t.dry_run, t.parallel, "install")?;
    if let Some(m) = members {
        crate::records::keep(Some(&m), &[]);
    }
    Ok(())
}

/// The hosts of an install as the record of the cluster; `None` on this machine alone or with
/// no master (nothing a later delete could follow).
fn cluster_members(nodes: &[crate::engine::Node]) -> Option<crate::records::ClusterMembers> {
    let hosts = || nodes.iter().filter_map(|n| n.host.as_ref());
    let of = |role| {
        hosts()
            .filter(|h| h.role == role)
            .map(|h| h.addr.to_string())
            .collect::<Vec<_>>()
    };
    let m = crate::records::ClusterMembers {
        masters: of(crate::hosts::Role::Master),
        nodes: of(crate::hosts::Role::Node),
    };
    (!m.masters.is_empty()).then_some(m)
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

    fn vips(vip: &str, registry_vip: Option<&str>) -> RunResult<Vips> {
        InstallOptions {
            vip: vip.parse().expect("an IPv4 address"),
            registry_vip: registry_vip.map(|r| r.parse().expect("an IPv4 address")),
            ..InstallOptions::default()
        }
        .vips()
    }

    #[test]
    fn vips_default_and_are_checked_against_each_other() {
        let v = InstallOptions::default().vips().unwrap();
        assert_eq!(v, Vips::default());
        let v = vips("10.96.0.2", Some("10.96.0.3")).unwrap();
        assert_eq!(v.apiserver.to_string(), "10.96.0.2");
        assert_eq!(
            v.registry.map(|r| r.to_string()).as_deref(),
            Some("10.96.0.3")
        );
        let default_vip = crate::node::context::DEFAULT_VIP.to_string();
        let e = |vip: &str, registry_vip| vips(vip, registry_vip).unwrap_err().to_string();
        assert!(e(&default_vip, Some("10.103.97.2")).contains("is also --vip"));
        assert!(e("127.0.0.1", None).contains("--vip 127.0.0.1"));
        assert!(e(&default_vip, Some("0.0.0.0")).contains("--registry-vip"));
    }
}
