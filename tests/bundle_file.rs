//! The bundle file end to end through the real `bale` binary: both faces of the program, the
//! round trip, reproducibility, and every corruption, truncation and traversal case.

mod common;

use bale_payload::format::{self, Codec, Entry, Frame, Kind, TRAILER_LEN};
use common::*;
use std::path::Path;

fn flip(path: &Path, offset: u64, out: &Path) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x10;
    std::fs::write(out, b).unwrap();
}

#[test]
fn round_trip_through_both_faces() {
    let (d, app) = built();
    let tree = d.path().join("tree");

    let o = bale(&["info", app.to_str().unwrap()]);
    ok(&o);
    let info = stdout(&o);
    for want in [
        "name:        sample",
        "version:     1.2.3",
        "arch:        x86_64",
    ] {
        assert!(info.contains(want), "{want} missing from\n{info}");
    }
    assert!(
        info.contains("(5 files, 5 dirs, 1 symlinks, 0 blobs)"),
        "{info}"
    );

    // The bundle is itself the program.
    let o = run(&app, &[]);
    ok(&o);
    assert!(stdout(&o).contains("sample 1.2.3 (x86_64), a bale bundle"));
    let o = run(&app, &["list"]);
    ok(&o);
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        [
            ".bale",
            ".bale/sbom.cdx.json",
            "bin",
            "bin/tool",
            "empty",
            "etc",
            "etc/app",
            "etc/app/config.yaml",
            "etc/app/copy.yaml",
            "etc/current",
            "etc/empty-file"
        ]
    );
    ok(&run(&app, &["verify"]));
    ok(&run(&app, &["verify", "--content"]));

    let to = d.path().join("out");
    ok(&run(&app, &["extract", "--to", to.to_str().unwrap()]));
    assert_same_tree(&tree, &to);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(to.join("bin/tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(to.join("etc/current")).unwrap(),
        Path::new("app/config.yaml")
    );
    assert!(files_below(&to).iter().all(|f| !f.contains(".bale-")));

    // The build-tool face works on any bundle file, and selects entries.
    let sel = d.path().join("sel");
    ok(&bale(&[
        "extract",
        app.to_str().unwrap(),
        "--to",
        sel.to_str().unwrap(),
        "etc/app",
    ]));
    assert_eq!(
        files_below(&sel),
        ["etc", "etc/app", "etc/app/config.yaml", "etc/app/copy.yaml"]
    );
    let o = bale(&[
        "extract",
        app.to_str().unwrap(),
        "--to",
        sel.to_str().unwrap(),
        "nope",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no entry named \"nope\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn identical_content_is_stored_once_and_builds_are_reproducible() {
    let (d, app) = built();
    let p = parts(&app);
    let cfg = p
        .entries
        .iter()
        .find(|e| e.path == "etc/app/config.yaml")
        .unwrap();
    let copy = p
        .entries
        .iter()
        .find(|e| e.path == "etc/app/copy.yaml")
        .unwrap();
    assert_eq!(cfg.frames, copy.frames);
    let tool = p.entries.iter().find(|e| e.path == "bin/tool").unwrap();
    assert_eq!(tool.frames.len(), 3, "5 MiB in 2 MiB frames");

    let again = d.path().join("again.bale");
    build(&d.path().join("tree"), &again);
    assert_eq!(std::fs::read(&app).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn a_bundle_used_as_stub_contributes_only_its_program() {
    let (d, app) = built();
    let out = d.path().join("restub.bale");
    ok(&bale(&[
        "build",
        d.path().join("tree").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--stub",
        app.to_str().unwrap(),
        "--name",
        "sample",
        "--version",
        "1.2.3",
    ]));
    assert_eq!(parts(&out).trailer.stub_len, parts(&app).trailer.stub_len);
    ok(&run(&out, &["verify"]));
}

/// `list --json` says where raw content lies in the file, so other tools can read it in place
/// (the benchmark's HTTP reference serves blobs from there); compressed content has no offset.
#[test]
fn list_json_gives_the_file_offset_of_raw_content() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    // Incompressible, over two frames; and one repeated line, which compresses.
    let noise = noise(3 << 20, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(tree.join("noise.bin"), &noise).unwrap();
    std::fs::write(tree.join("text"), "the same line again\n".repeat(50_000)).unwrap();
    let app = d.path().join("app.bale");
    build(&tree, &app);
    let o = bale(&["list", "--json", app.to_str().unwrap()]);
    ok(&o);
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = |path: &str| rows.iter().find(|r| r["path"] == path).unwrap().clone();
    let file = std::fs::read(&app).unwrap();
    let at = row("noise.bin")["file_offset"].as_u64().unwrap() as usize;
    assert!(
        file[at..at + noise.len()] == noise[..],
        "the offset points at the content"
    );
    assert!(row("text")["file_offset"].is_null());
    assert!(row(".bale")["file_offset"].is_null());
}

#[test]
fn flipped_bit_in_the_program_is_caught() {
    let (d, app) = built();
    let bad = d.path().join("bad.bale");
    // Far into the program: a byte the loader does not need, so the bundle still runs.
    let stub_len = parts(&app).trailer.stub_len;
    flip(&app, stub_len - 100, &bad);
    damaged(&bale(&["verify", bad.to_str().unwrap()]), "program (stub)");
    let to = d.path().join("out");
    damaged(
        &bale(&[
            "extract",
            bad.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]),
        "program (stub)",
    );
    assert!(files_below(&to).is_empty(), "{:?}", files_below(&to));
}

#[test]
fn flipped_bit_in_a_frame_names_the_entry_and_writes_nothing_unverified() {
    let (d, app) = built();
    let p = parts(&app);
    let tool = p.entries.iter().find(|e| e.path == "bin/tool").unwrap();
    let f = tool.frames[1];
    let bad = d.path().join("bad.bale");
    flip(&app, p.trailer.stub_len + f.offset + 17, &bad);
    let o = bale(&["verify", bad.to_str().unwrap()]);
    damaged(&o, "entry \"bin/tool\" is damaged: frame 1");
    damaged(&o, "does not match its SHA-256");
    let to = d.path().join("out");
    damaged(
        &bale(&[
            "extract",
            bad.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]),
        "bin/tool",
    );
    let left = files_below(&to);
    assert!(!left.contains(&"bin/tool".to_string()), "{left:?}");
    assert!(left.iter().all(|f| !f.contains(".bale-part")), "{left:?}");
}

#[test]
fn flipped_bit_in_the_entry_table_is_caught() {
    let (d, app) = built();
    let p = parts(&app);
    let bad = d.path().join("bad.bale");
    flip(&app, p.trailer.table_offset + 5, &bad);
    damaged(
        &bale(&["list", bad.to_str().unwrap()]),
        "entry table does not match its SHA-256",
    );
    damaged(&bale(&["verify", bad.to_str().unwrap()]), "entry table");
}

#[test]
fn flipped_bit_in_the_header_is_caught() {
    let (d, app) = built();
    let p = parts(&app);
    let bad = d.path().join("bad.bale");
    flip(&app, p.trailer.header_offset + 3, &bad);
    damaged(
        &bale(&["info", bad.to_str().unwrap()]),
        "header does not match its SHA-256",
    );
}

#[test]
fn flipped_bits_in_the_trailer_are_caught() {
    let (d, app) = built();
    let len = std::fs::metadata(&app).unwrap().len();
    let bad = d.path().join("bad.bale");
    for at in [0u64, 20, 50, 85, 100, 106, 113] {
        flip(&app, len - TRAILER_LEN as u64 + at, &bad);
        damaged(
            &bale(&["info", bad.to_str().unwrap()]),
            "trailer is damaged",
        );
    }
    // The magic itself: no longer recognisable as a bundle.
    flip(&app, len - 3, &bad);
    damaged(&bale(&["info", bad.to_str().unwrap()]), "no bale trailer");
}

#[test]
fn truncated_and_appended_files_are_named_as_such() {
    let (d, app) = built();
    let bytes = std::fs::read(&app).unwrap();
    let bad = d.path().join("bad.bale");
    std::fs::write(&bad, &bytes[..bytes.len() - 1000]).unwrap();
    damaged(&bale(&["verify", bad.to_str().unwrap()]), "truncated");

    let mut longer = bytes.clone();
    longer.extend_from_slice(b"trailing garbage from a careless copy");
    std::fs::write(&bad, &longer).unwrap();
    let o = bale(&["verify", bad.to_str().unwrap()]);
    damaged(&o, "37 bytes appended");
    damaged(&o, &format!("truncate -s {}", bytes.len()));
}

#[test]
fn a_trailer_pointing_past_the_end_or_claiming_a_huge_index_is_refused() {
    let (d, app) = built();
    let p = parts(&app);
    let stub = &p.bytes[..p.trailer.stub_len as usize];
    let body = &p.bytes[p.trailer.stub_len as usize..p.bytes.len() - TRAILER_LEN];
    let bad = d.path().join("bad.bale");

    // A well-formed trailer whose regions end beyond the file.
    let mut t = p.trailer.clone();
    t.header_len += 4096;
    t.file_len += 4096;
    let mut f = stub.to_vec();
    f.extend_from_slice(body);
    f.extend_from_slice(&t.encode());
    std::fs::write(&bad, &f).unwrap();
    damaged(&bale(&["info", bad.to_str().unwrap()]), "truncated");

    // A trailer claiming a 2 GiB header: refused before anything is allocated.
    let mut t = p.trailer.clone();
    t.header_len = 2 << 30;
    t.file_len = t.header_offset + t.header_len + TRAILER_LEN as u64;
    let mut f = stub.to_vec();
    f.extend_from_slice(body);
    f.extend_from_slice(&t.encode());
    std::fs::write(&bad, &f).unwrap();
    damaged(
        &bale(&["info", bad.to_str().unwrap()]),
        "more than the limit",
    );
}

#[test]
fn a_newer_major_format_is_refused_with_a_clear_message() {
    let (d, app) = built();
    let p = parts(&app);
    let mut t = p.trailer.clone();
    t.major = 2;
    let mut f = p.bytes[..p.bytes.len() - TRAILER_LEN].to_vec();
    f.extend_from_slice(&t.encode());
    let bad = d.path().join("v2.bale");
    std::fs::write(&bad, f).unwrap();
    damaged(
        &bale(&["info", bad.to_str().unwrap()]),
        "format 2.0; this bale reads format 1.x only. Use a newer bale",
    );
}

#[test]
fn a_decompression_bomb_fails_within_its_declared_size() {
    let (d, app) = built();
    let p = parts(&app);
    let stub = &p.bytes[..p.trailer.stub_len as usize];
    // 1 GiB of zeros in one zstd frame: a few tens of KiB stored.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    enc.include_checksum(true).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let entry = Entry {
        path: "bomb".into(),
        kind: Kind::File,
        mode: 0o644,
        size: 4096,
        sha256: [0; 32],
        frames: vec![Frame {
            offset: 0,
            stored_len: bomb.len() as u64,
            raw_len: 4096,
            codec: Codec::Zstd,
            sha256: format::sha256(&bomb),
        }],
        target: String::new(),
    };
    let bad = d.path().join("bomb.bale");
    forge(&bad, stub, &bomb, &[entry], &p.header);
    // Every stored byte is authentic, so plain verify passes; decoding is what must hold.
    ok(&bale(&["verify", bad.to_str().unwrap()]));
    damaged(
        &bale(&["verify", "--content", bad.to_str().unwrap()]),
        "does not decompress to its declared 4096 bytes",
    );
    let to = d.path().join("out");
    let o = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("maxrss_kb=%M")
        .arg(bale_bin())
        .args([
            "extract",
            bad.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ])
        .output();
    let o = match o {
        Ok(o) => o,
        Err(_) => bale(&[
            "extract",
            bad.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]),
    };
    damaged(&o, "does not decompress to its declared 4096 bytes");
    assert!(!to.join("bomb").exists());
    if let Some(kb) = stderr(&o)
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        assert!(kb < 64 * 1024, "bomb extraction peaked at {kb} KiB");
    }
}

fn file_entry(path: &str, like: &Entry) -> Entry {
    Entry {
        path: path.into(),
        ..like.clone()
    }
}

#[test]
fn path_traversal_in_the_index_is_refused() {
    let (d, app) = built();
    let p = parts(&app);
    let cfg = p
        .entries
        .iter()
        .find(|e| e.path == "etc/app/config.yaml")
        .unwrap()
        .clone();
    let stub = &p.bytes[..p.trailer.stub_len as usize];
    let payload = &p.bytes[p.trailer.stub_len as usize..p.trailer.table_offset as usize];
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![file_entry("../escape", &cfg)], "'..' path component"),
        (
            vec![file_entry("a/../../escape", &cfg)],
            "'..' path component",
        ),
        (vec![file_entry("/etc/escape", &cfg)], "absolute path"),
        (
            vec![Entry {
                path: "link".into(),
                kind: Kind::Symlink,
                mode: 0o777,
                size: 0,
                sha256: [0; 32],
                frames: vec![],
                target: "../../etc".into(),
            }],
            "climbs out of the target directory",
        ),
        (
            vec![Entry {
                path: "link".into(),
                kind: Kind::Symlink,
                mode: 0o777,
                size: 0,
                sha256: [0; 32],
                frames: vec![],
                target: "/etc".into(),
            }],
            "absolute symlink target",
        ),
        (
            vec![
                Entry {
                    path: "a".into(),
                    kind: Kind::Symlink,
                    mode: 0o777,
                    size: 0,
                    sha256: [0; 32],
                    frames: vec![],
                    target: "b".into(),
                },
                file_entry("a/x", &cfg),
            ],
            "its parent a is a symlink in the same bundle",
        ),
    ];
    // Frames must still tile the payload for the forgery to pass the integrity checks.
    let mut keep: Vec<Entry> = p.entries.clone();
    keep.retain(|e| e.path != "etc/app/config.yaml" && e.path != "etc/app/copy.yaml");
    for (i, (extra, needle)) in cases.into_iter().enumerate() {
        let mut entries = keep.clone();
        entries.push(Entry {
            path: "zz-keep".into(),
            ..cfg.clone()
        });
        entries.extend(extra);
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let bad = d.path().join(format!("trav{i}.bale"));
        forge(&bad, stub, payload, &entries, &p.header);
        let to = d.path().join(format!("out{i}"));
        let o = bale(&[
            "extract",
            bad.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]);
        damaged(&o, needle);
        damaged(&o, "refusing to extract");
        assert!(files_below(&to).is_empty());
    }
    assert!(!d.path().join("escape").exists());
}

#[test]
fn a_symlink_planted_in_the_target_is_not_written_through() {
    let (d, app) = built();
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let to = d.path().join("out");
    std::fs::create_dir(&to).unwrap();
    std::os::unix::fs::symlink(&outside, to.join("etc")).unwrap();
    let o = bale(&[
        "extract",
        app.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a symlink on disk; refusing to write through it"));
    assert!(files_below(&outside).is_empty());
}

#[test]
fn special_files_are_refused_at_build_and_unknown_kinds_at_read() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let fifo = tree.join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let o = bale(&[
        "build",
        tree.to_str().unwrap(),
        "-o",
        d.path().join("x.bale").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("pipe: a FIFO cannot go into a bundle"),
        "{}",
        stderr(&o)
    );
    assert!(!d.path().join("x.bale").exists());
    assert!(files_below(d.path()).iter().all(|f| !f.contains(".tmp-")));

    // Device nodes have no kind in the format: a forged kind byte is refused by name.
    let (d2, app) = built();
    let p = parts(&app);
    let raw = format::encode_table(&p.entries);
    let mut raw2 = raw.clone();
    raw2[0] = 7;
    let table = zstd::bulk::compress(&raw2, 3).unwrap();
    let mut h = p.header.clone();
    h.table.len = table.len() as u64;
    h.table.sha256 = format::hex(&format::sha256(&table));
    let hj = serde_json::to_vec(&h).unwrap();
    let mut t = p.trailer.clone();
    t.table_len = table.len() as u64;
    t.header_offset = t.table_offset + t.table_len;
    t.header_len = hj.len() as u64;
    t.header_sha256 = format::sha256(&hj);
    t.file_len = t.header_offset + t.header_len + TRAILER_LEN as u64;
    let mut f = p.bytes[..p.trailer.table_offset as usize].to_vec();
    f.extend_from_slice(&table);
    f.extend_from_slice(&hj);
    f.extend_from_slice(&t.encode());
    let bad = d2.path().join("dev.bale");
    std::fs::write(&bad, f).unwrap();
    damaged(
        &bale(&["list", bad.to_str().unwrap()]),
        "device nodes and other special files are refused",
    );
}

#[test]
fn an_unsafe_symlink_in_the_tree_fails_the_build_with_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tree.join("pw")).unwrap();
    let o = bale(&[
        "build",
        tree.to_str().unwrap(),
        "-o",
        d.path().join("x.bale").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("pw: symlink to \"/etc/passwd\""), "{e}");
    assert!(e.contains("make it relative"), "{e}");
}

#[test]
fn free_space_is_checked_before_writing() {
    if !is_root() {
        return skip(&[], "needs root to mount a small tmpfs");
    }
    let (d, app) = built();
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let m = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(m.success(), "mount tmpfs");
    let o = bale(&[
        "extract",
        app.to_str().unwrap(),
        "--to",
        small.to_str().unwrap(),
    ]);
    let listed = files_below(&small);
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("not enough space in"), "{e}");
    assert!(
        e.contains("extraction needs 5.0 MiB") || e.contains("needs"),
        "{e}"
    );
    assert!(listed.is_empty(), "{listed:?}");
}

#[test]
fn a_killed_extraction_never_leaves_a_file_that_looks_complete() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    // Incompressible, so extraction takes long enough to be interrupted.
    let mut big = vec![0u8; 96 << 20];
    let mut x: u64 = 88172645463325252;
    for c in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
    std::fs::write(tree.join("big"), &big).unwrap();
    let app = d.path().join("big.bale");
    build(&tree, &app);
    let want = format::sha256(&big);
    // Killed once early, once midway and once late in the file.
    for written in [1u64 << 20, 32 << 20, 80 << 20] {
        let to = d.path().join(format!("out{written}"));
        let mut child = std::process::Command::new(bale_bin())
            .args([
                "extract",
                app.to_str().unwrap(),
                "--to",
                to.to_str().unwrap(),
                "-j",
                "1",
            ])
            .spawn()
            .unwrap();
        // The partial file is preallocated (sparse): the blocks allocated below `to` show how
        // far the extraction got, wherever it keeps that file.
        poll_until(
            std::time::Duration::from_millis(1),
            "the extraction to get that far",
            std::time::Duration::from_secs(60),
            || {
                use std::os::unix::fs::MetadataExt;
                let allocated: u64 = files_below(&to)
                    .iter()
                    .filter_map(|f| std::fs::symlink_metadata(to.join(f)).ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.blocks() * 512)
                    .sum();
                allocated >= written || child.try_wait().unwrap().is_some()
            },
        );
        let _ = child.kill();
        let _ = child.wait();
        if let Ok(got) = std::fs::read(to.join("big")) {
            assert_eq!(
                format::sha256(&got),
                want,
                "a partial file sits under the final name"
            );
        }
    }
}
