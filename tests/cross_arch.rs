//! An aarch64 bundle, built here with an aarch64 bale as stub, verified and extracted by that
//! aarch64 bale under qemu-user.
//!
//! Needs the release binary from `scripts/build-release.sh aarch64` and `qemu-aarch64-static`.
//! `scripts/test.sh` provides both and sets BALE_REQUIRE_CROSS=1, so there a missing piece fails
//! the test instead of skipping it.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn aarch64_bale() -> Option<PathBuf> {
    let p = std::env::var_os("BALE_AARCH64_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("out/release/bale-aarch64"));
    let qemu = Command::new("qemu-aarch64-static")
        .arg("--version")
        .output();
    let ready = p.exists() && qemu.is_ok_and(|o| o.status.success());
    if !ready {
        let msg = format!(
            "aarch64 bale ({}) or qemu-aarch64-static missing: run scripts/build-release.sh aarch64",
            p.display()
        );
        assert!(std::env::var_os("BALE_REQUIRE_CROSS").is_none(), "{msg}");
        eprintln!("SKIP: {msg}");
        return None;
    }
    Some(p)
}

fn qemu(bin: &Path, args: &[&str]) -> std::process::Output {
    Command::new("qemu-aarch64-static")
        .arg(bin)
        .args(args)
        .output()
        .expect("run qemu-aarch64-static")
}

#[test]
fn aarch64_bundle_verifies_and_extracts_under_qemu() {
    let Some(arm) = aarch64_bale() else { return };
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let app = d.path().join("arm.bale");
    // Built on this host, for the other architecture.
    ok(&bale(&[
        "build",
        tree.to_str().unwrap(),
        "-o",
        app.to_str().unwrap(),
        "--stub",
        arm.to_str().unwrap(),
        "--name",
        "arm",
    ]));
    let o = bale(&["info", app.to_str().unwrap()]);
    ok(&o);
    assert!(
        stdout(&o).contains("arch:        aarch64"),
        "{}",
        stdout(&o)
    );

    // The bundle runs as an aarch64 program and acts on itself.
    let o = qemu(&app, &["info"]);
    ok(&o);
    assert!(stdout(&o).contains("arch:        aarch64"));
    let o = qemu(&app, &["verify"]);
    ok(&o);
    assert!(stdout(&o).contains(": OK,"), "{}", stdout(&o));
    let to = d.path().join("out");
    ok(&qemu(&app, &["extract", "--to", to.to_str().unwrap()]));
    assert_same_tree(&tree, &to);

    // And it catches damage the same way.
    let mut bytes = std::fs::read(&app).unwrap();
    let p = parts(&app);
    let tool = p.entries.iter().find(|e| e.path == "bin/tool").unwrap();
    bytes[(p.trailer.stub_len + tool.frames[0].offset + 5) as usize] ^= 1;
    let bad = d.path().join("bad.bale");
    std::fs::write(&bad, bytes).unwrap();
    let o = qemu(&arm, &["verify", bad.to_str().unwrap()]);
    damaged(&o, "entry \"bin/tool\" is damaged");
}
