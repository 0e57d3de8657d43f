//! Local tar archives that a Kubefile `ADD` unpacks, as Docker does: a file that is a tar
//! archive, plain or compressed with gzip or zstd (read in-process) or xz or bzip2 (read through
//! the build host's `xz`/`bzip2` programs: no pure-Rust decoder for them is among this build's
//! dependencies), is unpacked into the destination. Whether a file is an archive is decided by
//! its content, not its name: the (decompressed) start must be a tar header with a valid
//! checksum. Anything else, a lone `.gz` file included, is copied as it is.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

/// How an archive's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl Compression {
    fn from_magic(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else {
            Compression::Plain
        }
    }

    /// The host program that decodes it, for the formats read out of process.
    fn program(self) -> Option<&'static str> {
        match self {
            Compression::Xz => Some("xz"),
            Compression::Bzip2 => Some("bzip2"),
            _ => None,
        }
    }
}

/// Size of a tar header block.
const BLOCK: usize = 512;

/// Whether `block` is a tar header: its checksum field matches the sum of its bytes with that
/// field counted as spaces (POSIX ustar, GNU and old v7 headers alike).
pub fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < BLOCK || block[..BLOCK].iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let digits: String = field
        .iter()
        .map(|b| *b as char)
        .take_while(|c| *c != '\0')
        .collect();
    let Ok(stored) = u32::from_str_radix(digits.trim(), 8) else {
        return false;
    };
    let sum: u32 = block[..BLOCK]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    sum == stored
}

/// `Some(compression)` when `path` holds a tar archive; `None` for any other file. Fails only
/// when the file cannot be read, or when it is xz/bzip2-compressed and the host lacks the
/// program to look inside.
pub fn sniff(path: &Path) -> io::Result<Option<Compression>> {
    let mut head = [0u8; 8];
    let n = read_up_to(&mut File::open(path)?, &mut head)?;
    let compression = Compression::from_magic(&head[..n]);
    let mut reader = match open(path, compression) {
        Ok(r) => r,
        // A file that only looks compressed is not an archive.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut block = [0u8; BLOCK];
    let got = match read_up_to(&mut reader, &mut block) {
        Ok(n) => n,
        Err(e) if compression.program().is_none() || e.kind() == io::ErrorKind::InvalidData => {
            // Corrupt or not really compressed: copied as it is, like Docker does.
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok((got == BLOCK && is_tar_header(&block)).then_some(compression))
}

/// The decompressed bytes of `path`.
pub fn open(path: &Path, compression: Compression) -> io::Result<Box<dyn Read>> {
    let file = File::open(path)?;
    Ok(match compression {
        Compression::Plain => Box::new(io::BufReader::new(file)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        Compression::Xz | Compression::Bzip2 => {
            let program = compression.program().unwrap_or("xz");
            let mut child = Command::new(program)
                .arg("-dc")
                .stdin(file)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "it is {program}-compressed and {program} cannot run on the build \
                             host ({e}); install it (apt-get install {}) or unpack the archive \
                             beforehand",
                            if program == "xz" { "xz-utils" } else { "bzip2" }
                        ),
                    )
                })?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other(format!("{program}: no output pipe")))?;
            Box::new(ChildReader {
                child,
                stdout,
                program,
            })
        }
    })
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A decoder program's output; its exit status is checked at the end of the stream so that a
/// damaged archive fails instead of ending early.
struct ChildReader {
    child: Child,
    stdout: ChildStdout,
    program: &'static str,
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.wait()?;
            if !status.success() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} -dc failed ({status}): the archive is damaged",
                        self.program
                    ),
                ));
            }
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        // Stopped early (only the first block was wanted): do not leave the decoder behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).expect("path");
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn tar_header_checksum_decides() {
        let mut h = header("a.txt", 3);
        assert!(is_tar_header(&h));
        h[0] ^= 1;
        assert!(!is_tar_header(&h));
        assert!(!is_tar_header(&[0u8; 512]));
        assert!(!is_tar_header(b"short"));
    }

    #[test]
    fn sniff_by_content_not_name() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut archive = header("a.txt", 3);
        archive.extend_from_slice(b"abc");
        archive.resize(2048, 0);
        let plain = d.path().join("file.bin");
        std::fs::write(&plain, &archive).expect("write");
        assert_eq!(sniff(&plain).expect("sniff"), Some(Compression::Plain));
        let zst = d.path().join("x.tar.zst");
        std::fs::write(&zst, zstd::encode_all(&archive[..], 3).expect("zstd")).expect("write");
        assert_eq!(sniff(&zst).expect("sniff"), Some(Compression::Zstd));
        // gzip of something that is not a tar, and a name that lies: copied as they are.
        let gz = d.path().join("notes.tar.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &[b'x'; 4096]).expect("gzip");
        std::fs::write(&gz, enc.finish().expect("gzip")).expect("write");
        assert_eq!(sniff(&gz).expect("sniff"), None);
        let fake = d.path().join("fake.tgz");
        std::fs::write(&fake, [0x1f, 0x8b, 1, 2, 3]).expect("write");
        assert_eq!(sniff(&fake).expect("sniff"), None);
    }
}
