//! `bale install` (connect, preflight, upload, agent-check) against the throw-away nodes of
//! `scripts/testbed.sh`: key, password, sudo and non-22-port logins, host key checks, preflight
//! failures, the journal, and a node killed mid-run.
//!
//! Needs root and the testbed. Without them each test skips, or fails under BALE_REQUIRE_ALL=1
//! or BALE_REQUIRE_TESTBED=1 (see `common::skip`).

mod common;

use common::events::*;
use common::testbed::*;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

fn known_hosts() -> String {
    std::fs::read_to_string(known_hosts_path()).expect("testbed known_hosts")
}

struct Bundles {
    small: PathBuf,
    big: PathBuf,
}

/// A bundle, and one with 40 MiB of incompressible content (too big for a 64 MiB data dir).
fn bundles() -> &'static Bundles {
    static B: OnceLock<Bundles> = OnceLock::new();
    B.get_or_init(|| {
        let dir = scratch("install_nodes");
        let tree = dir.join("tree");
        sample_tree(&tree);
        let small = dir.join("app.bale");
        build(&tree, &small);
        std::fs::write(tree.join("noise.bin"), noise(40 << 20, 0x2545f4914f6cdd1d)).unwrap();
        let big = dir.join("big.bale");
        build(&tree, &big);
        Bundles { small, big }
    })
}

/// Runs `bundle install ARGS --json` and returns (output, events).
fn install(bundle: &Path, args: &[&str]) -> (Output, Vec<serde_json::Value>) {
    // This file tests the engine and the copy; the node steps after them have their own tests.
    let mut all = vec!["install", "--json", "--until", "agent-check"];
    all.extend_from_slice(args);
    run_logged(bundle, &all, &format!("install {args:?}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn install_with_key_password_sudo_and_port() {
    let Some(bed) = Testbed::up(3, &[]) else {
        return;
    };
    let b = &bundles().small;
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    // n3 also answers on port 2222 (same host keys).
    tb_ok(&["ssh", "n3", "/usr/sbin/sshd -p 2222"]);
    let mut kh = known_hosts();
    for l in known_hosts()
        .lines()
        .filter(|l| l.starts_with(&format!("{N3},")))
    {
        let rest = l.split_once(' ').map(|x| x.1).unwrap_or("");
        kh.push_str(&format!("[{N3}]:2222 {rest}\n"));
    }
    let kh = write(dir.path(), "known_hosts", &kh);
    let pw = write(dir.path(), "pw", "root-pass\n");
    // n1: root with the key; n2: root with the password; n3: ops (sudo) with the key on 2222.
    let cf = write(
        dir.path(),
        "Clusterfile",
        &format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {{name: t}}\nspec:\n  hosts:\n\
             \x20   - ips: [{N1}]\n      roles: [master]\n      ssh: {{pk: {key}}}\n\
             \x20   - ips: [{N2}]\n      roles: [node]\n\
             \x20   - ips: [{N3}]\n      roles: [node]\n      ssh: {{user: ops, pk: {key}, port: \"2222\"}}\n"
        ),
    );
    let args = ["-f", &cf, "--password-file", &pw, "--known-hosts", &kh];
    let (o, ev) = install(b, &args);
    ok(&o);
    let n3 = format!("{N3}:2222");
    for n in [N1, N2, n3.as_str()] {
        for p in ["connect", "preflight", "upload", "agent-check"] {
            assert!(has(&ev, "done", p, n), "{p} on {n}");
        }
    }
    assert!(!stdout(&o).contains("root-pass") && !stderr(&o).contains("root-pass"));
    for n in ["n1", "n2", "n3"] {
        let j = tb_ok(&["ssh", n, "cat /var/lib/bale/journal.json"]);
        assert!(
            j.contains("\"upload\"") && j.contains("\"agent-check\""),
            "{n}: {j}"
        );
        tb_ok(&["ssh", n, "/var/lib/bale/bundle.bale verify >/dev/null"]);
    }

    // Again: the journal skips what is done.
    let (o, ev) = install(b, &args);
    ok(&o);
    for n in [N1, N2, n3.as_str()] {
        assert!(
            has(&ev, "skip", "upload", n) && has(&ev, "skip", "agent-check", n),
            "{n}"
        );
    }

    // A password-sudo user (sudo -S), and the plan of a dry run.
    let pw2 = write(dir.path(), "pw2", "opspw-pass\n");
    let (o, ev) = install(
        b,
        &[
            "--masters",
            N1,
            "--user",
            "opspw",
            "--key",
            &key,
            "--password-file",
            &pw2,
            "--known-hosts",
            &kh,
            "--dry-run",
        ],
    );
    ok(&o);
    let plan = ev.iter().find(|e| e["event"] == "plan").expect("a plan");
    assert!(plan["steps"].to_string().contains("already done"), "{plan}");
    let (o, ev) = install(
        b,
        &[
            "--masters",
            N1,
            "--user",
            "opspw",
            "--key",
            &key,
            "--password-file",
            &pw2,
            "--known-hosts",
            &kh,
            "--data-dir",
            "/var/lib/bale-pw",
        ],
    );
    ok(&o);
    // That fresh data dir sent the bundle through `sudo -S` (the password first on stdin).
    assert!(has(&ev, "done", "upload", N1) && has(&ev, "done", "agent-check", N1));
    // Without the password, sudo is explained.
    let (o, _) = install(
        b,
        &[
            "--masters",
            N1,
            "--user",
            "opspw",
            "--key",
            &key,
            "--known-hosts",
            &kh,
        ],
    );
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("cannot run sudo without a password"),
        "{}",
        stdout(&o)
    );
    bed.finish();
}

#[test]
fn host_keys_changed_and_unknown_and_a_key_with_a_passphrase() {
    let Some(bed) = Testbed::up(3, &[]) else {
        return;
    };
    let b = &bundles().small;
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    // n1's entries carry n2's keys.
    let orig = known_hosts();
    let n2_key = |ty: &str| {
        orig.lines()
            .find(|l| l.starts_with(&format!("{N2},")) && l.contains(ty))
            .map(|l| l.split_once(' ').map(|x| x.1).unwrap_or("").to_string())
            .unwrap()
    };
    let forged: String = orig
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{N1},")) {
                let ty = l.split(' ').nth(1).unwrap_or("");
                format!("{N1},n1 {}\n", n2_key(ty))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let kh = write(dir.path(), "kh-forged", &forged);
    for extra in [&[][..], &["--accept-new-host-keys"][..]] {
        let mut a = vec!["--masters", N1, "--key", &key, "--known-hosts", &kh];
        a.extend_from_slice(extra);
        let (o, _) = install(b, &a);
        assert!(!o.status.success());
        let out = stdout(&o);
        assert!(
            out.contains("host key has CHANGED")
                && out.contains(N1)
                && out.contains("ssh-keygen -R"),
            "{out}"
        );
    }
    // Unknown: refused by default, recorded with --accept-new-host-keys.
    let empty = write(dir.path(), "kh-empty", "");
    let (o, _) = install(
        b,
        &[
            "--masters",
            N1,
            "--key",
            &key,
            "--known-hosts",
            &empty,
            "--dry-run",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("--accept-new-host-keys"),
        "{}",
        stdout(&o)
    );
    let (o, _) = install(
        b,
        &[
            "--masters",
            N1,
            "--key",
            &key,
            "--known-hosts",
            &empty,
            "--dry-run",
            "--accept-new-host-keys",
        ],
    );
    ok(&o);
    // Recorded (possibly hashed, as Debian's ssh_config asks).
    assert!(std::fs::read_to_string(&empty)
        .unwrap()
        .contains("ssh-ed25519"));

    // A key with a passphrase: ssh asks bale itself (as askpass) for it; a wrong one is refused,
    // and names the host.
    let enc = dir.path().join("id_enc");
    let o = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "s3cret phrase",
            "-C",
            "bale-test",
            "-f",
        ])
        .arg(&enc)
        .output()
        .unwrap();
    ok(&o);
    let public = std::fs::read_to_string(enc.with_extension("pub")).unwrap();
    on_ok(
        "n2",
        &format!("echo '{}' >> /root/.ssh/authorized_keys", public.trim()),
    );
    let kh = known_hosts_path();
    let enc = enc.to_str().unwrap();
    for (phrase, works) in [("s3cret phrase", true), ("wrong", false)] {
        let file = write(dir.path(), "phrase", &format!("{phrase}\n"));
        let (o, ev) = install(
            b,
            &[
                "--masters",
                N2,
                "--key",
                enc,
                "--key-passphrase-file",
                &file,
                "--known-hosts",
                &kh,
                "--dry-run",
            ],
        );
        if works {
            ok(&o);
            assert!(has(&ev, "done", "connect", N2));
        } else {
            assert!(!o.status.success());
            let out = stdout(&o);
            assert!(
                out.contains(&format!("{N2}: login as root refused")),
                "{out}"
            );
            assert!(!out.contains(phrase), "the passphrase was printed: {out}");
        }
    }
    bed.finish();
}

#[test]
fn preflight_catches_full_disk_duplicate_hostname_and_wrong_architecture() {
    let Some(bed) = Testbed::up(3, &["--tmpfs", "n2:/var/lib/bale:64M"]) else {
        return;
    };
    let b = &bundles().big;
    let key = key();
    let h2 = tb_ok(&["ssh", "n2", "hostname"]);
    tb_ok(&["ssh", "n3", &format!("hostname {}", h2.trim())]);
    let kh = "/var/lib/bale-testbed/known_hosts";
    let hosts = format!("{N2},{N3}");
    let (o, ev) = install(
        b,
        &[
            "--masters",
            N1,
            "--nodes",
            &hosts,
            "--key",
            &key,
            "--known-hosts",
            kh,
        ],
    );
    assert!(!o.status.success());
    let stop = ev
        .iter()
        .find(|e| e["event"] == "stopped")
        .expect("stopped");
    let reason = stop["reason"].as_str().unwrap_or("");
    assert!(reason.contains(&format!("{N2}: disk")), "{reason}");
    assert!(reason.contains(&format!("{N3}: hostname")), "{reason}");
    assert!(reason.contains(&format!("{N2}: hostname")), "{reason}");
    assert!(!reason.contains(&format!("{N1}:")), "{reason}");
    assert!(
        reason.contains("--ignore-preflight=disk,hostname"),
        "{reason}"
    );
    assert!(!ev.iter().any(|e| e["phase"] == "upload"), "nothing copied");
    let o = tb(&["ssh", "n1", "test -e /var/lib/bale/bundle.bale"]);
    assert!(!o.status.success());
    // Ignoring the hostname check leaves the disk.
    let (o, ev) = install(
        b,
        &[
            "--masters",
            N1,
            "--nodes",
            &hosts,
            "--key",
            &key,
            "--known-hosts",
            kh,
            "--ignore-preflight=hostname",
        ],
    );
    assert!(!o.status.success());
    let stop = ev
        .iter()
        .find(|e| e["event"] == "stopped")
        .expect("stopped");
    let reason = stop["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("disk") && !reason.contains(": hostname"),
        "{reason}"
    );

    // The wrong architecture: a bundle built with the aarch64 stub (its installer run here
    // under qemu-user) stops at preflight on these x86_64 hosts, before anything is copied.
    if let Some(arm) = aarch64_bale() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        sample_tree(&tree);
        let app = d.path().join("arm.bale");
        let path = |p: &Path| p.to_str().unwrap().to_string();
        ok(&bale(&[
            "build",
            &path(&tree),
            "-o",
            &path(&app),
            "--stub",
            &path(&arm),
            "--name",
            "arm",
        ]));
        let o = qemu(
            &app,
            &[
                "install",
                "--json",
                "--masters",
                N1,
                "--key",
                &key,
                "--known-hosts",
                kh,
            ],
        );
        assert!(!o.status.success());
        let ev = events(&stdout(&o));
        let table = ev
            .iter()
            .find(|e| e["event"] == "preflight" && e["node"] == N1)
            .unwrap_or_else(|| panic!("no preflight table: {}\n{}", stdout(&o), stderr(&o)));
        let arch = table["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == "arch"))
            .unwrap_or_else(|| panic!("no arch check: {table}"));
        assert_eq!(arch["detail"], "x86_64 (bundle aarch64)", "{table}");
        assert_eq!(arch["status"], "fail", "{table}");
        assert!(!ev.iter().any(|e| e["phase"] == "upload"), "nothing copied");
    }
    bed.finish();
}

#[test]
fn a_killed_node_fails_alone_and_a_rerun_converges() {
    let Some(bed) = Testbed::up(3, &[]) else {
        return;
    };
    let b = &bundles().small;
    let key = key();
    let kh = "/var/lib/bale-testbed/known_hosts";
    let hosts = format!("{N2},{N3}");
    let args = [
        "install",
        "--json",
        "--until",
        "agent-check",
        "--masters",
        N1,
        "--nodes",
        &hosts,
        "--key",
        &key,
        "--known-hosts",
        kh,
    ];
    let t = Instant::now();
    let mut child = Command::new(b)
        .env("BALE_STATE", admin_state())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut text = String::new();
    let mut killed = false;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if !killed && line.contains("\"start\"") && line.contains("\"upload\"") && line.contains(N3)
        {
            tb_ok(&["kill", "n3"]);
            killed = true;
        }
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait().unwrap();
    eprintln!(
        "killed run: {status:?} in {:.1}s\n{text}",
        t.elapsed().as_secs_f64()
    );
    assert!(killed, "n3 never started its upload");
    assert!(!status.success());
    let ev = events(&text);
    assert_eq!(failed_nodes(&ev), [N3]);
    assert!(has(&ev, "done", "agent-check", N1) && has(&ev, "done", "agent-check", N2));
    assert!(summary(&ev)["retry"]
        .as_str()
        .unwrap_or("")
        .contains("install"));

    tb_ok(&["start", "n3"]);
    let (o, ev) = install(b, &args[4..]);
    ok(&o);
    assert!(has(&ev, "skip", "upload", N1) && has(&ev, "skip", "upload", N2));
    assert!(has(&ev, "done", "agent-check", N3));
    let (o, ev) = install(b, &args[4..]);
    ok(&o);
    assert!(!ev
        .iter()
        .any(|e| e["event"] == "done" && e["phase"] == "upload"));

    // Deleting a host that is down, with no record of the cluster on the admin side: it
    // cannot be reset, nor tell who stays; the error names the record looked for and says
    // what to do instead.
    fresh_admin_state();
    tb_ok(&["kill", "n3"]);
    let o = run(
        b,
        &[
            "delete",
            "--yes",
            "--nodes",
            N3,
            "--key",
            &key,
            "--known-hosts",
            kh,
            "--connect-timeout",
            "2",
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("no deleted host could tell which hosts stay")
            && err.contains(&format!(
                "looked for {}",
                admin_state()
                    .join("clusters")
                    .join(format!("{N3}.json"))
                    .display()
            ))
            && err.contains("run install again with the hosts that stay"),
        "{err}"
    );
    bed.finish();
}

/// No hosts: this machine only, no SSH.
#[test]
fn install_on_this_machine() {
    if !is_root() {
        return skip(&[REQUIRE_TESTBED], "needs root");
    }
    let b = &bundles().small;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (o, ev) = install(
        b,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--ignore-preflight=ports,conflicts,systemd,os,disk",
        ],
    );
    ok(&o);
    assert!(has(&ev, "done", "agent-check", "local"));
    assert!(data.join("bundle.bale").is_file() && data.join("journal.json").is_file());
    let (o, ev) = install(
        b,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--ignore-preflight=ports,conflicts,systemd,os,disk",
        ],
    );
    ok(&o);
    assert!(has(&ev, "skip", "upload", "local"));
}

/// One bale run per host: a run that finds the host lock taken stops at `lock` and names the
/// holder; an installer killed mid-run leaves no lock behind (it lived on the SSH session).
#[test]
fn a_second_run_waits_for_the_host_lock_and_a_killed_run_leaves_none() {
    let Some(bed) = Testbed::up(1, &[]) else {
        return;
    };
    let key = key();
    let kh = known_hosts_path();
    let args: Vec<String> = [
        "install",
        "--json",
        "--until",
        "agent-check",
        "--masters",
        N1,
        "--key",
        &key,
        "--known-hosts",
        &kh,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    // Another run holds the lock (as bale's own lock command would): it names itself in the
    // owner file once it has the lock.
    on_ok(
        "n1",
        "rm -f /run/bale.owner; setsid sh -c 'exec 9>>/run/bale.lock; flock 9; \
         echo \"bale install from elsewhere (pid 42) since then\" > /run/bale.owner; sleep 60' \
         </dev/null >/dev/null 2>&1 &",
    );
    poll_until(
        std::time::Duration::from_millis(100),
        "the other run to hold the lock on n1",
        std::time::Duration::from_secs(30),
        || {
            on("n1", "grep -q 'from elsewhere' /run/bale.owner")
                .status
                .success()
        },
    );
    let b = &bundles().big;
    let o = Command::new(b)
        .env("BALE_STATE", admin_state())
        .args(&args)
        .output()
        .unwrap();
    assert!(!o.status.success(), "ran despite the lock");
    let ev = events(&stdout(&o));
    let failed = ev
        .iter()
        .find(|e| e["event"] == "fail" && e["phase"] == "lock")
        .unwrap_or_else(|| panic!("no fail event for the lock phase: {}", stdout(&o)));
    let msg = failed.to_string();
    assert!(
        msg.contains("bale install from elsewhere (pid 42)") && msg.contains("/run/bale.lock"),
        "{msg}"
    );
    assert!(!has(&ev, "start", "preflight", N1), "went on past the lock");
    on_ok("n1", "pkill -x sleep; true");

    // An installer killed during its upload: the next run takes the lock at once.
    let mut first = Command::new(b)
        .env("BALE_STATE", admin_state())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = first.stdout.take().unwrap();
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if line.contains("\"start\"") && line.contains("\"upload\"") {
            break;
        }
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let t = Instant::now();
    let o = Command::new(b)
        .env("BALE_STATE", admin_state())
        .args(&args)
        .output()
        .unwrap();
    ok(&o);
    let ev = events(&stdout(&o));
    assert!(has(&ev, "done", "lock", N1));
    eprintln!(
        "re-run after the kill took {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // and the lock is free again once that run is over
    on_ok("n1", "flock -n /run/bale.lock true");
    bed.finish();
}
