//! A node-local step run natively by the bundle on the node (`bundle.bale agent step NAME
//! apply`), and, for `reset` and `delete` only, its undo (`… undo`). The step itself lives in
//! `crate::node`; this phase only starts it over SSH and relays what it printed.

use super::bundle_path;
use crate::engine::{Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::hosts::Role;
use crate::remote::Cmd;

pub struct AgentStep {
    /// The step's name, also the phase title.
    pub step: &'static str,
    /// Run only on hosts of this role (None: everywhere).
    pub only: Option<Role>,
    pub what: &'static str,
    /// Apply on every run instead of once per bundle (for steps whose input, such as the list
    /// of masters, can change between runs; apply must then be cheap when nothing changed).
    pub every_run: bool,
    /// The node settings the step's result depends on (see `Phase::inputs`): a change applies
    /// it again.
    pub inputs: fn(&crate::node::context::NodeContext) -> String,
}

/// For steps whose result depends on the bundle alone.
pub fn no_inputs(_: &crate::node::context::NodeContext) -> String {
    String::new()
}

/// The last line a step printed, for the progress output (the agent already names the step).
pub fn last_line(out: &str) -> Option<&str> {
    out.lines().last()
}

/// Runs `bundle.bale agent step STEP ACTION` on the node and returns what it printed.
pub fn agent_step(node: &Node, step: &str, action: &str) -> Result<String, PhaseError> {
    let d = &node.ctx.data_dir;
    let cmd = Cmd::new(format!("agent step {step} {action}"), bundle_path(d)).args([
        "agent",
        "step",
        step,
        action,
        "--data-dir",
        d,
    ]);
    let o = node.remote()?.run(&cmd)?;
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if o.code != 0 {
        let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
        return Err(PhaseError::Agent {
            step: step.into(),
            action: action.into(),
            code: o.code,
            output: if err.is_empty() { out } else { err },
        });
    }
    Ok(out)
}

/// Runs `bundle.bale agent step STEP ACTION` on the node and notes the last line it printed.
pub fn run_noted(node: &Node, step: &str, action: &str) -> PhaseResult {
    let out = agent_step(node, step, action)?;
    if let Some(last) = last_line(&out) {
        node.note(last);
    }
    Ok(())
}

impl Phase for AgentStep {
    fn title(&self) -> &str {
        self.step
    }
    fn journaled(&self) -> bool {
        !self.every_run
    }
    fn inputs(&self, node: &Node) -> String {
        (self.inputs)(&super::context::node_context(node))
    }
    fn should_run(&self, node: &Node) -> bool {
        self.only.is_none_or(|r| r == node.role())
    }
    fn dry_run(&self, _node: &Node) -> String {
        format!("{} (agent step {} apply)", self.what, self.step)
    }
    /// A failed apply is reported and nothing is undone: the step's `undo` is the full removal
    /// (containers, guardians), which only `reset` and `delete` run. The agent step removes its
    /// own temporary files when it fails.
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        run_noted(node, self.step, "apply")
    }
}

/// For `reset`: runs a step's undo where the node still has a bundle to run it with.
pub struct UndoStep(pub &'static str);

impl Phase for UndoStep {
    fn title(&self) -> &str {
        self.0
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        super::has_bundle(node)
    }
    fn dry_run(&self, _node: &Node) -> String {
        format!("agent step {} undo", self.0)
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        run_noted(node, self.0, "undo")
    }
}
