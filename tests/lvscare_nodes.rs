//! `bale lvscare --backend nftables` on the test nodes, with real TLS traffic.
//!
//! n1..n3 run an HTTPS server each: `openssl s_server -WWW` (openssl is already in the node
//! image, so the cached image is unchanged), with a self-signed key made on the node, serving
//! /healthz and /who (the node's name). n4 runs the guardian from the bale binary under test
//! (the host's build directory is bind-mounted at /opt/lvt) and the clients:
//! `openssl s_client` connections to the VIP. Every request names the server that answered, so
//! the spread and every failure are seen from the client's side, while `nft list ruleset` on
//! n4 shows the data plane and the guardian's journal what it decided and why.
//!
//! Covered: spreading over all three; a stopped server leaves the rotation within
//! fall x interval + timeout and then no request fails; it comes back; every server down keeps
//! the last good set (and says so); `link-down` acts like a stop; kill -9 and restart adopts the
//! table (one table, one rule per chain); `--clean` leaves no bale table and no route.

mod common;
use common::testbed::*;
use common::{bale_bin, poll_until, stderr};
use std::collections::BTreeMap;
use std::time::Duration;

const VS: &str = "10.103.97.2:6443";
const BACKENDS: [(&str, &str); 3] = [("n1", N1), ("n2", N2), ("n3", N3)];
const INTERVAL_MS: u64 = 1000;
const TIMEOUT_MS: u64 = 1000;
const FALL: u64 = 2;
/// Polling the table over ssh costs up to this much on top of what the guardian takes.
const POLL_SLACK: Duration = Duration::from_millis(1500);

fn guardian_cmd() -> String {
    let rs: Vec<String> = BACKENDS
        .iter()
        .map(|(_, ip)| format!("--rs {ip}:6443"))
        .collect();
    format!(
        "/opt/lvt/bale lvscare --backend nftables --vs {VS} {} --insecure-skip-verify \
         --interval {INTERVAL_MS}ms --health-timeout {TIMEOUT_MS}ms --fall {FALL} --rise 1",
        rs.join(" ")
    )
}

fn start_guardian(unit: &str) {
    on_ok(
        "n4",
        &format!("systemd-run --unit={unit} -p Restart=no {}", guardian_cmd()),
    );
}

fn journal(unit: &str) -> String {
    unit_log("n4", unit)
}

/// `n` sequential HTTPS requests through the VIP from n4: who answered, "FAIL" for failures.
fn spread(n: usize) -> BTreeMap<String, usize> {
    let out = on_ok(
        "n4",
        &format!(
            "for i in $(seq {n}); do \
               r=$(printf 'GET /who HTTP/1.0\\r\\n\\r\\n' | timeout 5 openssl s_client -quiet \
                   -connect {VS} 2>/dev/null | tail -n 1); \
               echo \"${{r:-FAIL}}\"; \
             done"
        ),
    );
    let mut m = BTreeMap::new();
    for l in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        *m.entry(l.to_string()).or_insert(0) += 1;
    }
    m
}

/// The real servers the DNAT rule in n4's output chain sends new connections to.
fn in_rotation() -> Vec<String> {
    let t = on_ok(
        "n4",
        "nft list chain ip bale_lvscare output 2>/dev/null || true",
    );
    let Some(rule) = t.lines().find(|l| l.contains("dnat")) else {
        return Vec::new();
    };
    let mut v: Vec<String> = BACKENDS
        .iter()
        .filter(|(_, ip)| rule.contains(&format!("{ip} . 6443")))
        .map(|(n, _)| n.to_string())
        .collect();
    v.sort();
    v
}

fn web(node: &str, action: &str) {
    on_ok(node, &format!("systemctl {action} web"));
}

/// `systemctl ACTION web` on n1..n3 at the same moment.
fn all_webs(action: &str) {
    std::thread::scope(|s| {
        for (node, _) in BACKENDS {
            s.spawn(move || web(node, action));
        }
    });
}

/// The servers (as node names) the guardian said it keeps when every probe failed.
fn kept_set(journal: &str) -> Vec<String> {
    let marker = "keeping the last good set: ";
    let line = journal
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no hold in the log:\n{journal}"));
    let list = &line[line.find(marker).map_or(0, |i| i + marker.len())..];
    let mut v: Vec<String> = BACKENDS
        .iter()
        .filter(|(_, ip)| list.contains(&format!("{ip}:6443")))
        .map(|(n, _)| n.to_string())
        .collect();
    v.sort();
    v
}

/// Polls `cond` every 100 ms until it holds or `limit` passes; returns the time it took.
fn wait_for(what: &str, limit: Duration, cond: impl FnMut() -> bool) -> Duration {
    poll_until(Duration::from_millis(100), what, limit, cond)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
fn assert_all_ok_from(s: &BTreeMap<String, usize>, allowed: &[&str]) {
    assert!(
        s.keys().all(|k| allowed.contains(&k.as_str())),
        "every request must succeed on {allowed:?}: {s:?}"
    );
}

#[test]
fn nftables_guardian_with_real_https_traffic() {
    let bin = bale_bin();
    let bin_dir = bin.parent().expect("the bale binary's directory");
    let bind = format!("n4:{}:/opt/lvt", bin_dir.display());
    let Some(bed) = Testbed::up(4, &["--bind", &bind]) else {
        return;
    };

    for (node, _) in BACKENDS {
        on_ok(
            node,
            &format!(
                "mkdir -p /srv/www && cd /srv/www && echo {node} > who && echo ok > healthz && \
                 openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
                   -subj /CN={node} -keyout key.pem -out cert.pem 2>/dev/null && \
                 printf '[Service]\\nWorkingDirectory=/srv/www\\nExecStart=/usr/bin/openssl s_server \
                   -quiet -WWW -accept 6443 -cert cert.pem -key key.pem\\n' \
                   > /etc/systemd/system/web.service && \
                 systemctl daemon-reload && systemctl start web"
            ),
        );
    }
    // Each server answers directly before the VIP exists (and no request goes to the VIP
    // before the guardian has set it up: it would leave through the default route).
    for (node, ip) in BACKENDS {
        let got = on_ok(
            "n4",
            &format!(
                "printf 'GET /who HTTP/1.0\\r\\n\\r\\n' | timeout 5 openssl s_client -quiet \
                 -connect {ip}:6443 2>/dev/null | tail -n 1"
            ),
        );
        assert_eq!(got.trim(), node, "direct request to {ip}");
    }

    start_guardian("lvs1");
    wait_for("the table with all three", Duration::from_secs(30), || {
        in_rotation() == names(&["n1", "n2", "n3"])
    });
    log_with(
        || journal("lvs1"),
        &[
            "nftables (--backend nftables)",
            "dropped all capabilities but CAP_NET_ADMIN, CAP_NET_RAW",
        ],
    );
    let route = on_ok("n4", "ip route show proto 180");
    assert!(
        route.contains(&format!("10.103.97.2 via {N4}")),
        "route mode: {route:?}"
    );

    // Spread: numgen round robin gives each server its share.
    let s = spread(30);
    assert_all_ok_from(&s, &["n1", "n2", "n3"]);
    for (node, _) in BACKENDS {
        assert!(
            s.get(node).copied().unwrap_or(0) >= 5,
            "{node} gets its share: {s:?}"
        );
    }

    // Stop one server: out of rotation within fall x interval + timeout, then no failures.
    let bound = Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS) + POLL_SLACK;
    web("n2", "stop");
    let took = wait_for("n2 out of rotation", Duration::from_secs(30), || {
        in_rotation() == names(&["n1", "n3"])
    });
    eprintln!("stop: n2 out of rotation after {took:?} (bound {bound:?})");
    assert!(
        took <= bound,
        "out of rotation after {took:?}, bound {bound:?}"
    );
    assert_all_ok_from(&spread(20), &["n1", "n3"]);
    let j = log_with(
        || journal("lvs1"),
        &[&format!("removed {N2}:6443 after {FALL} failed probes")],
    );
    let drained = j
        .find(&format!("drained {N2}:6443 (weight 0)"))
        .unwrap_or_else(|| panic!("no drain logged:\n{j}"));
    let removed = j
        .find(&format!("removed {N2}:6443"))
        .unwrap_or_else(|| panic!("no removal logged:\n{j}"));
    assert!(drained < removed, "drain, then removal:\n{j}");
    assert!(
        j.contains("connect: Connection refused"),
        "the reason is logged:\n{j}"
    );
    assert_all_ok_from(&spread(20), &["n1", "n3"]);

    // Restart it: back in rotation and serving.
    web("n2", "start");
    wait_for("n2 back", Duration::from_secs(30), || {
        in_rotation() == names(&["n1", "n2", "n3"])
    });
    log_with(|| journal("lvs1"), &[&format!("restored {N2}:6443")]);
    let s = spread(15);
    assert_all_ok_from(&s, &["n1", "n2", "n3"]);
    assert!(s.contains_key("n2"), "{s:?}");

    // Every server down: the last good set stays in the table, and the guardian says why.
    // The three stop at once; should a round still catch only some of them down, the set kept
    // is the one active then, and the table must hold exactly that.
    all_webs("stop");
    wait_for("the hold", Duration::from_secs(30), || {
        journal("lvs1").contains("keeping the last good set")
    });
    // Deliberate: three more rounds pass with every server down, and the held set must survive
    // them (the guardian logs nothing per round, so there is no event to wait for).
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    let j = journal("lvs1");
    let kept = kept_set(&j);
    assert!(!kept.is_empty(), "{j}");
    assert_eq!(
        in_rotation(),
        kept,
        "the table holds the last good set:\n{j}"
    );
    all_webs("start");
    wait_for("normal rules again", Duration::from_secs(30), || {
        journal("lvs1").contains("normal health rules resume")
    });
    assert_all_ok_from(&spread(9), &["n1", "n2", "n3"]);

    // A partition is the same as a stop (probes time out instead of being refused).
    tb_ok(&["link-down", "n2"]);
    let took = wait_for(
        "partitioned n2 out of rotation",
        Duration::from_secs(30),
        || in_rotation() == names(&["n1", "n3"]),
    );
    eprintln!("link-down: n2 out of rotation after {took:?} (bound {bound:?})");
    assert!(
        took <= bound,
        "out of rotation after {took:?}, bound {bound:?}"
    );
    assert_all_ok_from(&spread(20), &["n1", "n3"]);
    assert!(
        journal("lvs1").contains("no answer within"),
        "timeout is the reason"
    );
    tb_ok(&["link-up", "n2"]);
    wait_for("n2 back after link-up", Duration::from_secs(30), || {
        in_rotation() == names(&["n1", "n2", "n3"])
    });

    // kill -9 and a new guardian: the table is adopted, not duplicated.
    let before = on_ok("n4", "nft list ruleset");
    on_ok("n4", "systemctl kill -s KILL lvs1");
    wait_for("lvs1 gone", Duration::from_secs(30), || {
        !on("n4", "systemctl is-active --quiet lvs1")
            .status
            .success()
    });
    assert_eq!(
        on_ok("n4", "nft list ruleset"),
        before,
        "a killed guardian leaves its rules: the node keeps reaching the apiserver"
    );
    start_guardian("lvs2");
    wait_for("lvs2 running rounds", Duration::from_secs(30), || {
        journal("lvs2").contains("dropped all capabilities")
    });
    // Deliberate: three rounds of the new guardian pass, and none of them may touch the table
    // it adopted (an adoption that changes nothing logs nothing: no event to wait for).
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    let j = journal("lvs2");
    assert!(
        !j.contains("created service") && !j.contains("added "),
        "lvs2 adopts what lvs1 left:\n{j}"
    );
    let rules = on_ok("n4", "nft list ruleset");
    assert_eq!(rules.matches("table ip bale_lvscare").count(), 1, "{rules}");
    assert_eq!(rules.matches(" dnat ip to ").count(), 2, "{rules}");
    assert_eq!(rules.matches(" masquerade ").count(), 1, "{rules}");
    assert_eq!(in_rotation(), names(&["n1", "n2", "n3"]));
    assert_all_ok_from(&spread(9), &["n1", "n2", "n3"]);

    // Stop (rules stay), then --clean: no bale table, no route.
    on_ok("n4", "systemctl stop lvs2");
    assert!(on_ok("n4", "nft list tables").contains("bale_lvscare"));
    let o = on("n4", &format!("/opt/lvt/bale lvscare --clean --vs {VS}"));
    assert!(o.status.success(), "clean: {}", stderr(&o));
    let rules = on_ok("n4", "nft list ruleset");
    assert!(
        !rules.contains("bale"),
        "clean leaves no bale table:\n{rules}"
    );
    assert_eq!(on_ok("n4", "ip route show proto 180").trim(), "");
    bed.finish();
}
