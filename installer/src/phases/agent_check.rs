//! Run the copied bundle on the node (`bundle.bale agent status --json`): proves its native
//! code runs there and that it is the bundle we sent, and checks (natively, changing nothing)
//! that the kernel has the features the install needs, or has them as modules the kernel phase
//! will load: the last of the preflight checks.

use super::bundle_path;
use crate::agent::Status;
use crate::engine::{Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::remote::Cmd;

pub struct AgentCheck;

impl Phase for AgentCheck {
    fn title(&self) -> &str {
        "agent-check"
    }
    fn dry_run(&self, node: &Node) -> String {
        format!(
            "run {} agent status --json",
            bundle_path(&node.ctx.data_dir)
        )
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let status = Cmd::new("run the bundle's agent", bundle_path(&node.ctx.data_dir))
            .args(["agent", "status", "--json"]);
        let out = node.remote()?.run_ok(&status)?;
        let st: Status =
            serde_json::from_str(out.trim()).map_err(|source| PhaseError::AgentStatus {
                output: out.trim().to_string(),
                source,
            })?;
        let digest = st.bundle.as_ref().map(|b| b.digest.as_str()).unwrap_or("");
        if digest != node.ctx.bundle.digest {
            return Err(PhaseError::AgentBundle {
                running: digest.into(),
                expected: node.ctx.bundle.digest.clone(),
            });
        }
        if !st.missing_features.is_empty() {
            let list = st.missing_features.join("; ");
            if node.ctx.ignore_preflight.iter().any(|c| c == "features") {
                node.note(&format!("ignored: missing kernel features: {list}"));
            } else {
                return Err(PhaseError::MissingFeatures(list));
            }
        }
        if !st.modules_to_load.is_empty() {
            node.note(&format!(
                "kernel modules not loaded yet, loaded by the kernel phase: {}",
                st.modules_to_load.join(", ")
            ));
        }
        node.note(&format!(
            "agent {} runs ({} on {}, kernel {})",
            st.version, st.arch, st.hostname, st.kernel
        ));
        Ok(())
    }
}
