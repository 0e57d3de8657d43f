//! Running commands on the hosts: one multiplexed SSH session per host through the system `ssh`
//! client (`ControlMaster`), or this machine directly when there are no hosts.
//!
//! - Host keys are always checked against a known_hosts file (`StrictHostKeyChecking=yes`, or
//!   `accept-new` to record keys never seen). A changed key is an error that names the host and
//!   the fix, whatever the options.
//! - Passwords and key passphrases reach `ssh` only through `SSH_ASKPASS` pointing at this very
//!   program (see [`askpass_hook`]); the secret sits in a 0600 file inside a private 0700
//!   directory for the few seconds of the login, and never on a command line or in a log.
//! - A non-root user runs privileged commands with `sudo -n`, or, when sudo wants a password,
//!   `sudo -k -S` with the password written first on the command's stdin.

use crate::hosts::{Host, Secret};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
    #[error("{host}: connection lost: {detail}")]
    Lost { host: String, detail: String },
    #[error("{host}: {what}: {source}")]
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

/// What a command reads on stdin.
pub enum Input<'a> {
    None,
    Bytes(&'a [u8]),
    /// A file streamed after the given prefix.
    File(&'a Path),
}

#[derive(Debug)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_line(&self) -> String {
        let s = String::from_utf8_lossy(&self.stderr);
        let s = s.trim();
        let tail: Vec<&str> = s.lines().rev().take(3).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    }
}

/// Quotes a string for a POSIX shell.
pub fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

enum Sudo {
    /// Already root.
    Root,
    NoPasswd,
    Password(Secret),
}

enum Transport {
    Local,
    Ssh(Session),
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

/// A command left running on the host (one that holds a lock there). Closing its stdin ends
/// it; so does the end of the SSH session, should this process die first.
struct Held(std::process::Child);

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        for _ in 0..50 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Conn {
    /// This machine, no SSH.
    pub fn local() -> Result<Conn, SshError> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
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
            transport: Transport::Ssh(session),
            sudo: Sudo::Root,
        };
        if host.ssh.sudo {
            c.sudo = c.detect_sudo(host.ssh.password.as_ref())?;
        }
        Ok(c)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn is_local(&self) -> bool {
        matches!(self.transport, Transport::Local)
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

    /// Runs a shell script as the login user.
    pub fn sh(&self, script: &str, input: Input) -> Result<Output, SshError> {
        self.exec(&format!("sh -c {}", sq(script)), input, None)
    }

    /// Runs a shell script as root.
    pub fn root(&self, script: &str, input: Input) -> Result<Output, SshError> {
        let (command, password) = self.as_root(script);
        self.exec(&command, input, password)
    }

    /// The command line that runs `script` as root, and the password sudo reads first.
    fn as_root(&self, script: &str) -> (String, Option<&Secret>) {
        let s = sq(script);
        match &self.sudo {
            Sudo::Root => (format!("sh -c {s}"), None),
            Sudo::NoPasswd => (format!("sudo -n -- sh -c {s}"), None),
            Sudo::Password(pw) => (format!("sudo -k -S -p '' -- sh -c {s}"), Some(pw)),
        }
    }

    /// Starts `script` as root and leaves it running until this connection is dropped, with
    /// its stdin open; returns the first line it prints (empty when it ended without one).
    /// For a lock on the host that cannot outlive this run: the script holds it until its
    /// stdin ends.
    pub fn hold(&self, script: &str, wait: std::time::Duration) -> Result<String, SshError> {
        let (command, password) = self.as_root(script);
        let mut cmd = self.command(&command);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let io = |what: &str| io_error(&self.label, what);
        let mut child = cmd.spawn().map_err(io("start ssh"))?;
        if let (Some(pw), Some(stdin)) = (password, child.stdin.as_mut()) {
            stdin
                .write_all(format!("{}\n", pw.expose()).as_bytes())
                .map_err(io("send the sudo password"))?;
        }
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
            }
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(wait).unwrap_or_default();
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Held(child));
        Ok(line.trim().to_string())
    }

    /// `sh -c` here, or ssh to the host.
    fn command(&self, command: &str) -> Command {
        match &self.transport {
            Transport::Local => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(command);
                c
            }
            Transport::Ssh(s) => s.command(command),
        }
    }

    /// Runs a script as root and returns its stdout, or an error naming `what` and the
    /// script's last stderr lines.
    pub fn root_ok(&self, what: &str, script: &str, input: Input) -> Result<String, SshError> {
        let o = self.root(script, input)?;
        if o.code != 0 {
            return Err(SshError::Failed {
                host: self.label.clone(),
                what: what.into(),
                code: o.code,
                detail: o.stderr_line(),
            });
        }
        Ok(o.stdout_str())
    }

    /// Runs `command` (already quoted for the remote login shell), feeding `password` and a
    /// newline first when given (for `sudo -S`).
    fn exec(
        &self,
        command: &str,
        input: Input,
        password: Option<&Secret>,
    ) -> Result<Output, SshError> {
        let mut cmd = self.command(command);
        let io = |what: &str| io_error(&self.label, what);
        // A file (or named pipe) with nothing to put before it becomes the command's stdin
        // itself: a bulk stream then skips one copy through this process.
        let (direct, input) = match input {
            Input::File(p) if password.is_none() => (
                Some(open_for_stdin(p).map_err(io("open the input"))?),
                Input::None,
            ),
            other => (None, other),
        };
        cmd.stdin(match direct {
            Some(f) => Stdio::from(f),
            None => Stdio::piped(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(io("start ssh"))?;
        // our copy of a direct stdin closes here: once the command ends, its writer hears so
        drop(cmd);
        let mut stdin = child.stdin.take();
        let prefix = password.map(|p| format!("{}\n", p.expose()));
        let label = self.label.clone();
        let out = std::thread::scope(|sc| {
            let feeder = sc.spawn(move || -> std::io::Result<()> {
                let Some(w) = stdin.as_mut() else {
                    return Ok(());
                };
                if let Some(p) = &prefix {
                    w.write_all(p.as_bytes())?;
                }
                match input {
                    Input::None => {}
                    Input::Bytes(b) => w.write_all(b)?,
                    Input::File(p) => {
                        let mut f = std::fs::File::open(p)?;
                        std::io::copy(&mut f, w)?;
                    }
                }
                Ok(())
                // stdin dropped here: EOF for the command
            });
            let out = child.wait_with_output();
            let fed = feeder.join();
            (out, fed)
        });
        let (out, fed) = out;
        let out = out.map_err(io("wait for ssh"))?;
        let code = out.status.code().unwrap_or(-1);
        let o = Output {
            code,
            stdout: out.stdout,
            stderr: out.stderr,
        };
        if let Transport::Ssh(_) = self.transport {
            if code == 255 {
                let mut detail = o.stderr_line();
                if detail.is_empty() {
                    detail = "the SSH session ended (host down, rebooted or cut off)".into();
                }
                return Err(SshError::Lost {
                    host: label,
                    detail,
                });
            }
        }
        // A feeder error with a successful command means the command did not read all of its
        // input (a broken pipe); report it only when it matters.
        if let Ok(Err(e)) = fed {
            if code == 0 && e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(io("send input")(e));
            }
        }
        Ok(o)
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
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    // SAFETY: fcntl on a descriptor we own: back to blocking reads for the command.
    let rc = unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(f)
}

/// One `ssh` ControlMaster process and the private directory holding its socket.
struct Session {
    /// Holds the control socket; removed when the session ends.
    _dir: tempfile::TempDir,
    base: Vec<OsString>,
    target: String,
}

impl Session {
    fn open(host: &Host, opts: &SshOptions) -> Result<Session, SshError> {
        let label = host.label();
        let io = |what: &str| io_error(&label, what);
        let dir = tempfile::Builder::new()
            .prefix("bale-ssh-")
            .tempdir()
            .map_err(io("make a private directory for the ssh socket"))?;
        let ctl = dir.path().join("ctl");
        let s = &host.ssh;
        let mut base: Vec<OsString> = Vec::new();
        let mut o = |k: &str, v: String| {
            base.push("-o".into());
            base.push(format!("{k}={v}").into());
        };
        o("UserKnownHostsFile", opts.known_hosts.display().to_string());
        o(
            "StrictHostKeyChecking",
            if opts.accept_new_host_keys {
                "accept-new"
            } else {
                "yes"
            }
            .into(),
        );
        o("ConnectTimeout", opts.connect_timeout_secs.to_string());
        o("ServerAliveInterval", "3".into());
        o("ServerAliveCountMax", "3".into());
        o("LogLevel", "ERROR".into());
        o("NumberOfPasswordPrompts", "1".into());
        o("ControlPath", ctl.display().to_string());
        if let Some(c) = preferred_ciphers() {
            o("Ciphers", c.into());
        }
        if let Some(k) = &s.key {
            o("IdentityFile", k.display().to_string());
            o("IdentitiesOnly", "yes".into());
        } else if s.password.is_some() {
            o("PubkeyAuthentication", "no".into());
            o(
                "PreferredAuthentications",
                "password,keyboard-interactive".into(),
            );
        }
        base.extend(["-p".into(), s.port.to_string().into()]);
        base.extend(["-l".into(), s.user.clone().into()]);
        let target = host.addr.to_string();

        let log = dir.path().join("master.log");
        let logf = std::fs::File::create(&log).map_err(io("create the ssh log"))?;
        let mut cmd = Command::new("ssh");
        cmd.args(&base)
            .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=300"])
            .args(["-f", "-N"])
            .arg(&target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        let prompts = s.password.is_some() || s.key_passphrase.is_some();
        if prompts {
            let write = |name: &str, sec: &Option<Secret>| -> std::io::Result<()> {
                if let Some(sec) = sec {
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(dir.path().join(name))?;
                    f.write_all(sec.expose().as_bytes())?;
                }
                Ok(())
            };
            write("password", &s.password).map_err(io("write the askpass file"))?;
            write("passphrase", &s.key_passphrase).map_err(io("write the askpass file"))?;
            cmd.env("SSH_ASKPASS", &opts.askpass_exe)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env(ASKPASS_ENV, dir.path())
                .args(["-o", "BatchMode=no"]);
        } else {
            cmd.args(["-o", "BatchMode=yes"]);
        }
        let status = cmd.status().map_err(io("start ssh"));
        for f in ["password", "passphrase"] {
            let _ = std::fs::remove_file(dir.path().join(f));
        }
        let status = status?;
        if !status.success() {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&log) {
                let _ = f.read_to_string(&mut text);
            }
            return Err(classify(host, opts, &text));
        }
        Ok(Session {
            _dir: dir,
            base,
            target,
        })
    }

    fn command(&self, remote: &str) -> Command {
        let mut c = Command::new("ssh");
        c.args(&self.base)
            .args(["-o", "ControlMaster=no", "-o", "BatchMode=yes"])
            .arg(&self.target)
            .arg("--")
            .arg(remote);
        c
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("ssh")
            .args(&self.base)
            .args(["-O", "exit"])
            .arg(&self.target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The cipher order for the session when this CPU encrypts AES in hardware: AES-GCM first.
///
/// OpenSSH puts ChaCha20-Poly1305 first, which is the better choice without AES instructions,
/// but with them AES-GCM moves the bundle about twice as fast (1 GiB into `cat` on a test node:
/// 2.0 s against 3.9 s). Every cipher listed is in OpenSSH's own default set, so nothing weaker
/// is offered, and the list is spelled out (no `^` prefix) for older clients.
fn preferred_ciphers() -> Option<&'static str> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    has_aes_instructions(&cpuinfo).then_some(
        "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,\
         aes128-ctr,aes192-ctr,aes256-ctr",
    )
}

/// Whether /proc/cpuinfo lists the AES flag: `flags` on x86_64, `Features` on aarch64.
fn has_aes_instructions(cpuinfo: &str) -> bool {
    cpuinfo.lines().any(|l| {
        let Some((key, value)) = l.split_once(':') else {
            return false;
        };
        matches!(key.trim(), "flags" | "Features") && value.split_whitespace().any(|f| f == "aes")
    })
}

/// Turns the master's log into a precise error.
fn classify(host: &Host, opts: &SshOptions, log: &str) -> SshError {
    let label = host.label();
    let kh = opts.known_hosts.display().to_string();
    let detail = log
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('@'))
        .unwrap_or("ssh failed with no message")
        .to_string();
    if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || (log.contains("Host key for") && log.contains("has changed"))
    {
        let key_name = if host.ssh.port == 22 {
            host.addr.to_string()
        } else {
            format!("[{}]:{}", host.addr, host.ssh.port)
        };
        return SshError::HostKeyChanged {
            host: label,
            key_name,
            known_hosts: kh,
        };
    }
    if log.contains("Host key verification failed") || log.contains("host key is known") {
        return SshError::HostKeyUnknown {
            host: label,
            addr: host.addr.to_string(),
            port: host.ssh.port,
            known_hosts: kh,
        };
    }
    if log.contains("Permission denied") || log.contains("Too many authentication failures") {
        return SshError::Auth {
            host: label,
            user: host.ssh.user.clone(),
            detail,
        };
    }
    SshError::Connect {
        host: label,
        detail,
    }
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

    #[test]
    fn quoting() {
        assert_eq!(sq("a b"), "'a b'");
        assert_eq!(sq("it's"), r"'it'\''s'");
    }

    #[test]
    fn aes_flag_read_from_either_architecture() {
        assert!(has_aes_instructions(
            "processor\t: 0\nflags\t\t: fpu sse2 aes avx2 sha_ni\n"
        ));
        assert!(has_aes_instructions(
            "processor\t: 0\nFeatures\t: fp asimd aes pmull sha1 sha2\n"
        ));
        assert!(!has_aes_instructions(
            "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        ));
        // a flag that merely contains the letters does not count
        assert!(!has_aes_instructions("flags\t\t: vaes_like aesni\n"));
        // the cipher list must be one OpenSSH accepts
        if let Some(list) = preferred_ciphers() {
            let o = Command::new("ssh")
                .args(["-G", "-o", &format!("Ciphers={list}"), "localhost"])
                .output()
                .expect("run ssh -G");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(
                text.lines().any(|l| l == format!("ciphers {list}")),
                "{text}"
            );
        }
    }

    #[test]
    fn local_conn_runs_and_feeds_input() {
        let c = Conn::local().unwrap();
        let o = c
            .sh("cat; echo; echo err >&2; exit 3", Input::Bytes(b"hi"))
            .unwrap();
        assert_eq!(o.code, 3);
        assert_eq!(o.stdout_str(), "hi\n");
        assert_eq!(o.stderr_line(), "err");
        let e = c
            .root_ok("probe", "echo bad >&2; false", Input::None)
            .unwrap_err();
        assert!(e.to_string().contains("probe failed (exit 1): bad"), "{e}");
    }

    #[test]
    fn classify_messages() {
        let host = Host {
            addr: "10.0.0.2".parse().unwrap(),
            role: crate::hosts::Role::Node,
            ssh: crate::hosts::SshOverrides {
                port: Some(2222),
                ..Default::default()
            }
            .resolve(),
            env: vec![],
        };
        let opts = SshOptions {
            known_hosts: "/kh".into(),
            accept_new_host_keys: false,
            connect_timeout_secs: 5,
            askpass_exe: "/bale".into(),
        };
        let e = classify(
            &host,
            &opts,
            "@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.\n",
        )
        .to_string();
        assert!(
            e.contains("10.0.0.2:2222") && e.contains("ssh-keygen -R [10.0.0.2]:2222 -f /kh"),
            "{e}"
        );
        let e = classify(&host, &opts, "No ED25519 host key is known for [10.0.0.2]:2222 and you have requested strict checking.\nHost key verification failed.\n");
        assert!(matches!(e, SshError::HostKeyUnknown { .. }));
        let e = classify(
            &host,
            &opts,
            "root@10.0.0.2: Permission denied (publickey).\n",
        );
        assert!(matches!(e, SshError::Auth { .. }));
        let e = classify(
            &host,
            &opts,
            "ssh: connect to host 10.0.0.2 port 2222: Connection refused\n",
        );
        assert!(e.to_string().contains("Connection refused"));
    }
}
