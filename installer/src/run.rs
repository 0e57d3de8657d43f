//! What every run over the hosts shares (`install`, `reset`, `delete`, `check`): the hosts and
//! how to reach them ([`Target`]), reading the bundle, the hosts and the Clusterfile into the
//! nodes of the run ([`prepare`]), running a list of phases on them and reporting
//! ([`execute`]), and the errors of all of that ([`RunError`]).

use crate::clusterfile::{Clusterfile, ClusterfileError};
use crate::engine::{BundleInfo, Ctx, Event, Manager, Node, Reporter};
use crate::hosts::{self, HostError, Secret, SshOverrides};
use crate::site::{Site, Vips};
use crate::ssh::SshOptions;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

pub const PASSWORD_ENV: &str = "BALE_SSH_PASSWORD";

/// Why a run over the hosts could not start or did not succeed. Each names the flag, file or
/// host at fault and the fix; a damaged bundle keeps its payload error as the source, so the
/// program exits 3 for it.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "this bale program carries no payload: run {verb} from a bundle (./app.bale {verb} ...), or name one with --bundle FILE"
    )]
    NoPayload { verb: String },
    #[error("{}", path.display())]
    Bundle {
        path: PathBuf,
        #[source]
        source: bale_payload::Error,
    },
    /// Trust is configured and the bundle is not signed by a trusted key, or a signature
    /// fails over its root: nothing was contacted.
    #[error("{}", path.display())]
    Trust {
        path: PathBuf,
        #[source]
        source: bale_trust::Error,
    },
    #[error("--data-dir: {0:?} must be an absolute path below /")]
    DataDir(String),
    #[error(transparent)]
    Hosts(#[from] HostError),
    #[error(transparent)]
    Clusterfile(#[from] ClusterfileError),
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "hosts are given twice: use either --masters/--nodes or spec.hosts in {}",
        clusterfile.display()
    )]
    HostsTwice { clusterfile: PathBuf },
    #[error("key {}: no such file", .0.display())]
    NoKey(PathBuf),
    /// The bundle's plugins, configs and apps together with the Clusterfile's.
    #[error(transparent)]
    Site(#[from] crate::site::SiteError),
    #[error("locate this program for SSH_ASKPASS: {0}")]
    CurrentExe(#[source] std::io::Error),
    #[error("--ignore-preflight: unknown check {name:?} (checks: {known})")]
    UnknownCheck { name: String, known: String },
    #[error("--until: no phase {phase:?} (the phases, in order: {known})")]
    UnknownPhase { phase: String, known: String },
    #[error(
        "{flag} {ip}: a virtual IP must be a unicast address that is not loopback (e.g. {example})"
    )]
    BadVip {
        flag: &'static str,
        ip: std::net::Ipv4Addr,
        example: std::net::Ipv4Addr,
    },
    #[error("--registry-vip {0} is also --vip: the registries need a VIP of their own (e.g. {1})")]
    SameVip(std::net::Ipv4Addr, std::net::Ipv4Addr),
    #[error(
        "{0} is a host and a virtual IP at once: pick a --vip / --registry-vip that no host has"
    )]
    HostIsVip(std::net::IpAddr),
    #[error("{what}: add --yes to confirm (no terminal to ask on)")]
    NotConfirmed { what: String },
    #[error("cancelled")]
    Cancelled,
    #[error("read the answer: {0}")]
    Answer(#[source] std::io::Error),
    #[error(
        "delete: name the hosts to remove with --masters/--nodes (to remove every host, use reset)"
    )]
    DeleteWhom,
    #[error("{verb} stopped: {reason}")]
    Stopped { verb: String, reason: String },
    #[error("{verb} failed on {failed} of {total} host(s)")]
    Failed {
        verb: String,
        failed: usize,
        total: usize,
        /// One of the failures came from a damaged bundle.
        damaged: bool,
    },
    #[error(
        "deleted, but no master remains: the workers {workers} still guard the deleted masters. \
         Install masters again (install --masters ... --nodes {workers}) or reset the workers."
    )]
    NoMasterLeft { workers: String },
    /// The deleted hosts are gone, but the hosts that stay did not all learn it.
    #[error(
        "the deleted hosts are gone, but some that stay did not get the new member list: run \
         install again with the hosts that stay"
    )]
    NotFollowed {
        #[source]
        source: Box<RunError>,
    },
    /// The delete failed on some deleted host and neither a deleted host nor the admin side's
    /// record could tell who stays.
    #[error(
        "no deleted host could tell which hosts stay, and there is no record of the cluster \
         ({looked_for}): run install again with the hosts that stay, so their guards follow \
         the masters that are left"
    )]
    Unknown {
        #[source]
        source: Box<RunError>,
        /// The record files looked for, or why they could not be read.
        looked_for: crate::records::NoRecord,
    },
    /// Deleted hosts that did not answer: the cluster forgot them, but they were not reset.
    #[error(
        "{delete}: {hosts} did not answer, so bale's and Kubernetes' files stay on it; the \
         cluster side is done (its Node and etcd member are removed, the hosts that stay follow \
         the new member list). Before that machine runs again, run `bale reset` on it (or \
         reinstall it): it must not come back with its old cluster state"
    )]
    ForgottenNotReset {
        hosts: String,
        delete: Box<RunError>,
    },
    /// The delete failed on some deleted host, and updating the hosts that stay failed too.
    #[error("{delete}; and {follow}")]
    DeleteAndFollow {
        delete: Box<RunError>,
        follow: Box<RunError>,
    },
}

impl RunError {
    /// True when a host failed because of a damaged bundle, so the run exits 3 like every
    /// command that finds one (a damaged bundle read here keeps its payload error as the
    /// source and is told by that).
    pub fn is_damaged(&self) -> bool {
        match self {
            RunError::Failed { damaged, .. } => *damaged,
            RunError::NotFollowed { source }
            | RunError::Unknown { source, .. }
            | RunError::ForgottenNotReset { delete: source, .. } => source.is_damaged(),
            RunError::DeleteAndFollow { delete, follow } => {
                delete.is_damaged() || follow.is_damaged()
            }
            _ => false,
        }
    }
}

pub type RunResult<T> = Result<T, RunError>;

/// How long an SSH connection may take to come up when nothing else is asked for, in seconds.
pub const DEFAULT_CONNECT_TIMEOUT_SECS: u32 = 10;
/// How many hosts a run works on at the same time when nothing else is asked for.
pub const DEFAULT_PARALLEL: usize = 16;

/// The hosts of a run and how to reach them (shared by install, reset, delete and check).
/// The binary's command line fills it in; its flags carry the full descriptions.
#[derive(Debug, Clone)]
pub struct Target {
    /// The bundle to act on; `None`: the running program, when it carries a payload.
    pub bundle: Option<PathBuf>,
    /// Control-plane hosts: addresses and ranges, comma-separated.
    pub masters: Option<String>,
    /// Worker hosts: addresses and ranges, comma-separated.
    pub nodes: Option<String>,
    /// A Clusterfile (sealer.io/v2) with hosts and per-host login.
    pub clusterfile: Option<PathBuf>,
    /// Login user; `None`: the Clusterfile's, else root.
    pub user: Option<String>,
    /// SSH port; `None`: the Clusterfile's, else 22.
    pub port: Option<u16>,
    /// Private key file.
    pub key: Option<PathBuf>,
    /// File holding the private key's passphrase.
    pub key_passphrase_file: Option<PathBuf>,
    /// File holding the login (and sudo) password.
    pub password_file: Option<PathBuf>,
    /// Run privileged commands through sudo (the default for users other than root).
    pub sudo: bool,
    /// known_hosts file that host keys are checked against; `None`: ~/.ssh/known_hosts.
    pub known_hosts: Option<PathBuf>,
    /// Record host keys never seen before (a changed key is still refused).
    pub accept_new_host_keys: bool,
    /// Seconds to wait for an SSH connection.
    pub connect_timeout: u32,
    /// Where the bundle and the journal go on each host.
    pub data_dir: String,
    /// Hosts worked on at the same time.
    pub parallel: usize,
    /// Connect and check, then print what would be done on each host.
    pub dry_run: bool,
    /// One JSON object per event on stdout.
    pub json: bool,
}

impl Default for Target {
    /// This machine only, with the defaults of the command line.
    fn default() -> Self {
        Target {
            bundle: None,
            masters: None,
            nodes: None,
            clusterfile: None,
            user: None,
            port: None,
            key: None,
            key_passphrase_file: None,
            password_file: None,
            sudo: false,
            known_hosts: None,
            accept_new_host_keys: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT_SECS,
            data_dir: crate::layout::DEFAULT_DATA_DIR.into(),
            parallel: DEFAULT_PARALLEL,
            dry_run: false,
            json: false,
        }
    }
}

fn home_known_hosts() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".ssh/known_hosts")
}

/// Everything a run over the hosts needs, ready to go.
pub struct Prepared {
    pub ctx: Arc<Ctx>,
    pub nodes: Vec<Node>,
}

/// Reads the bundle, the hosts and the Clusterfile, and builds the nodes of the run.
pub fn prepare(
    args: &Target,
    ignore_preflight: &[String],
    this_bundle: Option<PathBuf>,
    verb: &str,
    vips: Vips,
) -> RunResult<Prepared> {
    let bundle_path = this_bundle.ok_or_else(|| RunError::NoPayload { verb: verb.into() })?;
    let bundle = bale_payload::Bundle::open(&bundle_path).map_err(|source| RunError::Bundle {
        path: bundle_path.clone(),
        source,
    })?;
    let info = BundleInfo::of(&bundle);
    if !args.data_dir.starts_with('/') || args.data_dir.len() < 2 {
        return Err(RunError::DataDir(args.data_dir.clone()));
    }
    let data_dir = args.data_dir.trim_end_matches('/').to_string();

    let password = match (&args.password_file, Secret::take_env(PASSWORD_ENV)) {
        (Some(f), _) => Some(Secret::from_file("--password-file", f)?),
        (None, p) => p,
    };
    let flags = SshOverrides {
        user: args.user.clone(),
        port: args.port,
        key: args.key.clone(),
        key_passphrase: args
            .key_passphrase_file
            .as_deref()
            .map(|f| Secret::from_file("--key-passphrase-file", f))
            .transpose()?,
        password,
        sudo: args.sudo.then_some(true),
    };
    let mut cluster_env = Vec::new();
    let mut cluster_text = None;
    let mut warnings = Vec::new();
    let mut app_choice = crate::clusterfile::AppChoice::default();
    let host_list = match &args.clusterfile {
        Some(f) => {
            let mut cf = Clusterfile::load(f)?;
            cluster_env = cf.env.clone();
            cluster_text = Some(std::fs::read_to_string(f).map_err(|source| RunError::Read {
                path: f.clone(),
                source,
            })?);
            let hosts = cf.host_list(args.masters.as_deref(), args.nodes.as_deref(), &flags)?;
            warnings = cf.warnings.clone();
            app_choice = cf.apps.clone();
            hosts
        }
        None => hosts::from_flags(args.masters.as_deref(), args.nodes.as_deref(), &flags)?,
    };
    if let Some(k) = host_list
        .iter()
        .filter_map(|h| h.ssh.key.as_ref())
        .find(|k| !k.is_file())
    {
        return Err(RunError::NoKey(k.clone()));
    }

    let cf_name = args
        .clusterfile
        .as_ref()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    let mut site = Site::load(
        &bundle,
        &host_list,
        cluster_text.as_deref().map(|t| (cf_name.as_str(), t)),
        &cluster_env,
        &app_choice,
    )
    .map_err(RunError::Site)?;
    drop(bundle);
    if !site.kubernetes {
        for h in host_list
            .iter()
            .filter(|h| !h.labels.is_empty() || !h.taints.is_empty())
        {
            warnings.push(format!(
                "{cf_name}: the labels and taints of {} are not applied: the bundle brings no \
                 Kubernetes (its Nodes come from a bundle FROM the Kubernetes base)",
                h.addr
            ));
        }
    }
    site.vips = vips;
    let ctx = Arc::new(Ctx {
        bundle: info,
        data_dir,
        ssh: SshOptions {
            known_hosts: args.known_hosts.clone().unwrap_or_else(home_known_hosts),
            accept_new_host_keys: args.accept_new_host_keys,
            connect_timeout_secs: args.connect_timeout.max(1),
            askpass_exe: std::env::current_exe().map_err(RunError::CurrentExe)?,
        },
        ignore_preflight: ignore_preflight.to_vec(),
        peers: host_list.iter().map(|h| (h.addr, h.ssh.port)).collect(),
        reporter: Reporter::new(args.json),
        site,
    });
    for w in warnings.iter().chain(&ctx.site.warnings) {
        ctx.reporter.emit(&Event::Info {
            node: "site",
            message: &format!("warning: {w}"),
        });
    }
    let nodes: Vec<Node> = if host_list.is_empty() {
        vec![Node::new(0, None, ctx.clone())]
    } else {
        host_list
            .into_iter()
            .enumerate()
            .map(|(i, h)| Node::new(i, Some(h), ctx.clone()))
            .collect()
    };
    Ok(Prepared { ctx, nodes })
}

/// Runs `phases` on the prepared nodes and reports; an error when any node failed.
pub fn execute(
    p: Prepared,
    phases: Vec<Box<dyn crate::engine::Phase>>,
    dry_run: bool,
    parallel: usize,
    verb: &str,
) -> RunResult<()> {
    let Prepared { ctx, nodes } = p;
    let manager = Manager {
        phases,
        parallel: parallel.max(1),
        dry_run,
    };
    let report = manager.run(&nodes);
    // Close every session before the summary.
    for n in &nodes {
        n.set_remote(None);
    }
    let retry = (!report.success()).then(retry_command);
    ctx.reporter.emit(&Event::Summary {
        verb,
        ok: &report.ok,
        failed: &report.failed,
        stopped: report.stopped.as_deref(),
        retry: retry.as_deref(),
        timings: &report.timings,
    });
    if let Some(s) = report.stopped {
        return Err(RunError::Stopped {
            verb: verb.into(),
            reason: s,
        });
    }
    if !report.failed.is_empty() {
        return Err(RunError::Failed {
            verb: verb.into(),
            failed: report.failed.len(),
            total: nodes.len(),
            damaged: report.failed.iter().any(|f| f.damaged),
        });
    }
    Ok(())
}

/// The command line of this run, quoted for a shell (it never holds a secret).
fn retry_command() -> String {
    crate::remote::readable_line(std::env::args())
}

/// Asks on the terminal before an uninstall, unless `--yes` (or a dry run) says not to.
pub fn confirm(what: &str, yes: bool, dry_run: bool) -> RunResult<()> {
    if yes || dry_run {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(RunError::NotConfirmed { what: what.into() });
    }
    eprint!("{what}? [y/N] ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(RunError::Answer)?;
    if !matches!(line.trim(), "y" | "Y" | "yes") {
        return Err(RunError::Cancelled);
    }
    Ok(())
}

/// The hosts of a run in words, for a question.
pub fn hosts_phrase(t: &Target) -> String {
    let mut v = Vec::new();
    if let Some(m) = &t.masters {
        v.push(m.clone());
    }
    if let Some(n) = &t.nodes {
        v.push(n.clone());
    }
    if let Some(f) = &t.clusterfile {
        v.push(format!("the hosts of {}", f.display()));
    }
    if v.is_empty() {
        "this machine".into()
    } else {
        v.join(",")
    }
}
