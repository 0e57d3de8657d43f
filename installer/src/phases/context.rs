//! Write `<data-dir>/node.json`: the node's share of the install (its role, the masters and
//! workers, the environment), which every node-local step reads. Runs every time, so a re-run
//! with other hosts or env updates it.

use crate::engine::{Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::node::context::{NodeContext, FILE};
use crate::remote::{Cmd, Script};

pub struct WriteContext;

/// This node's context, from the site and the node's address and role.
pub fn node_context(node: &Node) -> NodeContext {
    let ctx = &node.ctx;
    ctx.site.node_context(
        &ctx.data_dir,
        &ctx.bundle.digest,
        node.host.as_ref().map(|h| h.addr),
        node.role(),
    )
}

impl Phase for WriteContext {
    fn title(&self) -> &str {
        "context"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn dry_run(&self, node: &Node) -> String {
        let c = node_context(node);
        format!(
            "write {}/{FILE} (role {}{}, {} master(s), {} worker(s))",
            c.data_dir,
            c.role,
            if c.first_master { ", first master" } else { "" },
            c.masters.len(),
            c.nodes.len()
        )
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        write_context(node, &node_context(node))
    }
}

/// Writes `c` as the node's `node.json`: to a temporary name, synced, then renamed.
pub fn write_context(node: &Node, c: &NodeContext) -> PhaseResult {
    // A plain struct of strings and lists: encoding it cannot fail.
    let body = serde_json::to_vec_pretty(c).unwrap_or_default();
    let write = Script::new(
        "set -e; [ -d {d} ] || install -d -m 0700 {d}; cat > {tmp}; sync {tmp} 2>/dev/null \
         || true; mv -f {tmp} {dest}",
    )
    .value("d", &c.data_dir)
    .value(
        "tmp",
        crate::layout::path(&c.data_dir, crate::layout::NODE_CONTEXT_TMP),
    )
    .value("dest", format!("{}/{FILE}", c.data_dir));
    node.remote()?
        .run_ok(&Cmd::script("write the node context", &write).stdin(&body))?;
    Ok(())
}

/// The node's `node.json` as an earlier run wrote it; `None` where there is none.
pub fn read_context(node: &Node) -> Result<Option<NodeContext>, PhaseError> {
    let path = format!("{}/{FILE}", node.ctx.data_dir);
    let text = node
        .remote()?
        .run_ok(&Cmd::cat_or_empty("read the node context", &path))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| PhaseError::NodeContext { path, source })
}
