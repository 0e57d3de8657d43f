//! The payload's one error type: what is wrong with a bundle, or with writing or extracting it.
//!
//! Each message says only what this layer knows (the path, the entry, the region), once: an
//! I/O failure is shown with its path and the system's reason, and is not exposed again as a
//! source, so a printed chain never repeats it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can be wrong with a bundle or with its extraction. Messages name the part of
/// the file and say what a user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reason is part of this message (not a `source`): a chain printed by a caller shows it
    /// once.
    #[error("{}: {}", crate::printable(&path.to_string_lossy()), io_reason(cause))]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error(
        "no bale trailer at the end of the file: it is truncated, or it is not a bundle \
         (a plain bale program has no payload; build one with `bale build`)"
    )]
    NoTrailer,

    #[error(
        "the file has {extra} bytes appended after the bundle's trailer (the bundle itself ends \
         at byte {bundle_len}); remove them with `truncate -s {bundle_len} FILE` or copy the \
         bundle again"
    )]
    AppendedTail { bundle_len: u64, extra: u64 },

    #[error(
        "the bundle uses payload format {major}.{minor}; this bale reads format {supported}.x \
         only. Use a newer bale to open it{}",
        if *trailer_intact { "" } else { " (or the trailer is damaged: its checksum does not match)" }
    )]
    NewerFormat {
        major: u16,
        minor: u16,
        supported: u16,
        trailer_intact: bool,
    },

    #[error("the bundle trailer is damaged (its checksum does not match): copy the bundle again")]
    TrailerChecksum,

    #[error("the bundle's trailer does not describe this file ({0}): the file is damaged")]
    BadGeometry(String),

    #[error(
        "the bundle is truncated: the trailer says {expected} bytes, the file has {actual}; \
         copy it again"
    )]
    Truncated { expected: u64, actual: u64 },

    #[error(
        "the {what} claims {claimed} bytes, more than the limit of {limit}: the bundle is \
         damaged or hostile"
    )]
    Oversized {
        what: &'static str,
        claimed: u64,
        limit: u64,
    },

    #[error("the bundle {region} does not match its SHA-256 (expected {expected}, got {actual}): the file is damaged; copy it again")]
    RegionDigest {
        region: &'static str,
        expected: String,
        actual: String,
    },

    #[error("bad bundle header: {0}")]
    BadHeader(String),

    #[error("bad entry table at entry {entry}: {why}")]
    BadTable { entry: usize, why: String },

    #[error("unsafe entry {path:?}: {why}; refusing to extract")]
    UnsafePath { path: String, why: String },

    #[error(
        "entry {path:?} is damaged: frame {frame} at payload offset {offset} {why}; copy the \
         bundle again"
    )]
    BadFrame {
        path: String,
        frame: usize,
        offset: u64,
        why: String,
    },

    #[error(
        "entry {path:?} is damaged: its content does not match the entry's SHA-256 (expected \
         {expected}, got {actual}); copy the bundle again"
    )]
    ContentDigest {
        path: String,
        expected: String,
        actual: String,
    },

    #[error("no entry named {0:?} in the bundle (see `list`)")]
    NoSuchEntry(String),

    #[error(
        "not enough space in {dir}: extraction needs {needed} bytes ({needed_h}), {available} \
         are free ({available_h}); free some space or extract elsewhere with --to"
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        needed_h: String,
        available: u64,
        available_h: String,
    },

    #[error("{}: {why}", crate::printable(&path.to_string_lossy()))]
    Refused { path: PathBuf, why: String },

    #[error("{0}")]
    Input(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }

    /// True when the error means the bundle's bytes are wrong (as opposed to I/O or usage).
    pub fn is_corruption(&self) -> bool {
        !matches!(
            self,
            Error::Io { .. }
                | Error::NoSpace { .. }
                | Error::Refused { .. }
                | Error::Input(_)
                | Error::NoSuchEntry(_)
        )
    }
}

/// The system's reason for an I/O failure, once: `No such file or directory (os error 2)`.
/// An error that wraps another (from a reader that can only return `io::Error`) shows the
/// inner message only.
fn io_reason(e: &std::io::Error) -> String {
    match e.get_ref() {
        Some(inner) => inner.to_string(),
        None => e.to_string(),
    }
}

/// The failure that comes first in file order among parallel workers, so a report names the
/// same entry however the threads were scheduled.
#[derive(Default)]
pub(crate) struct FirstError(std::sync::Mutex<Option<(usize, Error)>>);

impl FirstError {
    /// Keeps `e` if nothing earlier than position `at` has failed.
    pub(crate) fn record(&self, at: usize, e: Error) {
        if let Ok(mut g) = self.0.lock() {
            if g.as_ref().is_none_or(|(j, _)| at < *j) {
                *g = Some((at, e));
            }
        }
    }

    pub(crate) fn into_result(self) -> Result<()> {
        match self.0.into_inner().ok().flatten() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}

/// Formats a byte count for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
