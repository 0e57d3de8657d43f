//! Bundles of several platforms: one payload that installs on x86_64 and on aarch64 hosts.
//!
//! Such a bundle starts with one architecture's program, like any other, and carries every
//! platform's program (that one too) as an entry under [`PROGRAMS_DIR`]. Its header lists every program's length and
//! SHA-256 (`programs`), so the same header, table and frames can follow any of them: the file
//! an aarch64 host runs is the aarch64 program, then the bytes after the program unchanged,
//! then a trailer with the offsets moved ([`write_variant`]). The header digest, so the bundle's
//! identity and every signature over it, is the same in every variant.
//!
//! The entries of one platform live under `platforms/<arch>/`; image blobs, which are named by
//! their digest and so mean the same on every platform, live once at their usual place. A
//! reader sees one platform at a time ([`view`]): the shared entries, and its platform's
//! entries under their plain paths. Which platform is the one of the program at the start of
//! the file, so a bundle installs what runs beside it. The header's `metadata` holds each
//! platform's metadata under `platforms.<arch>`, and a reader takes its platform's.

use crate::error::{Error, Result};
use crate::format::{self, Entry, Header, Kind, TRAILER_LEN};
use crate::reader::Bundle;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Directory whose children (`platforms/x86_64/…`) hold each platform's entries.
pub const PLATFORMS_DIR: &str = "platforms";
/// Directory holding every platform's program.
pub const PROGRAMS_DIR: &str = ".bale/programs";
/// Key of `metadata` under which each platform's metadata is kept.
pub const METADATA_KEY: &str = "platforms";

/// Where a platform's program is kept inside the bundle.
pub fn program_entry(arch: &str) -> String {
    format!("{PROGRAMS_DIR}/{arch}")
}

/// Where a platform's copy of the entry at `path` is kept.
pub fn platform_path(arch: &str, path: &str) -> String {
    format!("{PLATFORMS_DIR}/{arch}/{path}")
}

/// True for entries every platform shares in a multi-platform bundle: image blobs and the
/// directories above them.
pub fn is_shared(path: &str) -> bool {
    matches!(
        path,
        "registry" | "registry/blobs" | "registry/blobs/sha256"
    ) || path.starts_with("registry/blobs/sha256/")
}

/// The region of the program a file of this header starts with, known by its length alone
/// (the writer refuses two programs of one length): the header's `stub` for a bundle of one
/// platform. `None` when no program listed has that length.
pub fn program_region(header: &Header, stub_len: u64) -> Option<&crate::format::Region> {
    if header.programs.is_empty() {
        return (header.stub.len == stub_len).then_some(&header.stub);
    }
    header.programs.values().find(|r| r.len == stub_len)
}

/// Makes `header`, as read from a multi-platform bundle whose program is for `arch`, the
/// header of that platform: its program region and its metadata. Single-platform headers are
/// left as they are.
/// `stub_len` is the length of the program the file starts with; `None` selects a platform
/// whose program is not the one at the start (to read that platform's entries, not to run).
pub(crate) fn select(header: &mut Header, arch: &str, stub_len: Option<u64>) -> Result<()> {
    if header.programs.is_empty() {
        return Ok(());
    }
    let region = header.programs.get(arch).ok_or_else(|| {
        Error::BadHeader(format!(
            "the program at the start of the file is for {arch}; the bundle carries {}",
            carried(header)
        ))
    })?;
    if let Some(stub_len) = stub_len.filter(|l| *l != region.len) {
        return Err(Error::BadHeader(format!(
            "the {arch} program is {stub_len} bytes; the header says {}",
            region.len
        )));
    }
    header.stub = region.clone();
    header.arch = arch.to_string();
    let meta = header
        .metadata
        .get(METADATA_KEY)
        .and_then(|p| p.get(arch))
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            Error::BadHeader(format!(
                "metadata.{METADATA_KEY} has nothing for {arch}, whose program the bundle carries"
            ))
        })?;
    header.metadata = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(())
}

/// The entries one platform sees, sorted by path: the shared ones, and those under
/// `platforms/<arch>/` without that prefix. The other platforms' entries and the programs are
/// left out. Symlinks are checked again under their new paths, since a link that stays inside
/// the bundle as stored might not once its prefix is gone.
pub fn view(entries: Vec<Entry>, arch: &str) -> Result<Vec<Entry>> {
    let prefix = format!("{PLATFORMS_DIR}/{arch}/");
    let mut out = Vec::with_capacity(entries.len());
    for mut e in entries {
        if let Some(rest) = e.path.strip_prefix(&prefix) {
            e.path = rest.to_string();
            out.push(e);
        } else if e.path == PLATFORMS_DIR
            || e.path.starts_with(&format!("{PLATFORMS_DIR}/"))
            // The programs' directory and its parent; a platform has its own `.bale`.
            || (e.kind == Kind::Dir && (e.path == ".bale" || e.path == PROGRAMS_DIR))
            || e.path.starts_with(&format!("{PROGRAMS_DIR}/"))
        {
            continue;
        } else if is_shared(&e.path) {
            out.push(e);
        } else {
            return Err(Error::BadTable {
                entry: 0,
                why: format!(
                    "{:?} is neither shared by the platforms nor under {PLATFORMS_DIR}/",
                    e.path
                ),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = out.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(Error::BadTable {
            entry: 0,
            why: format!("{:?} is both shared and {arch}'s own", w[0].path),
        });
    }
    format::check_links(&out)?;
    Ok(out)
}

/// Writes to `dest` the copy of the multi-platform `bundle` that runs on `arch`: that
/// architecture's program, then everything after the program as it is, then a trailer with
/// the offsets moved. The program is checked against the header before anything is written;
/// the file appears under its name only when it is whole (a temporary beside it, synced, then
/// renamed). For the architecture whose program starts the bundle, it is a plain copy.
pub fn write_variant(bundle: &Bundle, arch: &str, dest: &Path) -> Result<()> {
    let region = bundle.header.programs.get(arch).ok_or_else(|| {
        Error::Input(format!(
            "{} carries no program for {arch}; it carries {}",
            bundle.path().display(),
            carried(&bundle.header)
        ))
    })?;
    let program: Vec<u8> = if arch == bundle.header.arch {
        let mut v = Vec::new();
        bundle
            .stub_reader()
            .read_to_end(&mut v)
            .map_err(|e| Error::io(bundle.path(), e))?;
        v
    } else {
        let name = program_entry(arch);
        let entries = bundle.all_entries()?;
        let entry = entries
            .iter()
            .find(|e| e.path == name && e.kind == Kind::File)
            .ok_or_else(|| {
                Error::Input(format!(
                    "{}: the header lists a program for {arch}, but there is no {name}",
                    bundle.path().display()
                ))
            })?;
        let mut v = Vec::with_capacity(entry.size.min(256 << 20) as usize);
        bundle
            .open_entry(entry)?
            .read_to_end(&mut v)
            .map_err(|e| Error::io(bundle.path(), e))?;
        v
    };
    let got = format::hex(&format::sha256(&program));
    if program.len() as u64 != region.len || got != region.sha256 {
        return Err(Error::RegionDigest {
            region: "program (stub)",
            expected: region.sha256.clone(),
            actual: got,
        });
    }
    let t = &bundle.trailer;
    let mut trailer_bytes = t.encode();
    crate::chunks::rebase_tail(&mut trailer_bytes, program.len() as u64);
    let tmp = temp_beside(dest)?;
    let written = (|| -> std::io::Result<()> {
        let mut out = std::fs::File::create(&tmp)?;
        out.write_all(&program)?;
        let mut src = bundle.file().try_clone()?;
        src.seek(SeekFrom::Start(t.stub_len))?;
        let body = t.file_len - TRAILER_LEN as u64 - t.stub_len;
        // std::io::copy between files uses copy_file_range: no pass through user space.
        let n = std::io::copy(&mut (&mut src).take(body), &mut out)?;
        if n != body {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the bundle ended early",
            ));
        }
        out.write_all(&trailer_bytes)?;
        out.sync_all()?;
        let perm = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&tmp, perm)?;
        std::fs::rename(&tmp, dest)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(dest, e)
    })?;
    Ok(())
}

/// Checks that every program the header lists is carried as an entry (the one at the start of
/// the file too, so that any variant can write any other), with the length and digest the header gives, and that
/// every platform's view is well formed. The entries' frames are checked by `verify`.
pub fn check_programs(header: &Header, entries: &[Entry]) -> Result<()> {
    for (arch, region) in &header.programs {
        view(entries.to_vec(), arch)?;
        let name = program_entry(arch);
        let e = entries
            .iter()
            .find(|e| e.path == name && e.kind == Kind::File)
            .ok_or_else(|| Error::BadTable {
                entry: 0,
                why: format!("the header lists a program for {arch}, but there is no {name}"),
            })?;
        if e.size != region.len || format::hex(&e.sha256) != region.sha256 {
            return Err(Error::RegionDigest {
                region: "program of another platform",
                expected: region.sha256.clone(),
                actual: format::hex(&e.sha256),
            });
        }
    }
    Ok(())
}

/// The architectures whose programs the bundle carries, in words.
pub fn carried(header: &Header) -> String {
    if header.programs.is_empty() {
        return header.arch.clone();
    }
    header
        .programs
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

fn temp_beside(dest: &Path) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::Input(format!("{}: not a file name", dest.display())))?
        .to_string_lossy()
        .into_owned();
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(dir.join(format!(".{name}.tmp-{}", std::process::id())))
}

/// Each platform's metadata, for the header of a multi-platform bundle.
pub fn metadata_of(
    platforms: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
) -> BTreeMap<String, serde_json::Value> {
    let all: serde_json::Map<String, serde_json::Value> = platforms
        .into_iter()
        .map(|(arch, m)| (arch, serde_json::Value::Object(m.into_iter().collect())))
        .collect();
    BTreeMap::from([(METADATA_KEY.to_string(), serde_json::Value::Object(all))])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Region;
    use crate::writer::{BundleMeta, BundleWriter, WriteOptions};

    /// A file that passes for a program of `machine` (an ELF e_machine) to the writer.
    fn fake_program(dir: &Path, name: &str, machine: u16, len: usize) -> (PathBuf, Vec<u8>) {
        let mut b = vec![0u8; len];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        for (i, x) in b.iter_mut().enumerate().skip(64) {
            *x = (i * 7 + machine as usize) as u8;
        }
        let p = dir.join(name);
        std::fs::write(&p, &b).unwrap();
        (p, b)
    }

    /// A bundle for x86_64 and aarch64: a shared blob, and `bin/tool` and `link` per platform.
    fn two_platforms(dir: &Path, arm_link: &str) -> PathBuf {
        let (x86, x86_bytes) = fake_program(dir, "x86", 62, 5000);
        let (_, arm) = fake_program(dir, "arm", 183, 7000);
        let meta = BundleMeta {
            name: "mixed".into(),
            version: "1".into(),
            metadata: metadata_of(BTreeMap::from([
                ("x86_64".into(), BTreeMap::from([("k".into(), "x".into())])),
                ("aarch64".into(), BTreeMap::from([("k".into(), "a".into())])),
            ])),
            ..Default::default()
        };
        let dest = dir.join("mixed.bale");
        let mut w = BundleWriter::create(&dest, &x86, meta, WriteOptions::default()).unwrap();
        let blob = dir.join("blob");
        std::fs::write(&blob, b"layer bytes").unwrap();
        for d in [
            "registry",
            "registry/blobs",
            "registry/blobs/sha256",
            ".bale",
        ] {
            w.add_dir(d, 0o755).unwrap();
        }
        w.add_blob("registry/blobs/sha256/ab", &blob, None).unwrap();
        w.add_dir(".bale/programs", 0o755).unwrap();
        w.add_bytes(&program_entry("aarch64"), 0o755, &arm).unwrap();
        w.add_bytes(&program_entry("x86_64"), 0o755, &x86_bytes)
            .unwrap();
        w.add_dir(PLATFORMS_DIR, 0o755).unwrap();
        for (arch, tool, link) in [
            ("x86_64", "x86 tool", "bin/tool"),
            ("aarch64", "arm tool", arm_link),
        ] {
            w.add_dir(platform_path(arch, "").trim_end_matches('/'), 0o755)
                .unwrap();
            w.add_dir(&platform_path(arch, "bin"), 0o755).unwrap();
            w.add_bytes(&platform_path(arch, "bin/tool"), 0o755, tool.as_bytes())
                .unwrap();
            w.add_symlink(&platform_path(arch, "link"), link).unwrap();
        }
        w.set_programs(BTreeMap::from([(
            "aarch64".to_string(),
            Region {
                len: arm.len() as u64,
                sha256: format::hex(&format::sha256(&arm)),
            },
        )]));
        w.finish().unwrap();
        dest
    }

    fn content(b: &Bundle, path: &str) -> String {
        let entries = b.entries().unwrap();
        let e = entries.iter().find(|e| e.path == path).unwrap();
        let mut s = String::new();
        b.open_entry(e).unwrap().read_to_string(&mut s).unwrap();
        s
    }

    fn paths(b: &Bundle) -> Vec<String> {
        b.entries().unwrap().into_iter().map(|e| e.path).collect()
    }

    #[test]
    fn each_program_sees_its_own_platform_and_the_shared_blobs() {
        let d = tempfile::tempdir().unwrap();
        let mixed = Bundle::open(two_platforms(d.path(), "bin/tool")).unwrap();
        assert_eq!(mixed.header.arch, "x86_64");
        assert_eq!(mixed.header.metadata["k"], "x");
        assert_eq!(content(&mixed, "bin/tool"), "x86 tool");
        let want = [
            "bin",
            "bin/tool",
            "link",
            "registry",
            "registry/blobs",
            "registry/blobs/sha256",
            "registry/blobs/sha256/ab",
        ];
        assert_eq!(paths(&mixed), want);
        crate::verify::verify(&mixed, 2, &|_| {}).unwrap();

        let arm_path = d.path().join("arm.bale");
        write_variant(&mixed, "aarch64", &arm_path).unwrap();
        let arm = Bundle::open(&arm_path).unwrap();
        assert_eq!(arm.header.arch, "aarch64");
        assert_eq!(arm.header.metadata["k"], "a");
        assert_eq!(arm.trailer.header_sha256, mixed.trailer.header_sha256);
        assert_eq!(content(&arm, "bin/tool"), "arm tool");
        assert_eq!(paths(&arm), want);
        crate::verify::verify(&arm, 2, &|_| {}).unwrap();
        // A node holding this copy relays the other's chunks: only the tail's trailer moves.
        let tail_of = |b: &Bundle| {
            let bytes = std::fs::read(b.path()).unwrap();
            bytes[b.trailer.table_offset as usize..].to_vec()
        };
        let mut tail = tail_of(&mixed);
        crate::chunks::rebase_tail(&mut tail, arm.trailer.stub_len);
        assert_eq!(tail, tail_of(&arm));
        crate::chunks::rebase_tail(&mut tail, mixed.trailer.stub_len);
        assert_eq!(tail, tail_of(&mixed));
        // A node receiving this copy checks its program against the arm64 one.
        let list = crate::chunks::ChunkList::of_bundle(&arm).unwrap();
        let program = &list.chunks[crate::chunks::STUB].pieces[0];
        assert_eq!(
            format::hex(&program.sha256),
            arm.header.programs["aarch64"].sha256
        );
        // Back again: the x86_64 variant of the aarch64 file is the original, byte for byte.
        let back = d.path().join("back.bale");
        write_variant(&arm, "x86_64", &back).unwrap();
        assert_eq!(
            std::fs::read(&back).unwrap(),
            std::fs::read(mixed.path()).unwrap()
        );
        // Read as the other platform without a copy (a build FROM it does this).
        let as_arm = Bundle::open_for_platform(mixed.path(), "aarch64").unwrap();
        assert_eq!(as_arm.header.metadata["k"], "a");
        assert_eq!(content(&as_arm, "bin/tool"), "arm tool");
        let err = write_variant(&mixed, "riscv64", &d.path().join("no.bale")).unwrap_err();
        assert!(err.to_string().contains("aarch64, x86_64"), "{err}");
    }

    #[test]
    fn a_program_that_is_not_the_one_listed_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mixed = two_platforms(d.path(), "bin/tool");
        let mut bytes = std::fs::read(&mixed).unwrap();
        bytes[100] ^= 1;
        let bad = d.path().join("bad.bale");
        std::fs::write(&bad, &bytes).unwrap();
        let b = Bundle::open(&bad).unwrap();
        assert!(crate::verify::verify(&b, 2, &|_| {}).is_err());
        // A program for an architecture the header does not list.
        bytes[18..20].copy_from_slice(&243u16.to_le_bytes());
        std::fs::write(&bad, &bytes).unwrap();
        let err = Bundle::open(&bad).unwrap_err().to_string();
        assert!(err.contains("aarch64, x86_64"), "{err}");
    }

    #[test]
    fn a_link_that_escapes_once_its_platform_prefix_is_gone_is_refused() {
        let d = tempfile::tempdir().unwrap();
        // Stored at platforms/aarch64/link, `../../registry` stays inside; seen as `link` it
        // would not.
        let mixed = Bundle::open(two_platforms(d.path(), "../../registry")).unwrap();
        assert!(mixed.entries().is_ok());
        let arm_path = d.path().join("arm.bale");
        write_variant(&mixed, "aarch64", &arm_path).unwrap();
        let arm = Bundle::open(&arm_path).unwrap();
        assert!(arm.entries().is_err());
        assert!(crate::verify::verify(&mixed, 2, &|_| {}).is_err());
    }
}
