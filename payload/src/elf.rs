//! Just enough ELF to tell which machine a bale program is for.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

/// The Rust name of the architecture (`x86_64`, `aarch64`) of the ELF program at `path`.
pub fn arch_of(path: &Path) -> Result<String> {
    let mut head = [0u8; 20];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.read_exact(&mut head).map_err(|_| not_a_program(path))?;
    arch_of_header(&head).ok_or_else(|| not_a_program(path))
}

pub fn arch_of_header(head: &[u8]) -> Option<String> {
    if head.len() < 20 || &head[0..4] != b"\x7fELF" {
        return None;
    }
    // e_machine follows the 16-byte ident and e_type; its byte order is given by EI_DATA.
    let m = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => return None,
    };
    Some(match m {
        EM_X86_64 => "x86_64".into(),
        EM_AARCH64 => "aarch64".into(),
        other => format!("elf-machine-{other}"),
    })
}

fn not_a_program(path: &Path) -> Error {
    Error::Input(format!(
        "{}: not an ELF program; --stub takes a bale binary built for the target architecture",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(arch_of(&exe).unwrap(), std::env::consts::ARCH);
    }

    #[test]
    fn refuses_non_elf() {
        assert!(arch_of_header(b"#!/bin/sh\necho hi\n\0\0\0").is_none());
    }
}
