//! The last step of `reset`: remove what bale keeps in the data dir (the bundle, the extracted
//! tree, the journal, the node context), so nothing is left that could block a reinstall.

use crate::engine::{Attempt, Node, Phase, PhaseResult};
use crate::remote::{Cmd, Script};

pub struct Forget;

/// What bale writes in the data dir.
const OURS: &[&str] = crate::layout::ALL;

/// Where bale's files are in `data_dir`.
fn ours(data_dir: &str) -> impl Iterator<Item = String> + '_ {
    OURS.iter().map(move |p| format!("{data_dir}/{p}"))
}

impl Phase for Forget {
    fn title(&self) -> &str {
        "forget"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        let any = Script::new("for p in {paths}; do [ ! -e \"$p\" ] || exit 0; done; exit 1")
            .values("paths", ours(&node.ctx.data_dir));
        super::test_on(node, &Cmd::script("look for bale's files", &any))
    }
    fn dry_run(&self, node: &Node) -> String {
        format!("remove bale's files from {}", node.ctx.data_dir)
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let d = &node.ctx.data_dir;
        let rm = Script::new("rm -rf {paths}; rmdir {d} 2>/dev/null || true")
            .values("paths", ours(d))
            .value("d", d);
        node.remote()?
            .run_ok(&Cmd::script("remove bale's files", &rm))?;
        Ok(())
    }
}
