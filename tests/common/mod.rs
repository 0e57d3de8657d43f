//! Helpers shared by the integration tests: running the built `bale`, making trees, forging
//! bundles the way an attacker with a hex editor and our own format code would, waiting on
//! conditions, and the one rule for a test that cannot run on this machine ([`skip`]).

#![allow(dead_code)]

use bale_payload::format::{self, Entry, Header, Trailer, TRAILER_LEN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod appliance;
pub mod events;
pub mod oci;
pub mod testbed;

// ---- a test that cannot run here, and waiting --------------------------------------------

// Each test program uses some of these.
#[allow(unused_imports)]
pub use bale_test_support::{
    is_root, poll_ok, poll_until, skip, skips_forbidden_by, REQUIRE_ALL, REQUIRE_CROSS,
    REQUIRE_TESTBED,
};

// ---- the bale binary and bundles ------------------------------------------------------------

pub fn bale_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bale"))
}

/// `bale keygen -o DIR/NAME EXTRA...` with `env` (and no signing or trust variables from the
/// caller's environment): the private key's path and the key's fingerprint.
#[track_caller]
pub fn keygen(dir: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> (PathBuf, String) {
    let key = dir.join(name);
    let o = Command::new(bale_bin())
        .args(["keygen", "-o"])
        .arg(&key)
        .args(extra)
        .env_remove("BALE_TRUSTED_KEYS")
        .env_remove("BALE_KEY_PASSPHRASE")
        .envs(env.iter().copied())
        .output()
        .expect("run bale keygen");
    ok(&o);
    let fp = stdout(&o).trim().to_string();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    (key, fp)
}

/// The public key file `bale keygen` writes beside the private key `key`.
pub fn pubkey(key: &Path) -> PathBuf {
    PathBuf::from(format!("{}.pub", key.display()))
}

/// `cp -al FROM TO`: a copy of a tree made of hard links, for build contexts assembled from
/// inputs that are large and only read.
pub fn link_tree(from: &Path, to: &Path) {
    let o = Command::new("cp")
        .arg("-al")
        .arg(from)
        .arg(to)
        .output()
        .expect("run cp");
    ok(&o);
}

/// `bale build -t TAG --offline --platform linux/amd64,linux/arm64 -o OUT CTX`: one bundle for
/// both, its x86_64 program this test build of bale, its aarch64 program `arm` (copied into a
/// stub dir beside the context, outside it).
pub fn build_for_amd64_and_arm64(ctx: &Path, tag: &str, out: &Path, arm: &Path) {
    let stubs = ctx.with_extension("stubs");
    std::fs::create_dir_all(&stubs).expect("make the stub dir");
    std::fs::copy(arm, stubs.join("bale-aarch64")).expect("copy the aarch64 bale");
    let s = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    ok(&bale(&[
        "build",
        "-t",
        tag,
        "--offline",
        "--platform",
        "linux/amd64,linux/arm64",
        "--stub-dir",
        &s(&stubs),
        "-o",
        &s(out),
        &s(ctx),
    ]));
}

/// A directory for fixtures that live as long as the test program (statics are never dropped,
/// so a tempdir there would be left behind on every run): one per name under Cargo's target
/// tmp dir, emptied when it is taken.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch dir under the target dir");
    dir
}

/// The admin side's state (`BALE_STATE`: the record of each cluster's members) for the runs
/// of this test program: under Cargo's target tmp dir, never the user's, and emptied by
/// [`fresh_admin_state`] when a testbed comes up, so no test finds another test's record.
pub fn admin_state() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bale-state-{}", std::process::id()))
}

/// Forgets every cluster record of this test program.
pub fn fresh_admin_state() {
    let _ = std::fs::remove_dir_all(admin_state());
}

pub fn bale(args: &[&str]) -> Output {
    Command::new(bale_bin())
        .args(args)
        .env("BALE_STORE", test_store())
        .env("BALE_STATE", admin_state())
        .output()
        .expect("run bale")
}

/// The bundle store the tests' builds record into (`build -t`), unless a test names its own:
/// under Cargo's target tmp dir, not the user's, emptied when a test program first takes it
/// (what it holds outlives the tests' own files). Shared by the program's tests, which the
/// store's lock allows.
pub fn test_store() -> PathBuf {
    static STORE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    STORE
        .get_or_init(|| match std::env::var_os("BALE_STORE") {
            Some(dir) => PathBuf::from(dir),
            None => scratch("bale-store"),
        })
        .clone()
}

pub fn run(cmd: &Path, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("BALE_STATE", admin_state())
        .output()
        .expect("run bundle")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts success; on failure the message repeats the run's failure lines (`--json`'s fail,
/// clean-up and stopped events, and the summary) after the whole output, because a truncated CI
/// log keeps only the end.
#[track_caller]
pub fn ok(o: &Output) {
    if o.status.success() {
        return;
    }
    let out = stdout(o);
    let failures: Vec<&str> = out
        .lines()
        .filter(|l| {
            ["fail", "clean-up", "stopped", "summary"]
                .iter()
                .any(|e| l.contains(&format!("\"event\":\"{e}\"")))
        })
        .collect();
    panic!(
        "failed ({:?}):\nstdout: {out}\nstderr: {}\nwhat failed:\n{}",
        o.status,
        stderr(o),
        failures.join("\n")
    );
}

/// Asserts a bundle-damage failure (exit 3) whose message contains `needle`.
#[track_caller]
pub fn damaged(o: &Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(3), "expected exit 3, stderr: {e}");
    assert!(e.contains(needle), "expected {needle:?} in: {e}");
}

/// A small tree with every kind of entry, a multi-frame file and a duplicate.
pub fn sample_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc/app")).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::write(
        dir.join("etc/app/config.yaml"),
        "replicas: 3\nimage: nginx\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/app/copy.yaml"), "replicas: 3\nimage: nginx\n").unwrap();
    std::fs::write(dir.join("etc/empty-file"), "").unwrap();
    // 5 MiB of mixed content: several frames of 2 MiB, partly compressible.
    let mut big = Vec::with_capacity(5 << 20);
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..(5 << 20) {
        if i % 4096 < 2048 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            big.push(x as u8);
        } else {
            big.push(b'a' + (i % 26) as u8);
        }
    }
    std::fs::write(dir.join("bin/tool"), &big).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("app/config.yaml", dir.join("etc/current")).unwrap();
}

/// `len` bytes that do not compress (xorshift from `seed`): bundles big enough to cut mid-copy.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The sample tree built into `app.bale` in a fresh temporary directory (kept alive by the
/// returned guard).
pub fn built() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let out = d.path().join("app.bale");
    build(&tree, &out);
    (d, out)
}

pub fn build(tree: &Path, out: &Path) {
    ok(&bale(&[
        "build",
        tree.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--name",
        "sample",
        "--version",
        "1.2.3",
    ]));
}

/// The parts of a bundle file, decoded with no checks beyond what parsing needs.
pub struct Parts {
    pub bytes: Vec<u8>,
    pub trailer: Trailer,
    pub header: Header,
    pub entries: Vec<Entry>,
}

pub fn parts(path: &Path) -> Parts {
    let bytes = std::fs::read(path).unwrap();
    let mut tb = [0u8; TRAILER_LEN];
    tb.copy_from_slice(&bytes[bytes.len() - TRAILER_LEN..]);
    let trailer = Trailer::decode(&tb, bytes.len() as u64).unwrap();
    let h = &bytes[trailer.header_offset as usize..][..trailer.header_len as usize];
    let header: Header = serde_json::from_slice(h).unwrap();
    let t = &bytes[trailer.table_offset as usize..][..trailer.table_len as usize];
    let raw = zstd::bulk::decompress(t, header.table.raw_len as usize).unwrap();
    let entries = format::decode_table(&raw, trailer.payload_len).unwrap();
    Parts {
        bytes,
        trailer,
        header,
        entries,
    }
}

/// Writes a bundle from a stub, payload bytes and entries, with every digest recomputed: a
/// forgery that passes all integrity checks, so only the semantic checks can stop it.
pub fn forge(out: &Path, stub: &[u8], payload: &[u8], entries: &[Entry], base: &Header) {
    let raw = format::encode_table(entries);
    let table = zstd::bulk::compress(&raw, 3).unwrap();
    let mut header = base.clone();
    header.stub.len = stub.len() as u64;
    header.stub.sha256 = format::hex(&format::sha256(stub));
    header.table.len = table.len() as u64;
    header.table.raw_len = raw.len() as u64;
    header.table.sha256 = format::hex(&format::sha256(&table));
    header.table.entries = entries.len() as u64;
    let hj = serde_json::to_vec(&header).unwrap();
    let table_offset = (stub.len() + payload.len()) as u64;
    let header_offset = table_offset + table.len() as u64;
    let t = Trailer {
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
    let mut f = Vec::new();
    f.extend_from_slice(stub);
    f.extend_from_slice(payload);
    f.extend_from_slice(&table);
    f.extend_from_slice(&hj);
    f.extend_from_slice(&t.encode());
    std::fs::write(out, f).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Re-signs a bundle after `edit` changed its entries.
pub fn reforge(src: &Path, out: &Path, edit: impl FnOnce(&mut Vec<Entry>)) {
    let p = parts(src);
    let mut entries = p.entries.clone();
    edit(&mut entries);
    let stub = &p.bytes[..p.trailer.stub_len as usize];
    let payload = &p.bytes[p.trailer.stub_len as usize..p.trailer.table_offset as usize];
    forge(out, stub, payload, &entries, &p.header);
}

/// Asserts that two trees hold the same files, modes aside, symlinks compared as links. The
/// SBOM directory every build adds (`.bale/`) is left out when the source tree has none.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let mut diff = Command::new("diff");
    diff.args(["-r", "--no-dereference"]);
    if !a.join(".bale").exists() {
        diff.args(["-x", ".bale"]);
    }
    let diff = diff.arg(a).arg(b).output().expect("run diff");
    assert!(diff.status.success(), "{}", stdout(&diff));
}

/// Lists every file below `dir` (relative paths), to show what an extraction left behind.
pub fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
            out.push(rel);
        }
    }
    out.sort();
    out
}

/// The aarch64 release `bale` (`BALE_AARCH64_BIN`, or `out/release/bale-aarch64`) when it and
/// `qemu-aarch64-static` are there; otherwise None, and the test [`skip`]s (or fails, also
/// under BALE_REQUIRE_CROSS).
pub fn aarch64_bale() -> Option<PathBuf> {
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
        skip(&[REQUIRE_CROSS], &msg);
        return None;
    }
    Some(p)
}

/// Runs an aarch64 program under qemu-user.
pub fn qemu(bin: &Path, args: &[&str]) -> Output {
    Command::new("qemu-aarch64-static")
        .arg(bin)
        .args(args)
        .output()
        .expect("run qemu-aarch64-static")
}
