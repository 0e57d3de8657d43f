//! The image set of `scripts/scale-set.sh` (2 GB in the test command: about 300 images, base
//! layers shared by many, a 600 MB layer, one multi-arch index) end to end on three test nodes:
//! built into one bundle, installed with `--masters n1 --nodes n2,n3`, every image pulled by its
//! original name on every node through that node's own registry with the digest the set gave
//! it, and reset leaving nothing. Correctness only: `scripts/bench.sh scale GB` does the timing.
//!
//! Needs root, the testbed, examples/appliance/fetch-runtime.sh's runtime and the set, whose
//! directory `BALE_SCALE_SET` names (scripts/test.sh makes it with `scripts/scale-set.sh 2`,
//! cached by its parameters).

mod common;

use common::testbed::*;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The set's directory, or a skip (a failure under BALE_REQUIRE_ALL) when none was made.
fn image_set() -> Option<PathBuf> {
    match std::env::var_os("BALE_SCALE_SET").map(PathBuf::from) {
        Some(dir) if dir.join("set.json").is_file() => Some(dir),
        Some(dir) => panic!(
            "BALE_SCALE_SET={} holds no set.json: make it with scripts/scale-set.sh",
            dir.display()
        ),
        None => {
            skip(
                &[REQUIRE_TESTBED],
                "BALE_SCALE_SET is not set (scripts/scale-set.sh 2 prints the directory)",
            );
            None
        }
    }
}

/// name -> digest of every image the set's layout names (a multi-arch image: its index).
fn set_digests(set: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read(set.join("images/scale/index.json")).expect("the set's index.json");
    let index: serde_json::Value = serde_json::from_slice(&text).expect("the set's index.json");
    index["manifests"]
        .as_array()
        .expect("manifests in the set's index.json")
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .expect("every image in the set is named")
                    .to_string(),
                m["digest"].as_str().expect("a digest").to_string(),
            )
        })
        .collect()
}

/// The build context: the set and the appliance's runtime, as hard links (no second copy).
fn context(set: &Path, dir: &Path) -> PathBuf {
    let runtime = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/appliance/runtime");
    assert!(
        runtime.join("bin/containerd").exists(),
        "examples/appliance/runtime is missing: run examples/appliance/fetch-runtime.sh"
    );
    let ctx = dir.join("ctx");
    link_tree(set, &ctx);
    link_tree(&runtime, &ctx.join("runtime"));
    ctx
}

/// Pulls every name in `names` on `node` by its original name through the node's registry,
/// four at a time: each image's root (manifest or index) hashed on the node, then all its
/// content fetched by ctr, which checks every blob against its digest; the image is removed
/// again (content fetch unpacks nothing, so the node holds each image once and only for a
/// moment). The digest each name resolved to.
fn pull_all(node: &str, names: &[&String]) -> BTreeMap<String, String> {
    let list = names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let script = format!(
        "cat > /tmp/scale-list <<'LIST'\n{list}\nLIST\n\
         pull() {{\n\
           set -o pipefail\n\
           hosts=/etc/containerd/certs.d\n\
           root=$(ctr -n scale content fetch-object --hosts-dir $hosts \"$1\" | sha256sum) \
             || {{ echo \"FAILED $1: its manifest\"; return 255; }}\n\
           ctr -n scale content fetch --hosts-dir $hosts \"$1\" >/tmp/scale-fetch.$$ 2>&1 \
             || {{ echo \"FAILED $1: $(tail -n 3 /tmp/scale-fetch.$$)\"; return 255; }}\n\
           ctr -n scale images rm --sync \"$1\" >/dev/null\n\
           echo \"$1 sha256:${{root%% *}}\"\n\
         }}\n\
         export -f pull\n\
         xargs -P 4 -I{{}} bash -c 'pull \"$1\"' _ {{}} < /tmp/scale-list"
    );
    let t = std::time::Instant::now();
    let out = on_ok(node, &script);
    eprintln!(
        "{node}: {} images pulled in {:.1} s",
        names.len(),
        t.elapsed().as_secs_f64()
    );
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect()
}

#[test]
fn a_2gb_set_of_300_images_builds_installs_on_three_nodes_pulls_everywhere_and_resets() {
    let Some(set) = image_set() else {
        return;
    };
    let want = set_digests(&set);
    assert!(want.len() >= 250, "{} images in the set", want.len());
    let dir = scratch("scale_nodes");
    let ctx = context(&set, &dir);
    let bundle = dir.join("scale.bale");
    ok(&bale(&[
        "build",
        "-f",
        ctx.join("Kubefile").to_str().unwrap(),
        "--offline",
        "-o",
        bundle.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]));
    // The context is only needed for the build: the nodes share this machine's disk.
    std::fs::remove_dir_all(&ctx).expect("remove the build context");
    // Each node's data dir is a directory of this machine's disk: say plainly when it cannot
    // hold three copies of the bundle, rather than fail somewhere in the copy.
    let size = std::fs::metadata(&bundle).expect("the bundle").len();
    let need = size * 3 + size / 4 + (1 << 30);
    let fs = nix::sys::statvfs::statvfs(&dir).expect("statvfs of the target dir");
    let free = fs.blocks_available() * fs.fragment_size();
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    assert!(
        free >= need,
        "the scale test needs {:.1} GiB free on this machine's disk (three test nodes' copies \
         of the {:.1} GiB bundle, and room to pull), but {:.1} GiB are free",
        gib(need),
        gib(size),
        gib(free)
    );

    let Some(bed) = Testbed::up(3, &[]) else {
        return;
    };
    let hosts = ["--masters", N1, "--nodes", &format!("{N2},{N3}")].map(String::from);
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let (o, _) = run_on(&bundle, "install", &hosts, &[]);
    ok(&o);

    // Every node pulls every image, all three at once.
    let names: Vec<&String> = want.keys().collect();
    let got: Vec<(&str, BTreeMap<String, String>)> = std::thread::scope(|s| {
        let pulls: Vec<_> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|n| (n, s.spawn(|| pull_all(n, &names))))
            .collect();
        pulls
            .into_iter()
            .map(|(n, h)| (n, h.join().expect("a pull thread")))
            .collect()
    });
    for (node, digests) in got {
        assert_eq!(
            digests.len(),
            want.len(),
            "{node} pulled {} images",
            digests.len()
        );
        for (name, digest) in &want {
            assert_eq!(
                digests.get(name),
                Some(digest),
                "{node}: {name} resolved to another digest than the set's"
            );
        }
    }

    // reset leaves no bundle, no registry and no runtime behind.
    let (o, _) = run_on(&bundle, "reset", &hosts, &["--yes"]);
    ok(&o);
    for n in ["n1", "n2", "n3"] {
        let left = on_ok(
            n,
            "ls -A /var/lib/bale /var/lib/containerd /etc/containerd 2>/dev/null; \
             systemctl is-active containerd bale-registry 2>/dev/null; true",
        );
        assert!(
            !left.contains("bundle.bale") && !left.lines().any(|l| l.trim() == "active"),
            "{n}: left behind:\n{left}"
        );
    }
    bed.finish();
    std::fs::remove_dir_all(&dir).expect("remove the bundle");
}
