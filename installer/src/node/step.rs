//! The node-local steps (`bale agent step NAME apply|undo|check`): what they share.
//!
//! A step is idempotent: `apply` changes only what is not yet in place and says so, `undo`
//! removes what `apply` made (from a small manifest it keeps under `<data-dir>/steps/`, so undo
//! removes exactly that and nothing the host had before), and `check` reports one finding per
//! thing it looked at. Progress goes to stdout as plain lines; errors name the file or feature
//! and the fix.
//!
//! Steps reach the host only through their [`StepEnv`]: its files through `root` and its
//! programs through `commands` (see [`super::host`]), so each step runs unchanged on a node and,
//! in tests, in a temporary directory.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bale_payload::Bundle;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::context::{ContextError, NodeContext};
use super::host::{HostCommands, HostRoot, SystemCommands};
use super::systemd::Systemd;

/// Everything a step may fail with: what all steps share, and each step's own errors (kept in
/// that step's module) joined in whole, so that a bundle's damage (a `bale_payload::Error`) and
/// every other cause stay in the source chain instead of being flattened into text.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", path.display())]
    Payload {
        path: PathBuf,
        source: bale_payload::Error,
    },
    /// A kernel feature the install cannot do without.
    #[error("kernel feature {feature} is missing: the {needed_by} needs it ({fix})")]
    MissingFeature {
        feature: String,
        needed_by: String,
        fix: String,
    },
    /// A program ran and failed; `detail` is what it said (its stderr, or kubeadm's last lines).
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    /// A program failed without a word on stderr.
    #[error("`{command}` failed: {status}")]
    Exited {
        command: String,
        status: std::process::ExitStatus,
    },
    /// A program could not be started at all.
    #[error("`{command}` failed")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "this bale program carries no bundle: run the step from the bundle file \
         (<data-dir>/bundle.bale agent step ...)"
    )]
    NoBundle,
    /// The cause sits inside the sentence (the advice follows it), so it is shown there rather
    /// than chained as a source.
    #[error(
        "{}: unreadable record of an earlier apply: {cause} (remove the file to start over)",
        path.display()
    )]
    UnreadableManifest {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error("{}", path.display())]
    UnwritableManifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Kernel(#[from] super::kernel::KernelError),
    #[error(transparent)]
    Runtime(#[from] super::runtime::RuntimeError),
    #[error(transparent)]
    Registry(#[from] super::registry_unit::RegistryError),
    #[error(transparent)]
    Lvscare(#[from] super::lvscare_unit::LvscareStepError),
    #[error(transparent)]
    Kubernetes(#[from] super::kubernetes::KubernetesError),
    #[error(transparent)]
    PodNet(#[from] super::podnet::PodNetError),
    /// What this host is, as Kubernetes needs to know it.
    #[error(transparent)]
    Facts(#[from] crate::kube::FactsError),
    /// kubeadm's configuration, its secrets and join material.
    #[error(transparent)]
    KubeConfig(#[from] crate::kube::KubeConfigError),
}

impl StepError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StepError {
        StepError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type StepResult<T> = Result<T, StepError>;

/// What a step runs against: the install's context, the bundle it came in, and the host.
pub struct StepEnv<'a> {
    pub ctx: &'a NodeContext,
    /// The bundle this agent runs from (`<data-dir>/bundle.bale` during an install).
    pub bundle: Option<&'a Bundle>,
    /// Where the host's files are ([`HostRoot::system`] on a node).
    pub root: &'a HostRoot,
    /// How the host's programs are run ([`SystemCommands`] on a node).
    pub commands: &'a dyn HostCommands,
}

impl<'a> StepEnv<'a> {
    pub fn bundle(&self) -> StepResult<&Bundle> {
        self.bundle.ok_or(StepError::NoBundle)
    }

    pub fn systemd(&self) -> Systemd<'a> {
        Systemd::new(self.root, self.commands)
    }

    /// Where a step keeps the record of what it made, for undo (a host path).
    pub fn manifest_path(&self, step: &str) -> PathBuf {
        Path::new(&self.ctx.data_dir)
            .join(crate::layout::STEPS)
            .join(format!("{step}.json"))
    }
}

/// One line of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
}

impl Finding {
    pub fn ok(text: impl Into<String>) -> Finding {
        Finding {
            ok: true,
            text: text.into(),
        }
    }
    pub fn bad(text: impl Into<String>) -> Finding {
        Finding {
            ok: false,
            text: text.into(),
        }
    }
    pub fn of(ok: bool, text: impl Into<String>) -> Finding {
        Finding {
            ok,
            text: text.into(),
        }
    }
    /// Whether the host file at `path` holds exactly `want`, the text a step writes there.
    pub fn file_holds(root: &HostRoot, path: &Path, want: &str) -> Finding {
        let same = root.read_to_string(path).is_ok_and(|t| t == want);
        let state = if same {
            "in place"
        } else {
            "missing or different"
        };
        Finding::of(same, format!("{}: {state}", path.display()))
    }
}

/// Prints a step's progress and counts its changes, so a second apply can say it changed
/// nothing.
pub struct Progress {
    step: &'static str,
    changes: usize,
}

impl Progress {
    pub fn new(step: &'static str) -> Progress {
        Progress { step, changes: 0 }
    }

    /// Something was changed on the host.
    pub fn changed(&mut self, what: impl AsRef<str>) {
        self.changes += 1;
        println!("{}: {}", self.step, what.as_ref());
    }

    /// Information only: nothing was changed.
    pub fn note(&self, what: impl AsRef<str>) {
        println!("{}: {}", self.step, what.as_ref());
    }

    pub fn changes(&self) -> usize {
        self.changes
    }

    /// The closing line.
    pub fn finish(&self, action: &str) {
        if self.changes == 0 {
            println!("{}: {action}: nothing to change", self.step);
        } else {
            println!("{}: {action}: {} change(s)", self.step, self.changes);
        }
    }
}

pub trait Step {
    fn name(&self) -> &'static str;
    /// One finding per thing looked at; the step is in place when every finding is ok.
    fn check(&self, env: &StepEnv) -> StepResult<Vec<Finding>>;
    fn apply(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()>;
    fn undo(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()>;
}

/// Reads a step's manifest; `None` when the step has not been applied.
pub fn load_manifest<T: DeserializeOwned>(root: &HostRoot, path: &Path) -> StepResult<Option<T>> {
    match root.read(path) {
        Ok(b) => {
            serde_json::from_slice(&b)
                .map(Some)
                .map_err(|cause| StepError::UnreadableManifest {
                    path: root.path(path),
                    cause,
                })
        }
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub fn save_manifest<T: Serialize>(root: &HostRoot, path: &Path, value: &T) -> StepResult<()> {
    let text =
        serde_json::to_vec_pretty(value).map_err(|source| StepError::UnwritableManifest {
            path: root.path(path),
            source,
        })?;
    root.write_file(path, &text, 0o600)?;
    Ok(())
}

/// Runs a command on this machine; its stdout on success, an error with its stderr otherwise.
/// (For what is not a step; steps go through their [`StepEnv::commands`].)
pub fn run(program: &str, args: &[&str]) -> StepResult<String> {
    SystemCommands.run(program, args)
}

/// Finds a program in PATH (and the usual sbin directories, which a non-login PATH may lack).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    found
}

/// The steps `bale agent step` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepName {
    Kernel,
    Runtime,
    Registry,
    Lvscare,
    Kubelet,
    Cluster,
    Podnet,
}

impl StepName {
    /// Every step, in the order the command line's help lists them.
    pub const ALL: [StepName; 7] = [
        StepName::Kernel,
        StepName::Runtime,
        StepName::Registry,
        StepName::Lvscare,
        StepName::Kubelet,
        StepName::Cluster,
        StepName::Podnet,
    ];

    /// The step's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::Kernel => "kernel",
            StepName::Runtime => "runtime",
            StepName::Registry => "registry",
            StepName::Lvscare => "lvscare",
            StepName::Kubelet => "kubelet",
            StepName::Cluster => "cluster",
            StepName::Podnet => "podnet",
        }
    }

    /// What the step puts in place, for the command line's help.
    pub fn about(self) -> &'static str {
        match self {
            StepName::Kernel => "Kernel modules, sysctls, swap off",
            StepName::Runtime => "containerd, runc, CNI plugins and their config from the bundle",
            StepName::Registry => "bale-registry.service serving the bundled images",
            StepName::Lvscare => {
                "bale-lvscare.service guarding the apiserver VIP (workers), the \
                 apiserver.cluster.local line"
            }
            StepName::Kubelet => {
                "kubelet's unit and kubeadm's drop-in, crictl's config (Kubernetes bundles)"
            }
            StepName::Cluster => {
                "kubeadm init on the first master, kubeadm join elsewhere; undo resets the node"
            }
            StepName::Podnet => {
                "bale's pod network: a bridge on the node's pod subnet, routes to the other \
                 nodes' pods"
            }
        }
    }
}

/// What `bale agent step NAME` does with the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction {
    Apply,
    Undo,
    Check,
}

impl StepAction {
    /// Every action, in the order the command line's help lists them.
    pub const ALL: [StepAction; 3] = [StepAction::Apply, StepAction::Undo, StepAction::Check];

    /// The action's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            StepAction::Apply => "apply",
            StepAction::Undo => "undo",
            StepAction::Check => "check",
        }
    }

    /// What the action does, for the command line's help.
    pub fn about(self) -> &'static str {
        match self {
            StepAction::Apply => "Make the step's result be in place (idempotent)",
            StepAction::Undo => "Remove what apply made (a second undo is a no-op)",
            StepAction::Check => {
                "Exit 0 when the step's result is in place and healthy, 1 when not"
            }
        }
    }
}

/// A word that names no step, or no action.
#[derive(Debug, thiserror::Error)]
#[error("no {what} {word:?} (the {what}s: {known})")]
pub struct UnknownWord {
    pub what: &'static str,
    pub word: String,
    pub known: String,
}

/// The member of `all` whose name is `word`.
fn by_name<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &'static str,
    word: &str,
) -> Result<T, UnknownWord> {
    all.iter()
        .copied()
        .find(|t| name(*t) == word)
        .ok_or_else(|| UnknownWord {
            what,
            word: word.to_string(),
            known: all.iter().map(|t| name(*t)).collect::<Vec<_>>().join(", "),
        })
}

impl std::str::FromStr for StepName {
    type Err = UnknownWord;
    fn from_str(word: &str) -> Result<Self, UnknownWord> {
        by_name(&StepName::ALL, StepName::as_str, "step", word)
    }
}

impl std::str::FromStr for StepAction {
    type Err = UnknownWord;
    fn from_str(word: &str) -> Result<Self, UnknownWord> {
        by_name(&StepAction::ALL, StepAction::as_str, "action", word)
    }
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for StepAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub fn step_of(name: StepName) -> Box<dyn Step> {
    match name {
        StepName::Kernel => Box::new(super::kernel::Kernel),
        StepName::Runtime => Box::new(super::runtime::Runtime),
        StepName::Registry => Box::new(super::registry_unit::RegistryUnit),
        StepName::Lvscare => Box::new(super::lvscare_unit::LvscareStep),
        StepName::Kubelet => Box::new(super::kubernetes::Kubelet),
        StepName::Cluster => Box::new(super::kubernetes::Cluster),
        StepName::Podnet => Box::new(super::podnet::PodNet),
    }
}

/// `bale agent step NAME ACTION`: loads the node context, runs the step, prints its lines.
/// A failed check is an error (exit 1) after its findings are printed.
pub fn run_cli(
    name: StepName,
    action: StepAction,
    data_dir: &str,
    bundle: Option<&Bundle>,
) -> Result<(), crate::agent::AgentError> {
    let ctx = NodeContext::load(data_dir)?;
    let root = HostRoot::system();
    let env = StepEnv {
        ctx: &ctx,
        bundle,
        root: &root,
        commands: &SystemCommands,
    };
    let step = step_of(name);
    let mut p = Progress::new(step.name());
    match action {
        StepAction::Apply => {
            step.apply(&env, &mut p)?;
            p.finish("apply");
        }
        StepAction::Undo => {
            step.undo(&env, &mut p)?;
            p.finish("undo");
        }
        StepAction::Check => {
            let findings = step.check(&env)?;
            for f in &findings {
                println!(
                    "{}: {} {}",
                    step.name(),
                    if f.ok { "ok  " } else { "FAIL" },
                    f.text
                );
            }
            let bad = findings.iter().filter(|f| !f.ok).count();
            if bad > 0 {
                return Err(crate::agent::AgentError::CheckFailed {
                    step: step.name().to_string(),
                    bad,
                });
            }
            println!("{}: check: all in place", step.name());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_and_actions_read_back_from_their_words() {
        for name in StepName::ALL {
            assert_eq!(name.as_str().parse::<StepName>().unwrap(), name);
            assert_eq!(name.to_string(), name.as_str());
            // The node steps name themselves the same way in their output.
            assert_eq!(step_of(name).name(), name.as_str());
        }
        for action in StepAction::ALL {
            assert_eq!(action.as_str().parse::<StepAction>().unwrap(), action);
        }
        let e = "frob".parse::<StepAction>().unwrap_err().to_string();
        assert_eq!(e, "no action \"frob\" (the actions: apply, undo, check)");
        assert!("Kernel".parse::<StepName>().is_err());
    }

    use crate::engine::report::chain;
    use crate::node::kubernetes::{self, KubeNode};
    use crate::node::podnet::{self, PodNetError};

    fn json_error(text: &str) -> serde_json::Error {
        serde_json::from_str::<serde_json::Value>(text).unwrap_err()
    }

    /// The typed errors print, through the source chain, the very lines the old
    /// `Failed(String)` texts read.
    #[test]
    fn typed_errors_read_as_the_old_messages() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::at(dir.path());
        root.write_file("/m.json", b"{not json", 0o600).unwrap();
        let e = load_manifest::<serde_json::Value>(&root, Path::new("/m.json")).unwrap_err();
        let cause = json_error("{not json");
        assert_eq!(
            chain(&e),
            format!(
                "{}: unreadable record of an earlier apply: {cause} (remove the file to start \
                 over)",
                dir.path().join("m.json").display()
            )
        );

        let e = kubernetes::parse_nodes("[oops").unwrap_err();
        assert_eq!(
            chain(&e),
            format!("kubectl get nodes: not JSON: {}", json_error("[oops"))
        );

        let e: StepError = PodNetError::BadNodeList {
            path: "/var/lib/bale/podnet.json".into(),
            source: json_error("x"),
        }
        .into();
        assert_eq!(
            chain(&e),
            format!(
                "/var/lib/bale/podnet.json: not a node list: {}",
                json_error("x")
            )
        );

        let node = |name: &str, ip: &str, cidr: Option<&str>| KubeNode {
            name: name.into(),
            internal_ip: ip.into(),
            pod_cidr: cidr.map(str::to_string),
            ready: true,
        };
        let e = podnet::plan(&[node("a", "10.0.0.1", None)], "10.0.0.9").unwrap_err();
        assert_eq!(
            chain(&e),
            "no node with InternalIP 10.0.0.9 in the cluster: kubelet registers the node during \
             the join; look at `journalctl -u kubelet` on it"
        );
        let nodes = [
            node("a", "10.0.0.1", None),
            node("b", "10.0.0.2", Some("bad")),
        ];
        let e = podnet::plan(&nodes, "10.0.0.1").unwrap_err();
        assert!(chain(&e).starts_with("node a has no pod subnet yet (spec.podCIDR): "));
        let e = podnet::routes_to_others(&nodes, "10.0.0.1").unwrap_err();
        assert_eq!(
            chain(&e),
            "node b: pod subnet \"bad\" is not an IPv4 CIDR (bale's pod network is IPv4)"
        );

        let e: StepError =
            crate::kube::KubeConfigError::Random(getrandom::Error::UNSUPPORTED).into();
        assert_eq!(
            chain(&e),
            format!(
                "no random bytes from the operating system: {}",
                getrandom::Error::UNSUPPORTED
            )
        );

        let e = StepError::Spawn {
            command: "frob --now".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(chain(&e), "`frob --now` failed: entity not found");
    }

    /// A damaged bundle stays recognisable behind a step's error (exit code 3 on the node).
    #[test]
    fn payload_damage_stays_in_the_source_chain() {
        let e: crate::agent::AgentError = StepError::Payload {
            path: "/var/lib/bale/bundle.bale".into(),
            source: bale_payload::Error::NoTrailer,
        }
        .into();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        let mut damaged = false;
        while let Some(c) = next {
            damaged |= c
                .downcast_ref::<bale_payload::Error>()
                .is_some_and(|p| p.is_corruption());
            next = c.source();
        }
        assert!(damaged, "{}", chain(&e));
    }
}
