//! Signed bundles end to end through the real `bale` binary: keygen, build --sign, sign,
//! verify with keys, directories and revocation, the stock `ssh-keygen -Y verify` on an
//! exported signature, tampering and bad input, and keys baked into the program refusing a
//! foreign payload before `install` connects anywhere.

mod common;

use bale_payload::format::TRAILER_LEN;
use bale_payload::Bundle;
use common::*;
use std::path::Path;
use std::process::{Command, Output};

/// Runs `prog` with `args`, without the caller's trust settings leaking in.
fn cmd(prog: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(prog);
    c.args(args)
        .env_remove("BALE_TRUSTED_KEYS")
        .env_remove("BALE_KEY_PASSPHRASE")
        .env("BALE_STORE", test_store());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bale")
}

fn b(args: &[&str]) -> Output {
    cmd(&bale_bin(), args, &[])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[track_caller]
fn exit(o: &Output, code: i32, needle: &str) {
    let all = format!("{}{}", stdout(o), stderr(o));
    assert_eq!(
        o.status.code(),
        Some(code),
        "expected exit {code}, got {:?}:\n{all}",
        o.status
    );
    assert!(all.contains(needle), "expected {needle:?} in:\n{all}");
}

fn build(tree: &Path, out: &Path, version: &str, extra: &[&str]) {
    let mut args = vec![
        "build",
        s(tree),
        "-o",
        s(out),
        "--name",
        "sample",
        "--version",
        version,
    ];
    args.extend_from_slice(extra);
    ok(&b(&args));
}

#[test]
fn sign_verify_rotate_revoke_and_check_with_stock_ssh_keygen() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let (k1, fp1) = keygen(d.path(), "k1", &["--comment", "release 2026"], &[]);
    let pass = d.path().join("pass");
    std::fs::write(&pass, "rotate me\n").unwrap();
    let (k2, fp2) = keygen(d.path(), "k2", &["--passphrase-file", s(&pass)], &[]);
    assert!(std::fs::read_to_string(&k2)
        .unwrap()
        .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    // keygen never overwrites.
    exit(&b(&["keygen", "-o", s(&k1)]), 1, "already exists");

    let app = d.path().join("app.bale");
    build(&tree, &app, "1.0", &["--sign", s(&k1)]);
    let with = |key: &Path| {
        let pk = pubkey(key);
        b(&["verify", "--key", s(&pk), s(&app)])
    };
    exit(&with(&k1), 0, &format!("signed by trusted key {fp1}"));
    exit(
        &b(&["verify", s(&app)]),
        0,
        &format!("signed by unknown key {fp1}"),
    );
    exit(&with(&k2), 4, &fp2);

    // An unsigned bundle: stated without trust, refused with it.
    let plain = d.path().join("plain.bale");
    build(&tree, &plain, "1.0", &[]);
    exit(&b(&["verify", s(&plain)]), 0, "unsigned");
    exit(
        &b(&["verify", "--key", s(&pubkey(&k1)), s(&plain)]),
        4,
        "unsigned",
    );
    // Trust from the environment counts the same.
    let env_pub = pubkey(&k1);
    exit(
        &cmd(
            &bale_bin(),
            &["verify", s(&plain)],
            &[("BALE_TRUSTED_KEYS", s(&env_pub))],
        ),
        4,
        "BALE_TRUSTED_KEYS",
    );

    // The stock tool checks the exported signature, and not against another bundle's root.
    let exp = d.path().join("export");
    let o = b(&["signatures", "export", s(&app), "-o", s(&exp)]);
    ok(&o);
    assert!(
        stdout(&o).contains("ssh-keygen -Y verify"),
        "{}",
        stdout(&o)
    );
    let root = std::fs::read(exp.join("root.bin")).unwrap();
    let bytes = std::fs::read(&app).unwrap();
    let t = &bytes[bytes.len() - TRAILER_LEN..];
    assert_eq!(root, t[48..80].to_vec());
    if bale_test_support::have("ssh-keygen") {
        let stock = |root: &Path| {
            Command::new("ssh-keygen")
                .args(["-Y", "verify", "-f", "allowed_signers", "-I", "signer-1"])
                .args(["-n", "bale-bundle", "-s", "signature-1.sig"])
                .current_dir(&exp)
                .stdin(std::fs::File::open(root).unwrap())
                .output()
                .unwrap()
        };
        let o = stock(&exp.join("root.bin"));
        ok(&o);
        assert!(
            stdout(&o).contains("Good \"bale-bundle\" signature"),
            "{}",
            stdout(&o)
        );
        let v2 = d.path().join("v2.bale");
        build(&tree, &v2, "2.0", &[]);
        let other = d.path().join("other-root.bin");
        std::fs::write(&other, Bundle::open(&v2).unwrap().root()).unwrap();
        assert_ne!(std::fs::read(&other).unwrap(), root);
        assert!(!stock(&other).status.success());
    } else {
        skip(&[], "ssh-keygen is missing: apt-get install openssh-client");
    }

    // Key rotation: a second signature, by an encrypted key; either key is trusted alone.
    exit(&b(&["sign", s(&app), "--key", s(&k2)]), 1, "passphrase");
    ok(&cmd(
        &bale_bin(),
        &["sign", s(&app), "--key", s(&k2)],
        &[("BALE_KEY_PASSPHRASE", "rotate me")],
    ));
    exit(&with(&k2), 0, &format!("signed by trusted key {fp2}"));
    exit(&with(&k1), 0, &format!("signed by trusted key {fp1}"));
    let info = stdout(&b(&["info", s(&app)]));
    assert!(
        info.contains(&format!("{fp1} (release 2026)")) && info.contains(&fp2),
        "{info}"
    );
    // Signing never touched the payload: the bytes up to the end of the header are the same.
    let signed = std::fs::read(&app).unwrap();
    let unsigned = std::fs::read(&plain).unwrap();
    let keep = Bundle::open(&app).unwrap().trailer.sig_offset() as usize;
    assert_eq!(signed[..keep], unsigned[..keep]);
    ok(&b(&["verify", s(&app)]));

    // A trusted-keys directory with a revocation: k2 revoked, so only k1 counts.
    let dir = d.path().join("trusted");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(pubkey(&k1), dir.join("k1.pub")).unwrap();
    std::fs::copy(pubkey(&k2), dir.join("k2.pub")).unwrap();
    std::fs::write(dir.join("revoked"), format!("# rotated out\n{fp2}\n")).unwrap();
    exit(
        &b(&["verify", "--trusted-keys", s(&dir), s(&app)]),
        0,
        &format!("signed by trusted key {fp1} (also signed by revoked key {fp2}"),
    );
    let only2 = d.path().join("only2.bale");
    ok(&cmd(
        &bale_bin(),
        &[
            "sign",
            s(&plain),
            "-o",
            s(&only2),
            "--key",
            s(&k2),
            "--passphrase-file",
            s(&pass),
        ],
        &[],
    ));
    exit(
        &b(&["verify", "--trusted-keys", s(&dir), s(&only2)]),
        4,
        &format!("signed only by revoked key {fp2}"),
    );
}

#[test]
fn tampering_truncation_and_bad_keys() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let (k1, _) = keygen(d.path(), "k1", &[], &[]);
    let app = d.path().join("app.bale");
    build(&tree, &app, "1.0", &["--sign", s(&k1)]);
    let pk = pubkey(&k1);

    // A changed payload with a valid digest chain (a rebuild) under the original signature:
    // the signature no longer verifies over the root, which is damage (exit 3), trust or not.
    std::fs::write(tree.join("etc/app/config.yaml"), "changed: true\n").unwrap();
    let tampered = d.path().join("tampered.bale");
    build(&tree, &tampered, "1.0", &[]);
    let block = Bundle::open(&app)
        .unwrap()
        .signature_block()
        .unwrap()
        .unwrap();
    let t = Bundle::open(&tampered).unwrap();
    bale_payload::sigblock::write_with_signature_block(&t, &block, &tampered).unwrap();
    damaged(
        &b(&["verify", "--key", s(&pk), s(&tampered)]),
        "does not match this bundle",
    );
    damaged(&b(&["verify", s(&tampered)]), "changed after it was signed");

    // A truncated signature block.
    let cut = d.path().join("cut.bale");
    let a = Bundle::open(&app).unwrap();
    bale_payload::sigblock::write_with_signature_block(&a, &block[..block.len() - 50], &cut)
        .unwrap();
    damaged(
        &b(&["verify", "--key", s(&pk), s(&cut)]),
        "signature block is damaged",
    );
    // A file cut inside its signature block has no trailer any more: damaged too.
    let short = d.path().join("short.bale");
    let bytes = std::fs::read(&app).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() - TRAILER_LEN - 10]).unwrap();
    assert_eq!(b(&["verify", s(&short)]).status.code(), Some(3));

    // A private key readable by others: refused, naming the file and the fix; nothing written.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&k1, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::read(&cut).unwrap();
    exit(
        &b(&["sign", s(&cut), "--key", s(&k1)]),
        1,
        &format!("chmod 600 {}", s(&k1)),
    );
    assert_eq!(std::fs::read(&cut).unwrap(), before);
    std::fs::set_permissions(&k1, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Signing on top of a damaged block is refused; --replace starts over.
    assert_eq!(
        b(&["sign", s(&cut), "--key", s(&k1)]).status.code(),
        Some(3)
    );
    ok(&b(&["sign", s(&cut), "--key", s(&k1), "--replace"]));
    exit(
        &b(&["verify", "--key", s(&pk), s(&cut)]),
        0,
        "signed by trusted key",
    );

    // A key of another type, as a signing key and as a trusted key.
    if bale_test_support::have("ssh-keygen") {
        let ecdsa = d.path().join("ecdsa");
        ok(&Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-N", "", "-f", s(&ecdsa)])
            .output()
            .unwrap());
        exit(&b(&["sign", s(&app), "--key", s(&ecdsa)]), 1, "ed25519");
        exit(
            &b(&["verify", "--key", s(&pubkey(&ecdsa)), s(&app)]),
            1,
            "ed25519",
        );
    } else {
        skip(&[], "ssh-keygen is missing: apt-get install openssh-client");
    }
    // A key file that is no key.
    let junk = d.path().join("junk.pub");
    std::fs::write(&junk, "not a key\n").unwrap();
    exit(
        &b(&["verify", "--key", s(&junk), s(&app)]),
        1,
        "junk.pub line 1",
    );
}

#[test]
fn baked_keys_refuse_a_foreign_payload_before_install_connects() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let (publisher, fp) = keygen(d.path(), "publisher", &[], &[]);
    let (other, other_fp) = keygen(d.path(), "other", &[], &[]);
    let pinned = d.path().join("pinned.bale");
    build(
        &tree,
        &pinned,
        "1.0",
        &["--sign", s(&publisher), "--trust", s(&pubkey(&publisher))],
    );
    // Its own program trusts the publisher: plain `./app.bale verify` checks the signature.
    exit(
        &run(&pinned, &["verify"]),
        0,
        &format!("signed by trusted key {fp}"),
    );

    // A validly signed payload by another key, in front of the very same pinned program.
    let foreign = d.path().join("foreign.bale");
    build(
        &tree,
        &foreign,
        "2.0",
        &["--stub", s(&pinned), "--sign", s(&other)],
    );
    exit(&b(&["verify", s(&foreign)]), 0, "signed by unknown key");
    exit(&run(&foreign, &["verify"]), 4, &other_fp);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let o = run(
        &foreign,
        &["install", "--masters", "127.0.0.1", "--port", &port],
    );
    exit(&o, 4, "refusing an untrusted bundle");
    let e = stderr(&o);
    assert!(
        e.contains(&other_fp) && e.contains(&fp) && e.contains("foreign.bale"),
        "{e}"
    );
    assert!(e.contains("keys baked into this program"), "{e}");

    // An unsigned payload is refused too; signed by the publisher afterwards, it passes.
    let unsigned = d.path().join("unsigned.bale");
    build(&tree, &unsigned, "3.0", &["--stub", s(&pinned)]);
    exit(&run(&unsigned, &["verify"]), 4, "unsigned");
    ok(&b(&["sign", s(&unsigned), "--key", s(&publisher)]));
    exit(&run(&unsigned, &["verify"]), 0, "signed by trusted key");

    // The stub without its slot filled is the same program: the pins are in the program part,
    // so they are covered by the header's stub digest and so by the signature.
    let h = Bundle::open(&pinned).unwrap();
    let plain = d.path().join("plain.bale");
    build(&tree, &plain, "1.0", &[]);
    let p = Bundle::open(&plain).unwrap();
    assert_eq!(h.trailer.stub_len, p.trailer.stub_len);
    assert_ne!(h.header.stub.sha256, p.header.stub.sha256);
}

#[test]
fn unsigned_builds_stay_byte_identical() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let one = d.path().join("one.bale");
    let two = d.path().join("two.bale");
    build(&tree, &one, "1.0", &[]);
    build(&tree, &two, "1.0", &[]);
    let a = std::fs::read(&one).unwrap();
    assert_eq!(a, std::fs::read(&two).unwrap());
    // Format 1.0 as ever: minor 0, bytes 88..104 of the trailer zero.
    let t = &a[a.len() - TRAILER_LEN..];
    assert_eq!(&t[88..104], &[0u8; 16]);
    assert_eq!(u16::from_le_bytes([t[118], t[119]]), 0);
    // Signed, then with its signatures dropped again: the very same bytes.
    let (k, _) = keygen(d.path(), "k", &[], &[]);
    ok(&b(&["sign", s(&one), "--key", s(&k)]));
    let signed = std::fs::read(&one).unwrap();
    let t = &signed[signed.len() - TRAILER_LEN..];
    assert_eq!(u16::from_le_bytes([t[118], t[119]]), 1);
    let bundle = Bundle::open(&one).unwrap();
    bale_payload::sigblock::write_with_signature_block(&bundle, b"", &one).unwrap();
    assert_eq!(std::fs::read(&one).unwrap(), a);
}

#[test]
fn a_kubefile_build_signs_and_pins_too() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    std::fs::create_dir_all(ctx.join("etc")).unwrap();
    std::fs::write(ctx.join("etc/app.conf"), "a = 1\n").unwrap();
    std::fs::write(
        ctx.join("Kubefile"),
        "FROM scratch\nCOPY etc/ etc/\nCMD true\n",
    )
    .unwrap();
    let (k, fp) = keygen(d.path(), "k", &[], &[]);
    let out = d.path().join("app.bale");
    let pk = pubkey(&k);
    let o = b(&[
        "build",
        "-t",
        "app:1",
        "-o",
        s(&out),
        "--offline",
        "--sign",
        s(&k),
        "--trust",
        s(&pk),
        s(&ctx),
    ]);
    ok(&o);
    exit(
        &run(&out, &["verify"]),
        0,
        &format!("signed by trusted key {fp}"),
    );
    // No baked stub is left next to the output.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".stub-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
