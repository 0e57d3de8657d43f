//! The install engine, k0sctl style: an install is a list of [`Phase`]s; the [`Manager`] runs
//! each phase on every node in parallel (bounded), one phase after the other, records completed
//! phases in a journal on each node ([`journal`]) so a re-run skips them, keeps going on the
//! other nodes when one fails, and ends with a report naming what failed where.
//!
//! Phases see one [`Node`] at a time; checks that need every node (unique hostnames, clock
//! skew) go in [`Phase::after_all`], whose failure stops the whole run.
//!
//! # A failure never uninstalls
//!
//! A phase that fails is reported, and the node is left as it is: whatever earlier runs or
//! earlier phases put there (a running containerd and its containers, a guardian holding the
//! VIP, a control plane) keeps running. Steps are idempotent, so a re-run once the cause is
//! removed converges. The only compensation after a failure is [`Phase::clean_up`], which
//! removes what *this attempt* created and nothing else: the temporary paths the phase
//! recorded in its [`Attempt`] as it made them (a `.part` tree, a temp file). A phase that was
//! applied but whose journal entry could not be written is its own outcome
//! ([`manager::Outcome::NotJournaled`]): the work stays, and the next run applies it again,
//! which changes nothing. Taking things apart is what `reset` and `delete` do, through the
//! steps' explicit `undo`, and nothing else in the engine calls it.

pub mod journal;
pub mod manager;
pub mod report;

use crate::hosts::{Host, Role};
use crate::remote::{Cmd, Remote};
use crate::ssh::{SshError, SshOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

pub use manager::{Manager, RunReport};
pub use report::{Event, Reporter};

#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error("not connected (the connect phase did not run)")]
    NotConnected,
    #[error("{}", path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Copy(#[from] crate::copy::CopyError),
    #[error(transparent)]
    Fanout(Arc<crate::copy::fanout::FanoutError>),
    #[error(
        "another bale run is working on this host: {owner}. Wait for it to finish; its lock \
         ({lock}) goes away by itself when that run ends or loses its connection"
    )]
    HostBusy { lock: String, owner: String },
    #[error("could not take the host lock {lock} (the lock command answered {answer:?})")]
    HostLock { lock: String, answer: String },
    #[error("the agent printed something that is not its status: {output}")]
    AgentStatus {
        output: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the agent runs from bundle {running:?}, expected {expected}")]
    AgentBundle { running: String, expected: String },
    #[error("kernel features missing: {0} (--ignore-preflight=features to go on anyway)")]
    MissingFeatures(String),
    /// What `check` found not in place, one line each.
    #[error("{}", .0.join("\n"))]
    Unhealthy(Vec<String>),
    #[error(
        "no {path} here: this host was not installed by bale (or was reset); leave it out, or \
         install it"
    )]
    NotInstalled { path: String },
    #[error("{path} on this host is not a node context")]
    NodeContext {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "environment variable {0:?} (Kubefile ENV or Clusterfile spec.env) is not a shell name: \
         use letters, digits and _"
    )]
    EnvName(String),
    /// A hook or an app step exited non-zero; `output` is the end of what it printed.
    #[error("{what} failed with exit code {code}:\n{output}")]
    Script {
        what: String,
        code: i32,
        output: String,
    },
    /// A node-local step (`bundle.bale agent step NAME ACTION`) exited non-zero.
    #[error("{step} {action} failed (exit {code}): {output}")]
    Agent {
        step: String,
        action: String,
        code: i32,
        /// What the step printed on stderr (stdout when stderr was empty).
        output: String,
    },
    /// Preflight checks failed on some hosts: (host, check, detail) each, and the fix.
    #[error(
        "{}fix these, or skip a check with --ignore-preflight={}",
        failures.iter().map(|(n, c, d)| format!("  {n}: {c}: {d}\n")).collect::<String>(),
        failed_checks(failures)
    )]
    Preflight {
        failures: Vec<(String, &'static str, String)>,
    },
    /// Two hosts answered with the same hostname (Kubernetes names nodes by it).
    #[error("two hosts share a hostname")]
    SameHostname,
    /// A phase that needs the first master's control plane ran without one.
    #[error(
        "the first master has no working control plane in this run (its kube-init failed or \
         did not run): fix that first, then run the install again"
    )]
    NoControlPlane,
    /// The bundle being installed cannot be read on this (the admin) host.
    #[error("{}", path.display())]
    LocalBundle {
        path: std::path::PathBuf,
        #[source]
        source: bale_payload::Error,
    },
    /// The node's copy of the bundle is still another one after its signatures were replaced.
    #[error("{path}: after its signatures were replaced it is {have}, not {want}")]
    Resign {
        path: String,
        have: String,
        want: String,
    },
}

/// The names of the failed checks, each once, sorted: what `--ignore-preflight` takes.
fn failed_checks(failures: &[(String, &'static str, String)]) -> String {
    let mut names: Vec<&str> = failures.iter().map(|f| f.1).collect();
    names.sort();
    names.dedup();
    names.join(",")
}

impl PhaseError {
    /// True when the phase failed because a bundle's bytes are wrong: the one being installed
    /// (read on this host), or a node's copy (its agent exits 3 for a damaged bundle, as every
    /// bale command does).
    pub fn is_damaged(&self) -> bool {
        match self {
            PhaseError::LocalBundle { source, .. } => source.is_corruption(),
            PhaseError::Copy(c) => c.is_damaged(),
            PhaseError::Fanout(f) => f.is_damaged(),
            PhaseError::Agent { code, .. } => *code == EXIT_DAMAGED,
            _ => false,
        }
    }
}

/// The exit code of every bale command that found a bundle damaged.
pub const EXIT_DAMAGED: i32 = 3;

impl From<crate::copy::fanout::FanoutError> for PhaseError {
    fn from(e: crate::copy::fanout::FanoutError) -> Self {
        PhaseError::Fanout(Arc::new(e))
    }
}

/// What one attempt of one phase on one node created, so that a failure of that attempt can
/// remove exactly that (see the module doc). Filled by the phase as it goes.
#[derive(Debug, Default)]
pub struct Attempt {
    created: Mutex<Vec<String>>,
}

impl Attempt {
    /// Records that this attempt creates `path` on the node (a temporary file or tree that a
    /// successful attempt renames away or removes): a failed attempt removes it.
    pub fn creates(&self, path: impl Into<String>) {
        lock(&self.created).push(path.into());
    }

    /// The paths recorded so far, in the order they were created.
    pub fn created(&self) -> Vec<String> {
        lock(&self.created).clone()
    }

    /// Removes what this attempt recorded, newest first, on the node. Paths that are already
    /// gone (renamed into place) are no error.
    pub fn remove_created(&self, node: &Node) -> Result<Vec<String>, PhaseError> {
        let created = self.created();
        if created.is_empty() {
            return Ok(created);
        }
        let rm = Cmd::new("remove what the failed attempt created", "rm")
            .args(["-rf", "--"])
            .args(created.iter().rev());
        node.remote()?.run_ok(&rm)?;
        Ok(created)
    }
}

pub type PhaseResult = Result<(), PhaseError>;

/// One step of an install. Only `title`, `dry_run` and `run` are required.
pub trait Phase: Send + Sync {
    fn title(&self) -> &str;
    /// False when there is nothing to do on this node (the phase is reported as skipped).
    fn should_run(&self, _node: &Node) -> bool {
        true
    }
    /// What `run` would do on this node, for `--dry-run`.
    fn dry_run(&self, node: &Node) -> String;
    /// Applies the phase on one node. Whatever temporary thing it creates on the node goes into
    /// `attempt` first, so that [`Phase::clean_up`] can remove it if the attempt fails.
    fn run(&self, node: &Node, attempt: &Attempt) -> PhaseResult;
    /// After `run` failed on this node: removes what this attempt created and nothing more,
    /// never what an earlier run installed (see the module doc). Returns what it removed.
    fn clean_up(&self, node: &Node, attempt: &Attempt) -> Result<Vec<String>, PhaseError> {
        attempt.remove_created(node)
    }
    /// Recorded in the node's journal and skipped on a re-run once done. Checks and
    /// connections are not journaled: they run every time.
    fn journaled(&self) -> bool {
        true
    }
    /// The settings of the run this phase's result depends on, recorded with it in the
    /// journal: a journaled phase runs again when they differ from the recorded ones (e.g. the
    /// containerd hosts files when `--registry-vip` is added). Empty for most phases.
    fn inputs(&self, _node: &Node) -> String {
        String::new()
    }
    /// Changes nothing on the nodes, so it runs for real under `--dry-run` too.
    fn read_only(&self) -> bool {
        false
    }
    /// Runs once after `run` succeeded on every node that was still in the run; an error
    /// stops the whole install (used by preflight for the cross-node checks).
    fn after_all(&self, _nodes: &[&Node], _ctx: &Ctx) -> PhaseResult {
        Ok(())
    }
}

/// What every node shares: the bundle, where it goes, and the options.
pub struct Ctx {
    pub bundle: BundleInfo,
    pub data_dir: String,
    pub ssh: SshOptions,
    pub ignore_preflight: Vec<String>,
    /// Every host's address and SSH port (for the reachability check).
    pub peers: Vec<(std::net::IpAddr, u16)>,
    pub reporter: Reporter,
    /// Roles, environment, hooks, overlays and apps of the whole install.
    pub site: crate::site::Site,
}

#[derive(Debug, Clone)]
pub struct BundleInfo {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    /// Architecture of the program the file starts with.
    pub arch: String,
    /// Every architecture the bundle installs on: `arch` alone, or a multi-platform bundle's.
    pub arches: Vec<String>,
    /// Hex SHA-256 of the header: the bundle's identity.
    pub digest: String,
    pub size: u64,
}

impl BundleInfo {
    pub fn of(b: &bale_payload::Bundle) -> BundleInfo {
        BundleInfo {
            path: b.path().to_path_buf(),
            name: b.header.name.clone(),
            version: b.header.version.clone(),
            arch: b.header.arch.clone(),
            arches: if b.is_multi_platform() {
                b.header.programs.keys().cloned().collect()
            } else {
                vec![b.header.arch.clone()]
            },
            digest: bale_payload::format::hex(&b.trailer.header_sha256),
            size: b.trailer.file_len,
        }
    }
}

/// What the connect phase learns about a host.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Facts {
    pub arch: String,
    pub kernel: String,
    pub hostname: String,
    pub os_id: String,
    pub os_version: String,
    pub os_pretty: String,
}

/// One host of the install and what the phases learned about it so far.
pub struct Node {
    pub index: usize,
    /// None for this machine (no hosts given).
    pub host: Option<Host>,
    pub ctx: Arc<Ctx>,
    remote: Mutex<Option<Arc<dyn Remote>>>,
    pub facts: Mutex<Option<Facts>>,
    pub journal: Mutex<journal::Journal>,
    pub probe: Mutex<Option<crate::preflight::Probe>>,
}

/// A context for tests: a bundle `b` 1 (digest `d`), this data dir and site, JSON events.
#[cfg(test)]
pub fn test_ctx(data_dir: &str, site: crate::site::Site) -> Arc<Ctx> {
    let bundle = BundleInfo {
        path: "/b".into(),
        name: "b".into(),
        version: "1".into(),
        arch: "x86_64".into(),
        arches: vec!["x86_64".into()],
        digest: "d".into(),
        size: 1,
    };
    test_ctx_with(bundle, data_dir, site)
}

/// [`test_ctx`] with this bundle.
#[cfg(test)]
pub fn test_ctx_with(bundle: BundleInfo, data_dir: &str, site: crate::site::Site) -> Arc<Ctx> {
    Arc::new(Ctx {
        bundle,
        data_dir: data_dir.into(),
        site,
        ssh: SshOptions {
            known_hosts: "/kh".into(),
            accept_new_host_keys: false,
            connect_timeout_secs: 1,
            askpass_exe: "/bale".into(),
        },
        ignore_preflight: vec![],
        peers: vec![],
        reporter: Reporter::new(true),
    })
}

/// Locks a mutex even if a panicking thread poisoned it (the data is still consistent here:
/// every critical section is a plain assignment).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    pub fn new(index: usize, host: Option<Host>, ctx: Arc<Ctx>) -> Node {
        Node {
            index,
            host,
            ctx,
            remote: Mutex::new(None),
            facts: Mutex::new(None),
            journal: Mutex::new(journal::Journal::default()),
            probe: Mutex::new(None),
        }
    }

    /// The address (and port when not 22), or `local`.
    pub fn name(&self) -> String {
        self.host
            .as_ref()
            .map(|h| h.label())
            .unwrap_or_else(|| "local".into())
    }

    pub fn role(&self) -> Role {
        self.host.as_ref().map(|h| h.role).unwrap_or(Role::Master)
    }

    /// The node's remote, once the connect phase opened it.
    pub fn remote(&self) -> Result<Arc<dyn Remote>, PhaseError> {
        lock(&self.remote).clone().ok_or(PhaseError::NotConnected)
    }

    pub fn set_remote(&self, r: Option<Arc<dyn Remote>>) {
        *lock(&self.remote) = r;
    }

    pub fn facts(&self) -> Facts {
        lock(&self.facts).clone().unwrap_or_default()
    }

    /// How far a transfer to this node has come: a bar on a terminal, a line now and then in a
    /// log, an event with `--json`.
    pub fn progress(&self, phase: &str, done: u64, total: u64, source: &str) {
        self.ctx.reporter.emit(&Event::Progress {
            phase,
            node: &self.name(),
            done,
            total,
            source,
        });
    }

    /// A line of progress about this node.
    pub fn note(&self, msg: &str) {
        self.ctx.reporter.emit(&Event::Info {
            node: &self.name(),
            message: msg,
        });
    }
}
