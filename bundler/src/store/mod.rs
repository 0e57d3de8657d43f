//! The local bundle store: bundles kept by content, found by `name:tag`, like an image store.
//!
//! `bale build -t name:tag` records what it wrote here, `FROM name:tag` finds it here, and
//! `bale images`, `bale rmi` and `bale tag` look after it. The layout under the root:
//!
//! - `sha256/<hex>.bale`: one bundle per root digest (the SHA-256 of its header, which chains
//!   to every byte of the payload), so the same bundle stored twice is one file. A file gets
//!   its name only once complete: a hard link to the built bundle when both are on one file
//!   system (the build renamed its output into place, and `bale sign` does too, so the link
//!   never sees a half-written file), else a copy (`copy_file_range`, which shares extents on
//!   file systems that can) written under a temporary name, synced, then renamed.
//! - `index.json`: tag -> one record per architecture, replaced whole by rename.
//! - `lock`: held (flock) while an entry is placed and the index is read, changed and
//!   written, so concurrent builds into one store take turns and no update is lost; readers
//!   need no lock, since the index they read is always a complete one.
//!
//! An entry is checked again each time a build takes it as a base: its header must hash to
//! the digest it is filed under (else it is damaged, exit 3), and its signatures are checked
//! against the keys trusted now, the rule of the pull cache.

mod error;

pub use error::{Result, StoreError};

use bale_payload::Bundle;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The tag a name without one gets, as with container images.
pub const DEFAULT_TAG: &str = "latest";
/// Hex digits of a digest shown by `bale images`; also the shortest prefix `rmi` takes.
pub const SHORT_DIGEST: usize = 12;
const MIN_PREFIX: usize = 6;

/// One stored bundle under one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `sha256:<hex>` of the bundle's header: its root digest.
    pub digest: String,
    /// The architecture of the bundle's program (`x86_64`, `aarch64`).
    pub arch: String,
    /// Bytes of the bundle file.
    pub size: u64,
    /// When it was stored, in seconds since the Unix epoch.
    pub stored: u64,
    /// The name and version in the bundle's header.
    pub name: String,
    pub version: String,
    /// The OCI manifest digest of the registry artifact it was pulled as; `None` for a bundle
    /// built here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled_as: Option<String>,
}

impl Record {
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    pub fn short_digest(&self) -> &str {
        let hex = self.hex();
        &hex[..hex.len().min(SHORT_DIGEST)]
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    #[serde(default)]
    tags: BTreeMap<String, Vec<Record>>,
}

impl Index {
    fn tags_of(&self, digest: &str) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, rs)| rs.iter().any(|r| r.digest == digest))
            .map(|(t, _)| t.clone())
            .collect()
    }
}

/// A bundle found by tag, at its path in the store.
#[derive(Debug, Clone)]
pub struct Stored {
    pub tag: String,
    pub record: Record,
    pub path: PathBuf,
}

/// What `rmi` did, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", content = "what", rename_all = "lowercase")]
pub enum Removal {
    Untagged(String),
    Deleted(String),
}

/// `name:tag` as the store keys it; a name without a tag gets [`DEFAULT_TAG`]. The tag is
/// what follows the last colon when no slash follows it (`host:5000/app` has no tag).
pub fn normalize(reference: &str) -> Result<String> {
    let bad = |m: &str| StoreError::invalid(reference, m);
    if reference.is_empty() {
        return Err(bad("an empty name; write name:tag"));
    }
    if reference.contains('@') {
        return Err(bad(
            "a digest is not a tag; name the bundle name:tag (`bale images` lists digests)",
        ));
    }
    if let Some(c) = reference
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-/:".contains(*c)))
    {
        return Err(bad(&format!(
            "{c:?} cannot be in a name; use letters, digits and . _ - / :"
        )));
    }
    let (name, tag) = match reference.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (reference, DEFAULT_TAG),
    };
    if name.is_empty() || tag.is_empty() {
        return Err(bad("write name:tag, both parts non-empty"));
    }
    if name.starts_with(['/', '.', '-']) {
        return Err(bad("a name starts with a letter or digit"));
    }
    if tag.contains(':') || tag.len() > 128 {
        return Err(bad("a tag is at most 128 letters, digits, . _ -"));
    }
    Ok(format!("{name}:{tag}"))
}

/// Splits a normalized `name:tag`.
pub fn split_tag(tag: &str) -> (&str, &str) {
    match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, t),
        _ => (tag, ""),
    }
}

/// The hex digits of `word` when it reads as a digest or a prefix of one (`sha256:ab12…` or
/// at least six hex digits).
fn digest_prefix(word: &str) -> Option<String> {
    let hex = word.strip_prefix("sha256:").unwrap_or(word);
    let is_hex =
        hex.len() >= MIN_PREFIX && hex.len() <= 64 && hex.chars().all(|c| c.is_ascii_hexdigit());
    is_hex.then(|| hex.to_ascii_lowercase())
}

/// The local bundle store at one root directory.
#[derive(Debug, Clone)]
pub struct BundleStore {
    root: PathBuf,
}

impl BundleStore {
    /// `$BALE_STORE`, else `$XDG_DATA_HOME/bale/bundles`, else `~/.local/share/bale/bundles`:
    /// data, not a cache, since a tagged base may exist nowhere else.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("BALE_STORE").filter(|v| !v.is_empty()) {
            return PathBuf::from(dir);
        }
        std::env::var_os("XDG_DATA_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/share"))
            })
            .unwrap_or_else(std::env::temp_dir)
            .join("bale")
            .join("bundles")
    }

    pub fn new(root: impl Into<PathBuf>) -> BundleStore {
        BundleStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn blobs(&self) -> PathBuf {
        self.root.join("sha256")
    }

    /// The file of the bundle whose root digest is `hex`.
    pub fn file_for(&self, hex: &str) -> PathBuf {
        self.blobs().join(format!("{hex}.bale"))
    }

    /// Holds the store's lock until dropped, creating the store if needed.
    fn lock(&self) -> Result<nix::fcntl::Flock<File>> {
        let blobs = self.blobs();
        std::fs::create_dir_all(&blobs).map_err(|e| StoreError::io(&blobs, e))?;
        let path = self.root.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| StoreError::io(&path, std::io::Error::from(errno)))
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.index_path();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        serde_json::from_slice(&data).map_err(|e| StoreError::Index {
            path,
            message: e.to_string(),
        })
    }

    /// Replaces the index whole: written under a temporary name, synced, renamed.
    fn write_index(&self, index: &Index) -> Result<()> {
        let path = self.index_path();
        let mut data = serde_json::to_vec_pretty(index).map_err(|e| StoreError::Index {
            path: path.clone(),
            message: e.to_string(),
        })?;
        data.push(b'\n');
        let mut tmp = tempfile::Builder::new()
            .prefix(".index-")
            .tempfile_in(&self.root)
            .map_err(|e| StoreError::io(&self.root, e))?;
        tmp.write_all(&data)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| StoreError::io(tmp.path(), e))?;
        tmp.persist(&path)
            .map_err(|e| StoreError::io(&path, e.error))?;
        sync_dir(&self.root);
        Ok(())
    }

    /// Records the bundle `file` under `reference` (`name:tag`), replacing what the tag named
    /// for the same architecture; a bundle no tag names any more is deleted.
    pub fn add(&self, file: &Path, reference: &str) -> Result<Record> {
        self.add_as(file, reference, None)
    }

    /// [`Self::add`] for a bundle pulled from a registry as the manifest `pulled_as`.
    pub fn add_as(&self, file: &Path, reference: &str, pulled_as: Option<&str>) -> Result<Record> {
        let tag = normalize(reference)?;
        let bundle = Bundle::open(file)?;
        let hex = hex::encode(bundle.trailer.header_sha256);
        let record = Record {
            digest: format!("sha256:{hex}"),
            arch: bundle.header.arch.clone(),
            size: bundle.trailer.file_len,
            stored: now(),
            name: bundle.header.name.clone(),
            version: bundle.header.version.clone(),
            pulled_as: pulled_as.map(str::to_string),
        };
        drop(bundle);
        let _lock = self.lock()?;
        let dest = self.file_for(&hex);
        if !holds(&dest, &record) {
            place(file, &dest, Fallback::Copy)?;
        } else if !same_file(file, &dest) {
            // The same bundle in another file (a rebuild of an unchanged release): linked to
            // the new one, the store stops holding a second copy's worth of disk. Without a
            // link there is nothing to gain from copying what it holds already.
            let _ = place(file, &dest, Fallback::None);
        }
        let mut index = self.read_index()?;
        let list = index.tags.entry(tag).or_default();
        let replaced: Vec<String> = list
            .iter()
            .filter(|r| r.arch == record.arch && r.digest != record.digest)
            .map(|r| r.digest.clone())
            .collect();
        list.retain(|r| r.arch != record.arch);
        list.push(record.clone());
        list.sort_by(|a, b| a.arch.cmp(&b.arch));
        self.write_index(&index)?;
        self.collect_garbage(&index, replaced);
        Ok(record)
    }

    /// Deletes the files of `digests` that no tag names.
    fn collect_garbage(&self, index: &Index, digests: impl IntoIterator<Item = String>) {
        for d in digests {
            if index.tags_of(&d).is_empty() {
                let hex = d.strip_prefix("sha256:").unwrap_or(&d);
                // A file left behind costs space, not correctness: the index no longer names it.
                let _ = std::fs::remove_file(self.file_for(hex));
            }
        }
        sync_dir(&self.blobs());
    }

    /// Every tag with its records, sorted by tag then architecture.
    pub fn list(&self) -> Result<Vec<(String, Record)>> {
        let index = self.read_index()?;
        Ok(index
            .tags
            .into_iter()
            .flat_map(|(t, rs)| rs.into_iter().map(move |r| (t.clone(), r)))
            .collect())
    }

    /// The bundle `reference` names, for `arch` when the tag has several architectures;
    /// `None` when the store has no such tag. The file is not opened: see [`Self::check`].
    pub fn resolve(&self, reference: &str, arch: Option<&str>) -> Result<Option<Stored>> {
        let tag = normalize(reference)?;
        let index = self.read_index()?;
        let Some(records) = index.tags.get(&tag) else {
            return Ok(None);
        };
        let record = match (records.as_slice(), arch) {
            ([only], _) => only.clone(),
            (many, Some(a)) => match many.iter().find(|r| r.arch == a) {
                Some(r) => r.clone(),
                None => {
                    return Err(StoreError::invalid(
                        &tag,
                        format!(
                            "the store has it for {}, not for {a}; build it for {a} too",
                            arches(many)
                        ),
                    ))
                }
            },
            ([], _) => return Ok(None),
            (many, None) => {
                return Err(StoreError::invalid(
                    &tag,
                    format!(
                        "the store has it for {}; say which with --platform",
                        arches(many)
                    ),
                ))
            }
        };
        let path = self.file_for(record.hex());
        Ok(Some(Stored { tag, record, path }))
    }

    /// A bundle pulled as the OCI manifest `digest`, under any tag.
    pub fn pulled_as(&self, digest: &str) -> Result<Option<Stored>> {
        let index = self.read_index()?;
        let found = index.tags.iter().find_map(|(tag, rs)| {
            rs.iter()
                .find(|r| r.pulled_as.as_deref() == Some(digest))
                .map(|r| (tag.clone(), r.clone()))
        });
        Ok(found.map(|(tag, record)| Stored {
            path: self.file_for(record.hex()),
            tag,
            record,
        }))
    }

    /// Where a pull writes a bundle before it is added: inside the store, so that the add
    /// is a hard link and a cut pull resumes from the same place.
    pub fn incoming(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join("incoming");
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        Ok(dir.join(name))
    }

    /// Opens a stored bundle to use it: its header must hash to the digest it is filed under
    /// and its signatures must satisfy `trust` (the keys trusted now).
    pub fn check(&self, stored: &Stored, trust: &bale_trust::TrustPolicy) -> Result<Bundle> {
        let damaged = |message: String| StoreError::Damaged {
            path: stored.path.clone(),
            digest: stored.record.short_digest().to_string(),
            message,
        };
        if !stored.path.is_file() {
            return Err(damaged(format!("the file of {} is missing", stored.tag)));
        }
        let bundle = Bundle::open(&stored.path)?;
        let have = hex::encode(bundle.trailer.header_sha256);
        if have != stored.record.hex() {
            return Err(damaged(format!(
                "its root digest is sha256:{have}, not the {} it is filed under",
                stored.record.digest
            )));
        }
        bale_trust::enforce(&bundle, trust).map_err(|source| StoreError::Trust {
            path: stored.path.clone(),
            source,
        })?;
        Ok(bundle)
    }

    /// The digest `word` names: a tag's (when it has one architecture) or a unique prefix.
    fn digest_of(&self, index: &Index, word: &str) -> Result<String> {
        if let Ok(tag) = normalize(word) {
            if let Some(rs) = index.tags.get(&tag) {
                return match rs.as_slice() {
                    [only] => Ok(only.digest.clone()),
                    many => Err(StoreError::invalid(
                        word,
                        format!(
                            "the tag names bundles for {}; name one by its digest",
                            arches(many)
                        ),
                    )),
                };
            }
        }
        let not_found = || StoreError::NotFound {
            what: word.to_string(),
            store: self.root.clone(),
        };
        let prefix = digest_prefix(word).ok_or_else(not_found)?;
        let all: BTreeSet<&str> = index
            .tags
            .values()
            .flatten()
            .map(|r| r.digest.as_str())
            .filter(|d| {
                d.strip_prefix("sha256:")
                    .is_some_and(|h| h.starts_with(&prefix))
            })
            .collect();
        match all.len() {
            0 => Err(not_found()),
            1 => Ok(all
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
                .remove(0)),
            n => Err(StoreError::invalid(
                word,
                format!("{n} bundles have digests that start so; give more digits"),
            )),
        }
    }

    /// Removes tags and digests: a tag loses its records; a digest loses every tag when
    /// `force` or when one tag names it (else it is refused); a bundle no tag names is
    /// deleted. Nothing changes unless every word is found.
    pub fn remove(&self, words: &[String], force: bool) -> Result<Vec<Removal>> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let mut done = Vec::new();
        let mut touched = Vec::new();
        for word in words {
            let tag = normalize(word).ok().filter(|t| index.tags.contains_key(t));
            if let Some(tag) = tag {
                if let Some(rs) = index.tags.remove(&tag) {
                    touched.extend(rs.into_iter().map(|r| r.digest));
                }
                done.push(Removal::Untagged(tag));
                continue;
            }
            let digest = self.digest_of(&index, word)?;
            let tags = index.tags_of(&digest);
            if tags.len() > 1 && !force {
                return Err(StoreError::StillTagged {
                    digest: digest.clone(),
                    tags: tags.join(", "),
                });
            }
            for t in tags {
                if let Some(rs) = index.tags.get_mut(&t) {
                    rs.retain(|r| r.digest != digest);
                    if rs.is_empty() {
                        index.tags.remove(&t);
                    }
                }
                done.push(Removal::Untagged(t));
            }
            touched.push(digest);
        }
        self.write_index(&index)?;
        let mut deleted = BTreeSet::new();
        for d in &touched {
            if index.tags_of(d).is_empty() && deleted.insert(d.clone()) {
                done.push(Removal::Deleted(d.clone()));
            }
        }
        self.collect_garbage(&index, deleted);
        Ok(done)
    }

    /// Gives `target` the bundles `source` (a tag or a digest) names.
    pub fn tag(&self, source: &str, target: &str) -> Result<String> {
        let target = normalize(target)?;
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let records = match normalize(source).ok().and_then(|t| index.tags.get(&t)) {
            Some(rs) => rs.clone(),
            None => {
                let digest = self.digest_of(&index, source)?;
                index
                    .tags
                    .values()
                    .flatten()
                    .find(|r| r.digest == digest)
                    .cloned()
                    .into_iter()
                    .collect()
            }
        };
        let old = index
            .tags
            .insert(target.clone(), records)
            .unwrap_or_default();
        self.write_index(&index)?;
        self.collect_garbage(&index, old.into_iter().map(|r| r.digest));
        Ok(target)
    }
}

fn arches(records: &[Record]) -> String {
    records
        .iter()
        .map(|r| r.arch.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `dest` already is the bundle of `record` (a file of its length whose header
/// hashes to its digest); a damaged or partial one is replaced.
fn holds(dest: &Path, record: &Record) -> bool {
    Bundle::open(dest).is_ok_and(|b| {
        b.trailer.file_len == record.size
            && hex::encode(b.trailer.header_sha256) == record.hex()
            && std::fs::metadata(dest).is_ok_and(|m| m.len() == record.size)
    })
}

/// What [`place`] does when `src` cannot be hard-linked (another file system).
enum Fallback {
    Copy,
    None,
}

/// Whether two paths name one file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Puts `src` at `dest` whole or not at all: a hard link, else (with [`Fallback::Copy`]) a
/// copy, under a temporary name in `dest`'s directory, synced, then renamed.
fn place(src: &Path, dest: &Path, fallback: Fallback) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".incoming-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = std::fs::hard_link(src, &tmp) {
        match fallback {
            Fallback::Copy => {
                std::fs::copy(src, &tmp).map_err(|e| StoreError::io(&tmp, e))?;
            }
            Fallback::None => return Err(StoreError::io(&tmp, e)),
        }
    }
    let synced = File::open(&tmp).and_then(|f| f.sync_all());
    if let Err(e) = synced.and_then(|()| std::fs::rename(&tmp, dest)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(StoreError::io(dest, e));
    }
    sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) {
    // Durability of the name only; the data was synced before the rename.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_a_tag() {
        assert_eq!(normalize("base").unwrap(), "base:latest");
        assert_eq!(normalize("base:1").unwrap(), "base:1");
        assert_eq!(
            normalize("host:5000/ns/base").unwrap(),
            "host:5000/ns/base:latest"
        );
        assert_eq!(
            normalize("host:5000/ns/base:v1.19.8").unwrap(),
            "host:5000/ns/base:v1.19.8"
        );
        assert!(normalize("base@sha256:00").is_err());
        assert!(normalize("./base:1").is_err());
        assert!(normalize("base:").is_err());
        assert!(normalize("a b").is_err());
    }

    #[test]
    fn digests_and_prefixes() {
        assert_eq!(
            digest_prefix("sha256:ABCDEF12").as_deref(),
            Some("abcdef12")
        );
        assert_eq!(digest_prefix("abcdef").as_deref(), Some("abcdef"));
        assert_eq!(digest_prefix("abc"), None);
        assert_eq!(digest_prefix("base"), None);
    }

    #[test]
    fn an_empty_store_lists_nothing_and_resolves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path());
        assert!(store.list().unwrap().is_empty());
        assert!(store.resolve("base:1", None).unwrap().is_none());
        let e = store.remove(&["base:1".into()], false).unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    }

    /// A small bundle named `name` holding `content`, with this test program as its stub.
    fn bundle(dir: &Path, name: &str, content: &str) -> PathBuf {
        let tree = dir.join(format!("{name}-tree"));
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("f"), content).unwrap();
        let out = dir.join(format!("{name}.bale"));
        let meta = bale_payload::BundleMeta {
            name: name.into(),
            version: "1".into(),
            ..Default::default()
        };
        let opts = bale_payload::WriteOptions {
            threads: 1,
            ..Default::default()
        };
        let stub = std::env::current_exe().unwrap();
        let mut w = bale_payload::BundleWriter::create(&out, &stub, meta, opts).unwrap();
        w.add_file("f", 0o644, &tree.join("f")).unwrap();
        w.finish().unwrap();
        out
    }

    fn files(store: &BundleStore) -> usize {
        std::fs::read_dir(store.blobs()).unwrap().count()
    }

    #[test]
    fn a_tag_moved_to_another_bundle_leaves_no_orphan() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path().join("store"));
        let one = store.add(&bundle(dir.path(), "a", "one"), "app:1").unwrap();
        let found = store.resolve("app:1", None).unwrap().unwrap();
        assert_eq!(found.record, one);
        store.check(&found, &Default::default()).unwrap();
        let two = store.add(&bundle(dir.path(), "b", "two"), "app:1").unwrap();
        assert_ne!(one.digest, two.digest);
        assert_eq!(files(&store), 1);
        assert_eq!(store.list().unwrap().len(), 1);
    }

    #[test]
    fn a_rebuild_of_the_same_bundle_leaves_one_copy_on_disk() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path().join("store"));
        let first = bundle(dir.path(), "a", "one");
        let rec = store.add(&first, "app:1").unwrap();
        let held = store.file_for(rec.hex());
        assert_eq!(std::fs::metadata(&first).unwrap().nlink(), 2);
        // The output removed and built again: the same bytes in a new file.
        let kept = std::fs::read(&first).unwrap();
        std::fs::remove_file(&first).unwrap();
        std::fs::write(&first, &kept).unwrap();
        assert_eq!(std::fs::metadata(&held).unwrap().nlink(), 1);
        let again = store.add(&first, "app:1").unwrap();
        assert_eq!(again.digest, rec.digest);
        assert!(
            same_file(&first, &held),
            "the store still holds the old copy"
        );
        assert_eq!(files(&store), 1);
        store
            .check(
                &store.resolve("app:1", None).unwrap().unwrap(),
                &Default::default(),
            )
            .unwrap();
    }

    #[test]
    fn a_digest_with_two_tags_goes_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path().join("store"));
        let r = store.add(&bundle(dir.path(), "a", "one"), "app:1").unwrap();
        store.tag(r.short_digest(), "app:latest").unwrap();
        assert_eq!(files(&store), 1);
        let e = store
            .remove(std::slice::from_ref(&r.digest), false)
            .unwrap_err();
        assert!(matches!(e, StoreError::StillTagged { .. }), "{e}");
        // All or nothing: a word not found leaves every tag in place.
        let e = store
            .remove(&["app:1".into(), "nope:1".into()], false)
            .unwrap_err();
        assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
        assert_eq!(store.list().unwrap().len(), 2);
        let done = store.remove(&[r.hex()[..8].to_string()], true).unwrap();
        assert_eq!(
            done,
            vec![
                Removal::Untagged("app:1".into()),
                Removal::Untagged("app:latest".into()),
                Removal::Deleted(r.digest.clone()),
            ]
        );
        assert_eq!(files(&store), 0);
    }

    #[test]
    fn concurrent_adds_lose_no_tag() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path().join("store"));
        let files: Vec<PathBuf> = (0..6)
            .map(|i| bundle(dir.path(), &format!("b{i}"), &format!("content {i}")))
            .collect();
        std::thread::scope(|s| {
            for (i, f) in files.iter().enumerate() {
                let store = &store;
                s.spawn(move || store.add(f, &format!("b{i}:1")).unwrap());
            }
        });
        assert_eq!(store.list().unwrap().len(), 6);
    }

    #[test]
    fn a_broken_index_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.json"), "{not json").unwrap();
        let e = BundleStore::new(dir.path()).list().unwrap_err();
        assert!(e.to_string().contains("not a bundle store index"), "{e}");
    }
}
