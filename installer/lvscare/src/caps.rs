//! Least privilege: once the guardian has opened what it needs, it keeps
//! only CAP_NET_ADMIN (IPVS, nftables, routes) and CAP_NET_RAW.
//!
//! Capabilities are per thread in Linux. `run` calls this on the thread that
//! then runs the single-threaded runtime and spawns `nft`, before any other
//! thread exists, so the whole guardian is covered. The two capabilities
//! also go into the inheritable and ambient sets so the `nft` child keeps
//! CAP_NET_ADMIN whether or not it runs as uid 0.

use caps::{CapSet, Capability, CapsHashSet};

/// Which step of the drop failed; the guardian then runs with what it had.
#[derive(Debug, thiserror::Error)]
#[error("dropping capabilities: {step}")]
pub struct CapsError {
    step: &'static str,
    #[source]
    source: caps::errors::CapsError,
}

/// What `drop_to_net_admin` did, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Kept only these in every set.
    Kept(Vec<String>),
    /// The process had no capabilities to drop (not root, no file caps).
    NothingToDrop,
}

const KEEP: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];

pub fn drop_to_net_admin() -> Result<Dropped, CapsError> {
    let e = |step: &'static str, source| CapsError { step, source };
    let permitted = caps::read(None, CapSet::Permitted).map_err(|x| e("read permitted", x))?;
    if permitted.is_empty() {
        return Ok(Dropped::NothingToDrop);
    }
    let keep: CapsHashSet = KEEP
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect();
    // Bounding first: lowering it needs CAP_SETPCAP, which goes next.
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|x| e("bounding", x))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|x| e("clear ambient", x))?;
    caps::set(None, CapSet::Inheritable, &keep).map_err(|x| e("inheritable", x))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|x| e("effective", x))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|x| e("permitted", x))?;
    for cap in &keep {
        // Ambient needs the kernel to allow it (4.3+); without it `nft`
        // still gets the caps when running as uid 0.
        let _ = caps::raise(None, CapSet::Ambient, *cap);
    }
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    names.sort();
    Ok(Dropped::Kept(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs in its own thread: capabilities are per thread, so the rest of
    /// the test process keeps root.
    #[test]
    fn drop_leaves_only_net_caps_in_this_thread() {
        let r = std::thread::spawn(|| {
            let d = drop_to_net_admin().expect("drop");
            let eff = caps::read(None, CapSet::Effective).unwrap();
            let bnd = caps::read(None, CapSet::Bounding).unwrap();
            (d, eff, bnd)
        })
        .join()
        .unwrap();
        match r.0 {
            Dropped::NothingToDrop => eprintln!("SKIP: no capabilities (not root)"),
            Dropped::Kept(k) => {
                assert!(k.contains(&"CAP_NET_ADMIN".to_string()));
                assert!(r.1.iter().all(|c| KEEP.contains(c)), "{:?}", r.1);
                assert!(r.2.iter().all(|c| KEEP.contains(c)), "{:?}", r.2);
                // This thread keeps its root powers.
                assert!(caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap());
            }
        }
    }
}
