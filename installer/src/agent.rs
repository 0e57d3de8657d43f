//! `bale agent`: what the copied bundle does on each node: receive the bundle (`copy`), say
//! which bundle and node it is (`status`), run one node-local install step (`step`), and ask
//! the node's Kubernetes control plane (`kube`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What `bale agent` was asked to do on this node.
#[derive(Debug, Clone)]
pub enum AgentCommand {
    /// Receive the bundle (checked chunk by chunk, resumable) and serve it to other nodes.
    Copy(crate::copy::agent::CopyOptions),
    /// Print this node's and this bundle's identity, as one JSON object when `json`.
    Status { json: bool },
    /// Run one node-local install step, with node.json and bundle.bale under `data_dir`.
    Step {
        name: crate::node::step::StepName,
        action: crate::node::step::StepAction,
        data_dir: String,
    },
    /// Ask this node's Kubernetes control plane.
    Kube(KubeCommand),
}

/// What `bale agent kube` asks the control plane (the installer runs these on the first master).
#[derive(Debug, Clone)]
pub enum KubeCommand {
    /// A fresh bootstrap token and the CA hash as JSON, for one join; with `control_plane`, the
    /// control-plane certificates are uploaded under a fresh key too, for a master's join.
    JoinMaterial { control_plane: bool },
    /// Cordon and drain the nodes with these InternalIPs, about to leave the cluster.
    Drain { addresses: Vec<String> },
    /// Delete the Node objects with these InternalIPs, of hosts that left the cluster.
    Forget { addresses: Vec<String> },
    /// The cluster's nodes with their addresses and pod subnets as JSON, once at least
    /// `wait_for` have a pod subnet or after `timeout` seconds.
    Nodes { wait_for: usize, timeout: u64 },
    /// Give the Node with this InternalIP these labels (`key=value`) and taints (sealer's
    /// syntax), idempotently.
    Mark {
        address: String,
        labels: Vec<(String, String)>,
        taints: Vec<crate::marks::Taint>,
    },
    /// Where the etcd member of the host at `address` stands: `absent`, `learner`,
    /// `unstarted-voter` or `voter` on stdout.
    EtcdMember { address: String },
    /// Whether this host already is a complete member of the cluster (the node context under
    /// `data_dir` tells its role): `member` or `not a member` on stdout.
    Member { data_dir: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub arch: String,
    pub hostname: String,
    pub kernel: String,
    pub bundle: Option<BundleId>,
    /// Required kernel features this host lacks and cannot load, each with what needs it and
    /// the fix.
    #[serde(default)]
    pub missing_features: Vec<String>,
    /// Required features the kernel has as installed modules not loaded yet: the kernel step
    /// loads them, so they are no reason to stop.
    #[serde(default)]
    pub modules_to_load: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BundleId {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub path: PathBuf,
}

fn proc(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn status(this: Option<&bale_payload::Bundle>) -> Status {
    let missing = crate::node::kernel::missing_features(&crate::node::host::HostRoot::system());
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        arch: std::env::consts::ARCH.into(),
        hostname: proc("/proc/sys/kernel/hostname"),
        kernel: proc("/proc/sys/kernel/osrelease"),
        bundle: this.map(|b| BundleId {
            name: b.header.name.clone(),
            version: b.header.version.clone(),
            digest: bale_payload::format::hex(&b.trailer.header_sha256),
            path: b.path().to_path_buf(),
        }),
        missing_features: missing
            .iter()
            .filter(|m| !m.loadable)
            .map(|m| format!("{} (needed by the {}): {}", m.feature, m.needed_by, m.fix()))
            .collect(),
        modules_to_load: missing
            .iter()
            .filter(|m| m.loadable)
            .map(|m| m.feature.to_string())
            .collect(),
    }
}

/// What `agent kube member` prints for a host that is a complete member.
pub const MEMBER: &str = "member";

/// Why an agent command failed on this node.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{}", path.display())]
    Trust {
        path: PathBuf,
        #[source]
        source: bale_trust::Error,
    },
    #[error(transparent)]
    Policy(bale_trust::Error),
    #[error(transparent)]
    Context(#[from] crate::node::context::ContextError),
    #[error(transparent)]
    Step(#[from] crate::node::step::StepError),
    #[error("{step} check: {bad} finding(s) not in place (run `agent step {step} apply`)")]
    CheckFailed { step: String, bad: usize },
    #[error("cannot print the answer: {0}")]
    Json(#[from] serde_json::Error),
}

/// Refuses to act for a bundle that trust refuses: the same gate as `install` and `verify`,
/// with the policy of this node (the keys baked into the copied program, `BALE_TRUSTED_KEYS`,
/// `/etc/bale/trusted-keys/`).
pub fn trust_gate(
    this: Option<&bale_payload::Bundle>,
    policy: &bale_trust::TrustPolicy,
) -> Result<(), AgentError> {
    if let Some(b) = this {
        bale_trust::enforce(b, policy).map_err(|source| AgentError::Trust {
            path: b.path().to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

pub fn run(command: AgentCommand, this: Option<&bale_payload::Bundle>) -> Result<(), AgentError> {
    // Receiving the bundle and reporting status run nothing from it; every other command acts
    // for it, and only once its signatures pass.
    if matches!(command, AgentCommand::Step { .. } | AgentCommand::Kube(_)) {
        let policy = bale_trust::TrustPolicy::system().map_err(AgentError::Policy)?;
        trust_gate(this, &policy)?;
    }
    match command {
        AgentCommand::Copy(a) => std::process::exit(crate::copy::agent::run(a)),
        AgentCommand::Status { json } => {
            let st = status(this);
            if json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                println!(
                    "bale agent {} on {} ({}, kernel {})",
                    st.version, st.hostname, st.arch, st.kernel
                );
                match &st.bundle {
                    Some(b) => println!("bundle {} {} ({})", b.name, b.version, b.digest),
                    None => println!("no bundle: this bale carries no payload"),
                }
            }
            Ok(())
        }
        AgentCommand::Step {
            name,
            action,
            data_dir,
        } => crate::node::step::run_cli(name, action, &data_dir, this),
        AgentCommand::Kube(KubeCommand::JoinMaterial { control_plane }) => {
            let m = crate::node::kubernetes::join_material(control_plane)?;
            println!("{}", serde_json::to_string(&m)?);
            Ok(())
        }
        AgentCommand::Kube(KubeCommand::Drain { addresses }) => {
            for line in crate::node::kubernetes::drain(&addresses)? {
                println!("{line}");
            }
            Ok(())
        }
        AgentCommand::Kube(KubeCommand::Forget { addresses }) => {
            for line in crate::node::kubernetes::forget(&addresses)? {
                println!("{line}");
            }
            Ok(())
        }
        AgentCommand::Kube(KubeCommand::Mark {
            address,
            labels,
            taints,
        }) => {
            for line in crate::node::kubernetes::mark(&address, &labels, &taints)? {
                println!("{line}");
            }
            Ok(())
        }
        AgentCommand::Kube(KubeCommand::EtcdMember { address }) => {
            let st = crate::node::kubernetes::etcd_standing(&address)?;
            println!("{}", st.as_str());
            Ok(())
        }
        AgentCommand::Kube(KubeCommand::Member { data_dir }) => {
            let ctx = crate::node::context::NodeContext::load(&data_dir)?;
            let root = crate::node::host::HostRoot::system();
            let member = crate::node::kubernetes::join_complete(&root, ctx.is_master());
            println!("{}", if member { MEMBER } else { "not a member" });
            Ok(())
        }
        AgentCommand::Kube(KubeCommand::Nodes { wait_for, timeout }) => {
            let n =
                crate::node::kubernetes::nodes(wait_for, std::time::Duration::from_secs(timeout))?;
            println!("{}", serde_json::to_string(&n)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bale_payload::{Bundle, BundleMeta, BundleWriter, WriteOptions};

    #[test]
    fn the_agent_refuses_a_bundle_its_policy_does_not_trust() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("app.bale");
        let exe = std::env::current_exe().unwrap();
        let mut w =
            BundleWriter::create(&path, &exe, BundleMeta::default(), WriteOptions::default())
                .unwrap();
        w.add_bytes("a", 0o644, b"a").unwrap();
        w.finish().unwrap();
        let pinned = bale_trust::keys::keygen(&d.path().join("pinned"), "", None).unwrap();
        let other = bale_trust::keys::keygen(&d.path().join("other"), "", None).unwrap();
        let mut policy = bale_trust::TrustPolicy::default();
        policy.add_key_file(&pinned.public).unwrap();

        // Unsigned, then signed by a foreign key: refused, as untrusted (exit 4).
        let untrusted = |b: &Bundle| {
            let e = trust_gate(Some(b), &policy).unwrap_err();
            let AgentError::Trust { source, .. } = &e else {
                panic!("not a trust refusal: {e}");
            };
            assert!(source.is_untrusted(), "{source}");
            crate::engine::report::chain(&e)
        };
        let msg = untrusted(&Bundle::open(&path).unwrap());
        assert!(
            msg.contains("unsigned") && msg.contains(&pinned.fingerprint),
            "{msg}"
        );
        let key = bale_trust::keys::load_private_key(&other.private, None).unwrap();
        bale_trust::sign_bundle(&Bundle::open(&path).unwrap(), &key, false, &path).unwrap();
        let msg = untrusted(&Bundle::open(&path).unwrap());
        assert!(msg.contains(&other.fingerprint), "{msg}");

        // Signed by the pinned key: allowed. No bundle: nothing to check.
        let key = bale_trust::keys::load_private_key(&pinned.private, None).unwrap();
        bale_trust::sign_bundle(&Bundle::open(&path).unwrap(), &key, true, &path).unwrap();
        trust_gate(Some(&Bundle::open(&path).unwrap()), &policy).unwrap();
        trust_gate(None, &policy).unwrap();
    }
}
