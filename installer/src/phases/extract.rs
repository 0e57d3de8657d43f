//! Unpack the bundle's tree (everything but the image registry, which is served straight from
//! the bundle) to `<data-dir>/rootfs`, where hooks and apps run. The copy on the node extracts
//! itself, checking every frame; the tree appears under its final name only when complete.

use super::bundle_path;
use crate::engine::{Node, Phase, PhaseResult};
use crate::ssh::{sq, Input};

pub struct Extract;

fn rootfs(data_dir: &str) -> String {
    format!("{data_dir}/rootfs")
}

impl Phase for Extract {
    fn title(&self) -> &str {
        "extract"
    }
    fn should_run(&self, node: &Node) -> bool {
        !node.ctx.site.tree_top.is_empty()
    }
    fn dry_run(&self, node: &Node) -> String {
        format!(
            "extract {} of the bundle to {}",
            node.ctx.site.tree_top.join(", "),
            rootfs(&node.ctx.data_dir)
        )
    }
    fn run(&self, node: &Node) -> PhaseResult {
        let d = &node.ctx.data_dir;
        let part = sq(&format!("{}.part", rootfs(d)));
        let dest = sq(&rootfs(d));
        let paths: Vec<String> = node.ctx.site.tree_top.iter().map(|p| sq(p)).collect();
        node.conn()?.root_ok(
            "extract the bundle's tree",
            &format!(
                "set -e; rm -rf {part}; {} extract --sync --to {part} {}; rm -rf {dest}; \
                 mv {part} {dest}",
                sq(&bundle_path(d)),
                paths.join(" ")
            ),
            Input::None,
        )?;
        Ok(())
    }
    fn undo(&self, node: &Node) -> PhaseResult {
        let part = sq(&format!("{}.part", rootfs(&node.ctx.data_dir)));
        node.conn()?.root_ok(
            "remove a partial tree",
            &format!("rm -rf {part}"),
            Input::None,
        )?;
        Ok(())
    }
}
