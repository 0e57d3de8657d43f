//! One bale run per host at a time: `install`, `reset` and `delete` take a host-wide lock right
//! after connecting, and a second run against the same host stops there, naming the run that
//! holds it.
//!
//! The lock is a `flock` held by a command on the host, as a lease: this run sends it a line
//! every few seconds ([`crate::remote::Remote::hold`]), and the command lets go when its stdin ends
//! (the run ended or was killed) or when no line came for [`LEASE_SECS`] (the link was cut or
//! the admin host hung). A cut link alone would not do: the host's sshd may not learn for a
//! long time that the other end is gone (seen on the test nodes: a partitioned node still held
//! the lock of the failed run when the link came back). A second run waits out one lease
//! before it gives up. The lock lives in /run (host-wide, not per data dir: two data dirs still
//! share one containerd) and so never blocks a reinstall after a reboot either.

use crate::engine::{Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::remote::{Cmd, Remote, Script};
use std::time::{Duration, Instant};

pub const LOCK: &str = "/run/bale.lock";
pub const OWNER: &str = "/run/bale.owner";
/// Seconds without a line from the run after which the host lets the lock go.
pub const LEASE_SECS: u64 = 15;

pub struct Lock {
    pub verb: &'static str,
}

/// Prints `locked` and holds the lock file `lock` until stdin ends or stays silent for `lease`
/// seconds, or prints `busy <owner>` at once (`who` holds, from the file `owner`).
fn script(lock: &str, owner: &str, who: &str, lease: u64) -> Script {
    Script::new(
        r#"command -v flock >/dev/null || { echo noflock; exit 0; }
exec 9>>{lock}
if flock -n 9; then
  printf '%s since %s\n' {who} "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > {owner}.tmp && mv -f {owner}.tmp {owner}
  echo locked
  command -v timeout >/dev/null || exec cat >/dev/null
  while line=$(timeout {lease} head -n 1) && [ -n "$line" ]; do :; done
  exit 0
fi
who=$(cat {owner} 2>/dev/null)
echo "busy $who"
"#,
    )
    .value("lock", lock)
    .value("owner", owner)
    .value("who", who)
    .value("lease", lease)
}

/// Who this run is, for a second run to read: the verb, the admin host and the process.
fn owner(verb: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("bale {verb} from {host} (pid {})", std::process::id())
}

impl Phase for Lock {
    fn title(&self) -> &str {
        "lock"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn dry_run(&self, _node: &Node) -> String {
        format!("hold {LOCK} so that no other bale run works on this host meanwhile")
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let script = script(LOCK, OWNER, &owner(self.verb), LEASE_SECS);
        let cmd = Cmd::script("take the host lock", &script);
        // A holder that lost its run lets go within one lease: wait that out before giving up.
        let patience = Patience {
            wait: Duration::from_secs(LEASE_SECS + 5),
            poll: Duration::from_secs(2),
        };
        take(&*node.remote()?, &cmd, patience, |msg| node.note(msg))
    }
}

/// How long a run waits for a busy lock, asking again every `poll`.
struct Patience {
    wait: Duration,
    poll: Duration,
}

/// Runs the lock command (`cmd`) until it holds the lock, the host has no flock(1), or
/// `patience` runs out on a busy lock; `note` hears of the wait and of a host without flock.
fn take(remote: &dyn Remote, cmd: &Cmd, patience: Patience, note: impl Fn(&str)) -> PhaseResult {
    let give_up = Instant::now() + patience.wait;
    let mut answer = remote.hold(cmd, Duration::from_secs(60))?;
    let mut noted = false;
    while Instant::now() < give_up {
        let Some(who) = answer.strip_prefix("busy") else {
            break;
        };
        if !noted {
            note(&format!("lock: {LOCK} is held by{who}; waiting"));
            noted = true;
        }
        std::thread::sleep(patience.poll);
        answer = remote.hold(cmd, Duration::from_secs(60))?;
    }
    match answer.split_once(' ').unwrap_or((answer.as_str(), "")) {
        ("locked", _) => Ok(()),
        ("noflock", _) => {
            note("no flock(1) on this host: runs are not kept apart here");
            Ok(())
        }
        ("busy", who) => Err(PhaseError::HostBusy {
            lock: LOCK.into(),
            owner: if who.is_empty() { "owner unknown" } else { who }.into(),
        }),
        _ => Err(PhaseError::HostLock {
            lock: LOCK.into(),
            answer: answer.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fake::{How, Scripted};
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Mutex;

    /// The lock phase's answers from a scripted host: what it returned and what it noted.
    fn take_with(host: Scripted, wait: Duration) -> (PhaseResult, Vec<String>, Scripted) {
        let notes = Mutex::new(Vec::new());
        let s = script(LOCK, OWNER, "bale install from admin (pid 7)", LEASE_SECS);
        let patience = Patience {
            wait,
            poll: Duration::from_millis(1),
        };
        let r = take(
            &host,
            &Cmd::script("take the host lock", &s),
            patience,
            |m| notes.lock().unwrap().push(m.to_string()),
        );
        (r, notes.into_inner().unwrap(), host)
    }

    #[test]
    fn the_lock_answer_decides_the_phase() {
        let (r, notes, host) = take_with(Scripted::new("n").on("flock", "locked"), Duration::ZERO);
        assert!(r.is_ok(), "{r:?}");
        assert!(notes.is_empty());
        let calls = host.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].how, How::Hold);
        assert!(
            calls[0]
                .line
                .contains("printf '%s since %s\\n' 'bale install from admin (pid 7)' "),
            "{}",
            calls[0].line
        );
        assert!(calls[0].line.contains("exec 9>>'/run/bale.lock'"));

        let (r, notes, _) = take_with(Scripted::new("n").on("flock", "noflock"), Duration::ZERO);
        assert!(r.is_ok());
        assert_eq!(
            notes,
            ["no flock(1) on this host: runs are not kept apart here"]
        );

        let (r, _, _) = take_with(Scripted::new("n").on("flock", "gibberish"), Duration::ZERO);
        let e = r.unwrap_err();
        assert!(matches!(&e, PhaseError::HostLock { answer, .. } if answer == "gibberish"));

        // The line the command printed before the host lost its connection: empty.
        let (r, _, _) = take_with(Scripted::new("n").on("flock", ""), Duration::ZERO);
        assert!(matches!(r, Err(PhaseError::HostLock { .. })));
    }

    #[test]
    fn a_busy_lock_is_waited_for_then_refused_with_its_owner() {
        let busy = "busy bale reset from other (pid 9) since 2026-01-01T00:00:00Z";
        // Freed while this run waits.
        let host = Scripted::new("n").once("flock", busy).on("flock", "locked");
        let (r, notes, host) = take_with(host, Duration::from_secs(5));
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(host.calls().len(), 2);
        assert_eq!(
            notes,
            [format!(
                "lock: {LOCK} is held by bale reset from other (pid 9) since \
                 2026-01-01T00:00:00Z; waiting"
            )]
        );
        // Still held when patience runs out.
        let (r, _, _) = take_with(Scripted::new("n").on("flock", busy), Duration::ZERO);
        match r {
            Err(PhaseError::HostBusy { lock, owner }) => {
                assert_eq!(lock, LOCK);
                assert_eq!(owner, &busy[5..]);
            }
            other => panic!("{other:?}"),
        }
        let (r, _, _) = take_with(Scripted::new("n").on("flock", "busy"), Duration::ZERO);
        assert!(matches!(r, Err(PhaseError::HostBusy { owner, .. }) if owner == "owner unknown"));
    }
    use std::process::{Command, Stdio};

    /// The script against itself on this machine, with the lock and owner files moved into a
    /// temporary directory: the first holds, the second is told who holds it, and the lock is
    /// free again once the first one's stdin ends.
    #[test]
    fn a_second_run_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let text = script(
            &format!("{d}/bale.lock"),
            &format!("{d}/bale.owner"),
            "bale install from admin (pid 1)",
            1,
        )
        .text();
        let start = || {
            Command::new("sh")
                .arg("-c")
                .arg(&text)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let first_line = |c: &mut std::process::Child| {
            let mut l = String::new();
            BufReader::new(c.stdout.as_mut().unwrap())
                .read_line(&mut l)
                .unwrap();
            l.trim().to_string()
        };
        let mut first = start();
        if first_line(&mut first) == "noflock" {
            eprintln!("SKIP: no flock(1) here");
            return;
        }
        let mut second = start();
        let busy = first_line(&mut second);
        assert!(
            busy.starts_with("busy bale install from admin (pid 1) since 20"),
            "{busy}"
        );
        second.wait().unwrap();
        // the first run ends: its stdin closes, and the lock with it
        first.stdin.take().unwrap().flush().unwrap();
        first.wait().unwrap();
        let mut third = start();
        assert_eq!(first_line(&mut third), "locked");
        // A holder that hears nothing for a lease lets go by itself, its stdin still open (a
        // run cut off from the host); lines within the lease keep it.
        let mut stdin = third.stdin.take().unwrap();
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(400));
            stdin.write_all(b"ping\n").unwrap();
        }
        assert!(third.try_wait().unwrap().is_none(), "let go while pinged");
        let started = std::time::Instant::now();
        third.wait().unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let mut fourth = start();
        assert_eq!(first_line(&mut fourth), "locked");
        drop(stdin);
        drop(fourth.stdin.take());
        fourth.wait().unwrap();
    }
}
