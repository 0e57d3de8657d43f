//! A containerd of a test's own: private root, state, socket and config in a short directory
//! under /tmp, its log kept for the test's messages, and stopped (with anything it started)
//! when dropped, also when the test panics.

use super::poll;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::Read as _;
use std::os::unix::ffi::OsStringExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TestContainerd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl TestContainerd {
    /// Starts Debian's `containerd` with the config that `config(dir, socket)` returns (it may
    /// also make the directories the config names; its error ends the start), then waits until `ready` says it serves as
    /// the test needs: `Ok(false)` is asked again, an error ends the wait.
    pub fn start(
        prefix: &str,
        config: impl FnOnce(&Path, &Path) -> Result<String, String>,
        ready: impl Fn(&TestContainerd) -> Result<bool, String>,
    ) -> Result<TestContainerd, String> {
        // Short, so the socket path stays under the 108-byte limit.
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        let socket = d.join("c.sock");
        let config_file = d.join("config.toml");
        std::fs::write(&config_file, config(d, &socket)?).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(d.join("containerd.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config_file);
        for v in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
            cmd.env_remove(v).env_remove(v.to_uppercase());
        }
        let child = cmd
            // Where an upstream request would go: nothing listens there, so it fails at
            // once. Loopback (our registry) is never proxied.
            .env("HTTPS_PROXY", "http://127.0.0.1:1")
            .env("HTTP_PROXY", "http://127.0.0.1:1")
            // Its own process group, so that Drop can end whatever it started.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start containerd: {e}"))?;
        let mut c = TestContainerd { child, dir, socket };
        let outcome = poll(Duration::from_millis(200), Duration::from_secs(30), || {
            if let Ok(Some(st)) = c.child.try_wait() {
                return Some(Err(format!("containerd exited ({st})")));
            }
            if !c.socket.exists() {
                return None;
            }
            match ready(&c) {
                Ok(true) => Some(Ok(())),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            }
        });
        match outcome {
            Some(Ok(())) => Ok(c),
            Some(Err(e)) => Err(format!("{e}:\n{}", c.log())),
            None => Err(format!("containerd did not come up:\n{}", c.log())),
        }
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("containerd.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for TestContainerd {
    fn drop(&mut self) {
        // The process group this test created for its containerd, and only that.
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let _ = poll(Duration::from_millis(100), Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_))).then_some(())
        });
        // Whatever is left of the group.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
        // An unpack interrupted by a panic may leave a mount below the directory, which
        // the directory's removal must not walk into. MNT_DETACH cannot hang.
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mounts_below(&mountinfo, self.dir.path()) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Mount points strictly below `dir`, deepest first. mountinfo's fifth field is the mount
/// point, with space, tab, newline and backslash written as `\ooo`.
fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let unescape = |field: &str| -> PathBuf {
        let mut out = Vec::with_capacity(field.len());
        let mut rest = field.as_bytes();
        while let Some((&b, tail)) = rest.split_first() {
            let octal = tail
                .get(..3)
                .filter(|d| b == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
            match octal {
                Some(d) => {
                    out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                    rest = &tail[3..];
                }
                None => {
                    out.push(b);
                    rest = tail;
                }
            }
        }
        PathBuf::from(std::ffi::OsString::from_vec(out))
    };
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found.dedup();
    found
}
