//! The image's install steps (Kubefile `CMD`, and `LAUNCH` of its `APP`s), base layers first,
//! in order, on the first master once the runtime and registry are up everywhere. Each step is
//! journaled on its own, so a resumed install does not run a finished step again; the first
//! failure stops the install with the step's output.

use super::hooks::{prelude, run_script};
use crate::engine::{lock, Attempt, Node, Phase, PhaseResult};

pub struct Apps;

fn is_first_master(node: &Node) -> bool {
    super::context::node_context(node).first_master
}

impl Phase for Apps {
    fn title(&self) -> &str {
        "apps"
    }
    fn should_run(&self, node: &Node) -> bool {
        is_first_master(node) && !node.ctx.site.apps.is_empty()
    }
    fn dry_run(&self, node: &Node) -> String {
        let j = lock(&node.journal);
        let steps: Vec<String> = node
            .ctx
            .site
            .apps
            .iter()
            .map(|s| {
                let done = if j.is_done(&s.key) { " (done)" } else { "" };
                format!("\n    {}: {}{done}", s.origin, s.script)
            })
            .collect();
        format!("run {} step(s):{}", steps.len(), steps.concat())
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let remote = node.remote()?;
        let prelude = prelude(node)?;
        let total = node.ctx.site.apps.len();
        for (i, step) in node.ctx.site.apps.iter().enumerate() {
            if lock(&node.journal).is_done(&step.key) {
                node.note(&format!(
                    "app step {}/{total} already done: {}",
                    i + 1,
                    step.script
                ));
                continue;
            }
            node.note(&format!("app step {}/{total}: {}", i + 1, step.script));
            run_script(&*remote, &prelude, &step.script, || {
                format!(
                    "app step {}/{total} ({}) `{}`",
                    i + 1,
                    step.origin,
                    step.script
                )
            })?;
            lock(&node.journal).record(&*remote, &node.ctx.data_dir, &step.key)?;
        }
        Ok(())
    }
}
