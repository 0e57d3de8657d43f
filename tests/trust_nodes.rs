//! Signed bundles on a test node. A bundle whose program pins its publisher's key installs;
//! signed again by a second publisher, a re-run gives the node's copy the new signatures.
//! The same program in front of a payload re-signed by another key is refused by `install`
//! before it connects anywhere (the node's copy and journal stay as they were), and by the agent
//! on a node that is handed such a file anyway, before it runs a step. A bundle damaged on the
//! admin host fails as damaged (exit 3) and leaves the node as it was.
//!
//! Needs root and the testbed (`scripts/test.sh` provides both).

mod common;

use common::testbed::*;
use common::*;
use std::path::Path;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_payload_re_signed_by_another_key_is_refused_by_install_and_by_the_agent() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let (publisher, fp) = keygen(d.path(), "publisher", &[], &[]);
    let (other, other_fp) = keygen(d.path(), "other", &[], &[]);
    let pinned = d.path().join("pinned.bale");
    ok(&bale(&[
        "build",
        s(&tree),
        "-o",
        s(&pinned),
        "--name",
        "pinned",
        "--sign",
        s(&publisher),
        "--trust",
        s(&pubkey(&publisher)),
    ]));
    // The payload rebuilt and signed by another key, behind the publisher's pinned program.
    let foreign = d.path().join("foreign.bale");
    ok(&bale(&[
        "build",
        s(&tree),
        "-o",
        s(&foreign),
        "--name",
        "pinned",
        "--version",
        "6.6.6",
        "--stub",
        s(&pinned),
        "--sign",
        s(&other),
    ]));
    let Some(bed) = Testbed::up(1, &[]) else {
        return;
    };
    let hosts = ["--masters", N1];
    let until = ["--until", "kernel"];

    // The publisher's bundle installs (through a node step, which the agent gates).
    let (o, _) = run_on(&pinned, "install", &hosts, &until);
    ok(&o);

    // Signed again (another publisher's signature added; no digest changes): a re-run gives
    // the node's copy the new signatures, without copying the bundle again.
    ok(&bale(&["sign", s(&pinned), "--key", s(&other)]));
    let (o, ev) = run_on(&pinned, "install", &hosts, &until);
    ok(&o);
    let note = ev
        .iter()
        .filter_map(|e| e["message"].as_str())
        .any(|m| m.contains("signatures replaced"));
    assert!(note, "no signature replacement reported: {}", stdout(&o));
    let sum = |p: &Path| {
        let o = std::process::Command::new("sha256sum")
            .arg(p)
            .output()
            .unwrap();
        stdout(&o)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let remote = on_ok("n1", "sha256sum /var/lib/bale/bundle.bale");
    assert!(
        remote.starts_with(&sum(&pinned)),
        "the node's copy is not the re-signed file: {remote}"
    );
    // And a further re-run has nothing to copy.
    let (o, ev) = run_on(&pinned, "install", &hosts, &until);
    ok(&o);
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "start" && e["phase"] == "upload"),
        "upload ran again"
    );

    let on_node = || {
        on_ok(
            "n1",
            "sha256sum /var/lib/bale/bundle.bale /var/lib/bale/journal.json",
        )
    };
    let before = on_node();

    // The re-signed one is refused before any connection: exit 4, both signers named.
    let (o, _) = run_on(&foreign, "install", &hosts, &until);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains(&other_fp) && e.contains(&fp), "{e}");
    assert!(
        !stdout(&o).contains("\"phase\":\"connect\""),
        "it connected: {}",
        stdout(&o)
    );
    assert_eq!(on_node(), before, "the refused install changed the node");

    // Handed to the node anyway, its agent refuses to run a step; the publisher's runs.
    let key = key();
    let kh = known_hosts_path();
    let o = std::process::Command::new("scp")
        .args(["-q", "-i", &key, "-o", &format!("UserKnownHostsFile={kh}")])
        .arg(&foreign)
        .arg(format!("root@{N1}:/root/foreign.bale"))
        .output()
        .expect("run scp");
    ok(&o);
    let o = on("n1", "/root/foreign.bale agent step kernel check");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains(&other_fp), "{}", stderr(&o));
    on_ok("n1", "/var/lib/bale/bundle.bale agent step kernel check");
    on_ok("n1", "rm -f /root/foreign.bale");

    // A bundle damaged on the admin host (one byte of a payload frame; its header and
    // signatures intact, so only the content can tell) fails as damaged: exit 3, and the
    // node keeps its copy and journal.
    let damaged = d.path().join("damaged.bale");
    ok(&bale(&[
        "build",
        s(&tree),
        "-o",
        s(&damaged),
        "--name",
        "pinned",
        "--version",
        "2.0.0",
        "--stub",
        s(&pinned),
        "--sign",
        s(&publisher),
    ]));
    let at = {
        let b = bale_payload::Bundle::open(&damaged).unwrap();
        let e = b.entries().unwrap();
        let big = e.iter().max_by_key(|e| e.size).unwrap();
        b.trailer.stub_len + big.frames[0].offset + big.frames[0].stored_len / 2
    };
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[at as usize] ^= 0x5a;
    std::fs::write(&damaged, &bytes).unwrap();
    let (o, _) = run_on(&damaged, "install", &hosts, &until);
    assert_eq!(o.status.code(), Some(3), "{}\n{}", stdout(&o), stderr(&o));
    assert_eq!(on_node(), before, "the damaged install changed the node");

    let (o, _) = run_on(&pinned, "reset", &hosts, &["--yes"]);
    ok(&o);
    bed.finish();
}
