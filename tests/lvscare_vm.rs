//! `bale lvscare --backend ipvs` against a real kernel: two QEMU VMs of the testbed (v1 runs the
//! guardian and the clients, v2 the real servers). The development machine's kernel has no IP_VS,
//! so this is where the hand-written IPVS generic-netlink layer meets the kernel: every table the
//! guardian writes is compared with what `ipvsadm -Ln` (the kernel's own view, through
//! ipvsadm's libnl code) shows, and real HTTP traffic goes through the VIP.
//!
//! The binary copied in is a static musl build: $BALE_STATIC_BIN, else
//! out/release/bale-x86_64 (scripts/test.sh builds it before the tests run).
//! TCG-emulated VMs are 6-20x slower than the host: every wait here is generous.

mod common;
use common::testbed::*;
use common::{poll_until, stderr};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const V1: &str = "10.77.0.21";
const V2: &str = "10.77.0.22";
const VS: &str = "10.103.97.2:6443";
const VIP: &str = "10.103.97.2";
/// Two real servers on v2 (busybox httpd), each answering /who with its own name.
const RS_A: &str = "10.77.0.22:8081";
const RS_B: &str = "10.77.0.22:8082";
const INTERVAL_S: u64 = 2;
const TIMEOUT_S: u64 = 2;
const FALL: u64 = 2;

fn static_bale() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BALE_STATIC_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("out/release/bale-x86_64");
    p.is_file().then_some(p)
}

/// Copies a host file to `dest` on a VM through `testbed.sh ssh` (stdin).
fn copy_in(node: &str, src: &std::path::Path, dest: &str) {
    let f = std::fs::File::open(src).unwrap_or_else(|e| panic!("open {}: {e}", src.display()));
    let o = Command::new(testbed_sh())
        .args([
            "ssh",
            node,
            &format!("cat > {dest}.tmp && chmod 755 {dest}.tmp && mv {dest}.tmp {dest}"),
        ])
        .stdin(Stdio::from(f))
        .output()
        .expect("run testbed.sh ssh");
    assert!(
        o.status.success(),
        "copy {} to {node}:{dest}: {}",
        src.display(),
        stderr(&o)
    );
}

/// One virtual service as `ipvsadm -Ln` prints it: scheduler and destination -> (forward, weight).
#[derive(Debug, PartialEq)]
struct Svc {
    scheduler: String,
    dests: BTreeMap<String, (String, u32)>,
}

/// Parses `ipvsadm -Ln`: "TCP  10.103.97.2:6443 rr" then "  -> 10.77.0.22:8081  Masq 1 0 0".
fn ipvsadm(node: &str) -> BTreeMap<String, Svc> {
    let text = on_ok(node, "ipvsadm -Ln");
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["TCP", addr, sched, ..] => {
                out.insert(
                    addr.to_string(),
                    Svc {
                        scheduler: sched.to_string(),
                        dests: BTreeMap::new(),
                    },
                );
                current = Some(addr.to_string());
            }
            ["->", addr, fwd, weight, ..] if *addr != "RemoteAddress:Port" => {
                let svc = current
                    .as_ref()
                    .and_then(|c| out.get_mut(c))
                    .unwrap_or_else(|| panic!("destination before any service in:\n{text}"));
                let w = weight
                    .parse()
                    .unwrap_or_else(|_| panic!("weight {weight:?} in:\n{text}"));
                svc.dests.insert(addr.to_string(), (fwd.to_string(), w));
            }
            _ => {}
        }
    }
    out
}

fn expect_table(node: &str, sched: &str, dests: &[(&str, u32)]) -> BTreeMap<String, Svc> {
    let got = ipvsadm(node);
    let want = wanted_service(sched, dests);
    assert_eq!(
        got.len(),
        1,
        "exactly one virtual service expected: {got:?}"
    );
    assert_eq!(got.get(VS), Some(&want), "kernel table: {got:?}");
    got
}

/// The one virtual service `VS` with these masqueraded servers and weights.
fn wanted_service(sched: &str, dests: &[(&str, u32)]) -> Svc {
    Svc {
        scheduler: sched.into(),
        dests: dests
            .iter()
            .map(|(a, w)| (a.to_string(), ("Masq".to_string(), *w)))
            .collect(),
    }
}

/// Whether the kernel table on `node` is exactly `VS` with these servers and weights.
fn table_is(node: &str, sched: &str, dests: &[(&str, u32)]) -> bool {
    let got = ipvsadm(node);
    got.len() == 1 && got.get(VS) == Some(&wanted_service(sched, dests))
}

/// A shell function `get IP PORT` on the VMs: one HTTP/1.0 GET of /who over bash's /dev/tcp,
/// printing the body's last line (the server's name) or FAIL. (busybox wget segfaults in the
/// VM image, and the image has no curl.)
const GET: &str = "get() { r=$(timeout 10 bash -c \"exec 3<>/dev/tcp/$1/$2 && \
    printf 'GET /who HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3\" 2>/dev/null | tail -n 1); \
    echo \"${r:-FAIL}\"; }";

/// `n` sequential HTTP GETs of /who through the VIP on v1: how many each server answered
/// ("FAIL" counts failures).
fn spread(n: usize) -> BTreeMap<String, usize> {
    let out = on_ok(
        "v1",
        &format!("{GET}; for i in $(seq {n}); do get {VIP} 6443; done"),
    );
    let mut m = BTreeMap::new();
    for l in out.lines().filter(|l| !l.trim().is_empty()) {
        *m.entry(l.trim().to_string()).or_insert(0) += 1;
    }
    m
}

fn guardian_args(extra: &str) -> String {
    format!(
        "/usr/local/bin/bale lvscare --backend ipvs --vs {VS} --rs {RS_A} --rs {RS_B} \
         --health-scheme http --health-path /healthz --health-status 200 \
         --interval {INTERVAL_S}s --health-timeout {TIMEOUT_S}s --fall {FALL} --rise 1 {extra}"
    )
}

fn start_guardian(unit: &str, extra: &str) {
    on_ok(
        "v1",
        &format!("systemd-run --unit={unit} {}", guardian_args(extra)),
    );
}

fn journal(unit: &str) -> String {
    unit_log("v1", unit)
}

/// Polls `cond` every second until it holds or `limit` passes; returns the time it took.
fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) -> Duration {
    poll_until(Duration::from_secs(1), what, limit, cond)
}

/// The servers the guardian said it keeps when every probe failed.
fn kept_set(journal: &str) -> Vec<String> {
    let marker = "keeping the last good set: ";
    let line = journal
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no hold in the log:\n{journal}"));
    let list = &line[line.find(marker).map_or(0, |i| i + marker.len())..];
    list.split(", ").map(|a| a.trim().to_string()).collect()
}

fn web(cmd: &str, unit: &str) {
    on_ok("v2", &format!("systemctl {cmd} {unit}"));
}

#[test]
fn ipvs_backend_on_a_real_kernel() {
    let Some(bin) = static_bale() else {
        return common::skip(
            &[common::REQUIRE_TESTBED],
            "no static bale: set BALE_STATIC_BIN or run scripts/build-release.sh",
        );
    };
    let t_boot = Instant::now();
    let Some(bed) = Testbed::up(2, &["--vm"]) else {
        return;
    };
    eprintln!("VMs up in {:?}; bale: {}", t_boot.elapsed(), bin.display());
    let t_test = Instant::now();
    copy_in("v1", &bin, "/usr/local/bin/bale");

    // Real servers on v2: busybox httpd as persistent units so they can be stopped and started.
    for (unit, port, name) in [("web-a", 8081, "a"), ("web-b", 8082, "b")] {
        on_ok(
            "v2",
            &format!(
                "mkdir -p /srv/{name} && echo {name} > /srv/{name}/who && echo ok > /srv/{name}/healthz && \
                 printf '[Service]\\nExecStart=/bin/busybox httpd -f -p {port} -h /srv/{name}\\n' \
                   > /etc/systemd/system/{unit}.service && systemctl daemon-reload && systemctl start {unit}"
            ),
        );
    }
    let v2_direct = on_ok("v1", &format!("{GET}; get {V2} 8081"));
    assert_eq!(v2_direct.trim(), "a", "v2's server answers v1 directly");

    // ---- run-once: create, compare with the kernel, real traffic ---------------------------
    // No modprobe: resolving the IPVS netlink family loads ip_vs by itself.
    let o = on("v1", &guardian_args("--run-once"));
    assert!(o.status.success(), "run-once failed: {}", stderr(&o));
    let log = stderr(&o);
    assert!(log.contains("created service"), "{log}");
    expect_table("v1", "rr", &[(RS_A, 1), (RS_B, 1)]);
    let route = on_ok("v1", &format!("ip route show {VIP}/32"));
    assert!(
        route.contains(&format!("via {V1}")) && route.contains("proto 180"),
        "route mode: VIP/32 via this node, tagged proto 180: {route:?}"
    );
    let s = spread(12);
    assert_eq!(
        s.get("FAIL"),
        None,
        "requests through the VIP failed: {s:?}"
    );
    assert!(
        s.get("a").copied().unwrap_or(0) >= 4 && s.get("b").copied().unwrap_or(0) >= 4,
        "rr spreads over both: {s:?}"
    );

    // ---- adoption: a second run changes nothing; hand-made drift is corrected ---------------
    let o = on("v1", &guardian_args("--run-once"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("ipvs: "),
        "second run must adopt without changes: {}",
        stderr(&o)
    );
    expect_table("v1", "rr", &[(RS_A, 1), (RS_B, 1)]);
    on_ok(
        "v1",
        &format!(
            "ipvsadm -E -t {VS} -s wrr && ipvsadm -e -t {VS} -r {RS_A} -m -w 7 && \
             ipvsadm -a -t {VS} -r {V2}:9999 -m -w 1"
        ),
    );
    let o = on("v1", &guardian_args("--run-once"));
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    for needle in [
        "scheduler wrr -> rr",
        &format!("{RS_A} weight 7 -> 1"),
        &format!("removed {V2}:9999"),
    ] {
        assert!(log.contains(needle), "expected {needle:?} in: {log}");
    }
    expect_table("v1", "rr", &[(RS_A, 1), (RS_B, 1)]);
    // Another scheduler and weights from the config: the kernel must take them as given.
    let o = on("v1", &guardian_args("--run-once --scheduler wrr"));
    assert!(o.status.success(), "{}", stderr(&o));
    expect_table("v1", "wrr", &[(RS_A, 1), (RS_B, 1)]);

    // ---- the long-running guardian: drain, remove, restore, hold, kill -9 -----------------
    start_guardian("lvs1", "");
    wait_for(
        "the guardian's first round",
        Duration::from_secs(60),
        || journal("lvs1").contains("dropped all capabilities"),
    );
    expect_table("v1", "rr", &[(RS_A, 1), (RS_B, 1)]);

    web("stop", "web-b");
    let bound = Duration::from_secs(FALL * INTERVAL_S + TIMEOUT_S);
    let took = wait_for("b out of rotation", Duration::from_secs(90), || {
        !ipvsadm("v1")
            .get(VS)
            .is_some_and(|s| s.dests.contains_key(RS_B))
    });
    eprintln!("ipvs failover in the VM: {took:?} (fall x interval + timeout = {bound:?})");
    assert!(
        took < bound * 6 + Duration::from_secs(10),
        "failover took {took:?}, far beyond {bound:?} even for a TCG VM"
    );
    let j = log_with(
        || journal("lvs1"),
        &[
            &format!("ipvs: {RS_B} weight 1 -> 0"),
            &format!("ipvs: removed {RS_B}"),
        ],
    );
    let drained = j
        .find(&format!("ipvs: {RS_B} weight 1 -> 0"))
        .unwrap_or_else(|| panic!("no drain to weight 0 in the log:\n{j}"));
    let removed = j
        .find(&format!("ipvs: removed {RS_B}"))
        .unwrap_or_else(|| panic!("no removal in the log:\n{j}"));
    assert!(drained < removed, "drain comes before removal:\n{j}");
    assert!(j.contains(&format!("drained {RS_B}")), "{j}");
    expect_table("v1", "rr", &[(RS_A, 1)]);
    let s = spread(6);
    assert_eq!(
        s,
        BTreeMap::from([("a".to_string(), 6)]),
        "after removal every request succeeds on a"
    );

    web("start", "web-b");
    wait_for("b back in rotation", Duration::from_secs(90), || {
        ipvsadm("v1")
            .get(VS)
            .is_some_and(|s| s.dests.get(RS_B) == Some(&("Masq".into(), 1)))
    });
    log_with(|| journal("lvs1"), &[&format!("restored {RS_B}")]);
    let s = spread(8);
    assert!(
        s.contains_key("b") && !s.contains_key("FAIL"),
        "b serves again: {s:?}"
    );

    // Every server down at once: the last good set stays, and the log says so.
    web("stop", "web-a web-b");
    wait_for("the hold", Duration::from_secs(90), || {
        journal("lvs1").contains("keeping the last good set")
    });
    // Deliberate: two more rounds pass with every server down, and the held set must survive
    // them (the guardian logs nothing per round, so there is no event to wait for).
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_S));
    // Both stop at once, but a round may still have seen only one of them down: the set kept
    // is whatever was active then, and the kernel table must show exactly that.
    let j = journal("lvs1");
    let kept = kept_set(&j);
    assert!(!kept.is_empty(), "{j}");
    let kept: Vec<(&str, u32)> = kept.iter().map(|a| (a.as_str(), 1)).collect();
    expect_table("v1", "rr", &kept);
    web("start", "web-a web-b");
    wait_for("normal rules again", Duration::from_secs(90), || {
        journal("lvs1").contains("normal health rules resume")
    });
    // The hold ends when the first server answers again; the other may still fail a probe,
    // be drained to weight 0 and come back only after its good probes: wait for the table.
    wait_for(
        "both servers back at weight 1",
        Duration::from_secs(90),
        || table_is("v1", "rr", &[(RS_A, 1), (RS_B, 1)]),
    );

    // kill -9 and a new guardian: the table is adopted, never duplicated.
    on_ok("v1", "systemctl kill -s KILL lvs1");
    wait_for(
        "the killed guardian to be gone",
        Duration::from_secs(30),
        || {
            !on("v1", "systemctl is-active --quiet lvs1")
                .status
                .success()
        },
    );
    expect_table("v1", "rr", &[(RS_A, 1), (RS_B, 1)]);
    start_guardian("lvs2", "");
    wait_for(
        "the second guardian's first round",
        Duration::from_secs(60),
        || journal("lvs2").contains("dropped all capabilities"),
    );
    // Deliberate: two rounds of the new guardian pass, and none of them may touch the table it
    // adopted (an adoption that changes nothing logs nothing, so there is no event to wait for).
    std::thread::sleep(Duration::from_secs(2 * INTERVAL_S));
    let j = journal("lvs2");
    assert!(
        !j.contains("created service") && !j.contains("added "),
        "the restarted guardian must adopt the table:\n{j}"
    );
    expect_table("v1", "rr", &[(RS_A, 1), (RS_B, 1)]);
    on_ok("v1", "systemctl stop lvs2");

    // ---- --clean: nothing of bale's is left ------------------------------------------------
    on_ok(
        "v1",
        &format!("/usr/local/bin/bale lvscare --clean --vs {VS}"),
    );
    assert!(ipvsadm("v1").is_empty(), "clean leaves no service");
    assert_eq!(on_ok("v1", "ip route show proto 180").trim(), "");

    // ---- link mode: the VIP on a dummy interface, with source NAT for local clients --------
    // (Without the masquerade the masters answer the VIP through the default route: the
    // testbed's guard counter would catch that.)
    let o = on_success("v1", &guardian_args("--run-once --mode link"));
    assert!(
        stderr(&o).contains("link mode: source NAT"),
        "{}",
        stderr(&o)
    );
    let masq = on_ok("v1", "nft list table ip bale_lvscare_ipvs");
    assert!(masq.contains("masquerade"), "{masq}");
    assert_eq!(
        on_ok("v1", "cat /proc/sys/net/ipv4/vs/conntrack").trim(),
        "1"
    );
    let addr = on_ok("v1", "ip -o addr show dev bale-lvs0");
    assert!(addr.contains(&format!("{VIP}/32")), "{addr}");
    expect_table("v1", "rr", &[(RS_A, 1), (RS_B, 1)]);
    let s = spread(8);
    assert_eq!(s.get("FAIL"), None, "link mode traffic: {s:?}");
    assert!(s.contains_key("a") && s.contains_key("b"), "{s:?}");
    on_ok(
        "v1",
        &format!("/usr/local/bin/bale lvscare --clean --vs {VS}"),
    );
    assert!(ipvsadm("v1").is_empty());
    let links = on_ok("v1", "ip -o link show");
    assert!(!links.contains("bale-lvs0"), "{links}");
    let tables = on_ok("v1", "nft list tables");
    assert!(
        !tables.contains("bale"),
        "no bale nftables table left: {tables}"
    );

    eprintln!(
        "lvscare VM test body took {:?} (after {:?} of VM boot)",
        t_test.elapsed(),
        t_boot.elapsed() - t_test.elapsed()
    );
    bed.finish();
}
