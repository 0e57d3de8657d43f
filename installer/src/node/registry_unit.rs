//! `bale agent step registry`: this node's copy of the bundle serves its images, as the systemd
//! unit `bale-registry.service` running `<data-dir>/bundle.bale registry serve`, on localhost
//! (what containerd's hosts files point at) and on the node's own address. systemd restarts it
//! a second after it dies.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::step::{Finding, Progress, Step, StepEnv, StepResult};
use super::systemd::{self, Systemd};

pub const UNIT: &str = "bale-registry.service";
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The addresses the registry listens on: localhost, and the node's IP unless that is
/// localhost too.
pub fn listen_addrs(node_ip: &str, port: u16) -> Vec<String> {
    let mut v = vec![format!("127.0.0.1:{port}")];
    let ip = node_ip.trim();
    if !ip.is_empty() && ip != "127.0.0.1" && ip != "localhost" {
        if ip.contains(':') {
            v.push(format!("[{ip}]:{port}"));
        } else {
            v.push(format!("{ip}:{port}"));
        }
    }
    v
}

/// The unit. It names the bundle's digest, so a new bundle changes the unit and the
/// registry restarts on it.
pub fn render_unit(bundle_path: &str, bundle_digest: &str, listen: &[String]) -> String {
    let listen: String = listen.iter().map(|a| format!(" --listen {a}")).collect();
    format!(
        "# Written by bale (bale agent step registry) for bundle {bundle_digest}.\n\
         [Unit]\n\
         Description=bale registry: the bundled images, for containerd (installed by bale)\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         # Not rate-limited: a registry that keeps dying must keep coming back.\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         ExecStart={bundle_path} registry serve{listen}\n\
         Restart=always\n\
         RestartSec=1\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// Why a registry did not answer `GET /v2/` with 200.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{addr}: not an address")]
    Address {
        addr: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("{addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no answer")]
    NoAnswer(String),
    #[error("{addr}: {status}")]
    Status { addr: String, status: String },
}

/// Why the registry step failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The last probe's answer sits inside the sentence (the unit's journal follows it).
    #[error(
        "the bale registry does not answer GET /v2/ after {waited_secs}s ({})\njournal of \
         {UNIT}:\n{journal}",
        crate::engine::report::chain(last)
    )]
    NotServing {
        waited_secs: u64,
        last: ProbeError,
        journal: String,
    },
    #[error(
        "{}: no bundle there to serve images from (the install's upload phase puts it there)",
        bundle.display()
    )]
    NoBundleFile { bundle: PathBuf },
    #[error("systemd is not running on this host: the registry runs as a systemd service")]
    NoSystemd,
}

/// `GET /v2/` on `addr`: Ok with the status line when the registry answers 200.
pub fn probe(addr: &str, timeout: Duration) -> Result<String, ProbeError> {
    let io = |source| ProbeError::Io {
        addr: addr.into(),
        source,
    };
    let sa: SocketAddr = addr.parse().map_err(|source| ProbeError::Address {
        addr: addr.into(),
        source,
    })?;
    let mut s = TcpStream::connect_timeout(&sa, timeout).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.set_write_timeout(Some(timeout)).map_err(io)?;
    s.write_all(
        format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(io)?;
    let mut buf = Vec::new();
    let _ = s.take(4096).read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text.lines().next().unwrap_or("").trim().to_string();
    if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
        Ok(status)
    } else if status.is_empty() {
        Err(ProbeError::NoAnswer(addr.into()))
    } else {
        Err(ProbeError::Status {
            addr: addr.into(),
            status,
        })
    }
}

fn wait_until_serving(systemd: Systemd, addrs: &[String]) -> StepResult<()> {
    let start = Instant::now();
    for a in addrs {
        loop {
            match probe(a, Duration::from_secs(2)) {
                Ok(_) => break,
                Err(last) if start.elapsed() > START_TIMEOUT => {
                    return Err(RegistryError::NotServing {
                        waited_secs: START_TIMEOUT.as_secs(),
                        last,
                        journal: systemd.recent_log(UNIT),
                    }
                    .into())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    Ok(())
}

pub struct RegistryUnit;

impl RegistryUnit {
    fn unit_text(env: &StepEnv) -> String {
        let ctx = env.ctx;
        render_unit(
            &ctx.bundle_path().to_string_lossy(),
            &ctx.bundle_digest,
            &listen_addrs(&ctx.node_ip, ctx.registry_port),
        )
    }
}

impl Step for RegistryUnit {
    fn name(&self) -> &'static str {
        "registry"
    }

    fn check(&self, env: &StepEnv) -> StepResult<Vec<Finding>> {
        let mut out = Vec::new();
        out.push(Finding::file_holds(
            env.root,
            &systemd::unit_path(UNIT),
            &Self::unit_text(env),
        ));
        let active = env.systemd().is_active(UNIT);
        out.push(Finding::of(
            active,
            format!("{UNIT}: {}", if active { "active" } else { "not active" }),
        ));
        for a in listen_addrs(&env.ctx.node_ip, env.ctx.registry_port) {
            out.push(match probe(&a, Duration::from_secs(3)) {
                Ok(status) => Finding::ok(format!("GET http://{a}/v2/: {status}")),
                Err(e) => Finding::bad(format!(
                    "GET http://{a}/v2/: {}",
                    crate::engine::report::chain(&e)
                )),
            });
        }
        Ok(out)
    }

    fn apply(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let bundle = env.ctx.bundle_path();
        let systemd = env.systemd();
        if !env.root.is_file(&bundle) {
            return Err(RegistryError::NoBundleFile { bundle }.into());
        }
        if !systemd.is_running() {
            return Err(RegistryError::NoSystemd.into());
        }
        if systemd.install_and_start(UNIT, &Self::unit_text(env))? {
            p.changed(format!("{UNIT} written, enabled and started"));
        }
        wait_until_serving(
            systemd,
            &listen_addrs(&env.ctx.node_ip, env.ctx.registry_port),
        )?;
        p.note(format!(
            "serving the bundled images on {}",
            listen_addrs(&env.ctx.node_ip, env.ctx.registry_port).join(" and ")
        ));
        Ok(())
    }

    fn undo(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        if env.systemd().remove(UNIT)? {
            p.changed(format!("stopped and removed {UNIT}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_localhost_and_the_node_ip() {
        assert_eq!(
            listen_addrs("10.0.0.2", 5050),
            ["127.0.0.1:5050", "10.0.0.2:5050"]
        );
        assert_eq!(listen_addrs("127.0.0.1", 5050), ["127.0.0.1:5050"]);
        assert_eq!(
            listen_addrs("fd00::2", 6000),
            ["127.0.0.1:6000", "[fd00::2]:6000"]
        );
    }

    #[test]
    fn unit_runs_the_bundle_and_restarts_it() {
        let u = render_unit(
            "/var/lib/bale/bundle.bale",
            "abc123",
            &listen_addrs("10.0.0.2", 5050),
        );
        assert!(u.contains(
            "ExecStart=/var/lib/bale/bundle.bale registry serve --listen 127.0.0.1:5050 --listen 10.0.0.2:5050\n"
        ));
        assert!(u.contains("Restart=always\nRestartSec=1\n"));
        assert!(u.contains("abc123"));
        assert!(u.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn probe_needs_a_200_on_v2() {
        use std::net::TcpListener;
        for (answer, ok) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", true),
            (
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            ("", false),
        ] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap().to_string();
            let t = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut req = [0u8; 1024];
                let n = s.read(&mut req).unwrap();
                assert!(String::from_utf8_lossy(&req[..n]).starts_with("GET /v2/ HTTP/1.1\r\n"));
                s.write_all(answer.as_bytes()).unwrap();
            });
            assert_eq!(
                probe(&addr, Duration::from_secs(2)).is_ok(),
                ok,
                "{answer:?}"
            );
            t.join().unwrap();
        }
        assert!(probe("127.0.0.1:1", Duration::from_secs(1)).is_err());
    }

    use crate::node::host::testing::{differences, reapply_then_undo, FakeNode};
    use std::path::Path;

    /// A registry on localhost that answers every `GET /v2/` with 200; its port.
    fn answering_registry() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for mut s in l.incoming().flatten() {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
            }
        });
        port
    }

    #[test]
    fn apply_writes_the_unit_once_and_undo_removes_only_it() {
        let mut node = FakeNode::new();
        node.ctx.node_ip = "127.0.0.1".into();
        node.ctx.registry_port = answering_registry();
        node.root
            .write_file(node.ctx.bundle_path(), b"a bundle", 0o755)
            .unwrap();
        node.root
            .write_file("/etc/systemd/system/their.service", b"theirs\n", 0o644)
            .unwrap();
        let before = node.snapshot();
        let env = node.env(None);

        let mut p = Progress::new("registry");
        RegistryUnit.apply(&env, &mut p).unwrap();
        let unit = Path::new("/etc/systemd/system").join(UNIT);
        let written = node.snapshot();
        assert_eq!(differences(&before, &written), std::slice::from_ref(&unit));
        assert_eq!(written[&unit].mode, 0o644);
        assert_eq!(
            node.root.read_to_string(&unit).unwrap(),
            render_unit(
                "/var/lib/bale/bundle.bale",
                "ab12",
                &[format!("127.0.0.1:{}", node.ctx.registry_port)]
            )
        );
        assert!(node
            .commands
            .take()
            .contains(&format!("systemctl enable --now {UNIT}")));
        assert!(RegistryUnit.check(&env).unwrap().iter().all(|f| f.ok));

        reapply_then_undo(&RegistryUnit, &env, &node, &before, &written);
        assert!(node
            .commands
            .take()
            .contains(&format!("systemctl disable --now {UNIT}")));
    }
}
