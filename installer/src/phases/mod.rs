//! The phases of an install and of a reset, in order. Each file is one phase (or one kind).

pub mod agent_check;
pub mod agent_step;
pub mod apps;
pub mod connect;
pub mod context;
pub mod extract;
pub mod forget;
pub mod health;
pub mod hooks;
pub mod kube;
pub mod lock;
pub mod members;
pub mod overlay;
pub mod preflight;
pub mod upload;

use crate::engine::{Node, Phase};
use crate::plugins::Action;
use crate::remote::Cmd;
use agent_step::{no_inputs, AgentStep, UndoStep};
use hooks::Hooks;

/// The phases of `bale install`.
pub fn install() -> Vec<Box<dyn Phase>> {
    let hook = |action| -> Box<dyn Phase> {
        Box::new(Hooks {
            action,
            journaled: true,
        })
    };
    let kube = std::sync::Arc::new(kube::KubeRun::default());
    vec![
        Box::new(connect::Connect),
        Box::new(lock::Lock { verb: "install" }),
        Box::new(preflight::Preflight),
        Box::new(upload::Upload::new()),
        Box::new(agent_check::AgentCheck),
        Box::new(context::WriteContext),
        Box::new(extract::Extract),
        Box::new(overlay::Overlay),
        hook(Action::PreInstall),
        Box::new(AgentStep {
            step: "kernel",
            only: None,
            what: "load kernel modules, set sysctls, turn swap off",
            every_run: false,
            inputs: no_inputs,
        }),
        Box::new(AgentStep {
            step: "runtime",
            only: None,
            what: "install containerd, runc and the CNI plugins from the bundle",
            every_run: false,
            // The hosts files name the registry VIP on workers.
            inputs: |c| c.registry_fallback().unwrap_or_default(),
        }),
        Box::new(AgentStep {
            step: "registry",
            only: None,
            what: "serve the bundle's images on this node (bale-registry.service)",
            every_run: false,
            inputs: no_inputs,
        }),
        Box::new(AgentStep {
            step: "lvscare",
            // Workers get the guard; every node gets the apiserver name in /etc/hosts, which
            // kubeadm init and join already dial.
            only: None,
            what: "name the API servers in /etc/hosts; on workers, guard their virtual IP \
                   (bale-lvscare.service)",
            every_run: true,
            inputs: no_inputs,
        }),
        Box::new(AgentStep {
            step: "kubelet",
            only: None,
            what: "kubelet's unit and kubeadm's drop-in, crictl's config (Kubernetes bundles)",
            // Cheap, and it re-checks what the host can give kubelet.
            every_run: true,
            inputs: no_inputs,
        }),
        hook(Action::PreInit),
        Box::new(kube::KubeInit(kube.clone())),
        hook(Action::PostInit),
        Box::new(kube::KubeJoin(kube.clone())),
        Box::new(kube::PodNetwork(kube.clone())),
        hook(Action::PreApps),
        Box::new(kube::NodeMarks(kube)),
        Box::new(apps::Apps),
        hook(Action::PostInstall),
    ]
}

/// The phases of `bale reset` (and `delete`, the `verb`): clean hooks around the undo of every
/// node step, newest first.
pub fn reset(verb: &'static str) -> Vec<Box<dyn Phase>> {
    let hook = |action| -> Box<dyn Phase> {
        Box::new(Hooks {
            action,
            journaled: false,
        })
    };
    vec![
        Box::new(connect::Connect),
        Box::new(lock::Lock { verb }),
        hook(Action::PreClean),
        // kubeadm reset first: it removes the pods through CNI while the network still exists.
        Box::new(UndoStep("cluster")),
        Box::new(UndoStep("kubelet")),
        Box::new(UndoStep("lvscare")),
        Box::new(UndoStep("registry")),
        Box::new(UndoStep("runtime")),
        // The pod routes last: whatever container the runtime's undo kills answers its peers
        // through them, not through the default gateway.
        Box::new(UndoStep("podnet")),
        Box::new(UndoStep("kernel")),
        hook(Action::PostClean),
        Box::new(forget::Forget),
    ]
}

/// Where the bundle lives on a node.
pub fn bundle_path(data_dir: &str) -> String {
    crate::layout::path(data_dir, crate::layout::BUNDLE)
}

/// True when the node holds a bundle that can run its own undo steps.
pub fn has_bundle(node: &Node) -> bool {
    let bundle = bundle_path(&node.ctx.data_dir);
    test_on(
        node,
        &Cmd::new("look for the bundle", "test").args(["-x", &bundle]),
    )
}

/// True when `cmd` exits 0 on the node (false when it cannot be run).
pub fn test_on(node: &Node, cmd: &Cmd) -> bool {
    node.remote()
        .ok()
        .and_then(|r| r.run(cmd).ok())
        .is_some_and(|o| o.code == 0)
}

#[cfg(test)]
mod tests;
