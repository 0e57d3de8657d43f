//! The bale bundle file format.
//!
//! A bundle is the `bale` program followed by a payload: independently compressed frames of
//! content, a zstd-compressed entry table, a small JSON header and a fixed-size trailer at the
//! very end. The trailer authenticates the header, the header the program and the table, and
//! the table every frame, so one SHA-256 chain covers every byte of the file. See `FORMAT.md`.
//!
//! - [`writer`] builds bundles with bounded memory and deterministic output.
//! - [`reader`] opens them, reading only the trailer and header until asked for more.
//! - [`verify`] checks every byte on every core without decompressing.
//! - [`extract`] writes entries to disk without ever leaving an unverified file in place.

pub mod chunks;
pub mod elf;
pub mod error;
pub mod extract;
pub mod format;
pub mod reader;
pub mod verify;
pub mod writer;

pub use error::{Error, Result};
pub use format::{Codec, Entry, Frame, Header, Kind};
pub use reader::Bundle;
pub use writer::{BundleMeta, BundleWriter, WriteOptions};

/// Workers to use when the caller has no opinion: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
