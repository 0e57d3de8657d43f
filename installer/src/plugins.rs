//! Hooks (`kind: Plugin`) and file overlays (`kind: Config`), the sealer documents users already
//! write, read from the Clusterfile and from the bundle's `plugins/` directory, with sealer's
//! meaning.
//!
//! ```yaml
//! apiVersion: sealer.io/v1
//! kind: Plugin
//! metadata: {name: warm-up}
//! spec:
//!   type: SHELL
//!   action: post-init-host       # see below; several joined by `|`
//!   scope: master|node           # the hosts' roles, ORed
//!   data: |
//!     echo ready > /etc/warm
//! ---
//! apiVersion: sealer.io/v1
//! kind: Config
//! metadata: {name: app-settings}
//! spec:
//!   path: etc/app/config.yaml      # a file of the bundle's tree
//!   strategy: merge                # overwrite (sealer's default) or merge (YAML maps, deep)
//!   data: |
//!     replicas: 5
//! ```
//!
//! Actions and when they run (bale's hook point in brackets):
//!
//! | sealer action | runs on | bale |
//! |---|---|---|
//! | `pre-install` | the first master | before the node steps (`PreInstall`) |
//! | `pre-init-host` | the hosts of `scope` | before the node steps (`PreInstall`) |
//! | `post-init-host` | the hosts of `scope` | every node joined, before the apps (`PreApps`) |
//! | `post-install` | the first master | every node joined, before the apps (`PreApps`) |
//! | `pre-uninstall` / `post-uninstall` | the first master | around a reset (`PreClean`/`PostClean`) |
//! | `pre-clean-host` / `post-clean-host` | the hosts of `scope` | around a reset |
//! | `pre-scaleup`, `post-scaleup`, `upgrade`, `upgrade-host`, `rollback` | | no moment: a warning |
//!
//! Old sealer's CamelCase actions run on the hosts of `on` (or `scope`; all when neither):
//! `Originally` and `PreInstall` (`PreInstall`), `PreInit`, `PostInit`, `PreGuest` (`PreApps`),
//! `PostInstall` (after the apps), `PreClean`, `PostClean`; `PreJoin`/`PostJoin` (scale-up
//! only) have no moment and are a warning. A host hook of current sealer without `scope` runs on
//! no host, as in sealer, and says so. Hooks of current sealer's actions run in the order of
//! their names, as sealer runs them; old ones in the order written.

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

/// A hook point of bale's install or reset: when a hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Before the node steps (kernel, runtime, registry, kubelet).
    PreInstall,
    /// Before `kubeadm init`.
    PreInit,
    /// After `kubeadm init`, before the other hosts join.
    PostInit,
    /// Every host joined and the pod network up, before the apps.
    PreApps,
    /// After the apps.
    PostInstall,
    PreClean,
    PostClean,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::PreInstall,
        Action::PreInit,
        Action::PostInit,
        Action::PreApps,
        Action::PostInstall,
        Action::PreClean,
        Action::PostClean,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::PreInstall => "PreInstall",
            Action::PreInit => "PreInit",
            Action::PostInit => "PostInit",
            Action::PreApps => "PreApps",
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
            Action::PreApps => "hook:pre-apps",
            Action::PostInstall => "hook:post-install",
            Action::PreClean => "hook:pre-clean",
            Action::PostClean => "hook:post-clean",
        }
    }
}

/// Which hosts a hook of an action runs on when the document does not say (`on`/`scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// sealer's cluster hooks: the first master only, whatever `scope` says.
    FirstMaster,
    /// sealer's host hooks: the hosts whose roles `scope` names; none without a scope.
    Scope,
    /// Old sealer's actions: the hosts of `on`, every host without it.
    On,
}

/// What an action name means: a hook point and where it runs, or no moment in bale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    At(Action, Placement),
    /// An action sealer has for a moment bale has not (scale-up, upgrade, rollback).
    NoMoment(&'static str),
}

/// Current sealer's actions, written exactly so (sealer compares them as given).
const SEALER_ACTIONS: [(&str, Meaning); 13] = [
    (
        "pre-install",
        Meaning::At(Action::PreInstall, Placement::FirstMaster),
    ),
    (
        "pre-init-host",
        Meaning::At(Action::PreInstall, Placement::Scope),
    ),
    (
        "post-init-host",
        Meaning::At(Action::PreApps, Placement::Scope),
    ),
    (
        "post-install",
        Meaning::At(Action::PreApps, Placement::FirstMaster),
    ),
    (
        "pre-uninstall",
        Meaning::At(Action::PreClean, Placement::FirstMaster),
    ),
    (
        "post-uninstall",
        Meaning::At(Action::PostClean, Placement::FirstMaster),
    ),
    (
        "pre-clean-host",
        Meaning::At(Action::PreClean, Placement::Scope),
    ),
    (
        "post-clean-host",
        Meaning::At(Action::PostClean, Placement::Scope),
    ),
    (
        "pre-scaleup",
        Meaning::NoMoment("scale-up: bale adds hosts with install"),
    ),
    (
        "post-scaleup",
        Meaning::NoMoment("scale-up: bale adds hosts with install"),
    ),
    ("upgrade", Meaning::NoMoment("upgrade: bale has no upgrade")),
    (
        "upgrade-host",
        Meaning::NoMoment("upgrade: bale has no upgrade"),
    ),
    (
        "rollback",
        Meaning::NoMoment("rollback: bale has no upgrade to roll back"),
    ),
];

/// Old sealer's actions (and bale's hook point names), compared without case and punctuation.
const OLD_ACTIONS: [(&str, Meaning); 11] = [
    ("Originally", Meaning::At(Action::PreInstall, Placement::On)),
    ("PreInstall", Meaning::At(Action::PreInstall, Placement::On)),
    ("PreInit", Meaning::At(Action::PreInit, Placement::On)),
    ("PostInit", Meaning::At(Action::PostInit, Placement::On)),
    ("PreGuest", Meaning::At(Action::PreApps, Placement::On)),
    ("PreApps", Meaning::At(Action::PreApps, Placement::On)),
    (
        "PostInstall",
        Meaning::At(Action::PostInstall, Placement::On),
    ),
    ("PreClean", Meaning::At(Action::PreClean, Placement::On)),
    ("PostClean", Meaning::At(Action::PostClean, Placement::On)),
    (
        "PreJoin",
        Meaning::NoMoment("scale-up: bale adds hosts with install"),
    ),
    (
        "PostJoin",
        Meaning::NoMoment("scale-up: bale adds hosts with install"),
    ),
];

fn meaning(name: &str) -> Option<Meaning> {
    if let Some((_, m)) = SEALER_ACTIONS.iter().find(|(n, _)| *n == name) {
        return Some(*m);
    }
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let k = squash(name);
    OLD_ACTIONS
        .iter()
        .find(|(n, _)| squash(n) == k)
        .map(|(_, m)| *m)
}

/// Every action name a Plugin may give, for messages.
fn action_names() -> String {
    SEALER_ACTIONS
        .iter()
        .chain(OLD_ACTIONS.iter())
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which hosts a hook runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Role(Role),
    Addrs(Vec<IpAddr>),
    /// The first master alone (sealer's cluster hooks).
    FirstMaster,
    /// sealer's `scope`: the hosts with any of these roles (`master`, `node`, or another role
    /// the Clusterfile gives them); empty: no host.
    Roles(Vec<String>),
    /// Old sealer's `on: key=value`: the hosts with this label in the Clusterfile.
    Label(String, String),
}

/// What a hook's target is matched against: one host.
#[derive(Debug, Clone, Copy)]
pub struct HostFacts<'a> {
    pub role: Role,
    /// None: this machine, with no hosts given.
    pub addr: Option<IpAddr>,
    pub first_master: bool,
    /// The host's other roles in the Clusterfile (`roles: [node, db]`).
    pub roles: &'a [String],
    /// The host's labels in the Clusterfile.
    pub labels: &'a [(String, String)],
}

impl Target {
    pub fn matches(&self, host: &HostFacts) -> bool {
        match self {
            Target::All => true,
            Target::Role(r) => *r == host.role,
            Target::Addrs(a) => host.addr.is_some_and(|x| a.contains(&x)),
            Target::FirstMaster => host.first_master,
            Target::Roles(names) => names.iter().any(|n| match target(n) {
                Ok(Target::Role(r)) => r == host.role,
                _ => host.roles.iter().any(|r| r == n),
            }),
            Target::Label(k, v) => host.labels.iter().any(|(hk, hv)| hk == k && hv == v),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub name: String,
    /// Where it was defined (file, line, document), for messages.
    pub origin: String,
    pub action: Action,
    pub on: Target,
    pub script: String,
    /// Given with a current sealer action, whose hooks run in the order of their names.
    pub by_name: bool,
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
const DOC_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];
const PLUGIN_FIELDS: [&str; 5] = ["type", "action", "on", "scope", "data"];
const CONFIG_FIELDS: [&str; 5] = ["path", "strategy", "data", "process", "appName"];

struct Doc {
    metadata_name: String,
    spec: serde_yaml::Value,
}

/// Where a document's errors point: the file, the document, and the lines it spans, so that a
/// field can be given its line.
struct Here<'a> {
    origin: &'a str,
    doc: usize,
    lines: &'a [(usize, &'a str)],
}

impl Here<'_> {
    /// `plugins/a.yaml line 7 (document 2)`: the line of `key` (a dotted path's last part) in
    /// this document, else of the document's start.
    fn at(&self, key: Option<&str>) -> String {
        let line = key
            .and_then(|k| {
                let last = k.rsplit('.').next().unwrap_or(k);
                self.lines.iter().find(|(_, l)| has_key(l, last))
            })
            .or_else(|| self.lines.iter().find(|(_, l)| !l.trim().is_empty()))
            .map(|(n, _)| *n);
        match line {
            Some(n) => format!("{} line {n} (document {})", self.origin, self.doc),
            None => format!("{} (document {})", self.origin, self.doc),
        }
    }
    fn field(&self, field: &str, msg: impl Into<String>) -> PluginError {
        PluginError::Field {
            origin: self.at(Some(field)),
            field: field.into(),
            msg: msg.into(),
        }
    }
}

/// The lines of each document of a YAML stream, numbered from 1, split at `---`.
pub(crate) fn document_lines(text: &str) -> Vec<Vec<(usize, &str)>> {
    let mut docs = vec![Vec::new()];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("---") && line[3..].trim().is_empty() {
            docs.push(Vec::new());
            continue;
        }
        if let Some(d) = docs.last_mut() {
            d.push((i + 1, line));
        }
    }
    // A leading `---` opens the first document rather than closing an empty one.
    if docs.len() > 1 && docs[0].iter().all(|(_, l)| is_blank(l)) {
        docs.remove(0);
    }
    docs
}

/// Whether `line` writes `key:` as a key, in block (`key: x`) or flow (`{a: 1, key: x}`) style.
pub(crate) fn has_key(line: &str, key: &str) -> bool {
    line.match_indices(key).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + key.len()..].trim_start_matches([' ', '"', '\'']);
        matches!(before, None | Some(' ' | '{' | ',' | '-' | '"' | '\'')) && after.starts_with(':')
    })
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// Refuses any key of `map` that is not in `known`: a misspelt field must not be dropped.
fn only_known(
    here: &Here,
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
                origin: here.at(Some(&name)),
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
        let all_lines = document_lines(text);
        for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v = serde_yaml::Value::deserialize(d).map_err(|source| PluginError::Yaml {
                origin: origin.into(),
                source,
            })?;
            let here = Here {
                origin,
                doc: i + 1,
                lines: all_lines.get(i).map(Vec::as_slice).unwrap_or(&[]),
            };
            let kind: &'static str = match v.get("kind").and_then(|k| k.as_str()) {
                Some("Plugin") => "Plugin",
                Some("Config") => "Config",
                _ => continue,
            };
            only_known(&here, kind, "", &v, &DOC_FIELDS)?;
            let metadata_name = match v.get("metadata") {
                None | Some(serde_yaml::Value::Null) => String::new(),
                Some(m) if m.is_mapping() => match m.get("name") {
                    None => String::new(),
                    Some(serde_yaml::Value::String(n)) => n.clone(),
                    Some(_) => {
                        return Err(here.field("metadata.name", "must be a string: name: my-hook"))
                    }
                },
                Some(_) => {
                    return Err(here.field(
                        "metadata",
                        "must be a map (name, labels, annotations): metadata: {name: my-hook}",
                    ))
                }
            };
            let spec = v.get("spec").cloned().unwrap_or(serde_yaml::Value::Null);
            if !(spec.is_mapping() || spec.is_null()) {
                return Err(here.field("spec", "must be a map of the document's fields"));
            }
            let doc = Doc {
                metadata_name,
                spec,
            };
            match kind {
                "Plugin" => {
                    only_known(&here, kind, "spec.", &doc.spec, &PLUGIN_FIELDS)?;
                    plugins(&here, doc, &mut out)?;
                }
                _ => {
                    only_known(&here, kind, "spec.", &doc.spec, &CONFIG_FIELDS)?;
                    if doc.spec.get("process").is_some() {
                        out.warnings.push(format!(
                            "{}: spec.process is not acted on by bale: spec.data is written \
                             as given",
                            here.at(Some("process"))
                        ));
                    }
                    if doc.spec.get("appName").is_some() {
                        out.warnings.push(format!(
                            "{}: spec.appName is not acted on by bale: spec.path names the \
                             file from the top of the bundle's tree",
                            here.at(Some("appName"))
                        ));
                    }
                    out.configs.push(config(&here, doc)?);
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

    /// The hooks of a hook point in the order they run: current sealer runs its hooks sorted by
    /// name, old sealer (and bale) in the order written; a point that mixes both keeps the
    /// written order.
    pub fn hooks(&self, action: Action) -> Vec<&Plugin> {
        let mut v: Vec<&Plugin> = self.plugins.iter().filter(|p| p.action == action).collect();
        if v.iter().all(|p| p.by_name) {
            v.sort_by(|a, b| a.name.cmp(&b.name));
        }
        v
    }
}

fn text_field(here: &Here, spec: &serde_yaml::Value, key: &str) -> Result<String, PluginError> {
    let field = format!("spec.{key}");
    match spec.get(key) {
        Some(serde_yaml::Value::String(s)) => Ok(s.clone()),
        Some(serde_yaml::Value::Null) | None => Err(PluginError::Field {
            origin: here.at(None),
            field,
            msg: format!("missing; add `{key}:` under spec"),
        }),
        Some(_) => Err(here.field(
            &field,
            "must be a string (quote it, or use `|` for a block)",
        )),
    }
}

/// The hooks of one Plugin document: one per action of `spec.action` (sealer joins several
/// with `|`); an action bale has no moment for is a warning.
fn plugins(here: &Here, doc: Doc, out: &mut Documents) -> Result<(), PluginError> {
    let kind = doc
        .spec
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("SHELL");
    if !kind.eq_ignore_ascii_case("shell") {
        let fix = match kind.to_ascii_uppercase().as_str() {
            "LABEL" | "TAINT" => {
                "give the host's labels and taints in the Clusterfile (spec.hosts[].labels, \
                 spec.hosts[].taints), which bale applies to the Node"
            }
            "HOSTNAME" => "set the host names with a SHELL hook at pre-init-host",
            _ => "write it as a SHELL hook (type: SHELL, data: the script)",
        };
        return Err(here.field(
            "spec.type",
            format!("{kind:?} is not supported: bale runs SHELL hooks; {fix}"),
        ));
    }
    let action_text = text_field(here, &doc.spec, "action")?;
    let script = text_field(here, &doc.spec, "data")?;
    let has = |k: &str| !matches!(doc.spec.get(k), None | Some(serde_yaml::Value::Null));
    if has("on") && has("scope") {
        return Err(here.field(
            "spec.scope",
            "spec.on and spec.scope both say where the hook runs; keep one",
        ));
    }
    let name = if doc.metadata_name.is_empty() {
        "(no name)".to_string()
    } else {
        doc.metadata_name.clone()
    };
    for part in action_text
        .split('|')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (action, placement) = match meaning(part) {
            Some(Meaning::At(a, p)) => (a, p),
            Some(Meaning::NoMoment(why)) => {
                out.warnings.push(format!(
                    "{}: spec.action {part:?} of hook {name:?} has no moment in bale ({why}); \
                     the hook does not run",
                    here.at(Some("action"))
                ));
                continue;
            }
            None => {
                return Err(here.field(
                    "spec.action",
                    format!(
                        "{part:?} is not a hook point (use one of {}; join several with |)",
                        action_names()
                    ),
                ))
            }
        };
        let on = if has("on") {
            on_field(here, &doc.spec)?
        } else {
            match placement {
                Placement::FirstMaster => {
                    if has("scope") {
                        out.warnings.push(format!(
                            "{}: spec.scope of hook {name:?} is not used: sealer runs a \
                             {part} hook on the first master only, and so does bale",
                            here.at(Some("scope"))
                        ));
                    }
                    Target::FirstMaster
                }
                Placement::Scope => {
                    let t = scope(here, &doc.spec)?;
                    if t == Target::Roles(Vec::new()) {
                        out.warnings.push(format!(
                            "{}: hook {name:?} ({part}) has no spec.scope, so it runs on no \
                             host, as in sealer; add scope: master|node to run it everywhere",
                            here.at(Some("action"))
                        ));
                    }
                    t
                }
                Placement::On if has("scope") => scope(here, &doc.spec)?,
                Placement::On => Target::All,
            }
        };
        if out
            .plugins
            .iter()
            .any(|p| p.action == action && p.script == script && p.on == on)
        {
            // `pre-install|Originally` and the like land on one hook point: run it once.
            continue;
        }
        out.plugins.push(Plugin {
            name: doc.metadata_name.clone(),
            origin: here.at(Some("action")),
            action,
            on,
            script: script.clone(),
            by_name: placement != Placement::On,
        });
    }
    Ok(())
}

/// Old sealer's `on`: a role, or addresses (a list, or comma-separated).
fn on_field(here: &Here, spec: &serde_yaml::Value) -> Result<Target, PluginError> {
    let on_error = |value: &str| {
        here.field(
            "spec.on",
            format!(
                "{value:?} is neither a role nor addresses nor a label: use all, master, node, \
                 10.0.0.5,10.0.0.6 (or a range 10.0.0.5-10.0.0.9), or key=value of the hosts' \
                 labels"
            ),
        )
    };
    match spec.get("on") {
        Some(serde_yaml::Value::String(s)) => target(s).map_err(|_| on_error(s)),
        Some(serde_yaml::Value::Sequence(items)) => {
            let joined: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
            if joined.len() != items.len() {
                return Err(here.field("spec.on", "list items must be strings"));
            }
            let joined = joined.join(",");
            target(&joined).map_err(|_| on_error(&joined))
        }
        _ => Err(here.field("spec.on", "a role or a list of addresses")),
    }
}

/// sealer's `scope`: role names joined by `|` (`master`, `node`, `master|node`, or any role
/// the Clusterfile gives hosts). A hook meant for workers must not run on the masters.
fn scope(here: &Here, spec: &serde_yaml::Value) -> Result<Target, PluginError> {
    let s = match spec.get("scope") {
        None | Some(serde_yaml::Value::Null) => return Ok(Target::Roles(Vec::new())),
        Some(serde_yaml::Value::String(s)) => s,
        Some(_) => {
            return Err(here.field(
                "spec.scope",
                "not a string: use role names joined by |, e.g. master|node",
            ))
        }
    };
    let mut roles: Vec<String> = Vec::new();
    for part in s.split('|').map(str::trim).filter(|p| !p.is_empty()) {
        let ok = part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(here.field(
                "spec.scope",
                format!("{part:?} is not a role name: use master, node or master|node"),
            ));
        }
        if !roles.iter().any(|r| r == part) {
            roles.push(part.to_string());
        }
    }
    Ok(Target::Roles(roles))
}

fn target(s: &str) -> Result<Target, crate::hosts::HostError> {
    let s = s.trim();
    let s = s.strip_prefix("role=").unwrap_or(s);
    // Old sealer's label selector for the role: `node-role.kubernetes.io/master=`.
    let s = match s.strip_prefix("node-role.kubernetes.io/") {
        Some(role) => role.trim_end_matches('='),
        None => s,
    };
    match s {
        "" | "all" | "*" => Ok(Target::All),
        "master" | "masters" => Ok(Target::Role(Role::Master)),
        "node" | "nodes" | "worker" | "workers" => Ok(Target::Role(Role::Node)),
        // Old sealer's label selector: the hosts whose Clusterfile labels have this pair.
        selector if selector.contains('=') && !selector.contains(',') => {
            let (k, v) = selector.split_once('=').unwrap_or((selector, ""));
            if crate::marks::check_key(k).is_ok() && crate::marks::check_value(v).is_ok() {
                Ok(Target::Label(k.to_string(), v.to_string()))
            } else {
                crate::hosts::parse_addrs("spec.on", selector).map(Target::Addrs)
            }
        }
        list => crate::hosts::parse_addrs("spec.on", list).map(Target::Addrs),
    }
}

fn config(here: &Here, doc: Doc) -> Result<Config, PluginError> {
    let raw_path = text_field(here, &doc.spec, "path")?;
    let path = raw_path.trim_start_matches('/').to_string();
    if path.is_empty()
        || path
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(here.field(
            "spec.path",
            format!("{raw_path:?}: give a file of the bundle's tree, like etc/app/config.yaml"),
        ));
    }
    // sealer's default is overwrite: the file becomes spec.data.
    let strategy = match doc.spec.get("strategy").and_then(|s| s.as_str()) {
        None | Some("") | Some("overwrite") => Strategy::Overwrite,
        Some("merge") => Strategy::Merge,
        Some(other) => {
            return Err(here.field(
                "spec.strategy",
                format!("{other:?}: use merge or overwrite"),
            ))
        }
    };
    let data = text_field(here, &doc.spec, "data")?;
    Ok(Config {
        name: doc.metadata_name,
        origin: here.at(Some("path")),
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

    fn host(role: Role, first_master: bool, roles: &[String]) -> HostFacts<'_> {
        HostFacts {
            role,
            addr: Some("10.0.0.9".parse().unwrap()),
            first_master,
            roles,
            labels: &[],
        }
    }

    #[test]
    fn reads_plugins_and_configs_and_skips_other_kinds() {
        let d = Documents::parse(DOCS, "Clusterfile").unwrap();
        assert_eq!(d.plugins.len(), 2);
        assert_eq!(d.plugins[0].action, Action::PostInstall);
        assert_eq!(d.plugins[0].on, Target::Role(Role::Node));
        assert_eq!(d.plugins[0].origin, "Clusterfile line 11 (document 2)");
        assert_eq!(d.plugins[1].action, Action::PreInit);
        let at = |a: &str| HostFacts {
            addr: Some(a.parse().unwrap()),
            ..host(Role::Master, false, &[])
        };
        assert!(d.plugins[1].on.matches(&at("10.0.0.6")));
        assert!(!d.plugins[1].on.matches(&at("10.0.0.7")));
        assert_eq!(d.configs[0].path, "etc/app/config.yaml");
        // sealer's default strategy
        assert_eq!(d.configs[0].strategy, Strategy::Overwrite);
        assert_eq!(d.hooks(Action::PreInit).len(), 1);
        // Current sealer's hooks run by name; old ones as written.
        let d = Documents::parse(
            "kind: Plugin\nmetadata: {name: b}\nspec: {action: pre-init-host, scope: node, data: b}\n\
             ---\nkind: Plugin\nmetadata: {name: a}\nspec: {action: pre-init-host, scope: node, data: a}\n\
             ---\nkind: Plugin\nmetadata: {name: d}\nspec: {action: PostInit, data: d}\n\
             ---\nkind: Plugin\nmetadata: {name: c}\nspec: {action: PostInit, data: c}\n",
            "p",
        )
        .unwrap();
        let names = |a| {
            d.hooks(a)
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Action::PreInstall), ["a", "b"]);
        assert_eq!(names(Action::PostInit), ["d", "c"]);
    }

    /// Issue 15: every action sealer has, current and old, lands on a bale hook point with
    /// sealer's hosts, or is a warning when bale has no moment for it.
    #[test]
    fn every_sealer_action_has_its_meaning() {
        let one = |action: &str, scope: &str| {
            Documents::parse(
                &format!("kind: Plugin\nmetadata: {{name: h}}\nspec:\n  action: {action}\n{scope}  data: x\n"),
                "p.yaml",
            )
            .unwrap()
        };
        let scoped = "  scope: node\n";
        for (action, point, target) in [
            ("pre-install", Action::PreInstall, Target::FirstMaster),
            (
                "pre-init-host",
                Action::PreInstall,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "post-init-host",
                Action::PreApps,
                Target::Roles(vec!["node".into()]),
            ),
            ("post-install", Action::PreApps, Target::FirstMaster),
            ("pre-uninstall", Action::PreClean, Target::FirstMaster),
            ("post-uninstall", Action::PostClean, Target::FirstMaster),
            (
                "pre-clean-host",
                Action::PreClean,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "post-clean-host",
                Action::PostClean,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "Originally",
                Action::PreInstall,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "PreInstall",
                Action::PreInstall,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "PreInit",
                Action::PreInit,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "PostInit",
                Action::PostInit,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "PreGuest",
                Action::PreApps,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "PostInstall",
                Action::PostInstall,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "PreClean",
                Action::PreClean,
                Target::Roles(vec!["node".into()]),
            ),
            (
                "PostClean",
                Action::PostClean,
                Target::Roles(vec!["node".into()]),
            ),
        ] {
            let d = one(action, scoped);
            assert_eq!(d.plugins.len(), 1, "{action}");
            assert_eq!(
                (d.plugins[0].action, &d.plugins[0].on),
                (point, &target),
                "{action}"
            );
        }
        for action in [
            "pre-scaleup",
            "post-scaleup",
            "upgrade",
            "upgrade-host",
            "rollback",
            "PreJoin",
            "PostJoin",
        ] {
            let d = one(action, scoped);
            assert!(d.plugins.is_empty(), "{action}");
            assert!(
                d.warnings[0].contains(&format!(
                    "spec.action {action:?} of hook \"h\" has no moment in bale"
                )) && d.warnings[0].starts_with("p.yaml line 4 (document 1)"),
                "{:?}",
                d.warnings
            );
        }
        // A cluster hook runs on the first master whatever its scope says, and says so.
        let d = one("post-install", scoped);
        assert!(
            d.warnings[0].contains("spec.scope of hook \"h\" is not used"),
            "{:?}",
            d.warnings
        );
        // A host hook without a scope runs nowhere, as in sealer, and says so.
        let d = one("pre-init-host", "");
        assert_eq!(d.plugins[0].on, Target::Roles(vec![]));
        assert!(!d.plugins[0].on.matches(&host(Role::Master, true, &[])));
        assert!(
            d.warnings[0].contains("runs on no host"),
            "{:?}",
            d.warnings
        );
        // Old actions without on or scope run everywhere.
        assert_eq!(one("PreInit", "").plugins[0].on, Target::All);
        // Several actions at once.
        let d = one("\"pre-init-host|post-clean-host|upgrade-host\"", scoped);
        let points: Vec<Action> = d.plugins.iter().map(|p| p.action).collect();
        assert_eq!(points, [Action::PreInstall, Action::PostClean]);
        assert_eq!(d.warnings.len(), 1);
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
            e.starts_with("plugins/a.yaml line 2 (document 1): spec.action: \"Sometime\""),
            "{e}"
        );
        assert!(e.contains("pre-init-host") && e.contains("PreGuest"), "{e}");
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
        let e = Documents::parse(
            "kind: Plugin\nspec:\n  type: LABEL\n  action: PreGuest\n  data: a=b\n",
            "f",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("f line 3 (document 1): spec.type") && e.contains("spec.hosts[].labels"),
            "{e}"
        );
    }

    #[test]
    fn merge_is_deep_and_overwrite_replaces() {
        let d = Documents::parse(DOCS, "c").unwrap();
        let mut merge = d.configs[0].clone();
        merge.strategy = Strategy::Merge;
        let out = apply_config(&merge, Some("replicas: 3\nimage: nginx\nextra: {b: 2}\n")).unwrap();
        let v: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(v["replicas"], serde_yaml::Value::from(5));
        assert_eq!(v["image"], serde_yaml::Value::from("nginx"));
        assert_eq!(v["extra"]["a"], serde_yaml::Value::from(1));
        assert_eq!(v["extra"]["b"], serde_yaml::Value::from(2));
        assert_eq!(
            apply_config(&d.configs[0], Some("anything")).unwrap(),
            d.configs[0].data.as_str()
        );
        let e = apply_config(&merge, Some("a: [unclosed")).unwrap_err();
        assert!(e.to_string().contains("overwrite"), "{e}");
        let d = Documents::parse(
            "kind: Config\nspec: {path: a.yaml, data: b, strategy: merge}\n",
            "c",
        )
        .unwrap();
        assert_eq!(d.configs[0].strategy, Strategy::Merge);
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
            e.contains("plugins/a.yaml line 2 (document 1)") && e.contains("spec.onn"),
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
             spec: {path: etc/a.yaml, data: b, process: value|toJson, strategy: overwrite}\n\
             status: {}\n",
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
    fn scope_is_honoured() {
        let doc = |scope: &str| {
            Documents::parse(
                &format!(
                    "kind: Plugin\nspec: {{action: post-init-host, scope: \"{scope}\", data: x}}\n"
                ),
                "p",
            )
        };
        let db = ["db".to_string()];
        let node = doc("node").unwrap().plugins[0].on.clone();
        assert!(node.matches(&host(Role::Node, false, &[])));
        assert!(!node.matches(&host(Role::Master, true, &[])));
        assert!(!node.matches(&host(Role::Master, false, &[])));
        let master = doc("master").unwrap().plugins[0].on.clone();
        assert!(master.matches(&host(Role::Master, false, &[])));
        assert!(!master.matches(&host(Role::Node, false, &[])));
        let both = doc("master|node").unwrap().plugins[0].on.clone();
        assert!(
            both.matches(&host(Role::Master, false, &[]))
                && both.matches(&host(Role::Node, false, &[]))
        );
        // A role of the Clusterfile other than master and node.
        let dbs = doc("db").unwrap().plugins[0].on.clone();
        assert!(dbs.matches(&host(Role::Node, false, &db)));
        assert!(!dbs.matches(&host(Role::Node, false, &[])));
        let e = doc("no de").unwrap_err().to_string();
        assert!(e.contains("spec.scope"), "{e}");
        let e = Documents::parse(
            "kind: Plugin\nspec: {action: PostInstall, scope: node, on: master, data: x}\n",
            "p",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("keep one"), "{e}");
        // Old sealer's role selector in `on`.
        let d = Documents::parse(
            "kind: Plugin\nspec: {action: PreInstall, on: \"node-role.kubernetes.io/master=\", data: x}\n",
            "p",
        )
        .unwrap();
        assert_eq!(d.plugins[0].on, Target::Role(Role::Master));
        // ... and its label selector, against the hosts' labels.
        let d = Documents::parse(
            "kind: Plugin\nspec: {action: PostInstall, on: \"sealer-test=true\", data: x}\n",
            "p",
        )
        .unwrap();
        let labels = [("sealer-test".to_string(), "true".to_string())];
        let mut h = host(Role::Node, false, &[]);
        assert!(!d.plugins[0].on.matches(&h));
        h.labels = &labels;
        assert!(d.plugins[0].on.matches(&h));
        let e = Documents::parse(
            "kind: Plugin\nspec: {action: PostInstall, on: \"no such thing\", data: x}\n",
            "p",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e.matches("spec.on").count(), 1, "{e}");
        assert!(e.contains("key=value"), "{e}");
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
