//! Writing a bundle: the stub, then frames, then the entry table, header and trailer.
//!
//! Content is cut into frames of `frame_size` bytes and compressed by a pool of workers; a single
//! writer thread puts the results in the file in submission order, so the output does not depend
//! on thread timing. A byte budget bounds what is in flight between the reader and the file:
//! memory stays flat however large the input is. Identical content is stored once.
//!
//! The bundle is written under a temporary name next to the destination, synced, and renamed
//! into place only when complete: an interrupted build never leaves a file that looks finished.

use crate::elf;
use crate::error::{Error, Result};
use crate::format::{
    self, Codec, Counts, Entry, Frame, HashWriter, Header, Kind, Region, Sha256Digest, Sizes,
    TableInfo, Trailer, FORMAT_MAJOR, FORMAT_MINOR, MAX_FRAME_LEN,
};
use crate::reader::{Bundle, FORMAT_NAME};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// zstd level for compressible content.
    pub level: i32,
    /// Content bytes per frame; large files become several frames that verify and extract in
    /// parallel.
    pub frame_size: usize,
    /// Compression workers.
    pub threads: usize,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            level: 3,
            frame_size: 2 << 20,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// What the header says about the bundle beyond its entries.
#[derive(Debug, Clone, Default)]
pub struct BundleMeta {
    pub name: String,
    pub version: String,
    pub inputs: Vec<String>,
    pub created_at: Option<String>,
    pub images: u64,
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// Result of a finished build.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    pub path: PathBuf,
    pub header: Header,
    pub deduplicated_bytes: u64,
    /// Frames copied as stored from another bundle ([`BundleWriter::add_entry_from`]): never
    /// compressed by this build.
    pub copied_frames: u64,
    /// Stored bytes of those frames.
    pub copied_bytes: u64,
}

/// One entry as added to a [`BundleWriter`], before the table is written.
#[derive(Debug, Clone, Copy)]
pub struct Added<'a> {
    pub path: &'a str,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    /// The content's SHA-256 (for a blob, its OCI digest); zero for directories and symlinks.
    pub sha256: &'a Sha256Digest,
    pub target: &'a str,
}

pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// Frame buffers handed back for reuse. Fresh multi-MiB allocations cost a map, page faults
/// and an unmap each (musl's allocator maps every large block); the in-flight budget bounds the
/// pool. Small buffers are allocated as needed: a small file's frame must not hold a pooled
/// 2 MiB buffer, or the budget would no longer describe the memory in use.
#[derive(Clone, Default)]
struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers below this capacity are neither taken from nor given back to the pool.
const POOLED_MIN: usize = 256 << 10;

impl BufferPool {
    /// A buffer of `len` bytes whose content is unspecified: every caller overwrites all of
    /// it (zeroing a reused 2 MiB buffer per frame was a tenth of a raw blob's cost).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut b = self.pop(len);
        if b.len() >= len {
            b.truncate(len);
        } else {
            b.resize(len, 0);
        }
        b
    }
    /// An empty buffer with room for at least `capacity` bytes.
    fn take_empty(&self, capacity: usize) -> Vec<u8> {
        let mut b = self.pop(capacity);
        b.clear();
        b.reserve(capacity);
        b
    }
    /// A pooled buffer, its old content still in it, for a request of `size` bytes.
    fn pop(&self, size: usize) -> Vec<u8> {
        if size < POOLED_MIN {
            return Vec::new();
        }
        self.0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }
    fn give(&self, b: Vec<u8>) {
        if b.capacity() < POOLED_MIN {
            return;
        }
        if let Ok(mut p) = self.0.lock() {
            if p.len() < 16 {
                p.push(b);
            }
        }
    }
}

/// The bytes and frames allowed in flight, from submission until the writer thread has put
/// them in the file. Counted in bytes, not frames: a run of small files then keeps every worker
/// busy, where a count of frames let four 10 KiB frames fill the pipeline while the cores idled.
#[derive(Clone)]
struct InFlight(Arc<(Mutex<Room>, Condvar)>);

struct Room {
    /// The whole budget: a frame costing more waits for everything else to leave.
    capacity: u64,
    bytes: u64,
    frames: usize,
    /// The writer thread has stopped: nothing will be released any more.
    closed: bool,
}

/// What a frame of `len` bytes costs the budget: small frames count as 4 KiB, the bookkeeping
/// every frame carries whatever its size.
fn frame_cost(len: usize) -> u64 {
    len.max(4 << 10) as u64
}

impl InFlight {
    fn new(bytes: u64, frames: usize) -> InFlight {
        let room = Room {
            capacity: bytes,
            bytes,
            frames,
            closed: false,
        };
        InFlight(Arc::new((Mutex::new(room), Condvar::new())))
    }

    /// Waits until `cost` bytes and one frame fit; false once the writer thread has stopped.
    /// A cost above the whole budget waits for everything else to leave, then goes alone.
    fn enter(&self, cost: u64) -> bool {
        let (lock, cvar) = &*self.0;
        let Ok(mut room) = lock.lock() else {
            return false;
        };
        let cost = cost.min(room.capacity);
        while !room.closed && (room.bytes < cost || room.frames == 0) {
            room = match cvar.wait(room) {
                Ok(r) => r,
                Err(_) => return false,
            };
        }
        if room.closed {
            return false;
        }
        room.bytes -= cost;
        room.frames -= 1;
        true
    }

    fn leave(&self, cost: u64) {
        let (lock, cvar) = &*self.0;
        if let Ok(mut room) = lock.lock() {
            room.bytes += cost.min(room.capacity);
            room.frames += 1;
            cvar.notify_all();
        }
    }

    fn close(&self) {
        let (lock, cvar) = &*self.0;
        if let Ok(mut room) = lock.lock() {
            room.closed = true;
            cvar.notify_all();
        }
    }
}

/// What the writer thread hands back: the file, and each frame by submission number.
type Written = Result<(File, Vec<Option<Frame>>)>;

struct Job {
    seq: usize,
    /// What this frame holds of the in-flight budget until it is in the file.
    cost: u64,
    data: Vec<u8>,
    force_raw: bool,
    /// The SHA-256 of `data` when the caller has it already (a whole small file, the first
    /// frame of a large one): the frame's digest when it is stored raw, not computed again.
    known_sha: Option<Sha256Digest>,
    /// Already stored bytes copied from another bundle: checked, then written as they are.
    stored: Option<Copied>,
}

/// A frame of another bundle, as its entry table describes it.
struct Copied {
    codec: Codec,
    raw_len: u64,
    sha256: Sha256Digest,
    /// Entry path, frame index and offset in the other bundle, for the error.
    origin: (String, usize, u64),
}

struct Done {
    seq: usize,
    cost: u64,
    stored: Vec<u8>,
    raw_len: u64,
    codec: Codec,
    sha256: Sha256Digest,
    /// A copied frame that did not match its digest: nothing of it is written.
    bad: Option<Error>,
}

struct Pending {
    path: String,
    kind: Kind,
    mode: u32,
    size: u64,
    sha256: Sha256Digest,
    seqs: Vec<usize>,
    target: String,
}

/// Content already stored, by digest, so that a second copy costs nothing.
#[derive(Default)]
struct Dedup {
    by_digest: HashMap<(Sha256Digest, bool), Vec<usize>>,
    /// Multi-frame content by (size, digest of the first frame): a cheap hint that makes a full
    /// hash pass worth it before compressing.
    large_hint: HashMap<(u64, Sha256Digest, bool), Sha256Digest>,
}

pub struct BundleWriter {
    dest: PathBuf,
    tmp: Option<PathBuf>,
    opts: WriteOptions,
    meta: BundleMeta,
    arch: String,
    stub: Region,
    programs: BTreeMap<String, Region>,
    pending: Vec<Pending>,
    next_seq: usize,
    jobs: Option<SyncSender<Job>>,
    in_flight: InFlight,
    workers: Vec<JoinHandle<()>>,
    writer: Option<JoinHandle<Written>>,
    dedup: Dedup,
    deduplicated_bytes: u64,
    copied_frames: u64,
    copied_bytes: u64,
    progress: Arc<std::sync::OnceLock<ProgressFn>>,
    pool: BufferPool,
}

impl BundleWriter {
    /// Starts a bundle at `dest` (written as a temporary file until `finish`), beginning with the
    /// program at `stub`. If `stub` is itself a bundle, only its program part is used.
    pub fn create(
        dest: impl AsRef<Path>,
        stub: impl AsRef<Path>,
        meta: BundleMeta,
        opts: WriteOptions,
    ) -> Result<BundleWriter> {
        let dest = dest.as_ref().to_path_buf();
        let stub = stub.as_ref();
        if opts.frame_size == 0 || opts.frame_size as u64 > MAX_FRAME_LEN {
            return Err(Error::Input(format!(
                "frame size {} is outside 1..={MAX_FRAME_LEN}",
                opts.frame_size
            )));
        }
        let (stub_len, arch) = stub_program(stub)?;
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = dest
            .file_name()
            .ok_or_else(|| Error::Input(format!("{}: not a file name", dest.display())))?
            .to_string_lossy()
            .into_owned();
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let mut out = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut this = BundleWriter {
            dest,
            tmp: Some(tmp.clone()),
            opts: opts.clone(),
            meta,
            arch,
            stub: Region::default(),
            programs: BTreeMap::new(),
            pending: Vec::new(),
            next_seq: 0,
            jobs: None,
            in_flight: InFlight::new(0, 0),
            workers: Vec::new(),
            writer: None,
            dedup: Dedup::default(),
            deduplicated_bytes: 0,
            copied_frames: 0,
            copied_bytes: 0,
            progress: Arc::new(std::sync::OnceLock::new()),
            pool: BufferPool::default(),
        };
        // From here on, dropping `this` removes the temporary file.
        let mut src = File::open(stub).map_err(|e| Error::io(stub, e))?;
        let mut hasher = Sha256::new();
        let mut left = stub_len;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = (buf.len() as u64).min(left) as usize;
            src.read_exact(&mut buf[..n])
                .map_err(|e| Error::io(stub, e))?;
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
            left -= n as u64;
        }
        this.stub = Region {
            len: stub_len,
            sha256: hex::encode(hasher.finalize()),
        };
        this.start_pipeline(out);
        Ok(this)
    }

    /// Makes this a bundle of several platforms: `programs` are the other architectures'
    /// programs; the header lists them with the one this bundle starts with. The caller adds
    /// every one of them, this one too, as an entry ([`crate::platforms::program_entry`]).
    pub fn set_programs(&mut self, programs: BTreeMap<String, Region>) {
        self.programs = programs;
    }

    /// Reports content bytes as their frames reach the file. Set it once, before adding.
    pub fn set_progress(&mut self, f: ProgressFn) {
        let _ = self.progress.set(f);
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    fn start_pipeline(&mut self, out: File) {
        let threads = self.opts.threads.max(1);
        // As many bytes as full frames kept every worker busy while the writer drains; the
        // frame count only bounds the bookkeeping of tiny frames.
        let bytes = ((threads + 2) * self.opts.frame_size) as u64;
        self.in_flight = InFlight::new(bytes, 64 * (threads + 2));
        let (job_tx, job_rx) = sync_channel::<Job>(threads);
        let (done_tx, done_rx) = sync_channel::<Done>(threads + 2);
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let level = self.opts.level;
            let pool = self.pool.clone();
            self.workers.push(std::thread::spawn(move || {
                compress_worker(level, job_rx, done_tx, pool)
            }));
        }
        drop(done_tx);
        let tmp = self.tmp.clone().unwrap_or_default();
        let progress = Arc::clone(&self.progress);
        let pool = self.pool.clone();
        let release = Release(self.in_flight.clone());
        self.writer = Some(std::thread::spawn(move || {
            write_frames(out, &tmp, done_rx, release, progress, pool)
        }));
        self.jobs = Some(job_tx);
    }

    fn submit(
        &mut self,
        data: Vec<u8>,
        force_raw: bool,
        known_sha: Option<Sha256Digest>,
    ) -> Result<usize> {
        self.submit_job(data, force_raw, known_sha, None)
    }

    fn submit_job(
        &mut self,
        data: Vec<u8>,
        force_raw: bool,
        known_sha: Option<Sha256Digest>,
        stored: Option<Copied>,
    ) -> Result<usize> {
        // Waiting for room is what bounds memory: a frame is only taken once earlier ones
        // have left for the file.
        let cost = frame_cost(data.len());
        if !self.in_flight.enter(cost) {
            return Err(Error::Input("the bundle writer stopped".into()));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| Error::Input("the bundle writer is finished".into()))?;
        jobs.send(Job {
            seq,
            cost,
            data,
            force_raw,
            known_sha,
            stored,
        })
        .map_err(|_| Error::Input("the bundle writer stopped".into()))?;
        Ok(seq)
    }

    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<()> {
        self.push(path, Kind::Dir, mode, 0, [0; 32], Vec::new(), String::new())
    }

    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        format::check_symlink_target(path, target).map_err(|why| Error::UnsafePath {
            path: format!("{path} -> {target}"),
            why: why.to_string(),
        })?;
        self.push(
            path,
            Kind::Symlink,
            0o777,
            0,
            [0; 32],
            Vec::new(),
            target.to_string(),
        )
    }

    /// Adds in-memory content as a regular file.
    pub fn add_bytes(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        self.add_reader(
            path,
            Kind::File,
            mode,
            data.len() as u64,
            &mut &data[..],
            None,
        )
    }

    /// Adds `entry` of the bundle `base` under the same path: its stored frames are copied as
    /// they are (no recompression), each checked against its SHA-256 on the way (by the worker
    /// threads, in parallel with the reading and the writing; a mismatch fails the build at
    /// [`BundleWriter::finish`]). Content this bundle already holds is stored once, as for
    /// every other entry.
    pub fn add_entry_from(&mut self, base: &Bundle, entry: &Entry) -> Result<()> {
        self.add_entry_from_as(base, entry, &entry.path)
    }

    /// [`BundleWriter::add_entry_from`] under another path.
    pub fn add_entry_from_as(&mut self, base: &Bundle, entry: &Entry, path: &str) -> Result<()> {
        match entry.kind {
            Kind::Dir => return self.add_dir(path, entry.mode),
            Kind::Symlink => return self.add_symlink(path, &entry.target),
            Kind::File | Kind::Blob => {}
        }
        let raw = entry.kind == Kind::Blob;
        let key = (entry.sha256, raw);
        if let Some(seqs) = self.dedup.by_digest.get(&key).cloned() {
            self.deduplicated_bytes += entry.size;
            return self.push(
                path,
                entry.kind,
                entry.mode,
                entry.size,
                entry.sha256,
                seqs,
                String::new(),
            );
        }
        let mut seqs = Vec::with_capacity(entry.frames.len());
        for (i, f) in entry.frames.iter().enumerate() {
            if raw && f.codec != Codec::Raw {
                return Err(Error::BadFrame {
                    path: entry.path.clone(),
                    frame: i,
                    offset: f.offset,
                    why: "a blob frame is compressed".into(),
                });
            }
            let mut data = self.pool.take(f.stored_len as usize);
            std::os::unix::fs::FileExt::read_exact_at(
                base.file(),
                &mut data,
                base.payload_start() + f.offset,
            )
            .map_err(|e| Error::io(base.path(), e))?;
            self.copied_frames += 1;
            self.copied_bytes += f.stored_len;
            let copied = Copied {
                codec: f.codec,
                raw_len: f.raw_len,
                sha256: f.sha256,
                origin: (entry.path.clone(), i, f.offset),
            };
            seqs.push(self.submit_job(data, raw, None, Some(copied))?);
        }
        self.dedup.by_digest.entry(key).or_insert(seqs.clone());
        self.push(
            path,
            entry.kind,
            entry.mode,
            entry.size,
            entry.sha256,
            seqs,
            String::new(),
        )
    }

    /// Adds a file from disk, compressed unless its content does not compress.
    pub fn add_file(&mut self, path: &str, mode: u32, source: &Path) -> Result<()> {
        self.add_from_disk(path, Kind::File, mode, source, None)
    }

    /// Adds an OCI blob: stored raw and contiguous so a registry can serve it by offset. When
    /// `digest` is given, the content must match it.
    pub fn add_blob(
        &mut self,
        path: &str,
        source: &Path,
        digest: Option<&Sha256Digest>,
    ) -> Result<()> {
        self.add_from_disk(path, Kind::Blob, 0o644, source, digest)
    }

    /// [`add_blob`](Self::add_blob) from a file the caller opened (and checked for what it is
    /// and where it lives, when it comes from untrusted input); `source` names it in messages.
    /// Its size is taken at this call: a file that shrinks or grows while it is read, or whose
    /// content does not match `digest`, fails.
    pub fn add_blob_from_file(
        &mut self,
        path: &str,
        file: &mut File,
        source: &Path,
        digest: Option<&Sha256Digest>,
    ) -> Result<()> {
        let size = file.metadata().map_err(|e| Error::io(source, e))?.len();
        self.add_reader_seekable(path, Kind::Blob, 0o644, size, file, source, digest)
    }

    fn add_from_disk(
        &mut self,
        path: &str,
        kind: Kind,
        mode: u32,
        source: &Path,
        digest: Option<&Sha256Digest>,
    ) -> Result<()> {
        let mut f = File::open(source).map_err(|e| Error::io(source, e))?;
        let size = f.metadata().map_err(|e| Error::io(source, e))?.len();
        self.add_reader_seekable(path, kind, mode, size, &mut f, source, digest)
    }

    /// Content that can be read twice: large duplicates are found by hashing first.
    #[allow(clippy::too_many_arguments)]
    fn add_reader_seekable(
        &mut self,
        path: &str,
        kind: Kind,
        mode: u32,
        size: u64,
        f: &mut File,
        source: &Path,
        digest: Option<&Sha256Digest>,
    ) -> Result<()> {
        let frame = self.opts.frame_size as u64;
        let raw = kind == Kind::Blob;
        let mut prefetched = None;
        if size > frame {
            let mut first = self.pool.take(frame as usize);
            f.read_exact(&mut first).map_err(|e| Error::io(source, e))?;
            let sha = format::sha256(&first);
            let hint = (size, sha, raw);
            if let Some(known) = self.dedup.large_hint.get(&hint).copied() {
                let mut h = Sha256::new();
                h.update(&first);
                self.pool.give(first);
                // Read whole for the hash, so it is read again below, from the start.
                std::io::copy(&mut (&mut *f).take(size - frame), &mut HashWriter(&mut h))
                    .map_err(|e| Error::io(source, e))?;
                let full: Sha256Digest = h.finalize().into();
                if full == known {
                    if let Some(seqs) = self.dedup.by_digest.get(&(full, raw)).cloned() {
                        check_expected(path, digest, &full)?;
                        self.deduplicated_bytes += size;
                        return self.push(path, kind, mode, size, full, seqs, String::new());
                    }
                }
                f.seek(SeekFrom::Start(0))
                    .map_err(|e| Error::io(source, e))?;
            } else {
                // The first frame, read and hashed once, is the entry's first frame as it is.
                prefetched = Some((first, sha));
            }
        }
        let mut reader = FileReader { f, source };
        self.add_reader_with(path, kind, mode, size, &mut reader, digest, prefetched)
    }

    fn add_reader(
        &mut self,
        path: &str,
        kind: Kind,
        mode: u32,
        size: u64,
        r: &mut (dyn Read + Send),
        digest: Option<&Sha256Digest>,
    ) -> Result<()> {
        self.add_reader_with(path, kind, mode, size, r, digest, None)
    }

    /// [`add_reader`](Self::add_reader), given the first frame when the caller has read and
    /// hashed it already (for the duplicate hint): `r` continues after it, and those bytes are
    /// neither read again nor hashed a third time.
    #[allow(clippy::too_many_arguments)]
    fn add_reader_with(
        &mut self,
        path: &str,
        kind: Kind,
        mode: u32,
        size: u64,
        r: &mut (dyn Read + Send),
        digest: Option<&Sha256Digest>,
        mut prefetched: Option<(Vec<u8>, Sha256Digest)>,
    ) -> Result<()> {
        let frame = self.opts.frame_size as u64;
        let raw = kind == Kind::Blob;
        let mut hasher = Sha256::new();
        let mut seqs = Vec::new();
        let mut left = size;
        let mut first_digest: Option<Sha256Digest> = None;
        if size <= frame && prefetched.is_none() {
            let mut data = self.pool.take(size as usize);
            read_full(r, &mut data, path)?;
            ensure_eof(r, path)?;
            let sha = format::sha256(&data);
            check_expected(path, digest, &sha)?;
            if let Some(seqs) = self.dedup.by_digest.get(&(sha, raw)).cloned() {
                self.deduplicated_bytes += size;
                return self.push(path, kind, mode, size, sha, seqs, String::new());
            }
            if size > 0 {
                seqs.push(self.submit(data, raw, Some(sha))?);
            }
            self.dedup.by_digest.insert((sha, raw), seqs.clone());
            return self.push(path, kind, mode, size, sha, seqs, String::new());
        }
        if let Some((data, sha)) = prefetched.take() {
            // Only ever given for content larger than a frame: it is exactly the first.
            hasher.update(&data);
            first_digest = Some(sha);
            left -= data.len() as u64;
            seqs.push(self.submit(data, raw, Some(sha))?);
        }
        // A thread reads the next frame while this one hashes the current: the copy out of the
        // page cache and the whole-content SHA-256 are the two largest costs of a raw blob, and
        // one after the other they kept a core idle.
        std::thread::scope(|scope| -> Result<()> {
            let (read_tx, read_rx) = sync_channel::<Result<Vec<u8>>>(1);
            let pool = self.pool.clone();
            let reader = &mut *r;
            scope.spawn(move || {
                while left > 0 {
                    let n = left.min(frame) as usize;
                    let mut data = pool.take(n);
                    let got = read_full(reader, &mut data, path).map(|()| data);
                    let failed = got.is_err();
                    // A closed channel means the writer gave up on this entry.
                    if read_tx.send(got).is_err() || failed {
                        return;
                    }
                    left -= n as u64;
                }
            });
            for got in read_rx {
                let data = got?;
                let known = first_digest.is_none().then(|| format::sha256(&data));
                hasher.update(&data);
                if first_digest.is_none() {
                    first_digest = known;
                }
                seqs.push(self.submit(data, raw, known)?);
            }
            Ok(())
        })?;
        ensure_eof(r, path)?;
        let sha: Sha256Digest = hasher.finalize().into();
        check_expected(path, digest, &sha)?;
        if let Some(first) = first_digest {
            self.dedup.large_hint.insert((size, first, raw), sha);
        }
        self.dedup
            .by_digest
            .entry((sha, raw))
            .or_insert(seqs.clone());
        self.push(path, kind, mode, size, sha, seqs, String::new())
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        path: &str,
        kind: Kind,
        mode: u32,
        size: u64,
        sha256: Sha256Digest,
        seqs: Vec<usize>,
        target: String,
    ) -> Result<()> {
        format::check_entry_path(path).map_err(|why| Error::UnsafePath {
            path: path.to_string(),
            why: why.to_string(),
        })?;
        self.pending.push(Pending {
            path: path.to_string(),
            kind,
            mode: mode & 0o7777,
            size,
            sha256,
            seqs,
            target,
        });
        Ok(())
    }

    /// The entries added so far, in the order they were added (the table sorts them at
    /// [`BundleWriter::finish`]), with the content digests this writer computed: what a
    /// caller needs to describe the bundle (its SBOM) without hashing anything a second time.
    pub fn added(&self) -> impl Iterator<Item = Added<'_>> {
        self.pending.iter().map(|p| Added {
            path: &p.path,
            kind: p.kind,
            mode: p.mode,
            size: p.size,
            sha256: &p.sha256,
            target: &p.target,
        })
    }

    /// Whether an entry at `path` was added already.
    pub fn has(&self, path: &str) -> bool {
        self.pending.iter().any(|p| p.path == path)
    }

    /// Writes the table, header and trailer, syncs, and moves the bundle into place.
    pub fn finish(mut self) -> Result<WriteSummary> {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let (mut out, frames) = self
            .writer
            .take()
            .ok_or_else(|| Error::Input("the bundle writer is finished".into()))?
            .join()
            .map_err(|_| Error::Input("the bundle writer thread panicked".into()))??;
        let tmp = self.tmp.clone().unwrap_or_default();

        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(w) = pending.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(Error::Input(format!(
                "{:?} was added to the bundle twice",
                w[0].path
            )));
        }
        let mut counts = Counts::default();
        let mut content = 0u64;
        let mut entries = Vec::with_capacity(pending.len());
        for p in pending {
            let mut fr = Vec::with_capacity(p.seqs.len());
            for s in &p.seqs {
                let f = frames.get(*s).copied().flatten().ok_or_else(|| {
                    Error::Input(format!("frame {s} of {} was never written", p.path))
                })?;
                fr.push(f);
            }
            match p.kind {
                Kind::Dir => counts.dirs += 1,
                Kind::File => counts.files += 1,
                Kind::Symlink => counts.symlinks += 1,
                Kind::Blob => counts.blobs += 1,
            }
            content += p.size;
            entries.push(Entry {
                path: p.path,
                kind: p.kind,
                mode: p.mode,
                size: p.size,
                sha256: p.sha256,
                frames: fr,
                target: p.target,
            });
        }
        // What readers refuse is never written.
        format::check_links(&entries)?;
        counts.frames = frames.len() as u64;
        counts.images = self.meta.images;
        let stub_len = self.stub.len;
        let payload_len = out.stream_position().map_err(|e| Error::io(&tmp, e))? - stub_len;

        let table_raw = format::encode_table(&entries);
        let table = zstd::bulk::compress(&table_raw, 9)
            .map_err(|e| Error::Input(format!("cannot compress the entry table: {e}")))?;
        let header = Header {
            format: FORMAT_NAME.to_string(),
            name: self.meta.name.clone(),
            version: self.meta.version.clone(),
            arch: self.arch.clone(),
            created_by: format!("bale {}", env!("CARGO_PKG_VERSION")),
            created_at: self.meta.created_at.clone(),
            inputs: self.meta.inputs.clone(),
            stub: self.stub.clone(),
            programs: if self.programs.is_empty() {
                BTreeMap::new()
            } else {
                let mut all = self.programs.clone();
                all.insert(self.arch.clone(), self.stub.clone());
                // A copy's program is told from the others by its length (the chunk list of a
                // copy knows no more of it).
                let mut lens: Vec<u64> = all.values().map(|r| r.len).collect();
                lens.sort_unstable();
                if lens.windows(2).any(|w| w[0] == w[1]) {
                    return Err(Error::Input(
                        "two of the platforms' programs have the same length; rebuild one of \
                         them (any change of its size will do)"
                            .into(),
                    ));
                }
                all
            },
            table: TableInfo {
                len: table.len() as u64,
                raw_len: table_raw.len() as u64,
                sha256: format::hex(&format::sha256(&table)),
                entries: entries.len() as u64,
            },
            counts,
            sizes: Sizes {
                content,
                stored: payload_len,
                file: 0,
            },
            metadata: self.meta.metadata.clone(),
        };
        // The header states the final file size, which depends on the header's own length.
        let mut header = header;
        let mut header_json = Vec::new();
        for _ in 0..4 {
            let file_len = stub_len
                + payload_len
                + table.len() as u64
                + header_json.len() as u64
                + format::TRAILER_LEN as u64;
            header.sizes.file = file_len;
            let next = serde_json::to_vec_pretty(&header)
                .map_err(|e| Error::Input(format!("cannot encode the header: {e}")))?;
            if next.len() == header_json.len() {
                break;
            }
            header_json = next;
        }
        let table_offset = stub_len + payload_len;
        let header_offset = table_offset + table.len() as u64;
        let trailer = Trailer {
            stub_len,
            payload_len,
            table_offset,
            table_len: table.len() as u64,
            header_offset,
            header_len: header_json.len() as u64,
            header_sha256: format::sha256(&header_json),
            file_len: header_offset + header_json.len() as u64 + format::TRAILER_LEN as u64,
            sig_len: 0,
            major: FORMAT_MAJOR,
            minor: FORMAT_MINOR,
        };
        let table_memory: u64 = entries
            .iter()
            .map(|e| format::entry_cost(e.path.len(), e.target.len(), e.frames.len() as u64))
            .sum();
        let limit = format::table_memory_limit(trailer.file_len);
        if table_memory > limit {
            return Err(Error::Input(format!(
                "the bundle's {} entries would take {} of memory to load, more than the {} \
                 readers allow for a bundle of {}: pack fewer entries (an archive of them, say)",
                entries.len(),
                crate::error::human_bytes(table_memory),
                crate::error::human_bytes(limit),
                crate::error::human_bytes(trailer.file_len)
            )));
        }
        if trailer.file_len != header.sizes.file {
            return Err(Error::Input(
                "internal error: the header's file size did not settle".into(),
            ));
        }
        let io = |e| Error::io(&tmp, e);
        out.write_all(&table).map_err(io)?;
        out.write_all(&header_json).map_err(io)?;
        out.write_all(&trailer.encode()).map_err(io)?;
        out.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(io)?;
        out.sync_all().map_err(io)?;
        drop(out);
        std::fs::rename(&tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        sync_parent_dir(&self.dest);
        self.tmp = None;
        Ok(WriteSummary {
            path: self.dest.clone(),
            header,
            deduplicated_bytes: self.deduplicated_bytes,
            copied_frames: self.copied_frames,
            copied_bytes: self.copied_bytes,
        })
    }
}

impl Drop for BundleWriter {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

fn compress_worker(
    level: i32,
    jobs: Arc<Mutex<Receiver<Job>>>,
    done: SyncSender<Done>,
    pool: BufferPool,
) {
    let mut cctx = zstd::bulk::Compressor::new(level).ok();
    if let Some(c) = cctx.as_mut() {
        // The content checksum lets a reader catch a decoder fault after the frame's SHA-256
        // has vouched for the stored bytes.
        let _ = c.include_checksum(true);
        let _ = c.include_contentsize(true);
    }
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        if let Some(c) = job.stored {
            let (path, frame, offset) = &c.origin;
            let bad = crate::reader::frame_mismatch(path, *frame, *offset, &c.sha256, &job.data);
            if done
                .send(Done {
                    seq: job.seq,
                    cost: job.cost,
                    stored: job.data,
                    raw_len: c.raw_len,
                    codec: c.codec,
                    sha256: c.sha256,
                    bad,
                })
                .is_err()
            {
                return;
            }
            continue;
        }
        let raw_len = job.data.len() as u64;
        let mut stored = job.data;
        let mut codec = Codec::Raw;
        if !job.force_raw && !looks_compressed(&stored) && !probe_incompressible(&mut cctx, &stored)
        {
            if let Some(c) = cctx.as_mut() {
                let mut out = pool.take_empty(zstd::zstd_safe::compress_bound(stored.len()));
                // Keep the compressed form only when it saves at least 1/32.
                if c.compress_to_buffer(&stored[..], &mut out).is_ok()
                    && out.len() < stored.len() - stored.len() / 32
                {
                    pool.give(std::mem::replace(&mut stored, out));
                    codec = Codec::Zstd;
                } else {
                    pool.give(out);
                }
            }
        }
        let sha256 = match job.known_sha {
            Some(sha) if codec == Codec::Raw => sha,
            _ => format::sha256(&stored),
        };
        if done
            .send(Done {
                seq: job.seq,
                cost: job.cost,
                stored,
                raw_len,
                codec,
                sha256,
                bad: None,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Compresses a sample from the middle of a large frame first: random or encrypted data then
/// costs 1/32 of a full attempt instead of a wasted compression of the whole frame.
fn probe_incompressible(cctx: &mut Option<zstd::bulk::Compressor<'static>>, data: &[u8]) -> bool {
    const SAMPLE: usize = 64 << 10;
    let Some(c) = cctx.as_mut() else { return false };
    if data.len() < 4 * SAMPLE {
        return false;
    }
    let mid = data.len() / 2;
    let sample = &data[mid - SAMPLE / 2..mid + SAMPLE / 2];
    match c.compress(sample) {
        Ok(out) => out.len() >= SAMPLE - SAMPLE / 32,
        Err(_) => false,
    }
}

/// Magic numbers of formats that do not compress further; storing them raw also lets a
/// registry serve them from the bundle at their offset.
fn looks_compressed(d: &[u8]) -> bool {
    const MAGICS: [&[u8]; 8] = [
        b"\x1f\x8b",           // gzip
        b"\x28\xb5\x2f\xfd",   // zstd
        b"\xfd7zXZ\x00",       // xz
        b"BZh",                // bzip2
        b"\x04\x22\x4d\x18",   // lz4
        b"PK\x03\x04",         // zip, jar
        b"\x89PNG",            // png
        b"7z\xbc\xaf\x27\x1c", // 7z
    ];
    MAGICS.iter().any(|m| d.starts_with(m))
}

/// The writer thread's side of the in-flight budget: it gives back each frame's room once the
/// frame is in the file, and closes the budget when it stops, however it stops, so that a
/// submitter waiting for room is never left waiting.
struct Release(InFlight);

impl Release {
    fn frame_written(&self, cost: u64) {
        self.0.leave(cost);
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn write_frames(
    mut out: File,
    tmp: &Path,
    done: Receiver<Done>,
    release: Release,
    progress: Arc<std::sync::OnceLock<ProgressFn>>,
    pool: BufferPool,
) -> Written {
    let base = out.stream_position().map_err(|e| Error::io(tmp, e))?;
    let mut offset = 0u64;
    let mut frames: Vec<Option<Frame>> = Vec::new();
    let mut waiting: BTreeMap<usize, Done> = BTreeMap::new();
    let mut next = 0usize;
    let mut failure = None;
    let mut w = crate::direct::FrameOut::new(out, base);
    for mut d in done {
        if let Some(e) = d.bad.take() {
            failure.get_or_insert(e);
        }
        waiting.insert(d.seq, d);
        while let Some(d) = waiting.remove(&next) {
            if failure.is_none() {
                if let Err(e) = w.write_all(&d.stored) {
                    failure = Some(Error::io(tmp, e));
                }
            }
            if frames.len() <= d.seq {
                frames.resize(d.seq + 1, None);
            }
            frames[d.seq] = Some(Frame {
                offset,
                stored_len: d.stored.len() as u64,
                raw_len: d.raw_len,
                codec: d.codec,
                sha256: d.sha256,
            });
            offset += d.stored.len() as u64;
            next += 1;
            if let Some(p) = progress.get() {
                p(d.raw_len);
            }
            pool.give(d.stored);
            release.frame_written(d.cost);
        }
    }
    // The first failure is the one to report: writing what was staged may fail after it.
    let finished = w.finish();
    if let Some(e) = failure {
        return Err(e);
    }
    let (out, end) = finished.map_err(|e| Error::io(tmp, e))?;
    debug_assert_eq!(end, base + offset);
    Ok((out, frames))
}

/// Length of the program part of `stub` and its architecture. A bundle given as stub
/// contributes only its program.
fn stub_program(stub: &Path) -> Result<(u64, String)> {
    let arch = elf::arch_of(stub)?;
    let len = match Bundle::open(stub) {
        Ok(b) => b.trailer.stub_len,
        Err(Error::NoTrailer) => std::fs::metadata(stub)
            .map_err(|e| Error::io(stub, e))?
            .len(),
        Err(e) => {
            return Err(Error::Input(format!(
                "{}: the stub program carries a damaged payload: {e}",
                stub.display()
            )))
        }
    };
    Ok((len, arch))
}

fn check_expected(path: &str, expected: Option<&Sha256Digest>, got: &Sha256Digest) -> Result<()> {
    match expected {
        Some(e) if e != got => Err(Error::Input(format!(
            "{path}: content has digest sha256:{}, expected sha256:{}",
            format::hex(got),
            format::hex(e)
        ))),
        _ => Ok(()),
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8], path: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Input(format!("{path}: the file shrank while it was being read"))
        } else {
            Error::Input(format!("{path}: {e}"))
        }
    })
}

fn ensure_eof(r: &mut dyn Read, path: &str) -> Result<()> {
    let mut b = [0u8; 1];
    match r.read(&mut b) {
        Ok(0) => Ok(()),
        Ok(_) => Err(Error::Input(format!(
            "{path}: the file grew while it was being read"
        ))),
        Err(e) => Err(Error::Input(format!("{path}: {e}"))),
    }
}

struct FileReader<'a> {
    f: &'a mut File,
    source: &'a Path,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.f
            .read(buf)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.source.display())))
    }
}

/// Makes a rename durable; failure only weakens durability, never correctness.
pub(crate) fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(threads: usize, dir: &Path, name: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
        let dest = dir.join(name);
        let opts = WriteOptions {
            threads,
            frame_size: 64 << 10,
            ..Default::default()
        };
        let exe = std::env::current_exe().unwrap();
        let mut w = BundleWriter::create(&dest, &exe, BundleMeta::default(), opts).unwrap();
        for (p, data) in files {
            let src = dir.join(format!("src-{}", p.replace('/', "_")));
            std::fs::write(&src, data).unwrap();
            w.add_file(p, 0o644, &src).unwrap();
        }
        w.finish().unwrap();
        dest
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    b'x'
                } else {
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn output_does_not_depend_on_thread_count() {
        let d = tempfile::tempdir().unwrap();
        let files = [
            ("a", noise(300 << 10, 1)),
            ("b", noise(10, 2)),
            ("c", noise(1 << 20, 3)),
        ];
        let one = bundle_with(1, d.path(), "one.bale", &files);
        let four = bundle_with(4, d.path(), "four.bale", &files);
        assert_eq!(std::fs::read(one).unwrap(), std::fs::read(four).unwrap());
    }

    #[test]
    fn digests_handed_on_to_the_workers_are_the_frames_own() {
        // A one-frame blob and file, a multi-frame blob (its first frame read once for the
        // duplicate hint and handed on), and a duplicate of it: every frame's digest must be
        // that of its stored bytes.
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("raw.bale");
        let opts = WriteOptions {
            threads: 2,
            frame_size: 64 << 10,
            ..Default::default()
        };
        let exe = std::env::current_exe().unwrap();
        let mut w = BundleWriter::create(&dest, &exe, BundleMeta::default(), opts).unwrap();
        let small = noise(10 << 10, 4);
        let text = b"compressible ".repeat(3000);
        let big = noise(300 << 10, 5);
        for (name, data) in [
            ("small", &small),
            ("text", &text),
            ("big", &big),
            ("twin", &big),
        ] {
            let src = d.path().join(name);
            std::fs::write(&src, data).unwrap();
            if name == "text" {
                w.add_file(name, 0o644, &src).unwrap();
            } else {
                let mut f = File::open(&src).unwrap();
                let sha = format::sha256(data);
                w.add_blob_from_file(name, &mut f, &src, Some(&sha))
                    .unwrap();
            }
        }
        w.finish().unwrap();
        let b = Bundle::open(&dest).unwrap();
        crate::verify::verify(&b, 2, &|_| {}).unwrap();
        crate::verify::verify_content(&b, 2, &|_| {}).unwrap();
        let e = b.entries().unwrap();
        let big_entry = e.iter().find(|x| x.path == "big").unwrap();
        assert_eq!(big_entry.frames.len(), 5);
        assert_eq!(big_entry.sha256, format::sha256(&big));
    }

    #[test]
    fn large_duplicates_share_frames_and_lookalikes_do_not() {
        let d = tempfile::tempdir().unwrap();
        let big = noise(500 << 10, 7);
        // Same size and same first frame, different tail: must not be taken for a duplicate.
        let mut lookalike = big.clone();
        let last = lookalike.len() - 1;
        lookalike[last] ^= 1;
        let files = [("a", big.clone()), ("b", big), ("c", lookalike)];
        let path = bundle_with(2, d.path(), "dup.bale", &files);
        let b = Bundle::open(&path).unwrap();
        let e = b.entries().unwrap();
        assert_eq!(e[0].frames, e[1].frames);
        assert_ne!(e[0].frames, e[2].frames);
        assert_ne!(e[0].sha256, e[2].sha256);
        for entry in &e {
            let mut r = b.open_entry(entry).unwrap();
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut r, &mut got).unwrap();
            assert_eq!(format::sha256(&got), entry.sha256, "{}", entry.path);
        }
    }

    #[test]
    fn entries_from_a_base_keep_their_stored_frames() {
        let d = tempfile::tempdir().unwrap();
        let files = [("a", noise(300 << 10, 11)), ("b", noise(10, 12))];
        let base_path = bundle_with(2, d.path(), "base.bale", &files);
        let base = Bundle::open(&base_path).unwrap();
        let dest = d.path().join("layered.bale");
        let exe = std::env::current_exe().unwrap();
        let opts = WriteOptions {
            threads: 2,
            frame_size: 64 << 10,
            ..Default::default()
        };
        let mut w = BundleWriter::create(&dest, &exe, BundleMeta::default(), opts).unwrap();
        for e in base.entries().unwrap() {
            w.add_entry_from(&base, &e).unwrap();
        }
        // The same content from disk is not stored a second time.
        w.add_bytes("c", 0o644, &files[1].1).unwrap();
        w.finish().unwrap();
        let out = Bundle::open(&dest).unwrap();
        let (old, new) = (base.entries().unwrap(), out.entries().unwrap());
        for (o, n) in old.iter().zip(&new) {
            assert_eq!(o.path, n.path);
            assert_eq!(o.sha256, n.sha256);
            let digests = |e: &Entry| e.frames.iter().map(|f| f.sha256).collect::<Vec<_>>();
            assert_eq!(digests(o), digests(n));
        }
        assert_eq!(new[2].frames, new[1].frames);
        crate::verify::verify(&out, 2, &|_| {}).unwrap();
    }

    #[test]
    fn a_damaged_frame_of_the_base_fails_the_build_and_leaves_no_file() {
        let d = tempfile::tempdir().unwrap();
        let files = [("a", noise(300 << 10, 11))];
        let base_path = bundle_with(2, d.path(), "base.bale", &files);
        let base = Bundle::open(&base_path).unwrap();
        let entries = base.entries().unwrap();
        let f = entries[0].frames[2];
        let at = base.payload_start() + f.offset + 10;
        drop(base);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&base_path)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, b"DAMAGED", at).unwrap();
        drop(file);
        let base = Bundle::open(&base_path).unwrap();
        let dest = d.path().join("layered.bale");
        let exe = std::env::current_exe().unwrap();
        let mut w =
            BundleWriter::create(&dest, &exe, BundleMeta::default(), WriteOptions::default())
                .unwrap();
        for e in base.entries().unwrap() {
            w.add_entry_from(&base, &e).unwrap();
        }
        match w.finish() {
            Err(Error::BadFrame { path, frame, .. }) => {
                assert_eq!((path.as_str(), frame), ("a", 2))
            }
            other => panic!("expected a bad frame, got {other:?}"),
        }
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("layered"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    /// The budget lets many small frames in where a few large ones fill it, makes a frame wait
    /// for room, and wakes a waiting submitter with a refusal when the writer thread stops.
    #[test]
    fn the_in_flight_budget_counts_bytes_and_never_strands_a_waiter() {
        let budget = 8 * frame_cost(0);
        let room = InFlight::new(budget, 100);
        for _ in 0..8 {
            assert!(room.enter(frame_cost(10)));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = {
            let room = room.clone();
            std::thread::spawn(move || {
                let got = room.enter(frame_cost(10));
                tx.send(got).unwrap();
                room.enter(budget * 4)
            })
        };
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(50))
            .is_err());
        room.leave(frame_cost(10));
        assert!(rx.recv().unwrap(), "a frame fits once one has left");
        // The second wants the whole budget: it waits until the writer stops, then is refused.
        room.close();
        assert!(!waiter.join().unwrap());
    }

    #[test]
    fn a_failed_build_leaves_no_file_behind() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x.bale");
        let exe = std::env::current_exe().unwrap();
        let mut w =
            BundleWriter::create(&dest, &exe, BundleMeta::default(), WriteOptions::default())
                .unwrap();
        w.add_bytes("a", 0o644, b"one").unwrap();
        w.add_bytes("a", 0o644, b"two").unwrap();
        let err = w.finish().unwrap_err();
        assert!(
            err.to_string().contains("added to the bundle twice"),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
