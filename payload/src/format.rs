//! On-disk structures of a bundle: the trailer, the header and the entry table.
//!
//! Everything here is pure encoding and decoding of bytes; no file I/O. See `FORMAT.md` for the
//! layout. Decoding treats every byte as hostile: lengths are bounded before anything is
//! allocated, and every path is checked before it can reach the file system.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The last eight bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"BALE\x00PL\x01";
/// Size of the v1 trailer.
pub const TRAILER_LEN: usize = 128;
/// Payload format major version this code writes; readers refuse larger ones.
pub const FORMAT_MAJOR: u16 = 1;
/// Minor version: additions a v1 reader may ignore.
pub const FORMAT_MINOR: u16 = 0;

/// Upper bounds on what an index may claim, so a damaged or hostile trailer cannot make a reader
/// allocate gigabytes before the hashes have been checked.
pub const MAX_HEADER_LEN: u64 = 4 << 20;
pub const MAX_TABLE_LEN: u64 = 256 << 20;
pub const MAX_TABLE_RAW_LEN: u64 = 1 << 30;
/// A frame never holds more than this many bytes of content, in either form.
pub const MAX_FRAME_LEN: u64 = 64 << 20;
pub const MAX_PATH_LEN: usize = 4096;

pub type Sha256Digest = [u8; 32];

pub fn sha256(data: &[u8]) -> Sha256Digest {
    Sha256::digest(data).into()
}

pub fn hex(d: &Sha256Digest) -> String {
    hex::encode(d)
}

/// Feeds whatever is written into a SHA-256, so `io::copy` can hash a reader.
pub struct HashWriter<'a>(pub &'a mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fixed-size record at the very end of a bundle. Its last 16 bytes (length, version, magic)
/// keep their place in every future major version so that any reader can tell "newer" from
/// "damaged".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    /// Length of the executable in front of the payload; the payload starts here.
    pub stub_len: u64,
    /// Length of the frame region.
    pub payload_len: u64,
    pub table_offset: u64,
    pub table_len: u64,
    pub header_offset: u64,
    pub header_len: u64,
    /// SHA-256 of the header bytes; the header in turn holds the table's and the stub's digests.
    pub header_sha256: Sha256Digest,
    /// Total length of the bundle file, trailer included.
    pub file_len: u64,
    pub major: u16,
    pub minor: u16,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        let words = [
            self.stub_len,
            self.payload_len,
            self.table_offset,
            self.table_len,
            self.header_offset,
            self.header_len,
        ];
        for (i, w) in words.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        b[48..80].copy_from_slice(&self.header_sha256);
        b[80..88].copy_from_slice(&self.file_len.to_le_bytes());
        // 88..104 reserved, zero.
        b[112..116].copy_from_slice(&(TRAILER_LEN as u32).to_le_bytes());
        b[116..118].copy_from_slice(&self.major.to_le_bytes());
        b[118..120].copy_from_slice(&self.minor.to_le_bytes());
        b[120..128].copy_from_slice(&MAGIC);
        let check = trailer_check(&b);
        b[104..112].copy_from_slice(&check);
        b
    }

    /// Decodes a trailer. `file_len` is the real length of the file, used to name truncation and
    /// appended bytes precisely.
    pub fn decode(b: &[u8; TRAILER_LEN], file_len: u64) -> Result<Self> {
        if b[120..128] != MAGIC {
            return Err(Error::NoTrailer);
        }
        let major = u16::from_le_bytes([b[116], b[117]]);
        let minor = u16::from_le_bytes([b[118], b[119]]);
        let check_ok = b[104..112] == trailer_check(b);
        if major > FORMAT_MAJOR {
            return Err(Error::NewerFormat {
                major,
                minor,
                supported: FORMAT_MAJOR,
                trailer_intact: check_ok,
            });
        }
        if !check_ok {
            return Err(Error::TrailerChecksum);
        }
        if major == 0 {
            return Err(Error::TrailerChecksum);
        }
        let word = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let mut header_sha256 = [0u8; 32];
        header_sha256.copy_from_slice(&b[48..80]);
        let t = Trailer {
            stub_len: word(0),
            payload_len: word(1),
            table_offset: word(2),
            table_len: word(3),
            header_offset: word(4),
            header_len: word(5),
            header_sha256,
            file_len: u64::from_le_bytes(b[80..88].try_into().unwrap_or([0; 8])),
            major,
            minor,
        };
        t.check_geometry(file_len)?;
        Ok(t)
    }

    /// The regions must tile the file exactly: stub, frames, table, header, trailer.
    fn check_geometry(&self, real_len: u64) -> Result<()> {
        if self.header_len > MAX_HEADER_LEN {
            return Err(Error::Oversized {
                what: "header",
                claimed: self.header_len,
                limit: MAX_HEADER_LEN,
            });
        }
        if self.table_len > MAX_TABLE_LEN {
            return Err(Error::Oversized {
                what: "entry table",
                claimed: self.table_len,
                limit: MAX_TABLE_LEN,
            });
        }
        let end_of = |start: u64, len: u64| start.checked_add(len);
        let regions_end = end_of(self.stub_len, self.payload_len)
            .filter(|e| *e == self.table_offset)
            .and_then(|_| end_of(self.table_offset, self.table_len))
            .filter(|e| *e == self.header_offset)
            .and_then(|_| end_of(self.header_offset, self.header_len))
            .and_then(|e| end_of(e, TRAILER_LEN as u64));
        match regions_end {
            Some(end) if end == self.file_len => {}
            _ => return Err(Error::BadGeometry(format!("{self:?}"))),
        }
        if self.file_len > real_len {
            return Err(Error::Truncated {
                expected: self.file_len,
                actual: real_len,
            });
        }
        if self.file_len < real_len {
            // The trailer was found at the end, so the file carries a second bundle's worth of
            // length claims; it is not ours to guess which is right.
            return Err(Error::BadGeometry(format!(
                "trailer says the bundle is {} bytes, the file has {}",
                self.file_len, real_len
            )));
        }
        Ok(())
    }
}

fn trailer_check(b: &[u8]) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(&b[0..104]);
    h.update(&b[112..TRAILER_LEN]);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[0..8]);
    out
}

/// Human-facing description of a bundle, stored as JSON right before the trailer. Small by
/// design: `info` reads only this and the trailer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Header {
    pub format: String,
    pub name: String,
    pub version: String,
    /// Architecture of the stub, as Rust names it (`x86_64`, `aarch64`).
    pub arch: String,
    /// The bale version that wrote the bundle.
    pub created_by: String,
    /// Only present when the build asked for a timestamp; builds are reproducible without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// What the bundle was built from, in words (`dir ./rootfs`, `Kubefile sha256:…`, …).
    #[serde(default)]
    pub inputs: Vec<String>,
    pub stub: Region,
    pub table: TableInfo,
    pub counts: Counts,
    pub sizes: Sizes,
    /// Free-form data of the layers above the file format (images, install steps, layers).
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Region {
    pub len: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct TableInfo {
    /// Stored (zstd) length.
    pub len: u64,
    /// Decoded length; bounded by `MAX_TABLE_RAW_LEN`.
    pub raw_len: u64,
    pub sha256: String,
    pub entries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Counts {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub blobs: u64,
    pub images: u64,
    pub frames: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Sizes {
    /// Sum of the content sizes of every entry, as extracted.
    pub content: u64,
    /// Bytes of frames in the payload (after deduplication and compression).
    pub stored: u64,
    /// The whole bundle file.
    pub file: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// A content-addressed OCI blob: always stored raw in consecutive frames, so it can be
    /// served from its offset without extraction.
    Blob,
}

impl Kind {
    fn code(self) -> u8 {
        match self {
            Kind::Dir => 1,
            Kind::File => 2,
            Kind::Symlink => 3,
            Kind::Blob => 4,
        }
    }
    fn from_code(c: u8) -> Option<Kind> {
        Some(match c {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            4 => Kind::Blob,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File => "file",
            Kind::Symlink => "symlink",
            Kind::Blob => "blob",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Raw,
    Zstd,
}

/// One stored frame: an independently decodable piece of one entry's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Offset from the start of the payload (the end of the stub).
    pub offset: u64,
    pub stored_len: u64,
    pub raw_len: u64,
    pub codec: Codec,
    /// SHA-256 of the stored bytes, so verification needs no decompression.
    pub sha256: Sha256Digest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    /// Content length (files and blobs); 0 otherwise.
    pub size: u64,
    /// SHA-256 of the content (files and blobs); for a blob this is its OCI digest.
    pub sha256: Sha256Digest,
    pub frames: Vec<Frame>,
    /// Symlink target.
    pub target: String,
}

impl Entry {
    /// Where the content lies as one run of raw bytes in the payload, if it does: true for blobs
    /// and for any file stored uncompressed in consecutive frames.
    pub fn contiguous_raw(&self) -> Option<(u64, u64)> {
        let first = self.frames.first()?;
        let mut next = first.offset;
        for f in &self.frames {
            if f.codec != Codec::Raw || f.offset != next {
                return None;
            }
            next += f.stored_len;
        }
        Some((first.offset, next - first.offset))
    }
}

/// Checks that a path from the index stays inside the extraction root: relative, no `..` or `.`
/// components, no empty components, no NUL.
pub fn check_entry_path(path: &str) -> std::result::Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path too long");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains('\0') {
        return Err("NUL byte in path");
    }
    for c in path.split('/') {
        match c {
            "" => return Err("empty path component"),
            "." => return Err("'.' path component"),
            ".." => return Err("'..' path component escapes the target"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks that a symlink at `path` pointing at `target` resolves inside the root. Relative
/// targets are resolved lexically from the link's directory; absolute targets are refused
/// because their meaning depends on where the tree is extracted.
pub fn check_symlink_target(path: &str, target: &str) -> std::result::Result<(), &'static str> {
    if target.is_empty() {
        return Err("empty symlink target");
    }
    if target.starts_with('/') {
        return Err("absolute symlink target points outside the target directory");
    }
    if target.contains('\0') {
        return Err("NUL byte in symlink target");
    }
    let mut depth: i64 = path.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err("symlink target climbs out of the target directory");
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

// ---- entry table encoding -------------------------------------------------------------------
//
// A flat sequence of entries, sorted by path, each:
//   kind u8 | path (varint len, bytes) | mode varint
//   file/blob: size varint | sha256 [32] | nframes varint | frames…
//     frame: offset varint | stored_len varint | raw_len varint | codec u8 | sha256 [32]
//   symlink: target (varint len, bytes)
// The whole table is one zstd frame in the file.

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn encode_table(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 64);
    for e in entries {
        out.push(e.kind.code());
        put_str(&mut out, &e.path);
        put_varint(&mut out, u64::from(e.mode));
        match e.kind {
            Kind::File | Kind::Blob => {
                put_varint(&mut out, e.size);
                out.extend_from_slice(&e.sha256);
                put_varint(&mut out, e.frames.len() as u64);
                for f in &e.frames {
                    put_varint(&mut out, f.offset);
                    put_varint(&mut out, f.stored_len);
                    put_varint(&mut out, f.raw_len);
                    out.push(match f.codec {
                        Codec::Raw => 0,
                        Codec::Zstd => 1,
                    });
                    out.extend_from_slice(&f.sha256);
                }
            }
            Kind::Symlink => put_str(&mut out, &e.target),
            Kind::Dir => {}
        }
    }
    out
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    entry: usize,
}

impl<'a> Cursor<'a> {
    fn bad(&self, why: impl Into<String>) -> Error {
        Error::BadTable {
            entry: self.entry,
            why: why.into(),
        }
    }
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| self.bad("table ends early"))?;
        self.pos += 1;
        Ok(b)
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.bad("varint too long"))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| self.bad("table ends early"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn digest(&mut self) -> Result<Sha256Digest> {
        let mut d = [0u8; 32];
        d.copy_from_slice(self.bytes(32)?);
        Ok(d)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.varint()?;
        if n as usize > MAX_PATH_LEN {
            return Err(self.bad(format!("string of {n} bytes is longer than {MAX_PATH_LEN}")));
        }
        let b = self.bytes(n as usize)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("name is not UTF-8"))
    }
}

/// Decodes and checks a table: paths are safe and strictly sorted, frames lie inside the payload
/// and respect the size limits, content sizes add up, symlinks stay inside the root and nothing
/// is written through a symlink.
pub fn decode_table(data: &[u8], payload_len: u64) -> Result<Vec<Entry>> {
    let mut c = Cursor {
        data,
        pos: 0,
        entry: 0,
    };
    let mut entries: Vec<Entry> = Vec::new();
    while c.pos < data.len() {
        let code = c.byte()?;
        let kind = Kind::from_code(code).ok_or_else(|| {
            c.bad(format!(
                "unsupported entry kind {code} (bundles carry only files, directories, symlinks \
                 and blobs; device nodes and other special files are refused)"
            ))
        })?;
        let path = c.string()?;
        check_entry_path(&path).map_err(|why| Error::UnsafePath {
            path: path.clone(),
            why: why.to_string(),
        })?;
        let mode = u32::try_from(c.varint()?).map_err(|_| c.bad("mode out of range"))? & 0o7777;
        let mut e = Entry {
            path,
            kind,
            mode,
            size: 0,
            sha256: [0; 32],
            frames: Vec::new(),
            target: String::new(),
        };
        match kind {
            Kind::File | Kind::Blob => {
                e.size = c.varint()?;
                e.sha256 = c.digest()?;
                let n = c.varint()?;
                let mut sum: u64 = 0;
                for _ in 0..n {
                    let f = Frame {
                        offset: c.varint()?,
                        stored_len: c.varint()?,
                        raw_len: c.varint()?,
                        codec: match c.byte()? {
                            0 => Codec::Raw,
                            1 => Codec::Zstd,
                            x => return Err(c.bad(format!("unknown codec {x}"))),
                        },
                        sha256: c.digest()?,
                    };
                    if f.raw_len > MAX_FRAME_LEN || f.stored_len > MAX_FRAME_LEN {
                        return Err(Error::Oversized {
                            what: "frame",
                            claimed: f.raw_len.max(f.stored_len),
                            limit: MAX_FRAME_LEN,
                        });
                    }
                    if f.codec == Codec::Raw && f.raw_len != f.stored_len {
                        return Err(c.bad("raw frame with different stored and raw lengths"));
                    }
                    let end = f.offset.checked_add(f.stored_len);
                    if end.is_none_or(|end| end > payload_len) {
                        return Err(c.bad(format!(
                            "frame at {}+{} lies outside the {payload_len}-byte payload",
                            f.offset, f.stored_len
                        )));
                    }
                    sum = sum
                        .checked_add(f.raw_len)
                        .ok_or_else(|| c.bad("size overflow"))?;
                    // Bounded by the payload: frames cannot outnumber its bytes by much.
                    if e.frames.len() as u64 > payload_len + 1 {
                        return Err(c.bad("more frames than the payload can hold"));
                    }
                    e.frames.push(f);
                }
                if sum != e.size {
                    return Err(c.bad(format!(
                        "frames hold {sum} bytes but the entry claims {}",
                        e.size
                    )));
                }
                if kind == Kind::Blob && e.contiguous_raw().is_none() && e.size > 0 {
                    return Err(c.bad("blob is not stored raw and contiguous"));
                }
            }
            Kind::Symlink => {
                e.target = c.string()?;
                check_symlink_target(&e.path, &e.target).map_err(|why| Error::UnsafePath {
                    path: format!("{} -> {}", e.path, e.target),
                    why: why.to_string(),
                })?;
            }
            Kind::Dir => {}
        }
        if let Some(prev) = entries.last() {
            if prev.path >= e.path {
                return Err(c.bad(format!(
                    "entries out of order or duplicated: {:?} then {:?}",
                    prev.path, e.path
                )));
            }
        }
        entries.push(e);
        c.entry += 1;
    }
    check_no_write_through_symlink(&entries)?;
    Ok(entries)
}

/// Refuses any entry below a path that the bundle itself makes a symlink: extracting it would
/// write through the link, wherever it points.
fn check_no_write_through_symlink(entries: &[Entry]) -> Result<()> {
    let links: std::collections::BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.kind == Kind::Symlink)
        .map(|e| e.path.as_str())
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    for e in entries {
        let mut p = e.path.as_str();
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            if links.contains(p) {
                return Err(Error::UnsafePath {
                    path: e.path.clone(),
                    why: format!("its parent {p} is a symlink in the same bundle"),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, off: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::File,
            mode: 0o644,
            size: 10,
            sha256: [7; 32],
            frames: vec![Frame {
                offset: off,
                stored_len: 10,
                raw_len: 10,
                codec: Codec::Raw,
                sha256: [9; 32],
            }],
            target: String::new(),
        }
    }

    #[test]
    fn trailer_round_trips_and_detects_every_flipped_bit() {
        let t = Trailer {
            stub_len: 1000,
            payload_len: 500,
            table_offset: 1500,
            table_len: 100,
            header_offset: 1600,
            header_len: 50,
            header_sha256: [3; 32],
            file_len: 1650 + TRAILER_LEN as u64,
            major: FORMAT_MAJOR,
            minor: FORMAT_MINOR,
        };
        let b = t.encode();
        assert_eq!(Trailer::decode(&b, t.file_len).unwrap(), t);
        for bit in 0..TRAILER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Trailer::decode(&c, t.file_len).is_err(),
                "bit {bit} flip went unnoticed"
            );
        }
    }

    #[test]
    fn newer_major_is_refused_by_name() {
        let t = Trailer {
            stub_len: 0,
            payload_len: 0,
            table_offset: 0,
            table_len: 0,
            header_offset: 0,
            header_len: 0,
            header_sha256: [0; 32],
            file_len: TRAILER_LEN as u64,
            major: FORMAT_MAJOR + 1,
            minor: 0,
        };
        let err = Trailer::decode(&t.encode(), t.file_len).unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn table_round_trips() {
        let mut link = file("b", 0);
        link.kind = Kind::Symlink;
        link.frames.clear();
        link.size = 0;
        link.sha256 = [0; 32];
        link.target = "a".into();
        let mut dir = file("c", 0);
        dir.kind = Kind::Dir;
        dir.frames.clear();
        dir.size = 0;
        dir.sha256 = [0; 32];
        let entries = vec![file("a", 0), link, dir, file("c/d", 10)];
        let enc = encode_table(&entries);
        assert_eq!(decode_table(&enc, 20).unwrap(), entries);
        // Every strict prefix is an error, never a panic.
        for n in 0..enc.len() {
            let _ = decode_table(&enc[..n], 20);
        }
    }

    #[test]
    fn table_refuses_unsafe_paths_and_frames_outside_payload() {
        for bad in ["../x", "/etc/passwd", "a/../../b", "a//b", "./a", ""] {
            let enc = encode_table(&[file(bad, 0)]);
            let err = decode_table(&enc, 20).unwrap_err();
            assert!(matches!(err, Error::UnsafePath { .. }), "{bad}: {err}");
        }
        let enc = encode_table(&[file("a", 15)]);
        assert!(decode_table(&enc, 20)
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(check_symlink_target("a/b", "../c").is_ok());
        assert!(check_symlink_target("a/b", "../../c").is_err());
        assert!(check_symlink_target("a", "/etc").is_err());
        assert!(check_symlink_target("a/b/c", "../x/../../y").is_ok());
        assert!(check_symlink_target("a/b/c", "../../../y").is_err());
    }

    #[test]
    fn nothing_is_written_through_a_bundled_symlink() {
        let mut link = file("a", 0);
        link.kind = Kind::Symlink;
        link.frames.clear();
        link.size = 0;
        link.target = "b".into();
        let enc = encode_table(&[link, file("a/x", 0)]);
        let err = decode_table(&enc, 20).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn unknown_kinds_such_as_devices_are_refused() {
        let mut enc = encode_table(&[file("dev", 0)]);
        enc[0] = 9;
        let err = decode_table(&enc, 20).unwrap_err();
        assert!(err.to_string().contains("device"), "{err}");
    }
}
