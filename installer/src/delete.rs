//! `bale delete`: resets the hosts named, then hands the hosts that stay the new list of
//! masters and workers (read from a deleted host's node.json, or, when no deleted host answers,
//! from the admin side's record in [`crate::records`]), so the workers' guards follow and the
//! first master that stays forgets the deleted hosts' Nodes and etcd members.

use crate::phases::members::{FollowMembers, Members, ReadMembers, Remaining};
use crate::records::{NoRecord, Records};
use crate::reset::ResetOptions;
use crate::run::{confirm, execute, hosts_phrase, prepare, RunError, RunResult, Target};
use crate::site::Vips;
use std::path::PathBuf;
use std::sync::Arc;

pub fn delete(opts: ResetOptions, this_bundle: Option<PathBuf>) -> RunResult<()> {
    let t = &opts.target;
    if t.masters.is_none() && t.nodes.is_none() {
        return Err(RunError::DeleteWhom);
    }
    confirm(
        &format!("remove {} from the cluster", hosts_phrase(t)),
        opts.yes,
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
    // The reset phases always take the host lock; at worst the read goes first.
    let after_lock = phases
        .iter()
        .position(|p| p.title() == "lock")
        .map_or(0, |i| i + 1);
    phases.insert(after_lock, Box::new(ReadMembers(members.clone())));
    // Then, on a Kubernetes cluster, the first master that stays drains the leaving nodes.
    phases.insert(
        after_lock + 1,
        Box::new(crate::phases::kube::DrainNodes::new(
            members.clone(),
            deleted.clone(),
        )),
    );
    let removed = execute(p, phases, t.dry_run, t.parallel, "delete");
    if t.dry_run {
        eprintln!(
            "then: the hosts that stay get the new list of masters and workers (their lvscare \
             guards reload)"
        );
        return removed;
    }
    let Err(e) = removed else {
        return follow(t, this_bundle, members.remaining(&deleted), &deleted);
    };
    // The reset failed on some deleted host. Who stays is told by another deleted host, or
    // else by the record of the last install or delete: they still stop counting on the hosts
    // the operator took out.
    let rest = match members.remaining(&deleted) {
        Some(rest) => rest,
        None => match recorded(&deleted) {
            Ok(rest) => rest,
            Err(looked_for) => {
                return Err(RunError::Unknown {
                    source: Box::new(e),
                    looked_for,
                })
            }
        },
    };
    match follow(t, this_bundle, Some(rest), &deleted) {
        Ok(()) => {
            let dead = members.unanswered(&deleted);
            Err(if dead.is_empty() {
                e
            } else {
                RunError::ForgottenNotReset {
                    hosts: dead.join(","),
                    delete: Box::new(e),
                }
            })
        }
        Err(f) => Err(RunError::DeleteAndFollow {
            delete: Box::new(e),
            follow: Box::new(f),
        }),
    }
}

/// Who stays, from the admin side's record of the cluster; `Err` says what was looked for.
fn recorded(deleted: &[String]) -> Result<Remaining, NoRecord> {
    let records = Records::locate()?;
    match records.find(deleted)? {
        Some((path, m)) => {
            eprintln!("learned who stays from {}", path.display());
            let keep = |v: Vec<String>| v.into_iter().filter(|a| !deleted.contains(a)).collect();
            Ok(Remaining {
                masters: keep(m.masters),
                nodes: keep(m.nodes),
            })
        }
        None => Err(NoRecord::Missing {
            looked_for: records.looked_for(deleted),
        }),
    }
}

/// After a delete: hands the hosts that stay their new member list, so the workers' guards
/// follow the masters that are left.
fn follow(
    t: &Target,
    this_bundle: Option<PathBuf>,
    rest: Option<Remaining>,
    deleted: &[String],
) -> RunResult<()> {
    let Some(rest) = rest else {
        eprintln!(
            "deleted. The deleted hosts named no others; if hosts remain, run install again \
             with them to update their view of the cluster."
        );
        return Ok(());
    };
    if rest.masters.is_empty() && rest.nodes.is_empty() {
        eprintln!("deleted. No hosts remain in the cluster.");
        crate::records::keep(None, deleted);
        return Ok(());
    }
    if rest.masters.is_empty() {
        return Err(RunError::NoMasterLeft {
            workers: rest.nodes.join(","),
        });
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
    // On a Kubernetes cluster the first master that stays also forgets the deleted nodes, and
    // every host that stays gets the pod routes without theirs.
    let kube = Arc::new(crate::phases::kube::KubeRun::default());
    let phases: Vec<Box<dyn crate::engine::Phase>> = vec![
        Box::new(crate::phases::connect::Connect),
        Box::new(crate::phases::lock::Lock { verb: "delete" }),
        Box::new(FollowMembers {
            remaining: rest.clone(),
        }),
        Box::new(crate::phases::kube::KubeInit(kube.clone())),
        Box::new(crate::phases::kube::ForgetNodes {
            run: kube.clone(),
            addresses: deleted.to_vec(),
        }),
        Box::new(crate::phases::kube::PodNetwork(kube)),
    ];
    execute(p, phases, false, stay.parallel, "delete (update)").map_err(|e| {
        RunError::NotFollowed {
            source: Box::new(e),
        }
    })?;
    crate::records::keep(Some(&rest), deleted);
    Ok(())
}
