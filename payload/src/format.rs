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
/// Minor version of an unsigned bundle: written exactly as by every 1.0 writer, so unsigned
/// builds stay byte-for-byte what they were.
pub const FORMAT_MINOR: u16 = 0;
/// Minor version of a signed bundle: it carries a signature block between the header and the
/// trailer (`sig_len` bytes, named in trailer bytes 88..96).
pub const FORMAT_MINOR_SIGNED: u16 = 1;
/// The signature block is small (a few signatures of a few hundred bytes each); a larger claim
/// is damage or hostility, refused before anything is read.
pub const MAX_SIG_LEN: u64 = 1 << 20;

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
    /// Length of the signature block between the header and the trailer (format 1.1); zero
    /// for an unsigned bundle.
    pub sig_len: u64,
    pub major: u16,
    pub minor: u16,
}

impl Trailer {
    /// Where the signature block starts: right after the header.
    pub fn sig_offset(&self) -> u64 {
        self.header_offset + self.header_len
    }

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
        b[88..96].copy_from_slice(&self.sig_len.to_le_bytes());
        // 96..104 reserved, zero.
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
            sig_len: u64::from_le_bytes(b[88..96].try_into().unwrap_or([0; 8])),
            major,
            minor,
        };
        t.check_geometry(file_len)?;
        Ok(t)
    }

    /// The regions must tile the file exactly: stub, frames, table, header, signature block,
    /// trailer.
    fn check_geometry(&self, real_len: u64) -> Result<()> {
        if self.sig_len > MAX_SIG_LEN {
            return Err(Error::Oversized {
                what: "signature block",
                claimed: self.sig_len,
                limit: MAX_SIG_LEN,
            });
        }
        if self.sig_len != 0 && self.major == 1 && self.minor == 0 {
            // A 1.0 file has no signature block; a 1.0 writer never set these bytes.
            return Err(Error::BadGeometry(format!(
                "format 1.0 with a {}-byte signature block",
                self.sig_len
            )));
        }
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
            .and_then(|e| end_of(e, self.sig_len))
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
    /// A multi-platform bundle's programs, by architecture, the one at the start of the file
    /// included: any of them may start the file (see FORMAT.md, "Several platforms"). Empty,
    /// and not written, for a bundle of one platform.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub programs: BTreeMap<String, Region>,
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

/// What decoding a table may cost, fixed before the first byte is decoded: a hostile table
/// cannot make a reader allocate more than this, however well it compresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimits {
    /// Every frame must lie inside the payload.
    pub payload_len: u64,
    /// Entries the header declares; decoding stops at the first entry beyond it.
    pub entries: u64,
    /// Memory the decoded table may take, as [`entry_cost`] counts it.
    pub memory: u64,
}

impl TableLimits {
    /// The limits for a bundle file of `file_len` bytes whose header declares `entries`:
    /// [`table_memory_limit`] of memory.
    pub fn for_file(file_len: u64, payload_len: u64, entries: u64) -> TableLimits {
        TableLimits {
            payload_len,
            entries,
            memory: table_memory_limit(file_len),
        }
    }

    /// No limit beyond the payload's length (for tables this process made itself).
    pub fn unbounded(payload_len: u64) -> TableLimits {
        TableLimits {
            payload_len,
            entries: u64::MAX,
            memory: u64::MAX,
        }
    }
}

/// Memory a decoded table may take: 64 MiB for any bundle, up to 4 bytes per byte of the file
/// for larger ones, never more than 512 MiB. A table is what a reader must hold whole, and
/// the bytes that describe it compress without bound, so the limit follows what the file
/// really carries, not what it claims.
pub fn table_memory_limit(file_len: u64) -> u64 {
    file_len
        .saturating_mul(TABLE_MEMORY_PER_FILE_BYTE)
        .clamp(MIN_TABLE_MEMORY, MAX_TABLE_MEMORY)
}

pub const MIN_TABLE_MEMORY: u64 = 64 << 20;
pub const MAX_TABLE_MEMORY: u64 = 512 << 20;
pub const TABLE_MEMORY_PER_FILE_BYTE: u64 = 4;
/// The smallest encoding of an entry: kind, path length, a one-byte path, mode.
pub const MIN_ENTRY_RAW_LEN: u64 = 4;
/// The table's own zstd window (the writer uses 4 MiB): a larger one can only come from a
/// hostile table, and decoding it would need that much memory.
pub const TABLE_WINDOW_LOG_MAX: u32 = 23;

/// Memory an entry takes once decoded, as the limits count it: the struct, its strings and its
/// frames, with allocator overhead.
pub fn entry_cost(path_len: usize, target_len: usize, frames: u64) -> u64 {
    const ALLOC_OVERHEAD: u64 = 32;
    // Saturating: a hostile frame count must come out as "too much", never wrap to little.
    (std::mem::size_of::<Entry>() as u64 + 2 * ALLOC_OVERHEAD)
        .saturating_add(path_len as u64)
        .saturating_add(target_len as u64)
        .saturating_add(frames.saturating_mul(FRAME_COST))
}

/// A frame as [`entry_cost`] counts it: the struct, plus its slot in the map that checks
/// frames are shared only by whole lists.
pub const FRAME_COST: u64 = std::mem::size_of::<Frame>() as u64 + 32;

/// Reads the decoded table byte by byte from any reader (a zstd stream), so the decoded form is
/// never held whole in memory.
struct Cursor<R> {
    src: R,
    /// Bytes consumed so far.
    pos: u64,
    entry: usize,
    scratch: Vec<u8>,
}

impl<R: std::io::BufRead> Cursor<R> {
    fn bad(&self, why: impl Into<String>) -> Error {
        Error::BadTable {
            entry: self.entry,
            why: why.into(),
        }
    }
    fn read_failed(&self, e: std::io::Error) -> Error {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            self.bad("table ends early")
        } else {
            self.bad(format!("cannot decompress the table: {e}"))
        }
    }
    /// True when the table has no more bytes.
    fn at_end(&mut self) -> Result<bool> {
        match self.src.fill_buf() {
            Ok(b) => Ok(b.is_empty()),
            Err(e) => Err(self.read_failed(e)),
        }
    }
    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.src
            .read_exact(&mut b)
            .map_err(|e| self.read_failed(e))?;
        self.pos += 1;
        Ok(b[0])
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
    fn fill(&mut self, n: usize) -> Result<()> {
        self.scratch.resize(n, 0);
        let Cursor { src, scratch, .. } = self;
        if let Err(e) = src.read_exact(scratch) {
            return Err(self.read_failed(e));
        }
        self.pos += n as u64;
        Ok(())
    }
    fn digest(&mut self) -> Result<Sha256Digest> {
        self.fill(32)?;
        let mut d = [0u8; 32];
        d.copy_from_slice(&self.scratch);
        Ok(d)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.varint()?;
        if n > MAX_PATH_LEN as u64 {
            return Err(self.bad(format!("string of {n} bytes is longer than {MAX_PATH_LEN}")));
        }
        self.fill(n as usize)?;
        String::from_utf8(self.scratch.clone()).map_err(|_| self.bad("name is not UTF-8"))
    }
}

/// Decodes and checks a table held in memory, with no limit but the payload's length (for
/// tables whose size is already known to be sane; a bundle read from a file goes through
/// [`decode_table_from`]).
pub fn decode_table(data: &[u8], payload_len: u64) -> Result<Vec<Entry>> {
    decode_table_from(data, TableLimits::unbounded(payload_len))
}

/// Decodes and checks a table from a stream of its decoded bytes: paths are safe and strictly
/// sorted, frames are non-empty, lie inside the payload, follow each other within an entry and
/// are shared only as a whole list (identical content stored once), content sizes add up,
/// symlinks stay inside the root even through other links, and nothing is written through a
/// symlink. Memory is charged as entries arrive, and decoding stops as soon as the limits are
/// passed.
pub fn decode_table_from(src: impl std::io::BufRead, limits: TableLimits) -> Result<Vec<Entry>> {
    let mut c = Cursor {
        src,
        pos: 0,
        entry: 0,
        scratch: Vec::new(),
    };
    let mut spent: u64 = 0;
    // The declared count, once checked against the memory limit, sizes the list exactly.
    let capacity = match limits.entries {
        u64::MAX => 0,
        n => n.min(limits.memory / entry_cost(0, 0, 0)),
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(capacity as usize);
    // Which entry first listed each frame (by payload offset).
    let mut owners: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    while !c.at_end()? {
        if entries.len() as u64 >= limits.entries {
            return Err(c.bad(format!(
                "the table holds more entries than the {} its header declares",
                limits.entries
            )));
        }
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
        let mut cost = entry_cost(e.path.len(), 0, 0);
        match kind {
            Kind::File | Kind::Blob => {
                e.size = c.varint()?;
                e.sha256 = c.digest()?;
                let n = c.varint()?;
                cost = entry_cost(e.path.len(), 0, n);
                charge(&c, &mut spent, cost, &limits, &e.path)?;
                e.frames.reserve_exact(n as usize);
                let mut sum: u64 = 0;
                let mut next_free: u64 = 0;
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
                    check_frame_record(&c, &f, next_free, limits.payload_len)?;
                    next_free = f.offset + f.stored_len;
                    sum = sum
                        .checked_add(f.raw_len)
                        .ok_or_else(|| c.bad("size overflow"))?;
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
                check_shared_frames(&c, &e, &entries, &mut owners)?;
            }
            Kind::Symlink => {
                e.target = c.string()?;
                cost = entry_cost(e.path.len(), e.target.len(), 0);
                charge(&c, &mut spent, cost, &limits, &e.path)?;
                check_symlink_target(&e.path, &e.target).map_err(|why| Error::UnsafePath {
                    path: format!("{} -> {}", e.path, e.target),
                    why: why.to_string(),
                })?;
            }
            Kind::Dir => charge(&c, &mut spent, cost, &limits, &e.path)?,
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
    check_links(&entries)?;
    Ok(entries)
}

/// Counts `cost` against the table's memory limit, refusing the entry that passes it.
fn charge<R: std::io::BufRead>(
    c: &Cursor<R>,
    spent: &mut u64,
    cost: u64,
    limits: &TableLimits,
    path: &str,
) -> Result<()> {
    *spent = spent.saturating_add(cost);
    if *spent > limits.memory {
        return Err(c.bad(format!(
            "at {path:?} the table needs more than {} bytes of memory, the limit for a bundle of \
             this size: the bundle is damaged or hostile",
            limits.memory
        )));
    }
    Ok(())
}

/// A frame record on its own and after the previous frame of the same entry: non-empty, within
/// the size limits and the payload, and after the previous frame's end, so an entry can never
/// list one stored frame twice (a small file would otherwise declare terabytes).
fn check_frame_record<R: std::io::BufRead>(
    c: &Cursor<R>,
    f: &Frame,
    next_free: u64,
    payload_len: u64,
) -> Result<()> {
    if f.raw_len > MAX_FRAME_LEN || f.stored_len > MAX_FRAME_LEN {
        return Err(Error::Oversized {
            what: "frame",
            claimed: f.raw_len.max(f.stored_len),
            limit: MAX_FRAME_LEN,
        });
    }
    if f.stored_len == 0 || f.raw_len == 0 {
        return Err(c.bad("empty frame (an entry's content is never stored as an empty frame)"));
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
    if f.offset < next_free {
        return Err(c.bad(format!(
            "frame at payload offset {} repeats or overlaps an earlier frame of the same entry \
             (an entry's frames follow each other in the payload)",
            f.offset
        )));
    }
    Ok(())
}

/// Identical content is stored once, so entries share frames only as a whole list: an entry
/// whose first frame belongs to an earlier entry must list exactly that entry's frames, and
/// one whose first frame is new must list only new frames. With this, the content a table
/// declares is bounded by its distinct frames, each decoded once.
fn check_shared_frames<R: std::io::BufRead>(
    c: &Cursor<R>,
    e: &Entry,
    entries: &[Entry],
    owners: &mut std::collections::HashMap<u64, usize>,
) -> Result<()> {
    let Some(first) = e.frames.first() else {
        return Ok(());
    };
    if let Some(&owner) = owners.get(&first.offset) {
        let o = &entries[owner];
        if o.frames != e.frames {
            return Err(c.bad(format!(
                "{:?} shares frames with {:?} but not all of them (identical content shares \
                 every frame, other content none)",
                e.path, o.path
            )));
        }
        return Ok(());
    }
    let me = entries.len();
    for f in &e.frames {
        if let Some(&owner) = owners.get(&f.offset) {
            return Err(c.bad(format!(
                "{:?} shares the frame at payload offset {} with {:?} but not its other \
                 frames (identical content shares every frame, other content none)",
                e.path, f.offset, entries[owner].path
            )));
        }
        owners.insert(f.offset, me);
    }
    Ok(())
}

/// The checks that need the whole table: nothing lies below a bundled symlink, and every
/// symlink, followed through the other symlinks of the table, stays inside the root. The
/// writer runs them too, so it never writes a bundle that readers refuse.
pub fn check_links(entries: &[Entry]) -> Result<()> {
    check_no_write_through_symlink(entries)?;
    check_symlink_chains(entries)
}

/// Most links followed when resolving one symlink, as the kernel's own limit.
pub const MAX_LINK_HOPS: usize = 40;

/// Resolves every symlink through the links the table holds, component by component as the
/// kernel will once they are on disk: `sub/up -> ..` is fine alone, but `esc -> sub/up/..`
/// then leaves the root. A link whose resolution climbs above the root, or that needs more
/// than [`MAX_LINK_HOPS`] links, is refused by name.
fn check_symlink_chains(entries: &[Entry]) -> Result<()> {
    let links: std::collections::HashMap<&str, &str> = entries
        .iter()
        .filter(|e| e.kind == Kind::Symlink)
        .map(|e| (e.path.as_str(), e.target.as_str()))
        .collect();
    // In table order, so the report names the same link every time.
    for e in entries.iter().filter(|e| e.kind == Kind::Symlink) {
        resolve_in_root(&links, &e.path, &e.target).map_err(|why| Error::UnsafePath {
            path: format!("{} -> {}", e.path, e.target),
            why: why.to_string(),
        })?;
    }
    Ok(())
}

/// Follows `target` from the directory of the link at `path`; `Err` says why it leaves the
/// root (or loops).
fn resolve_in_root(
    links: &std::collections::HashMap<&str, &str>,
    path: &str,
    target: &str,
) -> std::result::Result<(), &'static str> {
    let mut at: Vec<&str> = path.split('/').collect();
    at.pop();
    let mut todo: std::collections::VecDeque<&str> = target.split('/').collect();
    let mut hops = 0;
    let mut joined = String::new();
    while let Some(c) = todo.pop_front() {
        match c {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() {
                    return Err(
                        "symlink target climbs out of the target directory through the \
                         bundle's other symlinks",
                    );
                }
            }
            name => {
                at.push(name);
                joined.clear();
                for (i, part) in at.iter().enumerate() {
                    if i > 0 {
                        joined.push('/');
                    }
                    joined.push_str(part);
                }
                if let Some(next) = links.get(joined.as_str()) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err("too many levels of symlinks (a loop?)");
                    }
                    if next.starts_with('/') {
                        return Err("symlink target points outside through an absolute link");
                    }
                    at.pop();
                    for part in next.split('/').rev() {
                        todo.push_front(part);
                    }
                }
            }
        }
    }
    Ok(())
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

    /// A trailer of a small bundle with a signature block of `sig_len` bytes (0: none).
    fn trailer_with(sig_len: u64, minor: u16) -> Trailer {
        Trailer {
            stub_len: 1000,
            payload_len: 500,
            table_offset: 1500,
            table_len: 100,
            header_offset: 1600,
            header_len: 50,
            header_sha256: [3; 32],
            file_len: 1650 + sig_len + TRAILER_LEN as u64,
            sig_len,
            major: FORMAT_MAJOR,
            minor,
        }
    }

    #[test]
    fn trailer_1_1_round_trips_with_its_signature_block() {
        let t = trailer_with(700, FORMAT_MINOR_SIGNED);
        let b = t.encode();
        assert_eq!(&b[88..96], &700u64.to_le_bytes());
        assert_eq!(&b[96..104], &[0; 8]);
        let back = Trailer::decode(&b, t.file_len).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.sig_offset(), 1650);
        // The check value covers sig_len: a changed length is damage, not a new geometry.
        let mut c = b;
        c[88] ^= 1;
        assert!(matches!(
            Trailer::decode(&c, t.file_len),
            Err(Error::TrailerChecksum)
        ));
    }

    #[test]
    fn a_signature_block_in_a_1_0_trailer_is_refused() {
        let t = trailer_with(700, FORMAT_MINOR);
        let err = Trailer::decode(&t.encode(), t.file_len).unwrap_err();
        assert!(matches!(err, Error::BadGeometry(_)), "{err}");
        assert!(err.to_string().contains("format 1.0"), "{err}");
    }

    #[test]
    fn the_signature_block_is_bounded_and_must_tile() {
        let t = trailer_with(MAX_SIG_LEN + 1, FORMAT_MINOR_SIGNED);
        let err = Trailer::decode(&t.encode(), t.file_len).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Oversized {
                    what: "signature block",
                    ..
                }
            ),
            "{err}"
        );
        let mut t = trailer_with(700, FORMAT_MINOR_SIGNED);
        t.file_len -= 1;
        let err = Trailer::decode(&t.encode(), t.file_len).unwrap_err();
        assert!(matches!(err, Error::BadGeometry(_)), "{err}");
        // An unsigned 1.1 file is fine too (a reader does not insist on a block).
        let t = trailer_with(0, FORMAT_MINOR_SIGNED);
        assert_eq!(Trailer::decode(&t.encode(), t.file_len).unwrap(), t);
    }

    #[test]
    fn trailer_round_trips_and_detects_every_flipped_bit() {
        let t = trailer_with(0, FORMAT_MINOR);
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
            sig_len: 0,
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

    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: Kind::Symlink,
            mode: 0o777,
            size: 0,
            sha256: [0; 32],
            frames: vec![],
            target: target.into(),
        }
    }

    #[test]
    fn symlinks_are_resolved_through_the_other_links() {
        let ok = |links: &[(&str, &str)]| {
            let entries: Vec<Entry> = links.iter().map(|(p, t)| link(p, t)).collect();
            check_symlink_chains(&entries)
        };
        assert!(ok(&[("sub/up", "..")]).is_ok());
        assert!(ok(&[("sub/up", ".."), ("esc", "sub/up/..")]).is_err());
        assert!(ok(&[("sub/up", ".."), ("p", "sub/up/sub/up/../../etc/passwd")]).is_err());
        assert!(ok(&[("lib", "usr/lib"), ("lib64", "lib"), ("x", "lib64/../bin")]).is_ok());
        assert!(ok(&[("a", "b/../.."), ("b", "c")]).is_err());
        assert!(ok(&[("a", "b"), ("b", "a")])
            .unwrap_err()
            .to_string()
            .contains("too many levels"));
        // A link to an absolute link leaves the root too.
        let mut abs = vec![link("a", "b/x"), link("b", "/etc")];
        abs.sort_by(|x, y| x.path.cmp(&y.path));
        assert!(check_symlink_chains(&abs).is_err());
    }

    #[test]
    fn an_entry_lists_each_frame_once_and_shares_only_whole_lists() {
        let mut twice = file("a", 0);
        twice.frames.push(twice.frames[0]);
        twice.size = 20;
        let err = decode_table(&encode_table(&[twice]), 20).unwrap_err();
        assert!(err.to_string().contains("repeats or overlaps"), "{err}");

        let mut empty = file("a", 0);
        empty.frames[0].stored_len = 0;
        empty.frames[0].raw_len = 0;
        empty.size = 0;
        let err = decode_table(&encode_table(&[empty]), 20).unwrap_err();
        assert!(err.to_string().contains("empty frame"), "{err}");

        let mut two = file("a", 0);
        two.frames.push(Frame {
            offset: 10,
            ..two.frames[0]
        });
        two.size = 20;
        let same = Entry {
            path: "b".into(),
            ..two.clone()
        };
        assert!(decode_table(&encode_table(&[two.clone(), same]), 20).is_ok());
        let err = decode_table(&encode_table(&[two, file("b", 10)]), 20).unwrap_err();
        assert!(err.to_string().contains("but not"), "{err}");
    }

    #[test]
    fn decoding_stops_at_the_memory_limit_and_the_declared_count() {
        let entries: Vec<Entry> = (0..100).map(|i| file(&format!("f{i:03}"), 0)).collect();
        // Every entry shares the one frame: legal, and each costs its own memory.
        let enc = encode_table(&entries);
        let limits = |entries, memory| TableLimits {
            payload_len: 20,
            entries,
            memory,
        };
        assert_eq!(
            decode_table_from(&enc[..], limits(100, 1 << 20))
                .unwrap()
                .len(),
            100
        );
        let err = decode_table_from(&enc[..], limits(99, 1 << 20)).unwrap_err();
        assert!(
            err.to_string().contains("more entries than the 99"),
            "{err}"
        );
        let err = decode_table_from(&enc[..], limits(100, 50 * entry_cost(4, 0, 1))).unwrap_err();
        assert!(err.to_string().contains("bytes of memory"), "{err}");
        // A frame count near 2^64 (found by the fuzzer: its cost overflowed) is refused.
        let mut raw = encode_table(&[file("a", 0)]);
        // kind, path length, path, mode, size, digest: the frame count follows.
        let at = 1 + 1 + 1 + 1 + 1 + 32;
        raw.splice(
            at..at + 1,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        );
        let err = decode_table_from(&raw[..], limits(1, 1 << 20)).unwrap_err();
        assert!(err.to_string().contains("bytes of memory"), "{err}");
        assert_eq!(table_memory_limit(1), MIN_TABLE_MEMORY);
        assert_eq!(table_memory_limit(u64::MAX), MAX_TABLE_MEMORY);
    }
}
