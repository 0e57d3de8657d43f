//! Writing a bundle's entries to a directory, safely.
//!
//! Rules, in the order they apply:
//! - The entry table has already refused `..`, absolute paths, escaping symlinks, entries below
//!   a bundled symlink and special files.
//! - Free space is checked before the first byte is written.
//! - Every directory on the way is created or checked to be a real directory (never a symlink)
//!   before anything is written below it, so a link planted in the target cannot redirect a
//!   write outside it.
//! - Every file is written under a temporary name, its frames checked against their digests as
//!   they are read, and renamed into place only when all of it is verified. An interrupted or
//!   failed extraction never leaves a file that looks complete.
//! - Symlinks are made last, so nothing is written through one.
//! - With `sync`, the file system is flushed before success is reported.
//! - Work is spread over every core by file, and by frame for large files.

use crate::error::{human_bytes, Error, FirstError, Result};
use crate::format::{Entry, Kind};
use crate::reader::{new_decompressor, Bundle};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    pub threads: usize,
    /// Entries to extract: exact paths or directory prefixes. Empty means everything.
    pub paths: Vec<String>,
    /// Skip the free-space check (for file systems that misreport it).
    pub skip_space_check: bool,
    /// Flush the file system before returning, so the files survive a power loss too (the
    /// installer asks for this; a plain extract, like tar, leaves it to the kernel).
    pub sync: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ExtractReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Selects entries by the user's paths; each path must name something.
pub fn select<'a>(entries: &'a [Entry], paths: &[String]) -> Result<Vec<&'a Entry>> {
    if paths.is_empty() {
        return Ok(entries.iter().collect());
    }
    let wanted: Vec<String> = paths
        .iter()
        .map(|p| p.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    let mut hit = vec![false; wanted.len()];
    let out: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            let mut any = false;
            for (i, w) in wanted.iter().enumerate() {
                if e.path == *w
                    || (e.path.len() > w.len()
                        && e.path.starts_with(w.as_str())
                        && e.path.as_bytes()[w.len()] == b'/')
                {
                    hit[i] = true;
                    any = true;
                }
            }
            any
        })
        .collect();
    if let Some(i) = hit.iter().position(|h| !h) {
        return Err(Error::NoSuchEntry(paths[i].clone()));
    }
    Ok(out)
}

enum Unit<'a> {
    Whole(&'a Entry),
    Part {
        entry: &'a Entry,
        frame: usize,
        at: u64,
        slot: Arc<BigFile>,
    },
}

/// A file extracted frame by frame by several workers.
struct BigFile {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    mode: u32,
    left: AtomicUsize,
    failed: AtomicBool,
}

pub fn extract(
    bundle: &Bundle,
    entries: &[Entry],
    to: &Path,
    opts: &ExtractOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<ExtractReport> {
    let selected = select(entries, &opts.paths)?;
    // A bundle whose program is damaged is not trusted to have written anything else right.
    bundle.check_stub()?;
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
    if !opts.skip_space_check {
        check_space(to, &selected)?;
    }
    let mut report = ExtractReport {
        dirs: make_dirs(to, &selected)?,
        ..Default::default()
    };

    let mut units = Vec::new();
    for e in selected
        .iter()
        .filter(|e| matches!(e.kind, Kind::File | Kind::Blob))
    {
        if e.frames.len() <= 1 {
            units.push(Unit::Whole(e));
            continue;
        }
        let dest = to.join(&e.path);
        let (file, tmp) = create_temp(&dest)?;
        file.set_len(e.size).map_err(|err| Error::io(&tmp, err))?;
        let slot = Arc::new(BigFile {
            file,
            tmp,
            dest,
            mode: file_mode(e.mode),
            left: AtomicUsize::new(e.frames.len()),
            failed: AtomicBool::new(false),
        });
        let mut at = 0u64;
        for (i, f) in e.frames.iter().enumerate() {
            units.push(Unit::Part {
                entry: e,
                frame: i,
                at,
                slot: Arc::clone(&slot),
            });
            at += f.raw_len;
        }
    }

    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error = FirstError::default();
    std::thread::scope(|s| {
        for _ in 0..opts.threads.max(1) {
            s.spawn(|| {
                let mut dctx = match new_decompressor() {
                    Ok(d) => d,
                    Err(e) => {
                        first_error.record(0, e);
                        stop.store(true, Ordering::Relaxed);
                        return;
                    }
                };
                let mut stored = Vec::new();
                let mut out = Vec::new();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(u) = units.get(i) else { return };
                    let r = match u {
                        Unit::Whole(e) => {
                            extract_whole(bundle, e, to, &mut dctx, &mut stored, &mut out)
                        }
                        Unit::Part {
                            entry,
                            frame,
                            at,
                            slot,
                        } => extract_part(
                            bundle,
                            entry,
                            *frame,
                            *at,
                            slot,
                            &mut dctx,
                            &mut stored,
                            &mut out,
                        ),
                    };
                    match r {
                        Ok(n) => progress(n),
                        Err(e) => {
                            first_error.record(i, e);
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    // Whatever did not complete leaves no trace behind.
    for u in &units {
        if let Unit::Part { slot, .. } = u {
            if slot.left.load(Ordering::Relaxed) != 0 {
                let _ = std::fs::remove_file(&slot.tmp);
            }
        }
    }
    first_error.into_result()?;
    for e in &selected {
        match e.kind {
            Kind::File | Kind::Blob => {
                report.files += 1;
                report.bytes += e.size;
            }
            Kind::Symlink => {
                make_symlink(to, e)?;
                report.symlinks += 1;
            }
            Kind::Dir => {}
        }
    }
    // Directory modes last and deepest first: a read-only directory must not block its own
    // contents from being written.
    for e in selected.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let p = to.join(&e.path);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(file_mode(e.mode)))
            .map_err(|err| Error::io(&p, err))?;
    }
    if opts.sync {
        sync_fs(to);
    }
    Ok(report)
}

/// Setuid and setgid bits are kept only for root, as tar does.
fn file_mode(mode: u32) -> u32 {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        mode & 0o7777
    } else {
        mode & 0o1777
    }
}

fn extract_whole(
    bundle: &Bundle,
    e: &Entry,
    to: &Path,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    stored: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<u64> {
    if e.frames.is_empty() {
        out.clear();
    } else {
        bundle.read_frame(e, 0, dctx, stored, out)?;
    }
    let dest = to.join(&e.path);
    let (mut file, tmp) = create_temp(&dest)?;
    let r = file
        .write_all(out)
        .and_then(|_| file.set_permissions(std::fs::Permissions::from_mode(file_mode(e.mode))))
        .and_then(|_| std::fs::rename(&tmp, &dest));
    if let Err(err) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&dest, err));
    }
    Ok(e.size)
}

#[allow(clippy::too_many_arguments)]
fn extract_part(
    bundle: &Bundle,
    e: &Entry,
    index: usize,
    at: u64,
    slot: &BigFile,
    dctx: &mut zstd::bulk::Decompressor<'static>,
    stored: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<u64> {
    if slot.failed.load(Ordering::Relaxed) {
        return Ok(0);
    }
    let r = (|| {
        bundle.read_frame(e, index, dctx, stored, out)?;
        slot.file
            .write_all_at(out, at)
            .map_err(|err| Error::io(&slot.tmp, err))?;
        Ok(out.len() as u64)
    })();
    let n = match r {
        Ok(n) => n,
        Err(err) => {
            slot.failed.store(true, Ordering::Relaxed);
            return Err(err);
        }
    };
    if slot.left.fetch_sub(1, Ordering::AcqRel) == 1 && !slot.failed.load(Ordering::Relaxed) {
        slot.file
            .set_permissions(std::fs::Permissions::from_mode(slot.mode))
            .and_then(|_| std::fs::rename(&slot.tmp, &slot.dest))
            .map_err(|err| Error::io(&slot.dest, err))?;
    }
    Ok(n)
}

/// Opens a fresh temporary file beside `dest`. `O_EXCL` never follows a symlink, so a link
/// planted under the temporary name cannot redirect the write; a stale leftover is replaced.
fn create_temp(dest: &Path) -> Result<(File, PathBuf)> {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{name}.bale-part"));
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
    };
    let file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).map_err(|err| Error::io(&tmp, err))?;
            open().map_err(|err| Error::io(&tmp, err))?
        }
        Err(e) => return Err(Error::io(&tmp, e)),
    };
    Ok((file, tmp))
}

fn make_symlink(to: &Path, e: &Entry) -> Result<()> {
    let dest = to.join(&e.path);
    match std::fs::symlink_metadata(&dest) {
        Ok(m) if m.is_dir() => {
            return Err(Error::Refused {
                path: dest,
                why: "is a directory; the bundle wants a symlink here".into(),
            })
        }
        Ok(m)
            if m.file_type().is_symlink()
                && std::fs::read_link(&dest).is_ok_and(|t| t == Path::new(&e.target)) =>
        {
            return Ok(());
        }
        _ => {}
    }
    let tmp = dest.with_file_name(format!(
        ".{}.bale-link",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&e.target, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &dest))
        .map_err(|err| Error::io(&dest, err))
}

/// Creates every directory the selection needs, parents first, and refuses to go through
/// anything on disk that is not a real directory.
fn make_dirs(to: &Path, selected: &[&Entry]) -> Result<u64> {
    let mut dirs: BTreeSet<&str> = BTreeSet::new();
    for e in selected {
        let mut p = e.path.as_str();
        if e.kind == Kind::Dir {
            dirs.insert(p);
        }
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            dirs.insert(p);
        }
    }
    // Lexical order puts every directory after its parent.
    let mut made = 0;
    for d in &dirs {
        let p = to.join(d);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let what = if m.file_type().is_symlink() {
                    "a symlink"
                } else {
                    "not a directory"
                };
                return Err(Error::Refused {
                    path: p,
                    why: format!(
                        "is {what} on disk; refusing to write through it (remove it, or \
                         extract into an empty directory)"
                    ),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&p).map_err(|err| Error::io(&p, err))?;
            }
            Err(e) => return Err(Error::io(&p, e)),
        }
        made += 1;
    }
    Ok(made)
}

fn check_space(to: &Path, selected: &[&Entry]) -> Result<()> {
    // Content plus a block per entry for metadata and partial last blocks.
    let needed: u64 = selected.iter().map(|e| e.size + 4096).sum();
    let available = free_bytes(to)?;
    if needed > available {
        return Err(Error::NoSpace {
            dir: to.to_path_buf(),
            needed,
            needed_h: human_bytes(needed),
            available,
            available_h: human_bytes(available),
        });
    }
    Ok(())
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| Error::Input(format!("{}: path has a NUL byte", dir.display())))?;
    // SAFETY: statvfs is plain old data; the path is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// One flush for the whole tree instead of one per file; failure only weakens durability.
fn sync_fs(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is valid for the duration of the call.
        unsafe { libc::syncfs(d.as_raw_fd()) };
    }
}
