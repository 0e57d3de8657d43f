//! Packing a directory tree (a cluster image root file system) into a bundle.
//!
//! The walk is sorted by name at every level, so the same tree always yields the same bundle.
//! Only what a cluster image can carry is accepted: regular files, directories and symlinks
//! that stay inside the tree. Anything else is an error that names the path, because silently
//! dropping a file would ship an appliance that fails on site.

use bale_payload::{BundleWriter, Error as PayloadError};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    // The cause is part of the text and not a source, so a chain printer shows it once.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: {what} cannot go into a bundle (bundles carry regular files, directories and symlinks); remove it from the tree")]
    Special { path: PathBuf, what: &'static str },
    #[error("{path}: the name is not valid UTF-8; rename it")]
    NotUtf8 { path: PathBuf },
    #[error(
        "{path}: symlink to {target:?} {why}; make it relative and inside the tree, or remove it"
    )]
    UnsafeLink {
        path: PathBuf,
        target: String,
        why: String,
    },
    #[error(transparent)]
    Payload(#[from] PayloadError),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TreeStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Adds everything below `root` to the bundle, under `prefix` (empty for the bundle's root).
pub fn add_tree(
    writer: &mut BundleWriter,
    root: &Path,
    prefix: &str,
) -> Result<TreeStats, TreeError> {
    let mut stats = TreeStats::default();
    let meta = std::fs::metadata(root).map_err(|e| io(root, e))?;
    if !meta.is_dir() {
        return Err(io(
            root,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    walk(writer, root, prefix, &mut stats)?;
    Ok(stats)
}

/// Total content bytes below `root`, for progress bars.
pub fn tree_size(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// Names what a non-regular, non-directory, non-symlink file is, for error messages.
pub fn special_file_kind(ft: &std::fs::FileType) -> &'static str {
    if ft.is_block_device() {
        "a block device"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

fn io(path: &Path, source: std::io::Error) -> TreeError {
    TreeError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

fn walk(
    writer: &mut BundleWriter,
    dir: &Path,
    prefix: &str,
    stats: &mut TreeStats,
) -> Result<(), TreeError> {
    let mut children: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        let name = child
            .file_name()
            .into_string()
            .map_err(|_| TreeError::NotUtf8 { path: path.clone() })?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if rel == crate::sbom::SBOM_ENTRY {
            // A tree extracted from a bundle carries that bundle's SBOM; the build writes its
            // own, of what it packs now.
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        if ft.is_dir() {
            writer.add_dir(&rel, mode)?;
            stats.dirs += 1;
            walk(writer, &path, &rel, stats)?;
        } else if ft.is_file() {
            writer.add_file(&rel, mode, &path)?;
            stats.files += 1;
            stats.bytes += meta.len();
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| io(&path, e))?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| TreeError::NotUtf8 { path: path.clone() })?;
            writer.add_symlink(&rel, &target).map_err(|e| match e {
                PayloadError::UnsafePath { why, .. } => TreeError::UnsafeLink {
                    path: path.clone(),
                    target: target.clone(),
                    why,
                },
                other => TreeError::Payload(other),
            })?;
            stats.symlinks += 1;
        } else {
            let what = special_file_kind(&ft);
            return Err(TreeError::Special { path, what });
        }
    }
    Ok(())
}
