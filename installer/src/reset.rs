//! `bale reset`, `bale delete` and `bale check`: runs over the same hosts as an install.
//! reset undoes every node step (newest first, by the bundle on the node), runs the clean hooks
//! and removes bale's files; a host with nothing of bale's left is skipped, so a second reset
//! is a no-op. delete is a reset of the hosts named.

use crate::install::{execute, prepare, Target};
use anyhow::{bail, Result};
use std::io::{BufRead, IsTerminal, Write};
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

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
}

fn confirm(what: &str, yes: bool, dry_run: bool) -> Result<()> {
    if yes || dry_run {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("{what}: add --yes to confirm (no terminal to ask on)");
    }
    eprint!("{what}? [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if !matches!(line.trim(), "y" | "Y" | "yes") {
        bail!("cancelled");
    }
    Ok(())
}

fn hosts_phrase(t: &Target) -> String {
    let mut v = Vec::new();
    if let Some(m) = &t.masters {
        v.push(m.clone());
    }
    if let Some(n) = &t.nodes {
        v.push(n.clone());
    }
    if let Some(f) = &t.clusterfile {
        v.push(format!("the hosts of {}", f.display()));
    }
    if v.is_empty() {
        "this machine".into()
    } else {
        v.join(",")
    }
}

pub fn reset(args: ResetArgs, this_bundle: Option<PathBuf>) -> Result<()> {
    let t = &args.target;
    confirm(
        &format!("remove everything bale installed on {}", hosts_phrase(t)),
        args.yes,
        t.dry_run,
    )?;
    let p = prepare(t, &[], this_bundle, "reset")?;
    execute(p, crate::phases::reset(), t.dry_run, t.parallel, "reset")
}

pub fn delete(args: ResetArgs, this_bundle: Option<PathBuf>) -> Result<()> {
    let t = &args.target;
    if t.masters.is_none() && t.nodes.is_none() {
        bail!(
            "delete: name the hosts to remove with --masters/--nodes (to remove every host, use \
             reset)"
        );
    }
    confirm(
        &format!("remove {} from the cluster", hosts_phrase(t)),
        args.yes,
        t.dry_run,
    )?;
    let p = prepare(t, &[], this_bundle, "delete")?;
    execute(p, crate::phases::reset(), t.dry_run, t.parallel, "delete")?;
    eprintln!(
        "deleted. Run install again with the remaining hosts to update their view of the \
         cluster (the lvscare guards follow the new list of masters)."
    );
    Ok(())
}

pub fn check(args: CheckArgs, this_bundle: Option<PathBuf>) -> Result<()> {
    let t = &args.target;
    let p = prepare(t, &[], this_bundle, "check")?;
    execute(
        p,
        vec![
            Box::new(crate::phases::connect::Connect),
            Box::new(crate::phases::health::Health),
        ],
        false,
        t.parallel,
        "check",
    )
}
