//! Fuzzes the payload reader: arbitrary bytes through open, list (the entry table), verify,
//! verify of the content and the chunk list, from a memory file.
//!
//! The first byte picks the form of the rest:
//! - even: the bytes are a whole bundle file (trailer, header and their limits);
//! - odd: u16 stub length, u16 payload length, u32 declared entry count, then the stub, the
//!   payload and a decoded table. The target compresses the table and computes every digest
//!   and the header and trailer, so the input reaches the table decoder and what follows it
//!   (the digest chain would stop anything mutated at random at the trailer).

#![no_main]

use bale_payload::format::{self, Header, Region, TableInfo, Trailer, TRAILER_LEN};
use bale_payload::{chunks, printable, verify, Bundle};
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let bytes = if form % 2 == 0 {
        rest.to_vec()
    } else {
        match assemble(rest) {
            Some(b) => b,
            None => return,
        }
    };
    exercise(&bytes);
});

fn assemble(rest: &[u8]) -> Option<Vec<u8>> {
    let stub_len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let payload_len = u16::from_le_bytes([*rest.get(2)?, *rest.get(3)?]) as usize;
    let declared = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?);
    let body = rest.get(8..)?;
    let stub = body.get(..stub_len)?;
    let payload = body.get(stub_len..stub_len + payload_len)?;
    let raw = body.get(stub_len + payload_len..)?;
    let table = zstd::bulk::compress(raw, 1).ok()?;
    let header = Header {
        format: "bale-payload/1".into(),
        name: "fuzz".into(),
        version: "0".into(),
        arch: "x86_64".into(),
        stub: Region {
            len: stub.len() as u64,
            sha256: format::hex(&format::sha256(stub)),
        },
        table: TableInfo {
            len: table.len() as u64,
            raw_len: raw.len() as u64,
            sha256: format::hex(&format::sha256(&table)),
            entries: u64::from(declared),
        },
        ..Default::default()
    };
    let hj = serde_json::to_vec(&header).ok()?;
    let table_offset = (stub.len() + payload.len()) as u64;
    let header_offset = table_offset + table.len() as u64;
    let trailer = Trailer {
        stub_len: stub.len() as u64,
        payload_len: payload.len() as u64,
        table_offset,
        table_len: table.len() as u64,
        header_offset,
        header_len: hj.len() as u64,
        header_sha256: format::sha256(&hj),
        file_len: header_offset + hj.len() as u64 + TRAILER_LEN as u64,
        sig_len: 0,
        major: format::FORMAT_MAJOR,
        minor: format::FORMAT_MINOR,
    };
    let mut out = Vec::with_capacity(trailer.file_len as usize);
    out.extend_from_slice(stub);
    out.extend_from_slice(payload);
    out.extend_from_slice(&table);
    out.extend_from_slice(&hj);
    out.extend_from_slice(&trailer.encode());
    Some(out)
}

fn exercise(bytes: &[u8]) {
    let Ok(fd) =
        nix::sys::memfd::memfd_create(c"bale-fuzz", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
    else {
        return;
    };
    let mut file = std::fs::File::from(fd);
    if file.write_all(bytes).is_err() {
        return;
    }
    let Ok(bundle) = Bundle::from_file(file, "fuzz.bale") else {
        return;
    };
    let _ = printable(&bundle.header.name);
    let Ok(entries) = bundle.entries() else {
        return;
    };
    for e in &entries {
        let _ = printable(&e.path);
        let _ = printable(&e.target);
    }
    let _ = verify::verify(&bundle, 2, &|_| {});
    let _ = verify::verify_content(&bundle, 2, &|_| {});
    let _ = chunks::ChunkList::of_bundle(&bundle);
}
