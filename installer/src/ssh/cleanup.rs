//! What an interrupted run must not leave behind: the askpass secrets on disk and the ssh
//! masters. Every session registers its private directory and its master's process here;
//! SIGINT, SIGTERM and SIGHUP then remove the secrets and the directories, stop the masters,
//! and end this process with the signal's conventional code (128 + its number).
//!
//! A `kill -9` cannot be caught: for that the masters are started with a parent-death signal
//! (see [`super::session`]) and the secrets sit on disk only for the seconds of a login.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, PoisonError};

/// The files that hold secrets while a login runs, inside a session's directory.
pub(super) const SECRET_FILES: [&str; 2] = ["password", "passphrase"];

struct Live {
    dir: PathBuf,
    /// The ssh master (during the login and after), while it runs.
    master: Option<nix::unistd::Pid>,
}

static LIVE: Mutex<BTreeMap<u64, Live>> = Mutex::new(BTreeMap::new());

fn live() -> std::sync::MutexGuard<'static, BTreeMap<u64, Live>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A session's entry; dropping it forgets the session (its owner cleans up by itself).
pub(super) struct Registration(u64);

impl Registration {
    /// Registers the session kept in `dir`, and makes sure the signals are watched.
    pub(super) fn new(dir: &Path) -> Registration {
        watch_signals();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        live().insert(
            id,
            Live {
                dir: dir.to_path_buf(),
                master: None,
            },
        );
        Registration(id)
    }

    /// Records the master's process id (`None`: it has ended).
    pub(super) fn set_master(&self, pid: Option<u32>) {
        if let Some(l) = live().get_mut(&self.0) {
            l.master = pid
                .and_then(|p| i32::try_from(p).ok())
                .map(nix::unistd::Pid::from_raw);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        live().remove(&self.0);
    }
}

/// Removes every session's secrets, stops its master and removes its directory.
pub(super) fn clean_all() {
    let sessions = std::mem::take(&mut *live());
    for l in sessions.values() {
        for f in SECRET_FILES {
            let _ = std::fs::remove_file(l.dir.join(f));
        }
        if let Some(pid) = l.master {
            // SIGTERM makes the master close its connection and remove its socket.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let _ = std::fs::remove_dir_all(&l.dir);
    }
}

/// Starts, once, a task on the SSH runtime that cleans up on SIGINT, SIGTERM or SIGHUP and
/// then ends the process.
fn watch_signals() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let rt = super::runtime();
        let _guard = rt.enter();
        let watch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {name}: {e}; an interrupted login may leave its files"
                );
                None
            }
        };
        let int = watch(SignalKind::interrupt(), "SIGINT");
        let term = watch(SignalKind::terminate(), "SIGTERM");
        let hup = watch(SignalKind::hangup(), "SIGHUP");
        async fn recv(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        rt.spawn(async move {
            let number = tokio::select! {
                _ = recv(int) => nix::sys::signal::Signal::SIGINT,
                _ = recv(term) => nix::sys::signal::Signal::SIGTERM,
                _ = recv(hup) => nix::sys::signal::Signal::SIGHUP,
            } as i32;
            clean_all();
            std::process::exit(128 + number);
        });
    });
}
