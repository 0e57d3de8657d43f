//! What the registry serves, worked out once at start from the bundle's entry table and its
//! `registry/index.json`: where every blob lies in the file, every manifest (kept in memory:
//! they are small and read on every pull), and which repository may see which of them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bale_contract::oci::{Descriptor, Index, ManifestDoc};
use bale_payload::{Bundle, Kind};
use bytes::Bytes;

use super::error::{IndexError, RegistryError};
use super::names::{self, Digest, DOCKER_HUB};

/// Bundle path of the OCI image layout's index.
pub const INDEX_PATH: &str = "registry/index.json";
/// Bundle directory holding every blob, named by its hex digest.
pub(crate) const BLOBS_DIR: &str = "registry/blobs/sha256/";
pub use bale_contract::oci::REF_NAME;

/// The index is read whole; bigger means a damaged or hostile bundle.
const MAX_INDEX_LEN: u64 = 64 << 20;
/// The OCI specification lets a registry refuse manifests above 4 MiB; so do we.
pub(crate) use bale_contract::oci::MAX_MANIFEST_LEN;
/// Indexes nest rarely and shallowly; a deeper chain is a loop or an attack.
const MAX_NESTING: usize = 4;
/// Links (index to child, image to blob) followed at start over all repositories: a thousand
/// images of a hundred layers each take a tenth of it. It also bounds the memory of the
/// repositories' blob sets (about 50 MiB at the limit).
const MAX_LINKS: usize = 1 << 20;

pub(crate) use bale_contract::oci::{OCI_INDEX, OCI_MANIFEST};

/// Where a blob's bytes lie in the bundle file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobLocation {
    /// Absolute offset in the bundle file.
    pub offset: u64,
    pub len: u64,
}

/// A manifest as served: its media type and its exact bytes.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Bytes,
}

/// What one repository (a full name with its registry host) may serve.
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

impl Registry {
    /// Builds the registry from a bundle. The bundle may be dropped afterwards: the registry
    /// keeps its own handle on the file.
    pub fn from_bundle(bundle: &Bundle) -> Result<Registry, RegistryError> {
        Registry::with_max_links(bundle, MAX_LINKS)
    }

    fn with_max_links(bundle: &Bundle, max_links: usize) -> Result<Registry, RegistryError> {
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
        let unusable = |source| RegistryError::Index {
            bundle: bundle.path().to_path_buf(),
            source,
        };
        let mut raw = Vec::new();
        bundle
            .open_entry(index_entry)?
            .take(MAX_INDEX_LEN + 1)
            .read_to_end(&mut raw)
            .map_err(|e| unusable(IndexError::Read(e)))?;
        if raw.len() as u64 > MAX_INDEX_LEN {
            return Err(unusable(IndexError::TooLarge { max: MAX_INDEX_LEN }));
        }
        let index = Index::parse(&raw).map_err(|e| unusable(IndexError::Json(e)))?;
        let mut walk = Walk {
            file: &reg.file,
            blobs: &reg.blobs,
            manifests: &mut reg.manifests,
            links: HashMap::new(),
            max_links,
            budget: max_links,
        };
        for desc in &index.manifests {
            let Some((refname, name, digest, tag)) = image_of(desc, walk.blobs) else {
                continue;
            };
            let mut repo = reg.repos.remove(&name).unwrap_or_default();
            let served = walk
                .repository(&mut repo, &refname, &digest, desc)
                .map_err(unusable)?;
            if served {
                if let Some(tag) = tag {
                    if let Some(old) = repo.tags.insert(tag, digest) {
                        if old != digest {
                            tracing::warn!(
                                "{INDEX_PATH}: {refname}: tag listed twice, last one wins"
                            );
                        }
                    }
                }
            }
            if !repo.manifests.is_empty() {
                reg.repos.insert(name, repo);
            }
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

    pub(crate) fn blob(&self, d: &Digest) -> Option<BlobLocation> {
        self.blobs.get(d).copied()
    }

    /// The bundle file, for reading blobs by offset.
    pub(crate) fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Full repository names (with registry host), sorted.
    pub(crate) fn repository_names(&self) -> impl Iterator<Item = &str> {
        self.repos.keys().map(String::as_str)
    }

    /// Repositories, tags, manifests and blobs served, for the start-up message.
    pub(crate) fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.repos.len(),
            self.repos.values().map(|r| r.tags.len()).sum(),
            self.manifests.len(),
            self.blobs.len(),
        )
    }
}

/// The reference, repository, manifest digest and tag an `index.json` entry names, if it names a
/// manifest the bundle holds; what is wrong with it is logged.
fn image_of(
    desc: &Descriptor,
    blobs: &HashMap<Digest, BlobLocation>,
) -> Option<(String, String, Digest, Option<String>)> {
    let Some(refname) = desc.annotations.get(REF_NAME) else {
        tracing::warn!(
            "{INDEX_PATH}: manifest {} has no {REF_NAME} annotation, skipped",
            desc.digest
        );
        return None;
    };
    let r = match names::parse_image_ref(refname) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!("{INDEX_PATH}: reference {refname:?} skipped: {why}");
            return None;
        }
    };
    let Some(digest) = names::parse_digest(&desc.digest) else {
        tracing::warn!(
            "{INDEX_PATH}: {refname}: digest {:?} is invalid",
            desc.digest
        );
        return None;
    };
    if r.digest.is_some_and(|d| d != digest) {
        tracing::warn!("{INDEX_PATH}: {refname}: pinned digest differs from the descriptor's");
        return None;
    }
    if !blobs.contains_key(&digest) {
        tracing::warn!("{INDEX_PATH}: {refname}: manifest blob missing from the bundle");
        return None;
    }
    Some((refname.clone(), r.full_name(), digest, r.tag))
}

/// The media type a descriptor lists its blob with, when it gives one.
fn listed_type(d: &Descriptor) -> Option<String> {
    (!d.media_type.is_empty()).then(|| d.media_type.clone())
}

/// What a manifest links to, worked out once per manifest however often it is reached.
enum Links {
    /// An index: its children, with the media type and size their descriptors give.
    Index(Vec<(Digest, Option<String>, Option<u64>)>, usize),
    /// An image or artifact: the blobs it needs that the bundle holds.
    Image(Vec<Digest>),
    /// Not JSON that says either: served as it is, needing nothing.
    Opaque,
}

/// The walk from every image's manifest to everything it needs, for the whole `index.json`.
///
/// A hostile bundle can make the graph of manifests large in two ways, and both are bounded:
/// an index that lists the same child many times, level under level, which a naive walk
/// follows along every path (60 children, 4 levels: 13 million visits of a 47 KB bundle), is
/// visited once per repository, each manifest parsed once overall; and the links followed
/// across all repositories are counted against [`MAX_LINKS`], beyond which the bundle is
/// refused rather than served in part.
struct Walk<'a> {
    file: &'a File,
    blobs: &'a HashMap<Digest, BlobLocation>,
    manifests: &'a mut HashMap<Digest, Manifest>,
    /// `None` for a manifest that cannot be served (already reported).
    links: HashMap<Digest, Option<Arc<Links>>>,
    max_links: usize,
    budget: usize,
}

impl Walk<'_> {
    /// Records the manifest `digest` (named `shown` in messages) and everything it needs in
    /// `repo`; whether the manifest itself can be served.
    fn repository(
        &mut self,
        repo: &mut Repository,
        shown: &str,
        digest: &Digest,
        desc: &Descriptor,
    ) -> Result<bool, IndexError> {
        // The shallowest depth each manifest was reached at in this repository: reached again
        // no shallower, it has nothing more to give.
        let mut seen: HashMap<Digest, usize> = HashMap::new();
        let mut stack = vec![(*digest, listed_type(desc), Some(desc.size), 0usize)];
        let mut root_served = false;
        while let Some((d, media_type, size, depth)) = stack.pop() {
            if self.budget == 0 {
                return Err(IndexError::TooManyLinks {
                    max: self.max_links,
                });
            }
            self.budget -= 1;
            if depth > MAX_NESTING {
                tracing::warn!("{shown}: indexes nest deeper than {MAX_NESTING}, rest skipped");
                continue;
            }
            if seen.get(&d).is_some_and(|&at| at <= depth) {
                continue;
            }
            seen.insert(d, depth);
            let Some(links) = self.links_of(shown, &d, media_type.as_deref(), size) else {
                continue;
            };
            if depth == 0 {
                root_served = true;
            }
            repo.manifests.insert(d);
            repo.blobs.insert(d);
            match &*links {
                Links::Index(children, listed) => {
                    tracing::debug!(
                        "{shown}: index {} has {} of {listed} platform manifests in the bundle",
                        names::digest_string(&d),
                        children.len()
                    );
                    for (cd, mt, sz) in children.iter().rev() {
                        stack.push((*cd, mt.clone(), *sz, depth + 1));
                    }
                }
                Links::Image(needed) => {
                    self.budget = self.budget.saturating_sub(needed.len());
                    repo.blobs.extend(needed.iter().copied());
                }
                Links::Opaque => {}
            }
        }
        Ok(root_served)
    }

    /// Loads, checks and parses a manifest the first time it is reached; `None` when it
    /// cannot be served.
    fn links_of(
        &mut self,
        shown: &str,
        digest: &Digest,
        media_type_hint: Option<&str>,
        size_hint: Option<u64>,
    ) -> Option<Arc<Links>> {
        if let Some(known) = self.links.get(digest) {
            return known.clone();
        }
        let links = self.load(shown, digest, media_type_hint, size_hint);
        self.links.insert(*digest, links.clone());
        links
    }

    fn load(
        &mut self,
        shown: &str,
        digest: &Digest,
        media_type_hint: Option<&str>,
        size_hint: Option<u64>,
    ) -> Option<Arc<Links>> {
        let loc = self.blobs.get(digest).copied()?;
        let name = names::digest_string(digest);
        if size_hint.is_some_and(|s| s != loc.len) {
            tracing::warn!(
                "{shown}: {name} has {} bytes, its descriptor says otherwise",
                loc.len
            );
        }
        let (m, doc) = match load_manifest(self.file, loc, digest, media_type_hint) {
            Ok(x) => x,
            Err(why) => {
                tracing::warn!("{shown}: manifest {name} not served: {why}");
                return None;
            }
        };
        self.manifests.insert(*digest, m);
        let links = if let Some(children) = doc.manifests {
            let listed = children.len();
            let present = children
                .into_iter()
                .filter_map(|c| {
                    let cd = names::parse_digest(&c.digest)?;
                    self.blobs
                        .contains_key(&cd)
                        .then_some((cd, listed_type(&c), Some(c.size)))
                })
                .collect();
            Links::Index(present, listed)
        } else if doc.config.is_some() || doc.layers.is_some() || doc.blobs.is_some() {
            let mut needed = Vec::new();
            let mut missing = BTreeSet::new();
            for b in doc
                .config
                .iter()
                .chain(doc.layers.iter().flatten())
                .chain(doc.blobs.iter().flatten())
            {
                match names::parse_digest(&b.digest) {
                    Some(bd) if self.blobs.contains_key(&bd) => needed.push(bd),
                    _ => {
                        missing.insert(b.digest.clone());
                    }
                }
            }
            if !missing.is_empty() {
                tracing::warn!(
                    "{shown}: manifest {name} is incomplete, missing blobs: {}",
                    missing
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Links::Image(needed)
        } else {
            Links::Opaque
        };
        Some(Arc::new(links))
    }
}

/// Why a manifest is not served. Only logged, so each message carries its cause.
#[derive(Debug, thiserror::Error)]
enum ManifestError {
    #[error("{len} bytes, above the {MAX_MANIFEST_LEN}-byte limit")]
    TooLarge { len: u64 },
    #[error("cannot read it from the bundle: {0}")]
    Read(std::io::Error),
    #[error("its bytes do not match its digest: the bundle is damaged")]
    Damaged,
    #[error("{0}")]
    NotJson(bale_contract::oci::OciError),
    #[error("no media type in the manifest or its descriptor")]
    NoMediaType,
    #[error("media type {0:?} is not a valid header value")]
    BadMediaType(String),
}

/// Reads a manifest, checks it against its digest, and parses what it links to.
fn load_manifest(
    file: &File,
    loc: BlobLocation,
    digest: &Digest,
    media_type_hint: Option<&str>,
) -> Result<(Manifest, ManifestDoc), ManifestError> {
    if loc.len > MAX_MANIFEST_LEN {
        return Err(ManifestError::TooLarge { len: loc.len });
    }
    let mut buf = vec![0u8; loc.len as usize];
    file.read_exact_at(&mut buf, loc.offset)
        .map_err(ManifestError::Read)?;
    // Manifests are what clients trust first; a damaged one is better refused here than
    // reported by every node's container runtime.
    if bale_payload::format::sha256(&buf) != *digest {
        return Err(ManifestError::Damaged);
    }
    let doc = ManifestDoc::parse(&buf).map_err(ManifestError::NotJson)?;
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
        .ok_or(ManifestError::NoMediaType)?;
    if media_type.is_empty() || media_type.len() > 255 || !media_type.bytes().all(is_token_byte) {
        return Err(ManifestError::BadMediaType(media_type));
    }
    Ok((
        Manifest {
            media_type,
            bytes: Bytes::from(buf),
        },
        doc,
    ))
}

/// Media types go into a Content-Type header verbatim.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/;=".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bale_payload::{BundleMeta, BundleWriter, WriteOptions};
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
        serde_json::json!({
            "mediaType": media_type,
            "digest": names::digest_string(&bale_payload::format::sha256(data)),
            "size": data.len(),
        })
    }

    /// A bundle whose `registry/` holds `blobs` and an `index.json` naming `refs`.
    fn bundle_of(dir: &Path, blobs: &[Vec<u8>], refs: &[(&str, serde_json::Value)]) -> Bundle {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": refs.iter().map(|(name, desc)| {
                let mut d = desc.clone();
                d["annotations"] = serde_json::json!({ REF_NAME: name });
                d
            }).collect::<Vec<_>>(),
        });
        let path = dir.join("b.bale");
        let stub = std::env::current_exe().unwrap();
        let opts = WriteOptions {
            threads: 1,
            ..WriteOptions::default()
        };
        let mut w = BundleWriter::create(&path, &stub, BundleMeta::default(), opts).unwrap();
        w.add_bytes(INDEX_PATH, 0o644, &serde_json::to_vec(&index).unwrap())
            .unwrap();
        for b in blobs {
            let d = bale_payload::format::sha256(b);
            let file = dir.join(hex::encode(d));
            std::fs::write(&file, b).unwrap();
            w.add_blob(&format!("{BLOBS_DIR}{}", hex::encode(d)), &file, Some(&d))
                .unwrap();
        }
        w.finish().unwrap();
        Bundle::open(&path).unwrap()
    }

    /// Finding F4: an index listing the same child 60 times, four levels deep, made a walk of
    /// 60^4 paths (72 s before the registry bound its port, for a 47 KB bundle). Each manifest
    /// is now walked once per repository.
    #[test]
    fn a_fan_out_index_is_walked_once_per_manifest() {
        const FAN_OUT: usize = 60;
        let dir = tempfile::tempdir().unwrap();
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let image = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [],
        }))
        .unwrap();
        let mut blobs = vec![config, image];
        let mut top = descriptor(OCI_MANIFEST, &blobs[1]);
        for _ in 0..4 {
            let index = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": vec![top.clone(); FAN_OUT],
            }))
            .unwrap();
            top = descriptor(OCI_INDEX, &index);
            blobs.push(index);
        }
        let bundle = bundle_of(dir.path(), &blobs, &[("fan:1", top.clone())]);

        // On a thread, so that a regression fails the test at the bound instead of hanging it.
        let started = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(Registry::from_bundle(&bundle).map(|r| (r, started.elapsed())));
        });
        let (reg, took) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("reading a fan-out index took more than 10 s")
            .unwrap();
        eprintln!("a 60-way fan-out, 4 levels deep, read in {took:?}");
        assert!(took < Duration::from_secs(1), "took {took:?}");

        let Lookup::Found(name, repo) = reg.lookup("fan", None) else {
            panic!("the image is not served");
        };
        assert_eq!(name, "docker.io/library/fan");
        let top_digest = names::parse_digest(top["digest"].as_str().unwrap()).unwrap();
        assert_eq!(repo.tags.get("1"), Some(&top_digest));
        // every level, the image and its config
        assert_eq!(repo.manifests.len(), 5);
        assert_eq!(repo.blobs.len(), 6);
    }

    /// Repositories that share one big graph count against the same bound on links, and the
    /// bundle is refused, not served in part.
    #[test]
    fn too_many_links_refuse_the_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let layers: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_le_bytes().to_vec()).collect();
        let image = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &layers[0]),
            "layers": layers.iter().map(|l| descriptor("x", l)).collect::<Vec<_>>(),
        }))
        .unwrap();
        let desc = descriptor(OCI_MANIFEST, &image);
        let names: Vec<String> = (0..10).map(|i| format!("r{i}:1")).collect();
        let refs: Vec<(&str, serde_json::Value)> =
            names.iter().map(|n| (n.as_str(), desc.clone())).collect();
        let mut blobs = layers;
        blobs.push(image);
        let bundle = bundle_of(dir.path(), &blobs, &refs);
        assert!(Registry::with_max_links(&bundle, 10 * 1002).is_ok());
        let err = Registry::with_max_links(&bundle, 9 * 1002).unwrap_err();
        assert!(
            matches!(
                &err,
                RegistryError::Index {
                    source: IndexError::TooManyLinks { .. },
                    ..
                }
            ),
            "{err}"
        );
    }
}
