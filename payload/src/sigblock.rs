//! The signature block of a format 1.1 bundle: reading it, and writing a copy of a bundle with
//! another block.
//!
//! The block lies between the header and the trailer and is not covered by the digest chain:
//! what it holds are signatures over the chain's root (the header's SHA-256), checked by the
//! trust layer. So adding or replacing it never touches the program, frames, table or header,
//! and a bundle keeps its identity (its root) whoever signs it.

use crate::error::{Error, Result};
use crate::format::{
    self, Sha256Digest, Trailer, FORMAT_MINOR, FORMAT_MINOR_SIGNED, MAX_SIG_LEN, TRAILER_LEN,
};
use crate::reader::Bundle;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

impl Bundle {
    /// The root of the digest chain: the SHA-256 of the header, which names the program's and
    /// the table's digests, which name every frame's. One signature over it covers every byte.
    pub fn root(&self) -> Sha256Digest {
        self.trailer.header_sha256
    }

    /// The raw signature block, `None` for an unsigned bundle. Bounded: the trailer was refused
    /// if it claimed more than [`MAX_SIG_LEN`].
    pub fn signature_block(&self) -> Result<Option<Vec<u8>>> {
        let len = self.trailer.sig_len;
        if len == 0 {
            return Ok(None);
        }
        if len > MAX_SIG_LEN {
            return Err(Error::Oversized {
                what: "signature block",
                claimed: len,
                limit: MAX_SIG_LEN,
            });
        }
        let mut buf = vec![0u8; len as usize];
        self.file()
            .read_exact_at(&mut buf, self.trailer.sig_offset())
            .map_err(|e| Error::io(self.path(), e))?;
        Ok(Some(buf))
    }
}

/// Writes a copy of `bundle` to `dest` (which may be the bundle's own path) with `block` as its
/// signature block: the bytes up to the end of the header unchanged, then the block, then a new
/// trailer. An empty block gives an unsigned 1.0 file. The copy is made under a temporary name
/// in `dest`'s directory, checked, flushed and renamed over `dest`, so `dest` is never a
/// partial file.
pub fn write_with_signature_block(bundle: &Bundle, block: &[u8], dest: &Path) -> Result<()> {
    if block.len() as u64 > MAX_SIG_LEN {
        return Err(Error::Oversized {
            what: "signature block",
            claimed: block.len() as u64,
            limit: MAX_SIG_LEN,
        });
    }
    let tmp = temp_name(dest);
    let result = write_copy(bundle, block, &tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, dest) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(dest, e));
    }
    crate::writer::sync_parent_dir(dest);
    Ok(())
}

fn temp_name(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle".into());
    dest.with_file_name(format!(".{name}.sign-{}.tmp", std::process::id()))
}

fn write_copy(bundle: &Bundle, block: &[u8], tmp: &Path) -> Result<()> {
    let t = &bundle.trailer;
    let keep = t.sig_offset();
    let src_err = |e| Error::io(bundle.path(), e);
    let tmp_err = |e| Error::io(tmp, e);
    let mode = bundle
        .file()
        .metadata()
        .map_err(src_err)?
        .permissions()
        .mode()
        & 0o7777;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(tmp_err)?;
    // A clone shares the file offset with the bundle's handle; nothing else reads through the
    // offset (the reader uses pread), so rewinding it here is harmless.
    let mut src: File = bundle.file().try_clone().map_err(src_err)?;
    src.seek(SeekFrom::Start(0)).map_err(src_err)?;
    let copied = std::io::copy(&mut (&mut src).take(keep), &mut out).map_err(tmp_err)?;
    if copied != keep {
        return Err(Error::Truncated {
            expected: t.file_len,
            actual: copied,
        });
    }
    let trailer = Trailer {
        sig_len: block.len() as u64,
        file_len: keep + block.len() as u64 + TRAILER_LEN as u64,
        minor: if block.is_empty() {
            FORMAT_MINOR
        } else {
            FORMAT_MINOR_SIGNED.max(t.minor)
        },
        ..t.clone()
    };
    out.write_all(block).map_err(tmp_err)?;
    out.write_all(&trailer.encode()).map_err(tmp_err)?;
    out.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(tmp_err)?;
    out.sync_all().map_err(tmp_err)?;
    drop(out);
    // The copy must be the same bundle: same root, header readable. The frames were copied
    // byte for byte and are checked by `verify` as ever.
    let copy = Bundle::open(tmp)?;
    if copy.root() != bundle.root() {
        return Err(Error::RegionDigest {
            region: "header (of the signed copy)",
            expected: format::hex(&bundle.root()),
            actual: format::hex(&copy.root()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BundleMeta, BundleWriter, WriteOptions};

    fn bundle(dir: &Path) -> PathBuf {
        let stub = std::env::current_exe().unwrap();
        let out = dir.join("app.bale");
        let meta = BundleMeta {
            name: "app".into(),
            version: "1".into(),
            ..Default::default()
        };
        let mut w = BundleWriter::create(&out, &stub, meta, WriteOptions::default()).unwrap();
        w.add_bytes("a.txt", 0o644, b"hello").unwrap();
        w.finish().unwrap();
        out
    }

    #[test]
    fn a_block_is_added_replaced_and_removed_without_touching_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = bundle(dir.path());
        let unsigned = std::fs::read(&path).unwrap();
        let b = Bundle::open(&path).unwrap();
        assert_eq!(b.signature_block().unwrap(), None);
        assert_eq!(b.trailer.minor, FORMAT_MINOR);
        let root = b.root();

        write_with_signature_block(&b, b"first block", &path).unwrap();
        let s = Bundle::open(&path).unwrap();
        assert_eq!(s.root(), root);
        assert_eq!(s.trailer.minor, FORMAT_MINOR_SIGNED);
        assert_eq!(
            s.signature_block().unwrap().as_deref(),
            Some(&b"first block"[..])
        );
        let signed = std::fs::read(&path).unwrap();
        let keep = s.trailer.sig_offset() as usize;
        assert_eq!(signed[..keep], unsigned[..keep]);
        crate::verify::verify(&s, 2, &|_| {}).unwrap();

        write_with_signature_block(&s, b"2nd", &path).unwrap();
        let s2 = Bundle::open(&path).unwrap();
        assert_eq!(s2.signature_block().unwrap().as_deref(), Some(&b"2nd"[..]));

        // An empty block gives back the unsigned file, byte for byte.
        write_with_signature_block(&s2, b"", &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), unsigned);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn blocks_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = bundle(dir.path());
        let b = Bundle::open(&path).unwrap();
        let big = vec![b' '; MAX_SIG_LEN as usize + 1];
        let err = write_with_signature_block(&b, &big, &path).unwrap_err();
        assert!(err.to_string().contains("signature block"), "{err}");
    }
}
