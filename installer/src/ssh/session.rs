//! The SSH session to one host: one master connection (`ControlMaster`) per host, started
//! here, and every command multiplexed over it through the `openssh` crate
//! ([`openssh::Session::resume`] on the master's socket).
//!
//! Every setting of the connection goes into an ssh config file in the session's private
//! (0700) directory, one directive per line, each value checked so that none can end its line
//! or its quotes and start a directive of its own (a user name with a newline once added a
//! `ProxyCommand`).
//!
//! The master is this process's child, in the foreground (`-M -N`, `ControlPersist=no`), with a
//! parent-death signal: it lives exactly as long as bale, whether bale ends, is interrupted
//! ([`super::cleanup`]) or is killed with -9. Passwords and key passphrases reach it only
//! through `SSH_ASKPASS` (this program), from 0600 files that are removed as soon as the login
//! is over; bale's own `BALE_SSH_PASSWORD` is not passed on. The crate's own launcher is not
//! used: it starts its master with `BatchMode=yes`, and OpenSSH then asks no password even of
//! an askpass helper.

use super::cleanup::{Registration, SECRET_FILES};
use super::{io_error, runtime, SshError, SshOptions, ASKPASS_ENV};
use crate::hosts::{Host, Secret};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable bale reads a password from; never handed to ssh.
const PASSWORD_ENV: &str = crate::install::PASSWORD_ENV;

/// How long a login may take beyond the TCP connect timeout (key exchange, askpass, PAM).
const LOGIN_GRACE: Duration = Duration::from_secs(60);

/// One master connection and the private directory holding its config, socket and log.
pub(super) struct Session {
    ssh: Option<Arc<openssh::Session>>,
    master: Option<tokio::process::Child>,
    _registration: Registration,
    _dir: tempfile::TempDir,
}

impl Session {
    pub(super) fn open(host: &Host, opts: &SshOptions) -> Result<Session, SshError> {
        let label = host.label();
        let io = |what: &str| io_error(&label, what);
        let dir = tempfile::Builder::new()
            .prefix("bale-ssh-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(io("make a private directory for the ssh session"))?;
        let registration = Registration::new(dir.path());
        let config = dir.path().join("ssh_config");
        write_private(&config, config_text(host, opts)?.as_bytes())
            .map_err(io("write the ssh config"))?;
        let (master, ctl, log) = launch_master(host, opts, dir.path(), &config, &registration)?;
        let ssh = openssh::Session::resume(ctl.into_boxed_path(), Some(log.into_boxed_path()));
        Ok(Session {
            ssh: Some(Arc::new(ssh)),
            master: Some(master),
            _registration: registration,
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
        if let Some(mut master) = self.master.take() {
            runtime().block_on(async {
                if tokio::time::timeout(Duration::from_secs(2), master.wait())
                    .await
                    .is_err()
                {
                    let _ = master.kill().await;
                }
            });
        }
    }
}

/// The ssh config of one connection: this host's login and the connection's settings first
/// (the first value ssh reads wins), then the user's and the system's own config.
fn config_text(host: &Host, opts: &SshOptions) -> Result<String, SshError> {
    let s = &host.ssh;
    let bad = |source| SshError::Setting {
        host: host.label(),
        source,
    };
    crate::hosts::check_user("user", &s.user).map_err(bad)?;
    crate::hosts::check_path("--known-hosts", &opts.known_hosts).map_err(bad)?;
    if let Some(k) = &s.key {
        crate::hosts::check_path("key", k).map_err(bad)?;
    }
    let mut lines = vec![
        "# written by bale for one connection; removed when it ends".to_string(),
        format!("User {}", s.user),
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
    // Checked again where it is written: one directive per line, whatever changes above.
    if let Some(l) = lines.iter().find(|l| l.chars().any(|c| c.is_control())) {
        return Err(SshError::Connect {
            host: host.label(),
            detail: format!("refusing to write the ssh config line {l:?}"),
        });
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Ok(text)
}

/// A path as an ssh config value: quoted (it holds no quote, see
/// [`crate::hosts::check_path`]), with `%` kept literal (ssh expands `%` tokens in file names).
fn path_value(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('%', "%%"))
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// The master's command line: in the foreground, never detaching (`ControlPersist=no` wins
/// over a user's config), asking for secrets through this program only when it has some.
fn master_command(
    opts: &SshOptions,
    dir: &Path,
    config: &Path,
    target: &str,
    askpass: bool,
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("ssh");
    c.arg("-F")
        .arg(config)
        .arg("-E")
        .arg(dir.join("master.log"))
        .arg("-S")
        .arg(dir.join("master"))
        .args(["-M", "-N"])
        .args(["-o", "ControlPersist=no"])
        .args([
            "-o",
            if askpass {
                "BatchMode=no"
            } else {
                "BatchMode=yes"
            },
        ])
        .arg("--")
        .arg(target)
        .env_remove(PASSWORD_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if askpass {
        c.env("SSH_ASKPASS", &opts.askpass_exe)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env(ASKPASS_ENV, dir);
    } else {
        c.env_remove(ASKPASS_ENV)
            .env_remove("SSH_ASKPASS")
            .env_remove("SSH_ASKPASS_REQUIRE");
    }
    // SAFETY: between fork and exec the child calls only prctl(2), which is async-signal-safe
    // and touches no memory of this process.
    unsafe {
        c.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    c
}

/// Starts the master and waits until its control socket answers; returns the master, the
/// socket and the master's log. The secrets sit in 0600 files in the private directory only
/// until the login is over (or failed), and never on a command line.
fn launch_master(
    host: &Host,
    opts: &SshOptions,
    dir: &Path,
    config: &Path,
    registration: &Registration,
) -> Result<(tokio::process::Child, PathBuf, PathBuf), SshError> {
    let label = host.label();
    let io = |what: &str| io_error(&label, what);
    let ctl = dir.join("master");
    let log = dir.join("master.log");
    let s = &host.ssh;
    let askpass = s.password.is_some() || s.key_passphrase.is_some();
    let write = |name: &str, secret: &Option<Secret>| match secret {
        Some(secret) => write_private(&dir.join(name), secret.expose().as_bytes()),
        None => Ok(()),
    };
    write(SECRET_FILES[0], &s.password).map_err(io("write the askpass file"))?;
    write(SECRET_FILES[1], &s.key_passphrase).map_err(io("write the askpass file"))?;
    let mut command = master_command(opts, dir, config, &host.addr.to_string(), askpass);
    let deadline = Duration::from_secs(opts.connect_timeout_secs.into()) + LOGIN_GRACE;
    let ctl_wait = ctl.clone();
    // Spawned from the runtime's own thread, which lives as long as the process: the parent
    // death signal fires when the thread that forked the child ends.
    let started = runtime().block_on(async {
        runtime()
            .spawn(async move {
                let mut master = command.spawn()?;
                let ended = wait_for_login(&mut master, &ctl_wait, deadline).await;
                Ok::<_, std::io::Error>((master, ended))
            })
            .await
            .map_err(std::io::Error::other)?
    });
    for f in SECRET_FILES {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let (mut master, ended) = started.map_err(io("start ssh"))?;
    registration.set_master(master.id());
    match ended {
        Login::Ready => Ok((master, ctl, log)),
        Login::Exited => {
            registration.set_master(None);
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&log) {
                let _ = f.read_to_string(&mut text);
            }
            Err(classify(host, opts, &text))
        }
        Login::TimedOut => {
            let _ = runtime().block_on(master.kill());
            registration.set_master(None);
            Err(SshError::Connect {
                host: label.clone(),
                detail: format!("the login did not finish within {} s", deadline.as_secs()),
            })
        }
    }
}

enum Login {
    Ready,
    Exited,
    TimedOut,
}

/// Waits until the master's control socket exists (ssh puts it in place only once the login
/// succeeded and it listens), the master ends, or `deadline` passes.
async fn wait_for_login(
    master: &mut tokio::process::Child,
    ctl: &Path,
    deadline: Duration,
) -> Login {
    let start = tokio::time::Instant::now();
    loop {
        if ctl.exists() {
            return Login::Ready;
        }
        if !matches!(master.try_wait(), Ok(None)) {
            return Login::Exited;
        }
        if start.elapsed() > deadline {
            return Login::TimedOut;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

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
            roles: vec![],
            labels: vec![],
            taints: vec![],
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

    /// F8: a user name or a path that could end its line (or its quotes) never reaches the
    /// config, whichever way it came in.
    #[test]
    fn values_that_could_start_a_directive_are_refused() {
        let mut h = host(22, None, true);
        h.ssh.user = "x\"\nProxyCommand sh -c 'cat $BALE_ASKPASS_DIR/password >/tmp/p'\n#".into();
        let e = config_text(&h, &opts("/kh")).unwrap_err();
        assert!(matches!(e, SshError::Setting { .. }), "{e}");
        let h = host(22, Some("/k\nProxyCommand x"), false);
        assert!(config_text(&h, &opts("/kh")).is_err());
        let h = host(22, Some("/k\" ProxyCommand \"x"), false);
        assert!(config_text(&h, &opts("/kh")).is_err());
        assert!(config_text(&host(22, None, false), &opts("/kh\nProxyCommand x")).is_err());
        // what ssh makes of a normal config: no ProxyCommand anywhere
        let text = resolved(&host(22, Some("/keys/a b"), false), &opts("/kh"));
        assert!(!text.contains("proxycommand /"), "{text}");
    }

    /// F9 and F10, in a child process that logs in with a password through a fake `ssh` that
    /// never finishes: the session's directory is 0700, the master gets neither
    /// BALE_SSH_PASSWORD nor a way to outlive bale, and SIGTERM during the login removes the
    /// password file and the directory and stops the master.
    #[test]
    fn an_interrupted_password_login_leaves_nothing_behind() {
        const CHILD: &str = "BALE_TEST_LOGIN_CHILD";
        if std::env::var_os(CHILD).is_some() {
            let _ = super::super::Conn::connect(&host(22, None, true), &opts("/kh"));
            return;
        }
        use std::os::unix::fs::PermissionsExt;
        let work = tempfile::tempdir().unwrap();
        let bin = work.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let record = work.path().join("record");
        std::fs::create_dir(&record).unwrap();
        let fake = bin.join("ssh");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho \"$@\" > \"$FAKE_RECORD/args\"\nenv > \"$FAKE_RECORD/env\"\n\
             echo \"$BALE_ASKPASS_DIR\" > \"$FAKE_RECORD/dir\"\n\
             echo $$ > \"$FAKE_RECORD/pid.tmp\" && mv \"$FAKE_RECORD/pid.tmp\" \"$FAKE_RECORD/pid\"\n\
             exec sleep 600\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "ssh::session::tests::an_interrupted_password_login_leaves_nothing_behind",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("PATH", path)
            .env("FAKE_RECORD", &record)
            .env(PASSWORD_ENV, "env-secret")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let until = |what: &str, cond: &dyn Fn() -> bool| {
            let start = std::time::Instant::now();
            while !cond() {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "waited for {what}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        until("the fake ssh", &|| record.join("pid").exists());
        let dir = PathBuf::from(std::fs::read_to_string(record.join("dir")).unwrap().trim());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        assert_eq!(std::fs::read_to_string(dir.join("password")).unwrap(), "pw");
        let env = std::fs::read_to_string(record.join("env")).unwrap();
        assert!(
            !env.contains("env-secret"),
            "the master inherited {PASSWORD_ENV}"
        );
        let args = std::fs::read_to_string(record.join("args")).unwrap();
        assert!(
            args.contains("ControlPersist=no") && !args.contains(" -f "),
            "{args}"
        );
        let pid: i32 = std::fs::read_to_string(record.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(pid);

        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(128 + nix::sys::signal::Signal::SIGTERM as i32),
            "{status:?}"
        );
        assert!(
            !dir.join("password").exists(),
            "the password is still on disk"
        );
        assert!(!dir.exists(), "{} is left", dir.display());
        until("the master to end", &|| {
            nix::sys::signal::kill(pid, None) == Err(nix::errno::Errno::ESRCH)
        });
    }

    /// What `ssh -G` (which connects nowhere) makes of a session's config.
    fn resolved(host: &Host, opts: &SshOptions) -> String {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("ssh_config");
        std::fs::write(&cfg, config_text(host, opts).unwrap()).unwrap();
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
