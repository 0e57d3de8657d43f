//! Checking every byte of a bundle against the digests chained from its trailer.
//!
//! The trailer vouches for the header, the header for the stub and the entry table, the table
//! for every frame. Frames are hashed as stored, so verification never decompresses; and the
//! frames must tile the payload exactly, so no byte escapes the check. Work is split into
//! batches of neighbouring frames read with one `pread` each and hashed on every core.

use crate::error::{Error, FirstError, Result};
use crate::format::{self, Entry};
use crate::reader::Bundle;
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
    let entries = bundle.entries()?;
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
        bytes: bundle.trailer.file_len - format::TRAILER_LEN as u64,
    })
}

/// Decompresses every entry and checks the SHA-256 of its content as well: slower than
/// `verify`, which already authenticates every stored byte, but it also proves the builder
/// recorded the right content digests.
pub fn verify_content(
    bundle: &Bundle,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<()> {
    let entries = bundle.entries()?;
    let next = AtomicUsize::new(0);
    let first_error = FirstError::default();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(e) = entries.get(i) else { return };
                if e.frames.is_empty() && e.size == 0 {
                    continue;
                }
                let r = content_digest(bundle, e).and_then(|got| {
                    if got == e.sha256 {
                        progress(e.size);
                        Ok(())
                    } else {
                        Err(Error::BadFrame {
                            path: e.path.clone(),
                            frame: 0,
                            offset: e.frames.first().map_or(0, |f| f.offset),
                            why: format!(
                                "content does not match the entry's SHA-256 (expected {}, got {})",
                                format::hex(&e.sha256),
                                format::hex(&got)
                            ),
                        })
                    }
                });
                if let Err(err) = r {
                    first_error.record(i, err);
                }
            });
        }
    });
    first_error.into_result()
}

fn content_digest(bundle: &Bundle, e: &Entry) -> Result<format::Sha256Digest> {
    let mut h = Sha256::new();
    let mut r = bundle.open_entry(e)?;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = std::io::Read::read(&mut r, &mut buf).map_err(|err| unwrap_io(bundle, err))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Entry readers wrap bundle errors in `io::Error`; take them out again.
pub(crate) fn unwrap_io(bundle: &Bundle, e: std::io::Error) -> Error {
    match e.into_inner() {
        Some(inner) => match inner.downcast::<Error>() {
            Ok(err) => *err,
            Err(other) => Error::Input(other.to_string()),
        },
        None => Error::Input(format!("{}: read failed", bundle.path().display())),
    }
}

/// Every distinct frame once, in file order, after checking that together they cover the
/// payload with no gap and no overlap.
fn frame_checks(bundle: &Bundle, entries: &[Entry]) -> Result<Vec<Check>> {
    let mut checks: Vec<Check> = entries
        .iter()
        .enumerate()
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

fn check_batch(
    bundle: &Bundle,
    entries: &[Entry],
    checks: &[Check],
    buf: &mut Vec<u8>,
) -> Result<()> {
    let (Some(first), Some(last)) = (checks.first(), checks.last()) else {
        return Ok(());
    };
    let start = first.offset;
    let len = (last.offset + last.len - start) as usize;
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
