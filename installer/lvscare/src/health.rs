//! Probes: one small HTTP/1.1 GET (over TLS for https) or a bare TCP
//! connect, bounded by the health timeout.
//!
//! A full HTTP client would be dead weight here: the guardian only needs the
//! status line of one request per server per interval.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::TlsConnector;

use crate::config::{HealthConfig, HealthScheme, StatusSet};
use crate::state::Probe;

/// Why the probes cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("reading CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: CaFileError,
    },
    #[error("TLS setup")]
    Tls(#[from] rustls::Error),
}

/// What is wrong with a `--ca-file`.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    #[error(transparent)]
    Pem(#[from] pki_types::pem::Error),
    #[error("a certificate in it is unusable as a trust anchor")]
    Anchor(#[from] rustls::Error),
    #[error("no certificates in it")]
    Empty,
}

/// Why one probe failed; it becomes the reason in [`Probe::Fail`].
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connect")]
    Connect(#[source] io::Error),
    #[error("TLS")]
    Tls(#[source] io::Error),
    #[error("send")]
    Send(#[source] io::Error),
    #[error("read")]
    Read(#[source] io::Error),
    #[error(transparent)]
    Answer(#[from] AnswerError),
    #[error("HTTP {code}, accepted: {accepted}")]
    Status { code: u16, accepted: StatusSet },
}

/// An answer without a usable HTTP status line.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("bad status line {0:?}")]
    BadStatusLine(String),
    #[error("connection closed without an answer")]
    Closed,
    #[error("not an HTTP answer: {0:?}")]
    NotHttp(String),
}

pub struct Prober {
    scheme: HealthScheme,
    path: String,
    timeout: Duration,
    status: StatusSet,
    tls: Option<TlsConnector>,
}

impl Prober {
    pub fn new(cfg: &HealthConfig) -> Result<Self, HealthError> {
        let tls = match cfg.scheme {
            HealthScheme::Https => Some(TlsConnector::from(Arc::new(tls_config(cfg)?))),
            _ => None,
        };
        Ok(Prober {
            scheme: cfg.scheme,
            path: cfg.path.clone(),
            timeout: cfg.timeout,
            status: cfg.status.clone(),
            tls,
        })
    }

    /// Probes one server; never takes longer than the timeout.
    pub async fn probe(&self, rs: SocketAddr) -> Probe {
        match tokio::time::timeout(self.timeout, self.probe_inner(rs)).await {
            Ok(Ok(())) => Probe::Ok,
            Ok(Err(e)) => Probe::Fail(crate::error_chain(&e)),
            Err(_) => Probe::Fail(format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Probes every server at once, so one slow master cannot delay the
    /// verdict on the others beyond the timeout.
    pub async fn probe_all(self: &Arc<Self>, rs: &[SocketAddr]) -> BTreeMap<SocketAddr, Probe> {
        let mut set = tokio::task::JoinSet::new();
        for a in rs {
            let me = Arc::clone(self);
            let a = *a;
            set.spawn(async move { (a, me.probe(a).await) });
        }
        let mut out = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok((a, p)) = r {
                out.insert(a, p);
            }
        }
        out
    }

    async fn probe_inner(&self, rs: SocketAddr) -> Result<(), ProbeError> {
        let tcp = TcpStream::connect(rs).await.map_err(ProbeError::Connect)?;
        match (self.scheme, &self.tls) {
            (HealthScheme::Tcp, _) => Ok(()),
            (HealthScheme::Https, Some(tls)) => {
                let name = pki_types::ServerName::IpAddress(rs.ip().into());
                let stream = tls.connect(name, tcp).await.map_err(ProbeError::Tls)?;
                self.http_get(stream, rs).await
            }
            _ => self.http_get(tcp, rs).await,
        }
    }

    async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut s: S,
        rs: SocketAddr,
    ) -> Result<(), ProbeError> {
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {rs}\r\nUser-Agent: bale-lvscare\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            self.path
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(ProbeError::Send)?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        // Only the status line matters; stop at its end or after 4 KiB.
        while !buf.contains(&b'\n') && buf.len() < 4096 {
            let n = s.read(&mut chunk).await.map_err(ProbeError::Read)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let code = parse_status_line(&buf)?;
        if self.status.contains(code) {
            Ok(())
        } else {
            Err(ProbeError::Status {
                code,
                accepted: self.status.clone(),
            })
        }
    }
}

/// Extracts the code from "HTTP/1.1 200 OK".
fn parse_status_line(buf: &[u8]) -> Result<u16, AnswerError> {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code
            .parse()
            .map_err(|_| AnswerError::BadStatusLine(line.trim().to_string())),
        _ if buf.is_empty() => Err(AnswerError::Closed),
        _ => Err(AnswerError::NotHttp(line.trim().to_string())),
    }
}

fn tls_config(cfg: &HealthConfig) -> Result<rustls::ClientConfig, HealthError> {
    let Some(path) = &cfg.ca_file else {
        // Only reached with --insecure-skip-verify (config validation
        // refuses https without a CA otherwise).
        return Ok(bale_tls::unverified_client_config()?);
    };
    let roots = trust_anchors(path).map_err(|source| HealthError::CaFile {
        path: path.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The certificates of a PEM file, every one of them a usable trust anchor.
fn trust_anchors(path: &std::path::Path) -> Result<rustls::RootCertStore, CaFileError> {
    use pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in pki_types::CertificateDer::pem_file_iter(path)? {
        roots.add(cert?)?;
    }
    if roots.is_empty() {
        return Err(CaFileError::Empty);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn cfg(scheme: HealthScheme) -> HealthConfig {
        HealthConfig {
            scheme,
            path: "/healthz".into(),
            timeout: Duration::from_millis(500),
            status: StatusSet(vec![(200, 200), (401, 401)]),
            insecure_skip_verify: true,
            ca_file: None,
        }
    }

    /// A loopback server answering every connection with `answer`.
    async fn serve(answer: &'static str) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
            }
        });
        a
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 401 Unauthorized\r\n").unwrap(),
            401
        );
        assert!(parse_status_line(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_status_line(b"")
            .unwrap_err()
            .to_string()
            .contains("closed"));
    }

    #[test]
    fn http_probe_accepts_listed_codes_only() {
        rt().block_on(async {
            let p = Arc::new(Prober::new(&cfg(HealthScheme::Http)).unwrap());
            let ok = serve("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            let unauth = serve("HTTP/1.0 401 Unauthorized\r\n\r\n").await;
            let err = serve("HTTP/1.1 500 Internal Server Error\r\n\r\n").await;
            let r = p.probe_all(&[ok, unauth, err]).await;
            assert_eq!(r[&ok], Probe::Ok);
            assert_eq!(r[&unauth], Probe::Ok);
            assert!(matches!(&r[&err], Probe::Fail(m) if m.contains("HTTP 500")));
        });
    }

    #[test]
    fn refused_and_silent_servers_fail_within_timeout() {
        rt().block_on(async {
            let p = Prober::new(&cfg(HealthScheme::Http)).unwrap();
            // A port that was just free: connection refused.
            let closed = {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                l.local_addr().unwrap()
            };
            assert!(matches!(p.probe(closed).await, Probe::Fail(m) if m.contains("connect")));
            // Accepts but never answers: the timeout decides.
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let silent = l.local_addr().unwrap();
            let t = std::time::Instant::now();
            assert!(matches!(p.probe(silent).await, Probe::Fail(m) if m.contains("no answer")));
            assert!(t.elapsed() < Duration::from_secs(2));
            drop(l);
        });
    }

    #[test]
    fn tcp_probe_only_connects() {
        rt().block_on(async {
            let p = Prober::new(&cfg(HealthScheme::Tcp)).unwrap();
            let a = serve("garbage").await;
            assert_eq!(p.probe(a).await, Probe::Ok);
        });
    }

    #[test]
    fn https_probe_against_plain_http_fails_cleanly() {
        rt().block_on(async {
            let p = Prober::new(&cfg(HealthScheme::Https)).unwrap();
            let a = serve("HTTP/1.1 200 OK\r\n\r\n").await;
            assert!(matches!(p.probe(a).await, Probe::Fail(m) if m.contains("TLS")));
        });
    }

    /// A loopback TLS server with the test certificate from testdata/
    /// (CA "bale-lvscare-test-ca" signed a leaf for IP 127.0.0.1, 100 years).
    async fn serve_tls(answer: &'static str) -> SocketAddr {
        use pki_types::pem::PemObject;
        let certs: Vec<_> =
            pki_types::CertificateDer::pem_slice_iter(include_bytes!("testdata/server.crt"))
                .collect::<Result<_, _>>()
                .unwrap();
        let key = pki_types::PrivateKeyDer::from_pem_slice(include_bytes!("testdata/server.key"))
            .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                if let Ok(mut s) = acceptor.accept(tcp).await {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            }
        });
        a
    }

    fn testdata(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/testdata")
            .join(name)
    }

    #[test]
    fn https_probe_verifies_against_ca_file() {
        rt().block_on(async {
            let a = serve_tls("HTTP/1.1 200 OK\r\n\r\n").await;
            let mut c = cfg(HealthScheme::Https);
            c.insecure_skip_verify = false;
            c.ca_file = Some(testdata("ca.crt"));
            assert_eq!(Prober::new(&c).unwrap().probe(a).await, Probe::Ok);
            // Trusting the wrong anchor must fail the probe.
            c.ca_file = Some(testdata("server.crt"));
            let p = Prober::new(&c).unwrap().probe(a).await;
            assert!(matches!(&p, Probe::Fail(m) if m.contains("TLS")), "{p:?}");
        });
    }

    #[test]
    fn https_probe_insecure_accepts_unknown_certificate() {
        rt().block_on(async {
            let a = serve_tls("HTTP/1.1 401 Unauthorized\r\n\r\n").await;
            let p = Prober::new(&cfg(HealthScheme::Https)).unwrap();
            assert_eq!(p.probe(a).await, Probe::Ok);
        });
    }

    #[test]
    fn ca_file_errors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let mut c = cfg(HealthScheme::Https);
        c.insecure_skip_verify = false;
        c.ca_file = Some(empty.clone());
        let e = Prober::new(&c).err().expect("refused");
        assert!(matches!(e, HealthError::CaFile { .. }));
        let text = crate::error_chain(&e);
        assert_eq!(
            text,
            format!("reading CA file {}: no certificates in it", empty.display())
        );
        c.ca_file = Some(dir.path().join("missing.crt"));
        let e = Prober::new(&c).err().expect("refused");
        assert!(matches!(e, HealthError::CaFile { .. }));
        assert!(crate::error_chain(&e).contains("missing.crt"), "{e}");
    }
}
