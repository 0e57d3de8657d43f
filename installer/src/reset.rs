//! `bale reset`: undoes every node step on the hosts (newest first, by the bundle on the node),
//! runs the clean hooks and removes bale's files; a host with nothing of bale's left is
//! skipped, so a second reset is a no-op. This and `delete` are the only ways bale uninstalls.

use crate::run::{confirm, execute, hosts_phrase, prepare, RunResult, Target};
use crate::site::Vips;
use std::path::PathBuf;

/// What `bale reset` and `bale delete` were asked to do.
#[derive(Debug, Clone, Default)]
pub struct ResetOptions {
    /// The hosts and how to reach them.
    pub target: Target,
    /// Do not ask for confirmation.
    pub yes: bool,
}

pub fn reset(opts: ResetOptions, this_bundle: Option<PathBuf>) -> RunResult<()> {
    let t = &opts.target;
    confirm(
        &format!("remove everything bale installed on {}", hosts_phrase(t)),
        opts.yes,
        t.dry_run,
    )?;
    let p = prepare(t, &[], this_bundle, "reset", Vips::default())?;
    execute(
        p,
        crate::phases::reset("reset"),
        t.dry_run,
        t.parallel,
        "reset",
    )
}
