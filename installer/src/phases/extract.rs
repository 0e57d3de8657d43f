//! Unpack the bundle's tree (everything but the image registry, which is served straight from
//! the bundle) to `<data-dir>/rootfs`, where hooks and apps run. The copy on the node extracts
//! itself, checking every frame; the tree appears under its final name only when complete.

use super::bundle_path;
use crate::engine::{Attempt, Node, Phase, PhaseResult};
use crate::remote::{Cmd, Script};

pub struct Extract;

fn rootfs(data_dir: &str) -> String {
    crate::layout::path(data_dir, crate::layout::ROOTFS)
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
    fn run(&self, node: &Node, attempt: &Attempt) -> PhaseResult {
        let d = &node.ctx.data_dir;
        let part = crate::layout::path(d, crate::layout::ROOTFS_PART);
        attempt.creates(&part);
        // The tree in place stays until the new one is complete, and comes back if the swap
        // fails half way.
        let extract = Script::new(
            "set -e; rm -rf {part} {old}; {bundle} extract --sync --to {part} {paths}; \
             if [ -e {dest} ]; then mv {dest} {old}; fi; \
             if ! mv {part} {dest}; then [ ! -e {old} ] || mv {old} {dest}; exit 1; fi; \
             rm -rf {old}",
        )
        .value("part", &part)
        .value("old", crate::layout::path(d, crate::layout::ROOTFS_OLD))
        .value("bundle", bundle_path(d))
        .values("paths", &node.ctx.site.tree_top)
        .value("dest", rootfs(d));
        node.remote()?
            .run_ok(&Cmd::script("extract the bundle's tree", &extract))?;
        Ok(())
    }
}
