//! Trusted keys baked into the program: a fixed slot in the executable's read-only data that
//! `bale build --trust PUB` fills in the copy of the program it puts in front of a payload.
//!
//! The program part of a bundle is covered by `stub.sha256` in the header, so keys baked there
//! are covered by the bundle's signature too: a payload re-signed by another key cannot keep a
//! program that trusts the original publisher without failing that publisher's check.
//!
//! Layout: a 32-byte marker, a u32 (little-endian) length, then that many bytes of public key
//! lines, then zeros. The slot is read through [`std::hint::black_box`], so the compiler cannot
//! fold the (empty) contents it was built with into the code that reads it.

use crate::error::{Error, Result};
use std::path::Path;

/// Size of the slot: room for about 150 key lines.
pub const SLOT_LEN: usize = 16 << 10;
const MARKER_LEN: usize = 32;
const HEAD_LEN: usize = MARKER_LEN + 4;

const fn empty_slot() -> [u8; SLOT_LEN] {
    let marker = *b"\xb4bale/trusted-keys-slot/v1\x7f\x13\xc5\x5e\xa1\x42";
    let mut s = [0u8; SLOT_LEN];
    let mut i = 0;
    while i < MARKER_LEN {
        s[i] = marker[i];
        i += 1;
    }
    s
}

/// The slot itself. `#[used]` keeps it in the program even under LTO; nothing else in the
/// program holds the marker, so it occurs exactly once in a bale executable.
#[used]
static SLOT: [u8; SLOT_LEN] = empty_slot();

fn slot() -> &'static [u8; SLOT_LEN] {
    std::hint::black_box(&SLOT)
}

/// The key lines baked into this program (empty when none were).
pub fn baked_keys() -> String {
    let s = slot();
    let len = u32::from_le_bytes([s[32], s[33], s[34], s[35]]) as usize;
    let body = &s[HEAD_LEN..];
    // A slot patched by something other than bale could claim more than it holds.
    let len = len.min(body.len());
    String::from_utf8_lossy(&body[..len]).into_owned()
}

/// Writes to `dest` the program part of `src` (a bale program, or a bundle whose program is
/// used) with `lines` in its key slot. The slot must occur exactly once in the program.
pub fn bake(src: &Path, dest: &Path, lines: &str) -> Result<()> {
    let prog_len = match bale_payload::Bundle::open(src) {
        Ok(b) => Some(b.trailer.stub_len),
        Err(bale_payload::Error::NoTrailer) => None,
        Err(e) => return Err(e.into()),
    };
    let mut data = std::fs::read(src).map_err(|e| Error::io(src, e))?;
    if let Some(n) = prog_len {
        data.truncate(n as usize);
    }
    let at = find_slot(&data).map_err(|fault| Error::Slot {
        path: src.into(),
        why: fault.to_string(),
    })?;
    let body = lines.as_bytes();
    if body.len() > SLOT_LEN - HEAD_LEN {
        return Err(Error::Slot {
            path: src.into(),
            why: format!(
                "{} bytes of keys do not fit the {}-byte slot",
                body.len(),
                SLOT_LEN - HEAD_LEN
            ),
        });
    }
    let slot = &mut data[at..at + SLOT_LEN];
    slot[MARKER_LEN..HEAD_LEN].copy_from_slice(&(body.len() as u32).to_le_bytes());
    slot[HEAD_LEN..HEAD_LEN + body.len()].copy_from_slice(body);
    slot[HEAD_LEN + body.len()..].fill(0);
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(dest)
        .map_err(|e| Error::io(dest, e))?;
    f.write_all(&data).map_err(|e| Error::io(dest, e))?;
    f.sync_all().map_err(|e| Error::io(dest, e))?;
    Ok(())
}

/// Why a program's trusted-keys slot cannot be found.
#[derive(Debug, thiserror::Error)]
enum SlotFault {
    #[error("no trusted-keys slot in this program")]
    Missing,
    #[error("the trusted-keys slot marker occurs {0} times")]
    Repeated(usize),
}

/// Where the slot starts in `program`, if its marker occurs exactly once.
fn find_slot(program: &[u8]) -> std::result::Result<usize, SlotFault> {
    let s = slot();
    let marker = &s[..MARKER_LEN];
    let mut found = None;
    let mut count = 0;
    let mut i = 0;
    while let Some(p) = program[i..].iter().position(|b| *b == marker[0]) {
        let at = i + p;
        if program.len() - at < SLOT_LEN {
            break;
        }
        if &program[at..at + MARKER_LEN] == marker {
            count += 1;
            found.get_or_insert(at);
        }
        i = at + 1;
    }
    match (count, found) {
        (1, Some(at)) => Ok(at),
        (0, _) => Err(SlotFault::Missing),
        (n, _) => Err(SlotFault::Repeated(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_program_has_one_slot_and_it_can_be_filled() {
        let d = tempfile::tempdir().unwrap();
        let exe = std::env::current_exe().unwrap();
        let out = d.path().join("patched");
        bake(&exe, &out, "ssh-ed25519 AAAA x\n").unwrap();
        let data = std::fs::read(&out).unwrap();
        let at = find_slot(&data).unwrap();
        assert_eq!(&data[at + 32..at + 36], &19u32.to_le_bytes());
        assert_eq!(&data[at + 36..at + 55], b"ssh-ed25519 AAAA x\n");
        // Patching again replaces what was there.
        let again = d.path().join("again");
        bake(&out, &again, "").unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&exe).unwrap());
        // This program was built with an empty slot.
        assert_eq!(baked_keys(), "");
        let err = bake(&exe, &out, &"x".repeat(SLOT_LEN)).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
        let plain = d.path().join("plain");
        std::fs::write(&plain, vec![0u8; 100]).unwrap();
        let err = bake(&plain, &out, "").unwrap_err();
        assert!(err.to_string().contains("no trusted-keys slot"), "{err}");
    }
}
