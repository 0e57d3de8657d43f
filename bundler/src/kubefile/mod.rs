//! Kubefile parsing: turns a Kubefile into a typed, serializable [`BuildPlan`].
//!
//! The dialect is sealer's Kubefile (a Dockerfile for clusters) with stricter
//! errors: every problem is reported as `file:line: what is wrong; the fix`.
//!
//! Semantics worth knowing when executing a plan:
//! - Paths in `COPY`/`ADD`/`APP` are relative to the build context and never
//!   leave it; destinations are relative to the bundle root (a leading `/` is
//!   the bundle root). As in Docker, a directory source copies its contents.
//! - `$VAR` substitution happens at parse time in every instruction except
//!   `RUN`, `CMD` and `APPCMDS`: those are recorded verbatim and expanded by
//!   the shell that runs them. A `RUN` gets [`RunStep::env`] (ARGs and ENV in
//!   scope at that point); install steps get [`BuildPlan::env`] only, since
//!   ARGs exist at build time only.
//! - `CNI` and `CSI` apps that no `LAUNCH` names are launched first (CNI, then
//!   CSI): a cluster without a pod network cannot run the other steps.
//!
//! Sealer's meanings, which Kubefiles written for sealer and sealos rely on:
//! - `CMD ["kubectl apply -f a.yaml", "helm install b charts/b"]` and `CMDS [...]` are lists of
//!   shell commands run in order (sealos images and old sealer write CMD so), not one argv.
//! - `${ARCH}` is the architecture being built (`amd64`, `arm64`), in every instruction that
//!   expands variables; an `ARG ARCH` or `ENV ARCH` of the Kubefile wins over it. A plan that
//!   used it is [`BuildPlan::platform_dependent`] and holds for [`BuildPlan::arch`] only.
//! - `APP`/`CNI`/`CSI` sources go to `application/apps/<name>/` in the bundle (see [`APP_ROOT`]);
//!   `APPCMDS` run in that directory, with the app's `APPENV` variables exported.
//!
//! Limits, since a Kubefile is hostile input: the file is at most [`MAX_KUBEFILE_BYTES`];
//! one instruction expands to at most [`lex::MAX_EXPANSION`] bytes with defaults nested at
//! most [`lex::MAX_NESTING`] deep; all ARG, ENV and LABEL values together hold at most
//! [`MAX_VARIABLE_BYTES`]; and RUN steps share one environment until an ARG or ENV changes
//! it, the distinct environments adding up to at most [`MAX_RUN_ENV_BYTES`].

mod lex;
pub(crate) mod text;

pub use bale_contract::template::{render_template, TemplateError};
pub use lex::{LexError, MAX_EXPANSION, MAX_NESTING};

use lex::{Expander, LogicalLine, ONE_WORD, RAW, WORDS};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest Kubefile read.
pub const MAX_KUBEFILE_BYTES: usize = 1 << 20;

/// Most bytes all ARG, ENV and LABEL names and values may hold together.
pub const MAX_VARIABLE_BYTES: usize = 4 << 20;

/// Most bytes the distinct environments of the RUN steps may hold together.
pub const MAX_RUN_ENV_BYTES: usize = 64 << 20;

/// Where an app's sources go in the bundle, one directory per app, as in sealer.
pub const APP_ROOT: &str = "application/apps";

/// The build variables a Kubefile may use without declaring them, as sealer defines them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildVars {
    /// The architecture being built, as Go names it (`amd64`, `arm64`): `${ARCH}`.
    pub arch: String,
}

impl BuildVars {
    /// The variables for a build for this machine's architecture.
    pub fn host() -> BuildVars {
        BuildVars::for_arch(std::env::consts::ARCH)
    }

    /// The variables for `arch`, given as the kernel (`x86_64`) or Go (`amd64`) names it.
    pub fn for_arch(arch: &str) -> BuildVars {
        let go = match arch {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        BuildVars { arch: go.into() }
    }

    fn get(&self, name: &str) -> Option<String> {
        (name == "ARCH").then(|| self.arch.clone())
    }
}

/// Instruction keywords, for "did you mean" hints.
const KEYWORDS: &[&str] = &[
    "FROM",
    "COPY",
    "ADD",
    "ARG",
    "ENV",
    "LABEL",
    "MAINTAINER",
    "RUN",
    "CMD",
    "CMDS",
    "APP",
    "APPCMDS",
    "APPENV",
    "LAUNCH",
    "CNI",
    "CSI",
    "KUBEVERSION",
];

/// What the bundle starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Base {
    /// An empty bundle.
    Scratch,
    /// Another bundle file (`*.bale`), as written in the Kubefile.
    Bundle { path: String },
    /// A directory laid out as a bundle root.
    Directory { path: String },
    /// A bundle in an OCI registry (`REGISTRY/ns/name:tag`, pushed with `bale push`), pulled
    /// into the bundle cache; a path of that name in the context wins.
    Registry { reference: String },
}

/// A build-time step, in Kubefile order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Step {
    Copy(CopyStep),
    Run(RunStep),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyKind {
    Copy,
    /// `ADD`: local sources only; kept apart so the executor may unpack
    /// archives as Docker does.
    Add,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStep {
    pub line: usize,
    pub kind: CopyKind,
    /// Normalized paths relative to the build context (`.` for the context
    /// itself); may contain wildcards, see [`BuildPlan::resolve_sources`].
    pub sources: Vec<String>,
    /// Normalized path relative to the bundle root, `.` for the root.
    pub dest: String,
    /// The destination is a directory (written with a trailing `/`, or the
    /// root); sources are copied into it.
    pub dest_is_dir: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStep {
    pub line: usize,
    pub command: Command,
    /// Variables the command runs with: ARGs with a value and ENV set so far.
    pub env: RunEnv,
}

/// The variables of a RUN step, shared with every other RUN step that sees the same ARGs and
/// ENV (a Kubefile of many RUN lines holds one copy, not one per line).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunEnv(Arc<BTreeMap<String, String>>);

impl RunEnv {
    pub fn get(&self, name: &str) -> Option<&String> {
        self.0.get(name)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, String, String> {
        self.0.iter()
    }
    /// Whether `other` is this very environment, not a copy.
    pub fn shares(&self, other: &RunEnv) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl From<BTreeMap<String, String>> for RunEnv {
    fn from(m: BTreeMap<String, String>) -> Self {
        RunEnv(Arc::new(m))
    }
}

impl<'a> IntoIterator for &'a RunEnv {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::ops::Index<&str> for RunEnv {
    type Output = String;
    fn index(&self, name: &str) -> &String {
        &self.0[name]
    }
}

impl Serialize for RunEnv {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.as_ref().serialize(s)
    }
}

impl<'de> Deserialize<'de> for RunEnv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(RunEnv::from)
    }
}

// The install-time parts of a Kubefile are what the bundle's manifest carries to the site.
pub use bale_contract::manifest::{App, AppRole, Command, InstallStep};

/// Everything a Kubefile says, resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// The Kubefile's name as given to the parser, for messages.
    pub file: String,
    pub from: Base,
    pub steps: Vec<Step>,
    /// ENV at the end of the Kubefile: install-time environment and `*.tmpl`
    /// values.
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Declared ARGs and their values (`None`: declared without a default and
    /// not given with `--build-arg`).
    pub args: BTreeMap<String, Option<String>>,
    pub install_steps: Vec<InstallStep>,
    pub apps: BTreeMap<String, App>,
    /// Supported Kubernetes version or range from `KUBEVERSION`, as written.
    pub kube_version: Option<String>,
    /// `--build-arg` names that no ARG declares.
    pub unused_build_args: Vec<String>,
    /// Non-fatal problems, each as `file:line: message`.
    pub warnings: Vec<String>,
    /// The architecture `${ARCH}` stood for.
    pub arch: String,
    /// A build variable (`${ARCH}`) was used: a build for another architecture parses again.
    pub platform_dependent: bool,
}

/// A Kubefile problem. `Syntax` covers every instruction-level error.
#[derive(Debug, thiserror::Error)]
pub enum KubefileError {
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Plan { file: String, message: String },
    // The cause is part of the text and not a source, so a chain printer shows it once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("invalid --build-arg {arg:?}: {message}")]
    BuildArg { arg: String, message: String },
}

/// Reads and parses the Kubefile at `path`; messages name it as given.
pub fn parse_file(
    path: &Path,
    build_args: &BTreeMap<String, String>,
) -> Result<BuildPlan, KubefileError> {
    parse_file_for(path, build_args, &BuildVars::host())
}

/// [`parse_file`] for a build with the build variables `vars` (the platform being built).
pub fn parse_file_for(
    path: &Path,
    build_args: &BTreeMap<String, String>,
    vars: &BuildVars,
) -> Result<BuildPlan, KubefileError> {
    use std::io::Read;
    let io = |source| KubefileError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_KUBEFILE_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    parse_for(&path.display().to_string(), &text, build_args, vars)
}

/// Splits a `--build-arg NAME=VALUE` argument.
pub fn parse_build_arg(arg: &str) -> Result<(String, String), KubefileError> {
    let fail = |message: &str| KubefileError::BuildArg {
        arg: arg.to_string(),
        message: message.to_string(),
    };
    let (k, v) = arg
        .split_once('=')
        .ok_or_else(|| fail("write NAME=VALUE, e.g. --build-arg VERSION=1.2.3"))?;
    if !lex::is_var_name(k) {
        return Err(fail(
            "the name must be letters, digits and _, not starting with a digit",
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Parses Kubefile `text` for this machine's architecture; `file` is the name used in messages.
pub fn parse(
    file: &str,
    text: &str,
    build_args: &BTreeMap<String, String>,
) -> Result<BuildPlan, KubefileError> {
    parse_for(file, text, build_args, &BuildVars::host())
}

/// [`parse`] with the build variables `vars` (the platform being built).
pub fn parse_for(
    file: &str,
    text: &str,
    build_args: &BTreeMap<String, String>,
    vars: &BuildVars,
) -> Result<BuildPlan, KubefileError> {
    if text.len() > MAX_KUBEFILE_BYTES {
        return Err(KubefileError::Plan {
            file: file.to_string(),
            message: format!(
                "larger than {MAX_KUBEFILE_BYTES} bytes; a Kubefile lists steps, put data in \
                 files of the build context"
            ),
        });
    }
    let mut p = Parser {
        run_env: None,
        run_env_bytes: 0,
        variable_bytes: 0,
        file: file.to_string(),
        build_args,
        used_build_args: BTreeSet::new(),
        from: None,
        steps: Vec::new(),
        env: BTreeMap::new(),
        labels: BTreeMap::new(),
        args: BTreeMap::new(),
        install_steps: Vec::new(),
        apps: BTreeMap::new(),
        appcmds_lines: BTreeMap::new(),
        launched: BTreeMap::new(),
        kube_version: None,
        warnings: Vec::new(),
        vars: vars.clone(),
        used_build_vars: std::cell::Cell::new(false),
        cmds_line: None,
    };
    for l in lex::logical_lines(text) {
        p.instruction(&l)?;
    }
    p.finish()
}

struct Parser<'a> {
    file: String,
    build_args: &'a BTreeMap<String, String>,
    used_build_args: BTreeSet<String>,
    from: Option<(Base, usize)>,
    steps: Vec<Step>,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    args: BTreeMap<String, Option<String>>,
    install_steps: Vec<InstallStep>,
    apps: BTreeMap<String, App>,
    appcmds_lines: BTreeMap<String, usize>,
    launched: BTreeMap<String, usize>,
    kube_version: Option<(String, usize)>,
    warnings: Vec<String>,
    /// The environment of the last RUN step, while no ARG or ENV has changed since.
    run_env: Option<RunEnv>,
    /// Bytes of the distinct RUN environments made so far.
    run_env_bytes: usize,
    /// Bytes of all ARG, ENV and LABEL names and values.
    variable_bytes: usize,
    vars: BuildVars,
    /// Set when an expansion fell back to a build variable.
    used_build_vars: std::cell::Cell<bool>,
    /// Line of the `CMDS` instruction, of which a Kubefile has one.
    cmds_line: Option<usize>,
}

type Res<T> = Result<T, KubefileError>;

/// Bytes of names and values in a map of variables.
fn map_bytes<'a>(m: impl IntoIterator<Item = (&'a String, Option<&'a String>)>) -> usize {
    m.into_iter()
        .map(|(k, v)| k.len() + v.map_or(0, String::len))
        .sum()
}

impl Parser<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> KubefileError {
        KubefileError::Syntax {
            file: self.file.clone(),
            line,
            message: message.into(),
        }
    }

    fn warn(&mut self, line: usize, message: impl AsRef<str>) {
        let w = format!("{}:{line}: {}", self.file, message.as_ref());
        self.warnings.push(w);
    }

    /// Current value of a variable: ENV wins over ARG, as in Docker, and both over the build
    /// variables.
    fn var(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .cloned()
            .or_else(|| self.args.get(name).cloned().flatten())
            .or_else(|| {
                let v = self.vars.get(name);
                if v.is_some() {
                    self.used_build_vars.set(true);
                }
                v
            })
    }

    /// Expands variables in `text`; also returns the names that were not set.
    fn expand_collect(
        &mut self,
        line: usize,
        text: &str,
        mode: lex::Mode,
    ) -> Res<(Vec<String>, Vec<String>)> {
        let lookup = |n: &str| self.var(n);
        let mut ex = Expander::new(&lookup);
        let words = ex
            .words(text, mode)
            .map_err(|e| self.err(line, e.to_string()))?;
        Ok((words, ex.unset))
    }

    /// Expands a path of `instr`, where a variable that is not set is an error: it would
    /// silently name another file (`${ARHC}/bin` is `/bin`).
    fn expand_path(
        &mut self,
        line: usize,
        instr: &str,
        text: &str,
        mode: lex::Mode,
    ) -> Res<Vec<String>> {
        let (words, unset) = self.expand_collect(line, text, mode)?;
        if let Some(name) = unset.first() {
            let known: Vec<&str> = self
                .env
                .keys()
                .chain(self.args.keys())
                .map(String::as_str)
                .chain(["ARCH"])
                .collect();
            let hint = match text::suggest(name, &known) {
                Some(s) => format!("did you mean ${s}? "),
                None => String::new(),
            };
            return Err(self.err(
                line,
                format!(
                    "{instr} {text}: ${name} is not set; {hint}the build variables are \
                     $ARCH (amd64, arm64: the platform being built); declare others with \
                     ARG {name}=default (or ARG {name} and --build-arg {name}=...) or ENV {name}=..."
                ),
            ));
        }
        Ok(words)
    }

    /// Expands variables in `text` with the variables in scope.
    fn expand(&mut self, line: usize, text: &str, mode: lex::Mode) -> Res<Vec<String>> {
        let (words, unset) = self.expand_collect(line, text, mode)?;
        for name in unset {
            self.warn(
                line,
                format!("${name} is not set, so it expands to nothing; declare it with ARG {name}=... or ENV {name}=..."),
            );
        }
        Ok(words)
    }

    fn expand_one(&mut self, line: usize, text: &str, mode: lex::Mode) -> Res<String> {
        let mut w = self.expand(
            line,
            text,
            lex::Mode {
                split: false,
                ..mode
            },
        )?;
        Ok(w.pop().unwrap_or_default())
    }

    fn instruction(&mut self, l: &LogicalLine) -> Res<()> {
        let text = l.text.trim();
        let (kw, rest) = match text.find(char::is_whitespace) {
            Some(i) => (&text[..i], text[i..].trim()),
            None => (text, ""),
        };
        let upper = kw.to_ascii_uppercase();
        let line = l.line;

        if self.from.is_none()
            && upper != "FROM"
            && upper != "ARG"
            && KEYWORDS.contains(&upper.as_str())
        {
            return Err(self.err(
                line,
                format!("{upper} before FROM; a Kubefile starts with FROM (only ARG may come before it), e.g. FROM scratch"),
            ));
        }

        match upper.as_str() {
            "FROM" => self.from_(line, rest),
            "ARG" => self.arg(line, rest),
            "ENV" => self.env_(line, rest),
            "LABEL" => self.label(line, rest),
            "MAINTAINER" => {
                if rest.is_empty() {
                    return Err(self.err(
                        line,
                        "MAINTAINER needs a name, e.g. MAINTAINER Jane Doe <jane@example.com>",
                    ));
                }
                let v = self.expand_one(line, rest, ONE_WORD)?;
                let old = self.labels.insert("maintainer".into(), v.clone());
                self.count_variable(line, "maintainer", old.as_deref(), Some(&v))
            }
            "COPY" => self.copy(line, rest, CopyKind::Copy),
            "ADD" => self.copy(line, rest, CopyKind::Add),
            "RUN" => {
                let command = self.command(line, "RUN", rest)?;
                let env = self.run_env(line)?;
                self.steps.push(Step::Run(RunStep { line, command, env }));
                Ok(())
            }
            "CMD" => self.cmd(line, rest),
            "CMDS" => self.cmds(line, rest),
            "APPENV" => self.appenv(line, rest),
            "APP" => self.app(line, rest, AppRole::App, "APP"),
            "CNI" => self.app(line, rest, AppRole::Cni, "CNI"),
            "CSI" => self.app(line, rest, AppRole::Csi, "CSI"),
            "LAUNCH" => self.launch(line, rest),
            "APPCMDS" => self.appcmds(line, rest),
            "KUBEVERSION" => {
                if let Some((_, first)) = &self.kube_version {
                    return Err(self.err(
                        line,
                        format!("a second KUBEVERSION (the first is at line {first}); keep one"),
                    ));
                }
                let v = self.expand_one(line, rest, ONE_WORD)?;
                if v.trim().is_empty() {
                    return Err(self.err(
                        line,
                        "KUBEVERSION needs a version or range, e.g. KUBEVERSION v1.28.2 or KUBEVERSION >=1.26 <1.30",
                    ));
                }
                self.kube_version = Some((v.trim().to_string(), line));
                Ok(())
            }
            _ => Err(self.err(line, unknown_instruction(kw, &upper))),
        }
    }

    /// The environment of a RUN step at `line`: the last one while ARGs and ENV are unchanged.
    fn run_env(&mut self, line: usize) -> Res<RunEnv> {
        if let Some(env) = &self.run_env {
            return Ok(env.clone());
        }
        let mut env: BTreeMap<String, String> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.run_env_bytes += map_bytes(env.iter().map(|(k, v)| (k, Some(v))));
        if self.run_env_bytes > MAX_RUN_ENV_BYTES {
            return Err(self.err(
                line,
                format!(
                    "the RUN steps' environments add up to more than {MAX_RUN_ENV_BYTES} bytes \
                     (every ARG or ENV between RUN lines makes a new one); set the variables \
                     before the RUN lines, or keep large values in files"
                ),
            ));
        }
        let env = RunEnv::from(env);
        self.run_env = Some(env.clone());
        Ok(env)
    }

    /// Counts a variable set to `new` in place of `old`, and refuses the instruction at
    /// `line` when the ARG, ENV and LABEL values pass [`MAX_VARIABLE_BYTES`] together.
    fn count_variable(
        &mut self,
        line: usize,
        name: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Res<()> {
        let size = |v: Option<&str>| name.len() + v.map_or(0, str::len);
        self.variable_bytes = self.variable_bytes + size(new) - old.map_or(0, |o| size(Some(o)));
        if self.variable_bytes > MAX_VARIABLE_BYTES {
            return Err(self.err(
                line,
                format!(
                    "ARG, ENV and LABEL values add up to more than {MAX_VARIABLE_BYTES} bytes; \
                     keep large values in files of the build context"
                ),
            ));
        }
        Ok(())
    }

    fn from_(&mut self, line: usize, rest: &str) -> Res<()> {
        if let Some((_, first)) = &self.from {
            return Err(self.err(
                line,
                format!(
                    "a second FROM; a Kubefile has one FROM (line {first}) and no build stages"
                ),
            ));
        }
        let words = self.expand_path(line, "FROM", rest, WORDS)?;
        if let Some(flag) = words.iter().find(|w| w.starts_with("--")) {
            return Err(self.err(line, format!("FROM does not take {flag}; write FROM scratch, FROM base.bale or FROM ./rootfs-dir")));
        }
        let base = match words.as_slice() {
            [] => return Err(self.err(line, "FROM needs a base: FROM scratch, FROM base.bale or FROM ./rootfs-dir")),
            [w] if w.eq_ignore_ascii_case("scratch") => Base::Scratch,
            [w] if w.contains("://") => {
                return Err(self.err(
                    line,
                    format!("FROM {w}: a base is a local .bale file or directory; download it before building"),
                ))
            }
            [w] if w.ends_with(".bale") => Base::Bundle { path: w.clone() },
            [w] if crate::share::looks_like_registry_ref(w) => Base::Registry {
                reference: w.clone(),
            },
            [w] => {
                if w.contains(':') && !w.contains('/') {
                    self.warn(
                        line,
                        format!("FROM {w} is read as a directory; a base is a .bale file, a directory, or a bundle in a registry named with its host (FROM registry.example.com/ns/{w})"),
                    );
                }
                Base::Directory { path: w.clone() }
            }
            [_, as_kw, ..] if as_kw.eq_ignore_ascii_case("as") => {
                return Err(self.err(line, "FROM ... AS ...: a Kubefile has no build stages; remove \"AS name\""))
            }
            _ => {
                return Err(self.err(
                    line,
                    format!("FROM takes one base, got {}: FROM scratch, FROM base.bale or FROM ./rootfs-dir", words.len()),
                ))
            }
        };
        self.from = Some((base, line));
        Ok(())
    }

    fn arg(&mut self, line: usize, rest: &str) -> Res<()> {
        let words = self.expand(line, rest, WORDS)?;
        if words.is_empty() {
            return Err(self.err(
                line,
                "ARG needs a name, e.g. ARG VERSION or ARG VERSION=1.0",
            ));
        }
        for w in words {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w.clone(), None),
            };
            if !lex::is_var_name(&name) {
                return Err(self.err(
                    line,
                    format!("ARG name {name:?} is not valid; use letters, digits and _, not starting with a digit"),
                ));
            }
            let value = if let Some(v) = self.build_args.get(&name) {
                self.used_build_args.insert(name.clone());
                Some(v.clone())
            } else if default.is_some() {
                default
            } else {
                // Redeclaring an ARG without a default keeps its value, so the
                // Docker habit of repeating ARGs after FROM works.
                self.args.get(&name).cloned().flatten()
            };
            let old = self.args.insert(name.clone(), value.clone()).flatten();
            self.count_variable(line, &name, old.as_deref(), value.as_deref())?;
        }
        self.run_env = None;
        Ok(())
    }

    /// `KEY=VALUE ...` pairs, or the old `KEY VALUE` form (rest of the line).
    fn pairs(
        &mut self,
        line: usize,
        instr: &str,
        rest: &str,
        example: &str,
    ) -> Res<Vec<(String, String)>> {
        if rest.is_empty() {
            return Err(self.err(
                line,
                format!("{instr} needs a name and a value, e.g. {instr} {example}"),
            ));
        }
        let first_raw = rest.split_whitespace().next().unwrap_or_default();
        if !first_raw.contains('=') {
            let value_raw = rest[first_raw.len()..].trim();
            let key = self.expand_one(line, first_raw, ONE_WORD)?;
            if value_raw.is_empty() {
                return Err(self.err(
                    line,
                    format!("{instr} {key} has no value; write {instr} {key}=value (an empty value is {instr} {key}=)"),
                ));
            }
            let value = self.expand_one(line, value_raw, ONE_WORD)?;
            return Ok(vec![(key, value)]);
        }
        let words = self.expand(line, rest, WORDS)?;
        let mut out = Vec::new();
        for w in words {
            match w.split_once('=') {
                Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(self.err(
                        line,
                        format!("{instr} expects KEY=VALUE pairs, got {w:?}; quote values with spaces: {instr} {example}"),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn env_(&mut self, line: usize, rest: &str) -> Res<()> {
        let pairs = self.pairs(line, "ENV", rest, "PodCIDR=\"100.64.0.0/10\"")?;
        for (k, v) in pairs {
            if !lex::is_var_name(&k) {
                return Err(self.err(
                    line,
                    format!("ENV name {k:?} is not valid; use letters, digits and _, not starting with a digit"),
                ));
            }
            let old = self.env.insert(k.clone(), v.clone());
            self.count_variable(line, &k, old.as_deref(), Some(&v))?;
        }
        self.run_env = None;
        Ok(())
    }

    fn label(&mut self, line: usize, rest: &str) -> Res<()> {
        let pairs = self.pairs(
            line,
            "LABEL",
            rest,
            "version=\"1.0\" description=\"my cluster\"",
        )?;
        for (k, v) in pairs {
            let old = self.labels.insert(k.clone(), v.clone());
            self.count_variable(line, &k, old.as_deref(), Some(&v))?;
        }
        Ok(())
    }

    fn copy(&mut self, line: usize, rest: &str, kind: CopyKind) -> Res<()> {
        let instr = match kind {
            CopyKind::Copy => "COPY",
            CopyKind::Add => "ADD",
        };
        if let Some(flag) = rest
            .split_whitespace()
            .next()
            .filter(|w| w.starts_with("--"))
        {
            let name = flag.split('=').next().unwrap_or(flag);
            let hint = match name {
                "--from" => {
                    "a Kubefile has no build stages; copy from the build context".to_string()
                }
                "--chown" => "files in a bundle are owned by root; change ownership in a CMD step"
                    .to_string(),
                "--chmod" => {
                    "the source file's mode is kept; set it on the file before building".to_string()
                }
                _ => format!("{instr} takes no flags; remove it"),
            };
            return Err(self.err(line, format!("{instr} {name} is not supported: {hint}")));
        }
        let words = if rest.starts_with('[') {
            let items: Vec<String> = serde_json::from_str(rest).map_err(|_| {
                self.err(
                    line,
                    format!("{instr} [...] must be a JSON array of strings in double quotes, e.g. {instr} [\"my dir/\", \"manifests/\"]"),
                )
            })?;
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.extend(self.expand_path(line, instr, &it, RAW)?.pop());
            }
            out
        } else {
            self.expand_path(line, instr, rest, WORDS)?
        };
        let Some((dest_raw, srcs)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
            return Err(self.err(
                line,
                format!("{instr} needs at least a source and a destination, e.g. {instr} manifests/ manifests/"),
            ));
        };
        if dest_raw.is_empty() {
            return Err(self.err(
                line,
                format!("{instr} destination is empty; write {instr} src dest/"),
            ));
        }
        let mut sources = Vec::with_capacity(srcs.len());
        for s in srcs {
            if s.contains("://") {
                let msg = match kind {
                    CopyKind::Add => format!(
                        "ADD cannot download {s}: a build reads local files only; download it in a RUN step \
                         (RUN curl -fLo file.tgz {s}) or beforehand, then COPY it"
                    ),
                    CopyKind::Copy => format!(
                        "COPY copies files from the build context, not URLs ({s}); download it in a RUN step or beforehand"
                    ),
                };
                return Err(self.err(line, msg));
            }
            sources.push(self.context_path(line, instr, "source", s)?);
        }
        let dest = normalize(dest_raw.strip_prefix('/').unwrap_or(dest_raw)).ok_or_else(|| {
            self.err(
                line,
                format!(
                    "{instr} destination {dest_raw:?} leaves the bundle root; remove the \"..\""
                ),
            )
        })?;
        let dest_is_dir = dest_raw.ends_with('/') || dest == ".";
        let several = sources.len() > 1 || sources.iter().any(|s| text::has_glob(s));
        if several && !dest_is_dir {
            return Err(self.err(
                line,
                format!(
                    "{instr} with several sources or a wildcard needs a destination directory ending in /, e.g. {instr} {} {dest_raw}/",
                    srcs.join(" ")
                ),
            ));
        }
        self.steps.push(Step::Copy(CopyStep {
            line,
            kind,
            sources,
            dest,
            dest_is_dir,
        }));
        Ok(())
    }

    /// Validates a path that must stay inside the build context.
    fn context_path(&self, line: usize, instr: &str, what: &str, s: &str) -> Res<String> {
        if s.is_empty() {
            return Err(self.err(line, format!("{instr} {what} is empty")));
        }
        if s.starts_with('/') {
            return Err(self.err(
                line,
                format!("{instr} {what} {s:?} is absolute; {what}s are relative to the build context: move the file into it and write its relative path"),
            ));
        }
        normalize(s).ok_or_else(|| {
            self.err(
                line,
                format!("{instr} {what} {s:?} is outside the build context; move it into the context or build from a higher directory"),
            )
        })
    }

    fn command(&self, line: usize, instr: &str, rest: &str) -> Res<Command> {
        if rest.is_empty() {
            let example = if instr == "RUN" {
                "RUN helm pull ./charts/app"
            } else {
                "CMD kubectl apply -f manifests/"
            };
            return Err(self.err(line, format!("{instr} needs a command, e.g. {example}")));
        }
        if rest.starts_with('[') {
            match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) if v.is_empty() => {
                    return Err(self.err(line, format!("{instr} [] is empty; give a command")))
                }
                Ok(v) => return Ok(Command::Exec(v)),
                Err(_) if looks_like_exec_form(rest) => {
                    return Err(self.err(
                        line,
                        format!("{instr} {rest} is not a valid JSON array; use double quotes: {instr} [\"kubectl\", \"apply\", \"-f\", \"x.yaml\"]"),
                    ))
                }
                // Shell commands may start with `[` (the test builtin).
                Err(_) => {}
            }
        }
        if let Some(doc) = heredoc(rest) {
            return Err(self.err(
                line,
                format!("{instr} heredocs (<<{doc}) are not supported; put the lines in a script, COPY it and {instr} it"),
            ));
        }
        Ok(Command::Shell(rest.to_string()))
    }

    /// A CMD runs at install time where build ARGs do not exist.
    fn warn_build_only_vars(&mut self, line: usize, instr: &str, cmd: &Command) {
        let text = match cmd {
            Command::Shell(s) => s.clone(),
            Command::Exec(v) => v.join(" "),
        };
        let mut seen = BTreeSet::new();
        for name in lex::referenced_vars(&text) {
            if self.args.contains_key(&name)
                && !self.env.contains_key(&name)
                && seen.insert(name.clone())
            {
                self.warn(
                    line,
                    format!("{instr} uses ${name}, a build ARG that is not set at install time; add ENV {name}=${name}"),
                );
            }
        }
    }

    /// `CMD`: a shell command, or sealer's list of shell commands run in order.
    fn cmd(&mut self, line: usize, rest: &str) -> Res<()> {
        let command = self.command(line, "CMD", rest)?;
        let commands = match command {
            Command::Exec(list) => {
                self.warn_argv_list(line, "CMD", &list);
                list.into_iter().map(Command::Shell).collect()
            }
            shell => vec![shell],
        };
        for command in commands {
            self.warn_build_only_vars(line, "CMD", &command);
            self.install_steps.push(InstallStep::Cmd { line, command });
        }
        Ok(())
    }

    /// `CMDS ["cmd", ...]` (newer sealer): shell commands run in order, like CMD's list.
    fn cmds(&mut self, line: usize, rest: &str) -> Res<()> {
        if let Some(first) = self.cmds_line {
            return Err(self.err(
                line,
                format!("a second CMDS (the first is at line {first}); put all commands in one CMDS list"),
            ));
        }
        if rest.is_empty() {
            return Err(self.err(
                line,
                "CMDS needs a list of commands, e.g. CMDS [\"kubectl apply -f manifests/app.yaml\"]",
            ));
        }
        let list = if rest.starts_with('[') {
            match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) if v.is_empty() => {
                    return Err(self.err(line, "CMDS [] is empty; give at least one command"))
                }
                Ok(v) => v,
                Err(_) => {
                    return Err(self.err(
                        line,
                        "CMDS [...] must be a JSON array of strings in double quotes, e.g. CMDS [\"kubectl apply -f a.yaml\", \"helm install b charts/b\"]",
                    ))
                }
            }
        } else {
            // As sealer reads it: text that is not a list is one command.
            vec![rest.to_string()]
        };
        self.cmds_line = Some(line);
        self.warn_argv_list(line, "CMDS", &list);
        for c in list {
            let command = Command::Shell(c);
            self.warn_build_only_vars(line, "CMDS", &command);
            self.install_steps.push(InstallStep::Cmd { line, command });
        }
        Ok(())
    }

    /// A list of single words reads like Docker's argv form, which sealer runs as one shell
    /// command per word.
    fn warn_argv_list(&mut self, line: usize, instr: &str, list: &[String]) {
        if list.len() > 1 && list.iter().all(|c| !c.trim().contains(char::is_whitespace)) {
            self.warn(
                line,
                format!(
                    "{instr} {list:?} runs each element as its own shell command (sealer's meaning), \
                     not as one program with arguments; to run one command write {instr} [{:?}]",
                    list.join(" ")
                ),
            );
        }
    }

    /// `APPENV app K=V ...`: variables for that app's launch commands.
    fn appenv(&mut self, line: usize, rest: &str) -> Res<()> {
        let words = self.expand(line, rest, WORDS)?;
        let Some((name, pairs)) = words.split_first().filter(|(_, p)| !p.is_empty()) else {
            return Err(self.err(
                line,
                "APPENV needs an app name and KEY=VALUE pairs, e.g. APPENV nginx replicas=2",
            ));
        };
        if !self.apps.contains_key(name) {
            return Err(self.err(line, self.unknown_app("APPENV", name)));
        }
        let mut env = Vec::new();
        for p in pairs {
            match p.split_once('=') {
                Some((k, v)) if lex::is_var_name(k) => env.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(self.err(
                        line,
                        format!("APPENV {name}: {p:?} is not KEY=VALUE with a name of letters, digits and _; write APPENV {name} key=value"),
                    ))
                }
            }
        }
        for (k, v) in env {
            self.count_variable(line, &k, None, Some(&v))?;
            if let Some(app) = self.apps.get_mut(name) {
                app.env.insert(k, v);
            }
        }
        Ok(())
    }

    fn app(&mut self, line: usize, rest: &str, role: AppRole, instr: &str) -> Res<()> {
        let words = self.expand_path(line, instr, rest, WORDS)?;
        let Some((name, srcs)) = words.split_first().filter(|(_, s)| !s.is_empty()) else {
            return Err(self.err(
                line,
                format!(
                    "{instr} needs a name and at least one source, e.g. {instr} {} local://{}",
                    example_app(role),
                    example_app(role)
                ),
            ));
        };
        if !is_app_name(name) {
            return Err(self.err(
                line,
                format!("app name {name:?} is not valid; use lowercase letters, digits and -, starting and ending with a letter or digit"),
            ));
        }
        if let Some(prev) = self.apps.get(name) {
            return Err(self.err(
                line,
                format!(
                    "app {name:?} is already defined at line {}; give this one another name",
                    prev.line
                ),
            ));
        }
        if role == AppRole::Cni {
            if let Some(prev) = self.apps.values().find(|a| a.role == AppRole::Cni) {
                return Err(self.err(
                    line,
                    format!("a second CNI ({name}); the cluster has one pod network, already {} at line {}", prev.name, prev.line),
                ));
            }
        }
        let mut sources = Vec::new();
        for s in srcs {
            let path = match s.strip_prefix("local://") {
                Some(p) => p,
                None if s.contains("://") => {
                    return Err(self.err(
                        line,
                        format!("{instr} source {s:?}: only local:// sources are allowed; download it in a RUN step or beforehand and write local://PATH"),
                    ))
                }
                None => {
                    return Err(self.err(line, format!("{instr} source {s:?} needs the local:// prefix: {instr} {name} local://{s}")))
                }
            };
            sources.push(self.context_path(line, instr, "source", path)?);
        }
        self.apps.insert(
            name.clone(),
            App {
                name: name.clone(),
                line,
                role,
                sources,
                cmds: Vec::new(),
                dir: Some(format!("{APP_ROOT}/{name}")),
                env: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn launch(&mut self, line: usize, rest: &str) -> Res<()> {
        let names = self.name_list(line, "LAUNCH", rest)?;
        if names.is_empty() {
            return Err(self.err(
                line,
                "LAUNCH needs app names, e.g. LAUNCH [\"nginx\", \"redis\"]",
            ));
        }
        for name in names {
            if !self.apps.contains_key(&name) {
                return Err(self.err(line, self.unknown_app("LAUNCH", &name)));
            }
            if let Some(prev) = self.launched.get(&name) {
                return Err(self.err(
                    line,
                    format!("app {name:?} is already launched at line {prev}; launch it once"),
                ));
            }
            self.launched.insert(name.clone(), line);
            self.install_steps
                .push(InstallStep::Launch { line, app: name });
        }
        Ok(())
    }

    fn unknown_app(&self, instr: &str, name: &str) -> String {
        let known: Vec<&str> = self.apps.keys().map(String::as_str).collect();
        let mut msg = format!("{instr} names app {name:?} that no APP above defines");
        match text::suggest(name, &known) {
            Some(s) => msg.push_str(&format!("; did you mean {s:?}?")),
            None => msg.push_str(&format!("; define it first: APP {name} local://path")),
        }
        msg
    }

    /// `["a","b"]`, `[a, b]` or `a b`.
    fn name_list(&mut self, line: usize, instr: &str, rest: &str) -> Res<Vec<String>> {
        if rest.starts_with('[') {
            if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
                return Ok(v);
            }
            let Some(inner) = rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) else {
                return Err(self.err(
                    line,
                    format!("{instr} list is not closed with ]; write {instr} [\"a\", \"b\"]"),
                ));
            };
            let words = self.expand(line, &inner.replace(',', " "), WORDS)?;
            return Ok(words);
        }
        let words = self.expand(line, &rest.replace(',', " "), WORDS)?;
        Ok(words)
    }

    fn appcmds(&mut self, line: usize, rest: &str) -> Res<()> {
        let (name, cmds_raw) = match rest.find(char::is_whitespace) {
            Some(i) => (&rest[..i], rest[i..].trim()),
            None => (rest, ""),
        };
        if name.is_empty() || cmds_raw.is_empty() {
            return Err(self.err(
                line,
                "APPCMDS needs an app name and commands, e.g. APPCMDS nginx [\"helm install nginx charts/nginx\"]",
            ));
        }
        if !self.apps.contains_key(name) {
            return Err(self.err(line, self.unknown_app("APPCMDS", name)));
        }
        if let Some(prev) = self.appcmds_lines.get(name) {
            return Err(self.err(line, format!("APPCMDS for {name:?} is already given at line {prev}; put all commands in one list")));
        }
        let cmds = if cmds_raw.starts_with('[') {
            match serde_json::from_str::<Vec<String>>(cmds_raw) {
                // Sealer joins the list into one command (its documented form is
                // ["executable", "param1", ...]); a list of whole commands runs them in order.
                Ok(v) if !v.is_empty() && v.iter().all(|c| !c.trim().contains(char::is_whitespace)) => {
                    vec![v.join(" ")]
                }
                Ok(v) if !v.is_empty() => v,
                Ok(_) => return Err(self.err(line, "APPCMDS [] is empty; give at least one command")),
                Err(_) => {
                    return Err(self.err(
                        line,
                        "APPCMDS [...] must be a JSON array of strings in double quotes, e.g. APPCMDS nginx [\"kubectl apply -f app.yaml\"]",
                    ))
                }
            }
        } else {
            vec![cmds_raw.to_string()]
        };
        self.appcmds_lines.insert(name.to_string(), line);
        if let Some(app) = self.apps.get_mut(name) {
            app.cmds = cmds;
        }
        Ok(())
    }

    fn finish(mut self) -> Res<BuildPlan> {
        let Some((from, _)) = self.from.take() else {
            return Err(KubefileError::Plan {
                file: self.file.clone(),
                message: "no FROM instruction; begin with FROM scratch, FROM base.bale or FROM ./rootfs-dir".into(),
            });
        };
        let unused: Vec<String> = self
            .build_args
            .keys()
            .filter(|k| !self.used_build_args.contains(*k))
            .cloned()
            .collect();
        for k in &unused {
            self.warnings.push(format!(
                "{}: --build-arg {k} was given but no ARG {k} declares it; add ARG {k} or drop the flag",
                self.file
            ));
        }
        // Unlaunched network and storage apps go first, in that order.
        let mut implicit = Vec::new();
        for role in [AppRole::Cni, AppRole::Csi] {
            for app in self.apps.values().filter(|a| a.role == role) {
                if !self.launched.contains_key(&app.name) {
                    implicit.push(InstallStep::Launch {
                        line: app.line,
                        app: app.name.clone(),
                    });
                }
            }
        }
        let unlaunched: Vec<(usize, String)> = self
            .apps
            .values()
            .filter(|a| a.role == AppRole::App && !self.launched.contains_key(&a.name))
            .map(|a| (a.line, a.name.clone()))
            .collect();
        for (line, name) in unlaunched {
            self.warn(
                line,
                format!("APP {name} is defined but never launched; add LAUNCH [\"{name}\"]"),
            );
        }
        implicit.append(&mut self.install_steps);
        Ok(BuildPlan {
            file: self.file,
            from,
            steps: self.steps,
            env: self.env,
            labels: self.labels,
            args: self.args,
            install_steps: implicit,
            apps: self.apps,
            kube_version: self.kube_version.map(|(v, _)| v),
            unused_build_args: unused,
            warnings: self.warnings,
            arch: self.vars.arch.clone(),
            platform_dependent: self.used_build_vars.get(),
        })
    }
}

impl BuildPlan {
    /// Expands the sources of `step` against the build context: wildcards
    /// matched per path component, each result checked to exist and to stay
    /// inside the context after following symlinks. Sorted per source.
    pub fn resolve_sources(
        &self,
        step: &CopyStep,
        context: &Path,
    ) -> Result<Vec<PathBuf>, KubefileError> {
        let instr = match step.kind {
            CopyKind::Copy => "COPY",
            CopyKind::Add => "ADD",
        };
        let err = |message: String| KubefileError::Syntax {
            file: self.file.clone(),
            line: step.line,
            message,
        };
        let root = context.canonicalize().map_err(|source| KubefileError::Io {
            path: context.to_path_buf(),
            cause: source,
        })?;
        let mut out = Vec::new();
        for src in &step.sources {
            let mut found = vec![root.clone()];
            for comp in src.split('/').filter(|c| *c != ".") {
                let mut next = Vec::new();
                for dir in &found {
                    if text::has_glob(comp) {
                        let Ok(entries) = std::fs::read_dir(dir) else {
                            continue;
                        };
                        let mut names: Vec<String> = entries
                            .filter_map(|e| e.ok())
                            .filter_map(|e| e.file_name().into_string().ok())
                            .filter(|n| text::glob_match(comp, n))
                            .collect();
                        names.sort();
                        next.extend(names.into_iter().map(|n| dir.join(n)));
                    } else {
                        let p = dir.join(comp);
                        if p.symlink_metadata().is_ok() {
                            next.push(p);
                        }
                    }
                }
                found = next;
            }
            if found.is_empty() {
                let what = if text::has_glob(src) {
                    "matches no files"
                } else {
                    "does not exist"
                };
                return Err(err(format!(
                    "{instr} source {src:?} {what} in the build context {}",
                    context.display()
                )));
            }
            for p in found {
                let real = p.canonicalize().map_err(|source| KubefileError::Io {
                    path: p.clone(),
                    cause: source,
                })?;
                if !real.starts_with(&root) {
                    return Err(err(format!(
                        "{instr} source {} resolves to {}, outside the build context (a symlink?); copy the file into the context",
                        p.display(),
                        real.display()
                    )));
                }
                out.push(p);
            }
        }
        Ok(out)
    }
}

/// Lexically normalizes a relative path; `None` if it climbs above its root.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    })
}

/// App names become Kubernetes-style names (directories, release names).
fn is_app_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn example_app(role: AppRole) -> &'static str {
    match role {
        AppRole::App => "nginx",
        AppRole::Cni => "calico",
        AppRole::Csi => "openebs",
    }
}

/// `['a', 'b']` or `["a" "b"]`: meant as exec form but not valid JSON. A
/// shell command like `[ "$A" = x ]` has neither a leading quote nor commas.
fn looks_like_exec_form(s: &str) -> bool {
    let inner = s.trim_start_matches('[').trim_start();
    if inner.starts_with('\'') {
        return true;
    }
    let chars: Vec<char> = s.chars().collect();
    chars.windows(2).any(|w| matches!(w, ['"' | '\'', ',']))
        || s.contains("\" ,")
        || s.contains("' ,")
}

/// The delimiter of a heredoc (`<<EOF`, `<<-"EOF"`), which Docker's BuildKit
/// accepts but this line-based format cannot carry.
fn heredoc(s: &str) -> Option<String> {
    let mut rest = s;
    while let Some(i) = rest.find("<<") {
        let after = &rest[i + 2..];
        if after.starts_with('<') {
            // `<<<` is a here-string, fine in one line.
            rest = after.trim_start_matches('<');
            continue;
        }
        let word = after
            .trim_start_matches('-')
            .trim_start_matches(['"', '\'']);
        let n = word
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .count();
        if n > 0 && word.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return Some(word[..n].to_string());
        }
        rest = after;
    }
    None
}

fn unknown_instruction(kw: &str, upper: &str) -> String {
    let dockerfile_only = match upper {
        "WORKDIR" => Some("paths are relative to the build context and COPY destinations to the bundle root; remove it"),
        "ENTRYPOINT" => Some("use CMD for steps that run at install time"),
        "USER" | "EXPOSE" | "VOLUME" | "HEALTHCHECK" | "STOPSIGNAL" | "SHELL" | "ONBUILD" => {
            Some("it has no meaning in a cluster bundle; remove it")
        }
        _ => None,
    };
    if let Some(hint) = dockerfile_only {
        return format!(
            "{upper} is a Dockerfile instruction that a Kubefile does not support: {hint}"
        );
    }
    match text::suggest(upper, KEYWORDS) {
        Some(s) => format!("unknown instruction {kw:?}; did you mean {s}?"),
        None => format!(
            "unknown instruction {kw:?}; a Kubefile knows {} (if this line continues the one before, end that line with \\)",
            KEYWORDS.join(", ")
        ),
    }
}
