//! The cluster's member list after `delete`. Every node's `node.json` names all masters and
//! workers, so the hosts being deleted tell which hosts stay ([`ReadMembers`], before their
//! reset). The hosts that stay then get the new list ([`FollowMembers`]): their `node.json` is
//! edited in place (nothing else in it changes) and the lvscare step re-applied, which on a
//! worker rewrites the guard's config and reloads it, so connections through the API-server VIP
//! survive a master leaving.

use super::context::{read_context, write_context};
use crate::engine::{lock, Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::node::context::{NodeContext, FILE};
use std::sync::{Arc, Mutex};

/// The masters and workers as the deleted hosts knew them, in install order.
#[derive(Debug, Default)]
pub struct Members {
    seen: Mutex<Option<(Vec<String>, Vec<String>)>>,
    /// The deleted hosts that were reached (whether or not they knew a member list).
    answered: Mutex<Vec<String>>,
}

/// Who stays after a delete: the same list the admin side records for a cluster.
pub use crate::records::ClusterMembers as Remaining;

impl Members {
    fn record(&self, masters: &[String], nodes: &[String]) {
        let mut seen = lock(&self.seen);
        let (m, n) = seen.get_or_insert_with(Default::default);
        // Union in first-seen order: every deleted host should list the same, but one that
        // missed a later install may know fewer.
        for (known, told) in [(m, masters), (n, nodes)] {
            for a in told {
                if !known.contains(a) {
                    known.push(a.clone());
                }
            }
        }
    }

    fn answered(&self, address: String) {
        lock(&self.answered).push(address);
    }

    /// The hosts of `deleted` that were never reached.
    pub fn unanswered(&self, deleted: &[String]) -> Vec<String> {
        let answered = lock(&self.answered);
        deleted
            .iter()
            .filter(|a| !answered.contains(a))
            .cloned()
            .collect()
    }

    /// The hosts not in `deleted`; `None` when no deleted host had a member list.
    pub fn remaining(&self, deleted: &[String]) -> Option<Remaining> {
        let seen = lock(&self.seen);
        let (m, n) = seen.as_ref()?;
        let keep = |v: &Vec<String>| v.iter().filter(|a| !deleted.contains(a)).cloned().collect();
        Some(Remaining {
            masters: keep(m),
            nodes: keep(n),
        })
    }
}

/// `delete`, before the reset: what the host knows of the cluster.
pub struct ReadMembers(pub Arc<Members>);

impl Phase for ReadMembers {
    fn title(&self) -> &str {
        "members"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn dry_run(&self, node: &Node) -> String {
        format!(
            "read the masters and workers from {}/{FILE}",
            node.ctx.data_dir
        )
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        if let Some(h) = &node.host {
            self.0.answered(h.addr.to_string());
        }
        match read_context(node)? {
            Some(c) => {
                self.0.record(&c.masters, &c.nodes);
                node.note(&format!(
                    "member of a cluster of {} master(s) and {} worker(s)",
                    c.masters.len(),
                    c.nodes.len()
                ));
            }
            None => node.note("no node context here: this host knows no other hosts"),
        }
        Ok(())
    }
}

/// `delete`, after the reset, on the hosts that stay: the new member list.
pub struct FollowMembers {
    pub remaining: Remaining,
}

impl FollowMembers {
    /// `c` with the new member list; the first master is the first of the masters that stay.
    pub fn updated(&self, c: &NodeContext) -> NodeContext {
        let mut c = c.clone();
        c.masters = self.remaining.masters.clone();
        c.nodes = self.remaining.nodes.clone();
        c.first_master = c.is_master() && c.masters.first() == Some(&c.node_ip);
        c
    }
}

impl Phase for FollowMembers {
    fn title(&self) -> &str {
        "members"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn dry_run(&self, node: &Node) -> String {
        format!(
            "set masters {} and workers {} in {}/{FILE}, then re-apply the lvscare step",
            self.remaining.masters.join(","),
            self.remaining.nodes.join(","),
            node.ctx.data_dir
        )
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let Some(old) = read_context(node)? else {
            return Err(PhaseError::NotInstalled {
                path: format!("{}/{FILE}", node.ctx.data_dir),
            });
        };
        let new = self.updated(&old);
        if new == old {
            node.note("member list already up to date");
        } else {
            write_context(node, &new)?;
            node.note(&format!(
                "now {} master(s) ({}) and {} worker(s)",
                new.masters.len(),
                new.masters.join(","),
                new.nodes.len()
            ));
        }
        super::agent_step::run_noted(node, "lvscare", "apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn the_deleted_hosts_tell_who_stays() {
        let m = Members::default();
        assert_eq!(m.remaining(&s(&["10.0.0.3"])), None);
        m.record(&s(&["10.0.0.2", "10.0.0.3"]), &s(&["10.0.0.5", "10.0.0.6"]));
        m.record(&s(&["10.0.0.2", "10.0.0.3"]), &s(&["10.0.0.5", "10.0.0.6"]));
        m.answered("10.0.0.2".into());
        assert_eq!(
            m.unanswered(&s(&["10.0.0.2", "10.0.0.6"])),
            s(&["10.0.0.6"])
        );
        assert_eq!(
            m.remaining(&s(&["10.0.0.2", "10.0.0.6"])),
            Some(Remaining {
                masters: s(&["10.0.0.3"]),
                nodes: s(&["10.0.0.5"]),
            })
        );
    }

    #[test]
    fn the_next_master_becomes_first_and_nothing_else_changes() {
        let f = FollowMembers {
            remaining: Remaining {
                masters: s(&["10.0.0.3"]),
                nodes: s(&["10.0.0.5"]),
            },
        };
        let mut c: NodeContext = serde_json::from_value(serde_json::json!({
            "data_dir": "/var/lib/bale",
            "bundle_digest": "abc",
            "node_ip": "10.0.0.3",
            "role": "master",
            "first_master": false,
            "masters": ["10.0.0.2", "10.0.0.3"],
            "nodes": ["10.0.0.5", "10.0.0.6"],
            "env": {"SITE": "lab"},
        }))
        .unwrap();
        let u = f.updated(&c);
        assert!(u.first_master);
        assert_eq!(u.masters, s(&["10.0.0.3"]));
        assert_eq!(u.nodes, s(&["10.0.0.5"]));
        assert_eq!(u.env, c.env);
        c.role = "node".into();
        c.node_ip = "10.0.0.5".into();
        assert!(!f.updated(&c).first_master);
    }
}
