//! `bale reset`: undoes every node step on the hosts (newest first, by the bundle on the node),
//! runs the clean hooks and removes bale's files; a host with nothing of bale's left is
//! skipped, so a second reset is a no-op. This and `delete` are the only ways bale uninstalls.

use crate::run::{confirm, execute, hosts_phrase, prepare, RunResult, Target};
use crate::site::Vips;
use std::path::PathBuf;

const RESET_HELP: &str = "\
Undoes the install on the hosts: stops and removes the lvscare guard, the registry unit, the
container runtime bale installed (with its state), the kernel settings bale persisted, then
bale's files in the data dir. PreClean and PostClean hooks run around it. Safe to repeat.";

#[derive(Debug, clap::Args)]
#[command(after_help = RESET_HELP)]
pub struct ResetArgs {
    #[command(flatten)]
    pub target: Target,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
}

pub fn reset(args: ResetArgs, this_bundle: Option<PathBuf>) -> RunResult<()> {
    let t = &args.target;
    confirm(
        &format!("remove everything bale installed on {}", hosts_phrase(t)),
        args.yes,
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
