//! arm64 hosts: the example appliance built on this x86_64 machine for arm64 (the aarch64 bale
//! program, Debian's arm64 containerd/runc/CNI, the arm64 variants of its multi-arch images)
//! and installed from here on two arm64 test nodes; then the same file run on an arm64 node
//! itself with no hosts. Each node runs the arm64 program, the registry serves the arm64
//! images under their original names, the app answers, `check` is healthy, no packet leaves
//! the test network, and `reset` leaves the node as it found it.
//!
//! The arm64 nodes are nspawn containers whose programs run under qemu-user
//! (`scripts/testbed.sh up --arch all=aarch64`). What they cannot show: arm64 runc and arm64
//! nft. Under qemu-user no OCI runtime can create namespaces and nft cannot speak netfilter
//! netlink, so the testbed puts the host's x86_64 runc and nft in /usr/local/sbin of each such
//! node, where they are found first on PATH (the arm64 runc bale installs at
//! /usr/local/bin/runc is never run); containerd, the shims, the containers' processes and
//! bale itself (agent, registry, guard) stay arm64. The test prints this on every run.
//!
//! A second test installs one bundle built for linux/amd64 and linux/arm64 on two x86_64 nodes
//! and an arm64 node: each gets its own architecture's program, binaries and image variants.
//!
//! Needs root, the testbed, the aarch64 release build (`scripts/build-release.sh`, or
//! BALE_AARCH64_BIN) and the inputs `examples/appliance/make-images.sh` and
//! `fetch-runtime.sh --arch arm64` make (`scripts/test.sh` runs all of them).

mod common;

use common::testbed::*;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Says something past the harness's capture: the reader of a passing run sees it too.
fn tell(what: &str) {
    let _ = writeln!(std::io::stderr(), "arm_nodes: {what}");
}

/// The appliance bundle for arm64, built here with the aarch64 program as its stub.
fn arm_appliance(dir: &Path, arm: &Path) -> PathBuf {
    let app = root().join("examples/appliance");
    for (need, script) in [
        ("images/web/index.json", "make-images.sh"),
        (
            "runtime-arm64/bin/containerd",
            "fetch-runtime.sh --arch arm64",
        ),
    ] {
        assert!(
            app.join(need).exists(),
            "examples/appliance/{need} is missing: run examples/appliance/{script} (scripts/test.sh does)"
        );
    }
    let stubs = dir.join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::copy(arm, stubs.join("bale-aarch64")).unwrap();
    let out = dir.join("appliance-arm64.bale");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&bale(&[
        "build",
        "-f",
        &s(&app.join("Kubefile")),
        "-t",
        "appliance:0.1.0",
        "--offline",
        "--platform",
        "linux/arm64",
        "--stub-dir",
        &s(&stubs),
        "--build-arg",
        "RUNTIME=runtime-arm64",
        "-o",
        &s(&out),
        &s(&app),
    ]));
    let info = stdout(&bale(&["info", &s(&out)]));
    assert!(info.contains("arch:        aarch64"), "{info}");
    out
}

/// The appliance answers on each of `ips`; emulated nodes start it slowly.
fn web_answers_on(ips: &[&str]) {
    appliance::web_answers_on(ips, Duration::from_secs(180), Duration::from_secs(10));
}

/// The ELF machine of a file on a node: "aarch64", "x86_64" or the raw value.
fn elf_machine(node: &str, path: &str) -> String {
    let raw = on_ok(node, &format!("od -An -tx1 -j18 -N2 {path}"));
    match raw.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["b7", "00"] => "aarch64".into(),
        ["3e", "00"] => "x86_64".into(),
        other => format!("{other:?}"),
    }
}

/// What a node holds under the places an install writes to, one path per line. Taken before
/// the install and after the reset, the two must be equal.
const SNAPSHOT: &str = "find /etc /usr/local /opt /var/lib /root -xdev \
     -not -path '/var/lib/systemd/*' -not -path '/var/lib/dpkg/*' -not -path '/root/.ssh*' \
     2>/dev/null | sort";

#[test]
fn arm64_bundle_installs_on_two_arm64_nodes_and_on_one_by_itself() {
    let Some(arm) = aarch64_bale() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bundle = arm_appliance(dir.path(), &arm);
    let b = bundle.to_str().unwrap();
    let Some(bed) = Testbed::up(2, &["--arch", "all=aarch64"]) else {
        return;
    };
    let status = tb_ok(&["status"]);
    tell(&format!(
        "nodes:\n{status}(not covered here: arm64 runc and arm64 nft themselves, see this file's doc comment)"
    ));
    assert!(
        status.contains("runc and nft substituted by the testbed"),
        "{status}"
    );
    for n in ["n1", "n2"] {
        assert_eq!(on_ok(n, "uname -m").trim(), "aarch64", "{n}");
    }
    let before = [on_ok("n1", SNAPSHOT), on_ok("n2", SNAPSHOT)];

    // A bundle without arm64 content is refused in preflight, before anything is copied.
    let tree = dir.path().join("tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/app.conf"), "x86 only\n").unwrap();
    let x86 = dir.path().join("x86.bale");
    ok(&bale(&[
        "build",
        tree.to_str().unwrap(),
        "-o",
        x86.to_str().unwrap(),
        "--name",
        "x86",
    ]));
    let (o, ev) = run_on(
        &bale_bin(),
        "install",
        &["--masters", N1],
        &["--bundle", x86.to_str().unwrap()],
    );
    assert!(
        !o.status.success(),
        "an x86_64 bundle installed on an arm64 node"
    );
    let arch = ev
        .iter()
        .find(|e| e["event"] == "preflight" && e["node"] == N1)
        .and_then(|t| t["checks"].as_array())
        .and_then(|c| c.iter().find(|c| c["name"] == "arch"))
        .unwrap_or_else(|| panic!("no preflight arch check: {}", stdout(&o)))
        .clone();
    assert_eq!(arch["status"], "fail", "{arch}");
    assert_eq!(arch["detail"], "aarch64 (bundle x86_64)", "{arch}");
    assert!(!ev.iter().any(|e| e["phase"] == "upload"), "nothing copied");
    assert_eq!(
        on_ok("n1", SNAPSHOT),
        before[0],
        "the refused install changed n1"
    );

    // From this x86_64 host onto the two arm64 nodes: this host's own (x86_64) bale drives the
    // run with --bundle, and each node runs its copy of the arm64 file.
    let hosts = ["--masters", N1, "--nodes", N2];
    let t = Instant::now();
    let (o, _) = run_on(&bale_bin(), "install", &hosts, &["--bundle", b]);
    ok(&o);
    web_answers_on(&[N1, N2]);
    tell(&format!(
        "install of the arm64 appliance on 1 master + 1 worker (arm64, emulated): {:.1} s to the app answering",
        t.elapsed().as_secs_f64()
    ));
    for n in ["n1", "n2"] {
        // The copied bundle, the runtime bale installed and the app's container are arm64.
        assert_eq!(
            elf_machine(n, "/var/lib/bale/bundle.bale"),
            "aarch64",
            "{n}"
        );
        for b in ["containerd", "containerd-shim-runc-v2", "runc"] {
            assert_eq!(
                elf_machine(n, &format!("/usr/local/bin/{b}")),
                "aarch64",
                "{n}: /usr/local/bin/{b}"
            );
        }
        let out = on_ok(
            n,
            "ctr -n e2e images pull --hosts-dir /etc/containerd/certs.d \
             docker.io/library/busybox:1.36 >/dev/null && \
             ctr -n e2e run --rm docker.io/library/busybox:1.36 e2e-arch busybox uname -m",
        );
        assert_eq!(
            out.trim(),
            "aarch64",
            "{n}: the bundled busybox ran as {out}"
        );
    }
    // The worker's guard holds the API servers' VIP in nftables.
    let rules = on_ok("n2", "nft list table ip bale_lvscare");
    assert!(
        rules.contains("10.103.97.2") && rules.contains(N1),
        "n2: {rules}"
    );
    // The registry serves the arm64 variant under the original name, and no amd64 one.
    for ip in [N1, N2] {
        let image = format!("docker://{ip}:5050/appliance/web:1.0");
        let o = std::process::Command::new("skopeo")
            .args([
                "--override-arch",
                "arm64",
                "inspect",
                "--tls-verify=false",
                &image,
            ])
            .output()
            .expect("run skopeo");
        ok(&o);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["Architecture"], "arm64", "{ip}: {v}");
        let o = std::process::Command::new("skopeo")
            .args([
                "--override-arch",
                "amd64",
                "inspect",
                "--tls-verify=false",
                &image,
            ])
            .output()
            .expect("run skopeo");
        assert!(
            !o.status.success(),
            "{ip} serves an amd64 variant it does not carry"
        );
    }
    let (o, _) = run_on(&bale_bin(), "check", &hosts, &["--bundle", b]);
    ok(&o);
    let (o, _) = run_on(&bale_bin(), "reset", &hosts, &["--bundle", b, "--yes"]);
    ok(&o);
    for (n, was) in ["n1", "n2"].iter().zip(&before) {
        let now = on_ok(n, SNAPSHOT);
        let gone: Vec<&str> = was
            .lines()
            .filter(|l| !now.lines().any(|m| m == *l))
            .collect();
        let left: Vec<&str> = now
            .lines()
            .filter(|l| !was.lines().any(|m| m == *l))
            .collect();
        assert!(
            gone.is_empty() && left.is_empty(),
            "{n}: reset did not leave the node as it was: left behind {left:?}, removed {gone:?}"
        );
    }

    // The same file run on an arm64 node itself, with no hosts: it installs there.
    let key = key();
    let kh = known_hosts_path();
    let o = std::process::Command::new("scp")
        .args([
            "-q",
            "-i",
            &key,
            "-o",
            &format!("UserKnownHostsFile={kh}"),
            b,
        ])
        .arg(format!("root@{N1}:/root/app-arm.bale"))
        .output()
        .expect("run scp");
    ok(&o);
    let t = Instant::now();
    on_ok("n1", "cd /root && ./app-arm.bale install 2>&1");
    web_answers_on(&[N1]);
    tell(&format!(
        "./app-arm.bale install on an arm64 node by itself: {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    on_ok("n1", "cd /root && ./app-arm.bale check");
    on_ok("n1", "cd /root && ./app-arm.bale reset --yes");
    on_ok("n1", "rm -f /root/app-arm.bale");
    let now = on_ok("n1", SNAPSHOT);
    assert_eq!(now, before[0], "n1: the local reset left the node changed");
    bed.finish();
}

/// The appliance for linux/amd64 and linux/arm64 in one file, from a copy of the example's
/// context (hard links) whose Kubefile takes each platform's runtime by `${ARCH}`.
fn mixed_appliance(dir: &Path, arm: &Path) -> PathBuf {
    let app = root().join("examples/appliance");
    for need in [
        "images/web/index.json",
        "runtime/bin/containerd",
        "runtime-arm64/bin/containerd",
    ] {
        assert!(
            app.join(need).exists(),
            "examples/appliance/{need} is missing: scripts/test.sh makes it"
        );
    }
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    for part in ["rootfs", "images", "imageList", "charts", "Kubefile"] {
        link_tree(&app.join(part), &ctx.join(part));
    }
    link_tree(&app.join("runtime"), &ctx.join("runtime-amd64"));
    link_tree(&app.join("runtime-arm64"), &ctx.join("runtime-arm64"));
    let kubefile = std::fs::read_to_string(app.join("Kubefile"))
        .unwrap()
        .replace("COPY $RUNTIME/", "COPY runtime-${ARCH}/");
    assert!(
        kubefile.contains("COPY runtime-${ARCH}/bin bin"),
        "{kubefile}"
    );
    std::fs::remove_file(ctx.join("Kubefile")).unwrap();
    std::fs::write(ctx.join("Kubefile"), kubefile).unwrap();
    let out = dir.join("appliance.bale");
    build_for_amd64_and_arm64(&ctx, "appliance:0.1.0", &out, arm);
    let info = stdout(&bale(&["info", out.to_str().unwrap()]));
    assert!(info.contains("arch:        x86_64"), "{info}");
    assert!(info.contains("platforms:   aarch64, x86_64"), "{info}");
    out
}

/// The per-platform manifest digests of an image as the registry at `ip` serves its index.
fn variant_digests(ip: &str, image: &str) -> std::collections::BTreeMap<String, String> {
    let o = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{ip}:5050/{image}"))
        .output()
        .expect("run skopeo");
    ok(&o);
    let index: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{ip}: {image} is not served as an index: {index}"))
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                m["digest"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn one_bundle_installs_two_x86_64_nodes_and_an_arm64_node() {
    let Some(arm) = aarch64_bale() else { return };
    let dir = scratch("mixed-platforms");
    let bundle = mixed_appliance(&dir, &arm);
    let size = std::fs::metadata(&bundle).unwrap().len();
    let Some(bed) = Testbed::up(3, &["--arch", "n3=aarch64"]) else {
        return;
    };
    let status = tb_ok(&["status"]);
    tell(&format!(
        "nodes:\n{status}(not covered on n3: arm64 runc and arm64 nft themselves, see this file's doc comment)"
    ));
    let arches = [
        ("n1", N1, "x86_64"),
        ("n2", N2, "x86_64"),
        ("n3", N3, "aarch64"),
    ];
    for (n, _, arch) in arches {
        assert_eq!(on_ok(n, "uname -m").trim(), arch, "{n}");
    }
    let before: Vec<String> = arches.iter().map(|(n, ..)| on_ok(n, SNAPSHOT)).collect();

    // The mixed file itself runs the install (its program is x86_64, like this host).
    let hosts = ["--masters", N1, "--nodes", &format!("{N2},{N3}")];
    let t = Instant::now();
    let (o, ev) = run_on(&bundle, "install", &hosts, &[]);
    ok(&o);
    web_answers_on(&[N1, N2, N3]);
    tell(&format!(
        "install of one bundle on 2 x86_64 nodes + 1 arm64 node (emulated): {:.1} s to the app answering",
        t.elapsed().as_secs_f64()
    ));
    for (n, ip, arch) in arches {
        let phases: f64 = ev
            .iter()
            .filter(|e| e["event"] == "done" && e["node"] == ip)
            .filter_map(|e| e["seconds"].as_f64())
            .sum();
        tell(&format!("{n} ({arch}): its phases took {phases:.1} s"));
        let arch_check = ev
            .iter()
            .find(|e| e["event"] == "preflight" && e["node"] == ip)
            .and_then(|t| t["checks"].as_array())
            .and_then(|c| c.iter().find(|c| c["name"] == "arch"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            arch_check["detail"],
            format!("{arch} (bundle aarch64, x86_64)"),
            "{n}: {arch_check}"
        );
    }
    // What the installer sent: each node's copy note says where its bytes came from.
    let mut from_installer = 0u64;
    for e in ev.iter().filter(|e| e["event"] == "info") {
        let m = e["message"].as_str().unwrap_or("");
        if let Some(rest) = m.split("bytes from the installer ").nth(1) {
            let n: u64 = rest
                .split(',')
                .next()
                .and_then(|x| x.trim().parse().ok())
                .unwrap_or_else(|| panic!("unreadable copy note: {m}"));
            from_installer += n;
            tell(&format!("{}: {m}", e["node"]));
        }
    }
    tell(&format!(
        "bytes sent by the installer for the mixed cluster: {from_installer} = {:.2}x the bundle ({size} bytes)",
        from_installer as f64 / size as f64
    ));
    // One copy of the bundle, and the arm64 node's own program (its chunks come from a peer).
    let arm_program = std::fs::metadata(&arm).unwrap().len();
    assert!(
        from_installer >= size && from_installer <= size + arm_program + (1 << 20),
        "the installer sent {from_installer} bytes for a {size}-byte bundle and a \
         {arm_program}-byte arm64 program"
    );

    let busybox = variant_digests(N1, "library/busybox:1.36");
    assert!(
        busybox.contains_key("amd64") && busybox.contains_key("arm64"),
        "{busybox:?}"
    );
    for (n, ip, arch) in arches {
        // Each node runs its own architecture's program, binaries and image variant.
        assert_eq!(elf_machine(n, "/var/lib/bale/bundle.bale"), arch, "{n}");
        for b in ["containerd", "containerd-shim-runc-v2", "runc"] {
            assert_eq!(
                elf_machine(n, &format!("/usr/local/bin/{b}")),
                arch,
                "{n}: /usr/local/bin/{b}"
            );
        }
        assert_eq!(variant_digests(ip, "library/busybox:1.36"), busybox, "{n}");
        let out = on_ok(
            n,
            "ctr -n e2e images pull --hosts-dir /etc/containerd/certs.d \
             docker.io/library/busybox:1.36 >/dev/null && \
             ctr -n e2e content ls -q && \
             ctr -n e2e run --rm docker.io/library/busybox:1.36 e2e-arch busybox uname -m",
        );
        let (goarch, other) = if arch == "aarch64" {
            ("arm64", "amd64")
        } else {
            ("amd64", "arm64")
        };
        assert!(
            out.lines().any(|l| l.trim() == busybox[goarch]),
            "{n}: did not pull the {goarch} variant {}: {out}",
            busybox[goarch]
        );
        assert!(
            !out.lines().any(|l| l.trim() == busybox[other]),
            "{n}: pulled the {other} variant too: {out}"
        );
        assert_eq!(out.lines().last().map(str::trim), Some(arch), "{n}: {out}");
    }
    let (o, _) = run_on(&bundle, "check", &hosts, &[]);
    ok(&o);
    let (o, _) = run_on(&bundle, "reset", &hosts, &["--yes"]);
    ok(&o);
    for ((n, ..), was) in arches.iter().zip(&before) {
        assert_eq!(
            &on_ok(n, SNAPSHOT),
            was,
            "{n}: reset did not leave the node as it was"
        );
    }
    bed.finish();
}
