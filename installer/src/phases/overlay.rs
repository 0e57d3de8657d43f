//! Write the files the Config overlays changed into `<data-dir>/rootfs`. The merged contents
//! were computed once on the admin host from the bundle's originals, so every node gets the
//! same bytes. Runs every time (cheap, and the overlays may have changed).

use crate::engine::{Attempt, Node, Phase, PhaseResult};
use crate::remote::{Cmd, Script};

pub struct Overlay;

impl Phase for Overlay {
    fn title(&self) -> &str {
        "config"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        !node.ctx.site.overlays.is_empty()
    }
    fn dry_run(&self, node: &Node) -> String {
        let paths: Vec<&str> = node
            .ctx
            .site
            .overlays
            .iter()
            .map(|(p, _)| p.as_str())
            .collect();
        format!("overlay {}", paths.join(", "))
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let remote = node.remote()?;
        let root = crate::layout::path(&node.ctx.data_dir, crate::layout::ROOTFS);
        for (path, text) in &node.ctx.site.overlays {
            let dest = format!("{root}/{path}");
            let dir = dest.rsplit_once('/').map(|(d, _)| d).unwrap_or(&root);
            let tmp = format!("{dir}/.bale-config.tmp");
            let write = Script::new("set -e; mkdir -p {d}; cat > {t}; mv -f {t} {f}")
                .value("d", dir)
                .value("t", &tmp)
                .value("f", &dest);
            remote.run_ok(
                &Cmd::script(format!("write the overlay of {path}"), &write).stdin(text.as_bytes()),
            )?;
        }
        node.note(&format!(
            "{} file(s) overlaid in {root}",
            node.ctx.site.overlays.len()
        ));
        Ok(())
    }
}
