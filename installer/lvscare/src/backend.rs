//! The data-plane seam: one small trait that both IPVS and nftables
//! implement, and the reconcile step that turns "what the health logic
//! wants" into the fewest changes against "what the kernel has".

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::netlink::NetlinkError;
use crate::nft::NftError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin.
    #[default]
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections (IPVS only; nftables falls back to round robin).
    Lc,
    /// Source hashing: one client keeps one master.
    Sh,
    /// Found in the kernel but not one bale sets; never requested.
    #[serde(skip)]
    Other,
}

impl Scheduler {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Sh => "sh",
            Scheduler::Other => "other",
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown scheduler {0:?} (rr, wrr, lc, sh)")]
pub struct UnknownScheduler(String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, UnknownScheduler> {
        match s {
            "rr" => Ok(Scheduler::Rr),
            "wrr" => Ok(Scheduler::Wrr),
            "lc" => Ok(Scheduler::Lc),
            "sh" => Ok(Scheduler::Sh),
            other => Err(UnknownScheduler(other.to_string())),
        }
    }
}

/// A virtual server and its destinations with weights. Weight 0 means
/// "drained": present, but given no new connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub vs: SocketAddr,
    pub scheduler: Scheduler,
    pub dests: BTreeMap<SocketAddr, u32>,
}

/// Why a data plane could not be opened, read or changed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("IPVS over netlink")]
    Netlink(#[from] NetlinkError),
    #[error(
        "the kernel has no IPVS (no /proc/net/ip_vs and the IPVS netlink family does not \
         resolve, not even by loading ip_vs); use --backend nftables"
    )]
    NoIpvs,
    #[error("nftables")]
    Nft(#[from] NftError),
    #[error("the nftables backend handles IPv4 only, got {0}")]
    NotIpv4(SocketAddr),
    /// A change to a virtual server that the backend does not hold (a bug in the caller).
    #[error("no virtual server {0} to change")]
    NoService(SocketAddr),
    /// An addition of what is already there (a bug in the caller), as IPVS's EEXIST.
    #[cfg(test)]
    #[error("{0} exists")]
    Exists(SocketAddr),
}

/// What a data plane must offer. Mutations may be buffered until `commit`
/// (nftables applies them as one atomic transaction); IPVS applies each at
/// once and has nothing to commit.
pub trait Backend {
    fn name(&self) -> &'static str;
    /// What the kernel currently has for `vs`, or `None` if no such service.
    fn list_service(&mut self, vs: SocketAddr) -> Result<Option<ServiceState>, BackendError>;
    fn create_service(&mut self, vs: SocketAddr, sched: Scheduler) -> Result<(), BackendError>;
    fn update_service(&mut self, vs: SocketAddr, sched: Scheduler) -> Result<(), BackendError>;
    fn delete_service(&mut self, vs: SocketAddr) -> Result<(), BackendError>;
    fn add_dest(&mut self, vs: SocketAddr, rs: SocketAddr, weight: u32)
        -> Result<(), BackendError>;
    fn update_dest(
        &mut self,
        vs: SocketAddr,
        rs: SocketAddr,
        weight: u32,
    ) -> Result<(), BackendError>;
    fn delete_dest(&mut self, vs: SocketAddr, rs: SocketAddr) -> Result<(), BackendError>;
    fn commit(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
    /// Removes everything this backend owns for `vs` (`--clean`).
    fn clean(&mut self, vs: SocketAddr) -> Result<(), BackendError>;
}

/// Brings the kernel to `desired` and returns a line per change made (empty
/// when it already matched). Works from what `list_service` reports, so state
/// left by an earlier run (even one killed with -9) is adopted: existing
/// entries are kept or corrected, never added twice.
pub fn reconcile(
    backend: &mut dyn Backend,
    desired: &ServiceState,
) -> Result<Vec<String>, BackendError> {
    let vs = desired.vs;
    let mut changes = Vec::new();
    match backend.list_service(vs)? {
        None => {
            backend.create_service(vs, desired.scheduler)?;
            changes.push(format!("created service {vs} ({})", desired.scheduler));
            for (rs, w) in &desired.dests {
                backend.add_dest(vs, *rs, *w)?;
                changes.push(format!("added {rs} weight {w}"));
            }
        }
        Some(cur) => {
            if cur.scheduler != desired.scheduler {
                backend.update_service(vs, desired.scheduler)?;
                changes.push(format!(
                    "scheduler {} -> {}",
                    cur.scheduler, desired.scheduler
                ));
            }
            for rs in cur.dests.keys() {
                if !desired.dests.contains_key(rs) {
                    backend.delete_dest(vs, *rs)?;
                    changes.push(format!("removed {rs}"));
                }
            }
            for (rs, w) in &desired.dests {
                match cur.dests.get(rs) {
                    None => {
                        backend.add_dest(vs, *rs, *w)?;
                        changes.push(format!("added {rs} weight {w}"));
                    }
                    Some(old) if old != w => {
                        backend.update_dest(vs, *rs, *w)?;
                        changes.push(format!("{rs} weight {old} -> {w}"));
                    }
                    Some(_) => {}
                }
            }
        }
    }
    backend.commit()?;
    Ok(changes)
}

/// An in-memory backend: the reconcile logic's test double.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryBackend {
    pub services: BTreeMap<SocketAddr, ServiceState>,
    /// Every mutating call, in order, for assertions.
    pub ops: Vec<String>,
}

#[cfg(test)]
impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn list_service(&mut self, vs: SocketAddr) -> Result<Option<ServiceState>, BackendError> {
        Ok(self.services.get(&vs).cloned())
    }
    fn create_service(&mut self, vs: SocketAddr, sched: Scheduler) -> Result<(), BackendError> {
        self.ops.push(format!("create {vs}"));
        if self.services.contains_key(&vs) {
            return Err(BackendError::Exists(vs));
        }
        self.services.insert(
            vs,
            ServiceState {
                vs,
                scheduler: sched,
                dests: BTreeMap::new(),
            },
        );
        Ok(())
    }
    fn update_service(&mut self, vs: SocketAddr, sched: Scheduler) -> Result<(), BackendError> {
        self.ops.push(format!("update {vs} {sched}"));
        let s = self.svc(vs)?;
        s.scheduler = sched;
        Ok(())
    }
    fn delete_service(&mut self, vs: SocketAddr) -> Result<(), BackendError> {
        self.ops.push(format!("delete {vs}"));
        self.services.remove(&vs);
        Ok(())
    }
    fn add_dest(&mut self, vs: SocketAddr, rs: SocketAddr, w: u32) -> Result<(), BackendError> {
        self.ops.push(format!("add {rs} {w}"));
        let s = self.svc(vs)?;
        if s.dests.insert(rs, w).is_some() {
            // Mirrors IPVS's EEXIST: adding twice is a bug in the caller.
            return Err(BackendError::Exists(rs));
        }
        Ok(())
    }
    fn update_dest(&mut self, vs: SocketAddr, rs: SocketAddr, w: u32) -> Result<(), BackendError> {
        self.ops.push(format!("set {rs} {w}"));
        self.svc(vs)?.dests.insert(rs, w);
        Ok(())
    }
    fn delete_dest(&mut self, vs: SocketAddr, rs: SocketAddr) -> Result<(), BackendError> {
        self.ops.push(format!("del {rs}"));
        self.svc(vs)?.dests.remove(&rs);
        Ok(())
    }
    fn clean(&mut self, vs: SocketAddr) -> Result<(), BackendError> {
        self.ops.push(format!("clean {vs}"));
        self.services.remove(&vs);
        Ok(())
    }
}

#[cfg(test)]
impl MemoryBackend {
    fn svc(&mut self, vs: SocketAddr) -> Result<&mut ServiceState, BackendError> {
        self.services
            .get_mut(&vs)
            .ok_or(BackendError::NoService(vs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn desired(dests: &[(&str, u32)]) -> ServiceState {
        ServiceState {
            vs: sa("10.103.97.2:6443"),
            scheduler: Scheduler::Rr,
            dests: dests.iter().map(|(a, w)| (sa(a), *w)).collect(),
        }
    }

    #[test]
    fn reconcile_creates_from_nothing_then_is_idempotent() {
        let mut b = MemoryBackend::default();
        let d = desired(&[("10.0.0.1:6443", 1), ("10.0.0.2:6443", 1)]);
        let ch = reconcile(&mut b, &d).unwrap();
        assert_eq!(ch.len(), 3);
        b.ops.clear();
        assert!(reconcile(&mut b, &d).unwrap().is_empty());
        assert!(b.ops.is_empty(), "second pass must not touch the kernel");
    }

    #[test]
    fn reconcile_adopts_leftovers_without_duplicates() {
        // As if an earlier run was killed: service exists with a stale dest,
        // a wrong weight and an old scheduler.
        let mut b = MemoryBackend::default();
        let mut old = desired(&[("10.0.0.1:6443", 0), ("10.0.0.9:6443", 1)]);
        old.scheduler = Scheduler::Wrr;
        b.services.insert(old.vs, old);
        let d = desired(&[("10.0.0.1:6443", 1), ("10.0.0.2:6443", 1)]);
        reconcile(&mut b, &d).unwrap();
        assert_eq!(b.services.len(), 1);
        assert_eq!(b.services[&d.vs], d);
        assert!(!b.ops.iter().any(|o| o.starts_with("create")));
        assert!(b.ops.contains(&"del 10.0.0.9:6443".to_string()));
        assert!(b.ops.contains(&"set 10.0.0.1:6443 1".to_string()));
    }

    #[test]
    fn scheduler_parses_and_rejects() {
        assert_eq!("sh".parse::<Scheduler>().unwrap(), Scheduler::Sh);
        assert!("dh".parse::<Scheduler>().is_err());
    }
}
