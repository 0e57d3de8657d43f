//! Blobs read in place from an OCI image layout of the build context.
//!
//! A layout's layers go into a bundle straight from the layout, with no copy in the image
//! cache: at 20 GB of images a copy costs as much disk and time again. The layout is input a
//! build does not control, so every open checks what it gets: the file must stay inside the
//! layout (a symlink leading out of it is refused), be a regular file (a FIFO or a device
//! would hang or never end), and have the size its descriptor gives (a truncated file is
//! caught before a byte is read). Content is checked against the digest by whoever reads it:
//! [`LayoutBlobs::read`] for the small documents at collect, the bundle writer for layers as it
//! streams them, which also catches a file that changed in between.

use super::error::{ImagesError, Result};
use super::oci::{self, Descriptor};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The blobs of one OCI layout directory.
#[derive(Debug, Clone)]
pub(crate) struct LayoutBlobs {
    dir: PathBuf,
    /// `dir` with every symlink resolved: what a blob's real path must stay under.
    real: PathBuf,
    /// The source as messages name it (`OCI layout images/app`).
    label: String,
}

impl LayoutBlobs {
    pub fn new(dir: &Path, label: &str) -> Result<LayoutBlobs> {
        let real = std::fs::canonicalize(dir).map_err(|e| ImagesError::io(dir, e))?;
        Ok(LayoutBlobs {
            dir: dir.to_path_buf(),
            real,
            label: label.to_string(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        let hex = oci::digest_hex("blob", digest)?;
        Ok(self.dir.join("blobs").join("sha256").join(hex))
    }

    /// Whether the layout has an entry for the blob, of whatever kind: one that is there but
    /// wrong is refused by [`open`](Self::open) rather than looked for elsewhere.
    pub fn has(&self, digest: &str) -> bool {
        self.path(digest)
            .is_ok_and(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// Opens the blob `d` for reading, after the checks the module describes.
    pub fn open(&self, d: &Descriptor) -> Result<File> {
        let what = self.what(d);
        let path = self.path(&d.digest)?;
        let real = std::fs::canonicalize(&path).map_err(|e| ImagesError::io(&path, e))?;
        if !real.starts_with(&self.real) {
            return Err(ImagesError::invalid(
                what,
                format!(
                    "{} leads out of the layout (to {}): refused",
                    path.display(),
                    real.display()
                ),
            ));
        }
        // The resolved path has no symlink left; O_NOFOLLOW keeps it so if one is swapped in
        // now, and O_NONBLOCK keeps a FIFO from hanging the open.
        let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(flags.bits())
            .open(&real)
            .map_err(|e| ImagesError::io(&real, e))?;
        let meta = f.metadata().map_err(|e| ImagesError::io(&real, e))?;
        if !meta.is_file() {
            return Err(ImagesError::invalid(
                what,
                format!("{} is not a regular file: refused", path.display()),
            ));
        }
        if meta.len() != d.size {
            return Err(ImagesError::invalid(
                what,
                format!(
                    "{} has {} bytes, but its descriptor says {}: the file is truncated or \
                     was replaced",
                    path.display(),
                    meta.len(),
                    d.size
                ),
            ));
        }
        Ok(f)
    }

    /// Reads a small blob (index, manifest, config) whole and checks it against its digest.
    /// The caller has checked `d.size` against its limit.
    pub fn read(&self, d: &Descriptor) -> Result<Vec<u8>> {
        let f = self.open(d)?;
        let mut data = Vec::with_capacity(d.size as usize);
        // One byte more than announced shows a file that grew after the open.
        f.take(d.size + 1)
            .read_to_end(&mut data)
            .map_err(|e| ImagesError::Read {
                what: self.what(d),
                message: e.to_string(),
            })?;
        if data.len() as u64 != d.size {
            return Err(ImagesError::invalid(
                self.what(d),
                format!(
                    "{} bytes read, but its descriptor says {}: the file changed while it was \
                     read",
                    data.len(),
                    d.size
                ),
            ));
        }
        let actual = oci::sha256_digest(&data);
        if actual != d.digest {
            return Err(ImagesError::Digest {
                what: self.what(d),
                expected: d.digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    fn what(&self, d: &Descriptor) -> String {
        format!("blob {} in {}", d.digest, self.label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_with(content: &[u8]) -> (tempfile::TempDir, LayoutBlobs, Descriptor) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("layout");
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        let digest = oci::sha256_digest(content);
        let hex = digest.trim_start_matches("sha256:").to_string();
        std::fs::write(dir.join("blobs/sha256").join(hex), content).expect("write");
        let blobs = LayoutBlobs::new(&dir, "OCI layout test").expect("layout");
        let d = Descriptor::new(oci::OCI_LAYER_GZIP, digest, content.len() as u64);
        (tmp, blobs, d)
    }

    #[test]
    fn a_whole_blob_reads_back() {
        let (_tmp, blobs, d) = layout_with(b"layer bytes");
        assert_eq!(blobs.read(&d).expect("read"), b"layer bytes");
    }

    #[test]
    fn a_replaced_blob_fails_its_digest() {
        let (_tmp, blobs, d) = layout_with(b"layer bytes");
        std::fs::write(blobs.path(&d.digest).expect("path"), b"LAYER BYTES").expect("write");
        let e = blobs.read(&d).expect_err("replaced");
        assert!(matches!(e, ImagesError::Digest { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&d.digest) && msg.contains("OCI layout test"),
            "{msg}"
        );
    }

    #[test]
    fn a_truncated_blob_is_refused_at_open() {
        let (_tmp, blobs, d) = layout_with(b"layer bytes");
        std::fs::write(blobs.path(&d.digest).expect("path"), b"layer").expect("write");
        let msg = blobs.open(&d).expect_err("truncated").to_string();
        assert!(
            msg.contains("truncated") && msg.contains(&d.digest),
            "{msg}"
        );
    }

    #[test]
    fn a_symlink_out_of_the_layout_is_refused() {
        let (tmp, blobs, d) = layout_with(b"layer bytes");
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"layer bytes").expect("write");
        let path = blobs.path(&d.digest).expect("path");
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&outside, &path).expect("symlink");
        let msg = blobs.open(&d).expect_err("escapes").to_string();
        assert!(msg.contains("leads out of the layout"), "{msg}");
        // A symlink that stays inside the layout is only a way of storing the file.
        let inside = blobs.dir.join("kept");
        std::fs::write(&inside, b"layer bytes").expect("write");
        std::fs::remove_file(&path).expect("rm");
        std::os::unix::fs::symlink(&inside, &path).expect("symlink");
        assert_eq!(blobs.read(&d).expect("inside"), b"layer bytes");
    }

    #[test]
    fn a_fifo_is_refused_without_hanging() {
        let (_tmp, blobs, d) = layout_with(b"layer bytes");
        let path = blobs.path(&d.digest).expect("path");
        std::fs::remove_file(&path).expect("rm");
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .expect("mkfifo");
        let msg = blobs.open(&d).expect_err("fifo").to_string();
        assert!(msg.contains("not a regular file"), "{msg}");
    }
}
