//! The sealer-style Clusterfile (`apiVersion: sealer.io/v2`, `kind: Cluster`): hosts, roles,
//! login settings and environment. Only the fields the installer uses are read; other documents
//! in the file (`kind: Plugin`, `kind: Config`) are skipped for now.
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

use crate::hosts::{self, Host, HostError, Role, Secret, SshOverrides};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClusterfileError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("{path}: no document with `kind: Cluster`")]
    NoCluster { path: PathBuf },
    #[error("{path}: apiVersion {found:?} is not supported (expected sealer.io/v2)")]
    ApiVersion { path: PathBuf, found: String },
    #[error("{path}: {field}: {msg}")]
    Field {
        path: PathBuf,
        field: String,
        msg: String,
    },
    #[error("{path}: {source}")]
    Host { path: PathBuf, source: HostError },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    #[allow(dead_code)]
    metadata: serde_yaml::Value,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    ssh: Option<SshBlock>,
    #[serde(default)]
    hosts: Vec<HostBlock>,
    // Read by later slices; accepted here so real Clusterfiles parse.
    #[serde(default)]
    #[allow(dead_code)]
    image: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    registry: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SshBlock {
    user: Option<String>,
    passwd: Option<String>,
    pk: Option<String>,
    pk_passwd: Option<String>,
    port: Option<PortValue>,
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
    /// `spec.ssh`: defaults for every host (command-line flags override them).
    pub ssh: SshOverrides,
    pub env: Vec<(String, String)>,
    hosts: Vec<HostGroup>,
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
        let yaml = |source| ClusterfileError::Yaml {
            path: path.into(),
            source,
        };
        let field = |field: &str, msg: String| ClusterfileError::Field {
            path: path.into(),
            field: field.into(),
            msg,
        };
        let mut cluster = None;
        for d in serde_yaml::Deserializer::from_str(text) {
            let v = serde_yaml::Value::deserialize(d).map_err(yaml)?;
            if v.get("kind").and_then(|k| k.as_str()) == Some("Cluster") {
                cluster = Some(serde_yaml::from_value::<Doc>(v).map_err(yaml)?);
                break;
            }
        }
        let doc = cluster.ok_or_else(|| ClusterfileError::NoCluster { path: path.into() })?;
        debug_assert_eq!(doc.kind, "Cluster");
        if doc.api_version != "sealer.io/v2" {
            return Err(ClusterfileError::ApiVersion {
                path: path.into(),
                found: doc.api_version,
            });
        }
        let host_err = |source| ClusterfileError::Host {
            path: path.into(),
            source,
        };
        let mut cf = Clusterfile {
            ssh: ssh_block("spec.ssh", doc.spec.ssh.as_ref()).map_err(host_err)?,
            env: parse_env("spec.env", &doc.spec.env).map_err(|m| field("spec.env", m))?,
            hosts: Vec::new(),
        };
        for (i, h) in doc.spec.hosts.iter().enumerate() {
            let at = format!("spec.hosts[{i}]");
            if h.ips.is_empty() {
                return Err(field(&format!("{at}.ips"), "no addresses".into()));
            }
            let ips =
                hosts::parse_addrs(&format!("{at}.ips"), &h.ips.join(",")).map_err(host_err)?;
            let role = match h.roles.as_slice() {
                [] => return Err(field(&format!("{at}.roles"), "give master or node".into())),
                [r, ..] => Role::parse(&format!("{at}.roles"), r).map_err(host_err)?,
            };
            let ssh = ssh_block(&format!("{at}.ssh"), h.ssh.as_ref()).map_err(host_err)?;
            let env = parse_env(&format!("{at}.env"), &h.env)
                .map_err(|m| field(&format!("{at}.env"), m))?;
            cf.hosts.push((ips, role, ssh, env));
        }
        Ok(cf)
    }

    pub fn has_hosts(&self) -> bool {
        !self.hosts.is_empty()
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

fn ssh_block(at: &str, b: Option<&SshBlock>) -> Result<SshOverrides, HostError> {
    let Some(b) = b else {
        return Ok(SshOverrides::default());
    };
    let nonempty = |s: &Option<String>| s.as_ref().filter(|s| !s.is_empty()).cloned();
    let port = match &b.port {
        None => None,
        Some(PortValue::Str(s)) if s.is_empty() => None,
        Some(PortValue::Str(s)) => Some(hosts::parse_port(&format!("{at}.port"), s)?),
        Some(PortValue::Num(n)) => Some(hosts::parse_port(&format!("{at}.port"), &n.to_string())?),
    };
    Ok(SshOverrides {
        user: nonempty(&b.user),
        port,
        key: nonempty(&b.pk).map(PathBuf::from),
        key_passphrase: nonempty(&b.pk_passwd).map(Secret::new),
        password: nonempty(&b.passwd).map(Secret::new),
        sudo: None,
    })
}

fn parse_env(at: &str, list: &[String]) -> Result<Vec<(String, String)>, String> {
    list.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{kv:?} in {at} is not key=value")),
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
  image: app:1.0
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

    #[test]
    fn parses_hosts_and_overrides() {
        let cf = Clusterfile::parse(SAMPLE, Path::new("Clusterfile")).unwrap();
        let hosts = cf.hosts(&cf.ssh).unwrap();
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
        let p = Path::new("cf.yaml");
        let bad = |t: &str| Clusterfile::parse(t, p).unwrap_err().to_string();
        let head = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n";
        let e = bad(&format!(
            "{head}  hosts:\n    - ips: [10.0.0.x]\n      roles: [master]\n"
        ));
        assert!(e.contains("spec.hosts[0].ips"), "{e}");
        let e = bad(&format!(
            "{head}  hosts:\n    - ips: [10.0.0.1]\n      roles: [boss]\n"
        ));
        assert!(e.contains("spec.hosts[0].roles"), "{e}");
        let e = bad(&format!("{head}  hosts:\n    - ips: [10.0.0.1]\n      roles: [node]\n      ssh: {{port: \"99999\"}}\n"));
        assert!(e.contains("spec.hosts[0].ssh.port"), "{e}");
        let e = bad(&format!("{head}  env: [novalue]\n"));
        assert!(e.contains("spec.env"), "{e}");
        let e = bad(&format!(
            "{head}  hosts:\n    - ips: [10.0.0.1]\n      roles: [node]\n      sshh: {{}}\n"
        ));
        assert!(e.contains("sshh"), "{e}");
        let e = bad("apiVersion: sealer.io/v1\nkind: Cluster\n");
        assert!(e.contains("sealer.io/v2"), "{e}");
        assert!(bad("kind: Plugin\n").contains("kind: Cluster"));
        let e = Clusterfile::parse(
            &format!("{head}  hosts:\n    - ips: [10.0.0.1]\n      roles: [node]\n    - ips: [10.0.0.1]\n      roles: [master]\n"),
            p,
        )
        .unwrap()
        .hosts(&SshOverrides::default())
        .unwrap_err()
        .to_string();
        assert!(e.contains("10.0.0.1"), "{e}");
    }
}
