//! The SSH session to one host, through the `openssh` crate: one master connection
//! (`ControlMaster`) per host, and every command multiplexed over it.
//!
//! Every setting of the connection goes into an ssh config file in the session's private
//! directory, so both ways of logging in read the same settings:
//! - with a key or an agent, [`openssh::SessionBuilder`] starts the master;
//! - with a password or a key passphrase, this module starts the master itself and hands its
//!   socket to [`openssh::Session::resume`]. The crate always starts its master with
//!   `BatchMode=yes`, and OpenSSH then asks no password even of an askpass helper (seen on the
//!   test nodes: exit 255, "Permission denied (publickey,password,keyboard-interactive)").

use super::{io_error, runtime, SshError, SshOptions, ASKPASS_ENV};
use crate::hosts::{Host, Secret};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// How long an orphaned master outlives this process (a crash, a kill -9) before it ends.
const MASTER_IDLE_SECS: usize = 300;

/// One master connection and the private directory holding its config, socket and log.
pub(super) struct Session {
    ssh: Option<Arc<openssh::Session>>,
    _dir: tempfile::TempDir,
}

impl Session {
    pub(super) fn open(host: &Host, opts: &SshOptions) -> Result<Session, SshError> {
        let label = host.label();
        let io = |what: &str| io_error(&label, what);
        // tempfile makes the directory 0700: the socket and the askpass files stay private
        let dir = tempfile::Builder::new()
            .prefix("bale-ssh-")
            .tempdir()
            .map_err(io("make a private directory for the ssh session"))?;
        let config = dir.path().join("ssh_config");
        write_private(&config, config_text(host, opts).as_bytes())
            .map_err(io("write the ssh config"))?;
        let target = host.addr.to_string();
        let s = &host.ssh;
        let ssh = if s.password.is_some() || s.key_passphrase.is_some() {
            let (ctl, log) = launch_with_askpass(host, opts, dir.path(), &config, &target)?;
            openssh::Session::resume(ctl.into_boxed_path(), Some(log.into_boxed_path()))
        } else {
            let mut b = openssh::SessionBuilder::default();
            b.known_hosts_check(if opts.accept_new_host_keys {
                openssh::KnownHosts::Add
            } else {
                openssh::KnownHosts::Strict
            })
            .config_file(&config)
            .control_directory(dir.path())
            .control_persist(openssh::ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(MASTER_IDLE_SECS)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ));
            runtime()
                .block_on(b.connect(&target))
                .map_err(|e| classify(host, opts, &connect_log(&e)))?
        };
        Ok(Session {
            ssh: Some(Arc::new(ssh)),
            _dir: dir,
        })
    }

    pub(super) fn handle(&self) -> Option<Arc<openssh::Session>> {
        self.ssh.clone()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Every command holding the session has ended by now (the connection drops them
        // first), so this is the only handle and the master can be told to exit.
        if let Some(Ok(ssh)) = self.ssh.take().map(Arc::try_unwrap) {
            let _ = runtime().block_on(ssh.close());
        }
    }
}

/// The text of an error from the crate: for a failed login, the master's log.
fn connect_log(e: &openssh::Error) -> String {
    match e {
        openssh::Error::Connect(io) | openssh::Error::Master(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// The ssh config of one connection: this host's login and the connection's settings first
/// (the first value ssh reads wins), then the user's and the system's own config.
fn config_text(host: &Host, opts: &SshOptions) -> String {
    let s = &host.ssh;
    let mut lines = vec![
        "# written by bale for one connection; removed when it ends".to_string(),
        format!("User {}", quoted(&s.user)),
        format!("Port {}", s.port),
        format!(
            "StrictHostKeyChecking {}",
            if opts.accept_new_host_keys {
                "accept-new"
            } else {
                "yes"
            }
        ),
        format!("UserKnownHostsFile {}", path_value(&opts.known_hosts)),
        format!("ConnectTimeout {}", opts.connect_timeout_secs),
        // a dead host or link is noticed within about 10 s, not at the TCP timeout
        "ServerAliveInterval 3".into(),
        "ServerAliveCountMax 3".into(),
        "LogLevel ERROR".into(),
        // a wrong password fails at once instead of being offered again
        "NumberOfPasswordPrompts 1".into(),
    ];
    if let Some(c) = preferred_ciphers() {
        lines.push(format!("Ciphers {c}"));
    }
    if let Some(k) = &s.key {
        lines.push(format!("IdentityFile {}", path_value(k)));
        lines.push("IdentitiesOnly yes".into());
    } else if s.password.is_some() {
        lines.push("PubkeyAuthentication no".into());
        lines.push("PreferredAuthentications password,keyboard-interactive".into());
    }
    lines.push("Include ~/.ssh/config".into());
    lines.push("Include /etc/ssh/ssh_config".into());
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// A path as an ssh config value: quoted, with `%` kept literal (ssh expands `%` tokens in
/// file names).
fn path_value(p: &Path) -> String {
    quoted(&p.display().to_string().replace('%', "%%"))
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Starts the master with this program as ssh's askpass helper; returns the control socket
/// and the master's log. The secrets sit in 0600 files in the private directory only for the
/// login, and never on a command line.
fn launch_with_askpass(
    host: &Host,
    opts: &SshOptions,
    dir: &Path,
    config: &Path,
    target: &str,
) -> Result<(std::path::PathBuf, std::path::PathBuf), SshError> {
    let label = host.label();
    let io = |what: &str| io_error(&label, what);
    let ctl = dir.join("master");
    let log = dir.join("master.log");
    let s = &host.ssh;
    let write = |name: &str, secret: &Option<Secret>| match secret {
        Some(secret) => write_private(&dir.join(name), secret.expose().as_bytes()),
        None => Ok(()),
    };
    write("password", &s.password).map_err(io("write the askpass file"))?;
    write("passphrase", &s.key_passphrase).map_err(io("write the askpass file"))?;
    let status = Command::new("ssh")
        .arg("-F")
        .arg(config)
        .arg("-E")
        .arg(&log)
        .arg("-S")
        .arg(&ctl)
        .args(["-M", "-f", "-N"])
        .args(["-o", &format!("ControlPersist={MASTER_IDLE_SECS}s")])
        .args(["-o", "BatchMode=no"])
        .arg(target)
        .env("SSH_ASKPASS", &opts.askpass_exe)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env(ASKPASS_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(io("start ssh"));
    for f in ["password", "passphrase"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    if !status?.success() {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&log) {
            let _ = f.read_to_string(&mut text);
        }
        return Err(classify(host, opts, &text));
    }
    Ok((ctl, log))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn host(port: u16, key: Option<&str>, password: bool) -> Host {
        Host {
            addr: "10.0.0.2".parse().unwrap(),
            role: crate::hosts::Role::Node,
            ssh: crate::hosts::SshOverrides {
                port: Some(port),
                user: Some("ops".into()),
                key: key.map(Into::into),
                password: password.then(|| Secret::new("pw")),
                ..Default::default()
            }
            .resolve(),
            env: vec![],
        }
    }

    fn opts(known_hosts: &str) -> SshOptions {
        SshOptions {
            known_hosts: known_hosts.into(),
            accept_new_host_keys: false,
            connect_timeout_secs: 5,
            askpass_exe: "/bale".into(),
        }
    }

    /// What `ssh -G` (which connects nowhere) makes of a session's config.
    fn resolved(host: &Host, opts: &SshOptions) -> String {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ssh_config");
        std::fs::write(&cfg, config_text(host, opts)).unwrap();
        let o = Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(&cfg)
            .arg(host.addr.to_string())
            .output()
            .expect("run ssh -G");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    #[test]
    fn the_config_carries_the_login_and_the_safety_settings() {
        let h = host(2222, Some("/keys/id 50%"), false);
        let text = resolved(&h, &opts("/state/known hosts"));
        for want in [
            "user ops",
            "port 2222",
            "stricthostkeychecking true",
            // -G prints file names before ssh expands `%%` to `%` when it opens them
            "userknownhostsfile /state/known hosts",
            "identityfile /keys/id 50%%",
            "identitiesonly yes",
            "serveraliveinterval 3",
            "numberofpasswordprompts 1",
            "connecttimeout 5",
        ] {
            assert!(text.lines().any(|l| l == want), "no `{want}` in:\n{text}");
        }
        let mut o = opts("/kh");
        o.accept_new_host_keys = true;
        let text = resolved(&host(22, None, true), &o);
        for want in [
            "stricthostkeychecking accept-new",
            "pubkeyauthentication false",
            "preferredauthentications password,keyboard-interactive",
        ] {
            assert!(text.lines().any(|l| l == want), "no `{want}` in:\n{text}");
        }
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
            let text = resolved(&host(22, None, false), &opts("/kh"));
            assert!(
                text.lines().any(|l| l == format!("ciphers {list}")),
                "{text}"
            );
        }
    }

    #[test]
    fn classify_messages() {
        let host = host(2222, None, false);
        let opts = opts("/kh");
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
