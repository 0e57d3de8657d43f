//! Images from files: OCI layout directories, `docker save` tarballs (docker-archive) and
//! tarred OCI layouts (oci-archive).
//!
//! Archives are read once, front to back, and every file in them goes into the cache under its
//! digest as it streams past (a tar has no index, and `manifest.json` may come last). A
//! docker-archive is then converted: its config and layers stay byte-identical, and a new OCI
//! manifest lists them.

use super::cache::{read_limited, Cache, Ingested};
use super::error::{ImagesError, Result};
use super::layout::LayoutBlobs;
use super::oci::{
    self, Descriptor, Platform, CONTAINERD_NAME, MAX_CONFIG_LEN, MAX_MANIFEST_LEN, OCI_CONFIG,
    OCI_MANIFEST, REF_NAME,
};
use super::{resolve_tree, ResolvedImage};
use crate::imageref::ImageRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// Where local images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A directory holding an OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    OciLayout(PathBuf),
    /// A `docker save` tarball, optionally gzip- or zstd-compressed.
    DockerArchive(PathBuf),
    /// A tar of an OCI image layout, optionally gzip- or zstd-compressed.
    OciArchive(PathBuf),
}

/// Index files in archives are small; more than this is not an index.
const MAX_INDEX_LEN: u64 = 64 << 20;

impl ImageSource {
    pub fn path(&self) -> &Path {
        match self {
            ImageSource::OciLayout(p)
            | ImageSource::DockerArchive(p)
            | ImageSource::OciArchive(p) => p,
        }
    }

    /// What the source is, for messages: `docker-archive images/app.tar`.
    pub fn label(&self) -> String {
        let kind = match self {
            ImageSource::OciLayout(_) => "OCI layout",
            ImageSource::DockerArchive(_) => "docker-archive",
            ImageSource::OciArchive(_) => "oci-archive",
        };
        format!("{kind} {}", self.path().display())
    }

    /// Tells the kind of `path` from its content: a directory with an `index.json` is an OCI
    /// layout; a tar with an `oci-layout` file is an oci-archive (Docker 25 and later write
    /// both kinds of index; the OCI one keeps the registry's digests), else one with a
    /// `manifest.json` is a docker-archive.
    pub fn detect(path: &Path) -> Result<ImageSource> {
        let meta = std::fs::metadata(path).map_err(|e| ImagesError::io(path, e))?;
        if meta.is_dir() {
            if path.join("index.json").is_file() {
                return Ok(ImageSource::OciLayout(path.to_path_buf()));
            }
            return Err(ImagesError::invalid(
                path.display().to_string(),
                "a directory without index.json is not an OCI image layout",
            ));
        }
        let mut saw_manifest = false;
        let mut found = None;
        walk_tar(path, &mut |name, _entry| {
            match name {
                "oci-layout" => found = Some(true),
                "manifest.json" => saw_manifest = true,
                _ => {}
            }
            Ok(found.is_none())
        })?;
        match (found, saw_manifest) {
            (Some(_), _) => Ok(ImageSource::OciArchive(path.to_path_buf())),
            (None, true) => Ok(ImageSource::DockerArchive(path.to_path_buf())),
            (None, false) => Err(ImagesError::invalid(
                path.display().to_string(),
                "a tar with neither manifest.json (docker-archive) nor oci-layout \
                 (oci-archive)",
            )),
        }
    }

    /// Every image source directly in `dir` (an `images/` directory of a build context),
    /// sorted by name. Hidden files and files that are not tar archives are skipped.
    pub fn scan_dir(dir: &Path) -> Result<Vec<ImageSource>> {
        let rd = std::fs::read_dir(dir).map_err(|e| ImagesError::io(dir, e))?;
        let mut paths = Vec::new();
        for e in rd {
            let e = e.map_err(|e| ImagesError::io(dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            paths.push(e.path());
        }
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            if p.is_dir() {
                if p.join("index.json").is_file() {
                    out.push(ImageSource::OciLayout(p));
                }
                continue;
            }
            if !looks_like_tar(&p)? {
                continue;
            }
            out.push(ImageSource::detect(&p)?);
        }
        Ok(out)
    }

    /// Imports into `cache` every image the source names with a full reference, or only
    /// `wanted` (named `wanted` in the result), for `platform`. Asked for one image, a source
    /// also answers with its only image of the wanted tag, or its only image if that has no
    /// name at all: the caller chose the source for it.
    pub fn import(
        &self,
        cache: &Cache,
        platform: &Platform,
        wanted: Option<&ImageRef>,
    ) -> Result<Vec<ResolvedImage>> {
        let opened = OpenedSource::open(self, cache)?;
        match wanted {
            Some(w) => {
                let name = w.normalized();
                let entry = opened.find_loose(w).ok_or_else(|| ImagesError::NotFound {
                    image: name.clone(),
                    message: format!("not in {}", self.label()),
                })?;
                Ok(vec![opened.import(cache, entry, &name, platform)?])
            }
            None => {
                let mut out = Vec::new();
                for e in &opened.entries {
                    for name in &e.names {
                        out.push(opened.import(cache, e, name, platform)?);
                    }
                }
                if out.is_empty() {
                    return Err(ImagesError::invalid(
                        self.label(),
                        "no image in it is named with a full reference \
                         (annotation org.opencontainers.image.ref.name or \
                         io.containerd.image.name)",
                    ));
                }
                Ok(out)
            }
        }
    }
}

/// An image listed by a source.
#[derive(Debug, Clone)]
pub(crate) struct SourceEntry {
    pub desc: Descriptor,
    /// Normalized full references.
    pub names: Vec<String>,
    /// Bare tags (`oci:DIR:TAG` writes these): they match an image whose last path component
    /// is the source's file or directory name.
    pub tags: Vec<String>,
}

#[derive(Debug)]
enum Store {
    /// Blobs are read from this OCI layout, where they stay.
    Layout(LayoutBlobs),
    /// Blobs are in the cache already.
    Cache,
}

/// A source whose image list has been read.
#[derive(Debug)]
pub(crate) struct OpenedSource {
    pub label: String,
    stem: String,
    store: Store,
    pub entries: Vec<SourceEntry>,
}

impl OpenedSource {
    pub fn open(source: &ImageSource, cache: &Cache) -> Result<OpenedSource> {
        let label = source.label();
        let stem = stem_of(source.path());
        match source {
            ImageSource::OciLayout(dir) => {
                let index_path = dir.join("index.json");
                let data = read_limited(&index_path, &label, MAX_INDEX_LEN)?;
                Ok(OpenedSource {
                    entries: entries_of_index(&label, &data)?,
                    store: Store::Layout(LayoutBlobs::new(dir, &label)?),
                    label,
                    stem,
                })
            }
            ImageSource::DockerArchive(path) | ImageSource::OciArchive(path) => {
                let entries = ingest_archive(path, &label, cache)?;
                Ok(OpenedSource {
                    label,
                    stem,
                    store: Store::Cache,
                    entries,
                })
            }
        }
    }

    /// The cache itself, as a source of images pinned by digest or already named there.
    pub fn of_cache(cache: &Cache) -> Result<OpenedSource> {
        let index = cache.root().join("index.json");
        let entries = if index.is_file() {
            entries_of_index(
                "the image cache",
                &read_limited(&index, "the image cache", MAX_INDEX_LEN)?,
            )?
        } else {
            Vec::new()
        };
        Ok(OpenedSource {
            label: format!("cache {}", cache.root().display()),
            stem: String::new(),
            store: Store::Cache,
            entries,
        })
    }

    /// [`find`](Self::find), or else the only entry tagged with the wanted tag, or else the
    /// only entry if it is unnamed.
    fn find_loose(&self, wanted: &ImageRef) -> Option<&SourceEntry> {
        if let Some(e) = self.find(wanted) {
            return Some(e);
        }
        if wanted.digest.is_some() {
            return None;
        }
        let tag = wanted.effective_tag().unwrap_or("latest");
        let tagged: Vec<&SourceEntry> = self
            .entries
            .iter()
            .filter(|e| e.tags.iter().any(|t| t == tag))
            .collect();
        match (tagged.as_slice(), self.entries.as_slice()) {
            ([one], _) => Some(one),
            ([], [only]) if only.names.is_empty() && only.tags.is_empty() => Some(only),
            _ => None,
        }
    }

    pub fn find(&self, wanted: &ImageRef) -> Option<&SourceEntry> {
        if let Some(d) = &wanted.digest {
            return self.entries.iter().find(|e| &e.desc.digest == d);
        }
        let name = wanted.normalized();
        let tag = wanted.effective_tag().unwrap_or("latest");
        let last = wanted.path.rsplit('/').next().unwrap_or(&wanted.path);
        self.entries
            .iter()
            .find(|e| e.names.contains(&name))
            .or_else(|| {
                self.entries
                    .iter()
                    .find(|e| last == self.stem && e.tags.iter().any(|t| t == tag))
            })
    }

    /// Resolves the image `entry` (for `platform`) and names it `name`. An archive's or the
    /// cache's blobs are in the cache already; a layout's are checked where they are (present,
    /// inside the layout, of the right size; documents also by digest) and left there.
    pub fn import(
        &self,
        cache: &Cache,
        entry: &SourceEntry,
        name: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage> {
        let what = |d: &Descriptor| format!("{} in {}", d.digest, self.label);
        let mut fetch = |d: &Descriptor, limit: u64| -> Result<Vec<u8>> {
            if d.size > limit {
                return Err(ImagesError::invalid(
                    what(d),
                    format!("{} bytes, more than the limit of {limit}", d.size),
                ));
            }
            match &self.store {
                Store::Layout(blobs) => blobs.read(d),
                Store::Cache => {
                    if !cache.has(d) {
                        return Err(missing(&self.label, d));
                    }
                    let data = cache.read_blob(&what(d), &d.digest, limit)?;
                    if oci::sha256_digest(&data) != d.digest {
                        return Err(ImagesError::Digest {
                            what: what(d),
                            expected: d.digest.clone(),
                            actual: oci::sha256_digest(&data),
                        });
                    }
                    Ok(data)
                }
            }
        };
        let top = entry.desc.bare();
        let top_bytes = fetch(&top, MAX_MANIFEST_LEN).map_err(|e| e.for_image(name))?;
        let tree = resolve_tree(name, &top, &top_bytes, platform, &mut fetch)
            .map_err(|e| e.for_image(name))?;
        for l in &tree.layers {
            match &self.store {
                // A layer the layout lacks may still be in the cache from an earlier build.
                Store::Layout(blobs) if blobs.has(&l.digest) => {
                    blobs.open(l).map_err(|e| e.for_image(name))?;
                }
                Store::Layout(_) => {
                    if !cache.has(l) {
                        return Err(missing(&self.label, l).for_image(name));
                    }
                }
                Store::Cache => {
                    if !cache.has(l) {
                        return Err(missing(&self.label, l).for_image(name));
                    }
                }
            }
        }
        let mut img = tree.into_resolved(name, &self.label);
        if let Store::Layout(blobs) = &self.store {
            img.layout = Some(blobs.dir().to_path_buf());
        }
        Ok(img)
    }
}

fn missing(label: &str, d: &Descriptor) -> ImagesError {
    ImagesError::invalid(
        label,
        format!(
            "blob {} ({}) is missing: the image is incomplete",
            d.digest, d.media_type
        ),
    )
}

fn stem_of(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for ext in [".tar.gz", ".tar.zst", ".tgz", ".tar", ".oci"] {
        if let Some(s) = name.strip_suffix(ext) {
            return s.to_string();
        }
    }
    name
}

fn entries_of_index(label: &str, data: &[u8]) -> Result<Vec<SourceEntry>> {
    let idx = oci::Index::parse(data)
        .map_err(|e| ImagesError::invalid(label, format!("index.json: {e}")))?;
    let mut out = Vec::new();
    for d in idx.manifests {
        oci::check_digest(label, &d.digest)?;
        let mut names = Vec::new();
        let mut tags = Vec::new();
        for key in [REF_NAME, CONTAINERD_NAME] {
            let Some(v) = d.annotations.get(key) else {
                continue;
            };
            if v.contains(['/', ':', '@']) {
                if let Ok(r) = ImageRef::parse(v) {
                    names.push(r.normalized());
                }
            } else if !v.is_empty() {
                tags.push(v.clone());
            }
        }
        names.dedup();
        out.push(SourceEntry {
            desc: d,
            names,
            tags,
        });
    }
    Ok(out)
}

/// Whether `path` starts like a tar, a gzip or a zstd stream.
fn looks_like_tar(path: &Path) -> Result<bool> {
    let mut f = File::open(path).map_err(|e| ImagesError::io(path, e))?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImagesError::io(path, e)),
        }
    }
    let head = &head[..n];
    Ok(head.starts_with(b"\x1f\x8b")
        || head.starts_with(b"\x28\xb5\x2f\xfd")
        || (n == 512 && &head[257..262] == b"ustar"))
}

/// Opens a tar, seeing through gzip or zstd compression.
fn open_tar(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = File::open(path).map_err(|e| ImagesError::io(path, e))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| ImagesError::io(path, e))?;
    let f = File::open(path).map_err(|e| ImagesError::io(path, e))?;
    let r = BufReader::with_capacity(1 << 20, f);
    if magic[..n].starts_with(b"\x1f\x8b") {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(r)))
    } else if magic[..n].starts_with(b"\x28\xb5\x2f\xfd") {
        let d =
            zstd::stream::read::Decoder::with_buffer(r).map_err(|e| ImagesError::io(path, e))?;
        Ok(Box::new(d))
    } else {
        Ok(Box::new(r))
    }
}

/// A tar member's name as a clean relative path (`./x` and `x` are the same member).
fn member_name(raw: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in raw.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

type Member<'a> = tar::Entry<'a, Box<dyn Read>>;

/// Calls `f` with each member until it returns false.
fn walk_tar(path: &Path, f: &mut dyn FnMut(&str, &mut Member<'_>) -> Result<bool>) -> Result<()> {
    let label = path.display().to_string();
    let mut ar = tar::Archive::new(open_tar(path)?);
    let entries = ar
        .entries()
        .map_err(|e| ImagesError::invalid(&label, format!("not a readable tar: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| ImagesError::invalid(&label, format!("not a readable tar: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| ImagesError::invalid(&label, format!("bad member name: {e}")))?
            .into_owned();
        let Some(name) = member_name(&raw) else {
            continue;
        };
        if !f(&name, &mut entry)? {
            break;
        }
    }
    Ok(())
}

/// Reads an archive into the cache and lists its images.
fn ingest_archive(path: &Path, label: &str, cache: &Cache) -> Result<Vec<SourceEntry>> {
    let mut files: BTreeMap<String, Ingested> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    walk_tar(path, &mut |name, entry| {
        let what = format!("{name} in {label}");
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if matches!(
                    name,
                    "manifest.json" | "index.json" | "oci-layout" | "repositories"
                ) {
                    let mut data = Vec::new();
                    entry
                        .take(MAX_INDEX_LEN + 1)
                        .read_to_end(&mut data)
                        .map_err(|e| ImagesError::invalid(&what, e.to_string()))?;
                    if data.len() as u64 > MAX_INDEX_LEN {
                        return Err(ImagesError::invalid(&what, "too large for an index"));
                    }
                    small.insert(name.to_string(), data);
                    return Ok(true);
                }
                // Legacy per-layer metadata of `docker save`: not part of the image.
                let base = name.rsplit('/').next().unwrap_or(name);
                if base == "json" || base == "VERSION" {
                    return Ok(true);
                }
                let got = cache.ingest(&what, entry)?;
                if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                    if got.digest != format!("sha256:{hex}") {
                        return Err(ImagesError::Digest {
                            what,
                            expected: format!("sha256:{hex}"),
                            actual: got.digest,
                        });
                    }
                }
                files.insert(name.to_string(), got);
            }
            tar::EntryType::Symlink => {
                if let Ok(Some(t)) = entry.link_name() {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    let joined = if dir.is_empty() {
                        t.to_path_buf()
                    } else {
                        Path::new(dir).join(&t)
                    };
                    if let Some(target) = resolve_dots(&joined) {
                        links.insert(name.to_string(), target);
                    }
                }
            }
            tar::EntryType::Link => {
                if let Ok(Some(t)) = entry.link_name() {
                    if let Some(target) = member_name(&t) {
                        links.insert(name.to_string(), target);
                    }
                }
            }
            _ => {}
        }
        Ok(true)
    })?;
    if small.contains_key("oci-layout") || !small.contains_key("manifest.json") {
        let index = small.get("index.json").ok_or_else(|| {
            ImagesError::invalid(
                label,
                "neither manifest.json (docker-archive) nor index.json (oci-archive) is in it",
            )
        })?;
        return entries_of_index(label, index);
    }
    let manifest = small
        .get("manifest.json")
        .map(Vec::as_slice)
        .unwrap_or(b"[]");
    convert_docker(label, manifest, &files, &links, cache)
}

/// `a/../b` -> `b`; `None` when it climbs out of the archive.
fn resolve_dots(p: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s.to_str()?.to_string()),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerItem {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciManifestOut<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ConfigRootFs {
    rootfs: Option<RootFs>,
}

fn convert_docker(
    label: &str,
    manifest: &[u8],
    files: &BTreeMap<String, Ingested>,
    links: &BTreeMap<String, String>,
    cache: &Cache,
) -> Result<Vec<SourceEntry>> {
    let items: Vec<DockerItem> = serde_json::from_slice(manifest)
        .map_err(|e| ImagesError::invalid(label, format!("manifest.json is not valid: {e}")))?;
    let lookup = |name: &str| -> Result<&Ingested> {
        let mut cur = member_name(Path::new(name)).unwrap_or_default();
        for _ in 0..16 {
            if let Some(f) = files.get(&cur) {
                return Ok(f);
            }
            match links.get(&cur) {
                Some(next) => cur = next.clone(),
                None => break,
            }
        }
        Err(ImagesError::invalid(
            label,
            format!("manifest.json names {name:?}, which is not in the archive"),
        ))
    };
    let mut out = Vec::new();
    for item in items {
        let cfg = lookup(&item.config)?;
        let config = Descriptor::new(OCI_CONFIG, cfg.digest.clone(), cfg.size);
        let cfg_data = cache.read_blob(label, &cfg.digest, MAX_CONFIG_LEN)?;
        let diff_ids = serde_json::from_slice::<ConfigRootFs>(&cfg_data)
            .ok()
            .and_then(|c| c.rootfs)
            .map(|r| r.diff_ids)
            .unwrap_or_default();
        if diff_ids.len() != item.layers.len() {
            return Err(ImagesError::invalid(
                label,
                format!(
                    "config {} lists {} layers, manifest.json {}",
                    item.config,
                    diff_ids.len(),
                    item.layers.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for (l, diff_id) in item.layers.iter().zip(&diff_ids) {
            let f = lookup(l)?;
            let media_type = oci::layer_type_for(&f.magic);
            // An uncompressed layer's digest is its diff ID: a cheap check that the archive
            // holds the layers its config was made from.
            if media_type == oci::OCI_LAYER_TAR && &f.digest != diff_id {
                return Err(ImagesError::Digest {
                    what: format!("layer {l} in {label}"),
                    expected: diff_id.clone(),
                    actual: f.digest.clone(),
                });
            }
            layers.push(Descriptor::new(media_type, f.digest.clone(), f.size));
        }
        let m = OciManifestOut {
            schema_version: 2,
            media_type: OCI_MANIFEST,
            config: &config,
            layers: &layers,
        };
        let data = serde_json::to_vec(&m)
            .map_err(|e| ImagesError::invalid(label, format!("cannot write a manifest: {e}")))?;
        let digest = oci::sha256_digest(&data);
        cache.put_bytes(label, &digest, &data)?;
        let mut desc = Descriptor::new(OCI_MANIFEST, digest, data.len() as u64);
        if let Some(p) = oci::config_platform(label, &cfg_data)? {
            desc.platform = Some(p);
        }
        let mut names: Vec<String> = item
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| ImageRef::parse(t).ok())
            .map(|r| r.normalized())
            .collect();
        names.sort();
        names.dedup();
        out.push(SourceEntry {
            desc,
            names,
            tags: Vec::new(),
        });
    }
    Ok(out)
}
