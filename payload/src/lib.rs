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
//! - [`platforms`] lets one bundle carry several architectures and each host see its own.
//! - [`sigblock`] reads the signature block (format 1.1) and writes a copy with another one.

pub mod chunks;
mod direct;
pub mod elf;
pub mod error;
pub mod extract;
pub mod format;
pub mod platforms;
pub mod reader;
pub mod sigblock;
pub mod verify;
pub mod writer;

pub use error::{Error, Result};
pub use format::{Codec, Entry, Frame, Header, Kind};
pub use reader::Bundle;
pub use writer::{Added, BundleMeta, BundleWriter, WriteOptions};

/// Workers to use when the caller has no opinion: every core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// `s` made safe to print on a terminal: control characters (a crafted bundle's way to fake
/// lines or move the cursor), line and paragraph separators and bidirectional overrides are
/// shown as escapes (`\n`, `\x1b`, `\u{202e}`), and a backslash as `\\`, so what is shown
/// reads back unambiguously. Everything else is left as it is.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_char(c: char) -> bool {
        c == '\\'
            || c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && unsafe_char(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Test data the unit tests of several modules share.
#[cfg(test)]
pub(crate) mod test_data {
    use std::os::unix::fs::FileExt;

    /// `len` bytes that do not compress (xorshift from `seed`).
    pub fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Flips the bits of `mask` in the byte at `at` of the file at `path`, in place.
    pub fn damage(path: &std::path::Path, at: u64, mask: u8) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, at).unwrap();
        f.write_all_at(&[byte[0] ^ mask], at).unwrap();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_escapes_what_could_fake_output() {
        assert_eq!(super::printable("bin/tool"), "bin/tool");
        assert_eq!(
            super::printable("a\nfake line\x1b[2J\u{202e}x\\y\u{85}"),
            "a\\nfake line\\x1b[2J\\u{202e}x\\\\y\\u{85}"
        );
    }
}
