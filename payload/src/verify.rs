//! Checking every byte of a bundle against the digests chained from its trailer.
//!
//! The trailer vouches for the header, the header for the stub and the entry table, the table
//! for every frame. Frames are hashed as stored, so verification never decompresses; and the
//! frames must tile the payload exactly, so no byte escapes the check. Work is split into
//! batches of neighbouring frames read with one `pread` each and hashed on every core.

use crate::error::{Error, FirstError, Result};
use crate::format::{self, Entry, Kind};
use crate::reader::{new_decompressor, Bundle};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// Bytes read per batch: large enough that syscalls vanish in the hashing cost, small enough
/// that memory stays flat.
const BATCH_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub entries: usize,
    pub frames: usize,
    /// Bytes hashed: stub, frames, table and header.
    pub bytes: u64,
}

/// A frame as verification sees it: where it is and who to blame if it is wrong.
struct Check {
    offset: u64,
    len: u64,
    sha256: format::Sha256Digest,
    entry: usize,
    frame: usize,
}

pub fn verify(
    bundle: &Bundle,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport> {
    let entries = bundle.all_entries()?;
    if bundle.is_multi_platform() {
        crate::platforms::check_programs(&bundle.header, &entries)?;
    }
    let checks = frame_checks(bundle, &entries)?;
    let batches = batch(&checks);

    // Job 0 is the stub; jobs 1.. are frame batches. The first failure in file order wins, so
    // the report names the same entry however threads were scheduled.
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error = FirstError::default();
    let fail = |job: usize, e: Error| {
        stop.store(true, Ordering::Relaxed);
        first_error.record(job, e);
    };
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut buf = Vec::new();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    if job == 0 {
                        match bundle.check_stub() {
                            Ok(()) => progress(bundle.trailer.stub_len),
                            Err(e) => fail(job, e),
                        }
                        continue;
                    }
                    let Some(b) = batches.get(job - 1) else {
                        return;
                    };
                    if let Some(ahead) = batches.get(job - 1 + threads.max(1)) {
                        read_ahead(bundle, &checks[ahead.clone()]);
                    }
                    if let Err(e) = check_batch(bundle, &entries, &checks[b.clone()], &mut buf) {
                        fail(job, e);
                    }
                    progress(checks[b.clone()].iter().map(|c| c.len).sum());
                }
            });
        }
    });
    first_error.into_result()?;
    Ok(VerifyReport {
        entries: entries.len(),
        frames: checks.len(),
        bytes: bundle.trailer.sig_offset(),
    })
}

/// Decompresses every content and checks its SHA-256 as well: slower than `verify`, which
/// already authenticates every stored byte, but it also proves the builder recorded the right
/// content digests.
///
/// Each distinct content is decoded once (entries sharing frames share content), so the work
/// is bounded by the payload's distinct frames whatever the table declares. Frames are
/// decoded by `threads` workers at once, a large file's frames included, and fed to their
/// content's SHA-256 in order.
pub fn verify_content(
    bundle: &Bundle,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let entries = bundle.all_entries()?;
    // Contents by their owner (the first entry listing the frames), with every entry that
    // shares them.
    let mut by_first: HashMap<u64, usize> = HashMap::new();
    let mut contents: Vec<Vec<usize>> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if !matches!(e.kind, Kind::File | Kind::Blob) {
            continue;
        }
        let Some(first) = e.frames.first() else {
            if e.sha256 != format::sha256(b"") {
                return Err(content_mismatch(e, &format::sha256(b"")));
            }
            continue;
        };
        match by_first.get(&first.offset) {
            Some(&c) => contents[c].push(i),
            None => {
                by_first.insert(first.offset, contents.len());
                contents.push(vec![i]);
            }
        }
    }
    drop(by_first);
    let jobs: Vec<(usize, usize)> = contents
        .iter()
        .enumerate()
        .flat_map(|(c, members)| (0..entries[members[0]].frames.len()).map(move |f| (c, f)))
        .collect();
    let hashes: Vec<OrderedHash> = contents.iter().map(|_| OrderedHash::default()).collect();
    let next = AtomicUsize::new(0);
    let stop_at = AtomicUsize::new(usize::MAX);
    let first_error = FirstError::default();
    let fail = |job: usize, e: Error| {
        stop_at.fetch_min(job, Ordering::Relaxed);
        first_error.record(job, e);
    };
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut dctx = match new_decompressor() {
                    Ok(d) => d,
                    Err(e) => return fail(0, e),
                };
                let (mut stored, mut out) = (Vec::new(), Vec::new());
                loop {
                    let job = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(c, f)) = jobs.get(job) else { return };
                    if job > stop_at.load(Ordering::Relaxed) {
                        return;
                    }
                    let owner = &entries[contents[c][0]];
                    if let Err(e) = bundle.read_frame(owner, f, &mut dctx, &mut stored, &mut out) {
                        hashes[c].fail();
                        fail(job, e);
                        continue;
                    }
                    let last = f + 1 == owner.frames.len();
                    match hashes[c].feed(f, last, &out) {
                        Fed::Earlier => {}
                        Fed::Done(got) => {
                            for &m in &contents[c] {
                                if entries[m].sha256 != got {
                                    fail(job, content_mismatch(&entries[m], &got));
                                    break;
                                }
                            }
                        }
                        // An earlier frame of this content failed and said so.
                        Fed::Failed => continue,
                    }
                    progress(out.len() as u64);
                }
            });
        }
    });
    first_error.into_result()
}

fn content_mismatch(e: &Entry, got: &format::Sha256Digest) -> Error {
    Error::ContentDigest {
        path: e.path.clone(),
        expected: format::hex(&e.sha256),
        actual: format::hex(got),
    }
}

/// What feeding a frame to an [`OrderedHash`] came to.
pub(crate) enum Fed {
    /// Taken; more frames follow.
    Earlier,
    /// That was the last frame: the content's digest.
    Done(format::Sha256Digest),
    /// An earlier frame failed; this one was dropped.
    Failed,
}

/// The SHA-256 of one content whose frames several workers decode at once: each waits for its
/// turn and feeds its frame in order. Workers take frames in increasing order, so the one
/// holding the next frame is always running, never waiting.
#[derive(Default)]
pub(crate) struct OrderedHash {
    state: Mutex<HashState>,
    turn: Condvar,
}

#[derive(Default)]
struct HashState {
    hasher: Sha256,
    next: usize,
    failed: bool,
}

impl OrderedHash {
    pub(crate) fn feed(&self, index: usize, last: bool, data: &[u8]) -> Fed {
        match self.feed_after(
            index,
            last,
            data,
            |_| Ok::<(), std::convert::Infallible>(()),
        ) {
            Ok(fed) => fed,
            Err(never) => match never {},
        }
    }

    /// [`feed`](Self::feed), with `in_turn` given the frame first, inside the frame's turn:
    /// work that must follow the content's order, such as writing a file front to back. When
    /// it fails, the frames behind are dropped as after [`fail`](Self::fail).
    pub(crate) fn feed_after<E>(
        &self,
        index: usize,
        last: bool,
        data: &[u8],
        in_turn: impl FnOnce(&[u8]) -> std::result::Result<(), E>,
    ) -> std::result::Result<Fed, E> {
        let Ok(mut g) = self.state.lock() else {
            return Ok(Fed::Failed);
        };
        while !g.failed && g.next != index {
            g = match self.turn.wait(g) {
                Ok(g) => g,
                Err(_) => return Ok(Fed::Failed),
            };
        }
        if g.failed {
            return Ok(Fed::Failed);
        }
        if let Err(e) = in_turn(data) {
            g.failed = true;
            drop(g);
            self.turn.notify_all();
            return Err(e);
        }
        g.hasher.update(data);
        g.next += 1;
        let out = if last {
            Fed::Done(std::mem::take(&mut g.hasher).finalize().into())
        } else {
            Fed::Earlier
        };
        drop(g);
        self.turn.notify_all();
        Ok(out)
    }

    /// Frees the workers waiting behind a frame that failed.
    pub(crate) fn fail(&self) {
        if let Ok(mut g) = self.state.lock() {
            g.failed = true;
        }
        self.turn.notify_all();
    }
}

/// Every distinct frame once, in file order, after checking that together they cover the
/// payload with no gap and no overlap.
fn frame_checks(bundle: &Bundle, entries: &[Entry]) -> Result<Vec<Check>> {
    // Entries share frames only as whole lists (the table guarantees it): one per list.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut checks: Vec<Check> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.frames.first().is_none_or(|f| seen.insert(f.offset)))
        .flat_map(|(ei, e)| {
            e.frames.iter().enumerate().map(move |(fi, f)| Check {
                offset: f.offset,
                len: f.stored_len,
                sha256: f.sha256,
                entry: ei,
                frame: fi,
            })
        })
        .collect();
    checks.sort_by_key(|c| (c.offset, c.entry));
    // Deduplicated content shares frames; the first entry in path order represents them.
    checks.dedup_by(|b, a| a.offset == b.offset && a.len == b.len && a.sha256 == b.sha256);
    let mut expect = 0u64;
    for c in &checks {
        if c.offset != expect {
            let e = &entries[c.entry];
            return Err(Error::BadTable {
                entry: c.entry,
                why: format!(
                    "frames of {:?} do not tile the payload: expected a frame at {expect}, \
                     found one at {} (bytes in between would go unchecked)",
                    e.path, c.offset
                ),
            });
        }
        expect += c.len;
    }
    if expect != bundle.trailer.payload_len {
        return Err(Error::BadTable {
            entry: entries.len(),
            why: format!(
                "frames cover {expect} bytes of a {}-byte payload",
                bundle.trailer.payload_len
            ),
        });
    }
    Ok(checks)
}

fn batch(checks: &[Check]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, c) in checks.iter().enumerate() {
        bytes += c.len;
        if bytes >= BATCH_BYTES {
            out.push(start..i + 1);
            start = i + 1;
            bytes = 0;
        }
    }
    if start < checks.len() {
        out.push(start..checks.len());
    }
    out
}

/// Asks the kernel to start reading a batch that a worker will take next, so a bundle that is
/// not cached is read while the current batches are hashed: each worker's `pread` waits for
/// the disk only once, not once per batch. Cached pages make it a cheap no-op.
fn read_ahead(bundle: &Bundle, checks: &[Check]) {
    let Some((start, len)) = span(checks) else {
        return;
    };
    // Only a hint: a refusal leaves the read to `pread`, as without it.
    let _ = nix::fcntl::posix_fadvise(
        bundle.file().as_raw_fd(),
        (bundle.payload_start() + start) as nix::libc::off_t,
        len as nix::libc::off_t,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
    );
}

/// Where a batch's frames lie in the payload: the first one's offset and the bytes to the end
/// of the last (a batch is neighbouring frames).
fn span(checks: &[Check]) -> Option<(u64, u64)> {
    let (first, last) = (checks.first()?, checks.last()?);
    Some((first.offset, last.offset + last.len - first.offset))
}

fn check_batch(
    bundle: &Bundle,
    entries: &[Entry],
    checks: &[Check],
    buf: &mut Vec<u8>,
) -> Result<()> {
    let Some((start, len)) = span(checks) else {
        return Ok(());
    };
    let len = len as usize;
    buf.resize(len, 0);
    bundle
        .file()
        .read_exact_at(&mut buf[..len], bundle.payload_start() + start)
        .map_err(|e| Error::io(bundle.path(), e))?;
    for c in checks {
        let at = (c.offset - start) as usize;
        let got = format::sha256(&buf[at..at + c.len as usize]);
        if got != c.sha256 {
            return Err(Error::BadFrame {
                path: entries[c.entry].path.clone(),
                frame: c.frame,
                offset: c.offset,
                why: format!(
                    "does not match its SHA-256 (expected {}, got {})",
                    format::hex(&c.sha256),
                    format::hex(&got)
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_in_a_frames_turn_follows_the_frames_order_and_its_failure_stops_the_rest() {
        let hash = OrderedHash::default();
        let seen = Mutex::new(Vec::new());
        let frames: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 1000]).collect();
        std::thread::scope(|s| {
            // Taken in reverse: every frame but the first waits for the one before.
            for i in (0..frames.len()).rev() {
                let (hash, seen, frames) = (&hash, &seen, &frames);
                s.spawn(move || {
                    let last = i + 1 == frames.len();
                    let fed = hash.feed_after(i, last, &frames[i], |data| {
                        seen.lock().unwrap().push(data[0]);
                        Ok::<(), ()>(())
                    });
                    if let Ok(Fed::Done(got)) = fed {
                        let whole: Vec<u8> = frames.concat();
                        assert_eq!(got, format::sha256(&whole));
                    }
                });
            }
        });
        assert_eq!(*seen.lock().unwrap(), (0..8u8).collect::<Vec<_>>());

        let hash = OrderedHash::default();
        assert!(matches!(hash.feed(0, false, b"a"), Fed::Earlier));
        let failed = hash.feed_after(1, false, b"b", |_| Err("disk full"));
        assert_eq!(failed.err(), Some("disk full"));
        assert!(matches!(hash.feed(2, true, b"c"), Fed::Failed));
    }
}
