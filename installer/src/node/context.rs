//! What the installer tells a node about the install. The admin side writes it to
//! `<data-dir>/node.json` on every node before the node-local steps run; `bale agent step …`
//! reads it there, so a step run by hand on the node does exactly what the install would.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::layout::NODE_CONTEXT as FILE;
/// The port of the registry built into bale on every node.
pub const REGISTRY_PORT: u16 = 5050;
/// The API servers' virtual IP that lvscare guards on workers.
pub const DEFAULT_VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 103, 97, 2);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeContext {
    /// Where the bundle (`bundle.bale`), the journal and the extracted tree (`rootfs/`) live.
    pub data_dir: String,
    /// Header digest of the bundle this install is for.
    pub bundle_digest: String,
    /// This node's address as the installer reached it ("127.0.0.1" for a local install).
    pub node_ip: String,
    /// "master" or "node".
    pub role: String,
    /// True on the first master, where the apps (CMD/APP steps) run.
    pub first_master: bool,
    pub masters: Vec<String>,
    pub nodes: Vec<String>,
    #[serde(default = "default_registry_port")]
    pub registry_port: u16,
    #[serde(default = "default_vip")]
    pub vip: String,
    /// The registries' virtual IP (at `registry_port`), when the install asked for a registry
    /// guard: workers then reach the masters' registries through it when their own fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_vip: Option<String>,
    /// Install-time environment (Clusterfile `env`, Kubefile `ENV`), for templates and hooks.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_registry_port() -> u16 {
    REGISTRY_PORT
}

fn default_vip() -> String {
    DEFAULT_VIP.to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "{}: cannot read the node context (run `bale install` first: it writes this file on \
         every node)",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a node context", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl NodeContext {
    pub fn path(data_dir: &str) -> PathBuf {
        Path::new(data_dir).join(FILE)
    }

    pub fn load(data_dir: &str) -> Result<NodeContext, ContextError> {
        let path = Self::path(data_dir);
        let text = std::fs::read_to_string(&path).map_err(|source| ContextError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ContextError::Parse { path, source })
    }

    pub fn is_master(&self) -> bool {
        self.role == "master"
    }

    /// Where the bundle lives on this node.
    pub fn bundle_path(&self) -> PathBuf {
        Path::new(&self.data_dir).join(crate::layout::BUNDLE)
    }

    /// Where the bundle's tree (without the registry) is extracted on this node.
    pub fn rootfs(&self) -> PathBuf {
        Path::new(&self.data_dir).join(crate::layout::ROOTFS)
    }

    /// `host:port` of the masters' registries behind the registry VIP, for a worker of an
    /// install with `--registry-vip` (containerd's second choice after its own registry).
    pub fn registry_fallback(&self) -> Option<String> {
        let vip = self.registry_vip.as_ref().filter(|_| !self.is_master())?;
        Some(format!("{vip}:{}", self.registry_port))
    }

    /// `host:port` of this node's own registry.
    pub fn registry_addr(&self) -> String {
        format!("127.0.0.1:{}", self.registry_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_in_older_files() {
        let c: NodeContext = serde_json::from_str(
            r#"{"data_dir":"/var/lib/bale","bundle_digest":"ab","node_ip":"10.0.0.2",
                "role":"master","first_master":true,"masters":["10.0.0.2"],"nodes":[]}"#,
        )
        .unwrap();
        assert_eq!(c.registry_port, REGISTRY_PORT);
        assert_eq!(c.vip, DEFAULT_VIP.to_string());
        assert_eq!(c.registry_vip, None);
        assert!(c.is_master());
        assert_eq!(c.rootfs(), Path::new("/var/lib/bale/rootfs"));
    }
}
