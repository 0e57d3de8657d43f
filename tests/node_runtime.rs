//! The node-local steps (`bale agent step kernel|runtime|registry apply|undo|check`) on a test
//! node, with the real containerd, runc and CNI plugins from Debian's packages (laid out by
//! examples/appliance/fetch-runtime.sh) and the example appliance's images: apply, pull by the
//! original docker.io name through the bale registry, run a container, apply again (no
//! change), kill the registry (systemd brings it back, pulls work), undo twice, apply again.
//!
//! The CRI path (containerd's CRI plugin reading `config_path`) is checked as far as this
//! machine allows: containerd loads the config and its CRI plugin, and the plugin's registry
//! config names the hosts directory. No CRI client (crictl) is packaged in Debian bookworm, so
//! no image is pulled through the CRI API here.
//!
//! Needs root and the testbed; without them (or without the runtime) the test skips, or fails
//! under BALE_REQUIRE_ALL=1 or BALE_REQUIRE_TESTBED=1 (see `common::skip`).

mod common;

use common::testbed::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DATA: &str = "/var/lib/bale";
const IMAGE: &str = "docker.io/library/busybox:1.36";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs one of the example appliance's scripts; why not, when it fails.
fn script(name: &str) -> Result<(), String> {
    let o = Command::new("bash")
        .arg(root().join("examples/appliance").join(name))
        .output()
        .expect("run bash");
    if !o.status.success() {
        return Err(format!("examples/appliance/{name} failed:\n{}", stderr(&o)));
    }
    Ok(())
}

/// A bundle with the runtime (bin/, cni/bin/) and the appliance's two images.
fn runtime_bundle(dir: &Path) -> Option<PathBuf> {
    if let Err(why) = script("fetch-runtime.sh").and_then(|_| script("make-images.sh")) {
        skip(
            &[REQUIRE_TESTBED],
            &format!("the runtime or the images for the test bundle could not be made: {why}"),
        );
        return None;
    }
    let kubefile = dir.join("Kubefile");
    std::fs::write(
        &kubefile,
        "FROM scratch\nCOPY runtime/bin bin\nCOPY runtime/cni cni\n",
    )
    .unwrap();
    let out = dir.join("rt.bale");
    let ctx = root().join("examples/appliance");
    ok(&bale(&[
        "build",
        "-f",
        kubefile.to_str().unwrap(),
        "-t",
        "runtime-test:1",
        "--offline",
        "--image-cache",
        dir.join("cache").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]));
    Some(out)
}

fn bundle_digest(bundle: &Path) -> String {
    let o = run(bundle, &["agent", "status", "--json"]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    v["bundle"]["digest"].as_str().unwrap().to_string()
}

/// Copies a local file to the node through `testbed.sh ssh`.
fn put(node: &str, local: &Path, remote: &str, mode: &str) {
    let f = std::fs::File::open(local).unwrap();
    let o = Command::new(testbed_sh())
        .args([
            "ssh",
            node,
            &format!("mkdir -p $(dirname {remote}) && cat > {remote}.tmp && chmod {mode} {remote}.tmp && mv {remote}.tmp {remote}"),
        ])
        .stdin(Stdio::from(f))
        .output()
        .unwrap();
    ok(&o);
}

fn step(node: &str, name: &str, action: &str) -> std::process::Output {
    let t = Instant::now();
    let o = on(
        node,
        &format!("{DATA}/bundle.bale agent step {name} {action} --data-dir {DATA}"),
    );
    eprintln!(
        "[{node}] step {name} {action}: exit {:?} in {:.1}s\n{}{}",
        o.status.code(),
        t.elapsed().as_secs_f64(),
        stdout(&o),
        stderr(&o)
    );
    o
}

#[track_caller]
fn step_ok(node: &str, name: &str, action: &str) -> String {
    let o = step(node, name, action);
    ok(&o);
    stdout(&o)
}

fn apply_all(node: &str) {
    for s in ["kernel", "runtime", "registry"] {
        step_ok(node, s, "apply");
        step_ok(node, s, "check");
    }
}

/// Pulls the image through the hosts files (the local registry) and runs it.
fn pull_and_run(node: &str, name: &str) {
    on_ok(
        node,
        &format!("ctr images pull --hosts-dir /etc/containerd/certs.d {IMAGE}"),
    );
    let out = on_ok(
        node,
        &format!("ctr run --rm {IMAGE} {name} /bin/echo hello from {name}"),
    );
    assert!(out.contains(&format!("hello from {name}")), "{out}");
}

#[test]
fn runtime_steps_on_a_node() {
    // Before the runtime is made: its scripts install Debian packages.
    if !is_root() {
        return skip(&[REQUIRE_TESTBED], "no testbed: needs root");
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(bundle) = runtime_bundle(dir.path()) else {
        return;
    };
    let node_json = dir.path().join("node.json");
    std::fs::write(
        &node_json,
        serde_json::json!({
            "data_dir": DATA,
            "bundle_digest": bundle_digest(&bundle),
            "node_ip": N1,
            "role": "master",
            "first_master": true,
            "masters": [N1],
            "nodes": [],
        })
        .to_string(),
    )
    .unwrap();

    let Some(bed) = Testbed::up(1, &[]) else {
        return;
    };
    let n = "n1";
    put(n, &bundle, &format!("{DATA}/bundle.bale"), "755");
    put(n, &node_json, &format!("{DATA}/node.json"), "644");

    // Nothing applied yet: the checks say so.
    assert!(!step(n, "runtime", "check").status.success());
    assert!(!step(n, "registry", "check").status.success());

    apply_all(n);
    // The kernel step persisted its settings; the runtime came from the bundle.
    on_ok(n, "grep -qx br_netfilter /etc/modules-load.d/bale.conf");
    on_ok(
        n,
        "grep -q 'net.ipv4.ip_forward = 1' /etc/sysctl.d/90-bale.conf && test \"$(cat /proc/sys/net/ipv4/ip_forward)\" = 1",
    );
    on_ok(n, "test -x /usr/local/bin/containerd && test -x /usr/local/bin/runc && test -x /opt/cni/bin/bridge");
    let hosts = on_ok(n, "cat /etc/containerd/certs.d/docker.io/hosts.toml");
    assert!(
        hosts.contains("[host.\"http://127.0.0.1:5050\"]"),
        "{hosts}"
    );
    // The registry answers on localhost and on the node's address (from the host too).
    on_ok(n, "systemctl is-active bale-registry containerd");
    let catalog = Command::new("curl")
        .args(["-fsS", &format!("http://{N1}:5050/v2/_catalog")])
        .output()
        .unwrap();
    ok(&catalog);
    assert!(
        stdout(&catalog).contains("library/busybox"),
        "{}",
        stdout(&catalog)
    );

    // The original docker.io name, pulled from this node's registry (the node has no other
    // way out: the guard counts any packet that leaves the test network).
    pull_and_run(n, "first");
    // The CRI plugin is loaded and reads the same hosts directory.
    let plugins = on_ok(n, "ctr plugins ls");
    assert!(
        plugins.lines().any(|l| l.contains("io.containerd.grpc.v1")
            && l.contains("cri")
            && l.trim_end().ends_with("ok")),
        "the CRI plugin did not load:\n{plugins}"
    );
    let dump = on_ok(
        n,
        "containerd --config /etc/containerd/config.toml config dump",
    );
    assert!(
        dump.contains("config_path = \"/etc/containerd/certs.d\""),
        "{dump}"
    );

    // A second apply changes nothing.
    for s in ["kernel", "runtime", "registry"] {
        let out = step_ok(n, s, "apply");
        assert!(
            out.contains(&format!("{s}: apply: nothing to change")),
            "{out}"
        );
    }

    // Kill the registry: systemd restarts it, pulls work again.
    let pid_before = on_ok(n, "systemctl show -p MainPID --value bale-registry");
    on_ok(n, "systemctl kill -s KILL bale-registry");
    poll_until(
        Duration::from_millis(300),
        "systemd to bring the registry back",
        Duration::from_secs(30),
        || {
            let pid = on_ok(n, "systemctl show -p MainPID --value bale-registry");
            step(n, "registry", "check").status.success() && pid.trim() != "0" && pid != pid_before
        },
    );
    on_ok(n, &format!("ctr images rm {IMAGE}"));
    pull_and_run(n, "after-kill");

    // A container left running is killed by undo.
    on_ok(n, &format!("ctr run -d {IMAGE} sleeper /bin/sleep 600"));

    // Undo, in reverse; a second undo is a no-op.
    for s in ["registry", "runtime", "kernel"] {
        step_ok(n, s, "undo");
    }
    for s in ["registry", "runtime", "kernel"] {
        let out = step_ok(n, s, "undo");
        assert!(
            out.contains(&format!("{s}: undo: nothing to change")),
            "{out}"
        );
    }
    on_ok(
        n,
        "! systemctl is-active containerd bale-registry && ! test -e /usr/local/bin/containerd \
         && ! test -e /opt/cni && ! test -e /etc/containerd \
         && ! test -e /etc/systemd/system/containerd.service \
         && ! test -e /etc/systemd/system/bale-registry.service \
         && ! test -e /etc/sysctl.d/90-bale.conf && ! test -e /etc/modules-load.d/bale.conf \
         && test -d /var/lib/containerd && test -z \"$(ls -A /var/lib/containerd)\" \
         && ! pgrep -x sleep",
    );
    assert!(!step(n, "runtime", "check").status.success());

    // And again from scratch.
    apply_all(n);
    pull_and_run(n, "again");

    bed.finish();
}
