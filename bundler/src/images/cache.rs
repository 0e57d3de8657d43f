//! The local image cache: an OCI image layout on disk that every source feeds and bundles are
//! built from.
//!
//! Blobs are content-addressed and written under a temporary name, synced, checked against
//! their digest and only then renamed into place, so a file under `blobs/sha256/` is always
//! whole and correct, however the process ends. The layout's `index.json` names the images
//! collected so far, which makes the cache usable by other OCI tools too.

use super::error::{ImagesError, Result};
use super::oci::{self, Descriptor, Index, OCI_LAYOUT_FILE, OCI_LAYOUT_JSON, REF_NAME};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// What a blob written without a known digest turned out to be.
#[derive(Debug, Clone)]
pub struct Ingested {
    pub digest: String,
    pub size: u64,
    /// The first bytes, enough to tell a compressed layer from a plain tar.
    pub magic: Vec<u8>,
}

impl Cache {
    /// `$XDG_CACHE_HOME/bale/oci`, else `~/.cache/bale/oci`, else a directory under the system's
    /// temporary directory.
    pub fn default_dir() -> PathBuf {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })
            .unwrap_or_else(std::env::temp_dir);
        base.join("bale").join("oci")
    }

    /// Opens the cache at `root`, creating the layout if needed.
    pub fn open(root: impl AsRef<Path>) -> Result<Cache> {
        let root = root.as_ref().to_path_buf();
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| ImagesError::io(&blobs, e))?;
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| ImagesError::io(&tmp, e))?;
        let cache = Cache { root };
        let layout = cache.root.join(OCI_LAYOUT_FILE);
        if !layout.exists() {
            cache.write_atomic(&layout, OCI_LAYOUT_JSON)?;
        }
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = oci::digest_hex("blob", digest)?;
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    /// Whether the blob is here with the size its descriptor gives. Its content was checked
    /// when it was written; the bundle writer checks it again as it reads it.
    pub fn has(&self, d: &Descriptor) -> bool {
        self.blob_path(&d.digest)
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == d.size)
    }

    pub fn has_digest(&self, digest: &str) -> bool {
        self.blob_path(digest)
            .ok()
            .is_some_and(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
    }

    fn temp(&self) -> Result<tempfile::NamedTempFile> {
        let dir = self.root.join("tmp");
        tempfile::Builder::new()
            .prefix(".part-")
            .tempfile_in(&dir)
            .map_err(|e| ImagesError::io(&dir, e))
    }

    /// Stores the content of `r` as the blob `digest`. Content that does not match the digest
    /// (or `size`, when given) is discarded and reported.
    pub fn put_reader(
        &self,
        what: &str,
        digest: &str,
        size: Option<u64>,
        r: &mut dyn Read,
    ) -> Result<()> {
        let dest = self.blob_path(digest)?;
        let mut tmp = self.temp()?;
        let tpath = tmp.path().to_path_buf();
        let got = copy_hashing(r, tmp.as_file_mut(), &tpath, what, size)?;
        if got.digest != digest {
            return Err(ImagesError::Digest {
                what: what.to_string(),
                expected: digest.to_string(),
                actual: got.digest,
            });
        }
        if let Some(s) = size {
            if got.size != s {
                return Err(ImagesError::invalid(
                    what,
                    format!("{} bytes, but its descriptor says {s}", got.size),
                ));
            }
        }
        self.persist(tmp, &dest)
    }

    pub fn put_bytes(&self, what: &str, digest: &str, data: &[u8]) -> Result<()> {
        // Small blobs are compared rather than trusted, so a damaged copy gets replaced.
        let dest = self.blob_path(digest)?;
        if std::fs::read(&dest).is_ok_and(|have| have == data) {
            return Ok(());
        }
        self.put_reader(what, digest, Some(data.len() as u64), &mut &data[..])
    }

    /// Stores the content of `r` under whatever digest it has.
    pub fn ingest(&self, what: &str, r: &mut dyn Read) -> Result<Ingested> {
        let mut tmp = self.temp()?;
        let tpath = tmp.path().to_path_buf();
        let got = copy_hashing(r, tmp.as_file_mut(), &tpath, what, None)?;
        let dest = self.blob_path(&got.digest)?;
        self.persist(tmp, &dest)?;
        Ok(got)
    }

    /// Stores the file `source` as the blob `d`, unless it is here already.
    pub fn put_file(&self, what: &str, d: &Descriptor, source: &Path) -> Result<()> {
        if self.has(d) {
            return Ok(());
        }
        let mut f = File::open(source).map_err(|e| ImagesError::io(source, e))?;
        self.put_reader(what, &d.digest, Some(d.size), &mut f)
    }

    fn persist(&self, tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
        tmp.as_file()
            .sync_all()
            .map_err(|e| ImagesError::io(tmp.path(), e))?;
        tmp.persist(dest)
            .map_err(|e| ImagesError::io(dest, e.error))?;
        sync_dir(dest);
        Ok(())
    }

    /// Reads a small blob (manifest, index, config) whole, refusing more than `limit` bytes.
    pub fn read_blob(&self, what: &str, digest: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        read_limited(&path, what, limit)
    }

    /// Names `entries` (ref name, descriptor) in the cache's `index.json`, replacing what those
    /// names pointed at before. Other builds may share the cache: the update holds a lock.
    pub fn record(&self, entries: &[(String, Descriptor)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let lock_path = self.root.join("index.lock");
        let lock = File::create(&lock_path).map_err(|e| ImagesError::io(&lock_path, e))?;
        // Held until this function returns.
        let _held = lock_exclusive(lock).map_err(|e| ImagesError::io(&lock_path, e))?;
        let mut manifests = self.read_index()?;
        for (name, d) in entries {
            manifests.retain(|m| m.annotations.get(REF_NAME) != Some(name));
            let mut d = d.clone();
            d.annotations.insert(REF_NAME.to_string(), name.clone());
            manifests.push(d);
        }
        manifests.sort_by(|a, b| {
            a.annotations
                .get(REF_NAME)
                .cmp(&b.annotations.get(REF_NAME))
        });
        let index = self.root.join("index.json");
        self.write_atomic(&index, &Index::new(manifests).to_json())
        // The lock goes with `lock` when it is dropped.
    }

    /// The descriptor the cache's index gives `name`, if any.
    pub fn lookup(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .read_index()?
            .into_iter()
            .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(name)))
    }

    fn read_index(&self) -> Result<Vec<Descriptor>> {
        let path = self.root.join("index.json");
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImagesError::io(&path, e)),
            Ok(_) => {}
        }
        let data = read_limited(&path, "the cache index", 64 << 20)?;
        let raw = Index::parse(&data).map_err(|e| {
            ImagesError::invalid(
                path.display().to_string(),
                format!("{e}; delete it to start the index afresh"),
            )
        })?;
        Ok(raw.manifests)
    }

    fn write_atomic(&self, dest: &Path, data: &[u8]) -> Result<()> {
        let mut tmp = self.temp()?;
        tmp.write_all(data)
            .map_err(|e| ImagesError::io(tmp.path(), e))?;
        self.persist(tmp, dest)
    }
}

/// Copies while hashing, counting and keeping the first bytes; refuses to copy more than
/// `limit` bytes when one is given, so a server cannot fill the disk past what it announced.
fn copy_hashing(
    r: &mut dyn Read,
    w: &mut File,
    wpath: &Path,
    what: &str,
    limit: Option<u64>,
) -> Result<Ingested> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    let mut magic = Vec::new();
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImagesError::Read {
                    what: what.to_string(),
                    message: e.to_string(),
                })
            }
        };
        let chunk = &buf[..n];
        if magic.len() < 8 {
            let take = (8 - magic.len()).min(n);
            magic.extend_from_slice(&chunk[..take]);
        }
        size += n as u64;
        if limit.is_some_and(|l| size > l) {
            return Err(ImagesError::invalid(
                what,
                format!(
                    "more bytes than the {} its descriptor announces",
                    limit.unwrap_or_default()
                ),
            ));
        }
        hasher.update(chunk);
        w.write_all(chunk).map_err(|e| ImagesError::io(wpath, e))?;
    }
    Ok(Ingested {
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        size,
        magic,
    })
}

pub(crate) fn read_limited(path: &Path, what: &str, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| ImagesError::io(path, e))?;
    let mut data = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| ImagesError::io(path, e))?;
    if data.len() as u64 > limit {
        return Err(ImagesError::invalid(
            what,
            format!("larger than the limit of {limit} bytes"),
        ));
    }
    Ok(data)
}

fn lock_exclusive(f: File) -> std::io::Result<nix::fcntl::Flock<File>> {
    let mut f = f;
    loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive) {
            Ok(held) => return Ok(held),
            Err((back, nix::errno::Errno::EINTR)) => f = back,
            Err((_, e)) => return Err(e.into()),
        }
    }
}

/// Makes a rename durable; failing only weakens durability, never correctness.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}
