//! `bale reset`, `bale delete` and `bale check`: runs over the same hosts as an install.
//! reset undoes every node step (newest first, by the bundle on the node), runs the clean hooks
//! and removes bale's files; a host with nothing of bale's left is skipped, so a second reset
//! is a no-op. delete is a reset of the hosts named.

use crate::install::{execute, prepare, Target};
use crate::phases::members::{FollowMembers, Members, ReadMembers, Remaining};
use crate::site::Vips;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

const RESET_HELP: &str = "\
Undoes the install on the hosts: stops and removes the lvscare guard, the registry unit, the
container runtime bale installed (with its state), the kernel settings bale persisted, then
bale's files in the data dir. PreClean and PostClean hooks run around it. Safe to repeat.";

pub const DELETE_HELP: &str = "\
Resets the named hosts, then hands the hosts that stay the new list of masters and workers
(read from the deleted hosts' node.json): the workers' lvscare guards reload with the masters
that are left, without a restart. The hosts that stay are reached with the same login options.
A deleted host that cannot be reached is not reset and cannot tell who stays: then run install
again with the hosts that stay, which updates them the same way.

Example: ./app.bale delete --masters 10.0.0.3 --key ~/.ssh/id_ed25519";

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
    let p = prepare(t, &[], this_bundle, "reset", Vips::default())?;
    execute(
        p,
        crate::phases::reset("reset"),
        t.dry_run,
        t.parallel,
        "reset",
    )
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
    let p = prepare(t, &[], this_bundle.clone(), "delete", Vips::default())?;
    let deleted: Vec<String> = p
        .nodes
        .iter()
        .filter_map(|n| n.host.as_ref().map(|h| h.addr.to_string()))
        .collect();
    let members = Arc::new(Members::default());
    let mut phases = crate::phases::reset("delete");
    // After connect and lock, before anything is undone: node.json goes with the reset.
    let after_lock = phases
        .iter()
        .position(|p| p.title() == "lock")
        .expect("the reset phases take the host lock")
        + 1;
    phases.insert(after_lock, Box::new(ReadMembers(members.clone())));
    let removed = execute(p, phases, t.dry_run, t.parallel, "delete");
    if t.dry_run {
        eprintln!(
            "then: the hosts that stay get the new list of masters and workers (their lvscare \
             guards reload)"
        );
        return removed;
    }
    match (removed, members.remaining(&deleted)) {
        (Ok(()), rest) => follow(t, this_bundle, rest),
        // The reset failed on some deleted host, but another told who stays: they still stop
        // counting on the hosts the operator took out.
        (Err(e), Some(rest)) => {
            let followed = follow(t, this_bundle, Some(rest));
            Err(match followed {
                Ok(()) => e,
                Err(f) => e.context(format!("{f:#}")),
            })
        }
        (Err(e), None) => Err(e.context(
            "no deleted host could tell which hosts stay: run install again with the hosts \
             that stay, so their guards follow the masters that are left",
        )),
    }
}

/// After a delete: hands the hosts that stay their new member list, so the workers' guards
/// follow the masters that are left.
fn follow(t: &Target, this_bundle: Option<PathBuf>, rest: Option<Remaining>) -> Result<()> {
    let Some(rest) = rest else {
        eprintln!(
            "deleted. The deleted hosts named no others; if hosts remain, run install again \
             with them to update their view of the cluster."
        );
        return Ok(());
    };
    if rest.masters.is_empty() && rest.nodes.is_empty() {
        eprintln!("deleted. No hosts remain in the cluster.");
        return Ok(());
    }
    if rest.masters.is_empty() {
        bail!(
            "deleted, but no master remains: the workers {} still guard the deleted masters. \
             Install masters again (install --masters ... --nodes {}) or reset the workers.",
            rest.nodes.join(","),
            rest.nodes.join(",")
        );
    }
    eprintln!(
        "deleted. Updating the hosts that stay: masters {}, workers {}",
        rest.masters.join(","),
        if rest.nodes.is_empty() {
            "none".to_string()
        } else {
            rest.nodes.join(",")
        }
    );
    let mut stay = t.clone();
    stay.clusterfile = None;
    stay.masters = Some(rest.masters.join(","));
    stay.nodes = (!rest.nodes.is_empty()).then(|| rest.nodes.join(","));
    let p = prepare(&stay, &[], this_bundle, "delete", Vips::default())?;
    let phases: Vec<Box<dyn crate::engine::Phase>> = vec![
        Box::new(crate::phases::connect::Connect),
        Box::new(crate::phases::lock::Lock { verb: "delete" }),
        Box::new(FollowMembers { remaining: rest }),
    ];
    execute(p, phases, false, stay.parallel, "delete (update)").context(
        "the deleted hosts are gone, but some that stay did not get the new member list: run \
         install again with the hosts that stay",
    )
}

pub fn check(args: CheckArgs, this_bundle: Option<PathBuf>) -> Result<()> {
    let t = &args.target;
    let p = prepare(t, &[], this_bundle, "check", Vips::default())?;
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
