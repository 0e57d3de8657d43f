//! The last step of `reset`: remove what bale keeps in the data dir (the bundle, the extracted
//! tree, the journal, the node context), so nothing is left that could block a reinstall.

use crate::engine::{Attempt, Node, Phase, PhaseResult};
use crate::ssh::{sq, Input};

pub struct Forget;

/// What bale writes in the data dir.
const OURS: &[&str] = crate::layout::ALL;

impl Phase for Forget {
    fn title(&self) -> &str {
        "forget"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        let d = &node.ctx.data_dir;
        let any: Vec<String> = OURS
            .iter()
            .map(|p| format!("[ -e {} ]", sq(&format!("{d}/{p}"))))
            .collect();
        super::test_on(node, &any.join(" || "))
    }
    fn dry_run(&self, node: &Node) -> String {
        format!("remove bale's files from {}", node.ctx.data_dir)
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let d = &node.ctx.data_dir;
        let paths: Vec<String> = OURS.iter().map(|p| sq(&format!("{d}/{p}"))).collect();
        node.conn()?.root_ok(
            "remove bale's files",
            &format!(
                "rm -rf {}; rmdir {} 2>/dev/null || true",
                paths.join(" "),
                sq(d)
            ),
            Input::None,
        )?;
        Ok(())
    }
}
