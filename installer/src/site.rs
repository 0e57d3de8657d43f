//! What an install knows about the site as a whole, read once on the admin host: the hosts and
//! their roles, the install-time environment, the hooks and overlays, and the apps to launch.
//! Each node gets its share as a [`NodeContext`] (`<data-dir>/node.json`).

use crate::clusterfile::AppChoice;
use crate::hosts::{Host, Role};
use crate::node::context::{NodeContext, DEFAULT_VIP, REGISTRY_PORT};
use crate::plugins::Documents;
use crate::remote::Script;
use bale_contract::manifest::{App, Command, InstallStep, Manifest};
use bale_payload::{Bundle, Kind};
use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;

/// What keeps the site from being worked out: the bundle's header or tree, or a document of
/// the bundle or the Clusterfile. Each message names the file, line or entry.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("the bundle's header")]
    Manifest(#[from] bale_contract::manifest::ManifestError),
    #[error("reading the bundle's entry table")]
    Entries(#[source] bale_payload::Error),
    #[error("{origin}: no app {app:?} in the bundle; its apps are {known}")]
    UnknownApp {
        origin: String,
        app: String,
        known: String,
    },
    #[error("{layer}, Kubefile line {line}: LAUNCH {app}: no APP of that name")]
    NoApp {
        layer: String,
        line: usize,
        app: String,
    },
    #[error("{origin}: spec.path {path}: the image registry cannot be overlaid")]
    OverlayOnRegistry { origin: String, path: String },
    #[error("{origin}: spec.path {path} is not a regular file in the bundle")]
    OverlayNotFile { origin: String, path: String },
    #[error("reading {path} from the bundle")]
    Read {
        path: String,
        #[source]
        source: bale_payload::Error,
    },
    #[error("reading {path} from the bundle (is it UTF-8 text?)")]
    NotText {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Document(#[from] crate::plugins::PluginError),
    #[error("{path}: a template of {size} bytes; templates are rendered whole, up to 4 MiB")]
    TemplateTooLarge { path: String, size: u64 },
    /// A `*.tmpl` file names a value nobody gives, or is malformed (file and line named).
    #[error(transparent)]
    Template(#[from] bale_contract::template::TemplateError),
    #[error(transparent)]
    Config(#[from] crate::plugins::ConfigError),
}

type Result<T, E = SiteError> = std::result::Result<T, E>;

/// Entries of the bundle tree that are not copied into `<data-dir>/rootfs` (served in place).
pub const NOT_EXTRACTED: &[&str] = &["registry"];

#[derive(Debug, Clone, Default)]
pub struct Site {
    /// Every host and its role, in the order given; empty for an install on this machine.
    pub hosts: Vec<(IpAddr, Role)>,
    /// Kubefile `ENV`, then Clusterfile `spec.env` over it.
    pub env: BTreeMap<String, String>,
    pub docs: Documents,
    pub apps: Vec<AppStep>,
    /// Top-level names of the bundle tree that go to `<data-dir>/rootfs`.
    pub tree_top: Vec<String>,
    /// Bytes of the files under `tree_top`: what the extraction writes.
    pub tree_bytes: u64,
    /// Files of the tree as the Config overlays leave them: (path, content), computed once
    /// here and written to every node after extraction.
    pub overlays: Vec<(String, String)>,
    pub vips: Vips,
    /// What the site's documents hold that bale accepts and does not act on, one message each.
    pub warnings: Vec<String>,
    /// The bundle carries kubeadm, kubelet and kubectl: the install brings up Kubernetes.
    pub kubernetes: bool,
    /// The bundle brings its own pod network (a `cni/` manifest directory), so bale sets up
    /// none of its own.
    pub bundles_cni: bool,
}

/// The virtual IPs that the workers' guardians serve (`install --vip`, `--registry-vip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vips {
    /// The API servers' VIP, at port 6443.
    pub apiserver: IpAddr,
    /// The masters' registries behind one VIP (at the registry port), when asked for.
    pub registry: Option<IpAddr>,
}

impl Default for Vips {
    fn default() -> Self {
        Vips {
            apiserver: IpAddr::V4(DEFAULT_VIP),
            registry: None,
        }
    }
}

/// One install-time step (Kubefile `CMD`, or `LAUNCH` of an `APP`), run on the first master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStep {
    /// Journal key: stable across runs of the same bundle.
    pub key: String,
    /// Where it comes from, for messages: `appliance 0.1.0, Kubefile line 12`.
    pub origin: String,
    /// A shell command, run with `sh -c` in `<data-dir>/rootfs`.
    pub script: String,
}

/// The default launch of an app's source, sealer style: a chart is installed with helm, a
/// script is run with bash (sealer's shell for app scripts), YAML is applied with kubectl.
fn launch_script(name: &str, source: &str, is_chart: bool) -> Script {
    let script = if is_chart {
        Script::new("helm install {name} {src}").value("name", name)
    } else if source.ends_with(".sh") {
        Script::new("bash {src}")
    } else {
        Script::new("kubectl apply -f {src}")
    };
    script.value("src", source)
}

/// An app's step: its `APPENV` exported, and its `APPCMDS` run in the app's directory (as
/// sealer does), then `step`.
fn app_script(meta: &App, step: Script, custom: bool) -> String {
    let mut script = Script::default();
    for (k, v) in &meta.env {
        script = script.export(k, v);
    }
    if let Some(dir) = meta.dir.as_deref().filter(|_| custom) {
        script = script.then("cd {dir} && ").value("dir", dir);
    }
    let mut text = script.text();
    text.push_str(&step.text());
    text
}

/// Sealos writes the install-time variables of a CMD as `$(NAME)`, which it replaces with the
/// value; a shell would run a program NAME instead. Each `$(NAME)` whose NAME is one of `env`
/// becomes `${NAME}` (the variables are exported to the step); any other `$(…)` is the shell's.
fn sealos_variables(script: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(at) = rest.find("$(") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        match after.find(')').map(|end| (&after[..end], end)) {
            Some((name, end)) if env.contains_key(name) => {
                out.push_str("${");
                out.push_str(name);
                out.push('}');
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str("$(");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// How an app is launched: the Clusterfile's commands for it, else its `APPCMDS` (run in its
/// directory, with its `APPENV` and the install environment), else the default launch of each
/// of its sources.
fn app_launch(
    app: &str,
    meta: &App,
    choice: &AppChoice,
    charts: &dyn Fn(&str) -> bool,
    env: &BTreeMap<String, String>,
) -> Vec<String> {
    if let Some((_, cmds)) = choice.app_cmds.get(app) {
        return cmds.clone();
    }
    if meta.cmds.is_empty() {
        meta.sources
            .iter()
            .map(|s| app_script(meta, launch_script(app, s, charts(s)), false))
            .collect()
    } else {
        let mut env = env.clone();
        env.extend(meta.env.clone());
        meta.cmds
            .iter()
            .map(|c| {
                let c = sealos_variables(c, &env);
                app_script(meta, Script::default().then_user_script(&c), true)
            })
            .collect()
    }
}

fn steps_of(
    layer: &str,
    steps: &[InstallStep],
    apps: &BTreeMap<String, App>,
    choice: &AppChoice,
    charts: &dyn Fn(&str) -> bool,
    env: &BTreeMap<String, String>,
    out: &mut Vec<AppStep>,
) -> Result<()> {
    for s in steps {
        match s {
            InstallStep::Cmd { line, command } => out.push(AppStep {
                key: format!("app:{}:{line}", out.len() + 1),
                origin: format!("{layer}, Kubefile line {line}"),
                script: match command {
                    Command::Shell(s) => sealos_variables(s, env),
                    Command::Exec(w) => Script::argv(w).text(),
                },
            }),
            InstallStep::Launch { line, app } => {
                let meta = apps.get(app).ok_or_else(|| SiteError::NoApp {
                    layer: layer.to_string(),
                    line: *line,
                    app: app.clone(),
                })?;
                for script in app_launch(app, meta, choice, charts, env) {
                    out.push(AppStep {
                        key: format!("app:{}:{line}", out.len() + 1),
                        origin: format!("{layer}, Kubefile line {line} (app {app})"),
                        script,
                    });
                }
            }
        }
    }
    Ok(())
}

/// The steps the Clusterfile chooses, sealer's way: its commands replace every step; else
/// its app names launch those apps, in that order, and nothing else. What no longer runs is
/// said in a warning.
fn chosen_steps(
    choice: &AppChoice,
    image_steps: Vec<AppStep>,
    apps: &BTreeMap<String, App>,
    charts: &dyn Fn(&str) -> bool,
    env: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<Vec<AppStep>> {
    let dropped = |by: &str, steps: &[AppStep], warnings: &mut Vec<String>| {
        if !steps.is_empty() {
            let what: Vec<String> = steps.iter().map(|s| s.origin.clone()).collect();
            warnings.push(format!(
                "{by} chooses the install steps, as in sealer: the image's own do not run ({})",
                what.join("; ")
            ));
        }
    };
    if let Some((origin, cmds)) = &choice.cmds {
        dropped(origin, &image_steps, warnings);
        return Ok(cmds
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.trim().is_empty())
            .map(|(i, c)| AppStep {
                key: format!("app:cmd:{}", i + 1),
                origin: format!("{origin}[{i}]"),
                script: c.clone(),
            })
            .collect());
    }
    let Some((origin, names)) = &choice.app_names else {
        return Ok(image_steps);
    };
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate().filter(|(_, n)| !n.is_empty()) {
        let meta = apps.get(name).ok_or_else(|| SiteError::UnknownApp {
            origin: format!("{origin}[{i}]"),
            app: name.clone(),
            known: if apps.is_empty() {
                "none".to_string()
            } else {
                apps.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })?;
        for script in app_launch(name, meta, choice, charts, env) {
            out.push(AppStep {
                key: format!("app:{name}:{}", out.len() + 1),
                origin: format!("{origin}[{i}] (app {name})"),
                script,
            });
        }
    }
    let kept: Vec<&str> = out.iter().map(|s| s.script.as_str()).collect();
    let gone: Vec<AppStep> = image_steps
        .into_iter()
        .filter(|s| !kept.contains(&s.script.as_str()))
        .collect();
    dropped(origin, &gone, warnings);
    Ok(out)
}

/// The largest `*.tmpl` file rendered at install: templates are configuration, read whole.
const MAX_TEMPLATE_LEN: u64 = 4 << 20;

/// Every `*.tmpl` file of the tree rendered with the install-time environment, as sealer does
/// when it installs: `etc/a.conf.tmpl` gives `etc/a.conf`. A file in an app's directory also
/// sees that app's `APPENV`. A value the template names and nobody gives stops the install
/// with the file and line.
fn render_templates(
    bundle: &Bundle,
    entries: &[bale_payload::Entry],
    env: &BTreeMap<String, String>,
    apps: &BTreeMap<String, App>,
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in entries {
        let Some(target) = e.path.strip_suffix(".tmpl") else {
            continue;
        };
        let top = e.path.split('/').next().unwrap_or("");
        if e.kind != Kind::File
            || target.is_empty()
            || target.ends_with('/')
            || NOT_EXTRACTED.contains(&top)
        {
            continue;
        }
        if e.size > MAX_TEMPLATE_LEN {
            return Err(SiteError::TemplateTooLarge {
                path: e.path.clone(),
                size: e.size,
            });
        }
        let mut vars = env.clone();
        for app in apps.values() {
            let Some(dir) = &app.dir else { continue };
            if e.path
                .starts_with(&format!("{}/", dir.trim_end_matches('/')))
            {
                vars.extend(app.env.clone());
            }
        }
        let text = read_text(bundle, e)?;
        let rendered = bale_contract::template::render_template(&e.path, &text, &vars)?;
        out.push((target.to_string(), rendered));
    }
    Ok(out)
}

/// Applies every Config document, in order, to the file it names, over the rendered
/// templates (`rendered`: a Config can change a rendered file).
fn overlays(
    bundle: &Bundle,
    entries: &[bale_payload::Entry],
    docs: &Documents,
    rendered: Vec<(String, String)>,
) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = rendered;
    for cfg in &docs.configs {
        if cfg.path.split('/').next() == Some("registry") {
            return Err(SiteError::OverlayOnRegistry {
                origin: cfg.origin.clone(),
                path: cfg.path.clone(),
            });
        }
        let current = match out.iter().position(|(p, _)| *p == cfg.path) {
            Some(i) => Some(out.remove(i).1),
            None => match entries.iter().find(|e| e.path == cfg.path) {
                Some(e) if e.kind == Kind::File => Some(read_text(bundle, e)?),
                Some(_) => {
                    return Err(SiteError::OverlayNotFile {
                        origin: cfg.origin.clone(),
                        path: cfg.path.clone(),
                    })
                }
                None => None,
            },
        };
        let text = crate::plugins::apply_config(cfg, current.as_deref())?;
        out.push((cfg.path.clone(), text));
    }
    Ok(out)
}

fn read_text(bundle: &Bundle, e: &bale_payload::Entry) -> Result<String> {
    let mut text = String::new();
    bundle
        .open_entry(e)
        .map_err(|source| SiteError::Read {
            path: e.path.clone(),
            source,
        })?
        .read_to_string(&mut text)
        .map_err(|source| SiteError::NotText {
            path: e.path.clone(),
            source,
        })?;
    Ok(text)
}

impl Site {
    /// Reads what the bundle says (environment, install steps of every layer, hooks and
    /// overlays under `plugins/`), then the Clusterfile's documents and environment over it.
    pub fn load(
        bundle: &Bundle,
        hosts: &[Host],
        clusterfile: Option<(&str, &str)>,
        cluster_env: &[(String, String)],
        choice: &AppChoice,
    ) -> Result<Site> {
        let manifest = Manifest::from_metadata(&bundle.header.metadata)?;
        let mut site = Site {
            hosts: hosts.iter().map(|h| (h.addr, h.role)).collect(),
            ..Site::default()
        };
        site.env = manifest.env();
        site.env.extend(cluster_env.iter().cloned());
        let apps = &manifest.apps;
        let entries = bundle.entries().map_err(SiteError::Entries)?;
        let charts = |src: &str| {
            let want = format!("{}/Chart.yaml", src.trim_end_matches('/'));
            entries.iter().any(|e| e.path == want)
        };
        // Every base layer's steps, then the bundle's own, in that order.
        let layers = manifest.layers.iter().filter_map(|l| {
            let name = format!("base {} {}", l.name, l.version);
            l.install_steps.as_ref().map(|steps| (name, steps))
        });
        let own = manifest.install_steps.as_ref().map(|steps| {
            let name = format!("{} {}", bundle.header.name, bundle.header.version);
            (name, steps)
        });
        for (name, steps) in layers.chain(own) {
            steps_of(
                &name,
                steps,
                apps,
                choice,
                &charts,
                &site.env,
                &mut site.apps,
            )?;
        }
        let mut choice_warnings = Vec::new();
        site.apps = chosen_steps(
            choice,
            std::mem::take(&mut site.apps),
            apps,
            &charts,
            &site.env,
            &mut choice_warnings,
        )?;

        let mut tops: Vec<String> = Vec::new();
        for e in entries.iter() {
            let top = e.path.split('/').next().unwrap_or("");
            if top.is_empty() || NOT_EXTRACTED.contains(&top) {
                continue;
            }
            if e.kind == Kind::File {
                site.tree_bytes += e.size;
            }
            if !tops.iter().any(|t| t == top) {
                tops.push(top.to_string());
            }
        }
        site.tree_top = tops;
        site.kubernetes = crate::node::kubernetes::bundle_has_kubernetes(&entries);
        site.bundles_cni = entries.iter().any(|e| {
            e.path.starts_with("cni/") && !e.path.starts_with("cni/bin/") && e.kind == Kind::File
        });

        for e in entries.iter() {
            let in_plugins = e.path.starts_with("plugins/")
                && (e.path.ends_with(".yaml") || e.path.ends_with(".yml"));
            if !in_plugins || e.kind != Kind::File {
                continue;
            }
            let text = read_text(bundle, e)?;
            site.docs.extend(Documents::parse(
                &text,
                &format!("{} (in the bundle)", e.path),
            )?);
        }
        if let Some((origin, text)) = clusterfile {
            site.docs.extend(Documents::parse(text, origin)?);
        }
        let rendered = render_templates(bundle, &entries, &site.env, apps)?;
        site.overlays = overlays(bundle, &entries, &site.docs, rendered)?;
        site.warnings = site.docs.warnings.clone();
        site.warnings.extend(choice_warnings);
        Ok(site)
    }

    pub fn masters(&self) -> Vec<String> {
        self.with_role(Role::Master)
    }

    pub fn workers(&self) -> Vec<String> {
        self.with_role(Role::Node)
    }

    fn with_role(&self, role: Role) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|(_, r)| *r == role)
            .map(|(a, _)| a.to_string())
            .collect()
    }

    /// The node's context; `addr` None is an install on this machine alone.
    pub fn node_context(
        &self,
        data_dir: &str,
        digest: &str,
        addr: Option<IpAddr>,
        role: Role,
    ) -> NodeContext {
        let (node_ip, masters) = match addr {
            Some(a) => (a.to_string(), self.masters()),
            None => ("127.0.0.1".to_string(), vec!["127.0.0.1".to_string()]),
        };
        NodeContext {
            data_dir: data_dir.into(),
            bundle_digest: digest.into(),
            first_master: masters.first() == Some(&node_ip),
            role: role.to_string(),
            node_ip,
            masters,
            nodes: self.workers(),
            registry_port: REGISTRY_PORT,
            vip: self.vips.apiserver.to_string(),
            registry_vip: self.vips.registry.map(|v| v.to_string()),
            env: self.env.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle of `files` with the manifest `metadata` (ENV, apps), in `dir`.
    fn bundle_with(
        dir: &std::path::Path,
        metadata: serde_json::Value,
        files: &[(&str, &str)],
    ) -> Bundle {
        use bale_payload::{BundleMeta, BundleWriter, WriteOptions};
        // The first pages of this (ELF) test program stand for the bale program.
        let stub = dir.join("stub");
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        std::fs::write(&stub, &exe[..4096]).unwrap();
        let path = dir.join("b.bale");
        let meta = BundleMeta {
            metadata: serde_json::from_value(metadata).unwrap(),
            ..Default::default()
        };
        let mut w = BundleWriter::create(&path, &stub, meta, WriteOptions::default()).unwrap();
        for (p, data) in files {
            w.add_bytes(p, 0o644, data.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        Bundle::open(&path).unwrap()
    }

    /// Sealer's meaning of `*.tmpl`: rendered at install with ENV and the Clusterfile's env
    /// over it (an app's files also with its APPENV), `a.b.tmpl` giving `a.b`; a Config can
    /// change the rendered file; a value nobody gives stops the install naming file and line.
    #[test]
    fn templates_are_rendered_with_the_install_environment() {
        let d = tempfile::tempdir().unwrap();
        let metadata = serde_json::json!({
            "env": {"APP_PORT": "8080", "SITE": "kubefile"},
            "apps": {"db": {"name": "db", "line": 4, "role": "app", "sources": [],
                            "dir": "application/apps/db", "env": {"replicas": "3"}}}
        });
        let b = bundle_with(
            d.path(),
            metadata.clone(),
            &[
                (
                    "etc/site.conf.tmpl",
                    "site={{ .SITE }}\nport=${APP_PORT}\nx=${X:-none}\n",
                ),
                (
                    "application/apps/db/db.yaml.tmpl",
                    "replicas: {{ .replicas }}\n",
                ),
                ("registry/index.json.tmpl", "{{ .Never }}"),
                ("etc/plain.conf", "left alone\n"),
            ],
        );
        let cf = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  hosts: []\n---\n\
                  apiVersion: sealer.io/v1\nkind: Config\nmetadata: {name: c}\nspec:\n  \
                  path: etc/site.conf\n  strategy: overwrite\n  data: |\n    site=config\n";
        let env = [("SITE".to_string(), "lab".to_string())];
        let site = Site::load(&b, &[], None, &env, &AppChoice::default()).unwrap();
        let files: BTreeMap<&str, &str> = site
            .overlays
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        assert_eq!(
            files,
            BTreeMap::from([
                ("application/apps/db/db.yaml", "replicas: 3\n"),
                ("etc/site.conf", "site=lab\nport=8080\nx=none\n"),
            ])
        );
        let site = Site::load(&b, &[], Some(("cf", cf)), &env, &AppChoice::default()).unwrap();
        let conf = site.overlays.iter().find(|(p, _)| p == "etc/site.conf");
        assert_eq!(conf.map(|(_, t)| t.as_str()), Some("site=config\n"));

        let d2 = tempfile::tempdir().unwrap();
        let b = bundle_with(
            d2.path(),
            metadata,
            &[("etc/k.yaml.tmpl", "a: 1\npodSubnet: {{ .PodCIDR }}\n")],
        );
        let e = Site::load(&b, &[], None, &[], &AppChoice::default()).unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("etc/k.yaml.tmpl:2") && e.contains("\"PodCIDR\""),
            "{e}"
        );
    }

    /// Issue 15: the Clusterfile's `spec.cmd` replaces every step; `spec.appNames` launches
    /// those apps only, in its order; an Application's launch cmds replace an app's own.
    #[test]
    fn the_clusterfile_chooses_which_steps_run() {
        let apps: BTreeMap<String, App> = serde_json::from_value(serde_json::json!({
            "web": {"name": "web", "line": 1, "role": "app", "sources": ["apps/web/"]},
            "db": {"name": "db", "line": 1, "role": "app", "sources": ["apps/db.sh"]}
        }))
        .unwrap();
        let steps: Vec<InstallStep> = serde_json::from_value(serde_json::json!([
            {"type": "cmd", "line": 3, "command": {"shell": "echo hi"}},
            {"type": "launch", "line": 5, "app": "web"},
            {"type": "launch", "line": 6, "app": "db"}
        ]))
        .unwrap();
        let charts = |s: &str| s == "apps/web/";
        let run = |choice: &AppChoice| {
            let mut image = Vec::new();
            let env = BTreeMap::new();
            steps_of("app 1.0", &steps, &apps, choice, &charts, &env, &mut image).unwrap();
            let mut w = Vec::new();
            chosen_steps(choice, image, &apps, &charts, &env, &mut w).map(|s| (s, w))
        };
        let scripts = |s: &[AppStep]| s.iter().map(|s| s.script.clone()).collect::<Vec<_>>();

        let (all, w) = run(&AppChoice::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert!(w.is_empty(), "{w:?}");

        let cmds = AppChoice {
            cmds: Some((
                "cf: spec.cmd".into(),
                vec!["kubectl apply -f a.yaml".into()],
            )),
            ..Default::default()
        };
        let (s, w) = run(&cmds).unwrap();
        assert_eq!(scripts(&s), ["kubectl apply -f a.yaml"]);
        assert_eq!(s[0].origin, "cf: spec.cmd[0]");
        assert!(
            w[0].contains("cf: spec.cmd") && w[0].contains("Kubefile line 3"),
            "{w:?}"
        );

        let names = AppChoice {
            app_names: Some(("cf: spec.appNames".into(), vec!["db".into(), "web".into()])),
            ..Default::default()
        };
        let (s, w) = run(&names).unwrap();
        assert_eq!(
            scripts(&s),
            ["bash 'apps/db.sh'", "helm install 'web' 'apps/web/'"]
        );
        assert!(
            w[0].contains("Kubefile line 3") && !w[0].contains("line 5"),
            "{w:?}"
        );

        let mut custom = names.clone();
        custom.app_cmds.insert(
            "db".into(),
            ("cf: document 2".into(), vec!["sh apps/db.sh --fast".into()]),
        );
        let (s, _) = run(&custom).unwrap();
        assert_eq!(s[0].script, "sh apps/db.sh --fast");

        let bad = AppChoice {
            app_names: Some(("cf: spec.appNames".into(), vec!["nope".into()])),
            ..Default::default()
        };
        let e = run(&bad).unwrap_err().to_string();
        assert!(
            e.contains("cf: spec.appNames[0]") && e.contains("\"nope\"") && e.contains("db, web"),
            "{e}"
        );
    }

    #[test]
    fn cmd_and_launch_steps_become_scripts_in_order() {
        // As the bundle header carries them.
        let apps: BTreeMap<String, App> = serde_json::from_value(serde_json::json!({
            "web": {"name": "web", "line": 1, "role": "app", "sources": ["apps/web/"]},
            "db": {"name": "db", "line": 1, "role": "app", "sources": ["apps/db.sh"]},
            "custom": {"name": "custom", "line": 2, "role": "app", "sources": ["x"],
                       "cmds": ["echo one", "echo two"]}
        }))
        .unwrap();
        let steps: Vec<InstallStep> = serde_json::from_value(serde_json::json!([
            {"type": "cmd", "line": 3, "command": {"shell": "echo hi"}},
            {"type": "cmd", "line": 4, "command": {"exec": ["printf", "%s", "a b"]}},
            {"type": "launch", "line": 5, "app": "web"},
            {"type": "launch", "line": 6, "app": "db"},
            {"type": "launch", "line": 7, "app": "custom"}
        ]))
        .unwrap();
        let mut out = Vec::new();
        let charts = |s: &str| s == "apps/web/";
        steps_of(
            "app 1.0",
            &steps,
            &apps,
            &AppChoice::default(),
            &charts,
            &BTreeMap::new(),
            &mut out,
        )
        .unwrap();
        let scripts: Vec<&str> = out.iter().map(|s| s.script.as_str()).collect();
        assert_eq!(
            scripts,
            [
                "echo hi",
                "'printf' '%s' 'a b'",
                "helm install 'web' 'apps/web/'",
                "bash 'apps/db.sh'",
                "echo one",
                "echo two"
            ]
        );
        assert_eq!(out[0].origin, "app 1.0, Kubefile line 3");
        let keys: std::collections::BTreeSet<_> = out.iter().map(|s| &s.key).collect();
        assert_eq!(keys.len(), out.len(), "journal keys are unique");

        let bad = [InstallStep::Launch {
            line: 9,
            app: "nope".into(),
        }];
        let e = steps_of(
            "app 1.0",
            &bad,
            &apps,
            &AppChoice::default(),
            &charts,
            &BTreeMap::new(),
            &mut Vec::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 9: LAUNCH nope"), "{e}");
    }

    /// Sealer runs an app's APPCMDS in its directory and gives its APPENV to its commands.
    #[test]
    fn app_commands_run_in_the_app_directory_with_the_app_env() {
        let apps: BTreeMap<String, App> = serde_json::from_value(serde_json::json!({
            "m": {"name": "m", "line": 2, "role": "app", "sources": [],
                  "cmds": ["kubectl apply -f app.yaml"], "dir": "application/apps/m",
                  "env": {"replicas": "2"}},
            "y": {"name": "y", "line": 3, "role": "app",
                  "sources": ["application/apps/y/a.yaml"], "dir": "application/apps/y",
                  "env": {"ns": "it's"}}
        }))
        .unwrap();
        let steps: Vec<InstallStep> = serde_json::from_value(serde_json::json!([
            {"type": "launch", "line": 4, "app": "m"},
            {"type": "launch", "line": 4, "app": "y"}
        ]))
        .unwrap();
        let mut out = Vec::new();
        steps_of(
            "app 1.0",
            &steps,
            &apps,
            &AppChoice::default(),
            &|_: &str| false,
            &BTreeMap::new(),
            &mut out,
        )
        .unwrap();
        let scripts: Vec<&str> = out.iter().map(|s| s.script.as_str()).collect();
        assert_eq!(
            scripts,
            [
                "export replicas='2'\ncd 'application/apps/m' && kubectl apply -f app.yaml",
                "export ns='it'\\''s'\nkubectl apply -f 'application/apps/y/a.yaml'",
            ]
        );
    }

    /// Sealos' `$(NAME)` is the install-time variable NAME; other `$(…)` stay the shell's.
    #[test]
    fn sealos_variables_in_commands_are_the_install_environment() {
        let steps: Vec<InstallStep> = serde_json::from_value(serde_json::json!([
            {"type": "cmd", "line": 10, "command": {"shell":
                "helm upgrade -i $(NAME) $(CHARTS) -n $(NAMESPACE) $(HELM_OPTS) --set h=$(hostname)"}}
        ]))
        .unwrap();
        let env: BTreeMap<String, String> = ["NAME", "CHARTS", "NAMESPACE", "HELM_OPTS"]
            .into_iter()
            .map(|k| (k.to_string(), "v".to_string()))
            .collect();
        let mut out = Vec::new();
        steps_of(
            "app 1.0",
            &steps,
            &BTreeMap::new(),
            &AppChoice::default(),
            &|_: &str| false,
            &env,
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out[0].script,
            "helm upgrade -i ${NAME} ${CHARTS} -n ${NAMESPACE} ${HELM_OPTS} --set h=$(hostname)"
        );
    }

    #[test]
    fn node_context_names_the_first_master() {
        let site = Site {
            hosts: vec![
                ("10.0.0.2".parse().unwrap(), Role::Master),
                ("10.0.0.3".parse().unwrap(), Role::Node),
            ],
            ..Site::default()
        };
        let c = site.node_context("/d", "x", Some("10.0.0.2".parse().unwrap()), Role::Master);
        assert!(c.first_master && c.is_master());
        assert_eq!(c.nodes, ["10.0.0.3"]);
        let c = site.node_context("/d", "x", Some("10.0.0.3".parse().unwrap()), Role::Node);
        assert!(!c.first_master);
        assert_eq!(c.role, "node");
        let local = Site::default().node_context("/d", "x", None, Role::Master);
        assert!(local.first_master);
        assert_eq!(local.node_ip, "127.0.0.1");
    }
}
