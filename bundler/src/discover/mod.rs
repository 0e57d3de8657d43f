//! Image discovery without a cluster ("lite build").
//!
//! Finds the images a bundle needs from what is in the build context:
//! - `imageList` files (context root or anywhere under `manifests/`);
//! - every key ending in `image` (or `images`) in YAML under `manifests/`,
//!   all documents of each file; `*.yaml.tmpl` files are rendered with
//!   [`DiscoverOptions::env`] first;
//! - charts under `charts/` (and chart directories under `manifests/`):
//!   rendered with `helm template` when helm is available, else their
//!   values.yaml files are read;
//! - what the Kubefile's `COPY`/`ADD`/`APP` lines bring in from elsewhere in the context
//!   ([`DiscoverOptions::copied`]): YAML, `imageList` files and charts, wherever they come
//!   from. Where such content lands outside the bundle's `manifests/` and `charts/`, only YAML
//!   documents that are Kubernetes objects (`apiVersion` and `kind`) are read, so that a
//!   program's own config file with an `image:` key is not taken for a manifest;
//! - minus `.baleignore-images` and [`DiscoverOptions::ignore`].
//!
//! A reference that cannot be known or parsed is a warning, not an error: the
//! listing shows it, and the user decides.

mod helm;
mod scan;

use crate::imageref::ImageRef;
use crate::kubefile::{render_template, text};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// Ignore file read from the build context root.
pub const IGNORE_FILE: &str = ".baleignore-images";
/// Name of image list files.
pub const IMAGE_LIST: &str = "imageList";

/// Whether and which helm renders charts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HelmMode {
    /// `bin/helm` in the build context, else `helm` on the search path.
    #[default]
    Auto,
    /// This binary.
    Binary(PathBuf),
    /// Never run helm; read values.yaml only.
    Off,
}

#[derive(Debug, Clone, Default)]
pub struct DiscoverOptions {
    /// Ignore rules in addition to `.baleignore-images`: exact references
    /// (without a tag: every tag of that repository) or globs.
    pub ignore: Vec<String>,
    pub helm: HelmMode,
    /// Directories searched for helm in [`HelmMode::Auto`]; `None` uses PATH.
    pub search_path: Option<OsString>,
    /// Values for rendering `*.yaml.tmpl` manifests (the Kubefile's ENV).
    pub env: BTreeMap<String, String>,
    /// Files and directories that the Kubefile copies into the bundle; those outside the
    /// context's `manifests/` and `charts/` (which are scanned anyway) are scanned too.
    pub copied: Vec<CopiedInput>,
}

/// Content a Kubefile instruction brings into the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedInput {
    /// A file or directory inside the build context.
    pub source: PathBuf,
    /// Where it lands in the bundle (`.` for the root), which decides how strictly YAML is
    /// read: see the module documentation.
    pub dest: String,
    /// The instruction, for locations: `Kubefile:7 (COPY)`.
    pub origin: String,
}

impl CopiedInput {
    /// Content that lands under `manifests/` or `charts/` is read like the context's own.
    fn lands_in_manifests(&self) -> bool {
        ["manifests", "charts"]
            .iter()
            .any(|d| self.dest == *d || self.dest.starts_with(&format!("{d}/")))
    }
}

/// How files found on one path are read.
#[derive(Debug, Clone, Default)]
pub(crate) struct Style {
    /// Only documents with `apiVersion` and `kind` count.
    pub kube_only: bool,
    /// Appended to every location, e.g. ` (via Kubefile:7 (COPY))`.
    pub via: String,
}

/// A place an image was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    /// Path relative to the build context, `/`-separated.
    pub file: String,
    /// Where inside, e.g. `doc 2 (Deployment web) .spec.template.spec.containers[0].image`
    /// or `line 3`.
    pub place: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.place.is_empty() {
            f.write_str(&self.file)
        } else {
            write!(f, "{}: {}", self.file, self.place)
        }
    }
}

/// Something the user should look at; discovery went on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    pub file: String,
    pub place: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.file.is_empty(), self.place.is_empty()) {
            (true, _) => f.write_str(&self.message),
            (false, true) => write!(f, "{}: {}", self.file, self.message),
            (false, false) => write!(f, "{}: {}: {}", self.file, self.place, self.message),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundImage {
    /// Normalized reference, the sort and de-duplication key.
    pub reference: String,
    /// The first spelling parsed.
    pub image: ImageRef,
    /// Every spelling seen, sorted; bundles keep these names.
    pub written: Vec<String>,
    /// Every place it was found, in scan order.
    pub locations: Vec<Location>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoredImage {
    pub reference: String,
    pub written: Vec<String>,
    /// The rule as written.
    pub rule: String,
    /// Where the rule is: `.baleignore-images:3` or `--ignore-image`.
    pub rule_origin: String,
    pub locations: Vec<Location>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Sorted by normalized reference.
    pub images: Vec<FoundImage>,
    pub ignored: Vec<IgnoredImage>,
    pub warnings: Vec<Warning>,
    /// The helm binary that rendered charts, if one did.
    pub helm: Option<PathBuf>,
}

impl Discovery {
    /// The normalized references, sorted.
    pub fn references(&self) -> Vec<&str> {
        self.images.iter().map(|i| i.reference.as_str()).collect()
    }

    pub fn find(&self, reference: &str) -> Option<&FoundImage> {
        let key = ImageRef::parse(reference).map(|r| r.normalized()).ok()?;
        self.images.iter().find(|i| i.reference == key)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    // The cause is part of the text and not a source, so a chain printer shows it once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Ignore { origin: String, message: String },
}

/// Raw findings before grouping.
#[derive(Default)]
pub(crate) struct Collector {
    hits: Vec<(ImageRef, Location)>,
    warnings: Vec<Warning>,
}

impl Collector {
    /// Records a reference, or a warning in scan order if it does not parse.
    fn hit(&mut self, written: &str, location: Location) {
        match ImageRef::parse(written) {
            Ok(image) => self.hits.push((image, location)),
            Err(e) => self.warnings.push(Warning {
                file: location.file,
                place: location.place,
                message: format!("{e}; skipped"),
            }),
        }
    }

    fn warn(&mut self, file: &str, place: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Warning {
            file: file.to_string(),
            place: place.into(),
            message: message.into(),
        });
    }
}

/// Finds the images that the build context `context` needs.
pub fn discover(context: &Path, opts: &DiscoverOptions) -> Result<Discovery, DiscoverError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DiscoverError::Io {
            path,
            cause: source,
        }
    };
    let meta = std::fs::metadata(context).map_err(io(context))?;
    if !meta.is_dir() {
        return Err(DiscoverError::Io {
            path: context.to_path_buf(),
            cause: std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "the build context is not a directory",
            ),
        });
    }
    let mut rules = ignore_rules(context, opts)?;
    let mut c = Collector::default();
    let mut charts = Vec::new();

    let root_list = context.join(IMAGE_LIST);
    let plain = Style::default();
    if root_list.is_file() {
        let file = rel(context, &root_list);
        if let Some(text) = read_text(&root_list, &file, &mut c)? {
            scan::scan_image_list(&text, &file, &plain.via, &mut c);
        }
    }
    let manifests = context.join("manifests");
    if manifests.is_dir() {
        scan_manifests(context, &manifests, opts, &plain, &mut c, &mut charts)?;
    }
    let charts_dir = context.join("charts");
    if charts_dir.is_dir() {
        find_charts(&charts_dir, &mut charts)?;
    }
    scan_copied(context, opts, &mut c, &mut charts)?;
    let helm = if charts.is_empty() {
        None
    } else {
        helm::find_helm(context, opts)
    };
    for chart in &charts {
        helm::scan_chart(context, chart, helm.as_deref(), opts, &mut c)?;
    }

    Ok(group(c, &mut rules, helm))
}

fn group(c: Collector, rules: &mut [Rule], helm: Option<PathBuf>) -> Discovery {
    struct Group {
        image: ImageRef,
        written: BTreeSet<String>,
        locations: Vec<Location>,
    }
    let mut warnings = c.warnings;
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for (image, loc) in c.hits {
        let g = groups.entry(image.normalized()).or_insert_with(|| Group {
            image: image.clone(),
            written: BTreeSet::new(),
            locations: Vec::new(),
        });
        g.written.insert(image.original);
        if !g.locations.contains(&loc) {
            g.locations.push(loc);
        }
    }

    let mut out = Discovery {
        helm,
        ..Default::default()
    };
    for (reference, g) in groups {
        let written: Vec<String> = g.written.into_iter().collect();
        let rule = rules
            .iter_mut()
            .find(|r| r.matches(&reference, &g.image, &written));
        match rule {
            Some(rule) => {
                rule.used = true;
                out.ignored.push(IgnoredImage {
                    reference,
                    written,
                    rule: rule.text.clone(),
                    rule_origin: rule.origin.clone(),
                    locations: g.locations,
                });
            }
            None => out.images.push(FoundImage {
                reference,
                image: g.image,
                written,
                locations: g.locations,
            }),
        }
    }
    for r in rules.iter().filter(|r| !r.used) {
        warnings.push(Warning {
            file: String::new(),
            place: String::new(),
            message: format!("{}: ignore rule {:?} matched no image", r.origin, r.text),
        });
    }
    out.warnings = warnings;
    out
}

/// The context's directories that are scanned whatever the Kubefile says; copied content
/// inside them is not scanned twice.
fn always_scanned(context: &Path) -> [PathBuf; 3] {
    [
        context.join("manifests"),
        context.join("charts"),
        context.join(IMAGE_LIST),
    ]
}

/// What `COPY`/`ADD`/`APP` bring in from elsewhere in the context.
fn scan_copied(
    context: &Path,
    opts: &DiscoverOptions,
    c: &mut Collector,
    charts: &mut Vec<helm::Chart>,
) -> Result<(), DiscoverError> {
    let skip = always_scanned(context);
    let mut seen: BTreeSet<(PathBuf, bool)> = BTreeSet::new();
    for input in &opts.copied {
        let src = &input.source;
        if skip.iter().any(|d| src.starts_with(d)) {
            continue;
        }
        let style = Style {
            kube_only: !input.lands_in_manifests(),
            via: format!(" (via {})", input.origin),
        };
        // The same source copied twice is reported once, at its first instruction.
        if !seen.insert((src.clone(), style.kube_only)) {
            continue;
        }
        let file = rel(context, src);
        let Ok(meta) = std::fs::metadata(src) else {
            c.warn(
                &file,
                "",
                format!(
                    "named by {} but not in the build context (yet); images in it are not listed",
                    input.origin
                ),
            );
            continue;
        };
        if meta.is_dir() {
            if src.join("Chart.yaml").is_file() {
                push_chart(charts, src.clone(), false, &style.via);
            } else {
                scan_manifests(context, src, opts, &style, c, charts)?;
            }
        } else {
            scan_file(context, src, opts, &style, c, charts)?;
        }
    }
    Ok(())
}

fn push_chart(charts: &mut Vec<helm::Chart>, dir: PathBuf, packaged: bool, via: &str) {
    if !charts.iter().any(|ch| ch.dir == dir) {
        charts.push(helm::Chart {
            dir,
            packaged,
            via: via.to_string(),
        });
    }
}

fn scan_manifests(
    context: &Path,
    dir: &Path,
    opts: &DiscoverOptions,
    style: &Style,
    c: &mut Collector,
    charts: &mut Vec<helm::Chart>,
) -> Result<(), DiscoverError> {
    // A copy of the whole context must not scan manifests/ and charts/ twice, nor walk the
    // image layouts under images/.
    let skip = if style.via.is_empty() {
        Vec::new()
    } else {
        let mut v = always_scanned(context).to_vec();
        v.push(context.join("images"));
        v
    };
    for entry in sorted_entries(dir)? {
        if skip.contains(&entry) {
            continue;
        }
        let file = rel(context, &entry);
        let is_link = entry
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink());
        if entry.is_dir() {
            if entry.join("Chart.yaml").is_file() {
                push_chart(charts, entry, false, &style.via);
            } else if is_link {
                // Following directory links could loop; say so rather than guess.
                c.warn(
                    &file,
                    "",
                    "symlinked directory not followed; copy its files into manifests/",
                );
            } else {
                scan_manifests(context, &entry, opts, style, c, charts)?;
            }
            continue;
        }
        if entry.is_file() {
            scan_file(context, &entry, opts, style, c, charts)?;
        }
    }
    Ok(())
}

/// One file: an image list, YAML (or JSON), a `.yaml.tmpl` template, or, brought in by a
/// Kubefile line, a packaged chart. Anything else is not about images.
fn scan_file(
    context: &Path,
    path: &Path,
    opts: &DiscoverOptions,
    style: &Style,
    c: &mut Collector,
    charts: &mut Vec<helm::Chart>,
) -> Result<(), DiscoverError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let file = rel(context, path);
    if name == IMAGE_LIST {
        if let Some(text) = read_text(path, &file, c)? {
            scan::scan_image_list(&text, &file, &style.via, c);
        }
        return Ok(());
    }
    let lower = name.to_ascii_lowercase();
    let is_yaml = |n: &str| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".json");
    if let Some(base) = lower.strip_suffix(".tmpl") {
        if !is_yaml(base) {
            return Ok(());
        }
        let Some(text) = read_text(path, &file, c)? else {
            return Ok(());
        };
        match render_template(&file, &text, &opts.env) {
            Ok(rendered) => scan_yaml_file(&rendered, &file, style, c),
            Err(e) => c.warn(
                &file,
                "",
                format!("template not rendered, so not scanned: {e}"),
            ),
        }
    } else if is_yaml(&lower) {
        if let Some(text) = read_text(path, &file, c)? {
            scan_yaml_file(&text, &file, style, c);
        }
    } else if lower.ends_with(".tgz") && !style.via.is_empty() && !style.kube_only {
        // A packaged chart copied into charts/.
        push_chart(charts, path.to_path_buf(), true, &style.via);
    }
    Ok(())
}

fn scan_yaml_file(text: &str, file: &str, style: &Style, c: &mut Collector) {
    let src = scan::Source {
        file,
        prefix: "",
        numbered: true,
        app_version: None,
        kube_only: style.kube_only,
        via: &style.via,
    };
    scan::scan_yaml(text, &src, 1, c);
}

/// Chart roots under `dir`: the first directory on each branch that has a
/// Chart.yaml (its own subcharts belong to it), and packaged `.tgz` charts.
fn find_charts(dir: &Path, charts: &mut Vec<helm::Chart>) -> Result<(), DiscoverError> {
    for entry in sorted_entries(dir)? {
        if entry.is_dir() {
            if entry.join("Chart.yaml").is_file() {
                push_chart(charts, entry, false, "");
            } else if !entry
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                find_charts(&entry, charts)?;
            }
        } else if entry.is_file() && entry.extension().is_some_and(|e| e == "tgz") {
            push_chart(charts, entry, true, "");
        }
    }
    Ok(())
}

/// Directory entries sorted by name, so results never depend on the
/// filesystem's order.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, DiscoverError> {
    let io = |source| DiscoverError::Io {
        path: dir.to_path_buf(),
        cause: source,
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        out.push(e.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

/// Reads a text file; a file that is not UTF-8 is a warning, not an error.
pub(crate) fn read_text(
    path: &Path,
    file: &str,
    c: &mut Collector,
) -> Result<Option<String>, DiscoverError> {
    let bytes = std::fs::read(path).map_err(|source| DiscoverError::Io {
        path: path.to_path_buf(),
        cause: source,
    })?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(Some(s)),
        Err(_) => {
            c.warn(file, "", "not UTF-8 text; skipped");
            Ok(None)
        }
    }
}

/// `path` relative to the context, `/`-separated, for messages.
pub(crate) fn rel(context: &Path, path: &Path) -> String {
    let r = path.strip_prefix(context).unwrap_or(path);
    r.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

struct Rule {
    text: String,
    origin: String,
    matcher: Matcher,
    used: bool,
}

enum Matcher {
    Glob(String),
    /// Every tag and digest of a repository (`domain/path`).
    Repository(String),
    /// One normalized reference.
    Exact(String),
}

impl Rule {
    fn parse(text: &str, origin: String) -> Result<Rule, DiscoverError> {
        let matcher = if text::has_glob(text) {
            Matcher::Glob(text.to_string())
        } else {
            let r = ImageRef::parse(text).map_err(|e| DiscoverError::Ignore {
                origin: origin.clone(),
                message: format!("{e}; write an image reference or a glob such as quay.io/*"),
            })?;
            if r.tag.is_none() && r.digest.is_none() {
                Matcher::Repository(r.name())
            } else {
                Matcher::Exact(r.normalized())
            }
        };
        Ok(Rule {
            text: text.to_string(),
            origin,
            matcher,
            used: false,
        })
    }

    fn matches(&self, normalized: &str, image: &ImageRef, written: &[String]) -> bool {
        match &self.matcher {
            // Globs see both spellings so that `nginx:*` and
            // `docker.io/library/*` both work.
            Matcher::Glob(g) => {
                text::glob_match(g, normalized) || written.iter().any(|w| text::glob_match(g, w))
            }
            Matcher::Repository(name) => image.name() == *name,
            Matcher::Exact(n) => n == normalized,
        }
    }
}

fn ignore_rules(context: &Path, opts: &DiscoverOptions) -> Result<Vec<Rule>, DiscoverError> {
    let mut rules = Vec::new();
    let path = context.join(IGNORE_FILE);
    if path.is_file() {
        let text = std::fs::read_to_string(&path).map_err(|source| DiscoverError::Io {
            path: path.clone(),
            cause: source,
        })?;
        for (i, raw) in text.lines().enumerate() {
            let line = scan::strip_comment(raw).trim();
            if !line.is_empty() {
                rules.push(Rule::parse(line, format!("{IGNORE_FILE}:{}", i + 1))?);
            }
        }
    }
    for r in &opts.ignore {
        rules.push(Rule::parse(r.trim(), "--ignore-image".to_string())?);
    }
    Ok(rules)
}

/// Human-readable listing for `bale build --list-images`: each image with the
/// places it was found, then ignored images, then warnings, then a count.
pub fn format_listing(d: &Discovery) -> String {
    let mut s = String::new();
    for img in &d.images {
        s.push_str(&img.reference);
        s.push('\n');
        let others: Vec<&str> = img
            .written
            .iter()
            .map(String::as_str)
            .filter(|w| *w != img.reference)
            .collect();
        if !others.is_empty() {
            s.push_str(&format!("    written as: {}\n", others.join(", ")));
        }
        for loc in &img.locations {
            s.push_str(&format!("    {loc}\n"));
        }
    }
    if !d.ignored.is_empty() {
        s.push_str("\nignored:\n");
        for img in &d.ignored {
            s.push_str(&format!(
                "  {} (rule {:?}, {})\n",
                img.reference, img.rule, img.rule_origin
            ));
            for loc in &img.locations {
                s.push_str(&format!("    {loc}\n"));
            }
        }
    }
    if !d.warnings.is_empty() {
        s.push_str("\nwarnings:\n");
        for w in &d.warnings {
            s.push_str(&format!("  {w}\n"));
        }
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    s.push_str(&format!(
        "\n{}, {} ignored, {}\n",
        plural(d.images.len(), "image", "images"),
        d.ignored.len(),
        plural(d.warnings.len(), "warning", "warnings"),
    ));
    s
}
