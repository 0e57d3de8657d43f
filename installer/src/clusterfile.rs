//! The sealer-style Clusterfile (`kind: Cluster`, `apiVersion: sealer.io/v2` or the older
//! `sealer.cloud/v2` of the same shape): hosts, roles, login settings and environment.
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
//!     - ips: [10.0.0.5]
//!       roles: [node]
//!       env: ["k=v"]
//! ```
//!
//! A typo must never change what gets installed where: every field of every document is
//! either one bale knows or refused with the valid ones listed. The fields sealer defines and
//! bale does not act on yet (`status`, `spec.image`, `spec.cmd`, `spec.appNames`,
//! `spec.dataRoot`, host `labels` and `taints`, ...) and the documents sealer reads beside the
//! cluster (`Application`, `Infra`, kubeadm's) are accepted with a warning each. `Plugin` and
//! `Config` documents are read by [`crate::plugins`]. A Clusterfile that lists no host is an
//! error unless the hosts come from `--masters`/`--nodes`: an install on this machine is only
//! ever asked for by giving no hosts and no Clusterfile.

use crate::hosts::{self, Host, HostError, Role, Secret, SshOverrides};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The apiVersions of a `kind: Cluster` document: sealer's current one and the older one of
/// the same shape.
pub const API_VERSIONS: [&str; 2] = ["sealer.io/v2", "sealer.cloud/v2"];

/// Documents sealer reads in a Clusterfile besides the cluster, plugins and configs, that bale
/// accepts and does not act on (yet).
const IGNORED_KINDS: [&str; 7] = [
    "Application",
    "Infra",
    "InitConfiguration",
    "ClusterConfiguration",
    "JoinConfiguration",
    "KubeletConfiguration",
    "KubeProxyConfiguration",
];

/// The kinds [`crate::plugins`] reads.
const PLUGIN_KINDS: [&str; 2] = ["Plugin", "Config"];

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
    #[error("{path}: document {doc} (kind: {kind})")]
    Document {
        path: PathBuf,
        doc: usize,
        kind: String,
        source: serde_yaml::Error,
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
    #[error("{path}: document {doc}: unknown kind {kind:?}; a Clusterfile holds {known}")]
    UnknownKind {
        path: PathBuf,
        doc: usize,
        kind: String,
        known: String,
    },
    #[error(
        "{path}: apiVersion {found:?} is not supported for kind: Cluster (use {})",
        API_VERSIONS.join(" or ")
    )]
    ApiVersion { path: PathBuf, found: String },
    #[error("{path}: {field}: {msg}")]
    Field {
        path: PathBuf,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: serde_yaml::Value,
    #[serde(default)]
    spec: Spec,
    /// What sealer records after a run; nothing to act on.
    #[serde(default)]
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
    // sealer's fields that bale does not act on: each set one is a warning.
    #[serde(default)]
    image: Option<serde_yaml::Value>,
    #[serde(default)]
    cmd: Option<serde_yaml::Value>,
    #[serde(default)]
    app_names: Option<serde_yaml::Value>,
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
    labels: Option<serde_yaml::Value>,
    #[serde(default)]
    taints: Option<serde_yaml::Value>,
}

/// One `spec.hosts[]` entry: addresses, role, login overrides, environment.
type HostGroup = (
    Vec<std::net::IpAddr>,
    Role,
    SshOverrides,
    Vec<(String, String)>,
);

/// What the installer takes from a Clusterfile.
#[derive(Debug, Default)]
pub struct Clusterfile {
    /// The file, as named on the command line.
    pub path: PathBuf,
    /// `spec.ssh`: defaults for every host (command-line flags override them).
    pub ssh: SshOverrides,
    pub env: Vec<(String, String)>,
    /// What was accepted and is not acted on, one message each.
    pub warnings: Vec<String>,
    hosts: Vec<HostGroup>,
}

/// Where a [`Clusterfile`]'s errors point.
struct At<'a>(&'a Path);

impl At<'_> {
    fn field(&self, field: &str, msg: impl Into<String>) -> ClusterfileError {
        ClusterfileError::Field {
            path: self.0.into(),
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
        let at = At(path);
        let mut warnings = Vec::new();
        let known = || {
            let mut k = vec!["Cluster"];
            k.extend(PLUGIN_KINDS);
            k.extend(IGNORED_KINDS);
            k.join(", ")
        };
        // Which document is the cluster, and every document's kind known.
        let mut cluster = None;
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
                        known: known(),
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
                    cluster = Some(i);
                }
                k if PLUGIN_KINDS.contains(&k) => {}
                k if IGNORED_KINDS.contains(&k) => warnings.push(format!(
                    "{}: document {doc} (kind: {k}) is not acted on by bale; it is ignored",
                    path.display()
                )),
                k => {
                    return Err(ClusterfileError::UnknownKind {
                        path: path.into(),
                        doc,
                        kind: k.into(),
                        known: known(),
                    })
                }
            }
        }
        let index = cluster.ok_or_else(|| ClusterfileError::NoCluster { path: path.into() })?;
        // Read again straight from the text: errors then carry the field path and the line.
        let doc = serde_yaml::Deserializer::from_str(text)
            .nth(index)
            .map(Doc::deserialize)
            .ok_or_else(|| ClusterfileError::NoCluster { path: path.into() })?
            .map_err(|source| ClusterfileError::Document {
                path: path.into(),
                doc: index + 1,
                kind: "Cluster".into(),
                source,
            })?;
        if !API_VERSIONS.contains(&doc.api_version.as_str()) {
            return Err(ClusterfileError::ApiVersion {
                path: path.into(),
                found: doc.api_version,
            });
        }
        let mut ignored = |field: &str, set: bool| {
            if set {
                warnings.push(format!(
                    "{}: {field} is accepted but not acted on by bale",
                    path.display()
                ));
            }
        };
        let s = &doc.spec;
        ignored("status", doc.status.is_some());
        ignored(
            "spec.image (the bundle being run is the image)",
            s.image.is_some(),
        );
        ignored("spec.cmd", s.cmd.is_some());
        ignored(
            "spec.appNames (every app of the bundle runs)",
            s.app_names.is_some(),
        );
        ignored("spec.hostAliases", s.host_aliases.is_some());
        ignored(
            "spec.registry (the bundle serves its own registry)",
            s.registry.is_some(),
        );
        ignored(
            "spec.dataRoot (bale uses --data-dir)",
            s.data_root.is_some(),
        );
        for (i, h) in s.hosts.iter().enumerate() {
            ignored(&format!("spec.hosts[{i}].labels"), h.labels.is_some());
            ignored(&format!("spec.hosts[{i}].taints"), h.taints.is_some());
        }
        let mut cf = Clusterfile {
            path: path.into(),
            ssh: ssh_block(&at, "spec.ssh", s.ssh.as_ref())?,
            env: parse_env(&at, "spec.env", &s.env)?,
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
            let role = role(&at, &format!("{here}.roles"), &h.roles, &mut cf.warnings)?;
            let ssh = ssh_block(&at, &format!("{here}.ssh"), h.ssh.as_ref())?;
            let env = parse_env(&at, &format!("{here}.env"), &h.env)?;
            cf.hosts.push((ips, role, ssh, env));
        }
        Ok(cf)
    }

    pub fn has_hosts(&self) -> bool {
        !self.hosts.is_empty()
    }

    /// The hosts of a run with this Clusterfile: its own, each with `flags` over `spec.ssh`
    /// under the host's own `ssh` block, or, when it lists none, the hosts of `--masters` and
    /// `--nodes`. Neither is an error: a Clusterfile never means this machine.
    pub fn host_list(
        &self,
        masters: Option<&str>,
        nodes: Option<&str>,
        flags: &SshOverrides,
    ) -> Result<Vec<Host>, ClusterfileError> {
        let at = At(&self.path);
        flags.check("--user", "--key").map_err(|e| at.host(e))?;
        let defaults = self.ssh.merged(flags);
        let have_flag_hosts = masters.is_some() || nodes.is_some();
        match (self.has_hosts(), have_flag_hosts) {
            (true, true) => Err(ClusterfileError::HostsTwice {
                path: self.path.clone(),
            }),
            (true, false) => self.hosts(&defaults).map_err(|e| at.host(e)),
            (false, true) => hosts::from_flags(masters, nodes, &defaults).map_err(|e| at.host(e)),
            (false, false) => Err(ClusterfileError::NoHosts {
                path: self.path.clone(),
            }),
        }
    }

    /// The hosts, each with `defaults` (spec.ssh already layered with the flags) under its own
    /// `ssh` block.
    pub fn hosts(&self, defaults: &SshOverrides) -> Result<Vec<Host>, HostError> {
        let mut out = Vec::new();
        for (ips, role, ssh, env) in &self.hosts {
            let spec = defaults.merged(ssh).resolve();
            for ip in ips {
                let mut e = self.env.clone();
                e.extend(env.iter().cloned());
                out.push(Host {
                    addr: *ip,
                    role: *role,
                    ssh: spec.clone(),
                    env: e,
                });
            }
        }
        hosts::check_unique(&out)?;
        Ok(out)
    }
}

/// The one role of a host: master or node. Both at once is refused (which one was meant?);
/// sealer's other roles (`roles: [node, db]`) are kept as a warning.
fn role(
    at: &At,
    field: &str,
    roles: &[String],
    warnings: &mut Vec<String>,
) -> Result<Role, ClusterfileError> {
    let mut found: Option<(Role, &str)> = None;
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
            Err(_) => warnings.push(format!(
                "{}: {field}: role {r:?} is not acted on by bale (it knows master and node)",
                at.0.display()
            )),
        }
    }
    match found {
        Some((role, _)) => Ok(role),
        None if roles.is_empty() => Err(at.field(field, "give master or node")),
        None => Err(at.field(
            field,
            format!("{roles:?} names neither master nor node; give one of them"),
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

    /// The message with every cause, as `bale` prints it.
    fn chain(e: &dyn std::error::Error) -> String {
        let mut s = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cause = c.source();
        }
        s
    }

    fn bad(text: &str) -> String {
        chain(&Clusterfile::parse(text, Path::new("cf.yaml")).unwrap_err())
    }

    const HEAD: &str = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n";

    #[test]
    fn parses_hosts_and_overrides() {
        let cf = Clusterfile::parse(SAMPLE, Path::new("Clusterfile")).unwrap();
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
        let e = bad("apiVersion: sealer.io/v1\nkind: Cluster\n");
        assert!(e.contains("sealer.io/v2"), "{e}");
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
        let cf = Clusterfile::parse(&format!("{HEAD}  env: [a=1]\n"), Path::new("site/cf.yaml"))
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
        let with_hosts = Clusterfile::parse(SAMPLE, Path::new("cf")).unwrap();
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
        let cf = Clusterfile::parse(text, Path::new("cf")).unwrap();
        let hosts = cf.host_list(None, None, &SshOverrides::default()).unwrap();
        assert_eq!((hosts[0].role, hosts[1].role), (Role::Master, Role::Node));
        let w = cf.warnings.join("\n");
        for want in [
            "status",
            "spec.image",
            "spec.cmd",
            "spec.appNames",
            "spec.dataRoot",
            "spec.registry",
            "spec.hosts[0].labels",
            "spec.hosts[0].taints",
            "\"db\"",
            "kind: Application",
            "kind: Infra",
            "kind: ClusterConfiguration",
        ] {
            assert!(w.contains(want), "no warning about {want}:\n{w}");
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
        let cf = Clusterfile::parse(
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
        let cf = Clusterfile::parse(SAMPLE, Path::new("cf")).unwrap();
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
}
