//! The receiving end of a copy on one node: `<data-dir>/.bundle.bale.partial` and its state file.
//!
//! Every chunk is checked against the bundle's digests before it is written, and recorded as
//! held in the state file (`.bundle.bale.copy.json`, replaced atomically about twice a second).
//! The state is a hint, not a proof: when a copy resumes, every chunk it claims is hashed again
//! from the disk, so a chunk lost in a crash or damaged since is fetched again. When every chunk
//! is held the file is flushed to disk and renamed to `bundle.bale`: complete and checked, with
//! no second read.

use super::wire;
use super::CopyError;
use bale_payload::chunks::{ChunkList, STUB, TAIL};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::layout::BUNDLE;
pub use crate::layout::BUNDLE_PARTIAL as PARTIAL;
pub use crate::layout::COPY_LOCK as LOCK;
pub use crate::layout::COPY_STATE as STATE;
/// Where the state file is written before it is renamed over [`STATE`].
pub use crate::layout::COPY_STATE_TMP as STATE_TMP;

/// What a node's copy is doing, kept in the state file: the resume record, and the progress the
/// installer reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Header digest of the bundle being copied.
    pub digest: String,
    /// Length of the bundle; 0 until its tail arrived.
    #[serde(default)]
    pub file_len: u64,
    #[serde(default)]
    pub tail_offset: u64,
    #[serde(default)]
    pub chunks: usize,
    /// Chunks held and checked, as a hex bitmap.
    #[serde(default)]
    pub have: String,
    /// `listening`, `ready` (tail known, `have` settled), `complete`, `failed`.
    #[serde(default)]
    pub phase: String,
    /// Set by the installer for each start of the agent, so it can tell this run's state from
    /// an older one.
    #[serde(default)]
    pub run: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub have_bytes: u64,
    /// Bytes received and checked in this run, and from whom.
    #[serde(default)]
    pub received: u64,
    #[serde(default)]
    pub from: BTreeMap<String, u64>,
    /// Bytes found already in place (re-checked) when this run started.
    #[serde(default)]
    pub kept: u64,
    /// Bytes sent to other nodes.
    #[serde(default)]
    pub served: u64,
    /// Chunks that failed their check on arrival.
    #[serde(default)]
    pub rejected: u64,
    #[serde(default)]
    pub seconds: f64,
    #[serde(default)]
    pub error: String,
}

struct Inner {
    list: Option<Arc<ChunkList>>,
    have: Vec<bool>,
    state: State,
    failed: Option<String>,
    dirty: bool,
}

pub struct Store {
    dir: PathBuf,
    partial: PathBuf,
    file: File,
    digest: [u8; 32],
    started: Instant,
    inner: Mutex<Inner>,
    changed: Condvar,
    /// Set once the copy is flushed and renamed; held while that happens.
    finished: Mutex<bool>,
    unflushed: AtomicU64,
    flushing: AtomicBool,
    /// Held while the state file is written: the writing threads share one temporary name.
    saving: Mutex<()>,
}

/// Bytes written between two flushes of the partial file.
const FLUSH_EVERY: u64 = 64 << 20;

fn io_err(path: &Path, what: &str) -> impl FnOnce(std::io::Error) -> CopyError {
    let path = path.to_path_buf();
    let what = what.to_string();
    move |source| CopyError::Io { path, what, source }
}

impl Store {
    /// Opens (or starts) the partial copy of the bundle with header digest `digest_hex` in
    /// `dir`, re-checking every chunk an earlier run recorded.
    pub fn open(dir: &Path, digest_hex: &str, run: &str) -> Result<Store, CopyError> {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(digest_hex, &mut digest)
            .map_err(|_| CopyError::BadDigest(digest_hex.to_string()))?;
        let partial = dir.join(PARTIAL);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&partial)
            .map_err(io_err(&partial, "open the partial bundle"))?;
        let old: Option<State> = std::fs::read(dir.join(STATE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let store = Store {
            dir: dir.to_path_buf(),
            partial,
            file,
            digest,
            started: Instant::now(),
            inner: Mutex::new(Inner {
                list: None,
                have: Vec::new(),
                state: State {
                    digest: digest_hex.to_string(),
                    phase: "listening".into(),
                    run: run.to_string(),
                    ..Default::default()
                },
                failed: None,
                dirty: true,
            }),
            changed: Condvar::new(),
            finished: Mutex::new(false),
            unflushed: AtomicU64::new(0),
            flushing: AtomicBool::new(false),
            saving: Mutex::new(()),
        };
        let resumed = match old.filter(|s| s.digest == digest_hex && s.file_len > 0) {
            Some(s) => store.resume(&s)?,
            None => false,
        };
        if !resumed {
            store
                .file
                .set_len(0)
                .map_err(io_err(&store.partial, "truncate the partial bundle"))?;
        }
        store.save()?;
        Ok(store)
    }

    /// Takes over what an earlier run recorded, keeping only chunks that still check out.
    fn resume(&self, old: &State) -> Result<bool, CopyError> {
        let len = self
            .file
            .metadata()
            .map_err(io_err(&self.partial, "read the partial bundle"))?
            .len();
        if len != old.file_len || old.tail_offset >= old.file_len {
            return Ok(false);
        }
        let mut tail = vec![0u8; (old.file_len - old.tail_offset) as usize];
        if self.file.read_exact_at(&mut tail, old.tail_offset).is_err() {
            return Ok(false);
        }
        let Ok(list) = ChunkList::from_tail(&tail, &self.digest) else {
            return Ok(false);
        };
        let Some(mut have) = wire::bitmap_from_hex(&old.have, list.len()) else {
            return Ok(false);
        };
        have[TAIL] = true;
        let mut buf = Vec::new();
        let mut kept = 0;
        for (i, c) in list.chunks.iter().enumerate() {
            if !have[i] {
                continue;
            }
            buf.resize(c.len as usize, 0);
            let ok = self.file.read_exact_at(&mut buf, c.offset).is_ok() && c.check(&buf).is_ok();
            have[i] = ok;
            if ok {
                kept += c.len;
            }
        }
        let mut g = self.lock();
        g.state.file_len = list.file_len();
        g.state.tail_offset = list.trailer.table_offset;
        g.state.chunks = list.len();
        g.state.kept = kept;
        g.state.have_bytes = kept;
        g.have = have;
        g.list = Some(Arc::new(list));
        Ok(true)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::engine::lock(&self.inner)
    }

    pub fn list(&self) -> Option<Arc<ChunkList>> {
        self.lock().list.clone()
    }

    /// Chunks not held yet (all of them but the tail while the tail is unknown).
    pub fn missing(&self) -> Vec<usize> {
        let g = self.lock();
        g.have
            .iter()
            .enumerate()
            .filter(|(_, h)| !**h)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn is_complete(&self) -> bool {
        let g = self.lock();
        g.list.is_some() && g.have.iter().all(|h| *h)
    }

    /// Checks one chunk that arrived from `source` and writes it in place. A chunk already held
    /// is ignored. Returns an error naming the chunk when it does not check out.
    pub fn accept(&self, index: usize, data: &[u8], source: &str) -> Result<(), CopyError> {
        let list = match self.list() {
            Some(l) => l,
            None if index == TAIL => return self.accept_tail(data, source),
            None => {
                return Err(CopyError::Protocol(format!(
                    "chunk {index} arrived before the bundle's tail"
                )))
            }
        };
        let chunk = list.get(index).ok_or_else(|| {
            CopyError::Protocol(format!(
                "chunk {index} does not exist (the bundle has {})",
                list.len()
            ))
        })?;
        if self.lock().have[index] {
            return Ok(());
        }
        if let Err(e) = chunk.check(data) {
            let mut g = self.lock();
            g.state.rejected += 1;
            g.dirty = true;
            return Err(CopyError::BadChunk {
                index,
                offset: chunk.offset,
                why: e.to_string(),
            });
        }
        self.file
            .write_all_at(data, chunk.offset)
            .map_err(io_err(&self.partial, "write the partial bundle"))?;
        self.flush_now_and_then(chunk.len);
        let mut g = self.lock();
        if !g.have[index] {
            g.have[index] = true;
            g.state.have_bytes += chunk.len;
            g.state.received += chunk.len;
            *g.state.from.entry(source.to_string()).or_default() += chunk.len;
            g.dirty = true;
        }
        drop(g);
        self.changed.notify_all();
        Ok(())
    }

    fn accept_tail(&self, data: &[u8], source: &str) -> Result<(), CopyError> {
        let list = ChunkList::from_tail(data, &self.digest).map_err(|e| CopyError::BadChunk {
            index: TAIL,
            offset: 0,
            why: e.to_string(),
        })?;
        self.file
            .set_len(0)
            .and_then(|()| self.file.set_len(list.file_len()))
            .map_err(io_err(&self.partial, "size the partial bundle"))?;
        self.file
            .write_all_at(data, list.trailer.table_offset)
            .map_err(io_err(&self.partial, "write the partial bundle"))?;
        let mut g = self.lock();
        let mut have = vec![false; list.len()];
        have[TAIL] = true;
        g.state.file_len = list.file_len();
        g.state.tail_offset = list.trailer.table_offset;
        g.state.chunks = list.len();
        g.state.have_bytes = data.len() as u64;
        g.state.received += data.len() as u64;
        *g.state.from.entry(source.to_string()).or_default() += data.len() as u64;
        g.have = have;
        g.list = Some(Arc::new(list));
        g.dirty = true;
        drop(g);
        self.changed.notify_all();
        Ok(())
    }

    /// Fills the program chunk from `exe` (the agent's own executable, which is the bundle's
    /// program) when it checks out, so it never crosses the network.
    pub fn fill_stub_from(&self, exe: &Path) -> Result<bool, CopyError> {
        let Some(list) = self.list() else {
            return Ok(false);
        };
        if self.lock().have[STUB] {
            return Ok(true);
        }
        let c = &list.chunks[STUB];
        let mut buf = vec![0u8; c.len as usize];
        let f = File::open(exe).map_err(io_err(exe, "read the agent's own program"))?;
        if f.read_exact_at(&mut buf, 0).is_err() {
            return Ok(false);
        }
        match self.accept(STUB, &buf, "local") {
            Ok(()) => Ok(true),
            Err(CopyError::BadChunk { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until the tail is known (or the copy failed).
    pub fn wait_list(&self, timeout: Duration) -> Result<Arc<ChunkList>, CopyError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if let Some(l) = &g.list {
                return Ok(l.clone());
            }
            if let Some(e) = &g.failed {
                return Err(CopyError::ThisNodeFailed(e.to_string()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CopyError::Late {
                    what: "the bundle's tail".into(),
                });
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Reads chunk `index` into `buf` as soon as this node holds it.
    pub fn read_chunk(
        &self,
        list: &ChunkList,
        index: usize,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<(), CopyError> {
        let c = list
            .get(index)
            .ok_or_else(|| CopyError::Protocol(format!("no chunk {index}")))?;
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        while !g.have.get(index).copied().unwrap_or(false) {
            if let Some(e) = &g.failed {
                return Err(CopyError::ThisNodeFailed(e.to_string()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CopyError::Late {
                    what: format!("chunk {index}"),
                });
            }
            g = self
                .changed
                .wait_timeout(g, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        drop(g);
        buf.resize(c.len as usize, 0);
        self.file
            .read_exact_at(buf, c.offset)
            .map_err(io_err(&self.partial, "read a chunk to send"))
    }

    pub fn note_served(&self, bytes: u64) {
        let mut g = self.lock();
        g.state.served += bytes;
        g.dirty = true;
    }

    pub fn set_port(&self, port: u16) {
        let mut g = self.lock();
        g.state.port = port;
        g.dirty = true;
    }

    pub fn set_phase(&self, phase: &str) -> Result<(), CopyError> {
        {
            let mut g = self.lock();
            g.state.phase = phase.into();
            g.dirty = true;
        }
        self.save()
    }

    /// Marks the copy failed: waiting servers give up, the state says why.
    pub fn fail(&self, why: &str) {
        {
            let mut g = self.lock();
            g.failed = Some(why.to_string());
            g.state.phase = "failed".into();
            g.state.error = why.to_string();
            g.dirty = true;
        }
        self.changed.notify_all();
        let _ = self.save();
    }

    pub fn state(&self) -> State {
        let mut s = self.lock().state.clone();
        s.seconds = self.started.elapsed().as_secs_f64();
        s
    }

    /// Writes the state file when something changed (temporary name, rename; no fsync: a lost
    /// state only costs a re-fetch, since resuming re-checks every chunk anyway).
    pub fn save(&self) -> Result<(), CopyError> {
        // also keeps the files in the order of their snapshots: the newest state lands last
        let _saving = self
            .saving
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let body = {
            let mut g = self.lock();
            if !g.dirty {
                return Ok(());
            }
            g.dirty = false;
            g.state.have = wire::bitmap_hex(&g.have);
            g.state.seconds = self.started.elapsed().as_secs_f64();
            serde_json::to_vec(&g.state).unwrap_or_default()
        };
        let path = self.dir.join(STATE);
        let tmp = self.dir.join(STATE_TMP);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&body)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(io_err(&path, "write the copy state"))
    }

    /// Flushes the partial file after every [`FLUSH_EVERY`] bytes written, in the writing
    /// thread (others go on writing), so the flush before the rename has little left to do.
    /// `sync_file_range` would be lighter but does nothing through overlayfs.
    fn flush_now_and_then(&self, written: u64) {
        let due = self.unflushed.fetch_add(written, Ordering::SeqCst) + written >= FLUSH_EVERY;
        if due && !self.flushing.swap(true, Ordering::SeqCst) {
            self.unflushed.store(0, Ordering::SeqCst);
            // a failure here shows again, and counts, in the final flush
            let _ = self.file.sync_data();
            self.flushing.store(false, Ordering::SeqCst);
        }
    }

    /// [`Store::finish`] once every chunk is held, and only once, whoever asks first.
    pub fn finish_if_complete(&self) -> Result<(), CopyError> {
        let mut finished = self
            .finished
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !*finished && self.is_complete() {
            self.finish()?;
            *finished = true;
        }
        Ok(())
    }

    /// Flushes the complete copy to disk and renames it to `bundle.bale`.
    pub fn finish(&self) -> Result<PathBuf, CopyError> {
        if !self.is_complete() {
            return Err(CopyError::Incomplete);
        }
        let dest = self.dir.join(BUNDLE);
        use std::os::unix::fs::PermissionsExt;
        self.file
            .set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(&self.partial, "make the bundle executable"))?;
        self.file
            .sync_all()
            .map_err(io_err(&self.partial, "flush the bundle to disk"))?;
        std::fs::rename(&self.partial, &dest).map_err(io_err(&dest, "install the bundle"))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.set_phase("complete")?;
        Ok(dest)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bale_payload::writer::{BundleMeta, BundleWriter, WriteOptions};

    pub(crate) fn sample_bundle(dir: &Path) -> PathBuf {
        let dest = dir.join("src.bale");
        let exe = std::env::current_exe().unwrap();
        let opts = WriteOptions {
            threads: 2,
            frame_size: 256 << 10,
            ..Default::default()
        };
        let mut w = BundleWriter::create(&dest, &exe, BundleMeta::default(), opts).unwrap();
        let mut x: u64 = 0x2545f4914f6cdd1d;
        let noise: Vec<u8> = (0..(9 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        w.add_bytes("noise", 0o644, &noise).unwrap();
        w.add_bytes("small", 0o644, b"hello").unwrap();
        w.finish().unwrap();
        dest
    }

    /// The sample bundle in `dir`: its bytes, its chunk list and its header digest (hex).
    pub(crate) fn sample_chunks(dir: &Path) -> (Vec<u8>, ChunkList, String) {
        let src = sample_bundle(dir);
        let bytes = std::fs::read(&src).unwrap();
        let b = bale_payload::Bundle::open(&src).unwrap();
        let list = ChunkList::of_bundle(&b).unwrap();
        (bytes, list, hex::encode(b.trailer.header_sha256))
    }

    pub(crate) fn chunk_bytes(bytes: &[u8], list: &ChunkList, i: usize) -> Vec<u8> {
        let c = &list.chunks[i];
        bytes[c.offset as usize..(c.offset + c.len) as usize].to_vec()
    }

    /// The agent's threads save the state at the same time; each save must land (they share
    /// the temporary file name).
    #[test]
    fn saves_from_many_threads_all_land() {
        let d = tempfile::tempdir().unwrap();
        let (_, _, digest) = sample_chunks(d.path());
        let s = Store::open(d.path(), &digest, "r1").unwrap();
        std::thread::scope(|sc| {
            for t in 0..8u16 {
                let s = &s;
                sc.spawn(move || {
                    for i in 0..300u16 {
                        s.set_port(t * 1000 + i);
                        s.save().unwrap();
                    }
                });
            }
        });
        let st: State =
            serde_json::from_slice(&std::fs::read(d.path().join(STATE)).unwrap()).unwrap();
        assert!(
            st.port % 1000 == 299,
            "the last state written is a last one: {}",
            st.port
        );
    }

    #[test]
    fn a_copy_resumes_and_refetches_damaged_chunks() {
        let d = tempfile::tempdir().unwrap();
        let (bytes, list, digest) = sample_chunks(d.path());
        let node = d.path().join("node");
        std::fs::create_dir(&node).unwrap();
        let n = list.len();
        assert!(n >= 6, "{n} chunks");

        // First run: the tail, then half of the chunks, then the run dies.
        let s = Store::open(&node, &digest, "r1").unwrap();
        assert!(s.list().is_none());
        assert!(
            s.accept(3, b"early", "x").is_err(),
            "no chunk before the tail"
        );
        s.accept(TAIL, &chunk_bytes(&bytes, &list, TAIL), "installer")
            .unwrap();
        assert_eq!(s.missing().len(), n - 1);
        // A damaged chunk is refused and stays missing.
        let mut bad = chunk_bytes(&bytes, &list, 2);
        bad[10] ^= 1;
        assert!(matches!(
            s.accept(2, &bad, "installer"),
            Err(CopyError::BadChunk { index: 2, .. })
        ));
        for i in 1..n / 2 {
            s.accept(i, &chunk_bytes(&bytes, &list, i), "installer")
                .unwrap();
        }
        s.save().unwrap();
        drop(s);

        // Damage one held chunk on disk, as a crash or a bad disk might.
        let c = &list.chunks[2];
        let f = OpenOptions::new()
            .write(true)
            .open(node.join(PARTIAL))
            .unwrap();
        f.write_all_at(b"XX", c.offset + 5).unwrap();

        // Second run: only the missing and the damaged chunks are wanted.
        let s = Store::open(&node, &digest, "r2").unwrap();
        let missing = s.missing();
        let mut expect: Vec<usize> = vec![2];
        expect.extend(n / 2..n);
        assert_eq!(missing, expect);
        let st = s.state();
        assert_eq!(st.received, 0);
        assert!(st.kept > 0 && st.kept < bytes.len() as u64);
        for i in missing {
            s.accept(i, &chunk_bytes(&bytes, &list, i), "peer").unwrap();
        }
        assert!(s.is_complete());
        let dest = s.finish().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert!(!node.join(PARTIAL).exists());
        let st: State = serde_json::from_slice(&std::fs::read(node.join(STATE)).unwrap()).unwrap();
        assert_eq!(st.phase, "complete");
        assert_eq!(st.kept + st.received, bytes.len() as u64);
        assert_eq!(st.from.get("peer").copied(), Some(st.received));
        assert_eq!(st.run, "r2");
    }

    #[test]
    fn another_bundle_starts_over_and_the_stub_comes_from_the_agent() {
        let d = tempfile::tempdir().unwrap();
        let (bytes, list, digest) = sample_chunks(d.path());
        let node = d.path().join("node");
        std::fs::create_dir(&node).unwrap();
        let s = Store::open(&node, &digest, "a").unwrap();
        s.accept(TAIL, &chunk_bytes(&bytes, &list, TAIL), "installer")
            .unwrap();
        // The test binary is the stub of the sample bundle.
        assert!(s.fill_stub_from(&std::env::current_exe().unwrap()).unwrap());
        assert!(!s.missing().contains(&STUB));
        s.save().unwrap();
        drop(s);
        let other = hex::encode([9u8; 32]);
        let s = Store::open(&node, &other, "b").unwrap();
        assert!(s.list().is_none());
        assert_eq!(std::fs::metadata(node.join(PARTIAL)).unwrap().len(), 0);
        // The wrong tail for that identity is refused.
        assert!(s
            .accept(TAIL, &chunk_bytes(&bytes, &list, TAIL), "x")
            .is_err());
    }
}
