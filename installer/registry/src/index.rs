//! What the registry serves, worked out once at start from the bundle's entry table and its
//! `registry/index.json`: where every blob lies in the file, every manifest (kept in memory:
//! they are small and read on every pull), and which repository may see which of them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bale_payload::{Bundle, Kind};
use bytes::Bytes;
use serde::Deserialize;

use super::error::RegistryError;
use super::names::{self, Digest, DOCKER_HUB};

/// Bundle path of the OCI image layout's index.
pub const INDEX_PATH: &str = "registry/index.json";
/// Bundle directory holding every blob, named by its hex digest.
pub const BLOBS_DIR: &str = "registry/blobs/sha256/";
/// Annotation carrying an image's full original reference.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The index is read whole; bigger means a damaged or hostile bundle.
const MAX_INDEX_LEN: u64 = 64 << 20;
/// The OCI specification lets a registry refuse manifests above 4 MiB; so do we.
pub const MAX_MANIFEST_LEN: u64 = 4 << 20;
/// Indexes nest rarely and shallowly; a deeper chain is a loop or an attack.
const MAX_NESTING: usize = 4;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Where a blob's bytes lie in the bundle file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Absolute offset in the bundle file.
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Bytes,
}

#[derive(Debug, Default)]
pub struct Repository {
    pub tags: BTreeMap<String, Digest>,
    /// Manifests reachable from this repository's tags and digests, present in the bundle.
    pub manifests: HashSet<Digest>,
    /// Blobs (manifests, configs, layers) this repository may serve, present in the bundle.
    pub blobs: HashSet<Digest>,
}

/// The outcome of looking a requested name up.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a str, &'a Repository),
    Unknown,
    Ambiguous(Vec<&'a str>),
}

/// Everything the server needs, immutable once built, shared by every connection.
#[derive(Debug)]
pub struct Registry {
    file: Arc<File>,
    blobs: HashMap<Digest, BlobLocation>,
    manifests: HashMap<Digest, Manifest>,
    repos: BTreeMap<String, Repository>,
    /// Name without host (and, for Docker Hub, also without `library/`) -> full names.
    short: HashMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// The fields of an image manifest or index that tell what else it needs.
#[derive(Deserialize)]
struct ManifestDoc {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    /// Artifact manifests list their content here.
    #[serde(default)]
    blobs: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl Registry {
    /// Builds the registry from a bundle. The bundle may be dropped afterwards: the registry
    /// keeps its own handle on the file.
    pub fn from_bundle(bundle: &Bundle) -> Result<Registry, RegistryError> {
        let file = bundle
            .file()
            .try_clone()
            .map_err(|e| RegistryError::io(bundle.path(), e))?;
        let mut reg = Registry {
            file: Arc::new(file),
            blobs: HashMap::new(),
            manifests: HashMap::new(),
            repos: BTreeMap::new(),
            short: HashMap::new(),
        };
        let entries = bundle.entries()?;
        let mut index_entry = None;
        for e in &entries {
            if e.path == INDEX_PATH && matches!(e.kind, Kind::File | Kind::Blob) {
                index_entry = Some(e);
                continue;
            }
            let Some(hex) = e.path.strip_prefix(BLOBS_DIR) else {
                continue;
            };
            if e.kind != Kind::Blob {
                tracing::warn!("{}: not stored as a blob, not served", e.path);
                continue;
            }
            let Some(d) = names::parse_digest(&format!("sha256:{hex}")) else {
                tracing::warn!("{}: not named by a sha256 digest, not served", e.path);
                continue;
            };
            if d != e.sha256 {
                tracing::warn!(
                    "{}: its content digest differs from its name, not served",
                    e.path
                );
                continue;
            }
            let loc = if e.size == 0 {
                BlobLocation { offset: 0, len: 0 }
            } else {
                match e.contiguous_raw() {
                    Some((off, len)) if len == e.size => BlobLocation {
                        offset: bundle.payload_start() + off,
                        len,
                    },
                    // The table reader refuses such blobs already; kept so a change there
                    // cannot make us serve compressed bytes.
                    _ => {
                        tracing::warn!("{}: not stored raw and contiguous, not served", e.path);
                        continue;
                    }
                }
            };
            reg.blobs.insert(d, loc);
        }
        let Some(index_entry) = index_entry else {
            tracing::warn!("the bundle has no {INDEX_PATH}: the registry serves no image");
            return Ok(reg);
        };
        let mut raw = Vec::new();
        bundle
            .open_entry(index_entry)?
            .take(MAX_INDEX_LEN + 1)
            .read_to_end(&mut raw)
            .map_err(|e| RegistryError::Index(e.to_string()))?;
        if raw.len() as u64 > MAX_INDEX_LEN {
            return Err(RegistryError::Index(format!(
                "larger than {MAX_INDEX_LEN} bytes"
            )));
        }
        let index: IndexDoc =
            serde_json::from_slice(&raw).map_err(|e| RegistryError::Index(e.to_string()))?;
        for desc in &index.manifests {
            reg.add_image(desc);
        }
        for full in reg.repos.keys() {
            let Some((host, path)) = full.split_once('/') else {
                continue;
            };
            let mut keys = vec![path.to_string()];
            if host == DOCKER_HUB {
                if let Some(short) = path.strip_prefix("library/") {
                    keys.push(short.to_string());
                }
            }
            for k in keys {
                reg.short.entry(k).or_default().push(full.clone());
            }
        }
        Ok(reg)
    }

    fn add_image(&mut self, desc: &Descriptor) {
        let Some(refname) = desc.annotations.as_ref().and_then(|a| a.get(REF_NAME)) else {
            tracing::warn!(
                "{INDEX_PATH}: manifest {} has no {REF_NAME} annotation, skipped",
                desc.digest
            );
            return;
        };
        let r = match names::parse_image_ref(refname) {
            Ok(r) => r,
            Err(why) => {
                tracing::warn!("{INDEX_PATH}: reference {refname:?} skipped: {why}");
                return;
            }
        };
        let Some(digest) = names::parse_digest(&desc.digest) else {
            tracing::warn!(
                "{INDEX_PATH}: {refname}: digest {:?} is invalid",
                desc.digest
            );
            return;
        };
        if r.digest.is_some_and(|d| d != digest) {
            tracing::warn!("{INDEX_PATH}: {refname}: pinned digest differs from the descriptor's");
            return;
        }
        if !self.blobs.contains_key(&digest) {
            tracing::warn!("{INDEX_PATH}: {refname}: manifest blob missing from the bundle");
            return;
        }
        let mut repo = self.repos.remove(&r.full_name()).unwrap_or_default();
        let ok = walk(
            &self.file,
            &self.blobs,
            &mut self.manifests,
            &mut repo,
            refname,
            &digest,
            desc.media_type.as_deref(),
            desc.size,
            0,
        );
        if ok {
            if let Some(tag) = r.tag.clone() {
                if let Some(old) = repo.tags.insert(tag.clone(), digest) {
                    if old != digest {
                        tracing::warn!("{INDEX_PATH}: {refname}: tag listed twice, last one wins");
                    }
                }
            }
        }
        if !repo.manifests.is_empty() {
            self.repos.insert(r.full_name(), repo);
        }
    }

    /// Finds a repository by a request's name, and containerd's `ns` when given.
    pub fn lookup(&self, name: &str, ns: Option<&str>) -> Lookup<'_> {
        let found = |full: &str| match self.repos.get_key_value(full) {
            Some((k, r)) => Lookup::Found(k.as_str(), r),
            None => Lookup::Unknown,
        };
        if let Some(ns) = ns {
            // A mirror request names the upstream registry: only that registry's image will
            // do, never a same-named one from elsewhere.
            return found(&format!("{}/{name}", names::normalize_host(ns)));
        }
        if let hit @ Lookup::Found(..) = found(name) {
            return hit;
        }
        match self.short.get(name).map(Vec::as_slice) {
            Some([one]) => found(one),
            Some(many) if !many.is_empty() => {
                Lookup::Ambiguous(many.iter().map(String::as_str).collect())
            }
            _ => Lookup::Unknown,
        }
    }

    pub fn manifest(&self, d: &Digest) -> Option<&Manifest> {
        self.manifests.get(d)
    }

    pub fn blob(&self, d: &Digest) -> Option<BlobLocation> {
        self.blobs.get(d).copied()
    }

    /// The bundle file, for reading blobs by offset.
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Full repository names (with registry host), sorted.
    pub fn repository_names(&self) -> impl Iterator<Item = &str> {
        self.repos.keys().map(String::as_str)
    }

    /// Repositories, tags, manifests and blobs served, for the start-up message.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.repos.len(),
            self.repos.values().map(|r| r.tags.len()).sum(),
            self.manifests.len(),
            self.blobs.len(),
        )
    }
}

/// Records a manifest and everything it needs in `repo`, following an index into the children
/// the bundle holds (a multi-platform image usually carries only its own platform). Returns
/// whether the manifest itself could be served.
#[allow(clippy::too_many_arguments)]
fn walk(
    file: &File,
    blobs: &HashMap<Digest, BlobLocation>,
    manifests: &mut HashMap<Digest, Manifest>,
    repo: &mut Repository,
    refname: &str,
    digest: &Digest,
    media_type_hint: Option<&str>,
    size_hint: Option<u64>,
    depth: usize,
) -> bool {
    if depth > MAX_NESTING {
        tracing::warn!("{refname}: indexes nest deeper than {MAX_NESTING}, rest skipped");
        return false;
    }
    let Some(loc) = blobs.get(digest).copied() else {
        return false;
    };
    let shown = names::digest_string(digest);
    if size_hint.is_some_and(|s| s != loc.len) {
        tracing::warn!(
            "{refname}: {shown} has {} bytes, its descriptor says otherwise",
            loc.len
        );
    }
    if !manifests.contains_key(digest) {
        match load_manifest(file, loc, digest, media_type_hint) {
            Ok(m) => {
                manifests.insert(*digest, m);
            }
            Err(why) => {
                tracing::warn!("{refname}: manifest {shown} not served: {why}");
                return false;
            }
        }
    }
    repo.manifests.insert(*digest);
    repo.blobs.insert(*digest);
    let Some(m) = manifests.get(digest) else {
        return false;
    };
    // Parsed a second time rather than kept: only start-up pays for it.
    let doc: ManifestDoc = match serde_json::from_slice(&m.bytes) {
        Ok(d) => d,
        Err(_) => return true,
    };
    if let Some(children) = doc.manifests {
        let mut present = 0;
        for c in &children {
            let Some(cd) = names::parse_digest(&c.digest) else {
                continue;
            };
            if blobs.contains_key(&cd)
                && walk(
                    file,
                    blobs,
                    manifests,
                    repo,
                    refname,
                    &cd,
                    c.media_type.as_deref(),
                    c.size,
                    depth + 1,
                )
            {
                present += 1;
            }
        }
        tracing::debug!(
            "{refname}: index {shown} has {present} of {} platform manifests in the bundle",
            children.len()
        );
        return true;
    }
    let needed = doc
        .config
        .iter()
        .chain(doc.layers.iter().flatten())
        .chain(doc.blobs.iter().flatten());
    let mut missing = BTreeSet::new();
    for b in needed {
        match names::parse_digest(&b.digest) {
            Some(bd) if blobs.contains_key(&bd) => {
                repo.blobs.insert(bd);
            }
            _ => {
                missing.insert(b.digest.as_str());
            }
        }
    }
    if !missing.is_empty() {
        tracing::warn!(
            "{refname}: manifest {shown} is incomplete, missing blobs: {}",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    true
}

fn load_manifest(
    file: &File,
    loc: BlobLocation,
    digest: &Digest,
    media_type_hint: Option<&str>,
) -> Result<Manifest, String> {
    if loc.len > MAX_MANIFEST_LEN {
        return Err(format!(
            "{} bytes, above the {MAX_MANIFEST_LEN}-byte limit",
            loc.len
        ));
    }
    let mut buf = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut buf, loc.offset)
        .map_err(|e| e.to_string())?;
    // Manifests are what clients trust first; a damaged one is better refused here than
    // reported by every node's container runtime.
    if bale_payload::format::sha256(&buf) != *digest {
        return Err("its bytes do not match its digest: the bundle is damaged".into());
    }
    let doc: ManifestDoc =
        serde_json::from_slice(&buf).map_err(|e| format!("not a JSON manifest: {e}"))?;
    let media_type = doc
        .media_type
        .clone()
        .or_else(|| media_type_hint.map(str::to_string))
        .or_else(|| {
            if doc.manifests.is_some() {
                Some(OCI_INDEX.to_string())
            } else if doc.config.is_some() {
                Some(OCI_MANIFEST.to_string())
            } else {
                None
            }
        })
        .ok_or("no media type in the manifest or its descriptor")?;
    if media_type.is_empty() || media_type.len() > 255 || !media_type.bytes().all(is_token_byte) {
        return Err(format!(
            "media type {media_type:?} is not a valid header value"
        ));
    }
    Ok(Manifest {
        media_type,
        bytes: Bytes::from(buf),
    })
}

/// Media types go into a Content-Type header verbatim.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/;=".contains(&b)
}
