//! Executing a Kubefile: `bale build -f Kubefile CONTEXT`.
//!
//! [`prepare`] parses the Kubefile, lays out the bundle's tree from the base and the `COPY`/`ADD`
//! steps, and runs the `RUN` steps in order on the build host, so a `RUN` can make files that a
//! later `COPY` takes. The result is a map from bundle path to where the content comes from
//! (a file in the context, an entry of the base bundle); a later step wins over an earlier one.
//! Content is read when a bundle is written, after every `RUN`. [`write`] then writes one
//! bundle per platform: the tree in path order, then the images the context needs (found by
//! [`discover`](crate::discover)) collected for that platform. The sources of `APP`/`CNI`/`CSI`
//! go to `application/apps/<name>/` as sealer lays them out ([`Prepared::apps`] names them as
//! the bundle holds them); a Kubefile that uses `${ARCH}` is prepared once per platform. Nothing time- or host-dependent
//! goes into the header, so the same inputs give the same bytes. [`platforms::merge`] puts the
//! bundles of several platforms into one.

pub mod platforms;

use crate::discover::{self, DiscoverOptions, Discovery};
use crate::images::{self, Cache, CollectOptions, Platform, ResolvedImage, REGISTRY_DIR};
use crate::kubefile::{
    self, App, Base, BuildPlan, BuildVars, Command, CopyKind, CopyStep, RunStep, Step,
};
use crate::sbom::{self, SBOM_ENTRY};
use crate::store::BundleStore;
use bale_contract::manifest::{ImageRecord, Layer, Manifest};
use bale_payload::writer::WriteSummary;
use bale_payload::{format, Bundle, BundleMeta, BundleWriter, Entry, Kind, WriteOptions};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a build stops. Every message starts with the Kubefile line, base or file it is about;
/// causes stay attached as sources, so a damaged base still exits as damaged.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// What a step asks for cannot be done; `why` says why and how to fix it.
    #[error("{at}: {why}")]
    Refused { at: String, why: String },
    /// Reading or writing what `at` names failed.
    #[error("{at}")]
    At {
        at: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Kubefile(#[from] kubefile::KubefileError),
    #[error(transparent)]
    Images(#[from] images::ImagesError),
    #[error(transparent)]
    Payload(#[from] bale_payload::Error),
    #[error(transparent)]
    Discover(#[from] discover::DiscoverError),
    #[error(transparent)]
    Sbom(#[from] sbom::SbomError),
}

impl BuildError {
    fn refused(at: impl Into<String>, why: impl Into<String>) -> BuildError {
        BuildError::Refused {
            at: at.into(),
            why: why.into(),
        }
    }

    /// True when the build stopped because a bundle's bytes are wrong (a damaged base), so
    /// that the command exits as it does for any damaged bundle. Looks through the variants
    /// that show another error as their own, which a chain of sources does not reach.
    pub fn is_damaged(&self) -> bool {
        fn damaged(e: &(dyn std::error::Error + 'static)) -> bool {
            if let Some(p) = e.downcast_ref::<bale_payload::Error>() {
                return p.is_corruption();
            }
            if let Some(images::ImagesError::Bundle(p)) = e.downcast_ref() {
                return p.is_corruption();
            }
            if let Some(sbom::SbomError::Payload(p)) = e.downcast_ref() {
                return p.is_corruption();
            }
            if let Some(s) = e.downcast_ref::<crate::share::ShareError>() {
                return s.is_damaged();
            }
            if let Some(s) = e.downcast_ref::<crate::store::StoreError>() {
                return s.is_damaged();
            }
            false
        }
        match self {
            BuildError::Refused { .. } | BuildError::Kubefile(_) | BuildError::Discover(_) => false,
            BuildError::At { source, .. } => damaged(source.as_ref()),
            BuildError::Payload(p) => p.is_corruption(),
            BuildError::Images(e) => damaged(e),
            BuildError::Sbom(e) => damaged(e),
        }
    }

    fn at(
        at: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> BuildError {
        BuildError::At {
            at: at.into(),
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// Where an entry's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir {
        mode: u32,
    },
    File {
        source: PathBuf,
        mode: u32,
    },
    Symlink {
        target: String,
    },
    /// The base bundle's entry with this index.
    Base(usize),
}

/// One bundle path: its content and the step that put it there (for messages).
#[derive(Debug, Clone)]
pub struct Placed {
    pub node: Node,
    pub origin: String,
    /// Index in the bundle's `metadata.layers` of the base layer this entry comes from
    /// unchanged; `None` for what this build puts there.
    pub layer: Option<usize>,
}

/// The base bundle of `FROM base.bale`.
pub struct BaseBundle {
    pub bundle: Bundle,
    pub entries: Vec<Entry>,
    /// As written in the Kubefile.
    pub shown: String,
}

/// A Kubefile parsed and executed up to writing: the tree is laid out, every `RUN` has run.
pub struct Prepared {
    pub plan: BuildPlan,
    /// `sha256:<hex>` of the Kubefile's text.
    pub kubefile_digest: String,
    pub context: PathBuf,
    pub layout: BTreeMap<String, Placed>,
    pub base: Option<BaseBundle>,
    /// Where `ADD` unpacked archives' files to; the layout points into it until written.
    pub unpacked: Option<tempfile::TempDir>,
    /// The apps as the bundle carries them: sources are paths in the bundle
    /// (`application/apps/<name>/…`), where the build put them.
    pub apps: BTreeMap<String, App>,
    /// What the build accepted but a user coming from sealer may not expect, each
    /// `file:line: message` (also printed).
    pub warnings: Vec<String>,
}

/// Everything about the build that is not in the Kubefile.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    pub build_args: BTreeMap<String, String>,
    /// Files never taken from the context (the bundles being written).
    pub exclude: Vec<PathBuf>,
    /// How `FROM REGISTRY/ns/name:tag` gets its base.
    pub base_pull: BasePull,
    /// The architecture being built (`amd64`, `x86_64`…), for `${ARCH}`; this machine's when
    /// `None`.
    pub arch: Option<String>,
}

/// How a base bundle in a registry is pulled.
#[derive(Debug, Clone, Default)]
pub struct BasePull {
    /// Only the bundle store; no registry is asked.
    pub offline: bool,
    /// Registries (`host[:port]`) that may use plain HTTP or unverified TLS; `*` means all.
    pub insecure_registries: Vec<String>,
    /// The local bundle store, where `FROM name:tag` is looked up and registry bases are kept
    /// [default: [`BundleStore::default_dir`]].
    pub store: Option<PathBuf>,
    /// The architecture of the build (`x86_64`), to pick among a stored tag's bundles.
    pub arch: Option<String>,
}

impl BasePull {
    fn store(&self) -> BundleStore {
        BundleStore::new(self.store.clone().unwrap_or_else(BundleStore::default_dir))
    }
}

/// Whether a `FROM` word that is not a path in the context can name a stored bundle: a name
/// (`kubernetes:v1.19.8`, `ns/base`), not a path spelled as one (`./rootfs`, `/abs`).
fn may_name_stored(word: &str) -> bool {
    !word.starts_with(['.', '/']) && crate::store::normalize(word).is_ok()
}

/// The stored bundle `reference` names, checked (its digest, and its signatures against the
/// keys trusted now); `None` when the store has no such tag. With `built_only`, a bundle the
/// store keeps from a pull does not count: the registry is asked again (see [`pull_base`]).
fn stored_base(
    reference: &str,
    pull: &BasePull,
    origin: &str,
    built_only: bool,
) -> Result<Option<PathBuf>> {
    let at = || format!("{origin}: FROM {reference}");
    let store = pull.store();
    let Some(stored) = store
        .resolve(reference, pull.arch.as_deref())
        .map_err(|e| BuildError::at(at(), e))?
        .filter(|s| !built_only || s.record.pulled_as.is_none())
    else {
        return Ok(None);
    };
    let trust = bale_trust::TrustPolicy::system().map_err(|e| BuildError::at(at(), e))?;
    store
        .check(&stored, &trust)
        .map_err(|e| BuildError::at(at(), e))?;
    eprintln!(
        "FROM {reference}: {} ({}) from the bundle store {}",
        stored.tag,
        stored.record.short_digest(),
        store.root().display()
    );
    Ok(Some(stored.path))
}

/// The refusal of a `FROM` word found nowhere: the three places looked, and the fixes.
fn base_not_found(reference: &str, context: &Path, pull: &BasePull, origin: &str) -> BuildError {
    let tag = crate::store::normalize(reference).unwrap_or_else(|_| reference.to_string());
    let (name, _) = crate::store::split_tag(&tag);
    BuildError::refused(
        format!("{origin}: FROM {reference}"),
        format!(
            "not found: no file or directory {} in the build context, no {tag} in the bundle \
             store {}, and no registry named (REGISTRY/ns/{tag}); build the base first \
             (`bale build -t {tag} BASE-DIR`), pull it (`bale pull REGISTRY/ns/{tag} -o \
             {name}.bale`, then FROM ./{name}.bale), or give the path of a directory or .bale \
             file in the context",
            context.join(reference).display(),
            pull.store().root().display(),
        ),
    )
}

/// Pulls the base `reference` into the bundle store (or finds it there) and returns its file.
fn pull_base(reference: &str, pull: &BasePull, origin: &str) -> Result<PathBuf> {
    use crate::share::{self, BundleCache, ShareOptions};
    let r = share::parse_reference(reference)
        .map_err(|e| BuildError::at(format!("{origin}: FROM {reference}"), e))?;
    let insecure = pull
        .insecure_registries
        .iter()
        .any(|h| h == "*" || h.eq_ignore_ascii_case(&r.domain));
    let opts = ShareOptions {
        connection: crate::images::registry::Connection {
            insecure,
            ca_file: None,
        },
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        // A base is checked against the keys this machine trusts, like any bundle it runs.
        trust: bale_trust::TrustPolicy::system()
            .map_err(|e| BuildError::at(format!("{origin}: FROM {reference}"), e))?,
        ..Default::default()
    };
    let cache = BundleCache::new(pull.store().root().to_path_buf());
    // The error keeps its chain, so a damaged (exit 3) or untrusted (exit 4) base says so.
    cache.get(&r, pull.offline, &opts).map_err(|e| {
        BuildError::at(
            format!(
                "{origin}: FROM {reference}: not in the build context nor built into the \
                 bundle store {}; from its registry",
                pull.store().root().display()
            ),
            e,
        )
    })
}

/// Parses the Kubefile at `kubefile` only, for this machine's architecture; warnings are in
/// the plan.
pub fn parse(
    kubefile: &Path,
    build_args: &BTreeMap<String, String>,
) -> Result<(BuildPlan, String)> {
    parse_for(kubefile, build_args, &BuildVars::host())
}

/// [`parse`] for the build variables `vars` (the platform being built).
pub fn parse_for(
    kubefile: &Path,
    build_args: &BTreeMap<String, String>,
    vars: &BuildVars,
) -> Result<(BuildPlan, String)> {
    let text = std::fs::read(kubefile).map_err(|e| {
        BuildError::at(
            format!("{}: cannot read the Kubefile", kubefile.display()),
            e,
        )
    })?;
    let digest = format!("sha256:{}", format::hex(&format::sha256(&text)));
    let plan = kubefile::parse_file_for(kubefile, build_args, vars)?;
    Ok((plan, digest))
}

/// Parses the Kubefile, lays out the tree and runs the `RUN` steps.
pub fn prepare(kubefile: &Path, context: &Path, opts: &PrepareOptions) -> Result<Prepared> {
    let vars = opts
        .arch
        .as_deref()
        .map_or_else(BuildVars::host, BuildVars::for_arch);
    let (plan, kubefile_digest) = parse_for(kubefile, &opts.build_args, &vars)?;
    // The parser's guess that a bare `name:tag` is a directory is settled below (the store,
    // or a refusal naming every place looked), so it is not printed then.
    let settled = match &plan.from {
        Base::Directory { path }
            if std::fs::symlink_metadata(context.join(path)).is_err() && may_name_stored(path) =>
        {
            Some(format!("FROM {path} is read as a directory"))
        }
        _ => None,
    };
    for w in &plan.warnings {
        if settled.as_ref().is_some_and(|s| w.contains(s.as_str())) {
            continue;
        }
        eprintln!("warning: {w}");
    }
    for a in &plan.unused_build_args {
        eprintln!(
            "warning: --build-arg {a} is not declared by any ARG in {}",
            plan.file
        );
    }
    let context = context.canonicalize().map_err(|e| {
        BuildError::at(
            format!("{}: cannot read the build context", context.display()),
            e,
        )
    })?;
    let text = std::fs::read_to_string(kubefile).unwrap_or_default();
    let mut l = Layout {
        map: BTreeMap::new(),
        exclude: opts
            .exclude
            .iter()
            .filter_map(|p| absolute_file(p))
            .collect(),
        scratch: None,
        unpacked_files: 0,
        warnings: Vec::new(),
    };
    let from_origin = format!("{}:{}", plan.file, from_line(&text));
    let mut base = None;
    // A registry base is a bundle file once pulled; a path of that name in the context wins.
    let mut pulled = None;
    // Where a named base is looked for, in order: a path in the context, the bundle store,
    // the registry the name starts with.
    let from = match &plan.from {
        Base::Registry { reference } => {
            let local = context.join(reference);
            if local.is_dir() {
                Base::Directory {
                    path: reference.clone(),
                }
            } else {
                if !local.is_file() {
                    // A bundle built here under a registry's name is taken as it is; one
                    // pulled before is checked against the registry (unless offline).
                    pulled = match stored_base(reference, &opts.base_pull, &from_origin, true)? {
                        Some(file) => Some(file),
                        None => Some(pull_base(reference, &opts.base_pull, &from_origin)?),
                    };
                }
                Base::Bundle {
                    path: reference.clone(),
                }
            }
        }
        Base::Directory { path }
            if std::fs::symlink_metadata(context.join(path)).is_err() && may_name_stored(path) =>
        {
            match stored_base(path, &opts.base_pull, &from_origin, false)? {
                Some(file) => {
                    pulled = Some(file);
                    Base::Bundle { path: path.clone() }
                }
                None => {
                    return Err(base_not_found(
                        path,
                        &context,
                        &opts.base_pull,
                        &from_origin,
                    ))
                }
            }
        }
        b => b.clone(),
    };
    match &from {
        Base::Scratch | Base::Registry { .. } => {}
        Base::Directory { path } => {
            let dir = context.join(path);
            let meta = std::fs::metadata(&dir).map_err(|e| {
                BuildError::refused(
                    format!("{from_origin}: FROM {path}"),
                    format!(
                        "{} {e}; the base directory is relative to the build context {}",
                        dir.display(),
                        context.display()
                    ),
                )
            })?;
            if !meta.is_dir() {
                return Err(BuildError::refused(
                    format!("{from_origin}: FROM {path}"),
                    format!(
                        "{} is not a directory; name a directory or a .bale file",
                        dir.display()
                    ),
                ));
            }
            l.walk(&dir, "", &format!("{from_origin} (FROM {path})"))?;
        }
        Base::Bundle { path } => {
            let file = pulled.clone().unwrap_or_else(|| context.join(path));
            if !file.is_file() {
                return Err(BuildError::refused(
                    format!("{from_origin}: FROM {path}"),
                    format!(
                        "{} does not exist; build the base first (bale build -o {path} ...) or \
                         fix the path (relative to the build context)",
                        file.display()
                    ),
                ));
            }
            // A base of several platforms is read as the platform being built.
            let opened = match &opts.base_pull.arch {
                Some(arch) => Bundle::open_for_platform(&file, arch),
                None => Bundle::open(&file),
            };
            let bundle = opened.map_err(|e| {
                BuildError::at(format!("{from_origin}: FROM {path}: {}", file.display()), e)
            })?;
            let entries = bundle.entries().map_err(|e| {
                BuildError::at(format!("{from_origin}: FROM {path}: {}", file.display()), e)
            })?;
            let origin = format!("base {path}");
            let base_layers = bundle
                .header
                .metadata
                .get("layers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let owners = LayerOwners::of(&base_layers);
            for (i, e) in entries.iter().enumerate() {
                let node = match e.kind {
                    Kind::Dir => Node::Dir { mode: e.mode },
                    Kind::Symlink => Node::Symlink {
                        target: e.target.clone(),
                    },
                    Kind::File | Kind::Blob => Node::Base(i),
                };
                l.map.insert(
                    e.path.clone(),
                    Placed {
                        node,
                        origin: origin.clone(),
                        // What the base got from its own bases stays theirs.
                        layer: Some(owners.owner(&e.path).unwrap_or(base_layers.len())),
                    },
                );
            }
            base = Some(BaseBundle {
                bundle,
                entries,
                shown: path.clone(),
            });
        }
    }
    for step in &plan.steps {
        match step {
            Step::Copy(c) => l.copy(&plan, c, &context)?,
            Step::Run(r) => run_step(&plan, r, &context)?,
        }
    }
    let mut apps = BTreeMap::new();
    for app in plan.apps.values() {
        apps.insert(app.name.clone(), l.app(&plan, app, &context)?);
    }
    for w in &l.warnings {
        eprintln!("warning: {w}");
    }
    Ok(Prepared {
        plan,
        kubefile_digest,
        context,
        layout: l.map,
        base,
        unpacked: l.scratch,
        apps,
        warnings: l.warnings,
    })
}

/// How sealer launches an app, judged from its files as sealer does.
enum AppKind {
    /// A chart at the top of the app directory: `helm install`.
    Chart,
    /// YAML files only: each applied.
    Kube(Vec<String>),
    /// Shell scripts only: sealer runs the first.
    Shell(String),
    /// Anything else, with why: only APPCMDS can say how to launch it.
    Unknown(String),
}

/// Line of the FROM instruction, for messages.
fn from_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start().get(..5).is_some_and(|k| {
                k.eq_ignore_ascii_case("FROM ") || k.eq_ignore_ascii_case("FROM\t")
            })
        })
        .map_or(1, |i| i + 1)
}

fn absolute_file(p: &Path) -> Option<PathBuf> {
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some(parent.canonicalize().ok()?.join(p.file_name()?))
}

struct Layout {
    map: BTreeMap<String, Placed>,
    exclude: BTreeSet<PathBuf>,
    /// Created by the first `ADD` of an archive.
    scratch: Option<tempfile::TempDir>,
    unpacked_files: u64,
    warnings: Vec<String>,
}

impl Layout {
    /// Puts the sources of `app` into `application/apps/<name>/` as sealer does (a directory's
    /// contents, a file by its name) and returns the app with those bundle paths as sources,
    /// judged as sealer judges them: a chart is installed, YAML files applied, the first shell
    /// script run. Files that are none of these need `APPCMDS`.
    fn app(&mut self, plan: &BuildPlan, app: &App, context: &Path) -> Result<App> {
        let origin = format!("{}:{}", plan.file, app.line);
        let dir = app
            .dir
            .clone()
            .unwrap_or_else(|| format!("{}/{}", kubefile::APP_ROOT, app.name));
        let mut files: Vec<String> = Vec::new();
        let mut chart = false;
        for src in &app.sources {
            let path = context.join(src);
            if path.symlink_metadata().is_err() {
                return Err(BuildError::refused(
                    origin,
                    format!(
                        "APP {} source local://{src} does not exist in the build context {}; \
                         fix the path (relative to the context) or make it in a RUN step above",
                        app.name,
                        context.display()
                    ),
                ));
            }
            let step = CopyStep {
                line: app.line,
                kind: CopyKind::Copy,
                sources: vec![src.clone()],
                dest: dir.clone(),
                dest_is_dir: true,
            };
            self.copy_sources(plan, &step, context, false)?;
            if path.is_dir() {
                chart |= path.join("Chart.yaml").is_file();
                let mut found = Vec::new();
                files_below(&path, "", &mut found);
                files.extend(found.into_iter().map(|f| join(&dir, &f)));
            } else {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(src);
                files.push(join(&dir, name));
            }
        }
        let kind = if chart { AppKind::Chart } else { judge(&files) };
        let sources = match kind {
            AppKind::Chart => vec![dir.clone()],
            AppKind::Kube(f) => f,
            AppKind::Shell(first) => vec![first],
            AppKind::Unknown(why) if app.cmds.is_empty() => {
                return Err(BuildError::refused(
                    origin,
                    format!(
                        "APP {}: {why}, so the app has no default launch (sealer refuses it \
                         too); say how to launch it: APPCMDS {} [\"kubectl apply -f .\"] (run \
                         in {dir})",
                        app.name, app.name
                    ),
                ));
            }
            AppKind::Unknown(_) => Vec::new(),
        };
        Ok(App {
            sources,
            dir: Some(dir),
            ..app.clone()
        })
    }

    /// Warns, naming the files, when old sealer would have put `src` somewhere other than
    /// `rel`, where it goes now.
    fn warn_old_layout(
        &mut self,
        instr: &str,
        origin: &str,
        src: &Path,
        context: &Path,
        dest: &str,
        rel: &str,
    ) {
        let is_dir = src.is_dir();
        let Some(shown) = src
            .strip_prefix(context)
            .ok()
            .and_then(|p| p.to_str())
            .filter(|p| !p.is_empty())
        else {
            return;
        };
        let Some(name) = src.file_name().and_then(|n| n.to_str()) else {
            return;
        };
        let dest_name = dest.rsplit('/').next().unwrap_or(dest);
        let old = if !dest.is_empty() && dest_name == name {
            dest.to_string()
        } else {
            join(dest, name)
        };
        if old == rel {
            return;
        }
        let mut files = Vec::new();
        if is_dir {
            files_below(src, "", &mut files);
        } else {
            files.push(String::new());
        }
        if files.is_empty() {
            return;
        }
        let shown_root = |root: &str| {
            if root.is_empty() {
                ".".to_string()
            } else {
                root.to_string()
            }
        };
        let moved: Vec<String> = files
            .iter()
            .take(5)
            .map(|f| {
                let new = if f.is_empty() {
                    rel.to_string()
                } else {
                    join(rel, f)
                };
                let was = if f.is_empty() {
                    old.clone()
                } else {
                    join(&old, f)
                };
                format!("{new} (old sealer: {was})")
            })
            .collect();
        let more = match files.len() {
            n if n > 5 => format!(" and {} more", n - 5),
            _ => String::new(),
        };
        self.warnings.push(format!(
            "{origin}: {instr} {shown} {}: laid out as current sealer and Docker do, which \
             differs from old sealer: {}{more}; to keep the old layout write {instr} {shown} {}{}",
            shown_root(dest),
            moved.join(", "),
            if is_dir {
                shown_root(&old)
            } else {
                shown_root(old.rsplit_once('/').map_or("", |(d, _)| d))
            },
            if is_dir { "" } else { "/" },
        ));
    }
}

/// Regular files below `dir`, relative to it, sorted.
fn files_below(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    names.sort();
    for (name, path) in names {
        let rel = join(prefix, &name);
        if path.is_dir() {
            files_below(&path, &rel, out);
        } else {
            out.push(rel);
        }
    }
}

/// Sealer's rule: all YAML is applied, all shell scripts means the first is run, any other
/// file or a mix leaves the launch to APPCMDS.
fn judge(files: &[String]) -> AppKind {
    let ext = |f: &str| {
        Path::new(f)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
    };
    let is_yaml = |f: &str| matches!(ext(f).as_deref(), Some("yaml" | "yml"));
    let is_shell = |f: &str| ext(f).as_deref() == Some("sh");
    if let Some(other) = files.iter().find(|f| !is_yaml(f) && !is_shell(f)) {
        return AppKind::Unknown(format!(
            "{other} is neither YAML, a shell script nor part of a chart"
        ));
    }
    match (
        files.iter().find(|f| is_yaml(f)),
        files.iter().find(|f| is_shell(f)),
    ) {
        (_, None) => AppKind::Kube(files.to_vec()),
        (None, Some(first)) => AppKind::Shell(first.clone()),
        (Some(yaml), Some(script)) => AppKind::Unknown(format!(
            "it holds both YAML ({yaml}) and shell scripts ({script})"
        )),
    }
}

impl Layout {
    fn place(&mut self, path: &str, node: Node, origin: &str) -> Result<()> {
        format::check_entry_path(path)
            .map_err(|why| BuildError::refused(format!("{origin}: {path:?}"), why))?;
        if let Node::Symlink { target } = &node {
            format::check_symlink_target(path, target).map_err(|why| {
                BuildError::refused(
                    format!("{origin}: {path}: symlink to {target:?}"),
                    format!("{why}; make it relative and inside the tree, or remove it"),
                )
            })?;
        }
        // Parents first: each must be a directory.
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            match self.map.get(parent) {
                None => {
                    self.map.insert(
                        parent.to_string(),
                        Placed {
                            node: Node::Dir { mode: 0o755 },
                            origin: origin.to_string(),
                            layer: None,
                        },
                    );
                }
                Some(Placed {
                    node: Node::Dir { .. },
                    ..
                }) => {}
                Some(p) => {
                    return Err(BuildError::refused(
                        origin,
                        format!(
                            "cannot put {path} below {parent}, which is a file or symlink (from \
                             {}); copy to another destination",
                            p.origin
                        ),
                    ))
                }
            }
            at += i + 1;
        }
        if !matches!(node, Node::Dir { .. }) {
            // A file or symlink replaces whatever was there, including a directory's content.
            let below = format!("{path}/");
            let gone: Vec<String> = self
                .map
                .range(below.clone()..)
                .take_while(|(k, _)| k.starts_with(&below))
                .map(|(k, _)| k.clone())
                .collect();
            for k in gone {
                self.map.remove(&k);
            }
        }
        self.map.insert(
            path.to_string(),
            Placed {
                node,
                origin: origin.to_string(),
                layer: None,
            },
        );
        Ok(())
    }

    fn is_dir_path(&self, path: &str) -> bool {
        matches!(self.map.get(path).map(|p| &p.node), Some(Node::Dir { .. }))
    }

    /// Everything below `dir`, sorted, under `prefix` ("" for the bundle root).
    fn walk(&mut self, dir: &Path, prefix: &str, origin: &str) -> Result<()> {
        let mut children: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| BuildError::at(format!("{origin}: {}", dir.display()), e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| BuildError::at(format!("{origin}: {}", dir.display()), e))?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            let path = c.path();
            if self.exclude.contains(&path) {
                continue;
            }
            let name = c.file_name().into_string().map_err(|_| {
                BuildError::refused(
                    format!("{origin}: {}", path.display()),
                    "the name is not valid UTF-8; rename it",
                )
            })?;
            let rel = join(prefix, &name);
            if rel == SBOM_ENTRY {
                // A tree extracted from a bundle carries that bundle's SBOM; this build writes
                // its own.
                continue;
            }
            self.entry(&path, &rel, origin, false)?;
        }
        Ok(())
    }

    /// Places `path` at `rel`; `follow` follows a symlink (a COPY source named directly).
    fn entry(&mut self, path: &Path, rel: &str, origin: &str, follow: bool) -> Result<()> {
        let meta = if follow {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        }
        .map_err(|e| BuildError::at(format!("{origin}: {}", path.display()), e))?;
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        if ft.is_dir() {
            if rel.is_empty() {
                return self.walk(path, rel, origin);
            }
            self.place(rel, Node::Dir { mode }, origin)?;
            self.walk(path, rel, origin)
        } else if ft.is_file() {
            self.place(
                rel,
                Node::File {
                    source: path.to_path_buf(),
                    mode,
                },
                origin,
            )
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path)
                .map_err(|e| BuildError::at(format!("{origin}: {}", path.display()), e))?
                .into_os_string()
                .into_string()
                .map_err(|_| {
                    BuildError::refused(
                        format!("{origin}: {}", path.display()),
                        "the link target is not valid UTF-8",
                    )
                })?;
            self.place(rel, Node::Symlink { target }, origin)
        } else {
            let what = crate::tree::special_file_kind(&ft);
            Err(BuildError::refused(
                format!("{origin}: {}", path.display()),
                format!(
                    "{what} cannot go into a bundle (bundles carry regular files, directories \
                     and symlinks); remove it or copy something else"
                ),
            ))
        }
    }

    fn copy(&mut self, plan: &BuildPlan, c: &CopyStep, context: &Path) -> Result<()> {
        self.copy_sources(plan, c, context, true)
    }

    /// A COPY's sources into the layout; `old_rule` warns where old sealer laid a source out
    /// elsewhere (it put a source at `dest/<its name>` unless `dest` already ends in that
    /// name, where current sealer, as Docker, puts a directory's contents at `dest`).
    fn copy_sources(
        &mut self,
        plan: &BuildPlan,
        c: &CopyStep,
        context: &Path,
        old_rule: bool,
    ) -> Result<()> {
        let origin = format!("{}:{}", plan.file, c.line);
        // ADD is COPY, except that local tar archives are unpacked (URLs were refused by the
        // parser).
        let sources = plan.resolve_sources(c, context)?;
        let dest = if c.dest == "." { "" } else { c.dest.as_str() };
        for src in sources {
            if self.exclude.contains(&src) {
                continue;
            }
            let meta = std::fs::metadata(&src)
                .map_err(|e| BuildError::at(format!("{origin}: {}", src.display()), e))?;
            if c.kind == CopyKind::Add && meta.is_file() {
                let found = crate::archive::sniff(&src)
                    .map_err(|e| BuildError::at(format!("{origin}: ADD {}", src.display()), e))?;
                if let Some(compression) = found {
                    // As in Docker, an archive unpacks into the destination directory.
                    self.unpack(&src, compression, dest, &origin)?;
                    continue;
                }
            }
            let rel = if meta.is_dir() {
                // As in Docker, a directory source copies its contents.
                dest.to_string()
            } else {
                let into_dir = c.dest_is_dir || (!dest.is_empty() && self.is_dir_path(dest));
                if into_dir {
                    let name = src.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                        BuildError::refused(
                            format!("{origin}: {}", src.display()),
                            "not a valid UTF-8 name",
                        )
                    })?;
                    join(dest, name)
                } else {
                    dest.to_string()
                }
            };
            if rel.is_empty() && !meta.is_dir() {
                return Err(BuildError::refused(
                    origin,
                    "a file cannot replace the bundle root; give a file name or a directory \
                     ending in /",
                ));
            }
            if old_rule {
                let instr = match c.kind {
                    CopyKind::Copy => "COPY",
                    CopyKind::Add => "ADD",
                };
                self.warn_old_layout(instr, &origin, &src, context, dest, &rel);
            }
            self.entry(&src, &rel, &origin, true)?;
        }
        Ok(())
    }
}

impl Layout {
    /// Places every member of the tar archive `src` below `dest`. Regular files are written to
    /// the scratch directory (numbered, so member names never touch the file system),
    /// directories and symlinks are placed as they are, hard links share their target's file.
    fn unpack(
        &mut self,
        src: &Path,
        compression: crate::archive::Compression,
        dest: &str,
        origin: &str,
    ) -> Result<()> {
        let shown = src.display().to_string();
        let fail = |what: String| BuildError::refused(format!("{origin}: ADD {shown}"), what);
        if self.scratch.is_none() {
            self.scratch = Some(
                tempfile::Builder::new()
                    .prefix(".bale-add-")
                    .tempdir()
                    .map_err(|e| fail(format!("cannot make a scratch directory: {e}")))?,
            );
        }
        let scratch = self
            .scratch
            .as_ref()
            .map(|t| t.path().to_path_buf())
            .unwrap_or_default();
        if !dest.is_empty() && !self.is_dir_path(dest) {
            self.place(dest, Node::Dir { mode: 0o755 }, origin)?;
        }
        let reader = crate::archive::open(src, compression).map_err(|e| fail(e.to_string()))?;
        let mut archive = tar::Archive::new(reader);
        // Files written for members, by member path, for hard links.
        let mut files: BTreeMap<String, (PathBuf, u32)> = BTreeMap::new();
        let entries = archive
            .entries()
            .map_err(|e| fail(format!("not a readable tar archive: {e}")))?;
        for member in entries {
            let mut member = member.map_err(|e| fail(format!("damaged tar archive: {e}")))?;
            let raw = member.path_bytes().into_owned();
            let name = String::from_utf8(raw)
                .map_err(|_| fail("a member name is not UTF-8; rename it".into()))?;
            let Some(rel) = member_path(&name) else {
                return Err(fail(format!(
                    "member {name:?} climbs out of the archive with \"..\"; such an archive \
                     is refused, repack it without \"..\""
                )));
            };
            if rel.is_empty() {
                continue;
            }
            let at = join(dest, &rel);
            let mode = member.header().mode().unwrap_or(0o644) & 0o7777;
            let kind = member.header().entry_type();
            let here = format!("{origin} (member {name})");
            use tar::EntryType as T;
            match kind {
                T::Directory => self.place(&at, Node::Dir { mode }, &here)?,
                T::Regular | T::Continuous => {
                    self.unpacked_files += 1;
                    let file = scratch.join(self.unpacked_files.to_string());
                    let mut out = std::fs::File::create(&file)
                        .map_err(|e| fail(format!("{}: {e}", file.display())))?;
                    std::io::copy(&mut member, &mut out)
                        .map_err(|e| fail(format!("member {name}: {e}")))?;
                    files.insert(rel.clone(), (file.clone(), mode));
                    self.place(&at, Node::File { source: file, mode }, &here)?;
                }
                T::Symlink => {
                    let target = member
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    self.place(&at, Node::Symlink { target }, &here)?;
                }
                T::Link => {
                    let target = member
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let Some((file, mode)) = member_path(&target).and_then(|t| files.get(&t))
                    else {
                        return Err(fail(format!(
                            "member {name} is a hard link to {target:?}, which is not a \
                             regular file earlier in the archive; repack it with the file \
                             itself"
                        )));
                    };
                    let node = Node::File {
                        source: file.clone(),
                        mode: *mode,
                    };
                    files.insert(rel.clone(), (file.clone(), *mode));
                    self.place(&at, node, &here)?;
                }
                T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
                other => {
                    let what = match other {
                        T::Char => "a character device",
                        T::Block => "a block device",
                        T::Fifo => "a FIFO",
                        _ => "a special member",
                    };
                    return Err(fail(format!(
                        "member {name} is {what}, which cannot go into a bundle (bundles \
                         carry regular files, directories and symlinks); repack the archive \
                         without it"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A tar member's path relative to the destination: leading `/` and `./` dropped, `.`
/// components removed; `None` if it contains `..`.
fn member_path(name: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Runs one `RUN` step in the context directory, its output on stderr prefixed `RUN[line]`.
fn run_step(plan: &BuildPlan, r: &RunStep, context: &Path) -> Result<()> {
    let origin = format!("{}:{}", plan.file, r.line);
    let (mut cmd, shown) = match &r.command {
        Command::Shell(s) => {
            let mut c = std::process::Command::new("sh");
            c.arg("-c").arg(s);
            (c, s.clone())
        }
        Command::Exec(v) => {
            let mut c = std::process::Command::new(&v[0]);
            c.args(&v[1..]);
            (c, v.join(" "))
        }
    };
    eprintln!("RUN[{}] {shown}", r.line);
    cmd.current_dir(context)
        .envs(&r.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| {
        BuildError::refused(
            format!("{origin}: RUN cannot start {shown:?}"),
            format!("{e}; install the program on the build host or fix the command"),
        )
    })?;
    let line = r.line;
    let pipes: Vec<Box<dyn Read + Send>> = vec![
        Box::new(child.stdout.take().expect("piped stdout")),
        Box::new(child.stderr.take().expect("piped stderr")),
    ];
    let threads: Vec<_> = pipes
        .into_iter()
        .map(|p| {
            std::thread::spawn(move || {
                for l in BufReader::new(p).split(b'\n').map_while(|l| l.ok()) {
                    eprintln!("RUN[{line}] {}", String::from_utf8_lossy(&l));
                }
            })
        })
        .collect();
    let status = child
        .wait()
        .map_err(|e| BuildError::at(format!("{origin}: RUN {shown:?}"), e))?;
    for t in threads {
        let _ = t.join();
    }
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exit code {c}"),
            None => {
                use std::os::unix::process::ExitStatusExt;
                format!("signal {}", status.signal().unwrap_or(0))
            }
        };
        return Err(BuildError::refused(
            origin,
            format!(
                "RUN failed with {how}: {shown}\n  it ran in {} on the build host; fix the \
                 command (its output is above, prefixed RUN[{line}])",
                context.display()
            ),
        ));
    }
    Ok(())
}

/// The images the context needs (manifests/, charts/, imageList, and what COPY, ADD and APP
/// bring in from elsewhere in the context), with the Kubefile's ENV for templates. Sources
/// that a `RUN` makes and that do not exist yet (`--list-images` runs no step) are warnings.
pub fn discover_images(context: &Path, plan: &BuildPlan) -> Result<Discovery> {
    discover_images_with(context, plan, DiscoverOptions::default())
}

/// [`discover_images`] with options (helm, search path, ignore rules); its `env` and `copied`
/// are filled from the Kubefile.
pub fn discover_images_with(
    context: &Path,
    plan: &BuildPlan,
    base: DiscoverOptions,
) -> Result<Discovery> {
    let context = context.canonicalize().map_err(|e| {
        BuildError::at(
            format!("{}: cannot read the build context", context.display()),
            e,
        )
    })?;
    let mut missing = Vec::new();
    let opts = DiscoverOptions {
        env: plan.env.clone(),
        copied: copied_inputs(&context, plan, &mut missing),
        ..base
    };
    let mut d = discover::discover(&context, &opts)?;
    for m in missing {
        d.warnings.push(discover::Warning {
            file: String::new(),
            place: String::new(),
            message: m,
        });
    }
    Ok(d)
}

/// Every source of every COPY/ADD step with where it lands, then every APP source (applied as
/// manifests or installed as charts, so read like manifests/).
fn copied_inputs(
    context: &Path,
    plan: &BuildPlan,
    missing: &mut Vec<String>,
) -> Vec<discover::CopiedInput> {
    // The Kubefile as seen from the context, when it is inside (the usual case).
    let kubefile = Path::new(&plan.file)
        .canonicalize()
        .ok()
        .and_then(|k| {
            k.strip_prefix(context)
                .ok()
                .map(|r| r.display().to_string())
        })
        .unwrap_or_else(|| plan.file.clone());
    let mut out = Vec::new();
    for step in &plan.steps {
        let Step::Copy(c) = step else { continue };
        let instr = match c.kind {
            CopyKind::Copy => "COPY",
            CopyKind::Add => "ADD",
        };
        let origin = format!("{kubefile}:{} ({instr})", c.line);
        let sources = match plan.resolve_sources(c, context) {
            Ok(s) => s,
            Err(e) => {
                missing.push(format!("{e}; its images (if any) are not listed"));
                continue;
            }
        };
        let dest = if c.dest == "." { "" } else { c.dest.as_str() };
        for source in sources {
            let lands = if source.is_dir() || !c.dest_is_dir {
                dest.to_string()
            } else {
                join(
                    dest,
                    &source.file_name().unwrap_or_default().to_string_lossy(),
                )
            };
            out.push(discover::CopiedInput {
                source,
                dest: if lands.is_empty() { ".".into() } else { lands },
                origin: origin.clone(),
            });
        }
    }
    for app in plan.apps.values() {
        for src in &app.sources {
            out.push(discover::CopiedInput {
                source: context.join(src),
                // Read like manifests/: the app applies them.
                dest: "manifests".into(),
                origin: format!("{kubefile}:{} (APP {})", app.line, app.name),
            });
        }
    }
    out
}

/// The bale program to put in front of a bundle for `arch` (`x86_64`, `aarch64`): a given stub
/// built for it, else `bale-<arch>` in `stub_dir`, else this program when it is built for it,
/// else `bale-<arch>` next to this program.
pub fn find_stub(arch: &str, stubs: &[PathBuf], stub_dir: Option<&Path>) -> Result<PathBuf> {
    let mut looked = Vec::new();
    for s in stubs {
        if bale_payload::elf::arch_of(s)? == arch {
            return Ok(s.clone());
        }
        looked.push(format!("--stub {} (not {arch})", s.display()));
    }
    let name = format!("bale-{arch}");
    if let Some(d) = stub_dir {
        let p = d.join(&name);
        if p.is_file() {
            return Ok(p);
        }
        looked.push(p.display().to_string());
    }
    if std::env::consts::ARCH == arch {
        return Ok(PathBuf::from("/proc/self/exe"));
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let p = d.join(&name);
        if p.is_file() {
            return Ok(p);
        }
        looked.push(p.display().to_string());
    }
    Err(BuildError::refused(
        format!("no bale program for {arch} to start the bundle with"),
        format!(
            "looked at: {}. Build one (scripts/build-release.sh makes out/release/bale-{arch}) \
             and pass --stub or --stub-dir",
            looked.join(", ")
        ),
    ))
}

/// Kernel name of a platform's architecture (`amd64` -> `x86_64`).
pub fn kernel_arch(p: &Platform) -> String {
    match p.architecture.as_str() {
        "amd64" => "x86_64".into(),
        "arm64" => "aarch64".into(),
        a => a.into(),
    }
}

/// One bundle to write.
#[derive(Debug, Clone)]
pub struct Target {
    pub platform: Platform,
    pub stub: PathBuf,
    pub output: PathBuf,
}

#[derive(Debug, Clone)]
pub struct WriteConfig {
    pub name: String,
    pub version: String,
    /// Inputs as the user gave them, for the header.
    pub kubefile_shown: String,
    pub context_shown: String,
    pub created_at: Option<String>,
    pub write: WriteOptions,
    /// `sources` is filled from the context's `images/`.
    pub collect: CollectOptions,
}

/// Writes the bundle for one platform.
///
/// On a `FROM base.bale`, the base's entries are copied as stored frames (never compressed
/// again), and `metadata.layers` records, per base layer, which entries came from it. When the
/// base carries images (`registry/`) and this build adds some, the two image sets are merged
/// into one layout: the base's blobs are kept as they are, blobs shared with the new images
/// are stored once, images the base already names are not collected again, and `index.json`
/// names both sets.
pub fn write(
    p: &Prepared,
    discovery: &Discovery,
    target: &Target,
    cfg: &WriteConfig,
) -> Result<WriteSummary> {
    let arch = kernel_arch(&target.platform);
    let stub_arch = bale_payload::elf::arch_of(&target.stub)?;
    if stub_arch != arch {
        return Err(BuildError::refused(
            target.stub.display().to_string(),
            format!(
                "the program is for {stub_arch}, the bundle for {}; give a stub for {arch}",
                target.platform
            ),
        ));
    }
    let mut layout = p.layout.clone();
    // The base's SBOM describes the base; this build writes its own of the whole bundle.
    if let Some(placed) = layout.get(SBOM_ENTRY) {
        if placed.layer.is_none() {
            return Err(BuildError::refused(
                placed.origin.clone(),
                format!(
                    "{SBOM_ENTRY} is where the build writes the bundle's SBOM; copy the file to \
                     another destination"
                ),
            ));
        }
        layout.remove(SBOM_ENTRY);
        // Its directory too, when nothing else of the base is in it: the SBOM writer makes it.
        let dir = SBOM_ENTRY.rsplit_once('/').map_or("", |(d, _)| d);
        let below = format!("{dir}/");
        let from_base = layout.get(dir).is_some_and(|p| p.layer.is_some());
        if from_base && !layout.keys().any(|k| k.starts_with(&below)) {
            layout.remove(dir);
        }
    }
    let in_registry = |k: &str| k == REGISTRY_DIR || k.starts_with("registry/");
    let mut manifest = Manifest::new();
    let mut env = BTreeMap::new();
    let mut labels = BTreeMap::new();
    let mut inputs = vec![
        format!("kubefile {} {}", cfg.kubefile_shown, p.kubefile_digest),
        format!("context {}", cfg.context_shown),
    ];
    let mut layers: Vec<Layer> = Vec::new();
    let mut base_listing: Vec<ImageRecord> = Vec::new();
    let mut base_apps = BTreeMap::new();
    let mut base_images = images::BaseImages::default();
    if let Some(b) = &p.base {
        let h = &b.bundle.header;
        if h.arch != arch {
            return Err(BuildError::refused(
                format!("FROM {}", b.shown),
                format!(
                    "the base is a bundle for {}, this build is for {}; build the base for \
                     {arch} too",
                    h.arch, target.platform
                ),
            ));
        }
        let digest = format!("sha256:{}", format::hex(&b.bundle.trailer.header_sha256));
        let base = Manifest::from_metadata(&h.metadata)
            .map_err(|e| BuildError::at(format!("FROM {}", b.shown), e))?;
        layers = base.layers.clone();
        layers.push(Layer {
            name: h.name.clone(),
            version: h.version.clone(),
            digest: digest.clone(),
            install_steps: base.install_steps.clone(),
            entries: None,
        });
        base_apps = base.apps.clone();
        env.extend(base.env.clone().unwrap_or_default());
        labels.extend(base.labels.clone().unwrap_or_default());
        inputs.push(format!("base {} {digest}", b.shown));
        base_images.shown = b.shown.clone();
        let index_from_base = layout
            .get("registry/index.json")
            .and_then(|pl| match pl.node {
                Node::Base(i) => Some(i),
                _ => None,
            });
        if let Some(i) = index_from_base {
            let entry = &b.entries[i];
            let mut data = Vec::new();
            b.bundle
                .open_entry(entry)
                .map_err(|e| BuildError::at(format!("FROM {}: registry/index.json", b.shown), e))?
                .read_to_end(&mut data)
                .map_err(|e| BuildError::at(format!("FROM {}: registry/index.json", b.shown), e))?;
            base_images.manifests = images::BaseImages::parse_index(&data, &b.shown)?;
            base_listing = base.images.clone();
        }
    }
    env.extend(p.plan.env.clone());
    labels.extend(p.plan.labels.clone());

    // Images, for this platform; those the base already names are there.
    let base_names: BTreeSet<String> = base_images
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    let mut refs = Vec::new();
    for found in &discovery.images {
        if base_names.contains(&found.reference) {
            eprintln!(
                "image {}: already in the base {}, kept from there",
                found.reference, base_images.shown
            );
        } else {
            refs.push(found.image.clone());
        }
    }
    let mut resolved: Vec<ResolvedImage> = Vec::new();
    let cache_dir = cfg
        .collect
        .cache_dir
        .clone()
        .unwrap_or_else(Cache::default_dir);
    if !refs.is_empty() {
        if let Some((path, placed)) = layout
            .iter()
            .find(|(k, pl)| in_registry(k) && pl.layer.is_none())
        {
            return Err(BuildError::refused(
                placed.origin.clone(),
                format!(
                    "{path} is where the bundle's images go, and this build adds images; copy it \
                     to another destination"
                ),
            ));
        }
        if layout.keys().any(|k| in_registry(k)) && base_images.manifests.is_empty() {
            return Err(BuildError::refused(
                format!("FROM {}", base_images.shown),
                "the base has a registry/ directory without registry/index.json, so its images \
                 cannot be merged with this build's; rebuild the base",
            ));
        }
        // The image writer adds the layout's directories, index and marker again; the base's
        // blobs stay as they are.
        for k in [
            REGISTRY_DIR,
            "registry/blobs",
            "registry/blobs/sha256",
            "registry/index.json",
            "registry/oci-layout",
        ] {
            layout.remove(k);
        }
        base_images.blobs = layout
            .keys()
            .filter_map(|k| k.strip_prefix("registry/blobs/sha256/"))
            .map(str::to_string)
            .collect();
        let mut copts = cfg.collect.clone();
        copts.cache_dir = Some(cache_dir.clone());
        copts.sources = images::context_sources(&p.context)?;
        resolved = images::collect(&refs, &target.platform, &copts)
            .map_err(|e| BuildError::at(format!("collecting images for {}", target.platform), e))?;
    }
    let mut listing: BTreeMap<String, ImageRecord> = BTreeMap::new();
    for v in base_listing.into_iter().chain(images_listing(&resolved)) {
        listing.entry(v.name.clone()).or_insert(v);
    }
    let image_count = listing.len() as u64;
    manifest.images = listing.into_values().collect();

    // Which entries each base layer gave.
    if !layers.is_empty() {
        let owned = layer_entries(&layout, layers.len());
        for (layer, entries) in layers.iter_mut().zip(owned) {
            layer.entries = Some(entries);
        }
        manifest.layers = layers;
    }
    manifest.platform = Some(target.platform.to_string());
    manifest.kubefile = Some(p.kubefile_digest.clone());
    manifest.install_steps = Some(p.plan.install_steps.clone());
    // The base layers' apps too: their LAUNCH steps run from this bundle.
    manifest.apps = base_apps;
    manifest.apps.extend(p.apps.clone());
    manifest.env = Some(env);
    manifest.labels = Some(labels);
    manifest.kube_version = p.plan.kube_version.clone();
    if image_count > 0 {
        inputs.push(format!("images {image_count}"));
    }
    let meta = BundleMeta {
        name: cfg.name.clone(),
        version: cfg.version.clone(),
        inputs,
        created_at: cfg.created_at.clone(),
        images: image_count,
        metadata: manifest.to_metadata(),
    };
    // New images' blobs are read from where they are written from: the cache, or the OCI
    // layout of the context.
    let cache = Cache::open(&cache_dir)?;
    let mut cached: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut layer_blobs = Vec::new();
    for img in &resolved {
        for (b, at) in img.blobs.iter().zip(images::blob_files(img, &cache)?) {
            if let Some(hex) = b.digest.strip_prefix("sha256:") {
                layer_blobs.push(sbom::LayerBlob {
                    digest: b.digest.clone(),
                    media_type: b.media_type.clone(),
                    size: b.size,
                    path: at.clone(),
                });
                cached.insert(format!("{REGISTRY_DIR}/blobs/sha256/{hex}"), at);
            }
        }
    }
    let layer_cache = sbom::LayerCache::new(sbom::layer_cache::dir_in(cache.root()));
    let mut w = BundleWriter::create(&target.output, &target.stub, meta, cfg.write.clone())
        .map_err(|e| BuildError::at(format!("cannot start {}", target.output.display()), e))?;
    // The SBOM's layer scan runs while the entries are written: it only reads the image
    // cache, and what it finds goes to the layer cache, where the SBOM takes it from (so the
    // document is the same whichever finishes first).
    let (written, layers_scanned) = std::thread::scope(|s| {
        let scan = s.spawn(|| {
            let started = std::time::Instant::now();
            let n = sbom::fill_layer_cache(&layer_cache, &layer_blobs);
            (n, started.elapsed())
        });
        let written = write_entries(&mut w, p, &layout, &resolved, &cache_dir, &base_images);
        (written, scan.join().unwrap_or_default())
    });
    let (layers_scanned, scan_took) = layers_scanned;
    written?;
    let sbom_input = sbom::Input {
        name: cfg.name.clone(),
        version: cfg.version.clone(),
        arch: arch.clone(),
        platform: Some(target.platform.to_string()),
        timestamp: cfg.created_at.as_deref().and_then(sbom::timestamp_of),
        kubernetes_version: labels_kube_version(&manifest),
        bases: manifest
            .layers
            .iter()
            .map(|l| sbom::BaseRef {
                name: l.name.clone(),
                version: l.version.clone(),
                digest: l.digest.clone(),
            })
            .collect(),
        images: manifest.images.clone(),
        base_sbom: match &p.base {
            Some(b) => sbom::read_sbom(&b.bundle, &b.entries)
                .map_err(|e| BuildError::at(format!("FROM {}: its SBOM", b.shown), e))?,
            None => None,
        },
        layer_cache: Some(layer_cache),
    };
    let source = |path: &str| -> Option<sbom::Source<'_>> {
        if let Some(f) = cached.get(path) {
            return Some(sbom::Source::Disk(f.clone()));
        }
        match &layout.get(path)?.node {
            Node::File { source, .. } => Some(sbom::Source::Disk(source.clone())),
            Node::Base(i) => {
                let b = p.base.as_ref()?;
                Some(sbom::Source::Base(&b.bundle, b.entries.get(*i)?))
            }
            Node::Dir { .. } | Node::Symlink { .. } => None,
        }
    };
    let started = std::time::Instant::now();
    let mut s = sbom::add_sbom(&mut w, &sbom_input, &source)?;
    // The layers scanned alongside the writing were found in the cache by the SBOM.
    let ahead = layers_scanned.min(s.layers_cached);
    s.layers_scanned += ahead;
    s.layers_cached -= ahead;
    report_sbom(&s, started.elapsed() + scan_took);
    // Base frames are copied as stored and checked as they are: damage found then is the
    // base's.
    let summary = w.finish().map_err(|e| match &p.base {
        Some(b) if e.is_corruption() => BuildError::at(format!("FROM {}", b.shown), e),
        _ => BuildError::Payload(e),
    })?;
    if let Some(b) = &p.base {
        eprintln!(
            "FROM {}: {} frames ({}) copied as stored, none compressed again",
            b.shown,
            summary.copied_frames,
            bale_payload::error::human_bytes(summary.copied_bytes)
        );
    }
    Ok(summary)
}

/// Adds the layout's entries and the new images' blobs to `w`.
fn write_entries(
    w: &mut BundleWriter,
    p: &Prepared,
    layout: &BTreeMap<String, Placed>,
    resolved: &[ResolvedImage],
    cache_dir: &Path,
    base_images: &images::BaseImages,
) -> Result<()> {
    for (path, placed) in layout {
        let r = match &placed.node {
            Node::Dir { mode } => w.add_dir(path, *mode),
            Node::File { source, mode } => w.add_file(path, *mode, source),
            Node::Symlink { target } => w.add_symlink(path, target),
            Node::Base(i) => match &p.base {
                Some(b) => w.add_entry_from(&b.bundle, &b.entries[*i]),
                None => Err(bale_payload::Error::Input(format!(
                    "internal error: {path} is a base entry, and there is no base"
                ))),
            },
        };
        r.map_err(|e| BuildError::at(format!("{}: {path}", placed.origin), e))?;
    }
    if !resolved.is_empty() {
        images::add_images_merged(w, cache_dir, resolved, base_images)?;
    }
    Ok(())
}

/// The Kubernetes version a bundle carries: the `io.bale.kubernetes.version` label (set by
/// the Kubernetes base and kept by every bundle built on it), else `KUBEVERSION`.
fn labels_kube_version(m: &Manifest) -> Option<String> {
    m.labels
        .as_ref()
        .and_then(|l| l.get(KUBERNETES_VERSION_LABEL).cloned())
        .or_else(|| m.kube_version.clone())
}

/// The label naming the Kubernetes version a bundle brings.
pub const KUBERNETES_VERSION_LABEL: &str = "io.bale.kubernetes.version";

/// One line about the SBOM, and its warnings, on stderr.
pub fn report_sbom(s: &sbom::Summary, took: std::time::Duration) {
    for w in &s.warnings {
        eprintln!("warning: sbom: {w}");
    }
    eprintln!(
        "sbom: {} components ({} Go binaries, {} Go modules, {} Debian packages, {} layers \
         scanned, {} known from the layer cache, {} taken from the base's SBOM), {} in {:.2}s",
        s.components,
        s.go_binaries,
        s.go_modules,
        s.deb_packages,
        s.layers_scanned,
        s.layers_cached,
        s.reused,
        bale_payload::error::human_bytes(s.bytes),
        took.as_secs_f64()
    );
}

/// Attributes entries to base layers: a base's own `metadata.layers[k].entries` (paths, or
/// `dir/` for a directory and everything below it).
struct LayerOwners {
    exact: BTreeMap<String, usize>,
    below: BTreeMap<String, usize>,
}

impl LayerOwners {
    fn of(layers: &[Value]) -> LayerOwners {
        let mut o = LayerOwners {
            exact: BTreeMap::new(),
            below: BTreeMap::new(),
        };
        for (k, layer) in layers.iter().enumerate() {
            let list = layer.get("entries").and_then(Value::as_array);
            for p in list.into_iter().flatten().filter_map(Value::as_str) {
                match p.strip_suffix('/') {
                    Some(dir) => {
                        o.exact.insert(dir.to_string(), k);
                        o.below.insert(p.to_string(), k);
                    }
                    None => {
                        o.exact.insert(p.to_string(), k);
                    }
                }
            }
        }
        o
    }

    fn owner(&self, path: &str) -> Option<usize> {
        if let Some(k) = self.exact.get(path) {
            return Some(*k);
        }
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            if let Some(k) = self.below.get(&path[..=at + i]) {
                return Some(*k);
            }
            at += i + 1;
        }
        None
    }
}

/// For each of `n` layers, the layout entries it gave, sorted: a directory whose whole
/// subtree comes from the same layer is written once as `dir/`.
fn layer_entries(layout: &BTreeMap<String, Placed>, n: usize) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); n];
    let mut whole: BTreeSet<String> = BTreeSet::new();
    for (path, placed) in layout {
        let Some(k) = placed.layer.filter(|k| *k < n) else {
            continue;
        };
        let mut at = 0;
        let mut covered = false;
        while let Some(i) = path[at..].find('/') {
            if whole.contains(&path[..=at + i]) {
                covered = true;
                break;
            }
            at += i + 1;
        }
        if covered {
            continue;
        }
        let below = format!("{path}/");
        let mut children = layout
            .range(below.clone()..)
            .take_while(|(p, _)| p.starts_with(&below))
            .peekable();
        if matches!(placed.node, Node::Dir { .. })
            && children.peek().is_some()
            && children.all(|(_, c)| c.layer == Some(k))
        {
            out[k].push(below.clone());
            whole.insert(below);
        } else {
            out[k].push(path.clone());
        }
    }
    for list in &mut out {
        list.sort();
    }
    out
}

/// What `add_images_to_bundle` reports, known before writing so it goes into the header.
fn images_listing(images: &[ResolvedImage]) -> Vec<ImageRecord> {
    let by_name: BTreeMap<&str, &ResolvedImage> =
        images.iter().map(|i| (i.name.as_str(), i)).collect();
    by_name.iter().map(|(name, img)| img.record(name)).collect()
}
