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
    #[error("{origin}")]
    TooComplex {
        origin: String,
        source: bale_yamlguard::GuardError,
    },
    #[error("{origin}: not valid YAML")]
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
    #[error("{origin}: unknown field {field:?}; a {kind} document has {known}")]
    UnknownField {
        origin: String,
        kind: &'static str,
        field: String,
        known: String,
    },
}

/// Why a Config overlay could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "{origin}: strategy merge needs YAML, and {what} is not (use strategy: overwrite for \
         other files)"
    )]
    NotYaml {
        origin: String,
        what: String,
        source: serde_yaml::Error,
    },
    #[error("{origin}: the merged file cannot be written as YAML")]
    Render {
        origin: String,
        source: serde_yaml::Error,
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
    /// What was accepted and is not acted on, one message each.
    pub warnings: Vec<String>,
}

/// The fields of a Plugin or Config document, and of their `spec`.
const DOC_FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];
const PLUGIN_FIELDS: [&str; 5] = ["type", "action", "on", "scope", "data"];
const CONFIG_FIELDS: [&str; 4] = ["path", "strategy", "data", "process"];

struct Doc {
    metadata_name: String,
    spec: serde_yaml::Value,
}

/// Refuses any key of `map` that is not in `known`: a misspelt field must not be dropped.
fn only_known(
    at: &str,
    kind: &'static str,
    prefix: &str,
    map: &serde_yaml::Value,
    known: &[&str],
) -> Result<(), PluginError> {
    let Some(m) = map.as_mapping() else {
        return Ok(());
    };
    for k in m.keys() {
        let name = match k.as_str() {
            Some(s) => s.to_string(),
            None => format!("{k:?}"),
        };
        if !known.contains(&name.as_str()) {
            return Err(PluginError::UnknownField {
                origin: at.into(),
                kind,
                field: format!("{prefix}{name}"),
                known: known
                    .iter()
                    .map(|f| format!("{prefix}{f}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(())
}

impl Documents {
    /// Reads every `Plugin` and `Config` document of a YAML stream; other kinds are left to
    /// their readers (the Clusterfile's kinds are checked by [`crate::clusterfile`]).
    /// `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Documents, PluginError> {
        bale_yamlguard::check(text, bale_yamlguard::Limits::CONFIG).map_err(|source| {
            PluginError::TooComplex {
                origin: origin.into(),
                source,
            }
        })?;
        let mut out = Documents::default();
        for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v = serde_yaml::Value::deserialize(d).map_err(|source| PluginError::Yaml {
                origin: origin.into(),
                source,
            })?;
            let at = format!("{origin} (document {})", i + 1);
            let kind: &'static str = match v.get("kind").and_then(|k| k.as_str()) {
                Some("Plugin") => "Plugin",
                Some("Config") => "Config",
                _ => continue,
            };
            only_known(&at, kind, "", &v, &DOC_FIELDS)?;
            let metadata_name = match v.get("metadata") {
                None | Some(serde_yaml::Value::Null) => String::new(),
                Some(m) if m.is_mapping() => match m.get("name") {
                    None => String::new(),
                    Some(serde_yaml::Value::String(n)) => n.clone(),
                    Some(_) => {
                        return Err(PluginError::Field {
                            origin: at,
                            field: "metadata.name".into(),
                            msg: "must be a string".into(),
                        })
                    }
                },
                Some(_) => {
                    return Err(PluginError::Field {
                        origin: at,
                        field: "metadata".into(),
                        msg: "must be a map (name, labels, annotations)".into(),
                    })
                }
            };
            let spec = v.get("spec").cloned().unwrap_or(serde_yaml::Value::Null);
            if !(spec.is_mapping() || spec.is_null()) {
                return Err(PluginError::Field {
                    origin: at,
                    field: "spec".into(),
                    msg: "must be a map".into(),
                });
            }
            let doc = Doc {
                metadata_name,
                spec,
            };
            match kind {
                "Plugin" => {
                    only_known(&at, kind, "spec.", &doc.spec, &PLUGIN_FIELDS)?;
                    out.plugins.push(plugin(&at, doc)?);
                }
                _ => {
                    only_known(&at, kind, "spec.", &doc.spec, &CONFIG_FIELDS)?;
                    if doc.spec.get("process").is_some() {
                        out.warnings.push(format!(
                            "{at}: spec.process is not acted on by bale: spec.data is written \
                             as given"
                        ));
                    }
                    out.configs.push(config(&at, doc)?);
                }
            }
        }
        Ok(out)
    }

    pub fn extend(&mut self, other: Documents) {
        self.plugins.extend(other.plugins);
        self.configs.extend(other.configs);
        self.warnings.extend(other.warnings);
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
    let on_error = |e: crate::hosts::HostError| {
        field(
            "spec.on",
            format!("{e} (use all, master, node, or addresses)"),
        )
    };
    let has = |k: &str| !matches!(doc.spec.get(k), None | Some(serde_yaml::Value::Null));
    if has("on") && has("scope") {
        return Err(field(
            "spec.scope",
            "spec.on and spec.scope both say where the hook runs; keep one".into(),
        ));
    }
    let on = match doc.spec.get("on") {
        None | Some(serde_yaml::Value::Null) => scope(at, &doc.spec)?,
        Some(serde_yaml::Value::String(s)) => target(s).map_err(on_error)?,
        Some(serde_yaml::Value::Sequence(items)) => {
            let joined: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
            if joined.len() != items.len() {
                return Err(field("spec.on", "list items must be strings".into()));
            }
            target(&joined.join(",")).map_err(on_error)?
        }
        Some(_) => return Err(field("spec.on", "a role or a list of addresses".into())),
    };
    let script = text_field(at, &doc.spec, "data")?;
    Ok(Plugin {
        name: doc.metadata_name,
        origin: at.into(),
        action,
        on,
        script,
    })
}

/// sealer's `scope` (`master`, `node`, `master|node`), used when `on` is not given: a hook
/// meant for workers must not run on the masters.
fn scope(at: &str, spec: &serde_yaml::Value) -> Result<Target, PluginError> {
    let bad = |what: String| PluginError::Field {
        origin: at.into(),
        field: "spec.scope".into(),
        msg: format!("{what}: use master, node or master|node"),
    };
    let s = match spec.get("scope") {
        None | Some(serde_yaml::Value::Null) => return Ok(Target::All),
        Some(serde_yaml::Value::String(s)) => s,
        Some(_) => return Err(bad("not a string".into())),
    };
    let mut roles: Vec<Role> = Vec::new();
    for part in s.split('|').map(str::trim) {
        match target(part) {
            Ok(Target::Role(r)) => roles.push(r),
            Ok(Target::All) => return Ok(Target::All),
            _ => return Err(bad(format!("{s:?}"))),
        }
    }
    roles.dedup();
    Ok(match roles.as_slice() {
        [one] => Target::Role(*one),
        _ => Target::All,
    })
}

fn target(s: &str) -> Result<Target, crate::hosts::HostError> {
    let s = s.trim();
    let s = s.strip_prefix("role=").unwrap_or(s);
    match s {
        "" | "all" | "*" => Ok(Target::All),
        "master" | "masters" => Ok(Target::Role(Role::Master)),
        "node" | "nodes" | "worker" | "workers" => Ok(Target::Role(Role::Node)),
        list => crate::hosts::parse_addrs("spec.on", list).map(Target::Addrs),
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
        name: doc.metadata_name,
        origin: at.into(),
        path,
        strategy,
        data,
    })
}

/// Applies an overlay to the file's current text (`None`: the file does not exist yet).
pub fn apply_config(cfg: &Config, current: Option<&str>) -> Result<String, ConfigError> {
    match (cfg.strategy, current) {
        (Strategy::Overwrite, _) | (Strategy::Merge, None) => Ok(cfg.data.clone()),
        (Strategy::Merge, Some(old)) => {
            let parse = |what: String, t: &str| {
                serde_yaml::from_str::<serde_yaml::Value>(t).map_err(|source| {
                    ConfigError::NotYaml {
                        origin: cfg.origin.clone(),
                        what,
                        source,
                    }
                })
            };
            let mut base = parse(format!("{} in the bundle", cfg.path), old)?;
            let over = parse("spec.data".into(), &cfg.data)?;
            merge(&mut base, over);
            serde_yaml::to_string(&base).map_err(|source| ConfigError::Render {
                origin: cfg.origin.clone(),
                source,
            })
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
        assert!(e.to_string().contains("overwrite"), "{e}");
    }

    /// F11: a misspelt field of a hook or an overlay was dropped (`onn: node` ran the hook on
    /// every host).
    #[test]
    fn unknown_fields_are_refused() {
        let e = Documents::parse(
            "kind: Plugin\nspec: {action: PostInstall, onn: node, data: x}\n",
            "plugins/a.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("plugins/a.yaml (document 1)") && e.contains("spec.onn"),
            "{e}"
        );
        assert!(e.contains("spec.on,") && e.contains("spec.scope"), "{e}");
        let e = Documents::parse("kind: Config\nspecs: {path: a, data: b}\n", "cf")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"specs\"") && e.contains("spec"), "{e}");
        let e = Documents::parse(
            "kind: Config\nspec: {path: a, data: b, stratgy: overwrite}\n",
            "cf",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("spec.stratgy") && e.contains("spec.strategy"),
            "{e}"
        );
        // sealer's fields are known; `process` is not acted on and says so
        let d = Documents::parse(
            "apiVersion: sealer.io/v2\nkind: Config\nmetadata: {name: c, labels: {a: b}}\n\
             spec: {path: etc/a.yaml, data: b, process: value|toJson, strategy: overwrite}\n",
            "cf",
        )
        .unwrap();
        assert!(d.warnings[0].contains("spec.process"), "{:?}", d.warnings);
        // other kinds are the Clusterfile reader's business
        let d = Documents::parse(DOCS, "cf").unwrap();
        assert!(d.warnings.is_empty());
    }

    /// Issue 15: a `scope: node` hook ran on the masters too.
    #[test]
    fn scope_is_honoured_when_on_is_not_given() {
        let doc = |scope: &str| {
            Documents::parse(
                &format!(
                    "kind: Plugin\nspec: {{action: PostInstall, scope: \"{scope}\", data: x}}\n"
                ),
                "p",
            )
        };
        assert_eq!(doc("node").unwrap().plugins[0].on, Target::Role(Role::Node));
        assert_eq!(
            doc("master").unwrap().plugins[0].on,
            Target::Role(Role::Master)
        );
        assert_eq!(doc("master|node").unwrap().plugins[0].on, Target::All);
        let e = doc("nodez").unwrap_err().to_string();
        assert!(e.contains("spec.scope"), "{e}");
        let e = Documents::parse(
            "kind: Plugin\nspec: {action: PostInstall, scope: node, on: master, data: x}\n",
            "p",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("keep one"), "{e}");
    }

    /// F15: a plugin file nested deep is refused before the YAML parser.
    #[test]
    fn deeply_nested_plugin_files_are_refused_at_once() {
        let n = 100_000;
        let text = format!(
            "kind: Plugin\nspec: {}{}\n",
            "{a: ".repeat(n),
            "}".repeat(n)
        );
        let t = std::time::Instant::now();
        let e = Documents::parse(&text, "plugins/deep.yaml").unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_millis(500));
        assert!(matches!(e, PluginError::TooComplex { .. }), "{e}");
        assert!(e.to_string().contains("plugins/deep.yaml"));
    }
}
