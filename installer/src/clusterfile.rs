//! The sealer-style Clusterfile: documents decoded by their `kind`, as current sealer does.
//! The `kind: Cluster` document (`apiVersion: sealer.io/v2`, or `sealer.cloud/v2` of the same
//! shape) gives hosts, roles, login settings, environment, node labels and taints, and which
//! app steps run (`spec.cmd`, `spec.appNames`).
//!
//! ```yaml
//! apiVersion: sealer.io/v2
//! kind: Cluster
//! spec:
//!   env: ["key=value"]
//!   ssh: {user: root, passwd: "", pk: /root/.ssh/id_rsa, pkPasswd: "", port: "22"}
//!   hosts:
//!     - ips: [10.0.0.2, 10.0.0.3-10.0.0.4]
//!       roles: [master]
//!       ssh: {port: "2222"}
//!       taints: ["node-role.kubernetes.io/master-"]
//!     - ips: [10.0.0.5]
//!       roles: [node]
//!       env: ["k=v"]
//!       labels: {disk: ssd}
//! ```
//!
//! A typo must never change what gets installed where: every field of the cluster document is
//! either one bale knows or refused with the valid ones listed. The fields sealer defines and
//! bale does not act on (`spec.image`, `spec.registry`, `spec.dataRoot`, ...) and the documents
//! sealer reads beside the cluster that bale does not act on (`Infra`, kubeadm's) are a warning
//! each; `kind: Application` chooses the app steps like `spec.cmd`/`spec.appNames`. `Plugin`
//! and `Config` documents are read by [`crate::plugins`]. A Clusterfile that lists no host is
//! an error unless the hosts come from `--masters`/`--nodes`: an install on this machine is
//! only ever asked for by giving no hosts and no Clusterfile.

use crate::hosts::{self, Host, HostError, Role, Secret, SshOverrides};
use crate::marks::{self, Taint};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The apiVersions of a `kind: Cluster` document: sealer's current one and the older one of
/// the same shape. Others are read by kind too, with a warning.
pub const API_VERSIONS: [&str; 2] = ["sealer.io/v2", "sealer.cloud/v2"];

/// Documents sealer reads in a Clusterfile besides the cluster, plugins, configs and
/// applications, that bale accepts and does not act on.
const IGNORED_KINDS: [&str; 6] = [
    "Infra",
    "InitConfiguration",
    "ClusterConfiguration",
    "JoinConfiguration",
    "KubeletConfiguration",
    "KubeProxyConfiguration",
];

/// The kinds [`crate::plugins`] reads.
const PLUGIN_KINDS: [&str; 2] = ["Plugin", "Config"];

/// The fields of old sealer's v1 cluster (`spec.masters.ipList`, ...), which current sealer no
/// longer reads.
const V1_FIELDS: [&str; 2] = ["masters", "nodes"];

#[derive(Debug, thiserror::Error)]
pub enum ClusterfileError {
    #[error("{path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}")]
    TooComplex {
        path: PathBuf,
        source: bale_yamlguard::GuardError,
    },
    #[error("{path}: not valid YAML")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    /// A field of a document that does not fit: `msg` is the YAML reader's (field path, line,
    /// and the fields there are), `fix` what to write instead where it is known.
    #[error("{path}: document {doc} (kind: {kind}): {msg}{fix}")]
    Document {
        path: PathBuf,
        doc: usize,
        kind: String,
        msg: String,
        fix: &'static str,
    },
    #[error(
        "{path}: no document with `kind: Cluster`; a Clusterfile starts with apiVersion: \
         sealer.io/v2 and kind: Cluster"
    )]
    NoCluster { path: PathBuf },
    #[error("{path}: documents {first} and {second} are both `kind: Cluster`; keep one")]
    TwoClusters {
        path: PathBuf,
        first: usize,
        second: usize,
    },
    #[error("{path}: document {doc} has no `kind`; give one of {known}")]
    NoKind {
        path: PathBuf,
        doc: usize,
        known: String,
    },
    #[error("{path}: document {doc}: unknown kind {kind:?}; did you mean {near}?")]
    UnknownKind {
        path: PathBuf,
        doc: usize,
        kind: String,
        near: String,
    },
    #[error(
        "{path}: document {doc} (apiVersion {found}) is a v1 Clusterfile (spec.{field}), which \
         current sealer no longer reads; write the hosts as spec.hosts, e.g. `hosts: [{{ips: \
         [10.0.0.2], roles: [master]}}, {{ips: [10.0.0.5], roles: [node]}}]`, under \
         apiVersion: sealer.io/v2"
    )]
    V1 {
        path: PathBuf,
        doc: usize,
        found: String,
        field: String,
    },
    #[error("{path}{}: {field}: {msg}", line.map(|n| format!(" line {n}")).unwrap_or_default())]
    Field {
        path: PathBuf,
        /// The field's line, where it could be found.
        line: Option<usize>,
        field: String,
        msg: String,
    },
    #[error("{path}")]
    Host { path: PathBuf, source: HostError },
    #[error(
        "{path}: spec.hosts lists no host, and no --masters/--nodes were given; add the hosts \
         to spec.hosts (or pass --masters/--nodes). To install on this machine, run without -f \
         and without hosts"
    )]
    NoHosts { path: PathBuf },
    #[error("hosts are given twice: use either --masters/--nodes or spec.hosts in {path}")]
    HostsTwice { path: PathBuf },
    #[error(
        "{path}: {field}: {} does not exist, and no password is given to fall back on; give an \
         existing key file in {field}, or spec.ssh.passwd (or --password-file)",
        key.display()
    )]
    NoKey {
        path: PathBuf,
        field: String,
        key: PathBuf,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(rename = "apiVersion", default)]
    #[allow(dead_code)]
    api_version: String,
    #[serde(default)]
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: serde_yaml::Value,
    #[serde(default)]
    spec: Spec,
    /// What sealer records after a run (`status: {}`); nothing to act on.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    ssh: Option<SshBlock>,
    #[serde(default)]
    hosts: Vec<HostBlock>,
    /// Commands that replace every app step (sealer's meaning).
    #[serde(default)]
    cmd: Option<Vec<String>>,
    /// The apps to launch, in order.
    #[serde(default)]
    app_names: Option<Vec<String>>,
    // sealer's fields that bale does not act on: each set one is a warning.
    #[serde(default)]
    image: Option<serde_yaml::Value>,
    #[serde(default, rename = "cmd_args")]
    cmd_args: Option<serde_yaml::Value>,
    #[serde(default)]
    container_runtime: Option<serde_yaml::Value>,
    #[serde(default)]
    host_aliases: Option<serde_yaml::Value>,
    #[serde(default)]
    registry: Option<serde_yaml::Value>,
    #[serde(default)]
    data_root: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SshBlock {
    user: Option<String>,
    passwd: Option<String>,
    pk: Option<String>,
    pk_passwd: Option<String>,
    port: Option<PortValue>,
    /// sealer's encrypted passwords, which bale cannot decrypt.
    #[serde(default)]
    encrypted: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PortValue {
    Num(i64),
    Str(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostBlock {
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    ssh: Option<SshBlock>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    taints: Vec<String>,
}

/// sealer's `kind: Application`: which apps run and with what commands.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplicationDoc {
    #[serde(rename = "apiVersion", default)]
    #[allow(dead_code)]
    api_version: String,
    #[serde(default)]
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: serde_yaml::Value,
    #[serde(default)]
    spec: ApplicationSpec,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApplicationSpec {
    #[serde(default)]
    cmds: Option<Vec<String>>,
    #[serde(default)]
    launch_apps: Option<Vec<String>>,
    #[serde(default)]
    configs: Vec<AppConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    files: Vec<serde_yaml::Value>,
    #[serde(default)]
    launch: Option<AppLaunch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppLaunch {
    #[serde(default)]
    cmds: Vec<String>,
}

/// Which install steps run, as the Clusterfile chooses (sealer's meaning): `cmds` replace every
/// app step; else `app_names` launch those apps only, in that order; `app_cmds` replace an
/// app's own launch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AppChoice {
    /// The commands and where they are written (`Clusterfile: spec.cmd`).
    pub cmds: Option<(String, Vec<String>)>,
    /// The app names and where they are written.
    pub app_names: Option<(String, Vec<String>)>,
    /// App name to the commands that launch it instead of its own.
    pub app_cmds: BTreeMap<String, (String, Vec<String>)>,
}

/// One `spec.hosts[]` entry: addresses, role, login overrides, environment, and the rest.
#[derive(Debug)]
struct HostGroup {
    ips: Vec<std::net::IpAddr>,
    role: Role,
    ssh: SshOverrides,
    env: Vec<(String, String)>,
    roles: Vec<String>,
    labels: Vec<(String, String)>,
    taints: Vec<Taint>,
}

/// What the installer takes from a Clusterfile.
#[derive(Debug, Default)]
pub struct Clusterfile {
    /// The file, as named on the command line.
    pub path: PathBuf,
    /// `spec.ssh`: defaults for every host (command-line flags override them).
    pub ssh: SshOverrides,
    pub env: Vec<(String, String)>,
    /// Which app steps run.
    pub apps: AppChoice,
    /// What was accepted and is not acted on, one message each.
    pub warnings: Vec<String>,
    hosts: Vec<HostGroup>,
}

/// Where a [`Clusterfile`]'s errors point: the file, and the lines of the cluster document
/// (numbered from 1) to find a field's line in.
struct At<'a>(&'a Path, &'a [(usize, &'a str)]);

impl At<'_> {
    fn field(&self, field: &str, msg: impl Into<String>) -> ClusterfileError {
        ClusterfileError::Field {
            path: self.0.into(),
            line: line_of(self.1, field),
            field: field.into(),
            msg: msg.into(),
        }
    }
    fn host(&self, source: HostError) -> ClusterfileError {
        ClusterfileError::Host {
            path: self.0.into(),
            source,
        }
    }
}

/// The line of a field path such as `spec.hosts[1].taints[0]` in a document's lines: each key
/// is looked for after the previous one, and `[i]` steps to the i-th item of a block list (a
/// flow list stays on its line). Labels and env keys may hold dots: they end the path.
fn line_of(lines: &[(usize, &str)], field: &str) -> Option<usize> {
    let path = field.rsplit(": ").next().unwrap_or(field);
    let mut segments: Vec<String> = Vec::new();
    let mut parts = path.split('.');
    while let Some(p) = parts.next() {
        segments.push(p.to_string());
        if p == "labels" {
            segments.push(parts.by_ref().collect::<Vec<_>>().join("."));
        }
    }
    let mut at = 0usize;
    let mut found = None;
    for seg in segments.iter().filter(|s| !s.is_empty()) {
        let (key, index) = match seg.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (seg.as_str(), None),
        };
        let Some(pos) = (at..lines.len()).find(|&i| crate::plugins::has_key(lines[i].1, key))
        else {
            break;
        };
        at = pos;
        found = Some(lines[pos].0);
        if let Some(index) = index {
            if lines[pos].1.contains('[') {
                continue;
            }
            let items: Vec<usize> = (pos + 1..lines.len())
                .filter(|&i| lines[i].1.trim_start().starts_with("- "))
                .collect();
            let indent = |i: usize| lines[i].1.len() - lines[i].1.trim_start().len();
            let Some(&first) = items.first() else { break };
            let same: Vec<usize> = items
                .into_iter()
                .filter(|&i| indent(i) == indent(first))
                .collect();
            let Some(&item) = same.get(index) else { break };
            at = item;
            found = Some(lines[item].0);
        }
    }
    found
}

/// The fix for a field of the wrong shape, where sealer's own documents have led users astray.
fn fix_for(e: &serde_yaml::Error) -> &'static str {
    let m = e.to_string();
    if m.contains("env: invalid type: map") {
        "; write env as a list of key=value strings, e.g. env: [docker-dir=/var/lib/docker]"
    } else if m.contains("taints: invalid type") {
        "; write taints as a list, e.g. taints: [\"key=value:NoSchedule\"]"
    } else {
        ""
    }
}

/// Edit distance, for "did you mean" (kinds are short).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

impl Clusterfile {
    pub fn load(path: &Path) -> Result<Clusterfile, ClusterfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterfileError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Clusterfile, ClusterfileError> {
        bale_yamlguard::check(text, bale_yamlguard::Limits::CONFIG).map_err(|source| {
            ClusterfileError::TooComplex {
                path: path.into(),
                source,
            }
        })?;
        let documents = crate::plugins::document_lines(text);
        let mut warnings = Vec::new();
        let known_kinds = || {
            let mut k = vec!["Cluster", "Application"];
            k.extend(PLUGIN_KINDS);
            k.extend(IGNORED_KINDS);
            k
        };
        // Which document is the cluster, and every document's kind known (sealer decodes by
        // kind and skips the kinds it does not know; so does bale, with a warning, unless the
        // kind is a near miss of one it knows).
        let mut cluster = None;
        let mut applications = Vec::new();
        for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let doc = i + 1;
            let v = serde_yaml::Value::deserialize(d).map_err(|source| ClusterfileError::Yaml {
                path: path.into(),
                source,
            })?;
            if v.is_null() {
                continue;
            }
            let kind = match v.get("kind") {
                Some(serde_yaml::Value::String(k)) => k.as_str(),
                _ => {
                    return Err(ClusterfileError::NoKind {
                        path: path.into(),
                        doc,
                        known: known_kinds().join(", "),
                    })
                }
            };
            match kind {
                "Cluster" => {
                    if let Some(first) = cluster {
                        return Err(ClusterfileError::TwoClusters {
                            path: path.into(),
                            first: first + 1,
                            second: doc,
                        });
                    }
                    let api = v.get("apiVersion").and_then(|a| a.as_str()).unwrap_or("");
                    // `provider` is v1's too, under a v1 apiVersion.
                    let v1_api = !api.contains("/v2");
                    if let Some(f) = V1_FIELDS
                        .iter()
                        .chain(v1_api.then_some(&"provider"))
                        .find(|f| v.get("spec").and_then(|s| s.get(**f)).is_some())
                    {
                        return Err(ClusterfileError::V1 {
                            path: path.into(),
                            doc,
                            found: format!("{api:?}"),
                            field: (*f).into(),
                        });
                    }
                    if v.get("spec").and_then(|s| s.get("provider")).is_some() {
                        let at = At(path, documents.get(i).map(Vec::as_slice).unwrap_or(&[]));
                        return Err(at.field(
                            &format!("document {doc} (kind: Cluster): spec.provider"),
                            "bale creates no machines, it installs on hosts that exist; drop \
                             spec.provider and give each host's addresses in spec.hosts[].ips",
                        ));
                    }
                    if !API_VERSIONS.contains(&api) {
                        warnings.push(format!(
                            "{}: document {doc} (kind: Cluster): apiVersion {api:?} is read as \
                             sealer.io/v2, as current sealer does; write apiVersion: \
                             sealer.io/v2",
                            path.display()
                        ));
                    }
                    cluster = Some(i);
                }
                "Application" => applications.push(i),
                k if PLUGIN_KINDS.contains(&k) => {}
                "Infra" => warnings.push(format!(
                    "{}: document {doc} (kind: Infra): spec is not acted on: bale creates no \
                     machines, it installs on the hosts of spec.hosts",
                    path.display()
                )),
                k if IGNORED_KINDS.contains(&k) => warnings.push(format!(
                    "{}: document {doc} (kind: {k}) is not acted on: bale writes kubeadm's \
                     and kubelet's configuration itself",
                    path.display()
                )),
                k => {
                    let near: Vec<&str> = known_kinds()
                        .into_iter()
                        .filter(|n| distance(&k.to_ascii_lowercase(), &n.to_ascii_lowercase()) <= 2)
                        .collect();
                    if !near.is_empty() {
                        return Err(ClusterfileError::UnknownKind {
                            path: path.into(),
                            doc,
                            kind: k.into(),
                            near: near.join(" or "),
                        });
                    }
                    warnings.push(format!(
                        "{}: document {doc} (kind: {k}) is not a kind sealer or bale reads; \
                         it is skipped",
                        path.display()
                    ));
                }
            }
        }
        let index = cluster.ok_or_else(|| ClusterfileError::NoCluster { path: path.into() })?;
        let at = At(path, documents.get(index).map(Vec::as_slice).unwrap_or(&[]));
        // Read again straight from the text: errors then carry the field path and the line.
        let nth = |n: usize| serde_yaml::Deserializer::from_str(text).nth(n);
        let doc = nth(index)
            .map(Doc::deserialize)
            .ok_or_else(|| ClusterfileError::NoCluster { path: path.into() })?
            .map_err(|e| ClusterfileError::Document {
                path: path.into(),
                doc: index + 1,
                kind: "Cluster".into(),
                fix: fix_for(&e),
                msg: e.to_string(),
            })?;
        let mut ignored = |field: &str, set: bool, instead: &str| {
            if set {
                warnings.push(format!(
                    "{}: {field} is not acted on: {instead}",
                    path.display()
                ));
            }
        };
        let s = &doc.spec;
        ignored(
            "spec.image",
            s.image.is_some(),
            "the bundle being run is the image",
        );
        ignored(
            "spec.cmd_args",
            s.cmd_args.is_some(),
            "bale passes no arguments to the image's commands",
        );
        ignored(
            "spec.containerRuntime",
            s.container_runtime.is_some(),
            "bale installs the bundle's containerd",
        );
        ignored(
            "spec.hostAliases",
            s.host_aliases.is_some(),
            "add the names to /etc/hosts with a pre-init-host hook",
        );
        ignored(
            "spec.registry",
            s.registry.is_some(),
            "the bundle serves its own registry on every node",
        );
        ignored(
            "spec.dataRoot",
            s.data_root.is_some(),
            "bale keeps its files under --data-dir (default /var/lib/bale); pass --data-dir \
             to put them elsewhere",
        );
        let mut cf = Clusterfile {
            path: path.into(),
            ssh: ssh_block(&at, "spec.ssh", s.ssh.as_ref())?,
            env: parse_env(&at, "spec.env", &s.env)?,
            apps: AppChoice::default(),
            warnings,
            hosts: Vec::new(),
        };
        for (i, h) in s.hosts.iter().enumerate() {
            let here = format!("spec.hosts[{i}]");
            if h.ips.is_empty() {
                return Err(at.field(&format!("{here}.ips"), "no addresses"));
            }
            let ips = hosts::parse_addrs(&format!("{here}.ips"), &h.ips.join(","))
                .map_err(|e| at.host(e))?;
            let (role, roles) = role(&at, &format!("{here}.roles"), &h.roles)?;
            let ssh = ssh_block(&at, &format!("{here}.ssh"), h.ssh.as_ref())?;
            let env = parse_env(&at, &format!("{here}.env"), &h.env)?;
            // sealer labels a Node with each of its host's roles.
            let mut labels: Vec<(String, String)> = roles
                .iter()
                .map(|r| (format!("node-role.kubernetes.io/{r}"), String::new()))
                .collect();
            for (k, _) in &labels {
                marks::check_key(k)
                    .map_err(|e| at.field(&format!("{here}.roles"), e.to_string()))?;
            }
            for (k, v) in &h.labels {
                marks::check_key(k)
                    .and_then(|()| marks::check_value(v))
                    .map_err(|e| at.field(&format!("{here}.labels.{k}"), e.to_string()))?;
                labels.push((k.clone(), v.clone()));
            }
            let taints = h
                .taints
                .iter()
                .enumerate()
                .map(|(j, t)| {
                    Taint::parse(t)
                        .map_err(|e| at.field(&format!("{here}.taints[{j}]"), e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            cf.hosts.push(HostGroup {
                ips,
                role,
                ssh,
                env,
                roles,
                labels,
                taints,
            });
        }
        let name = path.display();
        if let Some(cmds) = &s.cmd {
            cf.apps.cmds = Some((format!("{name}: spec.cmd"), cmds.clone()));
        }
        if let Some(names) = &s.app_names {
            cf.apps.app_names = Some((format!("{name}: spec.appNames"), names.clone()));
        }
        for i in applications {
            let app = nth(i)
                .map(ApplicationDoc::deserialize)
                .ok_or_else(|| ClusterfileError::NoCluster { path: path.into() })?
                .map_err(|e| ClusterfileError::Document {
                    path: path.into(),
                    doc: i + 1,
                    kind: "Application".into(),
                    fix: fix_for(&e),
                    msg: e.to_string(),
                })?;
            cf.application(i + 1, app.spec)?;
        }
        if cf.apps.cmds.is_some() {
            if let Some((origin, _)) = &cf.apps.app_names {
                let cmd_origin = cf
                    .apps
                    .cmds
                    .as_ref()
                    .map(|c| c.0.clone())
                    .unwrap_or_default();
                cf.warnings.push(format!(
                    "{origin} is not used: {cmd_origin} replaces every app step, as in sealer"
                ));
            }
        }
        Ok(cf)
    }

    /// Takes what an Application document chooses; the Cluster's `spec.cmd` and
    /// `spec.appNames` come first, as in sealer.
    fn application(&mut self, doc: usize, spec: ApplicationSpec) -> Result<(), ClusterfileError> {
        let here = format!(
            "{}: document {doc} (kind: Application)",
            self.path.display()
        );
        if let Some(cmds) = spec.cmds {
            match &self.apps.cmds {
                Some((origin, _)) => self.warnings.push(format!(
                    "{here}: spec.cmds is not used: {origin} comes first"
                )),
                None => self.apps.cmds = Some((format!("{here}: spec.cmds"), cmds)),
            }
        }
        if let Some(names) = spec.launch_apps {
            match &self.apps.app_names {
                Some((origin, _)) => self.warnings.push(format!(
                    "{here}: spec.launchApps is not used: {origin} comes first"
                )),
                None => self.apps.app_names = Some((format!("{here}: spec.launchApps"), names)),
            }
        }
        for (i, c) in spec.configs.into_iter().enumerate() {
            let field = format!("spec.configs[{i}]");
            if c.name.is_empty() {
                return Err(ClusterfileError::Field {
                    path: self.path.clone(),
                    line: None,
                    field: format!("document {doc} (kind: Application): {field}.name"),
                    msg: "missing; name the app these settings are for".into(),
                });
            }
            if !c.env.is_empty() {
                self.warnings.push(format!(
                    "{here}: {field}.env (app {}) is not acted on: give the variables in \
                     spec.env of the Cluster",
                    c.name
                ));
            }
            if !c.files.is_empty() {
                self.warnings.push(format!(
                    "{here}: {field}.files (app {}) is not acted on: write a kind: Config \
                     document for each file",
                    c.name
                ));
            }
            if let Some(l) = c.launch {
                self.apps.app_cmds.insert(
                    c.name.clone(),
                    (format!("{here}: {field}.launch.cmds"), l.cmds),
                );
            }
        }
        Ok(())
    }

    pub fn has_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The hosts of a run with this Clusterfile: its own, each with `flags` over `spec.ssh`
    /// under the host's own `ssh` block, or, when it lists none, the hosts of `--masters` and
    /// `--nodes`. Neither is an error: a Clusterfile never means this machine. A key file
    /// the Clusterfile names that does not exist falls back to the password, as in sealer,
    /// with a warning.
    pub fn host_list(
        &mut self,
        masters: Option<&str>,
        nodes: Option<&str>,
        flags: &SshOverrides,
    ) -> Result<Vec<Host>, ClusterfileError> {
        let at = At(&self.path, &[]);
        flags.check("--user", "--key").map_err(|e| at.host(e))?;
        let defaults = self.ssh.merged(flags);
        let have_flag_hosts = masters.is_some() || nodes.is_some();
        let mut hosts = match (self.has_hosts(), have_flag_hosts) {
            (true, true) => {
                return Err(ClusterfileError::HostsTwice {
                    path: self.path.clone(),
                })
            }
            (true, false) => self.hosts(&defaults).map_err(|e| at.host(e))?,
            (false, true) => {
                hosts::from_flags(masters, nodes, &defaults).map_err(|e| at.host(e))?
            }
            (false, false) => {
                return Err(ClusterfileError::NoHosts {
                    path: self.path.clone(),
                })
            }
        };
        if flags.key.is_none() {
            self.key_fallback(&mut hosts)?;
        }
        Ok(hosts)
    }

    /// sealer logs in with the password when the key file it is given does not exist; so does
    /// bale, and says which field named the missing file.
    fn key_fallback(&mut self, hosts: &mut [Host]) -> Result<(), ClusterfileError> {
        for h in hosts.iter_mut() {
            let Some(key) = h.ssh.key.clone() else {
                continue;
            };
            if key.is_file() {
                continue;
            }
            let group = self.hosts.iter().position(|g| g.ips.contains(&h.addr));
            let field = match group {
                Some(i) if self.hosts[i].ssh.key.is_some() => format!("spec.hosts[{i}].ssh.pk"),
                _ => "spec.ssh.pk".to_string(),
            };
            if h.ssh.password.is_none() {
                return Err(ClusterfileError::NoKey {
                    path: self.path.clone(),
                    field,
                    key,
                });
            }
            self.warnings.push(format!(
                "{}: {field}: {} does not exist; logging in to {} with the password, as \
                 sealer does",
                self.path.display(),
                key.display(),
                h.addr
            ));
            h.ssh.key = None;
            h.ssh.key_passphrase = None;
        }
        Ok(())
    }

    /// The hosts, each with `defaults` (spec.ssh already layered with the flags) under its own
    /// `ssh` block.
    pub fn hosts(&self, defaults: &SshOverrides) -> Result<Vec<Host>, HostError> {
        let mut out = Vec::new();
        for g in &self.hosts {
            let spec = defaults.merged(&g.ssh).resolve();
            for ip in &g.ips {
                let mut e = self.env.clone();
                e.extend(g.env.iter().cloned());
                out.push(Host {
                    addr: *ip,
                    role: g.role,
                    ssh: spec.clone(),
                    env: e,
                    roles: g.roles.clone(),
                    labels: g.labels.clone(),
                    taints: g.taints.clone(),
                });
            }
        }
        hosts::check_unique(&out)?;
        Ok(out)
    }
}

/// The one role of a host, master or node, and its other roles, which hooks' `scope` may
/// name. Both master and node at once is refused (which one was meant?).
fn role(at: &At, field: &str, roles: &[String]) -> Result<(Role, Vec<String>), ClusterfileError> {
    let mut found: Option<(Role, &str)> = None;
    let mut others = Vec::new();
    for r in roles {
        match Role::parse(field, r) {
            Ok(role) => match found {
                Some((prev, prev_text)) if prev != role => {
                    return Err(at.field(
                        field,
                        format!(
                            "{prev_text:?} and {r:?} conflict: a host is a master or a node, \
                             not both; keep one (masters run workloads too when untainted)"
                        ),
                    ))
                }
                Some(_) => {}
                None => found = Some((role, r)),
            },
            Err(_) => others.push(r.clone()),
        }
    }
    match found {
        Some((role, _)) => Ok((role, others)),
        None if roles.is_empty() => Err(at.field(field, "give master or node")),
        None => Err(at.field(
            field,
            format!("{roles:?} names neither master nor node; add one of them"),
        )),
    }
}

fn ssh_block(at: &At, here: &str, b: Option<&SshBlock>) -> Result<SshOverrides, ClusterfileError> {
    let Some(b) = b else {
        return Ok(SshOverrides::default());
    };
    if b.encrypted == Some(true) {
        return Err(at.field(
            &format!("{here}.encrypted"),
            "bale cannot read sealer's encrypted passwords; give the password in plain text \
             (or with --password-file) and drop `encrypted`",
        ));
    }
    let nonempty = |s: &Option<String>| s.as_ref().filter(|s| !s.is_empty()).cloned();
    let port = match &b.port {
        None => None,
        Some(PortValue::Str(s)) if s.is_empty() => None,
        Some(PortValue::Str(s)) => {
            Some(hosts::parse_port(&format!("{here}.port"), s).map_err(|e| at.host(e))?)
        }
        Some(PortValue::Num(n)) => Some(
            hosts::parse_port(&format!("{here}.port"), &n.to_string()).map_err(|e| at.host(e))?,
        ),
    };
    let o = SshOverrides {
        user: nonempty(&b.user),
        port,
        key: nonempty(&b.pk).map(PathBuf::from),
        key_passphrase: nonempty(&b.pk_passwd).map(Secret::new),
        password: nonempty(&b.passwd).map(Secret::new),
        sudo: None,
    };
    o.check(&format!("{here}.user"), &format!("{here}.pk"))
        .map_err(|e| at.host(e))?;
    Ok(o)
}

fn parse_env(
    at: &At,
    here: &str,
    list: &[String],
) -> Result<Vec<(String, String)>, ClusterfileError> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(at.field(here, format!("{kv:?} is not key=value"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
apiVersion: sealer.io/v2
kind: Cluster
metadata: {name: demo}
spec:
  env: ["a=1"]
  ssh: {user: ops, passwd: "pw", pk: /k, port: "2200"}
  hosts:
    - ips: [10.0.0.2, 10.0.0.3-10.0.0.4]
      roles: [master]
      ssh: {port: "22"}
    - ips: [10.0.0.5]
      roles: [node]
      ssh: {user: root, port: 2222}
      env: ["b=2"]
---
apiVersion: sealer.io/v1
kind: Plugin
spec: {type: SHELL}
"#;

    use crate::engine::report::chain;

    fn bad(text: &str) -> String {
        chain(&Clusterfile::parse(text, Path::new("cf.yaml")).unwrap_err())
    }

    const HEAD: &str = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n";

    #[test]
    fn parses_hosts_and_overrides() {
        let mut cf = Clusterfile::parse(SAMPLE, Path::new("Clusterfile")).unwrap();
        assert!(cf.warnings.is_empty(), "{:?}", cf.warnings);
        let hosts = cf.host_list(None, None, &SshOverrides::default()).unwrap();
        assert_eq!(hosts.len(), 4);
        assert_eq!(hosts[0].role, Role::Master);
        assert_eq!((hosts[0].ssh.user.as_str(), hosts[0].ssh.port), ("ops", 22));
        assert!(hosts[0].ssh.sudo);
        assert_eq!(
            hosts[0].ssh.password.as_ref().map(|s| s.expose()),
            Some("pw")
        );
        let n = &hosts[3];
        assert_eq!(
            (n.role, n.ssh.user.as_str(), n.ssh.port),
            (Role::Node, "root", 2222)
        );
        assert!(!n.ssh.sudo);
        assert_eq!(n.env, [("a".into(), "1".into()), ("b".into(), "2".into())]);
    }

    #[test]
    fn errors_name_the_field() {
        let e = bad(&format!(
            "{HEAD}  hosts:\n    - ips: [10.0.0.x]\n      roles: [master]\n"
        ));
        assert!(e.contains("spec.hosts[0].ips"), "{e}");
        let e = bad(&format!(
            "{HEAD}  hosts:\n    - ips: [10.0.0.1]\n      roles: [boss]\n"
        ));
        assert!(
            e.contains("spec.hosts[0].roles") && e.contains("boss"),
            "{e}"
        );
        let e = bad(&format!("{HEAD}  hosts:\n    - ips: [10.0.0.1]\n      roles: [node]\n      ssh: {{port: \"99999\"}}\n"));
        assert!(e.contains("spec.hosts[0].ssh.port"), "{e}");
        let e = bad(&format!("{HEAD}  env: [novalue]\n"));
        assert!(e.contains("spec.env"), "{e}");
        let e = bad("apiVersion: sealer.aliyun.com/v1alpha1\nkind: Cluster\nspec:\n  masters: {ipList: [10.0.0.2]}\n");
        assert!(
            e.contains("sealer.io/v2") && e.contains("spec.masters") && e.contains("spec.hosts"),
            "{e}"
        );
        assert!(bad("kind: Plugin\n").contains("kind: Cluster"));
        let e = Clusterfile::parse(
            &format!("{HEAD}  hosts:\n    - ips: [10.0.0.1]\n      roles: [node]\n    - ips: [10.0.0.1]\n      roles: [master]\n"),
            Path::new("cf.yaml"),
        )
        .unwrap()
        .host_list(None, None, &SshOverrides::default())
        .unwrap_err();
        assert!(chain(&e).contains("10.0.0.1"), "{e}");
    }

    /// F11: a typo anywhere is refused with the field, the line and the valid fields, instead of
    /// being dropped (a dropped `hosts:` made the plan an install on the admin machine).
    #[test]
    fn unknown_fields_are_refused_everywhere() {
        let e = bad(&format!(
            "{HEAD}  hostz:\n    - ips: [10.0.0.2]\n      roles: [master]\n"
        ));
        assert!(
            e.contains("cf.yaml") && e.contains("hostz") && e.contains("`hosts`"),
            "{e}"
        );
        assert!(e.contains("line 4"), "{e}");
        let e = bad(&format!("{HEAD}  hosts: []\nspecs: {{}}\n"));
        assert!(e.contains("specs") && e.contains("`spec`"), "{e}");
        let e = bad(&format!("{HEAD}  ssh: {{usr: ops}}\n"));
        assert!(e.contains("usr") && e.contains("`user`"), "{e}");
        let e = bad(&format!(
            "{HEAD}  hosts:\n    - ips: [10.0.0.1]\n      roles: [node]\n      sshh: {{}}\n"
        ));
        assert!(e.contains("sshh") && e.contains("`ssh`"), "{e}");
        let e = bad(&format!("{HEAD}  hosts: []\n---\nkind: Plugn\n"));
        assert!(
            e.contains("document 2") && e.contains("Plugn") && e.contains("Plugin"),
            "{e}"
        );
        let e = bad(&format!("{HEAD}  hosts: []\n---\nmetadata: {{}}\n"));
        assert!(e.contains("document 2") && e.contains("no `kind`"), "{e}");
    }

    /// F11: a Clusterfile without hosts is not an install on this machine.
    #[test]
    fn a_clusterfile_without_hosts_needs_flag_hosts() {
        let mut cf =
            Clusterfile::parse(&format!("{HEAD}  env: [a=1]\n"), Path::new("site/cf.yaml"))
                .unwrap();
        let e = cf
            .host_list(None, None, &SshOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("site/cf.yaml") && e.contains("spec.hosts"),
            "{e}"
        );
        let hosts = cf
            .host_list(Some("10.0.0.2"), Some("10.0.0.3"), &SshOverrides::default())
            .unwrap();
        assert_eq!(hosts.len(), 2);
        let mut with_hosts = Clusterfile::parse(SAMPLE, Path::new("cf")).unwrap();
        let e = with_hosts
            .host_list(Some("10.0.0.9"), None, &SshOverrides::default())
            .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    /// Issue 15: what sealer writes in real Clusterfiles is read, and what bale does not act
    /// on is a warning, not an error.
    #[test]
    fn sealer_fields_are_accepted_with_warnings() {
        let text = "apiVersion: sealer.cloud/v2\nkind: Cluster\nmetadata: {name: c, labels: {a: b}}\n\
            spec:\n  image: kubernetes:v1.19.8\n  cmd: [\"kubectl apply -f a.yaml\"]\n  appNames: [a]\n  \
            dataRoot: /data\n  registry: {localRegistry: {domain: sea.hub}}\n  \
            ssh: {user: root, passwd: x, encrypted: false}\n  hosts:\n    - ips: [10.0.0.2]\n      \
            roles: [master]\n      labels: {disk: ssd}\n      taints: [\"a=b:NoSchedule\"]\n    \
            - ips: [10.0.0.3]\n      roles: [node, db]\nstatus: {}\n---\napiVersion: sealer.io/v2\n\
            kind: Application\nmetadata: {name: a}\nspec: {}\n---\nkind: Infra\n---\n\
            apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\nnetworking: {}\n";
        let mut cf = Clusterfile::parse(text, Path::new("cf")).unwrap();
        let hosts = cf.host_list(None, None, &SshOverrides::default()).unwrap();
        assert_eq!((hosts[0].role, hosts[1].role), (Role::Master, Role::Node));
        // Acted on: labels, taints, the other role (a label and a scope name), cmd.
        assert_eq!(hosts[0].labels, [("disk".to_string(), "ssd".to_string())]);
        assert_eq!(hosts[0].taints[0].kubectl_arg(), "a=b:NoSchedule");
        assert_eq!(hosts[1].roles, ["db"]);
        assert_eq!(
            hosts[1].labels,
            [("node-role.kubernetes.io/db".to_string(), String::new())]
        );
        assert_eq!(
            cf.apps.cmds,
            Some((
                "cf: spec.cmd".into(),
                vec!["kubectl apply -f a.yaml".into()]
            ))
        );
        let w = cf.warnings.join("\n");
        for want in [
            "spec.image",
            "spec.appNames is not used: cf: spec.cmd replaces",
            "spec.dataRoot is not acted on: bale keeps its files under --data-dir",
            "spec.registry",
            "document 3 (kind: Infra)",
            "kind: ClusterConfiguration",
        ] {
            assert!(w.contains(want), "no warning about {want}:\n{w}");
        }
        for quiet in ["status", "labels", "taints", "\"db\"", "kind: Application"] {
            assert!(!w.contains(quiet), "a warning about {quiet}:\n{w}");
        }
        let e = bad(&format!("{HEAD}  ssh: {{passwd: x, encrypted: true}}\n"));
        assert!(e.contains("spec.ssh.encrypted"), "{e}");
    }

    /// F13: `roles: [node, master]` used only the first role.
    #[test]
    fn conflicting_roles_are_refused() {
        for roles in ["[node, master]", "[master, worker]"] {
            let e = bad(&format!(
                "{HEAD}  hosts:\n    - ips: [10.0.0.2]\n      roles: {roles}\n"
            ));
            assert!(
                e.contains("spec.hosts[0].roles") && e.contains("conflict"),
                "{roles}: {e}"
            );
        }
        let mut cf = Clusterfile::parse(
            &format!(
                "{HEAD}  hosts:\n    - ips: [10.0.0.2]\n      roles: [master, control-plane]\n"
            ),
            Path::new("cf"),
        )
        .unwrap();
        let h = cf.host_list(None, None, &SshOverrides::default()).unwrap();
        assert_eq!(h[0].role, Role::Master);
    }

    /// F8: a quote and a newline in a user name or key path wrote extra lines (a
    /// `ProxyCommand`) into the ssh config.
    #[test]
    fn login_values_that_could_inject_ssh_options_are_refused() {
        let e = bad(&format!(
            "{HEAD}  ssh:\n    user: \"x\\\"\\nProxyCommand sh -c 'touch /tmp/pwned'\\n#\"\n"
        ));
        assert!(e.contains("spec.ssh.user"), "{e}");
        let e = bad(&format!(
            "{HEAD}  hosts:\n    - ips: [10.0.0.2]\n      roles: [node]\n      ssh: {{pk: \"/k\\nProxyCommand x\"}}\n"
        ));
        assert!(e.contains("spec.hosts[0].ssh.pk"), "{e}");
        let mut cf = Clusterfile::parse(SAMPLE, Path::new("cf")).unwrap();
        let flags = SshOverrides {
            user: Some("a b".into()),
            ..Default::default()
        };
        let e = cf.host_list(None, None, &flags).unwrap_err().to_string();
        let e2 = chain(&cf.host_list(None, None, &flags).unwrap_err());
        assert!(e.contains("cf") && e2.contains("--user"), "{e2}");
    }

    /// F15: deep nesting is refused before the YAML parser, which took 18-25 s on 200 KB.
    #[test]
    fn deeply_nested_yaml_is_refused_at_once() {
        let depth = 100_000;
        let text = format!("{HEAD}  env: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        assert!(text.len() > 200_000);
        let t = std::time::Instant::now();
        let e = bad(&text);
        assert!(
            t.elapsed() < std::time::Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert!(
            e.contains("cf.yaml") && e.contains("nested more than"),
            "{e}"
        );
        let blocks: String = (0..1000)
            .map(|i| format!("{}- \n", " ".repeat(i)))
            .collect();
        let e = bad(&format!("{HEAD}  env:\n{blocks}"));
        assert!(e.contains("nested more than"), "{e}");
    }

    /// Issue 15: a key file that is not there falls back to the password, as in sealer; with
    /// no password the refusal names the Clusterfile and the field.
    #[test]
    fn a_missing_key_falls_back_to_the_password() {
        let text = |passwd: &str| {
            [
                format!("{HEAD}  ssh: {{user: root, pk: /no/such/key{passwd}}}"),
                "  hosts:".into(),
                "    - ips: [10.0.0.2]".into(),
                "      roles: [master]".into(),
                "    - ips: [10.0.0.3]".into(),
                "      roles: [node]".into(),
                "      ssh: {pk: /no/other/key}\n".into(),
            ]
            .join("\n")
        };
        let mut cf = Clusterfile::parse(&text(", passwd: pw"), Path::new("cf.yaml")).unwrap();
        let hosts = cf.host_list(None, None, &SshOverrides::default()).unwrap();
        assert!(hosts.iter().all(|h| h.ssh.key.is_none()));
        let w = cf.warnings.join("\n");
        assert!(
            w.contains(
                "cf.yaml: spec.ssh.pk: /no/such/key does not exist; logging in to \
                        10.0.0.2 with the password"
            ) && w.contains("spec.hosts[1].ssh.pk: /no/other/key"),
            "{w}"
        );
        let mut cf = Clusterfile::parse(&text(""), Path::new("cf.yaml")).unwrap();
        let e = cf
            .host_list(None, None, &SshOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("cf.yaml: spec.ssh.pk: /no/such/key does not exist")
                && e.contains("spec.ssh.passwd"),
            "{e}"
        );
    }

    /// Issue 15: host labels and taints in sealer's syntax, checked with the field named.
    #[test]
    fn labels_and_taints_are_checked_with_the_field() {
        let host = |extra: &str| {
            format!("{HEAD}  hosts:\n    - ips: [10.0.0.2]\n      roles: [master]\n{extra}")
        };
        let e = bad(&host("      taints: [\"a=b:Sometimes\"]\n"));
        assert!(
            e.starts_with("cf.yaml line 7: spec.hosts[0].taints[0]: \"a=b:Sometimes\"")
                && e.contains("NoSchedule"),
            "{e}"
        );
        // The line of the second host's field, not the first's.
        let e = bad(&host(
            "      taints: [\"a:NoSchedule\"]\n    - ips: [10.0.0.3]\n      roles: [node]\n      \
             taints:\n        - ok:NoSchedule\n        - bad\n",
        ));
        assert!(
            e.starts_with("cf.yaml line 12: spec.hosts[1].taints[1]"),
            "{e}"
        );
        let e = bad(&host("      labels: {\"bad key\": x}\n"));
        assert!(e.contains("spec.hosts[0].labels.bad key"), "{e}");
        let mut cf = Clusterfile::parse(
            &host("      taints: [\"node-role.kubernetes.io/master-\", \"k:NoExecute-\"]\n"),
            Path::new("cf"),
        )
        .unwrap();
        let h = cf.host_list(None, None, &SshOverrides::default()).unwrap();
        assert_eq!(h[0].taints.len(), 2);
    }

    /// Issue 15: kinds are decoded as current sealer does; what it skips bale skips with a
    /// warning, but a near miss of a known kind is refused.
    #[test]
    fn documents_are_decoded_by_kind() {
        let text = [
            "apiVersion: sealer.aliyun.com/v2alpha1",
            "kind: Cluster",
            "spec:",
            "  hosts: []",
            "---",
            "apiVersion: v1",
            "kind: ConfigMap",
            "metadata: {name: x}",
            "---",
            "apiVersion: sealer.io/v2",
            "kind: Application",
            "spec:",
            "  launchApps: [a, b]",
            "  cmds: [\"x\"]",
            "  configs:",
            "    - name: a",
            "      launch: {cmds: [\"helm install a\"]}",
            "      files: [{path: f, data: d}]\n",
        ]
        .join("\n");
        let cf = Clusterfile::parse(&text, Path::new("cf")).unwrap();
        let w = cf.warnings.join("\n");
        assert!(
            w.contains("\"sealer.aliyun.com/v2alpha1\" is read as sealer.io/v2"),
            "{w}"
        );
        assert!(w.contains("document 2 (kind: ConfigMap)"), "{w}");
        assert!(w.contains("spec.configs[0].files (app a)"), "{w}");
        assert_eq!(
            cf.apps.app_names.as_ref().map(|a| a.1.clone()),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(cf.apps.cmds.as_ref().map(|c| c.1.len()), Some(1));
        assert_eq!(cf.apps.app_cmds["a"].1, ["helm install a"]);
        let e = bad(&format!("{HEAD}  hosts: []\n---\nkind: Aplication\n"));
        assert!(e.contains("did you mean Application"), "{e}");
        // `status: {}` at the top is sealer's own output: read without a word.
        let cf = Clusterfile::parse(
            &format!("{HEAD}  hosts: []\nstatus: {{}}\n"),
            Path::new("c"),
        )
        .unwrap();
        assert!(cf.warnings.is_empty(), "{:?}", cf.warnings);
    }
}
