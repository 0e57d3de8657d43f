//! The test nodes of `scripts/testbed.sh`, shared by every multi-node test.
//!
//! One testbed per machine: a test holds [`Testbed`] (an exclusive `flock` on a file in the
//! testbed state dir) for as long as it uses the nodes, so tests in different binaries and
//! processes take turns instead of tearing down each other's nodes.

use super::{is_root, ok, skip, stderr, stdout, REQUIRE_TESTBED};
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
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

/// [`on`], which must succeed (the failure names exit code, stdout and stderr; 255 is SSH's).
#[track_caller]
pub fn on_success(node: &str, cmd: &str) -> Output {
    let o = on(node, cmd);
    assert!(
        o.status.success(),
        "on {node}: {cmd}\nexit {:?} (255: SSH itself failed)\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

#[track_caller]
pub fn on_ok(node: &str, cmd: &str) -> String {
    stdout(&on_success(node, cmd))
}

/// Runs `bundle VERB HOSTS ARGS --json` with the testbed's key and known hosts; the output and
/// the events.
pub fn run_on(
    bundle: &Path,
    verb: &str,
    hosts: &[&str],
    extra: &[&str],
) -> (Output, Vec<serde_json::Value>) {
    let key = key();
    let kh = known_hosts_path();
    let mut args = vec![verb, "--json"];
    args.extend_from_slice(hosts);
    args.extend_from_slice(&["--key", &key, "--known-hosts", &kh]);
    args.extend_from_slice(extra);
    super::events::run_logged(bundle, &args, &format!("{verb} {hosts:?} {extra:?}"))
}

/// The testbed's private key and known_hosts file.
pub fn key() -> String {
    tb_ok(&["key"]).trim().to_string()
}

pub fn known_hosts_path() -> String {
    format!("{STATE}/known_hosts")
}

/// Held while a test uses the nodes; dropping it tears them down (after checking the guard),
/// then lets the next test have them.
pub struct Testbed {
    _lock: Flock<File>,
}

impl Testbed {
    /// Takes the machine-wide testbed lock, then brings up fresh nodes n1..n`count` (or VMs
    /// with `--vm` in `extra`). `None` when this machine cannot: the test [`skip`]s (or fails,
    /// also under BALE_REQUIRE_TESTBED=1).
    pub fn up(count: usize, extra: &[&str]) -> Option<Testbed> {
        let why = if !is_root() {
            "needs root".to_string()
        } else {
            let lock = take_lock();
            let _ = tb(&["down"]);
            super::fresh_admin_state();
            let n = count.to_string();
            let mut args = vec!["up", n.as_str()];
            args.extend_from_slice(extra);
            let o = tb(&args);
            if o.status.success() {
                return Some(Testbed { _lock: lock });
            }
            format!("scripts/testbed.sh up failed: {}", stderr(&o))
        };
        skip(&[REQUIRE_TESTBED], &format!("no testbed: {why}"));
        None
    }

    /// Asserts that no node sent a packet off the test network, then tears the nodes down.
    pub fn finish(self) {
        let g = tb_ok(&["guard-counter"]);
        assert_eq!(g.trim(), "0", "the nodes sent traffic off the test network");
    }
}

impl Drop for Testbed {
    /// The nodes go down first; the lock is released after, when the field drops.
    fn drop(&mut self) {
        let _ = tb(&["down"]);
    }
}

fn take_lock() -> Flock<File> {
    std::fs::create_dir_all(STATE).expect("create the testbed state dir");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{STATE}/.test-lock"))
        .expect("open the testbed lock");
    Flock::lock(f, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock the testbed lock: {e}"))
}

/// The command lines of a container node's processes that contain `needle`, read from the
/// host's /proc (a node's processes sit in its `machine-NODE.scope`): this answers while the
/// node's link is down, where [`on`] cannot.
pub fn processes_on(node: &str, needle: &str) -> Vec<String> {
    let scope = format!("/machine-{node}.scope");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may end between the listing and the reads: it is then not there.
        let dir = entry.path();
        let in_node = std::fs::read_to_string(dir.join("cgroup"))
            .is_ok_and(|c| c.lines().any(|l| l.contains(&scope)));
        if !in_node {
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{pid} {}", cmdline.trim()));
        }
    }
    found
}

/// The log of a systemd unit on a node, messages only.
pub fn unit_log(node: &str, unit: &str) -> String {
    on_ok(node, &format!("journalctl -u {unit} -o cat --no-pager"))
}

/// A unit's log (as `read` gets it) once it holds every one of `lines`: a program may log a
/// moment after the effect a test waited for, and journald shows the line a moment later still.
#[track_caller]
pub fn log_with(read: impl Fn() -> String, lines: &[&str]) -> String {
    super::poll_ok(
        std::time::Duration::from_millis(200),
        &format!("{lines:?} in the log"),
        std::time::Duration::from_secs(30),
        || {
            let log = read();
            if lines.iter().all(|l| log.contains(l)) {
                Ok(log)
            } else {
                Err(log)
            }
        },
    )
}
