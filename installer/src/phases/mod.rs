//! The phases of an install, in order. Each file is one phase.

pub mod agent_check;
pub mod connect;
pub mod preflight;
pub mod upload;

use crate::engine::Phase;

/// The phases of this slice of `bale install`.
pub fn install() -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(connect::Connect),
        Box::new(preflight::Preflight),
        Box::new(upload::Upload),
        Box::new(agent_check::AgentCheck),
    ]
}

/// Where the bundle lives on a node.
pub fn bundle_path(data_dir: &str) -> String {
    format!("{data_dir}/bundle.bale")
}
