//! Finding image strings in YAML documents and `imageList` files.

use super::{Collector, Location};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// Where the documents being scanned come from.
pub(super) struct Source<'a> {
    /// Context-relative file shown in locations.
    pub file: &'a str,
    /// Put before `doc N`, e.g. `helm template: `; empty for plain files.
    pub prefix: &'a str,
    /// Number documents (`doc N (Kind name)`); off for values.yaml.
    pub numbered: bool,
    /// A chart's appVersion, the default tag of `image: {repository}` maps.
    pub app_version: Option<&'a str>,
    /// Read only documents that are Kubernetes objects (`apiVersion` and `kind`).
    pub kube_only: bool,
    /// Appended to every place, e.g. ` (via Kubefile:7 (COPY))`; empty for the context's own
    /// manifests.
    pub via: &'a str,
}

/// Scans every document of a YAML stream, numbering them from `first_doc`.
/// Returns how many documents were read.
pub(super) fn scan_yaml(
    text: &str,
    src: &Source<'_>,
    first_doc: usize,
    c: &mut Collector,
) -> usize {
    // libyaml takes quadratic time on deep nesting before serde_yaml's depth limit.
    if let Err(e) = bale_yamlguard::check(text, bale_yamlguard::Limits::MANIFEST) {
        let place = src.via.trim_start().to_string();
        c.warn(
            src.file,
            place,
            format!("not read ({e}); images in it (if any) were not found"),
        );
        return 0;
    }
    let mut n = 0;
    for de in serde_yaml::Deserializer::from_str(text) {
        let doc_no = first_doc + n;
        n += 1;
        let mut value = match Value::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                let place = if src.numbered {
                    format!("{}doc {doc_no}{}", src.prefix, src.via)
                } else {
                    src.via.trim_start().to_string()
                };
                c.warn(
                    src.file,
                    place,
                    format!("not valid YAML ({e}); images in it (if any) were not found"),
                );
                // The parser cannot resume after a syntax error.
                break;
            }
        };
        // `<<: *anchor` merges are common in hand-written manifests.
        let _ = value.apply_merge();
        if src.kube_only && !is_kube_object(&value) {
            continue;
        }
        if is_crd(&value) {
            // A custom resource's definition: its schema's `image` properties describe a
            // field and are never images (the custom resources themselves are scanned).
            continue;
        }
        let prefix = if src.numbered {
            format!("{}doc {doc_no}{} ", src.prefix, describe(&value))
        } else {
            src.prefix.to_string()
        };
        let ctx = Ctx {
            src,
            prefix: &prefix,
        };
        let mut path = String::new();
        walk(&value, &mut path, &ctx, c);
    }
    n
}

/// A document with string `apiVersion` and `kind`: what kubectl would apply.
fn is_kube_object(doc: &Value) -> bool {
    doc.get("apiVersion").is_some_and(Value::is_string)
        && doc.get("kind").is_some_and(Value::is_string)
}

fn is_crd(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition")
        && doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("apiextensions.k8s.io/"))
}

struct Ctx<'a> {
    src: &'a Source<'a>,
    prefix: &'a str,
}

impl Ctx<'_> {
    fn location(&self, path: &str) -> Location {
        Location {
            file: self.src.file.to_string(),
            place: format!("{}{}", self.prefix, path).trim().to_string() + self.src.via,
        }
    }
}

/// ` (Deployment web)` from kind and metadata.name, if present.
fn describe(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str);
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str);
    match (kind, name) {
        (Some(k), Some(n)) => format!(" ({k} {n})"),
        (Some(k), None) => format!(" ({k})"),
        (None, Some(n)) => format!(" ({n})"),
        (None, None) => String::new(),
    }
}

fn key_string(k: &Value) -> Option<String> {
    match k {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn push_key(path: &mut String, key: &str) {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        path.push('.');
        path.push_str(key);
    } else {
        path.push_str(&format!("[{key:?}]"));
    }
}

fn walk(v: &Value, path: &mut String, ctx: &Ctx<'_>, c: &mut Collector) {
    match v {
        Value::Mapping(m) => {
            for (k, val) in m {
                let Some(key) = key_string(k) else { continue };
                let len = path.len();
                push_key(path, &key);
                let lower = key.to_ascii_lowercase();
                if lower == "baseimage" {
                    base_image(m, val, path, ctx, c);
                } else if lower.ends_with("image") {
                    image_value(val, path, ctx, c);
                } else if lower == "args" || lower == "command" {
                    argument_images(val, path, ctx, c);
                } else if lower == "env" {
                    env_images(val, path, ctx, c);
                    walk(val, path, ctx, c);
                } else if lower.ends_with("images") {
                    images_value(val, path, ctx, c);
                } else {
                    walk(val, path, ctx, c);
                }
                path.truncate(len);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, ctx, c);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => walk(&t.value, path, ctx, c),
        _ => {}
    }
}

/// The value of a key ending in `image`.
fn image_value(v: &Value, path: &mut String, ctx: &Ctx<'_>, c: &mut Collector) {
    match v {
        Value::String(s) => candidate(s, path, ctx, c),
        Value::Mapping(m) if m.contains_key("repository") => compose(m, path, ctx, c),
        Value::Mapping(_) => {
            c.warn(
                ctx.src.file,
                ctx.location(path).place,
                "a map without \"repository\", not an image reference; skipped (keys inside it are still scanned)",
            );
            walk(v, path, ctx, c);
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                image_value(item, path, ctx, c);
                path.truncate(len);
            }
        }
        Value::Tagged(t) => image_value(&t.value, path, ctx, c),
        other => not_a_string(other, path, ctx, c),
    }
}

/// The value of a key ending in `images`: usually a list of references. Maps
/// in it without `repository` (kustomize's `images:` overrides) are not
/// images themselves, so they are only walked.
fn images_value(v: &Value, path: &mut String, ctx: &Ctx<'_>, c: &mut Collector) {
    match v {
        Value::String(s) => candidate(s, path, ctx, c),
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                match item {
                    Value::String(s) => candidate(s, path, ctx, c),
                    Value::Mapping(m) if m.contains_key("repository") => compose(m, path, ctx, c),
                    Value::Mapping(_) | Value::Sequence(_) => walk(item, path, ctx, c),
                    other => not_a_string(other, path, ctx, c),
                }
                path.truncate(len);
            }
        }
        Value::Mapping(_) | Value::Tagged(_) => walk(v, path, ctx, c),
        other => not_a_string(other, path, ctx, c),
    }
}

/// An operator's `baseImage` (Prometheus, Alertmanager, Thanos custom resources): a
/// repository the operator completes with the resource's `version` (or `tag`). Without a tag
/// of its own and without such a field, the image cannot be told, and listing it as
/// `:latest` would carry the wrong one.
fn base_image(parent: &Mapping, v: &Value, path: &mut String, ctx: &Ctx<'_>, c: &mut Collector) {
    let Value::String(s) = v else {
        return image_value(v, path, ctx, c);
    };
    let s = s.trim();
    let pinned = s.contains('@') || s.rsplit('/').next().is_some_and(|last| last.contains(':'));
    if pinned || s.is_empty() || is_templated(s) {
        return candidate(s, path, ctx, c);
    }
    let version = ["tag", "version"].iter().find_map(|k| scalar(parent, k));
    match version {
        Some(v) if !is_templated(&v) => {
            let mut loc = ctx.location(path);
            let at = loc.place.len() - ctx.src.via.len();
            loc.place
                .insert_str(at, " (tag from the resource's version)");
            c.hit(&format!("{s}:{v}"), loc);
        }
        _ => c.warn(
            ctx.src.file,
            ctx.location(path).place,
            format!(
                "baseImage {s:?} has no tag and the resource gives no version: its operator \
                 picks the tag, so the image cannot be known; skipped (list the real image in \
                 imageList)"
            ),
        ),
    }
}

/// Registries whose names in a container's arguments or environment are taken as images.
/// Arguments hold many other strings; only a reference that names one of these (or a host
/// under one of the suffixes) and pins a tag or digest is counted.
const KNOWN_REGISTRIES: &[&str] = &[
    "docker.io",
    "registry-1.docker.io",
    "quay.io",
    "ghcr.io",
    "gcr.io",
    "registry.k8s.io",
    "k8s.gcr.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
    "registry.gitlab.com",
    "nvcr.io",
    "docker.elastic.co",
    "registry.access.redhat.com",
    "registry.redhat.io",
];
const KNOWN_REGISTRY_SUFFIXES: &[&str] = &[
    ".gcr.io",
    ".pkg.dev",
    ".aliyuncs.com",
    ".azurecr.io",
    ".amazonaws.com",
];

/// `s` names an image of a known registry with a tag or digest: `quay.io/x/y:v1`.
fn pinned_known_image(s: &str) -> bool {
    let Some((host, rest)) = s.split_once('/') else {
        return false;
    };
    let known = KNOWN_REGISTRIES.contains(&host)
        || KNOWN_REGISTRY_SUFFIXES.iter().any(|x| host.ends_with(x));
    let pinned = rest.contains('@') || rest.rsplit('/').next().is_some_and(|l| l.contains(':'));
    known && pinned && crate::imageref::ImageRef::parse(s).is_ok()
}

/// The image an argument names, itself or as a flag's value (`--image=quay.io/x:v1`).
fn argument_image(arg: &str) -> Option<&str> {
    let arg = arg.trim();
    let value = match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with('-') => value,
        _ => arg,
    };
    pinned_known_image(value).then_some(value)
}

/// A container's `args` or `command`: sidecars and operators are often handed the images
/// they start (config reloaders, ACME solvers) as arguments.
fn argument_images(v: &Value, path: &mut String, ctx: &Ctx<'_>, c: &mut Collector) {
    let Value::Sequence(items) = v else { return };
    for (i, item) in items.iter().enumerate() {
        if let Value::String(s) = item {
            if let Some(image) = argument_image(s) {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                c.hit(image, ctx.location(path));
                path.truncate(len);
            }
        }
    }
}

/// A container's `env`: `value`s that name images (operators read the images they deploy
/// from their environment).
fn env_images(v: &Value, path: &mut String, ctx: &Ctx<'_>, c: &mut Collector) {
    let Value::Sequence(items) = v else { return };
    for (i, item) in items.iter().enumerate() {
        let Some(Value::String(s)) = item.get("value") else {
            continue;
        };
        if pinned_known_image(s.trim()) {
            let len = path.len();
            path.push_str(&format!("[{i}].value"));
            c.hit(s.trim(), ctx.location(path));
            path.truncate(len);
        }
    }
}

/// sealer's names for the registry it runs on each node: images written under them were
/// pushed there by sealer, and their original names are not in the reference.
const SEALER_LOCAL_REGISTRIES: &[&str] =
    &["sea.hub:5000", "sea.hub", "sealer.hub:5000", "sealer.hub"];

fn not_a_string(v: &Value, path: &str, ctx: &Ctx<'_>, c: &mut Collector) {
    let what = match v {
        Value::Null => "empty (null)".to_string(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        _ => "not a string".to_string(),
    };
    c.warn(
        ctx.src.file,
        ctx.location(path).place,
        format!("value is {what}, not an image reference; skipped"),
    );
}

fn is_templated(s: &str) -> bool {
    s.contains("{{") || s.contains("${")
}

fn candidate(s: &str, path: &str, ctx: &Ctx<'_>, c: &mut Collector) {
    let s = s.trim();
    let loc = ctx.location(path);
    if s.is_empty() {
        c.warn(ctx.src.file, loc.place, "value is an empty string; skipped");
    } else if is_templated(s) {
        c.warn(
            ctx.src.file,
            loc.place,
            format!("value {s:?} is templated, so the image cannot be known before install; skipped (list the real image in manifests/imageList)"),
        );
    } else if let Some(alias) = sealer_alias(s) {
        c.warn(
            ctx.src.file,
            loc.place,
            format!(
                "{s:?} names sealer's local registry ({alias}), not where the image comes from; \
                 skipped. Write the image's original name (bale serves every image on the \
                 nodes under its original name), or list it in imageList"
            ),
        );
    } else {
        c.hit(s, loc);
    }
}

/// The sealer local-registry alias a reference is written under, if any.
fn sealer_alias(s: &str) -> Option<&'static str> {
    let host = s.split_once('/')?.0;
    SEALER_LOCAL_REGISTRIES.iter().copied().find(|a| *a == host)
}

fn scalar(m: &Mapping, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Helm's `image: {registry, repository, tag, digest}` convention.
fn compose(m: &Mapping, path: &str, ctx: &Ctx<'_>, c: &mut Collector) {
    let mut loc = ctx.location(path);
    let Some(repository) = scalar(m, "repository") else {
        c.warn(ctx.src.file, loc.place, "\"repository\" is empty; skipped");
        return;
    };
    let registry = scalar(m, "registry");
    let digest = scalar(m, "digest");
    let mut tag = scalar(m, "tag");
    if tag.is_none() && digest.is_none() {
        if let Some(app) = ctx.src.app_version {
            // Charts conventionally default an empty tag to .Chart.AppVersion.
            tag = Some(app.to_string());
            let at = loc.place.len() - ctx.src.via.len();
            loc.place
                .insert_str(at, " (tag from Chart.yaml appVersion)");
        }
    }
    let mut s = String::new();
    if let Some(r) = &registry {
        s.push_str(r.trim_end_matches('/'));
        s.push('/');
    }
    s.push_str(&repository);
    if let Some(t) = &tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = &digest {
        s.push('@');
        s.push_str(d);
    }
    if is_templated(&s) {
        c.warn(
            ctx.src.file,
            loc.place,
            format!("value {s:?} is templated, so the image cannot be known before install; skipped (list the real image in manifests/imageList)"),
        );
        return;
    }
    c.hit(&s, loc);
}

/// `imageList`: one reference per line, `#` comments (whole-line or after
/// whitespace), blank lines ignored.
pub(super) fn scan_image_list(text: &str, file: &str, via: &str, c: &mut Collector) {
    for (i, raw) in text.lines().enumerate() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        let place = format!("line {}{via}", i + 1);
        if line.split_whitespace().nth(1).is_some() {
            c.warn(
                file,
                place,
                format!("{line:?} has several words; write one image reference per line"),
            );
            continue;
        }
        if let Some(alias) = sealer_alias(line) {
            c.warn(
                file,
                place,
                format!(
                    "{line:?} names sealer's local registry ({alias}), not where the image comes \
                     from; skipped. Write the image's original name"
                ),
            );
            continue;
        }
        c.hit(
            line,
            Location {
                file: file.to_string(),
                place,
            },
        );
    }
}

/// Drops a `#` comment that starts a line or follows whitespace, so that a
/// `#` inside a word survives.
pub(super) fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, &ch) in b.iter().enumerate() {
        if ch == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}
