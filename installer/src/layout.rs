//! The data dir on a node (`--data-dir`, `/var/lib/bale` unless told otherwise): every name bale
//! keeps there is named here once, so the phases that write them, the agent that reads them and
//! `reset`, which removes exactly these, cannot drift apart.

/// Where the bundle, the journal and the node's context live unless `--data-dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/bale";

/// The bundle itself, which is also the node's agent program.
pub const BUNDLE: &str = "bundle.bale";
/// The copy agent's bundle while it arrives.
pub const BUNDLE_PARTIAL: &str = ".bundle.bale.partial";
/// The copy agent's record of which chunks arrived, and its temp name.
pub const COPY_STATE: &str = ".bundle.bale.copy.json";
pub const COPY_STATE_TMP: &str = ".bundle.bale.copy.json.tmp";
/// The copy agent's lock (one copy into a data dir at a time).
pub const COPY_LOCK: &str = ".bundle.bale.copy.lock";
/// Which phases are done for which bundle, and its temp name.
pub const JOURNAL: &str = "journal.json";
pub const JOURNAL_TMP: &str = ".journal.json.tmp";
/// The node's place in the cluster (role, masters, workers, VIPs), and its temp name.
pub const NODE_CONTEXT: &str = "node.json";
pub const NODE_CONTEXT_TMP: &str = ".node.json.tmp";
/// The bundle's tree, where hooks and apps run; `.part` while it is extracted, `.old` while
/// the previous tree is swapped out.
pub const ROOTFS: &str = "rootfs";
pub const ROOTFS_PART: &str = "rootfs.part";
pub const ROOTFS_OLD: &str = "rootfs.old";
/// Each node step's record of what it made, for its undo.
pub const STEPS: &str = "steps";

/// Everything bale writes in the data dir: `reset` removes these (the directory itself only
/// when nothing else is in it: it may be a mount point, or hold the user's files).
pub const ALL: &[&str] = &[
    BUNDLE,
    BUNDLE_PARTIAL,
    COPY_STATE,
    COPY_STATE_TMP,
    COPY_LOCK,
    ROOTFS,
    ROOTFS_PART,
    ROOTFS_OLD,
    JOURNAL,
    JOURNAL_TMP,
    NODE_CONTEXT,
    NODE_CONTEXT_TMP,
    STEPS,
];

/// `name` inside `data_dir`, for scripts run on the node.
pub fn path(data_dir: &str, name: &str) -> String {
    format!("{}/{name}", data_dir.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_listed_once_and_is_a_plain_name() {
        let mut names = ALL.to_vec();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for n in ALL {
            assert!(
                !n.is_empty() && !n.contains('/') && *n != "." && *n != "..",
                "{n}"
            );
        }
        assert_eq!(
            path("/var/lib/bale/", JOURNAL),
            "/var/lib/bale/journal.json"
        );
    }
}
