//! Named bases through the real `bale` binary: `bale build -t` records the bundle in the local
//! bundle store, `FROM name:tag` finds it there from any directory, `bale images`, `bale tag`
//! and `bale rmi` look after it, a damaged entry is refused as damaged, and concurrent builds
//! into one store keep its index whole. No registry and no nodes.

mod common;

use common::oci::write;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `bale ARGS` with the store at `store` (through BALE_STORE, as a user would set it) and no
/// trust configuration from the caller.
fn bale_in(store: &Path, args: &[&str]) -> Output {
    Command::new(bale_bin())
        .args(args)
        .env("BALE_STORE", store)
        .env_remove("BALE_TRUSTED_KEYS")
        .output()
        .expect("run bale")
}

fn base_context(dir: &Path, greeting: &str) {
    write(&dir.join("etc/hello"), greeting);
    write(&dir.join("Kubefile"), "FROM scratch\nCOPY etc etc\n");
}

fn app_context(dir: &Path, from: &str) {
    write(
        &dir.join("Kubefile"),
        format!("FROM {from}\nCMD echo app\n"),
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A base built with `-t base:1` into a store under `root`, and an app context `FROM base:1`:
/// (store, the base's output file, the app's context).
fn base_in_store(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let store = root.join("store");
    let (base, app) = (root.join("base"), root.join("app"));
    base_context(&base, "hello\n");
    app_context(&app, "base:1");
    let base_out = root.join("base.bale");
    ok(&bale_in(
        &store,
        &["build", "-t", "base:1", s(&base), "-o", s(&base_out)],
    ));
    (store, base_out, app)
}

/// The store's `images --json` rows.
fn images(store: &Path) -> Vec<serde_json::Value> {
    let o = bale_in(store, &["images", "--json"]);
    ok(&o);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_tagged_base_is_found_by_name_listed_and_removed() {
    let root = tempfile::tempdir().unwrap();
    let (store, base_out, app) = base_in_store(root.path());

    // From another directory with no file of that name: the store's bundle is the base.
    let app_out = root.path().join("app.bale");
    let o = bale_in(
        &store,
        &["build", "-t", "app:2", s(&app), "-o", s(&app_out)],
    );
    ok(&o);
    let e = stderr(&o);
    assert!(e.contains("FROM base:1: base:1 ("), "{e}");
    assert!(!e.contains("is read as a directory"), "{e}");
    let p = parts(&app_out);
    assert!(p.entries.iter().any(|x| x.path == "etc/hello"), "{e}");

    // Listed: both tags, their digests, sizes and architectures.
    let rows = images(&store);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let base_row = rows.iter().find(|r| r["name"] == "base").unwrap();
    assert_eq!(base_row["tag"], "1");
    let root_hex = hex(&parts(&base_out).trailer.header_sha256);
    assert_eq!(base_row["digest"], format!("sha256:{root_hex}"));
    assert_eq!(
        base_row["size"],
        std::fs::metadata(&base_out).unwrap().len()
    );
    let table = stdout(&bale_in(&store, &["images"]));
    let head = table.lines().next().unwrap();
    for col in ["NAME", "TAG", "DIGEST", "SIZE", "CREATED", "ARCH"] {
        assert!(head.contains(col), "{table}");
    }
    assert!(table.contains(&root_hex[..12]), "{table}");

    // A second tag for the same bundle: its digest is then refused without --force.
    ok(&bale_in(&store, &["tag", "base:1", "kubernetes:v1.19.8"]));
    let o = bale_in(&store, &["rmi", &root_hex[..12]]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("still tagged"), "{}", stderr(&o));
    ok(&bale_in(&store, &["rmi", "kubernetes:v1.19.8"]));
    let stored = store.join("sha256").join(format!("{root_hex}.bale"));
    assert!(stored.is_file(), "base:1 still names it");

    // Removed: the file goes with its last tag, and FROM then names the three places looked.
    let o = bale_in(&store, &["rmi", "base:1"]);
    ok(&o);
    assert!(stdout(&o).contains("untagged: base:1"), "{}", stdout(&o));
    assert!(stdout(&o).contains("deleted: sha256:"), "{}", stdout(&o));
    assert!(!stored.exists());
    let o = bale_in(&store, &["build", s(&app), "-o", s(&app_out)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("Kubefile:1: FROM base:1: not found"), "{e}");
    assert!(e.contains("in the build context"), "{e}");
    assert!(
        e.contains(&format!("bundle store {}", store.display())),
        "{e}"
    );
    assert!(e.contains("no registry named"), "{e}");
    assert!(e.contains("bale build -t base:1"), "{e}");
    assert!(!e.contains("is read as a directory"), "{e}");
}

#[test]
fn a_path_in_the_context_wins_over_the_store() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let (base, app) = (root.path().join("base"), root.path().join("app"));
    base_context(&base, "from the store\n");
    ok(&bale_in(
        &store,
        &[
            "build",
            "-t",
            "base:1",
            s(&base),
            "-o",
            s(&root.path().join("b.bale")),
        ],
    ));
    app_context(&app, "base:1");
    write(&app.join("base:1/etc/local"), "from the context\n");
    let out = root.path().join("app.bale");
    let o = bale_in(
        &store,
        &["build", "--store", s(&store), s(&app), "-o", s(&out)],
    );
    ok(&o);
    let paths: Vec<String> = parts(&out).entries.into_iter().map(|e| e.path).collect();
    assert!(paths.iter().any(|p| p == "etc/local"), "{paths:?}");
    assert!(!paths.iter().any(|p| p == "etc/hello"), "{paths:?}");
}

#[test]
fn a_base_built_under_a_registry_name_needs_no_registry() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let (base, app) = (root.path().join("base"), root.path().join("app"));
    // Port 1 on loopback: nothing answers there, so any pull would fail.
    let name = "127.0.0.1:1/ns/base:1";
    base_context(&base, "hello\n");
    ok(&bale_in(
        &store,
        &[
            "build",
            "-t",
            name,
            s(&base),
            "-o",
            s(&root.path().join("b.bale")),
        ],
    ));
    app_context(&app, name);
    let o = bale_in(
        &store,
        &["build", s(&app), "-o", s(&root.path().join("a.bale"))],
    );
    ok(&o);
    assert!(
        stderr(&o).contains("from the bundle store"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_damaged_store_entry_is_refused_as_damaged() {
    let root = tempfile::tempdir().unwrap();
    let (store, base_out, app) = base_in_store(root.path());
    let p = parts(&base_out);
    let stored = store
        .join("sha256")
        .join(format!("{}.bale", hex(&p.trailer.header_sha256)));
    // A copy of its own, so the damage is the store's only.
    std::fs::remove_file(&base_out).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    let at = p.trailer.header_offset as usize + 2;
    bytes[at] ^= 0x20;
    std::fs::remove_file(&stored).unwrap();
    std::fs::write(&stored, &bytes).unwrap();
    let o = bale_in(
        &store,
        &["build", s(&app), "-o", s(&root.path().join("a.bale"))],
    );
    damaged(&o, "FROM base:1");

    // Another valid bundle under its name is damage too: the store is content-addressed.
    let other = root.path().join("other");
    base_context(&other, "something else\n");
    let other_out = root.path().join("other.bale");
    ok(&bale_in(&store, &["build", s(&other), "-o", s(&other_out)]));
    std::fs::copy(&other_out, &stored).unwrap();
    let o = bale_in(
        &store,
        &["build", s(&app), "-o", s(&root.path().join("a.bale"))],
    );
    damaged(&o, "not the sha256:");
}

#[test]
fn concurrent_builds_keep_the_index_whole() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("store");
    let n = 3;
    let mut children = Vec::new();
    for i in 0..n {
        let ctx = root.path().join(format!("c{i}"));
        base_context(&ctx, &format!("build {i}\n"));
        let out = root.path().join(format!("c{i}.bale"));
        children.push(
            Command::new(bale_bin())
                .args(["build", "--store", s(&store), "-t", &format!("c{i}:1")])
                .arg(&ctx)
                .arg("-o")
                .arg(&out)
                .env_remove("BALE_TRUSTED_KEYS")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("run bale build"),
        );
    }
    for c in children {
        ok(&c.wait_with_output().unwrap());
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap();
    let tags = index["tags"].as_object().unwrap();
    for i in 0..n {
        let rs = tags[&format!("c{i}:1")].as_array().unwrap();
        assert_eq!(rs.len(), 1);
        let digest = rs[0]["digest"].as_str().unwrap();
        let file = store
            .join("sha256")
            .join(format!("{}.bale", digest.trim_start_matches("sha256:")));
        assert!(file.is_file(), "{}", file.display());
    }
    assert_eq!(images(&store).len(), n);
    // Nothing half-written is left beside the entries.
    let names: Vec<String> = std::fs::read_dir(store.join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.ends_with(".bale")), "{names:?}");
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
