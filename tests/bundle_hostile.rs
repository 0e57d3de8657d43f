//! Hostile bundles and hostile targets through the real `bale` binary: entries that collide
//! with temporary names, symlink chains, tables built to exhaust memory, repeated frames,
//! names that fake output, a target changed under a running extraction, and the exact words
//! of the errors.

mod common;

use bale_payload::format::{self, Entry, Frame, Header, Kind, Trailer, TRAILER_LEN};
use common::*;
use std::io::Read;
use std::path::Path;

fn link(path: &str, target: &str) -> Entry {
    Entry {
        path: path.into(),
        kind: Kind::Symlink,
        mode: 0o777,
        size: 0,
        sha256: [0; 32],
        frames: vec![],
        target: target.into(),
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        path: path.into(),
        kind: Kind::Dir,
        mode: 0o755,
        size: 0,
        sha256: [0; 32],
        frames: vec![],
        target: String::new(),
    }
}

/// F1: a tree holding both NAME and the old temporary names of NAME extracts every entry with
/// its own bytes (before, NAME got the other entry's bytes, or an entry vanished, with rc 0).
#[test]
fn entries_named_like_temporary_files_keep_their_own_bytes() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    // Several frames, so the file is written part by part, and a small one of the same name.
    std::fs::write(tree.join("bin/ctr"), noise(5 << 20, 17)).unwrap();
    std::fs::write(tree.join("bin/.ctr.bale-part"), b"the other entry").unwrap();
    std::fs::write(tree.join("bin/runc"), b"runc").unwrap();
    std::fs::write(tree.join("bin/.runc.bale-part"), b"stale part of runc").unwrap();
    std::fs::write(tree.join("bin/.runc.bale-link"), b"a stale link").unwrap();
    std::os::unix::fs::symlink("runc", tree.join("bin/current")).unwrap();
    std::fs::write(tree.join("bin/.current.bale-link"), b"not a link").unwrap();
    let app = d.path().join("app.bale");
    build(&tree, &app);
    for threads in ["1", "2", "4"] {
        let to = d.path().join(format!("out{threads}"));
        let o = bale(&[
            "extract",
            app.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
            "-j",
            threads,
        ]);
        ok(&o);
        assert_same_tree(&tree, &to);
        assert!(
            files_below(&to)
                .iter()
                .all(|f| !f.contains(".bale-extract")),
            "{:?}",
            files_below(&to)
        );
    }
}

/// F17: the longest legal file name (255 bytes) packs and extracts.
#[test]
fn a_255_byte_file_name_extracts() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let long = "x".repeat(255);
    std::fs::write(tree.join("sub").join(&long), b"long").unwrap();
    std::fs::write(
        tree.join(format!("{}b", "y".repeat(254))),
        noise(3 << 20, 5),
    )
    .unwrap();
    std::os::unix::fs::symlink(&long, tree.join("sub").join("z".repeat(255))).unwrap();
    let app = d.path().join("app.bale");
    build(&tree, &app);
    let to = d.path().join("out");
    ok(&bale(&[
        "extract",
        app.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]));
    assert_same_tree(&tree, &to);
}

/// F2: symlinks that stay inside one at a time but leave the root through each other are
/// refused by `verify` and `extract`, naming the entry; nothing is extracted.
#[test]
fn symlink_chains_that_leave_the_target_are_refused() {
    let (d, app) = built();
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (
            vec![
                dir("sub"),
                link("sub/up", ".."),
                link("passwd", "sub/up/sub/up/sub/up/../../../../etc/passwd"),
            ],
            "passwd -> sub/up/sub/up/sub/up/../../../../etc/passwd",
        ),
        (
            vec![dir("sub"), link("sub/up", ".."), link("esc", "sub/up/..")],
            "esc -> sub/up/..",
        ),
        (
            vec![
                link("a", "b/.."),
                link("b", "c/c"),
                dir("c"),
                link("c/c", ".."),
            ],
            "a -> b/..",
        ),
        (
            vec![link("loop1", "loop2"), link("loop2", "loop1")],
            "loop1 -> loop2",
        ),
    ];
    for (i, (extra, name)) in cases.into_iter().enumerate() {
        let bad = d.path().join(format!("chain{i}.bale"));
        reforge(&app, &bad, |entries| {
            entries.extend(extra);
            entries.sort_by(|a, b| a.path.cmp(&b.path));
        });
        let o = bale(&["verify", bad.to_str().unwrap()]);
        damaged(&o, &format!("unsafe entry {name:?}"));
        let to = d.path().join(format!("out{i}"));
        let o = bale(&[
            "extract",
            bad.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]);
        damaged(&o, name);
        assert!(files_below(&to).is_empty(), "{:?}", files_below(&to));
    }
    // A chain that stays inside is fine.
    let good = d.path().join("good.bale");
    reforge(&app, &good, |entries| {
        entries.extend([
            dir("usr"),
            dir("usr/lib"),
            link("lib", "usr/lib"),
            link("lib64", "lib"),
            link("usr/lib/tool", "../../bin/tool"),
            link("deep", "lib64/tool"),
        ]);
        entries.sort_by(|a, b| a.path.cmp(&b.path));
    });
    ok(&bale(&["verify", good.to_str().unwrap()]));
    let to = d.path().join("good-out");
    ok(&bale(&[
        "extract",
        good.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]));
    assert_eq!(
        std::fs::read(to.join("deep")).unwrap(),
        std::fs::read(d.path().join("tree/bin/tool")).unwrap()
    );
}

/// Runs `bale args` under GNU time, returning its exit code, stderr and its own peak RSS in
/// KiB. The measure comes from a process started fresh by `time`: a child of this (large) test
/// process would inherit its peak through `exec` and report that instead.
fn bale_measured(args: &[&str]) -> (Option<i32>, String, u64) {
    let time = Path::new("/usr/bin/time");
    assert!(
        time.exists(),
        "GNU time (/usr/bin/time, Debian package `time`) measures the peak RSS"
    );
    let o = std::process::Command::new(time)
        .args(["-f", "maxrss_kb=%M"])
        .arg(bale_bin())
        .args(args)
        .output()
        .unwrap();
    let err = stderr(&o);
    let (err, measured) = err
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", err.trim_end()));
    let kb = measured
        .strip_prefix("maxrss_kb=")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no measure from time in: {err}\n{measured}"));
    let err = err
        .lines()
        .filter(|l| !l.starts_with("Command exited with non-zero status"))
        .collect::<Vec<_>>()
        .join("\n");
    (o.status.code(), err, kb)
}

/// A bundle whose table is `raw` (already encoded), declared as holding `declared` entries,
/// behind a tiny program: a file of a few MiB.
fn forge_table(out: &Path, raw: &[u8], declared: u64) {
    let stub = b"\x7fELF not really a program, never run".to_vec();
    let table = zstd::bulk::compress(raw, 9).unwrap();
    let header = Header {
        format: "bale-payload/1".into(),
        name: "bomb".into(),
        version: "1".into(),
        arch: "x86_64".into(),
        stub: format::Region {
            len: stub.len() as u64,
            sha256: format::hex(&format::sha256(&stub)),
        },
        table: format::TableInfo {
            len: table.len() as u64,
            raw_len: raw.len() as u64,
            sha256: format::hex(&format::sha256(&table)),
            entries: declared,
        },
        ..Default::default()
    };
    let hj = serde_json::to_vec(&header).unwrap();
    let table_offset = stub.len() as u64;
    let t = Trailer {
        stub_len: stub.len() as u64,
        payload_len: 0,
        table_offset,
        table_len: table.len() as u64,
        header_offset: table_offset + table.len() as u64,
        header_len: hj.len() as u64,
        header_sha256: format::sha256(&hj),
        file_len: table_offset + table.len() as u64 + hj.len() as u64 + TRAILER_LEN as u64,
        sig_len: 0,
        major: format::FORMAT_MAJOR,
        minor: format::FORMAT_MINOR,
    };
    let mut f = stub;
    f.extend_from_slice(&table);
    f.extend_from_slice(&hj);
    f.extend_from_slice(&t.encode());
    std::fs::write(out, f).unwrap();
}

/// F3: a table of millions of tiny entries that compresses to a few MiB. Before, `list`
/// decoded all of them (about 143 bytes each) before comparing the header's count: gigabytes.
/// Now the count is checked against the file before decoding, decoding stops at the count the
/// header declares, and memory stays bounded.
#[test]
fn a_table_built_to_exhaust_memory_is_refused_in_bounded_memory() {
    let d = tempfile::tempdir().unwrap();
    const N: u32 = 8_000_000;
    let mut raw = Vec::with_capacity(N as usize * 12);
    for i in 0..N {
        raw.push(1u8); // a directory
        raw.push(8);
        raw.extend_from_slice(format!("{i:08x}").as_bytes());
        raw.push(0o55); // mode, one varint byte
    }
    // The header tells the truth about the count: refused before decoding.
    let honest = d.path().join("honest.bale");
    forge_table(&honest, &raw, u64::from(N));
    // The header declares one entry: decoding stops at the second.
    let liar = d.path().join("liar.bale");
    forge_table(&liar, &raw, 1);
    drop(raw);
    for (bad, needle) in [
        (&honest, "the header declares 8000000 entries"),
        (&liar, "more entries than the 1 its header declares"),
    ] {
        let size = std::fs::metadata(bad).unwrap().len();
        assert!(size < 8 << 20, "the forged bundle is {size} bytes");
        let (code, err, rss_kb) = bale_measured(&["list", bad.to_str().unwrap()]);
        assert_eq!(code, Some(3), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(
            rss_kb < 128 * 1024,
            "`bale list` on a {size}-byte bundle peaked at {rss_kb} KiB"
        );
    }
}

/// F16: an entry that lists one stored frame many times (a small file declaring terabytes)
/// is refused by `verify`, as is an entry sharing only some of another's frames.
#[test]
fn repeated_or_partly_shared_frames_are_refused() {
    let (d, app) = built();
    let p = parts(&app);
    let tool = p.entries.iter().find(|e| e.path == "bin/tool").unwrap();
    let f0: Frame = tool.frames[0];
    let repeated = d.path().join("repeated.bale");
    reforge(&app, &repeated, |entries| {
        let e = entries.iter_mut().find(|e| e.path == "bin/tool").unwrap();
        e.frames = vec![f0; 100_000];
        e.size = f0.raw_len * 100_000;
    });
    let (code, err, _) = bale_measured(&["verify", repeated.to_str().unwrap()]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("repeats or overlaps an earlier frame"),
        "{err}"
    );
    assert!(err.contains("bad entry table at entry"), "{err}");

    let partial = d.path().join("partial.bale");
    reforge(&app, &partial, |entries| {
        let mut e = entries
            .iter()
            .find(|e| e.path == "bin/tool")
            .unwrap()
            .clone();
        e.path = "bin/tool2".into();
        e.frames.truncate(1);
        e.size = f0.raw_len;
        entries.push(e);
        entries.sort_by(|a, b| a.path.cmp(&b.path));
    });
    damaged(
        &bale(&["verify", partial.to_str().unwrap()]),
        "\"bin/tool2\" shares frames with \"bin/tool\" but not all of them",
    );
}

/// `verify --content` checks every content once and names a wrong content digest.
#[test]
fn content_digests_are_checked_once_per_content() {
    let (d, app) = built();
    ok(&bale(&[
        "verify",
        "--content",
        "-j",
        "3",
        app.to_str().unwrap(),
    ]));
    let bad = d.path().join("bad.bale");
    reforge(&app, &bad, |entries| {
        let e = entries
            .iter_mut()
            .find(|e| e.path == "etc/app/copy.yaml")
            .unwrap();
        e.sha256[0] ^= 1;
    });
    ok(&bale(&["verify", bad.to_str().unwrap()]));
    damaged(
        &bale(&["verify", "--content", bad.to_str().unwrap()]),
        "entry \"etc/app/copy.yaml\" is damaged: its content does not match",
    );
    // Extraction checks every file's content before its rename: the damaged one never
    // appears under its name.
    let to = d.path().join("out");
    damaged(
        &bale(&[
            "extract",
            bad.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ]),
        "etc/app/copy.yaml",
    );
    assert!(!to.join("etc/app/copy.yaml").exists());
}

/// F21: names with control characters are listed escaped, one line per entry, and header
/// strings too.
#[test]
fn control_characters_from_a_bundle_are_printed_escaped() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("evil\nfake"), b"1").unwrap();
    std::fs::write(tree.join("clear\x1b[2J"), b"2").unwrap();
    std::os::unix::fs::symlink("evil\nfake", tree.join("link\r")).unwrap();
    let app = d.path().join("app.bale");
    ok(&bale(&[
        "build",
        tree.to_str().unwrap(),
        "-o",
        app.to_str().unwrap(),
        "--name",
        "app\nversion:     9.9",
        "--version",
        "1\x1b[31m",
    ]));
    let o = bale(&["list", app.to_str().unwrap()]);
    ok(&o);
    assert_eq!(
        stdout(&o),
        ".bale\n.bale/sbom.cdx.json\nclear\\x1b[2J\nevil\\nfake\nlink\\r\n",
        "one line per entry"
    );
    let o = bale(&["list", "-l", app.to_str().unwrap()]);
    ok(&o);
    assert!(
        stdout(&o).contains("link\\r -> evil\\nfake\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        stdout(&o).lines().count(),
        5,
        "three entries, .bale/ and its SBOM"
    );
    let o = bale(&["info", app.to_str().unwrap()]);
    ok(&o);
    let info = stdout(&o);
    assert!(
        info.contains("name:        app\\nversion:     9.9\n"),
        "{info}"
    );
    assert!(info.contains("version:     1\\x1b[31m\n"), "{info}");
    assert!(!info.contains('\x1b'), "{info}");
    assert_eq!(info.matches("version:").count(), 2, "{info}");
    let o = bale(&["list", "--json", app.to_str().unwrap()]);
    ok(&o);
    assert_eq!(
        stdout(&o).lines().count(),
        5,
        "three entries, .bale/ and its SBOM"
    );
}

/// F20: each error names the file once and gives the system's reason once.
#[test]
fn errors_name_the_file_and_the_cause_once() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("x.bale");
    let o = bale(&["info", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "bale: {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );

    let (d2, app) = built();
    let p = parts(&app);
    let mut bytes = p.bytes.clone();
    bytes[p.trailer.table_offset as usize + 5] ^= 0x10;
    let got = format::hex(&format::sha256(
        &bytes[p.trailer.table_offset as usize..][..p.trailer.table_len as usize],
    ));
    let bad = d2.path().join("bad.bale");
    std::fs::write(&bad, &bytes).unwrap();
    let want = format!(
        "bale: {}: the bundle entry table does not match its SHA-256 (expected {}, got {got}): \
         the file is damaged; copy it again\n",
        bad.display(),
        p.header.table.sha256
    );
    for cmd in ["list", "verify"] {
        let o = bale(&[cmd, bad.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(stderr(&o), want, "{cmd}");
    }
}

/// F18: a process that swaps a directory of the target for a symlink while the extraction
/// runs gets nothing written outside the target: every write goes through descriptors opened
/// without following links. (The swap may or may not land during a given write; the check
/// is that nothing ever lands outside.)
#[test]
fn swapping_a_directory_for_a_symlink_during_extraction_writes_nothing_outside() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("d")).unwrap();
    for i in 0..3000 {
        std::fs::write(tree.join(format!("d/f{i:04}")), format!("file {i}")).unwrap();
    }
    let app = d.path().join("app.bale");
    build(&tree, &app);
    let outside = d.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    for round in 0..5 {
        let to = d.path().join(format!("out{round}"));
        std::fs::create_dir(&to).unwrap();
        let mut child = std::process::Command::new(bale_bin())
            .args([
                "extract",
                app.to_str().unwrap(),
                "--to",
                to.to_str().unwrap(),
            ])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (real, aside) = (to.join("d"), to.join("d-aside"));
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(matches!(status.code(), Some(0) | Some(1)), "{status:?}");
                break;
            }
            if std::fs::rename(&real, &aside).is_ok() {
                let _ = std::os::unix::fs::symlink(&outside, &real);
                std::thread::yield_now();
                let _ = std::fs::remove_file(&real);
                let _ = std::fs::rename(&aside, &real);
            }
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let escaped = files_below(&outside);
        assert!(
            escaped.is_empty(),
            "round {round}: written outside the target: {escaped:?}\n{err}"
        );
    }
}

/// F22: extracting again over a complete tree needs room only for what it adds and for the
/// files in flight, not for the whole tree a second time.
#[test]
fn re_extracting_over_a_complete_tree_needs_no_second_copy_of_free_space() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a small tmpfs and needs root (scripts/test.sh runs as root)"
    );
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    for i in 0..6u64 {
        std::fs::write(tree.join(format!("f{i}")), noise(1 << 20, i + 1)).unwrap();
    }
    let app = d.path().join("app.bale");
    build(&tree, &app);
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let m = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(m.success(), "mount tmpfs");
    let extract = || {
        bale(&[
            "extract",
            app.to_str().unwrap(),
            "--to",
            small.to_str().unwrap(),
            "-j",
            "1",
        ])
    };
    let first = extract();
    let second = extract();
    let same = std::process::Command::new("diff")
        .args(["-r", "-x", ".bale"])
        .arg(&tree)
        .arg(&small)
        .status()
        .unwrap();
    let _ = std::process::Command::new("umount").arg(&small).status();
    ok(&first);
    ok(&second);
    assert!(same.success(), "the re-extracted tree differs");
}
