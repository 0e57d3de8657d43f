//! The test nodes of `scripts/testbed.sh`, shared by every multi-node test.
//!
//! One testbed per machine: a test holds [`Testbed`] (an exclusive `flock` on a file in the
//! testbed state dir) for as long as it uses the nodes, so tests in different binaries and
//! processes take turns instead of tearing down each other's nodes.

use super::{ok, stderr, stdout};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const N1: &str = "10.77.0.11";
pub const N2: &str = "10.77.0.12";
pub const N3: &str = "10.77.0.13";
pub const N4: &str = "10.77.0.14";
pub const STATE: &str = "/var/lib/bale-testbed";

pub fn testbed_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed.sh")
}

pub fn tb(args: &[&str]) -> Output {
    Command::new(testbed_sh())
        .args(args)
        .output()
        .expect("run scripts/testbed.sh")
}

#[track_caller]
pub fn tb_ok(args: &[&str]) -> String {
    let o = tb(args);
    ok(&o);
    stdout(&o)
}

/// Runs `CMD` on a node as root through `testbed.sh ssh`.
pub fn on(node: &str, cmd: &str) -> Output {
    tb(&["ssh", node, cmd])
}

#[track_caller]
pub fn on_ok(node: &str, cmd: &str) -> String {
    let o = on(node, cmd);
    assert!(
        o.status.success(),
        "on {node}: {cmd}\nexit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// The testbed's private key and known_hosts file.
pub fn key() -> String {
    tb_ok(&["key"]).trim().to_string()
}

pub fn known_hosts_path() -> String {
    format!("{STATE}/known_hosts")
}

/// Held while a test uses the nodes; dropping it tears them down (after checking the guard).
pub struct Testbed {
    lock: std::fs::File,
}

impl Testbed {
    /// Takes the machine-wide testbed lock, then brings up fresh nodes n1..n`count` (or VMs
    /// with `--vm` in `extra`). `None` (after printing SKIP) when this machine cannot, unless
    /// BALE_REQUIRE_TESTBED=1, which turns that into a failure.
    pub fn up(count: usize, extra: &[&str]) -> Option<Testbed> {
        let why = if unsafe { libc::geteuid() } != 0 {
            "needs root".to_string()
        } else {
            let lock = take_lock();
            let _ = tb(&["down"]);
            let n = count.to_string();
            let mut args = vec!["up", n.as_str()];
            args.extend_from_slice(extra);
            let o = tb(&args);
            if o.status.success() {
                return Some(Testbed { lock });
            }
            format!("scripts/testbed.sh up failed: {}", stderr(&o))
        };
        if std::env::var("BALE_REQUIRE_TESTBED").as_deref() == Ok("1") {
            panic!("testbed required (BALE_REQUIRE_TESTBED=1) but unavailable: {why}");
        }
        eprintln!("SKIP: {why}");
        None
    }

    /// Asserts that no node sent a packet off the test network, then tears the nodes down.
    pub fn finish(self) {
        let g = tb_ok(&["guard-counter"]);
        assert_eq!(g.trim(), "0", "the nodes sent traffic off the test network");
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let _ = tb(&["down"]);
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn take_lock() -> std::fs::File {
    std::fs::create_dir_all(STATE).expect("create the testbed state dir");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{STATE}/.test-lock"))
        .expect("open the testbed lock");
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock the testbed lock");
    f
}

/// Polls `cond` every `every` until it holds or `limit` passes; returns the time it took.
pub fn poll_until(
    every: std::time::Duration,
    what: &str,
    limit: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    loop {
        if cond() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// The log of a systemd unit on a node, messages only.
pub fn unit_log(node: &str, unit: &str) -> String {
    on_ok(node, &format!("journalctl -u {unit} -o cat --no-pager"))
}
