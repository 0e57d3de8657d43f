//! Debian packages a tree or an image layer says it holds: dpkg's database
//! (`var/lib/dpkg/status`) and the one-file-per-package form that minimal images use
//! (`var/lib/dpkg/status.d/NAME`); and, in a layer, the Go binaries and their modules.
//!
//! Layers are read as tar streams, bounded: only layers stored uncompressed, gzip- or
//! zstd-compressed, of at most [`MAX_LAYER`] bytes, decoded to at most [`MAX_LAYER_DECODED`];
//! only status files of at most [`MAX_STATUS`] bytes are read. An executable member that is an
//! ELF file is searched for Go's build information as it streams by (the stream has no random
//! access; the search costs less than the decompression). A layer beyond a bound is skipped
//! and said so, never fatal: an SBOM without a layer's packages is still a correct SBOM of
//! what it lists.

use std::io::{BufRead, Read};

/// Largest status file read (Debian's full database of a desktop system is about 4 MiB).
pub const MAX_STATUS: u64 = 16 << 20;
/// Largest layer blob scanned, as stored.
pub const MAX_LAYER: u64 = 64 << 20;
/// Largest layer scanned, decoded: a compressed layer built to expand without bound stops here.
pub const MAX_LAYER_DECODED: u64 = 512 << 20;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The source package, when it differs from the binary package's name.
    pub source: Option<String>,
}

impl Package {
    /// `pkg:deb/debian/NAME@VERSION?arch=ARCH`, percent-encoded as the purl rules ask.
    pub fn purl(&self) -> String {
        let mut p = format!(
            "pkg:deb/debian/{}@{}",
            super::purl_encode(&self.name),
            super::purl_encode(&self.version)
        );
        if !self.arch.is_empty() {
            p.push_str("?arch=");
            p.push_str(&super::purl_encode(&self.arch));
        }
        p
    }
}

/// Whether a path (relative, `/`-separated) is a dpkg status file.
pub fn is_status_path(path: &str) -> bool {
    let p = path.trim_start_matches("./").trim_start_matches('/');
    if p == "var/lib/dpkg/status" {
        return true;
    }
    p.strip_prefix("var/lib/dpkg/status.d/")
        .is_some_and(|n| !n.is_empty() && !n.contains('/') && !n.ends_with(".md5sums"))
}

/// The root a dpkg database in a bundle's tree belongs to (`""`, or `rootfs/` for a tree
/// below a directory) when `path` is one of its status files.
pub fn status_root(path: &str) -> Option<&str> {
    const DB: &str = "var/lib/dpkg/";
    let at = if path.starts_with(DB) {
        0
    } else {
        path.find(&format!("/{DB}"))? + 1
    };
    is_status_path(&path[at..]).then_some(&path[..at])
}

/// The root and package name of a dpkg file list (`var/lib/dpkg/info/NAME[:ARCH].list`).
pub fn list_of(path: &str) -> Option<(&str, &str)> {
    const INFO: &str = "var/lib/dpkg/info/";
    let at = if path.starts_with(INFO) {
        0
    } else {
        path.find(&format!("/{INFO}"))? + 1
    };
    let name = path[at + INFO.len()..].strip_suffix(".list")?;
    let name = name.split(':').next().unwrap_or(name);
    (!name.is_empty() && !name.contains('/')).then_some((&path[..at], name))
}

/// The paths a file list names, relative (without the leading `/`).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix('/'))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The installed packages in a status file: stanzas separated by blank lines; a stanza with a
/// `Status` field counts only when it says `installed` (status.d files have none).
pub fn parse_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut arch = String::new();
        let mut source = None;
        let mut installed = true;
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => name = Some(v.to_string()),
                "Version" => version = Some(v.to_string()),
                "Architecture" => arch = v.to_string(),
                // "Source: name (version)" when the source version differs.
                "Source" => source = v.split_whitespace().next().map(str::to_string),
                "Status" => installed = v.split_whitespace().last() == Some("installed"),
                _ => {}
            }
        }
        if let (Some(name), Some(version), true) = (name, version, installed) {
            if name.is_empty() || version.is_empty() {
                continue;
            }
            let source = source.filter(|s| *s != name);
            out.push(Package {
                name,
                version,
                arch,
                source,
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// How a layer is compressed, from its media type; `None` for one this scan does not read.
pub fn layer_codec(media_type: &str) -> Option<Codec> {
    let t = media_type.split(';').next().unwrap_or(media_type).trim();
    match t {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Codec::Tar),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Codec::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Codec::Zstd),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Tar,
    Gzip,
    Zstd,
}

/// Why a layer's packages are not listed; reported as a warning.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("not a readable tar stream: {0}")]
    Tar(std::io::Error),
    #[error("cannot start the decompressor: {0}")]
    Decoder(std::io::Error),
    #[error("it decodes to more than {} MiB; its packages are not listed", MAX_LAYER_DECODED >> 20)]
    TooLarge,
}

/// What a layer holds.
#[derive(Debug, Default)]
pub struct LayerScan {
    /// Union over its status files.
    pub debs: Vec<Package>,
    /// Go binaries by path in the layer.
    pub go: Vec<(String, super::gobuild::BuildInfo)>,
}

/// Bytes decoded at a time: the tar reader asks for 512-byte headers and 32 KiB pieces of the
/// members it skips; a buffer in front of the decoder lets the inflater fill large blocks
/// instead of stopping at every small read.
const DECODE_BUFFER: usize = 256 << 10;

/// The packages the status files in a layer's tar stream list, and its Go binaries.
///
/// Only the members that can matter are read: status files, and executables whose first four
/// bytes are an ELF header (searched for Go's build information). Everything else is skipped
/// by the tar reader, which still decodes it (a compressed stream has no random access) but
/// holds no copy of it and searches nothing.
pub fn scan_layer(stored: Box<dyn BufRead + '_>, codec: Codec) -> Result<LayerScan, LayerError> {
    let decoded: Box<dyn Read + '_> = match codec {
        Codec::Tar => Box::new(stored),
        // The stored stream comes buffered: the bufread decoder reads it in place rather than
        // through a second buffer of its own.
        // Past its header, a gzip member is a raw deflate stream: decoded as one, it skips
        // gzip's CRC-32 of the decoded bytes (4.5% of a cold build's CPU with the 2 GB scale
        // set), which the SHA-256 of the stored bytes already makes redundant.
        Codec::Gzip => {
            let mut stored = stored;
            skip_gzip_header(&mut stored).map_err(LayerError::Tar)?;
            Box::new(flate2::bufread::DeflateDecoder::new(stored))
        }
        Codec::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(stored).map_err(LayerError::Decoder)?)
        }
    };
    let mut counted = Counted {
        inner: std::io::BufReader::with_capacity(
            DECODE_BUFFER,
            decoded.take(MAX_LAYER_DECODED + 1),
        ),
        n: 0,
    };
    let mut found = Vec::new();
    let mut go = Vec::new();
    {
        let mut archive = tar::Archive::new(&mut counted);
        let entries = archive.entries().map_err(LayerError::Tar)?;
        for member in entries {
            let mut member = member.map_err(LayerError::Tar)?;
            let kind = member.header().entry_type();
            if !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
                continue;
            }
            let mode = member.header().mode().unwrap_or(0);
            if mode & 0o111 != 0 && member.size() >= 64 {
                if let Some(info) = go_in_stream(&mut member).map_err(LayerError::Tar)? {
                    let path = String::from_utf8_lossy(&member.path_bytes()).into_owned();
                    go.push((path.trim_start_matches("./").to_string(), info));
                }
                continue;
            }
            if member.size() > MAX_STATUS
                || !is_status_path(&String::from_utf8_lossy(&member.path_bytes()))
            {
                continue;
            }
            let mut text = Vec::new();
            (&mut member)
                .take(MAX_STATUS)
                .read_to_end(&mut text)
                .map_err(LayerError::Tar)?;
            found.extend(parse_status(&String::from_utf8_lossy(&text)));
        }
    }
    if counted.n > MAX_LAYER_DECODED {
        return Err(LayerError::TooLarge);
    }
    found.sort();
    found.dedup();
    go.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(LayerScan { debs: found, go })
}

/// Reads a gzip member's header (RFC 1952), leaving `r` at its deflate stream.
fn skip_gzip_header(r: &mut dyn BufRead) -> std::io::Result<()> {
    /// Longest file name or comment read: real ones are short.
    const MAX_TEXT: u64 = 64 << 10;
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut fixed = [0u8; 10];
    r.read_exact(&mut fixed)
        .map_err(|_| bad("too short for a gzip header"))?;
    if fixed[..3] != [0x1f, 0x8b, 8] {
        return Err(bad("not a gzip stream (or not deflate-compressed)"));
    }
    let flags = fixed[3];
    if flags & 0xe0 != 0 {
        return Err(bad("gzip header with reserved flags set"));
    }
    if flags & 0x04 != 0 {
        let mut len = [0u8; 2];
        r.read_exact(&mut len)?;
        let len = u64::from(u16::from_le_bytes(len));
        if std::io::copy(&mut r.take(len), &mut std::io::sink())? != len {
            return Err(bad("gzip header cut short in its extra field"));
        }
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            let mut text = Vec::new();
            r.take(MAX_TEXT).read_until(0, &mut text)?;
            if text.last() != Some(&0) {
                return Err(bad(
                    "gzip header with an unterminated or overlong name or comment",
                ));
            }
        }
    }
    if flags & 0x02 != 0 {
        r.read_exact(&mut [0u8; 2])?;
    }
    Ok(())
}

/// Reads an ELF member to its end, looking for Go's build information; `None` for anything
/// else (after reading four bytes: the tar reader skips the rest). The search runs over each
/// chunk as read, with only the few bytes that may start a magic cut by a chunk's end carried
/// over; once the magic is seen, at most the bytes the section parser reads are kept.
fn go_in_stream(r: &mut dyn Read) -> std::io::Result<Option<super::gobuild::BuildInfo>> {
    const CHUNK: usize = 256 << 10;
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    let mut head = [0u8; 4];
    if r.read_exact(&mut head).is_err() || &head != b"\x7fELF" {
        return Ok(None);
    }
    let finder = memchr::memmem::Finder::new(MAGIC);
    // `chunk[..carry]` holds the tail of the previous read that could start a magic.
    let mut chunk = vec![0u8; CHUNK];
    let mut carry = 0;
    let mut section: Option<Vec<u8>> = None;
    loop {
        let n = r.read(&mut chunk[carry..])?;
        if n == 0 {
            break;
        }
        let have = carry + n;
        match section.as_mut() {
            Some(s) => {
                let want = super::gobuild::MAX_SECTION as usize - s.len();
                s.extend_from_slice(&chunk[..have.min(want)]);
                carry = 0;
                if s.len() >= super::gobuild::MAX_SECTION as usize {
                    break;
                }
            }
            None => match finder.find(&chunk[..have]) {
                Some(at) => {
                    let end = have.min(at + super::gobuild::MAX_SECTION as usize);
                    section = Some(chunk[at..end].to_vec());
                    carry = 0;
                    if end - at >= super::gobuild::MAX_SECTION as usize {
                        break;
                    }
                }
                None => {
                    let keep = (MAGIC.len() - 1).min(have);
                    chunk.copy_within(have - keep..have, 0);
                    carry = keep;
                }
            },
        }
    }
    // The rest of the member is skipped by the tar reader.
    let Some(s) = section else { return Ok(None) };
    Ok(super::gobuild::parse_section(&s).ok())
}

/// Counts what passes, so a stream cut at the bound is told from one that ended.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\n\
Architecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n \
continuation: not a field\n\nPackage: gone\nStatus: deinstall ok config-files\n\
Version: 1.0\nArchitecture: amd64\n\nPackage: base-files\nVersion: 12.4+deb12u5\n\
Architecture: amd64\n";

    #[test]
    fn reads_installed_packages_only() {
        let p = parse_status(STATUS);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].name, "base-files");
        assert_eq!(p[1].source.as_deref(), Some("glibc"));
        assert_eq!(
            p[1].purl(),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"
        );
        let epoch = Package {
            name: "x".into(),
            version: "1:2.0".into(),
            arch: "all".into(),
            source: None,
        };
        assert_eq!(epoch.purl(), "pkg:deb/debian/x@1%3A2.0?arch=all");
    }

    #[test]
    fn status_paths() {
        assert!(is_status_path("var/lib/dpkg/status"));
        assert!(is_status_path("./var/lib/dpkg/status.d/tzdata"));
        assert!(!is_status_path("var/lib/dpkg/status.d/tzdata.md5sums"));
        assert!(!is_status_path("var/lib/dpkg/status-old"));
        assert!(!is_status_path("rootfs/var/lib/dpkg/status"));
        assert_eq!(status_root("rootfs/var/lib/dpkg/status"), Some("rootfs/"));
        assert_eq!(status_root("var/lib/dpkg/status.d/x"), Some(""));
        assert_eq!(status_root("myvar/lib/dpkg/status"), None);
        assert_eq!(
            list_of("rootfs/var/lib/dpkg/info/libc6:amd64.list"),
            Some(("rootfs/", "libc6"))
        );
        assert_eq!(list_of("var/lib/dpkg/info/bash.list"), Some(("", "bash")));
        assert_eq!(list_of("var/lib/dpkg/info/bash.md5sums"), None);
        assert_eq!(
            parse_list("/.\n/bin\n/bin/bash\n"),
            [".", "bin", "bin/bash"]
        );
    }

    fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (p, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(if p.starts_with("bin/") { 0o755 } else { 0o644 });
            h.set_cksum();
            b.append_data(&mut h, p, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn scans_plain_and_gzip_layers() {
        let tar = layer(&[
            ("etc/hostname", b"x\n"),
            (
                "var/lib/dpkg/status.d/base",
                b"Package: base\nVersion: 1\nArchitecture: all\n",
            ),
            ("var/lib/dpkg/status", STATUS.as_bytes()),
        ]);
        let p = scan_layer(Box::new(&tar[..]), Codec::Tar).unwrap().debs;
        assert_eq!(p.len(), 3);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(scan_layer(Box::new(&gz[..]), Codec::Gzip).unwrap().debs, p);
        assert!(scan_layer(Box::new(&b"not a tar at all, no"[..]), Codec::Gzip).is_err());
        // Every optional header field, as other gzip writers may set them.
        let mut gz = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("made by a test")
            .extra(vec![1, 2, 3, 4, 5])
            .mtime(1)
            .write(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(gz[3], 0x04 | 0x08 | 0x10, "the header fields under test");
        assert_eq!(scan_layer(Box::new(&gz[..]), Codec::Gzip).unwrap().debs, p);
        // The header CRC, which that writer does not set.
        let mut with_hcrc = gz.clone();
        with_hcrc[3] |= 0x02;
        // Fixed part, extra field with its length, name and comment with their NULs.
        let header_end = 10 + (2 + 5) + "layer.tar\0".len() + "made by a test\0".len();
        with_hcrc.splice(header_end..header_end, [0xab, 0xcd]);
        assert_eq!(
            scan_layer(Box::new(&with_hcrc[..]), Codec::Gzip)
                .unwrap()
                .debs,
            p
        );
        for broken in [
            &gz[..5],
            &gz[..14],
            &[0x1f, 0x8b, 8, 0x80, 0, 0, 0, 0, 0, 0][..],
        ] {
            assert!(scan_layer(Box::new(broken), Codec::Gzip).is_err());
        }
    }

    #[test]
    fn finds_go_binaries_in_a_layer_across_chunk_boundaries() {
        let text = "path\texample.com/cmd/srv\nmod\texample.com\tv1.0.0\t\n";
        let section = crate::sbom::gobuild::tests::section("go1.24.1", text);
        // The magic straddles the 1 MiB read boundary.
        let mut elf = b"\x7fELF".to_vec();
        elf.resize((1 << 20) + 4 - 5, 0);
        elf.extend_from_slice(&section);
        elf.resize(elf.len() + 5000, 0);
        // A large executable that is no ELF file is skipped unread, even with the magic in it.
        let mut not_elf = b"#!/bin/sh\n".to_vec();
        not_elf.resize(3 << 20, b'#');
        not_elf.extend_from_slice(&section);
        let tar = layer(&[
            ("bin/srv", &elf),
            (
                "bin/script",
                b"#!/bin/sh\nexec srv, and enough text to be read\n",
            ),
            ("bin/zz-big-script", &not_elf),
        ]);
        let scan = scan_layer(Box::new(&tar[..]), Codec::Tar).unwrap();
        assert_eq!(scan.go.len(), 1);
        assert_eq!(scan.go[0].0, "bin/srv");
        assert_eq!(scan.go[0].1.path.as_deref(), Some("example.com/cmd/srv"));
    }
}
