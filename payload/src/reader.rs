//! Opening a bundle: find the trailer, check the header, load the entry table, read frames.
//!
//! Opening reads only the trailer and the header (a few KiB), which keeps `info` instant on a
//! bundle of any size. The entry table is loaded on demand and checked against the digest the
//! header carries, so every byte that drives a decision has been authenticated from the trailer
//! down before it is used.

use crate::error::{Error, Result};
use crate::format::{self, Codec, Entry, Frame, Header, Trailer, MAX_TABLE_RAW_LEN, TRAILER_LEN};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// How far back from the end to look for a trailer when the file does not end in one, to tell
/// "bytes were appended" from "not a bundle".
const APPENDED_TAIL_SCAN: u64 = 1 << 20;

pub const FORMAT_NAME: &str = "bale-payload/1";

pub struct Bundle {
    file: File,
    path: PathBuf,
    pub trailer: Trailer,
    pub header: Header,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle").field("path", &self.path).finish()
    }
}

impl Bundle {
    /// Opens a bundle file and authenticates its trailer and header.
    pub fn open(path: impl AsRef<Path>) -> Result<Bundle> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_file(file, path)
    }

    /// Opens a bundle to read the entries and metadata of its `arch` platform: for a bundle
    /// of several platforms that carries `arch`, that platform's view even when the file starts
    /// with another architecture's program (so [`Bundle::check_stub`] is not for it); any
    /// other bundle as [`Bundle::open`] does. A build `FROM` a multi-platform base uses it.
    pub fn open_for_platform(path: impl AsRef<Path>, arch: &str) -> Result<Bundle> {
        let mut b = Bundle::open(path)?;
        if b.is_multi_platform() && b.header.arch != arch && b.header.programs.contains_key(arch) {
            let bytes = read_region(
                &b.file,
                &b.path,
                b.trailer.header_offset,
                b.trailer.header_len,
            )?;
            let mut header = decode_header(&b.trailer, &bytes)?;
            crate::platforms::select(&mut header, arch, None)?;
            b.header = header;
        }
        Ok(b)
    }

    /// The bundle this very program is, if a payload is appended to it. `Ok(None)` means this
    /// is a plain bale program (the build tool).
    pub fn open_self() -> Result<Option<Bundle>> {
        let exe = PathBuf::from("/proc/self/exe");
        let file = File::open(&exe).map_err(|e| Error::io(&exe, e))?;
        let shown = std::fs::read_link(&exe).unwrap_or(exe);
        match Self::from_file(file, shown) {
            Ok(b) => Ok(Some(b)),
            Err(Error::NoTrailer) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a bundle from a file already open (a memory file, say); `path` is how messages
    /// name it.
    pub fn from_file(file: File, path: impl Into<PathBuf>) -> Result<Bundle> {
        let path = path.into();
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < TRAILER_LEN as u64 {
            return Err(Error::NoTrailer);
        }
        let mut tb = [0u8; TRAILER_LEN];
        file.read_exact_at(&mut tb, len - TRAILER_LEN as u64)
            .map_err(|e| Error::io(&path, e))?;
        let trailer = match Trailer::decode(&tb, len) {
            Err(Error::NoTrailer) => return Err(find_appended_tail(&file, &path, len)?),
            other => other?,
        };
        let header_bytes = read_region(&file, &path, trailer.header_offset, trailer.header_len)?;
        let mut header = decode_header(&trailer, &header_bytes)?;
        if !header.programs.is_empty() {
            let mut head = [0u8; 20];
            file.read_exact_at(&mut head, 0)
                .map_err(|e| Error::io(&path, e))?;
            let arch = crate::elf::arch_of_header(&head).ok_or_else(|| {
                Error::BadHeader("the file does not start with an ELF program".into())
            })?;
            crate::platforms::select(&mut header, &arch, Some(trailer.stub_len))?;
        }
        Ok(Bundle {
            file,
            path,
            trailer,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// Absolute file offset of the first payload byte.
    pub fn payload_start(&self) -> u64 {
        self.trailer.stub_len
    }

    /// The entries this bundle installs: for a bundle of several platforms, the view of the
    /// platform whose program starts the file (see [`crate::platforms`]); otherwise all.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        let all = self.all_entries()?;
        if self.is_multi_platform() {
            return crate::platforms::view(all, &self.header.arch);
        }
        Ok(all)
    }

    /// True when the bundle carries the programs and entries of several platforms.
    pub fn is_multi_platform(&self) -> bool {
        !self.header.programs.is_empty()
    }

    /// Loads, authenticates and decodes the entry table, streaming it from the file: memory is
    /// what the decoded entries take, within [`format::table_memory_limit`]. Every entry, of
    /// every platform.
    pub fn all_entries(&self) -> Result<Vec<Entry>> {
        let region = RegionReader {
            file: &self.file,
            pos: self.trailer.table_offset,
            end: self.trailer.table_offset + self.trailer.table_len,
        };
        load_entries(&self.trailer, &self.header, region).map_err(|e| match e {
            LoadError::Bundle(e) => e,
            LoadError::Read(e) => Error::io(&self.path, e),
        })
    }

    /// Reads one frame's stored bytes into `stored`, checks their digest, and leaves the content
    /// in `out`. Decompression is bounded by the frame's declared size, so a frame crafted to
    /// expand without limit fails instead of filling memory.
    pub fn read_frame(
        &self,
        entry: &Entry,
        index: usize,
        dctx: &mut zstd::bulk::Decompressor<'static>,
        stored: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let f = self.read_stored(entry, index, stored)?;
        check_frame(entry, index, f, stored)?;
        decode_frame(entry, index, f, dctx, stored, out)
    }

    /// [`read_frame`](Self::read_frame) for a caller that checks the entry's whole content
    /// against the entry's digest before any of it is used (extract writes unnamed files and
    /// links them only after that check). A raw frame's own digest covers the very bytes that
    /// check covers, so it is not computed a second time; a compressed frame is still checked
    /// before it is decoded, so the decoder only ever sees bytes the table vouches for.
    pub fn read_frame_checked_by_content(
        &self,
        entry: &Entry,
        index: usize,
        dctx: &mut zstd::bulk::Decompressor<'static>,
        stored: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let f = self.read_stored(entry, index, stored)?;
        if f.codec != Codec::Raw {
            check_frame(entry, index, f, stored)?;
        }
        decode_frame(entry, index, f, dctx, stored, out)
    }

    /// After `entry`'s content did not match its digest: the first of its frames that does not
    /// match its own, so that the error names where the file is damaged. Reads the frames
    /// again; only ever called on that failure.
    pub fn damaged_frame(&self, entry: &Entry) -> Option<Error> {
        let mut stored = Vec::new();
        (0..entry.frames.len()).find_map(|index| {
            self.read_stored(entry, index, &mut stored)
                .and_then(|f| check_frame(entry, index, f, &stored))
                .err()
        })
    }

    /// Frame `index` of `entry` as stored, into `stored`; unchecked.
    fn read_stored<'e>(
        &self,
        entry: &'e Entry,
        index: usize,
        stored: &mut Vec<u8>,
    ) -> Result<&'e Frame> {
        let f = entry.frames.get(index).ok_or_else(|| Error::BadFrame {
            path: entry.path.clone(),
            frame: index,
            offset: 0,
            why: "does not exist".into(),
        })?;
        stored.resize(f.stored_len as usize, 0);
        self.file
            .read_exact_at(stored, self.payload_start() + f.offset)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(f)
    }

    /// A streaming reader over one entry's content, checking every frame as it goes.
    pub fn open_entry<'a>(&'a self, entry: &'a Entry) -> Result<EntryReader<'a>> {
        Ok(EntryReader {
            bundle: self,
            entry,
            next_frame: 0,
            dctx: new_decompressor()?,
            stored: Vec::new(),
            buf: Vec::new(),
            pos: 0,
        })
    }

    /// Returns the stub (the bale program without payload) as a reader.
    pub fn stub_reader(&self) -> impl Read + '_ {
        RegionReader {
            file: &self.file,
            pos: 0,
            end: self.trailer.stub_len,
        }
    }

    /// Checks the program part against the digest in the header.
    pub fn check_stub(&self) -> Result<()> {
        let expected = parse_digest("stub", &self.header.stub.sha256)?;
        let mut h = Sha256::new();
        std::io::copy(
            &mut std::io::BufReader::with_capacity(1 << 20, self.stub_reader()),
            &mut format::HashWriter(&mut h),
        )
        .map_err(|e| Error::io(&self.path, e))?;
        let got: format::Sha256Digest = h.finalize().into();
        if got != expected {
            return Err(Error::RegionDigest {
                region: "program (stub)",
                expected: format::hex(&expected),
                actual: format::hex(&got),
            });
        }
        Ok(())
    }
}

pub fn new_decompressor() -> Result<zstd::bulk::Decompressor<'static>> {
    let mut d = zstd::bulk::Decompressor::new()
        .map_err(|e| Error::Input(format!("cannot create a zstd decoder: {e}")))?;
    // Frames are at most MAX_FRAME_LEN; a larger window can only come from a hostile frame.
    d.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(26))
        .map_err(|e| Error::Input(format!("cannot configure the zstd decoder: {e}")))?;
    Ok(d)
}

pub(crate) fn check_frame(entry: &Entry, index: usize, f: &Frame, stored: &[u8]) -> Result<()> {
    match frame_mismatch(&entry.path, index, f.offset, &f.sha256, stored) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The error for frame `index` of `path` when `stored` does not hash to `expected`.
pub(crate) fn frame_mismatch(
    path: &str,
    index: usize,
    offset: u64,
    expected: &format::Sha256Digest,
    stored: &[u8],
) -> Option<Error> {
    let got = format::sha256(stored);
    (got != *expected).then(|| Error::BadFrame {
        path: path.to_string(),
        frame: index,
        offset,
        why: format!(
            "does not match its SHA-256 (expected {}, got {})",
            format::hex(expected),
            format::hex(&got)
        ),
    })
}

fn decode_frame(
    entry: &Entry,
    index: usize,
    f: &Frame,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    stored: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<()> {
    match f.codec {
        Codec::Raw => std::mem::swap(stored, out),
        Codec::Zstd => {
            out.clear();
            out.reserve(f.raw_len as usize);
            let n = dctx
                .decompress_to_buffer(&stored[..], out)
                .map_err(|e| Error::BadFrame {
                    path: entry.path.clone(),
                    frame: index,
                    offset: f.offset,
                    why: format!(
                        "does not decompress to its declared {} bytes ({e})",
                        f.raw_len
                    ),
                })?;
            if n as u64 != f.raw_len {
                return Err(Error::BadFrame {
                    path: entry.path.clone(),
                    frame: index,
                    offset: f.offset,
                    why: format!("decompresses to {n} bytes, declared {}", f.raw_len),
                });
            }
        }
    }
    Ok(())
}

pub struct EntryReader<'a> {
    bundle: &'a Bundle,
    entry: &'a Entry,
    next_frame: usize,
    dctx: zstd::bulk::Decompressor<'static>,
    stored: Vec<u8>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for EntryReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.next_frame == self.entry.frames.len() {
                return Ok(0);
            }
            self.bundle
                .read_frame(
                    self.entry,
                    self.next_frame,
                    &mut self.dctx,
                    &mut self.stored,
                    &mut self.buf,
                )
                .map_err(std::io::Error::other)?;
            self.next_frame += 1;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct RegionReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RegionReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = (out.len() as u64).min(self.end - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut out[..n], self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

fn read_region(file: &File, path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(path, e))?;
    Ok(buf)
}

/// Checks the header's bytes against the trailer's digest and decodes them, refusing a header
/// of another format or one that disagrees with the trailer on the regions' sizes.
pub(crate) fn decode_header(trailer: &Trailer, header_bytes: &[u8]) -> Result<Header> {
    check_digest("header", &trailer.header_sha256, header_bytes)?;
    let header: Header = serde_json::from_slice(header_bytes)
        .map_err(|e| Error::BadHeader(format!("not valid JSON: {e}")))?;
    if header.format != FORMAT_NAME {
        return Err(Error::BadHeader(format!(
            "format {:?}, expected {FORMAT_NAME:?}",
            header.format
        )));
    }
    // A bundle of several platforms may start with any of its programs.
    let program_fits = crate::platforms::program_region(&header, trailer.stub_len).is_some();
    if header.table.len != trailer.table_len || !program_fits {
        return Err(Error::BadHeader(
            "header and trailer disagree on region sizes".into(),
        ));
    }
    if header.table.raw_len > MAX_TABLE_RAW_LEN {
        return Err(Error::Oversized {
            what: "entry table",
            claimed: header.table.raw_len,
            limit: MAX_TABLE_RAW_LEN,
        });
    }
    Ok(header)
}

/// Authenticates the stored entry table (held in memory) against the header and decodes it.
pub(crate) fn decode_entries(
    trailer: &Trailer,
    header: &Header,
    stored: &[u8],
) -> Result<Vec<Entry>> {
    load_entries(trailer, header, stored).map_err(|e| match e {
        LoadError::Bundle(e) => e,
        LoadError::Read(e) => Error::Input(format!("cannot read the entry table: {e}")),
    })
}

/// Why a table could not be loaded: the bundle, or reading its bytes.
enum LoadError {
    Bundle(Error),
    Read(std::io::Error),
}

impl From<Error> for LoadError {
    fn from(e: Error) -> Self {
        LoadError::Bundle(e)
    }
}

/// Hashes every byte read through it, so the table is authenticated in the same pass that
/// decodes it: the bytes checked are the bytes used, read once.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    /// Set when the underlying read fails, to tell it from a bad table.
    failed: Option<std::io::Error>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(out) {
            Ok(n) => {
                self.hasher.update(&out[..n]);
                Ok(n)
            }
            Err(e) => {
                let again = std::io::Error::new(e.kind(), e.to_string());
                self.failed = Some(e);
                Err(again)
            }
        }
    }
}

/// Checks the header's claims about the table against the file and the limits before anything
/// is decoded, then decodes the stored table from `stored` as a stream (zstd's window bounded,
/// entries charged against the memory limit as they arrive), hashing it on the way. Nothing
/// decoded is returned unless the stored bytes match the header's digest; a table that fails
/// to decode is reported as damaged when its digest is wrong too.
fn load_entries(
    trailer: &Trailer,
    header: &Header,
    stored: impl Read,
) -> std::result::Result<Vec<Entry>, LoadError> {
    let expected = parse_digest("entry table", &header.table.sha256)?;
    let raw_len = header.table.raw_len;
    let declared = header.table.entries;
    let limits = format::TableLimits::for_file(trailer.file_len, trailer.payload_len, declared);
    let min_memory = declared.saturating_mul(format::entry_cost(1, 0, 0));
    if declared.saturating_mul(format::MIN_ENTRY_RAW_LEN) > raw_len || min_memory > limits.memory {
        return Err(Error::BadTable {
            entry: 0,
            why: format!(
                "the header declares {declared} entries in {raw_len} bytes; they cannot fit, or                  they would need more than the {} bytes of memory allowed for a bundle of {}                  bytes",
                limits.memory, trailer.file_len
            ),
        }
        .into());
    }
    let mut src = Hashing {
        inner: stored,
        hasher: Sha256::new(),
        failed: None,
    };
    let decoded = decode_stream(&mut src, raw_len, limits);
    if let Some(e) = src.failed.take() {
        return Err(LoadError::Read(e));
    }
    // The rest of the region (zstd need not have read it all) is hashed as well.
    std::io::copy(&mut src, &mut std::io::sink()).map_err(|e| match src.failed.take() {
        Some(e) => LoadError::Read(e),
        None => LoadError::Read(e),
    })?;
    let got: format::Sha256Digest = src.hasher.finalize().into();
    if got != expected {
        return Err(Error::RegionDigest {
            region: "entry table",
            expected: format::hex(&expected),
            actual: format::hex(&got),
        }
        .into());
    }
    let entries = decoded?;
    if entries.len() as u64 != declared {
        return Err(Error::BadTable {
            entry: entries.len(),
            why: format!("holds {} entries, header says {declared}", entries.len()),
        }
        .into());
    }
    Ok(entries)
}

/// Decodes the zstd stream of the table, refusing more than `raw_len` decoded bytes.
fn decode_stream(
    stored: &mut impl Read,
    raw_len: u64,
    limits: format::TableLimits,
) -> Result<Vec<Entry>> {
    let undecodable = |e: std::io::Error| Error::BadTable {
        entry: 0,
        why: format!("cannot decompress: {e}"),
    };
    let mut z = zstd::stream::read::Decoder::new(stored).map_err(undecodable)?;
    z.window_log_max(format::TABLE_WINDOW_LOG_MAX)
        .map_err(undecodable)?;
    let mut counted = Counted {
        inner: z.take(raw_len.saturating_add(1)),
        n: 0,
    };
    let entries = format::decode_table_from(
        std::io::BufReader::with_capacity(64 << 10, &mut counted),
        limits,
    )?;
    if counted.n != raw_len {
        return Err(Error::BadTable {
            entry: entries.len(),
            why: format!("decoded to {} bytes, header says {raw_len}", counted.n),
        });
    }
    Ok(entries)
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.n += n as u64;
        Ok(n)
    }
}

pub(crate) fn parse_digest(region: &'static str, s: &str) -> Result<format::Sha256Digest> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(s, &mut d)
        .map_err(|_| Error::BadHeader(format!("{region} digest {s:?} is not 64 hex digits")))?;
    Ok(d)
}

pub(crate) fn check_digest(
    region: &'static str,
    expected: &format::Sha256Digest,
    data: &[u8],
) -> Result<()> {
    let got = format::sha256(data);
    if &got != expected {
        return Err(Error::RegionDigest {
            region,
            expected: format::hex(expected),
            actual: format::hex(&got),
        });
    }
    Ok(())
}

/// The file does not end in a trailer. If one sits a little before the end, bytes were appended
/// to an intact bundle: say so and how to fix it, rather than "not a bundle".
fn find_appended_tail(file: &File, path: &Path, len: u64) -> Result<Error> {
    let start = len.saturating_sub(APPENDED_TAIL_SCAN);
    let mut buf = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| Error::io(path, e))?;
    let magic = &format::MAGIC;
    let mut i = buf.len();
    while i >= TRAILER_LEN {
        if buf[i - magic.len()..i] == magic[..] {
            let mut tb = [0u8; TRAILER_LEN];
            tb.copy_from_slice(&buf[i - TRAILER_LEN..i]);
            let end = start + i as u64;
            if let Ok(t) = Trailer::decode(&tb, end) {
                if t.file_len == end {
                    return Ok(Error::AppendedTail {
                        bundle_len: end,
                        extra: len - end,
                    });
                }
            }
        }
        i -= 1;
    }
    Ok(Error::NoTrailer)
}
