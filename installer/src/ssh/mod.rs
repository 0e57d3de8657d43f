//! Running commands on the hosts: one multiplexed SSH session per host through the `openssh`
//! crate (the system `ssh` client as `ControlMaster`, see [`session`]), or this machine
//! directly when there are no hosts. [`Conn`] is the real [`Remote`]: the phases hand it
//! typed commands ([`crate::remote::Cmd`]), and only this module wraps their text for `sh -c`
//! and sudo.
//!
//! - Host keys are always checked against a known_hosts file (`StrictHostKeyChecking=yes`, or
//!   `accept-new` to record keys never seen). A changed key is an error that names the host and
//!   the fix, whatever the options.
//! - Passwords and key passphrases reach `ssh` only through `SSH_ASKPASS` pointing at this very
//!   program (see [`askpass_hook`]); the secret sits in a 0600 file inside a private 0700
//!   directory for the few seconds of the login, and never on a command line or in a log. An
//!   interrupt during the login removes it and stops the master ([`cleanup`]).
//! - A non-root user runs privileged commands with `sudo -n`, or, when sudo wants a password,
//!   `sudo -k -S` with the password written first on the command's stdin.

mod cleanup;
mod process;
mod session;

use crate::hosts::{Host, Secret};
use crate::remote::shell::quote;
use crate::remote::{Cmd, Input, Output, Remote};
use process::{runtime, Ended, Proc, Stdin};
use session::Session;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable that turns `bale` into ssh's password helper.
pub const ASKPASS_ENV: &str = "BALE_ASKPASS_DIR";

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "{host}: the host key has CHANGED since it was recorded in {known_hosts}. If the host was \
         reinstalled, remove the old key with `ssh-keygen -R {key_name} -f {known_hosts}` and \
         check the new fingerprint; otherwise the connection may be intercepted"
    )]
    HostKeyChanged {
        host: String,
        key_name: String,
        known_hosts: String,
    },
    #[error(
        "{host}: its host key is not in {known_hosts}; add it after checking the fingerprint \
         (`ssh-keyscan -p {port} {addr} >> {known_hosts}`), or pass --accept-new-host-keys"
    )]
    HostKeyUnknown {
        host: String,
        addr: String,
        port: u16,
        known_hosts: String,
    },
    #[error("{host}: login as {user} refused ({detail}); check --user, --key, --password-file")]
    Auth {
        host: String,
        user: String,
        detail: String,
    },
    #[error("{host}: cannot connect: {detail}")]
    Connect { host: String, detail: String },
    #[error("{host}: not passed to ssh")]
    Setting {
        host: String,
        source: crate::hosts::HostError,
    },
    #[error("{host}: connection lost: {detail}")]
    Lost { host: String, detail: String },
    #[error("{host}: {what}")]
    Io {
        host: String,
        what: String,
        source: std::io::Error,
    },
    #[error("{host}: {what} failed (exit {code}): {detail}")]
    Failed {
        host: String,
        what: String,
        code: i32,
        detail: String,
    },
    #[error(
        "{host}: user {user} cannot run sudo without a password; give it with --password-file \
         (or passwd in the Clusterfile), or allow NOPASSWD"
    )]
    SudoNeedsPassword { host: String, user: String },
    #[error("{host}: sudo refused the password of {user}: {detail}")]
    SudoRefused {
        host: String,
        user: String,
        detail: String,
    },
}

/// Connection settings shared by every host.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub known_hosts: PathBuf,
    pub accept_new_host_keys: bool,
    pub connect_timeout_secs: u32,
    /// The program ssh runs as SSH_ASKPASS (this bale).
    pub askpass_exe: PathBuf,
}

enum Sudo {
    /// Already root.
    Root,
    NoPasswd,
    Password(Secret),
}

enum Transport {
    Local,
    Ssh(Box<Session>),
}

/// A way to run commands on one host, as the login user or as root.
pub struct Conn {
    label: String,
    user: String,
    /// Commands kept running for as long as the connection lives; declared before `transport`
    /// so they end before the session closes.
    held: std::sync::Mutex<Vec<Held>>,
    transport: Transport,
    sudo: Sudo,
}

/// A command left running on the host (one that holds a lock there), fed a line every
/// [`HELD_PING`]. Closing its stdin ends it; so does the end of the SSH session, should this
/// process die first.
struct Held {
    /// Owns the command's stdin: stopping it closes that.
    pinger: Option<tokio::task::JoinHandle<()>>,
    proc: Option<Proc>,
}

/// How often a held command hears from this run.
pub const HELD_PING: std::time::Duration = std::time::Duration::from_secs(3);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = self.pinger.take() {
            p.abort();
        }
        if let Some(proc) = self.proc.take() {
            // Given a second to end by itself; past that the future, and with it the local
            // process, is dropped: killed, which also ends the remote side.
            let _ = runtime().block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(1), proc.wait()).await
            });
        }
    }
}

impl Conn {
    /// This machine, no SSH.
    pub fn local() -> Result<Conn, SshError> {
        let root = nix::unistd::geteuid().is_root();
        let user = std::env::var("USER").unwrap_or_else(|_| "local user".into());
        let mut c = Conn {
            label: "local".into(),
            user,
            held: Default::default(),
            transport: Transport::Local,
            sudo: Sudo::Root,
        };
        if !root {
            c.sudo = c.detect_sudo(None)?;
        }
        Ok(c)
    }

    /// Opens the multiplexed session to `host` and settles how to become root.
    pub fn connect(host: &Host, opts: &SshOptions) -> Result<Conn, SshError> {
        let session = Session::open(host, opts)?;
        let mut c = Conn {
            label: host.label(),
            user: host.ssh.user.clone(),
            held: Default::default(),
            transport: Transport::Ssh(Box::new(session)),
            sudo: Sudo::Root,
        };
        if host.ssh.sudo {
            c.sudo = c.detect_sudo(host.ssh.password.as_ref())?;
        }
        Ok(c)
    }

    fn detect_sudo(&self, password: Option<&Secret>) -> Result<Sudo, SshError> {
        if self.exec("sudo -n true", Input::None, None)?.code == 0 {
            return Ok(Sudo::NoPasswd);
        }
        let Some(pw) = password else {
            return Err(SshError::SudoNeedsPassword {
                host: self.label.clone(),
                user: self.user.clone(),
            });
        };
        let o = self.exec("sudo -k -S -p '' true", Input::None, Some(pw))?;
        if o.code != 0 {
            return Err(SshError::SudoRefused {
                host: self.label.clone(),
                user: self.user.clone(),
                detail: o.stderr_line(),
            });
        }
        Ok(Sudo::Password(pw.clone()))
    }

    /// The command line that runs `script` as root, and the password sudo reads first.
    fn as_root(&self, script: &str) -> (String, Option<&Secret>) {
        let s = quote(script);
        match &self.sudo {
            Sudo::Root => (format!("sh -c {s}"), None),
            Sudo::NoPasswd => (format!("sudo -n -- sh -c {s}"), None),
            Sudo::Password(pw) => (format!("sudo -k -S -p '' -- sh -c {s}"), Some(pw)),
        }
    }

    /// [`Remote::hold`]: the line written every [`HELD_PING`] is `ping`; the sudo password,
    /// when there is one, goes first.
    fn start_held(&self, cmd: &Cmd, wait: std::time::Duration) -> Result<String, SshError> {
        let (command, password) = self.as_root(cmd.line());
        let io = |what: &str| io_error(&self.label, what);
        let session = self.session();
        let (line, held) = runtime().block_on(async {
            let mut proc = Proc::start(session.as_ref(), &command, Stdin::Piped, false)
                .await
                .map_err(io("start the command"))?;
            let mut stdin = proc.take_stdin();
            if let (Some(pw), Some(w)) = (password, stdin.as_mut()) {
                use tokio::io::AsyncWriteExt;
                let line = format!("{}\n", pw.expose());
                w.write_all(line.as_bytes())
                    .await
                    .map_err(io("send the sudo password"))?;
            }
            let line = process::first_line(proc.take_stdout(), wait).await;
            let pinger = stdin.map(|mut w| {
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    loop {
                        tokio::time::sleep(HELD_PING).await;
                        if w.write_all(b"ping\n").await.is_err() || w.flush().await.is_err() {
                            return;
                        }
                    }
                })
            });
            let held = Held {
                pinger,
                proc: Some(proc),
            };
            Ok::<_, SshError>((line, held))
        })?;
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(held);
        Ok(line.trim().to_string())
    }

    /// The SSH session, or None for this machine.
    fn session(&self) -> Option<std::sync::Arc<openssh::Session>> {
        match &self.transport {
            Transport::Local => None,
            Transport::Ssh(s) => s.handle(),
        }
    }

    /// Runs `command` (already quoted for the remote login shell), feeding `password` and a
    /// newline first when given (for `sudo -S`).
    fn exec(
        &self,
        command: &str,
        input: Input,
        password: Option<&Secret>,
    ) -> Result<Output, SshError> {
        let io = |what: &str| io_error(&self.label, what);
        // A file (or named pipe) with nothing to put before it becomes the command's stdin
        // itself: a bulk stream then skips one copy through this process.
        let (stdin, input) = match input {
            Input::File(p) if password.is_none() => (
                Stdin::File(open_for_stdin(p).map_err(io("open the input"))?),
                Input::None,
            ),
            other => (Stdin::Piped, other),
        };
        let prefix = password.map(|p| format!("{}\n", p.expose()));
        let session = self.session();
        let (ended, stdout, stderr, fed) = runtime().block_on(async {
            let mut proc = Proc::start(session.as_ref(), command, stdin, true)
                .await
                .map_err(io("start the command"))?;
            let (fed, stdout, stderr) = tokio::join!(
                process::feed(proc.take_stdin(), prefix, input),
                process::read_all(proc.take_stdout()),
                process::read_all(proc.take_stderr()),
            );
            let ended = proc.wait().await.map_err(io("wait for the command"))?;
            let stdout = stdout.map_err(io("read the output"))?;
            let stderr = stderr.map_err(io("read the output"))?;
            Ok::<_, SshError>((ended, stdout, stderr, fed))
        })?;
        let code = match ended {
            Ended::Code(code) => code,
            Ended::Lost => 255,
        };
        let o = Output {
            code,
            stdout,
            stderr,
        };
        if matches!(ended, Ended::Lost) && session.is_some() {
            let mut detail = o.stderr_line();
            if detail.is_empty() {
                detail = "the SSH session ended (host down, rebooted or cut off)".into();
            }
            return Err(SshError::Lost {
                host: self.label.clone(),
                detail,
            });
        }
        // A feeder error with a successful command means the command did not read all of its
        // input (a broken pipe); report it only when it matters.
        if let Err(e) = fed {
            if code == 0 && e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(io("send input")(e));
            }
        }
        Ok(o)
    }
}

impl Remote for Conn {
    fn label(&self) -> &str {
        &self.label
    }

    fn is_local(&self) -> bool {
        matches!(self.transport, Transport::Local)
    }

    fn run(&self, cmd: &Cmd) -> Result<Output, SshError> {
        let (command, password) = self.as_root(cmd.line());
        self.exec(&command, cmd.input(), password)
    }

    fn run_as_user(&self, cmd: &Cmd) -> Result<Output, SshError> {
        self.exec(&format!("sh -c {}", quote(cmd.line())), cmd.input(), None)
    }

    fn hold(&self, cmd: &Cmd, wait: std::time::Duration) -> Result<String, SshError> {
        self.start_held(cmd, wait)
    }
}

/// Turns an I/O error into one that names the host and what was being done.
fn io_error(host: &str, what: &str) -> impl FnOnce(std::io::Error) -> SshError {
    let (host, what) = (host.to_string(), what.to_string());
    move |source| SshError::Io { host, what, source }
}

/// Opens `path` for reading without waiting for a writer when it is a named pipe (its writer
/// may open it only once the command runs).
fn open_for_stdin(path: &Path) -> std::io::Result<std::fs::File> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)?;
    // Back to blocking reads for the command.
    let flags = OFlag::from_bits_truncate(fcntl(f.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK))?;
    Ok(f)
}

/// When ssh started this program as its SSH_ASKPASS helper (the [`ASKPASS_ENV`] variable is
/// set and the only argument is the prompt), prints the secret the prompt asks for and returns
/// the exit code. Call it first thing in `main`.
pub fn askpass_hook() -> Option<i32> {
    let dir = std::env::var_os(ASKPASS_ENV)?;
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.len() != 2 {
        return None;
    }
    let prompt = args[1].to_string_lossy().to_lowercase();
    if prompt.contains("yes/no") {
        // Never agree to an unknown host key on the user's behalf.
        println!("no");
        return Some(0);
    }
    let file = if prompt.contains("passphrase") {
        "passphrase"
    } else {
        "password"
    };
    match std::fs::read_to_string(Path::new(&dir).join(file)) {
        Ok(s) => {
            println!("{s}");
            Some(0)
        }
        Err(_) => Some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::remote::Script;

    #[test]
    fn local_conn_runs_and_feeds_input() {
        let c = Conn::local().unwrap();
        let script = Script::new("cat; echo; echo err >&2; exit 3");
        let o = c
            .run_as_user(&Cmd::script("echo", &script).stdin(b"hi"))
            .unwrap();
        assert_eq!(o.code, 3);
        assert_eq!(o.stdout_str(), "hi\n");
        assert_eq!(o.stderr_line(), "err");
        let e = c
            .run_ok(&Cmd::script("probe", &Script::new("echo bad >&2; false")))
            .unwrap_err();
        assert!(e.to_string().contains("probe failed (exit 1): bad"), "{e}");
        // Arguments arrive as they were given, through sh -c (and sudo when not root).
        let o = c
            .run_ok(&Cmd::new("echo", "printf").args(["<%s>", "it's $HOME", ""]))
            .unwrap();
        assert_eq!(o, "<it's $HOME><>");
    }

    #[test]
    fn a_local_file_is_streamed_to_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in");
        std::fs::write(&f, b"from a file").unwrap();
        let c = Conn::local().unwrap();
        let out = c.run_ok(&Cmd::new("cat", "cat").stdin_file(&f)).unwrap();
        assert_eq!(out, "from a file");
    }
}
