//! `bale check`: on every node, each node-local step reports whether its result is in place
//! and healthy (`agent step NAME check`), and the first master's journal shows every app step
//! done. Changes nothing.

use super::agent_step::agent_step;
use super::context::node_context;
use crate::engine::{lock, Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::hosts::Role;

pub struct Health;

/// The node steps `check` asks, and the role they apply to (None: every node).
pub const CHECKED: &[(&str, Option<Role>)] = &[
    ("kernel", None),
    ("runtime", None),
    ("registry", None),
    ("lvscare", None),
    ("kubelet", None),
    ("cluster", None),
    ("podnet", None),
];

impl Phase for Health {
    fn title(&self) -> &str {
        "check"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn read_only(&self) -> bool {
        true
    }
    fn should_run(&self, node: &Node) -> bool {
        super::has_bundle(node)
    }
    fn dry_run(&self, _node: &Node) -> String {
        "check the node's steps".into()
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let mut bad = Vec::new();
        for (step, only) in CHECKED {
            if only.is_some_and(|r| r != node.role()) {
                continue;
            }
            match agent_step(node, step, "check") {
                // The cluster's own findings (nodes Ready, system pods) are the news: all of
                // them; of the other steps, the summary line.
                Ok(out) if *step == "cluster" => out.lines().for_each(|l| node.note(l)),
                Ok(out) => node.note(super::agent_step::last_line(&out).unwrap_or(step)),
                Err(e) => bad.push(crate::engine::report::chain(&e)),
            }
        }
        if node_context(node).first_master {
            let j = lock(&node.journal);
            let missing: Vec<&str> = node
                .ctx
                .site
                .apps
                .iter()
                .filter(|s| !j.is_done(&s.key))
                .map(|s| s.script.as_str())
                .collect();
            if missing.is_empty() {
                node.note(&format!("apps: {} step(s) done", node.ctx.site.apps.len()));
            } else {
                bad.push(format!("apps: not done: {}", missing.join("; ")));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(PhaseError::Unhealthy(bad))
        }
    }
}
