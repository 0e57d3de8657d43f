//! The node-local `lvscare` step: on a worker, the guardian that keeps the apiserver VIP
//! pointing at healthy masters, as a systemd unit, plus the `/etc/hosts` name every node dials.
//!
//! - workers (`role == "node"`): `/etc/bale/lvscare.yaml` (the masters behind `<vip>:6443`),
//!   `bale-lvscare.service` running `<data-dir>/bundle.bale lvscare --config <file>` with
//!   `Restart=always`, and `<vip> apiserver.cluster.local` in `/etc/hosts`. Re-applying with other
//!   masters rewrites the file and reloads the guardian (SIGHUP through `systemctl reload`), so
//!   connections through the VIP survive a master joining or leaving.
//! - workers, when the install gave `--registry-vip`: a second guardian,
//!   `bale-lvscare-registry.service` (`lvscare --instance registry`, its own nftables table and
//!   link), keeping `<registry-vip>:5050` on the masters' registries that answer `GET /v2/`.
//!   The runtime step lists that VIP in containerd's hosts files after the worker's own
//!   registry, so a pull still works while the local one is down. Without the flag, apply
//!   removes this guardian.
//! - masters: only the hosts line, pointing at the first master (a master must not depend on a
//!   VIP that only workers set up).
//!
//! Undo stops and removes all of it, and cleans the data plane (`lvscare --clean`): stopping the
//! guardian on purpose leaves its rules in place, so the clean is a separate act.
//!
//! Every file is written to a temporary name, synced and renamed, and only when its content
//! differs, so `apply` is idempotent and `check` can compare byte for byte.

use crate::node::context::NodeContext;
use crate::node::host::{HostCommands, HostError, HostRoot};
use crate::node::step::{Finding, Progress, Step, StepEnv, StepError, StepResult};
use crate::node::systemd::unit_path;
use bale_lvscare::{self as lvscare, APISERVER_NAME};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub const STEP: &str = "lvscare";
pub const UNIT: &str = "bale-lvscare.service";
pub const REGISTRY_UNIT: &str = "bale-lvscare-registry.service";
/// `lvscare --instance` of the registry guardian: table `bale_lvscare_registry`, link
/// `bale-registry`.
pub const REGISTRY_INSTANCE: &str = "registry";
/// The port of the apiserver behind the VIP.
pub const APISERVER_PORT: u16 = 6443;
/// Marks the hosts line this step owns, so undo removes exactly that line.
const HOSTS_TAG: &str = "# bale lvscare";

#[derive(Debug, thiserror::Error)]
pub enum LvscareStepError {
    #[error("node context: {field} {value:?} is not an IP address (fix {data_dir}/node.json)")]
    BadAddress {
        field: &'static str,
        value: String,
        data_dir: String,
    },
    #[error("node context: no masters listed (fix {0}/node.json)")]
    NoMasters(String),
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// systemctl ran and refused; `said` is its own words (with a hint when it is missing).
    #[error("systemctl {args}: {said}")]
    Systemctl { args: String, said: String },
    #[error("systemctl {args}: {status}")]
    SystemctlExited {
        args: String,
        status: std::process::ExitStatus,
    },
    /// systemctl could not be started. The cause sits inside the sentence (a hint may follow
    /// it), so it is shown there rather than chained as a source.
    #[error(
        "systemctl {args}: {cause}{}",
        if *no_systemctl { " (is systemd installed?)" } else { "" }
    )]
    SystemctlUnstartable {
        args: String,
        cause: std::io::Error,
        no_systemctl: bool,
    },
    /// Any other way running systemctl failed.
    #[error("systemctl {args}")]
    SystemctlFailed {
        args: String,
        source: Box<StepError>,
    },
    #[error("lvscare --clean")]
    Clean(#[source] lvscare::Error),
}

/// The hosts file this step keeps its line in.
pub const HOSTS_FILE: &str = "/etc/hosts";
/// The apiserver guardian's config.
pub const CONFIG_FILE: &str = "/etc/bale/lvscare.yaml";
/// The registry guardian's config.
pub const REGISTRY_CONFIG_FILE: &str = "/etc/bale/lvscare-registry.yaml";

/// The host this step works on: its files and its commands.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    pub root: &'a HostRoot,
    pub commands: &'a dyn HostCommands,
}

/// The guardians a worker may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// The API servers' VIP: always on a worker.
    Apiserver,
    /// The masters' registries' VIP: only with `--registry-vip`.
    Registry,
}

impl Guard {
    pub const ALL: [Guard; 2] = [Guard::Apiserver, Guard::Registry];

    pub fn unit_name(self) -> &'static str {
        match self {
            Guard::Apiserver => UNIT,
            Guard::Registry => REGISTRY_UNIT,
        }
    }

    fn instance(self) -> Option<&'static str> {
        match self {
            Guard::Apiserver => None,
            Guard::Registry => Some(REGISTRY_INSTANCE),
        }
    }

    fn what(self) -> &'static str {
        match self {
            Guard::Apiserver => "the apiserver VIP",
            Guard::Registry => "the registry VIP",
        }
    }

    /// (config file, unit file), as host paths.
    pub fn files(self) -> (PathBuf, PathBuf) {
        let config = match self {
            Guard::Apiserver => CONFIG_FILE,
            Guard::Registry => REGISTRY_CONFIG_FILE,
        };
        (PathBuf::from(config), unit_path(self.unit_name()))
    }

    /// The virtual server this guardian keeps on `ctx`, or None when this node runs no such
    /// guardian.
    fn vs(self, ctx: &NodeContext) -> Result<Option<SocketAddr>, LvscareStepError> {
        if !is_worker(ctx) {
            return Ok(None);
        }
        Ok(match self {
            Guard::Apiserver => Some(vs(ctx)?),
            Guard::Registry => match &ctx.registry_vip {
                Some(v) => Some(SocketAddr::new(
                    ip("registry_vip", v, ctx)?,
                    ctx.registry_port,
                )),
                None => None,
            },
        })
    }

    /// The config file for `ctx`, or None when this node runs no such guardian.
    pub fn render_config(self, ctx: &NodeContext) -> Result<Option<String>, LvscareStepError> {
        let Some(vs) = self.vs(ctx)? else {
            return Ok(None);
        };
        let masters = masters(ctx)?;
        Ok(Some(match self {
            Guard::Apiserver => lvscare::worker_config(vs, &masters),
            Guard::Registry => lvscare::registry_config(vs, &masters),
        }))
    }
}

fn ip(field: &'static str, value: &str, ctx: &NodeContext) -> Result<IpAddr, LvscareStepError> {
    value
        .trim()
        .parse()
        .map_err(|_| LvscareStepError::BadAddress {
            field,
            value: value.to_string(),
            data_dir: ctx.data_dir.clone(),
        })
}

fn is_worker(ctx: &NodeContext) -> bool {
    ctx.role == "node"
}

fn masters(ctx: &NodeContext) -> Result<Vec<IpAddr>, LvscareStepError> {
    if ctx.masters.is_empty() {
        return Err(LvscareStepError::NoMasters(ctx.data_dir.clone()));
    }
    ctx.masters.iter().map(|m| ip("masters", m, ctx)).collect()
}

fn vs(ctx: &NodeContext) -> Result<SocketAddr, LvscareStepError> {
    Ok(SocketAddr::new(ip("vip", &ctx.vip, ctx)?, APISERVER_PORT))
}

/// A guardian's systemd unit: the bundle itself is the guardian. `Restart=always` brings it back
/// after a crash or kill -9 (it adopts its own rules); reload is SIGHUP, which re-reads the
/// config.
pub fn render_unit(guard: Guard, ctx: &NodeContext, config: &Path) -> String {
    let instance = guard
        .instance()
        .map(|i| format!(" --instance {i}"))
        .unwrap_or_default();
    format!(
        "# Written by bale (step {STEP}); `bale agent step {STEP} undo` removes it.\n\
         [Unit]\n\
         Description=bale lvscare: {what} on this worker\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={bundle} lvscare{instance} --config {config}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Restart=always\n\
         RestartSec=2\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        what = guard.what(),
        bundle = ctx.bundle_path().display(),
        config = config.display()
    )
}

/// The address `apiserver.cluster.local` resolves to on this node: the VIP on a worker; on a
/// master with its own API server (a Kubernetes control plane), itself, so it keeps working when
/// another master is down; on any other master, the first one.
pub fn apiserver_address(ctx: &NodeContext, root: &HostRoot) -> Result<IpAddr, LvscareStepError> {
    if is_worker(ctx) {
        ip("vip", &ctx.vip, ctx)
    } else if root.exists(Path::new(crate::kube::MANIFESTS_DIR).join("kube-apiserver.yaml")) {
        ip("node_ip", &ctx.node_ip, ctx)
    } else {
        masters(ctx)?
            .first()
            .copied()
            .ok_or_else(|| LvscareStepError::NoMasters(ctx.data_dir.clone()))
    }
}

fn owned_line(line: &str) -> bool {
    line.trim_end().ends_with(HOSTS_TAG)
}

/// `hosts` with this step's line replaced by (or set to) `addr apiserver.cluster.local`.
/// Other lines, including an admin's own entry for the name, stay as they are.
pub fn hosts_with(hosts: &str, addr: IpAddr) -> String {
    let mut out: String = hosts
        .lines()
        .filter(|l| !owned_line(l))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!("{} {HOSTS_TAG}\n", lvscare::hosts_line(addr)));
    out
}

/// `hosts` without this step's line.
pub fn hosts_without(hosts: &str) -> String {
    hosts
        .lines()
        .filter(|l| !owned_line(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

impl From<HostError> for LvscareStepError {
    fn from(e: HostError) -> LvscareStepError {
        LvscareStepError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

impl Host<'_> {
    fn read_or_empty(&self, path: &Path) -> Result<String, LvscareStepError> {
        Ok(self.root.read_optional(path)?.unwrap_or_default())
    }

    /// Writes `text` to `path` unless it is there already (temp name, fsync, rename, through
    /// the steps' one writer), keeping the file's mode (0644 for new files). Returns false when
    /// the content was already `text`.
    fn write_if_changed(&self, path: &Path, text: &str) -> Result<bool, LvscareStepError> {
        let mode = self.root.mode(path).unwrap_or(0o644);
        Ok(self.root.write_file(path, text.as_bytes(), mode)?)
    }

    fn systemctl(&self, args: &[&str]) -> Result<(), LvscareStepError> {
        match self.commands.run("systemctl", args) {
            Ok(_) => Ok(()),
            Err(StepError::Command { detail, .. }) => Err(LvscareStepError::Systemctl {
                args: args.join(" "),
                // No systemctl to start at all: say what is likely missing.
                said: if crate::node::step::which("systemctl").is_none() {
                    format!("{detail} (is systemd installed?)")
                } else {
                    detail
                },
            }),
            Err(StepError::Exited { status, .. }) => Err(LvscareStepError::SystemctlExited {
                args: args.join(" "),
                status,
            }),
            Err(StepError::Spawn { source, .. }) => Err(LvscareStepError::SystemctlUnstartable {
                args: args.join(" "),
                cause: source,
                no_systemctl: crate::node::step::which("systemctl").is_none(),
            }),
            Err(other) => Err(LvscareStepError::SystemctlFailed {
                args: args.join(" "),
                source: Box::new(other),
            }),
        }
    }

    fn is_active(&self, unit: &str) -> bool {
        self.commands
            .succeeds("systemctl", &["is-active", "--quiet", unit])
    }
}

/// What `apply` did to one guardian.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GuardApplied {
    pub config_changed: bool,
    pub unit_changed: bool,
    /// The running guardian was told to re-read its config.
    pub reloaded: bool,
    /// The guardian is no longer wanted here and was removed with its rules.
    pub removed: bool,
}

/// What `apply` did, for the step's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub hosts_changed: bool,
    pub apiserver: GuardApplied,
    pub registry: GuardApplied,
}

pub fn apply(ctx: &NodeContext, host: Host) -> Result<Applied, LvscareStepError> {
    let hosts_file = Path::new(HOSTS_FILE);
    let hosts = host.read_or_empty(hosts_file)?;
    let addr = apiserver_address(ctx, host.root)?;
    let hosts_changed = host.write_if_changed(hosts_file, &hosts_with(&hosts, addr))?;
    if !is_worker(ctx) {
        return Ok(Applied {
            hosts_changed,
            ..Default::default()
        });
    }
    Ok(Applied {
        hosts_changed,
        apiserver: apply_guard(Guard::Apiserver, ctx, host)?,
        registry: apply_guard(Guard::Registry, ctx, host)?,
    })
}

fn apply_guard(
    guard: Guard,
    ctx: &NodeContext,
    host: Host,
) -> Result<GuardApplied, LvscareStepError> {
    let (config, unit) = guard.files();
    let Some(text) = guard.render_config(ctx)? else {
        let removed = host.root.exists(&unit) || host.root.exists(&config);
        if removed {
            undo_guard(guard, ctx, host)?;
        }
        return Ok(GuardApplied {
            removed,
            ..Default::default()
        });
    };
    let name = guard.unit_name();
    let mut done = GuardApplied {
        config_changed: host.write_if_changed(&config, &text)?,
        unit_changed: host.write_if_changed(&unit, &render_unit(guard, ctx, &config))?,
        ..Default::default()
    };
    if done.unit_changed {
        host.systemctl(&["daemon-reload"])?;
    }
    if done.config_changed && !done.unit_changed && host.is_active(name) {
        // Masters joined or left: SIGHUP keeps the guardian and its rules running.
        host.systemctl(&["reload", name])?;
        done.reloaded = true;
    } else if done.unit_changed && host.is_active(name) {
        host.systemctl(&["restart", name])?;
    }
    host.systemctl(&["enable", "--now", name])?;
    Ok(done)
}

/// Removes everything `apply` made; a second undo finds nothing and succeeds.
pub fn undo(ctx: &NodeContext, host: Host) -> Result<(), LvscareStepError> {
    for guard in Guard::ALL {
        undo_guard(guard, ctx, host)?;
    }
    let hosts_file = Path::new(HOSTS_FILE);
    let hosts = host.read_or_empty(hosts_file)?;
    if hosts.lines().any(owned_line) {
        host.write_if_changed(hosts_file, &hosts_without(&hosts))?;
    }
    Ok(())
}

/// Stops and removes one guardian, then removes its rules: stopping it on purpose leaves them.
/// The VIP to clean comes from the config file it ran with, which may name another VIP than
/// `ctx` now does (the install changed it), else from `ctx`.
fn undo_guard(guard: Guard, ctx: &NodeContext, host: Host) -> Result<(), LvscareStepError> {
    let (config, unit) = guard.files();
    let name = guard.unit_name();
    let args = lvscare::Options {
        instance: guard.instance().map(str::to_string),
        ..Default::default()
    };
    let ran_with = host
        .root
        .read_to_string(&config)
        .ok()
        .and_then(|text| lvscare::Config::from_text(&args, &text).ok())
        .map(|c| c.vs);
    if host.root.exists(&unit) {
        host.systemctl(&["disable", "--now", name])?;
    }
    let unit_removed = host.root.remove_file(&unit)?;
    host.root.remove_file(&config)?;
    // /etc/bale goes with the last file bale kept there (a worker has nothing else in it).
    if let Some(dir) = config.parent() {
        host.root.remove_empty_dirs(dir, Path::new("/etc"));
    }
    if unit_removed {
        host.systemctl(&["daemon-reload"])?;
    }
    let vs = match ran_with {
        Some(vs) => Some(vs),
        None => guard.vs(ctx)?,
    };
    if let Some(vs) = vs {
        let args = lvscare::Options {
            vs: Some(vs),
            clean: true,
            ..args
        };
        let cfg = lvscare::Config::resolve(&args).map_err(|e| LvscareStepError::Clean(e.into()))?;
        host.commands
            .lvscare_clean(&cfg)
            .map_err(LvscareStepError::Clean)?;
    }
    Ok(())
}

/// What is missing or stale; empty when the step's result is in place (and, on a worker with
/// systemd, the guardians run).
pub fn check(ctx: &NodeContext, host: Host) -> Result<Vec<String>, LvscareStepError> {
    let mut problems = Vec::new();
    let want = lvscare::hosts_line(apiserver_address(ctx, host.root)?);
    let hosts = host.read_or_empty(Path::new(HOSTS_FILE))?;
    if !hosts
        .lines()
        .any(|l| owned_line(l) && l.starts_with(&format!("{want} ")))
    {
        problems.push(format!("{HOSTS_FILE} lacks `{want}` ({APISERVER_NAME})"));
    }
    if !is_worker(ctx) {
        return Ok(problems);
    }
    for guard in Guard::ALL {
        let (config, unit) = guard.files();
        let name = guard.unit_name();
        let Some(text) = guard.render_config(ctx)? else {
            if host.root.exists(&unit) {
                problems.push(format!(
                    "{} is left over: this install asks for no such guardian",
                    unit.display()
                ));
            }
            continue;
        };
        if host.read_or_empty(&config)? != text {
            problems.push(format!(
                "{} is missing or lists other masters",
                config.display()
            ));
        }
        if host.read_or_empty(&unit)? != render_unit(guard, ctx, &config) {
            problems.push(format!("{} is missing or stale", unit.display()));
        }
        if !host.is_active(name) {
            problems.push(format!("{name} is not running (journalctl -u {name})"));
        }
    }
    Ok(problems)
}

/// `bale agent step lvscare apply|undo|check`.
pub struct LvscareStep;

fn host_of<'a>(env: &StepEnv<'a>) -> Host<'a> {
    Host {
        root: env.root,
        commands: env.commands,
    }
}

impl Step for LvscareStep {
    fn name(&self) -> &'static str {
        STEP
    }

    fn check(&self, env: &StepEnv) -> StepResult<Vec<Finding>> {
        let problems = check(env.ctx, host_of(env))?;
        if problems.is_empty() {
            let what = if is_worker(env.ctx) {
                let running: Vec<&str> = Guard::ALL
                    .into_iter()
                    .filter(|g| matches!(g.vs(env.ctx), Ok(Some(_))))
                    .map(Guard::unit_name)
                    .collect();
                let verb = if running.len() == 1 { "runs" } else { "run" };
                format!(
                    "{} {verb} and the hosts line is in place",
                    running.join(" and ")
                )
            } else {
                format!("{APISERVER_NAME} points at the first master")
            };
            return Ok(vec![Finding::ok(what)]);
        }
        Ok(problems.into_iter().map(Finding::bad).collect())
    }

    fn apply(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let done = apply(env.ctx, host_of(env))?;
        if done.hosts_changed {
            p.changed(format!(
                "{} -> {} in {HOSTS_FILE}",
                APISERVER_NAME,
                apiserver_address(env.ctx, env.root)?,
            ));
        }
        for (guard, g) in [
            (Guard::Apiserver, &done.apiserver),
            (Guard::Registry, &done.registry),
        ] {
            let (config, unit) = guard.files();
            let name = guard.unit_name();
            if g.config_changed {
                p.changed(format!("wrote {}", config.display()));
            }
            if g.unit_changed {
                p.changed(format!("wrote {} and started it", unit.display()));
            }
            if g.reloaded {
                p.changed(format!("reloaded {name} (the masters changed)"));
            }
            if g.removed {
                p.changed(format!(
                    "removed {name} and its rules (this install asks for no {})",
                    guard.what()
                ));
            }
        }
        Ok(())
    }

    fn undo(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let host = host_of(env);
        let had = Guard::ALL
            .into_iter()
            .flat_map(|g| <[PathBuf; 2]>::from(g.files()))
            .any(|f| env.root.exists(f))
            || host
                .read_or_empty(Path::new(HOSTS_FILE))?
                .lines()
                .any(owned_line);
        undo(env.ctx, host)?;
        if had {
            p.changed(format!(
                "removed {UNIT}, {REGISTRY_UNIT}, their configs and rules and the \
                 {APISERVER_NAME} line"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::host::testing::Recorder;

    fn ctx(role: &str, masters: &[&str]) -> NodeContext {
        NodeContext {
            data_dir: "/var/lib/bale".into(),
            bundle_digest: "ab".into(),
            node_ip: "10.0.0.5".into(),
            role: role.into(),
            first_master: false,
            masters: masters.iter().map(|m| m.to_string()).collect(),
            nodes: vec!["10.0.0.5".into()],
            registry_port: 5050,
            vip: "10.103.97.2".into(),
            registry_vip: None,
            env: Default::default(),
        }
    }

    /// A scratch host whose guardians all count as running.
    struct Scratch {
        _dir: tempfile::TempDir,
        root: HostRoot,
        commands: Recorder,
        hosts: PathBuf,
        config: PathBuf,
        unit: PathBuf,
        registry_config: PathBuf,
        registry_unit: PathBuf,
    }

    impl Scratch {
        fn host(&self) -> Host<'_> {
            Host {
                root: &self.root,
                commands: &self.commands,
            }
        }
    }

    fn scratch() -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::at(dir.path());
        let commands = Recorder::default();
        for unit in [UNIT, REGISTRY_UNIT] {
            commands
                .true_for
                .borrow_mut()
                .push(format!("systemctl is-active --quiet {unit}"));
        }
        Scratch {
            hosts: root.path(HOSTS_FILE),
            config: root.path(CONFIG_FILE),
            unit: root.path(unit_path(UNIT)),
            registry_config: root.path(REGISTRY_CONFIG_FILE),
            registry_unit: root.path(unit_path(REGISTRY_UNIT)),
            _dir: dir,
            root,
            commands,
        }
    }

    #[test]
    fn config_lists_every_master_behind_the_vip_and_parses() {
        let c = ctx("node", &["10.0.0.2", "10.0.0.3"]);
        let text = Guard::Apiserver
            .render_config(&c)
            .unwrap()
            .expect("a worker's config");
        let cfg = lvscare::Config::from_text(&lvscare::Options::default(), &text).expect("parses");
        assert_eq!(cfg.vs, "10.103.97.2:6443".parse().unwrap());
        let rs: Vec<String> = cfg.rs.iter().map(|(a, _)| a.to_string()).collect();
        assert_eq!(rs, ["10.0.0.2:6443", "10.0.0.3:6443"]);
    }

    #[test]
    fn bad_addresses_name_the_field_and_the_file() {
        let apiserver = |c: &NodeContext| Guard::Apiserver.render_config(c);
        let e = apiserver(&ctx("node", &["10.0.0.2", "master-b"])).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("masters") && msg.contains("master-b") && msg.contains("node.json"),
            "{msg}"
        );
        assert!(apiserver(&ctx("node", &[])).is_err());
    }

    #[test]
    fn unit_runs_the_bundle_restarts_always_and_reloads_with_sighup() {
        let u = render_unit(
            Guard::Apiserver,
            &ctx("node", &["10.0.0.2"]),
            Path::new("/etc/bale/lvscare.yaml"),
        );
        assert!(u.contains(
            "ExecStart=/var/lib/bale/bundle.bale lvscare --config /etc/bale/lvscare.yaml\n"
        ));
        assert!(u.contains("Restart=always\n"));
        assert!(u.contains("ExecReload=/bin/kill -HUP $MAINPID\n"));
        assert!(u.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn hosts_line_is_idempotent_replaced_and_removed_exactly() {
        let base = "127.0.0.1 localhost\n10.9.9.9 apiserver.cluster.local\n";
        let vip: IpAddr = "10.103.97.2".parse().unwrap();
        let once = hosts_with(base, vip);
        assert_eq!(hosts_with(&once, vip), once, "idempotent");
        assert!(once.contains("10.103.97.2 apiserver.cluster.local # bale lvscare\n"));
        let moved = hosts_with(&once, "10.0.0.2".parse().unwrap());
        assert_eq!(moved.matches("# bale lvscare").count(), 1);
        assert_eq!(hosts_without(&moved), base, "the admin's own line stays");
    }

    #[test]
    fn the_registry_guard_comes_and_goes_with_the_registry_vip() {
        let p = scratch();
        let mut w = ctx("node", &["10.0.0.2", "10.0.0.3"]);
        w.registry_vip = Some("10.103.97.3".into());
        let first = apply(&w, p.host()).unwrap();
        assert!(first.registry.config_changed && first.registry.unit_changed);
        let unit = std::fs::read_to_string(&p.registry_unit).unwrap();
        assert!(unit
            .contains("ExecStart=/var/lib/bale/bundle.bale lvscare --instance registry --config "));
        let text = std::fs::read_to_string(&p.registry_config).unwrap();
        let args = lvscare::Options {
            instance: Some(REGISTRY_INSTANCE.into()),
            ..Default::default()
        };
        let cfg = lvscare::Config::from_text(&args, &text).expect("parses");
        assert_eq!(cfg.vs, "10.103.97.3:5050".parse().unwrap());
        let rs: Vec<String> = cfg.rs.iter().map(|(a, _)| a.to_string()).collect();
        assert_eq!(rs, ["10.0.0.2:5050", "10.0.0.3:5050"]);
        assert_eq!(cfg.health.scheme, lvscare::HealthScheme::Http);
        assert_eq!(cfg.health.path, "/v2/");
        assert_eq!(cfg.names.table, "bale_lvscare_registry");
        assert!(check(&w, p.host()).unwrap().is_empty());
        assert_eq!(
            apply(&w, p.host()).unwrap(),
            Applied::default(),
            "idempotent"
        );

        // An install without --registry-vip removes it, and check says when it is left over.
        let mut plain = w.clone();
        plain.registry_vip = None;
        std::fs::copy(&p.registry_unit, p.root.path("/kept")).unwrap();
        let off = apply(&plain, p.host()).unwrap();
        assert!(off.registry.removed && !off.apiserver.config_changed);
        assert!(!p.registry_unit.exists() && !p.registry_config.exists());
        assert!(p.unit.exists(), "the apiserver guard stays");
        std::fs::copy(p.root.path("/kept"), &p.registry_unit).unwrap();
        let left = check(&plain, p.host()).unwrap();
        assert!(left.len() == 1 && left[0].contains("left over"), "{left:?}");

        // A bad VIP in node.json names the field.
        w.registry_vip = Some("registry".into());
        let e = apply(&w, p.host()).unwrap_err().to_string();
        assert!(e.contains("registry_vip") && e.contains("node.json"), "{e}");
    }

    #[test]
    fn apply_check_undo_on_files_for_a_worker_and_a_master() {
        let p = scratch();
        std::fs::create_dir_all(p.hosts.parent().unwrap()).unwrap();
        std::fs::write(&p.hosts, "127.0.0.1 localhost\n").unwrap();
        let w = ctx("node", &["10.0.0.2"]);
        assert_eq!(
            check(&w, p.host()).unwrap().len(),
            3,
            "nothing in place yet"
        );
        let first = apply(&w, p.host()).unwrap();
        assert!(first.hosts_changed && first.apiserver.config_changed);
        assert!(first.apiserver.unit_changed);
        assert_eq!(first.registry, GuardApplied::default(), "no --registry-vip");
        assert!(!p.registry_unit.exists());
        assert!(check(&w, p.host()).unwrap().is_empty());
        assert_eq!(
            apply(&w, p.host()).unwrap(),
            Applied::default(),
            "idempotent"
        );

        // A master joins: only the config changes.
        let w2 = ctx("node", &["10.0.0.2", "10.0.0.3"]);
        let again = apply(&w2, p.host()).unwrap();
        assert!(again.apiserver.config_changed && !again.apiserver.unit_changed);
        assert!(!again.hosts_changed);
        let log = p.commands.take();
        assert!(
            log.contains(&format!("systemctl reload {UNIT}")),
            "SIGHUP, not a restart: {log:?}"
        );
        assert!(std::fs::read_to_string(&p.config)
            .unwrap()
            .contains("10.0.0.3:6443"));

        undo(&w2, p.host()).unwrap();
        assert!(!p.config.exists() && !p.unit.exists());
        let log = p.commands.take();
        assert!(
            log.contains(&format!("systemctl disable --now {UNIT}"))
                && log.contains(&"lvscare --clean 10.103.97.2:6443".to_string()),
            "{log:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&p.hosts).unwrap(),
            "127.0.0.1 localhost\n"
        );
        undo(&w2, p.host()).unwrap();

        // A master gets only the hosts line, pointing at the first master.
        let m = ctx("master", &["10.0.0.2", "10.0.0.3"]);
        apply(&m, p.host()).unwrap();
        assert!(std::fs::read_to_string(&p.hosts)
            .unwrap()
            .contains("10.0.0.2 apiserver.cluster.local # bale lvscare"));
        assert!(!p.config.exists() && !p.unit.exists());
        assert!(check(&m, p.host()).unwrap().is_empty());
    }
}
