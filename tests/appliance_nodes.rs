//! The example appliance end to end on three test nodes: build it from its Kubefile (real
//! containerd, runc and CNI plugins from Debian packages, two images made from busybox-static),
//! install it with `--masters n1 --nodes n2,n3`, and check what a site would: the web app
//! answers on every node, `ctr` pulls a bundled image by its original docker.io name, skopeo
//! reads the node's registry with the bundle's digests, systemd restarts a killed registry, a
//! re-run skips every phase, overlays land, a failing hook stops the install with its output,
//! reset leaves nothing and a reinstall works, a runtime or lvscare step that fails on a live
//! node leaves its containers and its guardian running and a re-run converges, and a fourth node joins as a master and is
//! deleted again while the workers' guards follow with a reload, with no packet leaving the
//! node subnet.
//!
//! Needs root, the testbed, and the appliance's inputs (examples/appliance/make-images.sh and
//! fetch-runtime.sh, which scripts/test.sh runs first).

mod common;

use common::events::*;
use common::testbed::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The registries' VIP of the run with `--registry-vip`.
const REGISTRY_VIP: &str = "10.103.97.3";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the appliance bundle with this build of bale, or explains what is missing.
fn appliance(dir: &Path) -> PathBuf {
    let app = root().join("examples/appliance");
    for (need, script) in [
        ("images/web/index.json", "make-images.sh"),
        ("runtime/bin/containerd", "fetch-runtime.sh"),
    ] {
        assert!(
            app.join(need).exists(),
            "examples/appliance/{need} is missing: run examples/appliance/{script} (scripts/test.sh does)"
        );
    }
    let out = dir.join("appliance.bale");
    let o = bale(&[
        "build",
        "-f",
        app.join("Kubefile").to_str().unwrap(),
        "-t",
        "appliance:0.1.0",
        "--offline",
        "-o",
        out.to_str().unwrap(),
        app.to_str().unwrap(),
    ]);
    ok(&o);
    out
}

/// Runs `bundle VERB ARGS --json` against the three nodes and returns (output, events).
fn run_on_nodes(bundle: &Path, verb: &str, extra: &[&str]) -> (Output, Vec<serde_json::Value>) {
    let workers = format!("{N2},{N3}");
    run_on(bundle, verb, &["--masters", N1, "--nodes", &workers], extra)
}

/// One HTTP GET from the host to a node; the body, or why not.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    appliance::http_get(addr, path, Duration::from_secs(5))
}

fn web_answers_everywhere() {
    web_answers_on(&[N1, N2, N3]);
}

fn web_answers_on(ips: &[&str]) {
    appliance::web_answers_on(ips, Duration::from_secs(60), Duration::from_secs(5));
}

/// The manifest digest the bundle's own index gives for `name`.
fn bundled_digest(bundle: &Path, dir: &Path, name: &str) -> String {
    let to = dir.join("index");
    ok(&bale(&[
        "extract",
        bundle.to_str().unwrap(),
        "registry/index.json",
        "--to",
        to.to_str().unwrap(),
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(to.join("registry/index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} is not in the bundle's index: {index}"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    ok(&o);
    stdout(&o)
}

#[test]
fn appliance_installs_on_three_nodes_resets_and_reinstalls() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = appliance(dir.path());
    // n4 waits idle until it joins as a second master at the end.
    let Some(bed) = Testbed::up(4, &[]) else {
        return;
    };

    // A Clusterfile with overlays only (the hosts come from the flags).
    let cf = dir.path().join("Clusterfile");
    std::fs::write(
        &cf,
        "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  env: [SITE=lab]\n---\n\
         apiVersion: sealer.io/v1\nkind: Config\nmetadata: {name: env}\nspec:\n  \
         path: etc/appliance.env\n  strategy: overwrite\n  data: |\n    APP_PORT=8080\n    \
         SITE=lab\n---\n\
         apiVersion: sealer.io/v1\nkind: Config\nmetadata: {name: labels}\nspec:\n  \
         path: manifests/web.yaml\n  strategy: merge\n  data: |\n    spec: {template: {metadata: \
         {labels: {tier: edge}}}}\n",
    )
    .unwrap();
    let cfs = cf.to_str().unwrap();

    // The install.
    let (o, ev) = run_on_nodes(&bundle, "install", &["-f", cfs]);
    ok(&o);
    assert_eq!(summary(&ev)["ok"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        started(&ev, "apps"),
        [N1],
        "apps run on the first master only"
    );
    web_answers_everywhere();

    // Overlays landed on every node.
    for n in ["n1", "n2", "n3"] {
        let env = on_ok(n, "cat /var/lib/bale/rootfs/etc/appliance.env");
        assert_eq!(env, "APP_PORT=8080\nSITE=lab\n", "{n}");
        // The bundle's template, rendered with the Kubefile's ENV and the Clusterfile's env.
        let site = on_ok(n, "tail -n 2 /var/lib/bale/rootfs/etc/site.conf");
        assert_eq!(site, "site=lab\nport=8080\n", "{n}");
        let web = on_ok(n, "cat /var/lib/bale/rootfs/manifests/web.yaml");
        assert!(
            web.contains("tier: edge") && web.contains("app: web"),
            "{n}: {web}"
        );
    }

    // The workers guard the API servers' VIP; every node names it in /etc/hosts.
    for n in ["n2", "n3"] {
        on_ok(n, "systemctl is-active -q bale-lvscare.service");
        let hosts = on_ok(n, "cat /etc/hosts");
        assert!(
            hosts.contains("10.103.97.2 apiserver.cluster.local"),
            "{n}: {hosts}"
        );
    }
    let hosts = on_ok("n1", "cat /etc/hosts");
    assert!(
        hosts.contains(&format!("{N1} apiserver.cluster.local")),
        "n1: {hosts}"
    );

    // ctr pulls and runs a bundled image by its original name, through hosts.toml.
    for n in ["n1", "n2", "n3"] {
        let out = on_ok(
            n,
            "ctr -n e2e images pull --hosts-dir /etc/containerd/certs.d \
             docker.io/library/busybox:1.36 >/dev/null && \
             ctr -n e2e run --rm docker.io/library/busybox:1.36 e2e-echo echo bundled-busybox",
        );
        assert!(out.contains("bundled-busybox"), "{n}: {out}");
    }

    // skopeo reads each node's registry with the bundle's digests.
    let want = bundled_digest(&bundle, dir.path(), "docker.io/appliance/web:1.0");
    for ip in [N1, N2, N3] {
        let inspect = skopeo(&[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{ip}:5050/appliance/web:1.0"),
        ]);
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        let got = v["Digest"].as_str().unwrap_or("").to_string();
        assert_eq!(
            got, want,
            "{ip}: the manifest digest differs from the bundle's"
        );
    }
    let layout = dir.path().join("copied");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{N2}:5050/appliance/web:1.0"),
        &format!("oci:{}:web", layout.display()),
    ]);
    let copied: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    // The name is a multi-arch index; skopeo copies this platform's image out of it, which is
    // the amd64 manifest that the index (as the node serves it, with the bundle's digest) lists.
    let raw: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{N2}:5050/appliance/web:1.0"),
    ]))
    .unwrap();
    let amd64 = raw["manifests"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["platform"]["architecture"] == "amd64"))
        .unwrap_or_else(|| panic!("no amd64 manifest in {raw}"));
    assert_eq!(copied["manifests"][0]["digest"], amd64["digest"]);

    // systemd brings a killed registry back, and pulls work again.
    on_ok("n2", "systemctl kill -s KILL bale-registry.service");
    poll_until(
        Duration::from_millis(300),
        "systemd to bring the registry back",
        Duration::from_secs(30),
        || {
            on("n2", "systemctl is-active -q bale-registry.service")
                .status
                .success()
                && http_get(&format!("{N2}:5050"), "/v2/").is_ok_and(|b| b.contains("200"))
        },
    );
    on_ok(
        "n2",
        "ctr -n e2e2 images pull --hosts-dir /etc/containerd/certs.d \
         docker.io/appliance/web:1.0 >/dev/null",
    );

    // A re-run converges without redoing anything.
    let (o, ev) = run_on_nodes(&bundle, "install", &["-f", cfs]);
    ok(&o);
    for phase in [
        "upload",
        "extract",
        "kernel",
        "runtime",
        "registry",
        "apps",
        "hook:post-init",
    ] {
        assert!(started(&ev, phase).is_empty(), "{phase} ran again");
    }
    let (o, _) = run_on_nodes(&bundle, "check", &[]);
    ok(&o);

    // A failing hook stops the install on its node, with its output.
    let bad = dir.path().join("Clusterfile.bad");
    std::fs::write(
        &bad,
        "apiVersion: sealer.io/v2\nkind: Cluster\nspec: {}\n---\nkind: Plugin\n\
         metadata: {name: on-fire}\nspec:\n  action: PostInstall\n  on: 10.77.0.13\n  \
         data: |\n    echo the disk is on fire\n    exit 7\n",
    )
    .unwrap();
    let (o, ev) = run_on_nodes(&bundle, "install", &["-f", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let failed = summary(&ev)["failed"].clone();
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed}");
    assert_eq!(failed[0]["node"], N3);
    let err = failed[0]["error"].as_str().unwrap_or("");
    assert!(
        err.contains("on-fire")
            && err.contains("exit code 7")
            && err.contains("the disk is on fire"),
        "{err}"
    );

    // reset removes everything; a second reset has nothing to do.
    let (o, _) = run_on_nodes(&bundle, "reset", &["--yes"]);
    ok(&o);
    for n in ["n1", "n2", "n3"] {
        let left = on_ok(
            n,
            "ls -A /var/lib/bale /etc/containerd /usr/local/bin/containerd \
             /etc/systemd/system/bale-registry.service 2>/dev/null; \
             systemctl is-active containerd bale-registry bale-lvscare appliance-web \
             2>/dev/null; grep apiserver.cluster.local /etc/hosts; true",
        );
        assert!(
            !left.contains("bundle.bale")
                && !left.contains("apiserver.cluster.local")
                && !left.lines().any(|l| l.trim() == "active"),
            "{n}: left behind:\n{left}"
        );
    }
    let (o, ev) = run_on_nodes(&bundle, "reset", &["--yes"]);
    ok(&o);
    let ran: Vec<&serde_json::Value> = ev
        .iter()
        // connect and lock are the run's own session with the node, not changes to it
        .filter(|e| e["event"] == "start" && e["phase"] != "connect" && e["phase"] != "lock")
        .collect();
    assert!(ran.is_empty(), "a second reset did something: {ran:?}");

    // And the appliance installs again.
    let (o, _) = run_on_nodes(&bundle, "install", &[]);
    ok(&o);
    web_answers_everywhere();

    // With --registry-vip the workers also guard the masters' registries, and their containerd
    // falls back to that VIP: a worker whose own registry is down still pulls.
    // Without it, a worker whose registry is down cannot pull (nothing else serves it here).
    on_ok("n2", "systemctl stop bale-registry.service");
    let t = Instant::now();
    let alone = on(
        "n2",
        "timeout 60 ctr -n e2e3 images pull --hosts-dir /etc/containerd/certs.d \
         docker.io/appliance/web:1.0",
    );
    assert!(!alone.status.success(), "pulled with no registry on n2");
    eprintln!("the pull without a registry failed in {:?}", t.elapsed());
    on_ok("n2", "systemctl start bale-registry.service");

    // A failure never uninstalls. Adding --registry-vip applies the runtime step again on the
    // workers (their hosts files change) and gives them a second guardian. Make that fail for
    // real: n2's containerd hosts directory and n3's /etc/bale read-only for this run.
    let read_only = |n: &str, dir: &str| {
        on_ok(
            n,
            &format!("mount --bind {dir} {dir} && mount -o remount,bind,ro {dir}"),
        );
    };
    read_only("n2", "/etc/containerd/certs.d");
    read_only("n3", "/etc/bale");
    let web_task = |n: &str| on_ok(n, "ctr -n appliance task ls");
    let blobs = |n: &str| {
        on_ok(
            n,
            "find /var/lib/containerd/io.containerd.content.v1.content/blobs -type f | sort",
        )
    };
    let n2_blobs = blobs("n2");
    assert!(web_task("n2").contains("RUNNING"), "{}", web_task("n2"));
    let n3_guard = on_ok(
        "n3",
        "systemctl show -p MainPID --value bale-lvscare.service",
    );
    let (o, ev) = run_on_nodes(&bundle, "install", &["--registry-vip", REGISTRY_VIP]);
    assert!(
        !o.status.success(),
        "the install succeeded on read-only directories"
    );
    let failed = summary(&ev)["failed"].clone();
    let failures: Vec<(String, String, String)> = failed
        .as_array()
        .unwrap_or_else(|| panic!("no failures in the summary: {failed}"))
        .iter()
        .map(|f| {
            (
                f["node"].as_str().unwrap_or("").to_string(),
                f["phase"].as_str().unwrap_or("").to_string(),
                f["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(failures.len(), 2, "{failed}");
    let of = |node: &str| failures.iter().find(|f| f.0 == node).cloned();
    let (_, phase, error) = of(N2).unwrap_or_else(|| panic!("n2 did not fail: {failed}"));
    assert_eq!(phase, "runtime", "{failed}");
    assert!(error.contains("/etc/containerd/certs.d"), "{error}");
    let (_, phase, error) = of(N3).unwrap_or_else(|| panic!("n3 did not fail: {failed}"));
    assert_eq!(phase, "lvscare", "{failed}");
    assert!(error.contains("/etc/bale"), "{error}");
    assert!(
        ev.iter().all(|e| e["event"] != "clean-up"),
        "a clean-up ran though no attempt created anything"
    );
    // n2 still runs its app container on an intact containerd; n3's guardian never stopped.
    assert!(web_task("n2").contains("RUNNING"), "{}", web_task("n2"));
    assert_eq!(blobs("n2"), n2_blobs, "n2's /var/lib/containerd changed");
    on_ok("n2", "systemctl is-active -q containerd.service");
    web_answers_on(&[N2]);
    assert_eq!(
        on_ok(
            "n3",
            "systemctl show -p MainPID --value bale-lvscare.service"
        ),
        n3_guard,
        "n3's guardian was stopped by a failed install"
    );
    on_ok("n3", "nft list table ip bale_lvscare >/dev/null");
    // With the cause gone, the same command converges: the runtime step runs again on n2
    // alone (n3 finished it in the failed run).
    on_ok("n2", "umount /etc/containerd/certs.d");
    on_ok("n3", "umount /etc/bale");
    let (o, ev) = run_on_nodes(&bundle, "install", &["--registry-vip", REGISTRY_VIP]);
    ok(&o);
    assert_eq!(
        started(&ev, "runtime"),
        [N2],
        "the hosts files change on the workers only, and n3 had done it"
    );
    assert!(started(&ev, "lvscare").contains(&N3.to_string()));
    for n in ["n2", "n3"] {
        on_ok(n, "systemctl is-active -q bale-lvscare-registry.service");
        on_ok(n, "nft list table ip bale_lvscare_registry >/dev/null");
        let hosts = on_ok(n, "cat /etc/containerd/certs.d/docker.io/hosts.toml");
        assert!(
            hosts.contains(&format!("[host.\"http://{REGISTRY_VIP}:5050\"]")),
            "{n}: {hosts}"
        );
    }
    assert!(
        !on_ok("n1", "cat /etc/containerd/certs.d/docker.io/hosts.toml").contains(REGISTRY_VIP)
    );
    on_ok("n2", "systemctl stop bale-registry.service");
    assert!(
        http_get(&format!("{N2}:5050"), "/v2/").is_err(),
        "n2's registry still answers"
    );
    let pulled = on(
        "n2",
        "ctr -n e2e3 images pull --hosts-dir /etc/containerd/certs.d \
         docker.io/appliance/web:1.0",
    );
    on_ok("n2", "systemctl start bale-registry.service");
    ok(&pulled);

    // n4 joins as a second master: the workers' guards take it in with a reload, not a restart.
    let guard_pid = |n: &str| on_ok(n, "systemctl show -p MainPID --value bale-lvscare.service");
    let before: Vec<String> = ["n2", "n3"].iter().map(|n| guard_pid(n)).collect();
    let (masters, workers) = (format!("{N1},{N4}"), format!("{N2},{N3}"));
    let (o, ev) = run_on(
        &bundle,
        "install",
        &[
            "--masters",
            &masters,
            "--nodes",
            &workers,
            "--registry-vip",
            REGISTRY_VIP,
        ],
        &[],
    );
    ok(&o);
    assert_eq!(summary(&ev)["ok"].as_array().map(Vec::len), Some(4));
    assert_eq!(started(&ev, "apps"), Vec::<String>::new(), "apps ran again");
    web_answers_on(&[N4]);
    let guarded = |n: &str| on_ok(n, "cat /etc/bale/lvscare.yaml");
    for (n, pid) in ["n2", "n3"].iter().zip(&before) {
        let cfg = guarded(n);
        assert!(
            cfg.contains(&format!("{N1}:6443")) && cfg.contains(&format!("{N4}:6443")),
            "{n}: {cfg}"
        );
        assert_eq!(
            &guard_pid(n),
            pid,
            "{n}: the guard restarted instead of reloading"
        );
        // journald writes the guardian's line a moment after the reload returns.
        poll_ok(
            Duration::from_millis(200),
            &format!("{n}: 'config reloaded' in the guardian's log"),
            Duration::from_secs(20),
            || {
                let log = unit_log(n, "bale-lvscare.service");
                if log.contains("config reloaded") {
                    Ok(())
                } else {
                    Err(log)
                }
            },
        );
        let reg = on_ok(n, "cat /etc/bale/lvscare-registry.yaml");
        assert!(reg.contains(&format!("{N4}:5050")), "{n}: {reg}");
    }

    // n4 is deleted: the hosts that stay learn it from n4's own record, and the guards reload
    // with n1 alone.
    let (o, ev) = run_on(&bundle, "delete", &["--masters", N4], &["--yes"]);
    ok(&o);
    assert!(
        has(&ev, "done", "members", N4),
        "n4's member list was not read"
    );
    for n in [N1, N2, N3] {
        assert!(
            has(&ev, "done", "members", n),
            "{n} did not get the new member list"
        );
    }
    for (n, pid) in ["n2", "n3"].iter().zip(&before) {
        let cfg = guarded(n);
        assert!(
            cfg.contains(&format!("{N1}:6443")) && !cfg.contains(&format!("{N4}:6443")),
            "{n}: {cfg}"
        );
        assert_eq!(
            &guard_pid(n),
            pid,
            "{n}: the guard restarted instead of reloading"
        );
    }
    for n in ["n1", "n2", "n3"] {
        let ctx: serde_json::Value =
            serde_json::from_str(&on_ok(n, "cat /var/lib/bale/node.json")).unwrap();
        assert_eq!(ctx["masters"], serde_json::json!([N1]), "{n}");
        assert_eq!(ctx["nodes"], serde_json::json!([N2, N3]), "{n}");
    }
    assert_eq!(on_ok("n4", "ls -A /var/lib/bale 2>/dev/null; true"), "");
    for n in ["n2", "n3"] {
        let reg = on_ok(n, "cat /etc/bale/lvscare-registry.yaml");
        assert!(
            reg.contains(&format!("{N1}:5050")) && !reg.contains(&format!("{N4}:5050")),
            "{n}: {reg}"
        );
    }
    web_answers_everywhere();

    // An install without --registry-vip removes that guardian, its rules and the fallback.
    let (o, ev) = run_on_nodes(&bundle, "install", &[]);
    ok(&o);
    let mut rerun = started(&ev, "runtime");
    rerun.sort();
    assert_eq!(rerun, [N2, N3]);
    for n in ["n2", "n3"] {
        let left = on_ok(
            n,
            "systemctl is-active bale-lvscare-registry.service 2>/dev/null; \
             nft list tables; ls /etc/bale; cat /etc/containerd/certs.d/docker.io/hosts.toml; \
             true",
        );
        assert!(
            !left.lines().any(|l| l.trim() == "active")
                && !left.contains("bale_lvscare_registry")
                && !left.contains("lvscare-registry.yaml")
                && !left.contains(REGISTRY_VIP),
            "{n}: left behind:\n{left}"
        );
        on_ok(n, "systemctl is-active -q bale-lvscare.service");
    }
    bed.finish();
}
