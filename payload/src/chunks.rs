//! A bundle cut into chunks for copying: each chunk is a byte range of the file that a receiver
//! can check on its own, as it arrives, against the bundle's own chain of digests.
//!
//! - chunk 0, the *tail*: entry table, header, signature block (if any) and trailer. It is
//!   checked as a whole: the trailer's check value, the header against the digest the receiver
//!   was told to expect (the bundle's identity), the table against the header. It comes first,
//!   because it holds every other chunk's digests. The signature block is not part of the
//!   chain; the trust layer checks its signatures over the root where the bundle is used.
//! - chunk 1, the *stub* (the program), against `stub.sha256` in the header.
//! - chunks 2.., runs of neighbouring frames of about [`CHUNK_TARGET`] bytes, each frame against
//!   its SHA-256 in the table. Frames shared by several entries are counted once.
//!
//! The chunks tile the file exactly (no gap, no overlap), so a receiver that has checked every
//! chunk has checked every byte, and never needs to read the file a second time.

use crate::error::{Error, Result};
use crate::format::{
    self, Header, Sha256Digest, Trailer, MAX_HEADER_LEN, MAX_SIG_LEN, MAX_TABLE_LEN, TRAILER_LEN,
};
use crate::reader::{decode_entries, decode_header, parse_digest, Bundle};
use std::os::unix::fs::FileExt;

/// Frames are grouped into chunks of at least this many bytes (the last one may be shorter).
pub const CHUNK_TARGET: u64 = 2 << 20;
/// The longest tail a receiver accepts before it can check anything.
pub const MAX_TAIL_LEN: u64 = MAX_TABLE_LEN + MAX_HEADER_LEN + MAX_SIG_LEN + TRAILER_LEN as u64;
/// Index of the tail chunk.
pub const TAIL: usize = 0;
/// Index of the stub chunk.
pub const STUB: usize = 1;

/// A byte range with its own digest, inside a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Absolute offset in the bundle file.
    pub offset: u64,
    pub len: u64,
    pub sha256: Sha256Digest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    Tail,
    Stub,
    Frames,
}

/// A contiguous range of the bundle file, made of pieces that each carry a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub kind: ChunkKind,
    /// Absolute offset in the bundle file.
    pub offset: u64,
    pub len: u64,
    pub pieces: Vec<Piece>,
}

impl Chunk {
    /// Checks `data` (the chunk's bytes) against every piece's digest.
    pub fn check(&self, data: &[u8]) -> Result<()> {
        if data.len() as u64 != self.len {
            return Err(Error::Input(format!(
                "chunk at offset {} has {} bytes, expected {}",
                self.offset,
                data.len(),
                self.len
            )));
        }
        for p in &self.pieces {
            let at = (p.offset - self.offset) as usize;
            let got = format::sha256(&data[at..at + p.len as usize]);
            if got != p.sha256 {
                return Err(Error::RegionDigest {
                    region: match self.kind {
                        ChunkKind::Tail => "tail (table, header, trailer)",
                        ChunkKind::Stub => "program (stub)",
                        ChunkKind::Frames => "frame",
                    },
                    expected: format::hex(&p.sha256),
                    actual: format::hex(&got),
                });
            }
        }
        Ok(())
    }
}

/// Every chunk of one bundle, derived from its checked tail.
#[derive(Debug, Clone)]
pub struct ChunkList {
    pub trailer: Trailer,
    pub header: Header,
    pub chunks: Vec<Chunk>,
}

impl ChunkList {
    /// The chunks of an open bundle (reads and checks its tail).
    pub fn of_bundle(b: &Bundle) -> Result<ChunkList> {
        let t = &b.trailer;
        let len = t.file_len - t.table_offset;
        let mut tail = vec![0u8; len as usize];
        b.file()
            .read_exact_at(&mut tail, t.table_offset)
            .map_err(|e| Error::io(b.path(), e))?;
        ChunkList::from_tail(&tail, &t.header_sha256)
    }

    /// Checks a tail (entry table, header, trailer: the last bytes of a bundle) against the
    /// header digest the bundle is known by, and derives the chunk list from it.
    pub fn from_tail(tail: &[u8], header_sha256: &Sha256Digest) -> Result<ChunkList> {
        if tail.len() < TRAILER_LEN || tail.len() as u64 > MAX_TAIL_LEN {
            return Err(Error::Input(format!(
                "a bundle tail of {} bytes is impossible (at least {TRAILER_LEN}, at most \
                 {MAX_TAIL_LEN})",
                tail.len()
            )));
        }
        let mut tb = [0u8; TRAILER_LEN];
        tb.copy_from_slice(&tail[tail.len() - TRAILER_LEN..]);
        // The trailer is checked against the length it claims itself; whether the tail really
        // is that file's tail is settled just below by its own offsets.
        let mut claimed = [0u8; 8];
        claimed.copy_from_slice(&tb[80..88]);
        let trailer = Trailer::decode(&tb, u64::from_le_bytes(claimed))?;
        if &trailer.header_sha256 != header_sha256 {
            return Err(Error::RegionDigest {
                region: "header (as named by the trailer)",
                expected: format::hex(header_sha256),
                actual: format::hex(&trailer.header_sha256),
            });
        }
        if trailer.file_len - trailer.table_offset != tail.len() as u64 {
            return Err(Error::BadGeometry(format!(
                "the tail is {} bytes, its trailer says {}",
                tail.len(),
                trailer.file_len - trailer.table_offset
            )));
        }
        let at = |offset: u64, len: u64| {
            let s = (offset - trailer.table_offset) as usize;
            &tail[s..s + len as usize]
        };
        let header = decode_header(&trailer, at(trailer.header_offset, trailer.header_len))?;
        let entries = decode_entries(
            &trailer,
            &header,
            at(trailer.table_offset, trailer.table_len),
        )?;

        // Every distinct frame once, in file order; they must tile the payload.
        let mut frames: Vec<Piece> = entries
            .iter()
            .flat_map(|e| e.frames.iter())
            .map(|f| Piece {
                offset: trailer.stub_len + f.offset,
                len: f.stored_len,
                sha256: f.sha256,
            })
            .collect();
        frames.sort_by_key(|p| p.offset);
        frames.dedup();
        let mut chunks = vec![
            Chunk {
                kind: ChunkKind::Tail,
                offset: trailer.table_offset,
                len: tail.len() as u64,
                pieces: vec![Piece {
                    offset: trailer.table_offset,
                    len: tail.len() as u64,
                    // Every byte of the tail was checked above; this digest lets a receiver
                    // re-check its copy later without parsing it again.
                    sha256: format::sha256(tail),
                }],
            },
            Chunk {
                kind: ChunkKind::Stub,
                offset: 0,
                len: trailer.stub_len,
                pieces: vec![Piece {
                    offset: 0,
                    len: trailer.stub_len,
                    sha256: parse_digest(
                        "stub",
                        &crate::platforms::program_region(&header, trailer.stub_len)
                            .unwrap_or(&header.stub)
                            .sha256,
                    )?,
                }],
            },
        ];
        let mut next = trailer.stub_len;
        let mut group: Vec<Piece> = Vec::new();
        let mut group_len = 0u64;
        for p in frames {
            if p.offset != next {
                return Err(Error::BadTable {
                    entry: 0,
                    why: format!(
                        "frames do not tile the payload: expected a frame at payload offset {}, \
                         found one at {} (bytes in between would go unchecked)",
                        next - trailer.stub_len,
                        p.offset - trailer.stub_len
                    ),
                });
            }
            next += p.len;
            group_len += p.len;
            group.push(p);
            if group_len >= CHUNK_TARGET {
                chunks.push(frames_chunk(std::mem::take(&mut group)));
                group_len = 0;
            }
        }
        if !group.is_empty() {
            chunks.push(frames_chunk(group));
        }
        if next != trailer.table_offset {
            return Err(Error::BadTable {
                entry: entries.len(),
                why: format!(
                    "frames cover {} bytes of a {}-byte payload",
                    next - trailer.stub_len,
                    trailer.payload_len
                ),
            });
        }
        Ok(ChunkList {
            trailer,
            header,
            chunks,
        })
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn file_len(&self) -> u64 {
        self.trailer.file_len
    }

    pub fn get(&self, index: usize) -> Option<&Chunk> {
        self.chunks.get(index)
    }
}

/// Makes the tail chunk of one copy of a multi-platform bundle the tail of the copy whose
/// program is `stub_len` bytes: the table, header and signature block are the same in every
/// copy, only the trailer's offsets move (see [`crate::platforms`]). A tail whose trailer
/// already says `stub_len`, or that is too short to hold a trailer, is left as it is; the
/// result is checked as any tail is, by [`ChunkList::from_tail`].
pub fn rebase_tail(tail: &mut [u8], stub_len: u64) {
    let Some(at) = tail.len().checked_sub(TRAILER_LEN) else {
        return;
    };
    let mut tb = [0u8; TRAILER_LEN];
    tb.copy_from_slice(&tail[at..]);
    let mut claimed = [0u8; 8];
    claimed.copy_from_slice(&tb[80..88]);
    let Ok(t) = Trailer::decode(&tb, u64::from_le_bytes(claimed)) else {
        return;
    };
    if t.stub_len == stub_len {
        return;
    }
    let moved = |off: u64| off.wrapping_sub(t.stub_len).wrapping_add(stub_len);
    let rebased = Trailer {
        stub_len,
        table_offset: moved(t.table_offset),
        header_offset: moved(t.header_offset),
        file_len: moved(t.file_len),
        ..t
    };
    tail[at..].copy_from_slice(&rebased.encode());
}

fn frames_chunk(pieces: Vec<Piece>) -> Chunk {
    let offset = pieces.first().map_or(0, |p| p.offset);
    let len = pieces.iter().map(|p| p.len).sum();
    Chunk {
        kind: ChunkKind::Frames,
        offset,
        len,
        pieces,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_data::noise;
    use crate::writer::{BundleMeta, BundleWriter, WriteOptions};

    /// A bundle with small frames (64 KiB), a duplicate and an empty file.
    fn sample(dir: &std::path::Path) -> std::path::PathBuf {
        let dest = dir.join("s.bale");
        let exe = std::env::current_exe().unwrap();
        let opts = WriteOptions {
            threads: 2,
            frame_size: 64 << 10,
            ..Default::default()
        };
        let mut w = BundleWriter::create(&dest, &exe, BundleMeta::default(), opts).unwrap();
        let big = noise(5 << 20, 3);
        w.add_bytes("a", 0o644, &big).unwrap();
        w.add_bytes("b", 0o644, &big).unwrap();
        w.add_bytes("c", 0o644, b"small").unwrap();
        w.add_bytes("d", 0o644, b"").unwrap();
        w.finish().unwrap();
        dest
    }

    #[test]
    fn chunks_tile_the_file_and_check_its_bytes() {
        let d = tempfile::tempdir().unwrap();
        let path = sample(d.path());
        let bytes = std::fs::read(&path).unwrap();
        let b = Bundle::open(&path).unwrap();
        let list = ChunkList::of_bundle(&b).unwrap();
        assert_eq!(list.chunks[TAIL].kind, ChunkKind::Tail);
        assert_eq!(list.chunks[STUB].kind, ChunkKind::Stub);
        // The chunks, sorted by offset, cover the file exactly.
        let mut spans: Vec<(u64, u64)> = list.chunks.iter().map(|c| (c.offset, c.len)).collect();
        spans.sort();
        let mut next = 0;
        for (o, l) in spans {
            assert_eq!(o, next);
            next += l;
        }
        assert_eq!(next, bytes.len() as u64);
        // 64 KiB frames are grouped into chunks of about 2 MiB.
        let frames = (list.len() - 2) as u64;
        let most = b.trailer.payload_len / CHUNK_TARGET + 1;
        assert!(
            frames >= 2 && frames <= most,
            "{frames} frame chunks, at most {most}"
        );
        for c in &list.chunks {
            let data = &bytes[c.offset as usize..(c.offset + c.len) as usize];
            c.check(data).unwrap();
            let mut bad = data.to_vec();
            let mid = bad.len() / 2;
            bad[mid] ^= 1;
            assert!(c.check(&bad).is_err(), "{:?} took a flipped byte", c.kind);
            assert!(c.check(&data[1..]).is_err());
        }
    }

    #[test]
    fn a_tail_is_checked_against_the_expected_digest() {
        let d = tempfile::tempdir().unwrap();
        let path = sample(d.path());
        let bytes = std::fs::read(&path).unwrap();
        let b = Bundle::open(&path).unwrap();
        let digest = b.trailer.header_sha256;
        let tail = &bytes[b.trailer.table_offset as usize..];
        assert!(ChunkList::from_tail(tail, &digest).is_ok());
        // Another bundle's identity.
        let e = ChunkList::from_tail(tail, &[7u8; 32]).unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        // A damaged table, header or trailer; a tail cut short.
        for at in [
            0,
            (b.trailer.header_offset - b.trailer.table_offset) as usize + 2,
        ] {
            let mut bad = tail.to_vec();
            bad[at] ^= 0x40;
            assert!(ChunkList::from_tail(&bad, &digest).is_err(), "flip at {at}");
        }
        let mut bad = tail.to_vec();
        let n = bad.len();
        bad[n - 100] ^= 1;
        assert!(ChunkList::from_tail(&bad, &digest).is_err());
        assert!(ChunkList::from_tail(&tail[1..], &digest).is_err());
        assert!(ChunkList::from_tail(&tail[..10], &digest).is_err());
    }
}
