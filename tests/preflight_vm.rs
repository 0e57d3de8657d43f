//! Preflight's clock check on two QEMU VMs, which, unlike the nspawn nodes, keep their own
//! clocks: a node whose clock runs a minute ahead of the first master fails preflight, named;
//! `--ignore-preflight=clock` lets the run go on, through the agent's kernel check, which on a
//! distribution kernel finds the features as modules not loaded yet and goes on.
//!
//! Needs root and the VM testbed (`scripts/testbed.sh up 2 --vm`). Without them the test skips,
//! or fails under BALE_REQUIRE_ALL=1 or BALE_REQUIRE_TESTBED=1 (see `common::skip`).

mod common;

use common::events::*;
use common::testbed::*;
use common::*;

const V1: &str = "10.77.0.21";
const V2: &str = "10.77.0.22";

#[test]
fn a_skewed_clock_fails_preflight_on_that_node() {
    let Some(bed) = Testbed::up(2, &["--vm"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    sample_tree(&tree);
    let bundle = dir.path().join("app.bale");
    build(&tree, &bundle);
    // Never on an nspawn node: there it would set this machine's clock.
    on_ok("v2", "date -s \"@$(( $(date +%s) + 60 ))\" >/dev/null");
    let key = key();
    let kh = known_hosts_path();
    let mut args = vec![
        "install",
        "--json",
        "--until",
        "preflight",
        "--masters",
        V1,
        "--nodes",
        V2,
        "--key",
        &key,
        "--known-hosts",
        &kh,
    ];
    let o = run(&bundle, &args);
    assert!(!o.status.success(), "preflight passed a 60 s skew");
    let ev = events(&stdout(&o));
    let clock = |node: &str| -> serde_json::Value {
        ev.iter()
            .filter(|e| e["event"] == "preflight" && e["node"] == node)
            .flat_map(|e| e["checks"].as_array().cloned().unwrap_or_default())
            .find(|c| c["name"] == "clock")
            .unwrap_or_else(|| panic!("no clock check for {node}: {}", stdout(&o)))
    };
    let skewed = clock(V2);
    assert_eq!(skewed["status"], "fail", "{skewed}");
    let detail = skewed["detail"].as_str().unwrap_or_default();
    let secs: f64 = detail
        .split('s')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no seconds in {detail:?}"));
    assert!((55.0..=70.0).contains(&secs), "{detail}");
    assert!(detail.contains(V1), "{detail}");
    assert_eq!(clock(V1)["status"], "ok");
    let stop = ev
        .iter()
        .find(|e| e["event"] == "stopped")
        .unwrap_or_else(|| panic!("no stop: {}", stdout(&o)));
    let reason = stop["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("{V2}: clock")) && !reason.contains(&format!("{V1}:")),
        "{reason}"
    );
    assert!(reason.contains("--ignore-preflight=clock"), "{reason}");

    // On to the agent's kernel check: a distribution kernel has overlay, br_netfilter and
    // nf_conntrack as modules that nothing has loaded yet on a fresh VM, and they are no reason
    // to stop (the kernel phase loads them).
    let until = 1 + args
        .iter()
        .position(|a| *a == "--until")
        .expect("the first run stops with --until");
    args[until] = "agent-check";
    args.push("--ignore-preflight=clock");
    let o = run(&bundle, &args);
    ok(&o);
    let ev = events(&stdout(&o));
    for v in [V1, V2] {
        assert!(has(&ev, "done", "preflight", v) && has(&ev, "done", "agent-check", v));
    }
    let unloaded = on_ok("v1", "lsmod | grep -c '^overlay ' || true");
    if unloaded.trim() == "0" {
        assert!(
            ev.iter().any(|e| e["node"] == V1
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("loaded by the kernel phase: overlay"))),
            "no note of the modules to load: {}",
            stdout(&o)
        );
    }
    on_ok("v2", "date -s \"@$(( $(date +%s) - 60 ))\" >/dev/null");
    bed.finish();
}
