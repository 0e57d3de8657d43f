//! Hooks (`kind: Plugin`) and file overlays (`kind: Config`), the sealer documents users already
//! write, read from the Clusterfile and from the bundle's `plugins/` directory.
//!
//! ```yaml
//! apiVersion: sealer.io/v1
//! kind: Plugin
//! metadata: {name: warm-up}
//! spec:
//!   type: SHELL
//!   action: PostInstall          # PreInstall PreInit PostInit PostInstall PreClean PostClean
//!   on: node                     # all (default), master, node, or addresses: 10.0.0.5,10.0.0.6
//!   data: |
//!     echo ready > /etc/warm
//! ---
//! apiVersion: sealer.io/v1
//! kind: Config
//! metadata: {name: app-settings}
//! spec:
//!   path: etc/app/config.yaml      # a file of the bundle's tree
//!   strategy: merge                # merge (YAML maps, deep) or overwrite
//!   data: |
//!     replicas: 5
//! ```

use crate::hosts::Role;
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("{origin}: {source}")]
    Yaml {
        origin: String,
        source: serde_yaml::Error,
    },
    #[error("{origin}: {field}: {msg}")]
    Field {
        origin: String,
        field: String,
        msg: String,
    },
}

/// When a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    PreInstall,
    PreInit,
    PostInit,
    PostInstall,
    PreClean,
    PostClean,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::PreInstall,
        Action::PreInit,
        Action::PostInit,
        Action::PostInstall,
        Action::PreClean,
        Action::PostClean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::PreInstall => "PreInstall",
            Action::PreInit => "PreInit",
            Action::PostInit => "PostInit",
            Action::PostInstall => "PostInstall",
            Action::PreClean => "PreClean",
            Action::PostClean => "PostClean",
        }
    }

    /// The phase title: `hook:pre-install`.
    pub fn phase(self) -> &'static str {
        match self {
            Action::PreInstall => "hook:pre-install",
            Action::PreInit => "hook:pre-init",
            Action::PostInit => "hook:post-init",
            Action::PostInstall => "hook:post-install",
            Action::PreClean => "hook:pre-clean",
            Action::PostClean => "hook:post-clean",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        let k: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Action::ALL
            .into_iter()
            .find(|a| a.name().to_ascii_lowercase() == k)
    }
}

/// Which hosts a hook runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Role(Role),
    Addrs(Vec<IpAddr>),
}

impl Target {
    pub fn matches(&self, role: Role, addr: Option<IpAddr>) -> bool {
        match self {
            Target::All => true,
            Target::Role(r) => *r == role,
            Target::Addrs(a) => addr.is_some_and(|x| a.contains(&x)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub name: String,
    /// Where it was defined (file, document), for messages.
    pub origin: String,
    pub action: Action,
    pub on: Target,
    pub script: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Merge,
    Overwrite,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub name: String,
    pub origin: String,
    /// A path of the bundle's tree, relative, normalized (no `..`).
    pub path: String,
    pub strategy: Strategy,
    pub data: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Documents {
    pub plugins: Vec<Plugin>,
    pub configs: Vec<Config>,
}

#[derive(Deserialize)]
struct Doc {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: serde_yaml::Value,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
}

impl Documents {
    /// Reads every `Plugin` and `Config` document of a YAML stream; other kinds are ignored.
    /// `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Documents, PluginError> {
        let mut out = Documents::default();
        for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v = serde_yaml::Value::deserialize(d).map_err(|source| PluginError::Yaml {
                origin: origin.into(),
                source,
            })?;
            if v.is_null() {
                continue;
            }
            let doc: Doc = serde_yaml::from_value(v).map_err(|source| PluginError::Yaml {
                origin: origin.into(),
                source,
            })?;
            let at = format!("{origin} (document {})", i + 1);
            match doc.kind.as_str() {
                "Plugin" => out.plugins.push(plugin(&at, doc)?),
                "Config" => out.configs.push(config(&at, doc)?),
                _ => {}
            }
        }
        Ok(out)
    }

    pub fn extend(&mut self, other: Documents) {
        self.plugins.extend(other.plugins);
        self.configs.extend(other.configs);
    }

    pub fn hooks(&self, action: Action) -> impl Iterator<Item = &Plugin> {
        self.plugins.iter().filter(move |p| p.action == action)
    }
}

fn text_field(at: &str, spec: &serde_yaml::Value, key: &str) -> Result<String, PluginError> {
    match spec.get(key) {
        Some(serde_yaml::Value::String(s)) => Ok(s.clone()),
        Some(serde_yaml::Value::Null) | None => Err(PluginError::Field {
            origin: at.into(),
            field: format!("spec.{key}"),
            msg: "missing".into(),
        }),
        Some(_) => Err(PluginError::Field {
            origin: at.into(),
            field: format!("spec.{key}"),
            msg: "must be a string".into(),
        }),
    }
}

fn plugin(at: &str, doc: Doc) -> Result<Plugin, PluginError> {
    let field = |f: &str, msg: String| PluginError::Field {
        origin: at.into(),
        field: f.into(),
        msg,
    };
    let kind = doc
        .spec
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("SHELL");
    if !kind.eq_ignore_ascii_case("shell") {
        return Err(field(
            "spec.type",
            format!("{kind:?} is not supported: bale runs SHELL hooks"),
        ));
    }
    let action_text = text_field(at, &doc.spec, "action")?;
    let action = Action::parse(&action_text).ok_or_else(|| {
        field(
            "spec.action",
            format!(
                "{action_text:?} is not a hook point (use one of {})",
                Action::ALL.map(|a| a.name()).join(", ")
            ),
        )
    })?;
    let on = match doc.spec.get("on") {
        None | Some(serde_yaml::Value::Null) => Target::All,
        Some(serde_yaml::Value::String(s)) => target(s).map_err(|m| field("spec.on", m))?,
        Some(serde_yaml::Value::Sequence(items)) => {
            let joined: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
            if joined.len() != items.len() {
                return Err(field("spec.on", "list items must be strings".into()));
            }
            target(&joined.join(",")).map_err(|m| field("spec.on", m))?
        }
        Some(_) => return Err(field("spec.on", "a role or a list of addresses".into())),
    };
    let script = text_field(at, &doc.spec, "data")?;
    Ok(Plugin {
        name: doc.metadata.name,
        origin: at.into(),
        action,
        on,
        script,
    })
}

fn target(s: &str) -> Result<Target, String> {
    let s = s.trim();
    let s = s.strip_prefix("role=").unwrap_or(s);
    match s {
        "" | "all" | "*" => Ok(Target::All),
        "master" | "masters" => Ok(Target::Role(Role::Master)),
        "node" | "nodes" | "worker" | "workers" => Ok(Target::Role(Role::Node)),
        list => crate::hosts::parse_addrs("spec.on", list)
            .map(Target::Addrs)
            .map_err(|e| format!("{e} (use all, master, node, or addresses)")),
    }
}

fn config(at: &str, doc: Doc) -> Result<Config, PluginError> {
    let field = |f: &str, msg: String| PluginError::Field {
        origin: at.into(),
        field: f.into(),
        msg,
    };
    let raw_path = text_field(at, &doc.spec, "path")?;
    let path = raw_path.trim_start_matches('/').to_string();
    if path.is_empty()
        || path
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(field(
            "spec.path",
            format!("{raw_path:?}: give a file of the bundle's tree, like etc/app/config.yaml"),
        ));
    }
    let strategy = match doc.spec.get("strategy").and_then(|s| s.as_str()) {
        None | Some("merge") => Strategy::Merge,
        Some("overwrite") => Strategy::Overwrite,
        Some(other) => {
            return Err(field(
                "spec.strategy",
                format!("{other:?}: use merge or overwrite"),
            ))
        }
    };
    let data = text_field(at, &doc.spec, "data")?;
    Ok(Config {
        name: doc.metadata.name,
        origin: at.into(),
        path,
        strategy,
        data,
    })
}

/// Applies an overlay to the file's current text (`None`: the file does not exist yet).
pub fn apply_config(cfg: &Config, current: Option<&str>) -> Result<String, String> {
    match (cfg.strategy, current) {
        (Strategy::Overwrite, _) | (Strategy::Merge, None) => Ok(cfg.data.clone()),
        (Strategy::Merge, Some(old)) => {
            let parse = |what: &str, t: &str| {
                serde_yaml::from_str::<serde_yaml::Value>(t).map_err(|e| {
                    format!(
                        "{}: merge needs YAML, and {what} is not: {e} (use strategy: overwrite \
                         for other files)",
                        cfg.origin
                    )
                })
            };
            let mut base = parse(&format!("{} in the bundle", cfg.path), old)?;
            let over = parse("spec.data", &cfg.data)?;
            merge(&mut base, over);
            serde_yaml::to_string(&base).map_err(|e| format!("{}: {e}", cfg.origin))
        }
    }
}

/// Deep merge: maps merge key by key, anything else is replaced by the overlay.
fn merge(base: &mut serde_yaml::Value, over: serde_yaml::Value) {
    match (base, over) {
        (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &str = r#"
apiVersion: sealer.io/v2
kind: Cluster
spec: {}
---
apiVersion: sealer.io/v1
kind: Plugin
metadata: {name: mark}
spec:
  type: SHELL
  action: PostInstall
  on: node
  data: |
    echo hi > /tmp/mark
---
kind: Plugin
metadata: {name: two}
spec:
  action: pre-init
  on: [10.0.0.5, 10.0.0.6]
  data: "true"
---
kind: Config
metadata: {name: settings}
spec:
  path: /etc/app/config.yaml
  data: |
    replicas: 5
    extra: {a: 1}
"#;

    #[test]
    fn reads_plugins_and_configs_and_skips_other_kinds() {
        let d = Documents::parse(DOCS, "Clusterfile").unwrap();
        assert_eq!(d.plugins.len(), 2);
        assert_eq!(d.plugins[0].action, Action::PostInstall);
        assert_eq!(d.plugins[0].on, Target::Role(Role::Node));
        assert_eq!(d.plugins[1].action, Action::PreInit);
        assert!(d.plugins[1]
            .on
            .matches(Role::Master, Some("10.0.0.6".parse().unwrap())));
        assert!(!d.plugins[1]
            .on
            .matches(Role::Master, Some("10.0.0.7".parse().unwrap())));
        assert_eq!(d.configs[0].path, "etc/app/config.yaml");
        assert_eq!(d.configs[0].strategy, Strategy::Merge);
        assert_eq!(d.hooks(Action::PreInit).count(), 1);
    }

    #[test]
    fn bad_documents_name_the_field_and_the_fix() {
        let e = Documents::parse(
            "kind: Plugin\nspec: {action: Sometime, data: x}\n",
            "plugins/a.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("plugins/a.yaml (document 1): spec.action"),
            "{e}"
        );
        assert!(e.contains("PreInstall"), "{e}");
        let e = Documents::parse("kind: Config\nspec: {path: ../x, data: y}\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.path"), "{e}");
        let e = Documents::parse("kind: Plugin\nspec: {action: PreInit}\n", "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("spec.data: missing"), "{e}");
        let e = Documents::parse(
            "kind: Plugin\nspec: {type: GO, action: PreInit, data: x}\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("SHELL"), "{e}");
    }

    #[test]
    fn merge_is_deep_and_overwrite_replaces() {
        let d = Documents::parse(DOCS, "c").unwrap();
        let out = apply_config(
            &d.configs[0],
            Some("replicas: 3\nimage: nginx\nextra: {b: 2}\n"),
        )
        .unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["replicas"], serde_yaml::Value::from(5));
        assert_eq!(v["image"], serde_yaml::Value::from("nginx"));
        assert_eq!(v["extra"]["a"], serde_yaml::Value::from(1));
        assert_eq!(v["extra"]["b"], serde_yaml::Value::from(2));
        let mut over = d.configs[0].clone();
        over.strategy = Strategy::Overwrite;
        assert_eq!(
            apply_config(&over, Some("anything")).unwrap(),
            over.data.as_str()
        );
        let e = apply_config(&d.configs[0], Some("a: [unclosed")).unwrap_err();
        assert!(e.contains("overwrite"), "{e}");
    }
}
