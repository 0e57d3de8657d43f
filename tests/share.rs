//! `bale push` and `bale pull` against a real registry (Debian's docker-registry, distribution
//! 2.8) on loopback: the round trip, Basic auth over TLS with a CA file, a push and a pull cut
//! and resumed, a blob damaged in the registry's storage, a registry answering 500, a manifest
//! pointing at blobs of another size, independent clients reading the artifact, a Kubefile
//! `FROM` a registry, and token auth through a token service written here (ES256 JWTs signed
//! with openssl, which the registry checks against the service's certificate).
//!
//! Cuts and failures come from a small proxy in this file between `bale` and the registry.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const REGISTRY: &str = "/usr/bin/docker-registry";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether docker-registry is here; otherwise the test skips (or fails where it must).
fn have_registry() -> bool {
    if Path::new(REGISTRY).is_file() || have("docker-registry") {
        return true;
    }
    skip(
        &[],
        "docker-registry is not installed; apt-get install docker-registry",
    );
    false
}

fn have(tool: &str) -> bool {
    bale_test_support::have(tool)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Default)]
struct RegistryOptions {
    /// Certificate and key files: serve TLS.
    tls: Option<(PathBuf, PathBuf)>,
    /// An htpasswd file: Basic auth.
    htpasswd: Option<PathBuf>,
    /// Token auth: the realm (the token service's URL) and the certificate its tokens are
    /// signed with.
    token: Option<(String, PathBuf)>,
}

/// A docker-registry on 127.0.0.1 with its storage in a temporary directory; stopped on drop.
struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Registry {
    fn start(o: RegistryOptions) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            s(&dir.path().join("data"))
        );
        if let Some((cert, key)) = &o.tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                s(cert),
                s(key)
            ));
        }
        if let Some(h) = &o.htpasswd {
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: bale-test\n    path: {}\n",
                s(h)
            ));
        }
        if let Some((realm, cert)) = &o.token {
            cfg.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                s(cert)
            ));
        }
        let cfg_file = dir.path().join("config.yml");
        std::fs::write(&cfg_file, cfg).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY)
            .args(["serve", s(&cfg_file)])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        poll_until(
            Duration::from_millis(20),
            "docker-registry to listen",
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Registry { dir, port, child }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding blob `digest` in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain-HTTP request to 127.0.0.1:`port`; the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.write_all(req.as_bytes()).unwrap();
    c.write_all(body).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out[split + 4..].to_vec())
}

fn manifest(port: u16, repo: &str, reference: &str) -> serde_json::Value {
    let (status, body) = http(
        port,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// A bundle with 6 MiB of noise and an SBOM entry, built once per test program. With the
/// test build of bale as its program part it is a few hundred MiB: many chunks of 8 MiB.
fn fixture() -> PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| {
        let dir = scratch("share-fixture");
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join(".bale")).unwrap();
        std::fs::create_dir_all(tree.join("data")).unwrap();
        std::fs::write(tree.join("data/noise"), noise(6 << 20, 0x5eed)).unwrap();
        std::fs::write(
            tree.join(".bale/sbom.cdx.json"),
            r#"{"bomFormat":"CycloneDX","specVersion":"1.5","version":1,"components":[]}"#,
        )
        .unwrap();
        let out = dir.join("app.bale");
        ok(&bale(&[
            "build",
            s(&tree),
            "-o",
            s(&out),
            "--name",
            "app",
            "--version",
            "1.0",
        ]));
        out
    })
    .clone()
}

const CHUNK: &str = "8";

fn push(file: &Path, reference: &str, extra: &[&str]) -> Output {
    let mut args = vec!["push", s(file), reference, "--chunk-mib", CHUNK, "--json"];
    args.extend_from_slice(extra);
    bale(&args)
}

fn pull(reference: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["pull", reference, "-o", s(out), "--json"];
    args.extend_from_slice(extra);
    bale(&args)
}

fn json(o: &Output) -> serde_json::Value {
    ok(o);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

#[test]
fn push_pull_round_trip() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let app = fixture();
    let size = std::fs::metadata(&app).unwrap().len();
    let r = format!("{}/ns/app:1", reg.host());
    let p = json(&push(&app, &r, &[]));
    let chunks = p["chunks"].as_u64().unwrap();
    assert_eq!(chunks, size.div_ceil(8 << 20));
    assert_eq!(p["uploaded"].as_u64(), Some(chunks));
    assert!(p["sbom"].is_string(), "{p}");

    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("got.bale");
    let q = json(&pull(&r, &out, &[]));
    assert_eq!(q["digest"], p["digest"]);
    assert_eq!(q["fetched"].as_u64(), Some(chunks));
    same_file(&app, &out);
    assert!(!d.path().join("got.bale.part").exists());
    ok(&bale(&["verify", s(&out)]));

    // By digest too, and a second push sends nothing.
    let by_digest = format!("{}/ns/app@{}", reg.host(), p["digest"].as_str().unwrap());
    let out2 = d.path().join("by-digest.bale");
    json(&pull(&by_digest, &out2, &[]));
    same_file(&app, &out2);
    let again = json(&push(&app, &r, &[]));
    assert_eq!(again["uploaded"].as_u64(), Some(0));
    assert_eq!(again["digest"], p["digest"]);

    // The manifest: what the artifact is, in order, with its annotations.
    let m = manifest(reg.port, "ns/app", "1");
    assert_eq!(m["artifactType"], "application/vnd.bale.bundle.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len() as u64, chunks);
    assert!(layers
        .iter()
        .all(|l| l["mediaType"] == "application/vnd.bale.bundle.chunk.v1"));
    let a = &m["annotations"];
    assert_eq!(a["io.bale.bundle.name"], "app");
    assert_eq!(a["io.bale.bundle.version"], "1.0");
    assert_eq!(a["io.bale.bundle.size"], size.to_string());
    assert_eq!(a["org.opencontainers.image.title"], "app.bale");
    assert_eq!(a["io.bale.bundle.root"].as_str().unwrap().len(), 64);

    // distribution 2.8 has no referrers API: the SBOM is listed under the fallback tag.
    let tag = p["digest"].as_str().unwrap().replacen(':', "-", 1);
    let idx = manifest(reg.port, "ns/app", &tag);
    let refs = idx["manifests"].as_array().unwrap();
    assert_eq!(refs.len(), 1, "{idx}");
    assert_eq!(refs[0]["artifactType"], "application/vnd.cyclonedx+json");
    assert_eq!(refs[0]["digest"], p["sbom"]);
    let sbom = manifest(reg.port, "ns/app", refs[0]["digest"].as_str().unwrap());
    assert_eq!(sbom["subject"]["digest"], p["digest"]);

    // Not a bundle: a plain error, nothing written.
    let o = pull(&format!("{}/ns/nothing:1", reg.host()), &out2, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not found in registry"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn independent_clients_read_the_artifact() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let app = fixture();
    let r = format!("{}/ns/app:1", reg.host());
    let p = json(&push(&app, &r, &[]));
    if have("skopeo") {
        let o = Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                &format!("docker://{r}"),
                "--tls-verify=false",
            ])
            .output()
            .unwrap();
        ok(&o);
        let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(m["artifactType"], "application/vnd.bale.bundle.v1");
        assert_eq!(
            m["layers"].as_array().unwrap().len() as u64,
            p["chunks"].as_u64().unwrap()
        );
    } else {
        skip(&[], "skopeo is not installed; apt-get install skopeo");
    }
    match std::env::var_os("BALE_TEST_PYTHON") {
        Some(py) => {
            let script = format!(
                "import json, oras.client\n\
                 c = oras.client.OrasClient(hostname='{host}', insecure=True)\n\
                 m = c.get_manifest('{r}')\n\
                 print(json.dumps({{'artifactType': m.get('artifactType'), 'layers': len(m['layers'])}}))\n",
                host = reg.host()
            );
            let o = Command::new(py).args(["-c", &script]).output().unwrap();
            ok(&o);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["artifactType"], "application/vnd.bale.bundle.v1");
            assert_eq!(v["layers"], p["chunks"]);
        }
        None => skip(
            &[],
            "BALE_TEST_PYTHON is not set (a python with oras==0.2.43; scripts/test.sh makes one)",
        ),
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    ok(&o);
}

/// A CA and a certificate for 127.0.0.1 signed by it, in `dir`: ca.crt, srv.crt, srv.key.
fn make_ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
            "-subj",
            "/CN=bale test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

#[test]
fn basic_auth_over_tls_with_a_ca_file() {
    if !have_registry() {
        return;
    }
    if !have("openssl") || !have("htpasswd") {
        return skip(
            &[],
            "openssl and htpasswd are needed; apt-get install openssl apache2-utils",
        );
    }
    let d = tempfile::tempdir().unwrap();
    let dp = d.path();
    make_ca(dp, "ca");
    make_ca(dp, "other");
    openssl(
        dp,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dp.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dp,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
    let o = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .unwrap();
    ok(&o);
    std::fs::write(dp.join("htpasswd"), &o.stdout).unwrap();
    let reg = Registry::start(RegistryOptions {
        tls: Some((dp.join("srv.crt"), dp.join("srv.key"))),
        htpasswd: Some(dp.join("htpasswd")),
        ..Default::default()
    });
    let app = fixture();
    let r = format!("{}/ns/app:1", reg.host());
    let ca = dp.join("ca.crt");
    let empty_cfg = dp.join("no-docker");
    std::fs::create_dir_all(&empty_cfg).unwrap();
    let with_stdin = |args: &[&str], input: &str| {
        let mut c = Command::new(bale_bin())
            .args(args)
            .env("DOCKER_CONFIG", &empty_cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let base = [
        "push",
        s(&app),
        &r,
        "--chunk-mib",
        CHUNK,
        "--ca-file",
        s(&ca),
    ];
    let cred = ["-u", "alice", "--password-stdin"];

    // A wrong password is named as such.
    let o = with_stdin(&[&base[..], &cred[..]].concat(), "wrong\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("rejected the credentials of user \"alice\""),
        "{}",
        stderr(&o)
    );
    ok(&with_stdin(&[&base[..], &cred[..]].concat(), "s3cret\n"));

    let out = dp.join("got.bale");
    // No credentials: the error says how to log in.
    let o = Command::new(bale_bin())
        .args(["pull", &r, "-o", s(&out), "--ca-file", s(&ca)])
        .env("DOCKER_CONFIG", &empty_cfg)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("docker login"), "{}", stderr(&o));
    assert!(!out.exists());

    // Credentials from Docker's config, as `docker login` leaves them.
    let cfg = dp.join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"auths":{{"{}":{{"username":"alice","password":"s3cret"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let pull_with = |ca: &Path| {
        Command::new(bale_bin())
            .args(["pull", &r, "-o", s(&out), "--ca-file", s(ca)])
            .env("DOCKER_CONFIG", &cfg)
            .output()
            .unwrap()
    };
    // A CA that did not sign the registry's certificate is not trusted, even on loopback.
    let o = pull_with(&dp.join("other.crt"));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).to_lowercase().contains("certificate"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    ok(&pull_with(&ca));
    same_file(&app, &out);
}

/// What the proxy does besides forwarding.
enum Fault {
    /// Answer 500 to the first `n` blob PUTs.
    Fail500Puts(AtomicUsize),
    /// After `n` bytes in the direction (true: to the registry), cut every connection and
    /// refuse new ones.
    CutAfter(bool, u64),
}

struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    puts_failed: Arc<AtomicUsize>,
}

/// A proxy on 127.0.0.1 in front of the registry at `upstream`, one request per connection.
fn proxy(upstream: u16, fault: Fault) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let cut = Arc::new(AtomicBool::new(false));
    let puts_failed = Arc::new(AtomicUsize::new(0));
    let fault = Arc::new(fault);
    let counters = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let (c2, p2) = (Arc::clone(&cut), Arc::clone(&puts_failed));
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            if c2.load(Ordering::SeqCst) {
                drop(conn);
                continue;
            }
            let (cut, fault, counters, failed) = (
                Arc::clone(&c2),
                Arc::clone(&fault),
                Arc::clone(&counters),
                Arc::clone(&p2),
            );
            std::thread::spawn(move || {
                let _ = serve(conn, upstream, &cut, &fault, &counters, &failed);
            });
        }
    });
    Proxy {
        port,
        cut,
        puts_failed,
    }
}

fn serve(
    client: TcpStream,
    upstream: u16,
    cut: &AtomicBool,
    fault: &Fault,
    counters: &[AtomicU64; 2],
    failed: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0u64;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if !lower.starts_with("connection:") {
            head.push(line);
        }
    }
    let first = head.first().cloned().unwrap_or_default();
    if let Fault::Fail500Puts(n) = fault {
        if first.starts_with("PUT ") && first.contains("/blobs/uploads/") {
            let left = n.load(Ordering::SeqCst);
            if left > 0 {
                n.store(left - 1, Ordering::SeqCst);
                failed.fetch_add(1, Ordering::SeqCst);
                std::io::copy(
                    &mut (&mut reader).take(content_length),
                    &mut std::io::sink(),
                )?;
                let body = r#"{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}"#;
                let mut c = client;
                write!(
                    c,
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
                return Ok(());
            }
        }
    }
    let up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut w = up.try_clone()?;
    for line in &head {
        w.write_all(line.as_bytes())?;
    }
    w.write_all(b"Connection: close\r\n\r\n")?;
    let limit = |dir: bool| match fault {
        Fault::CutAfter(d, n) if *d == dir => Some(*n),
        _ => None,
    };
    let pump = |mut from: Box<dyn Read + Send>, mut to: TcpStream, dir: bool| {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let c = &counters[usize::from(dir)];
            let total = c.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if limit(dir).is_some_and(|l| total > l) || cut.load(Ordering::SeqCst) {
                cut.store(true, Ordering::SeqCst);
                break;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    };
    let up_read = up.try_clone()?;
    let client_w = client.try_clone()?;
    std::thread::scope(|s| {
        s.spawn(|| pump(Box::new(reader), up, true));
        pump(Box::new(up_read), client_w, false);
        let _ = client.shutdown(Shutdown::Both);
    });
    Ok(())
}

#[test]
fn a_cut_push_resumes_and_sends_only_the_rest() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let app = fixture();
    let size = std::fs::metadata(&app).unwrap().len();
    let px = proxy(reg.port, Fault::CutAfter(true, size / 2));
    let o = push(
        &app,
        &format!("127.0.0.1:{}/ns/app:1", px.port),
        &["--jobs", "2"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(px.cut.load(Ordering::SeqCst));
    let e = stderr(&o);
    assert!(e.contains("blob sha256:") && e.contains("chunk "), "{e}");

    let p = json(&push(&app, &format!("{}/ns/app:1", reg.host()), &[]));
    let (chunks, uploaded) = (
        p["chunks"].as_u64().unwrap(),
        p["uploaded"].as_u64().unwrap(),
    );
    assert!(uploaded < chunks, "all {chunks} chunks sent again");
    assert!(uploaded > 0, "nothing left to send after the cut?");
    let sent = p["bytes_uploaded"].as_u64().unwrap();
    assert!(sent < size, "{sent} of {size} bytes sent again");
    let out = reg.dir.path().join("got.bale");
    json(&pull(&format!("{}/ns/app:1", reg.host()), &out, &[]));
    same_file(&app, &out);
}

#[test]
fn a_cut_pull_resumes_from_the_part_file() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let app = fixture();
    let size = std::fs::metadata(&app).unwrap().len();
    json(&push(&app, &format!("{}/ns/app:1", reg.host()), &[]));
    let px = proxy(reg.port, Fault::CutAfter(false, size / 2));
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("got.bale");
    let o = pull(
        &format!("127.0.0.1:{}/ns/app:1", px.port),
        &out,
        &["--jobs", "2"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("blob sha256:"), "{}", stderr(&o));
    assert!(!out.exists(), "a cut pull left a file under the final name");
    assert!(d.path().join("got.bale.part").exists());

    let q = json(&pull(&format!("{}/ns/app:1", reg.host()), &out, &[]));
    let (chunks, fetched) = (
        q["chunks"].as_u64().unwrap(),
        q["fetched"].as_u64().unwrap(),
    );
    assert!(
        fetched < chunks && fetched > 0,
        "{fetched} of {chunks} fetched again"
    );
    assert!(q["bytes_fetched"].as_u64().unwrap() < size);
    same_file(&app, &out);
    assert!(!d.path().join("got.bale.part").exists());
}

#[test]
fn a_damaged_blob_in_the_registry_is_named() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let app = fixture();
    json(&push(&app, &format!("{}/ns/app:1", reg.host()), &[]));
    let m = manifest(reg.port, "ns/app", "1");
    let digest = m["layers"][1]["digest"].as_str().unwrap().to_string();
    let file = reg.blob_file(&digest);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();

    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("got.bale");
    let o = pull(&format!("{}/ns/app:1", reg.host()), &out, &[]);
    damaged(&o, &digest);
    let e = stderr(&o);
    assert!(e.contains(&reg.host()) && e.contains("chunk 2 of"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_manifest_pointing_at_blobs_of_another_size_is_refused() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let app = fixture();
    json(&push(&app, &format!("{}/ns/app:1", reg.host()), &[]));
    let m = manifest(reg.port, "ns/app", "1");
    let put = |tag: &str, m: &serde_json::Value| {
        let (status, body) = http(
            reg.port,
            "PUT",
            &format!("/v2/ns/app/manifests/{tag}"),
            &[("Content-Type", "application/vnd.oci.image.manifest.v1+json")],
            &serde_json::to_vec(m).unwrap(),
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    };
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("got.bale");

    // Chunk sizes that do not add up to the announced size.
    let mut bad = m.clone();
    bad["layers"][0]["size"] = (m["layers"][0]["size"].as_u64().unwrap() + 1).into();
    put("sum", &bad);
    let o = pull(&format!("{}/ns/app:sum", reg.host()), &out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("blobs of another size"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    // Sizes that add up, but a blob the registry holds with another length.
    let mut bad = m.clone();
    let l0 = m["layers"][0]["size"].as_u64().unwrap();
    let l1 = m["layers"][1]["size"].as_u64().unwrap();
    bad["layers"][0]["size"] = (l0 + 1).into();
    bad["layers"][1]["size"] = (l1 - 1).into();
    put("shifted", &bad);
    let o = pull(&format!("{}/ns/app:shifted", reg.host()), &out, &[]);
    assert_ne!(o.status.code(), Some(0));
    let e = stderr(&o);
    assert!(
        e.contains("blob of another size") && e.contains("blob sha256:"),
        "{e}"
    );
    assert!(!out.exists());
}

#[test]
fn a_registry_answering_500_is_retried_then_named() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let app = fixture();
    // One failure: the retry carries the push through.
    let px = proxy(reg.port, Fault::Fail500Puts(AtomicUsize::new(1)));
    let r = format!("127.0.0.1:{}/ns/app:1", px.port);
    json(&push(&app, &r, &[]));
    assert_eq!(px.puts_failed.load(Ordering::SeqCst), 1);
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("got.bale");
    json(&pull(&format!("{}/ns/app:1", reg.host()), &out, &[]));
    same_file(&app, &out);

    // Failures for good: the error names the blob, the registry and what it said.
    let px = proxy(reg.port, Fault::Fail500Puts(AtomicUsize::new(1000)));
    let o = push(
        &app,
        &format!("127.0.0.1:{}/ns/other:1", px.port),
        &["--jobs", "1"],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("blob sha256:")
            && e.contains("chunk 1 of")
            && e.contains("HTTP 500")
            && e.contains("injected failure"),
        "{e}"
    );
    assert_eq!(
        px.puts_failed.load(Ordering::SeqCst),
        5,
        "one try and four retries"
    );
    let (status, _) = http(reg.port, "GET", "/v2/ns/other/manifests/1", &[], b"");
    assert_eq!(status, 404, "a failed push left a manifest");
}

#[test]
fn a_kubefile_builds_from_a_bundle_in_a_registry() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("base");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/base.conf"), "base\n").unwrap();
    let base = d.path().join("base.bale");
    ok(&bale(&[
        "build",
        s(&tree),
        "-o",
        s(&base),
        "--name",
        "base",
        "--version",
        "1",
    ]));
    let r = format!("{}/ns/base:1", reg.host());
    json(&push(&base, &r, &[]));

    let ctx = d.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Kubefile"),
        format!("FROM {r}\nCOPY app.txt app.txt\n"),
    )
    .unwrap();
    std::fs::write(ctx.join("app.txt"), "app\n").unwrap();
    let cache = d.path().join("cache/oci");
    let store = d.path().join("store");
    let out = d.path().join("app.bale");
    let build = |extra: &[&str]| {
        let mut args = vec![
            "build",
            "-t",
            "app:1",
            "-o",
            s(&out),
            "--image-cache",
            s(&cache),
            "--store",
            s(&store),
        ];
        args.extend_from_slice(extra);
        args.push(s(&ctx));
        bale(&args)
    };
    ok(&build(&[]));
    let o = bale(&["list", s(&out)]);
    ok(&o);
    let listed = stdout(&o);
    assert!(
        listed.contains("etc/base.conf") && listed.contains("app.txt"),
        "{listed}"
    );
    // The pulled base and the app built on it, in the one bundle store.
    let cached: Vec<_> = std::fs::read_dir(store.join("sha256")).unwrap().collect();
    assert_eq!(cached.len(), 2);
    let o = bale(&["images", "--store", s(&store)]);
    assert!(
        stdout(&o).contains(&format!("{}/ns/base", reg.host())),
        "{}",
        stdout(&o)
    );

    // A base from the cache is checked against the keys trusted now: the base is unsigned,
    // so a machine that pins a key refuses it (exit 4), before anything is written.
    let (pin, _) = keygen(d.path(), "pin", &[], &[]);
    std::fs::remove_file(&out).unwrap();
    let mut c = Command::new(bale_bin());
    c.args([
        "build",
        "-t",
        "app:1",
        "-o",
        s(&out),
        "--image-cache",
        s(&cache),
        "--store",
        s(&store),
        "--offline",
    ])
    .arg(&ctx)
    .env("BALE_TRUSTED_KEYS", pubkey(&pin));
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("FROM"), "{}", stderr(&o));
    assert!(!out.exists());

    // Offline, from the bundle cache; with the registry gone.
    drop(reg);
    ok(&build(&["--offline"]));
    let o = build(&[]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the registry is gone, yet: {}",
        stderr(&o)
    );
}

#[test]
fn a_pulled_bundle_must_be_signed_by_a_trusted_key() {
    if !have_registry() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default());
    let d = tempfile::tempdir().unwrap();
    let (ours, ours_fp) = keygen(d.path(), "ours", &[], &[]);
    let (theirs, _) = keygen(d.path(), "theirs", &[], &[]);
    let signed = d.path().join("signed.bale");
    ok(&bale(&[
        "sign",
        s(&fixture()),
        "--key",
        s(&ours),
        "-o",
        s(&signed),
    ]));
    let r = format!("{}/ns/signed:1", reg.host());
    json(&push(&signed, &r, &[]));
    // Registry clients see who signed it.
    let m = manifest(reg.port, "ns/signed", "1");
    assert_eq!(
        m["annotations"]["io.bale.bundle.signers"],
        ours_fp.as_str(),
        "{m}"
    );

    // Trusted: pulled, and the verdict says by whom.
    let out = d.path().join("got.bale");
    let q = json(&pull(&r, &out, &["--key", s(&pubkey(&ours))]));
    assert!(
        q["signature"].as_str().unwrap_or("").contains("signed by"),
        "{q}"
    );
    same_file(&signed, &out);

    // Signed, but by a key this pull does not trust: exit 4, nothing under the final name.
    let other = d.path().join("other.bale");
    let o = pull(&r, &other, &["--key", s(&pubkey(&theirs))]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(!other.exists(), "an untrusted bundle got its final name");
    assert!(stderr(&o).contains(s(&other)), "{}", stderr(&o));
}

// ---- token auth ---------------------------------------------------------------------------

const TOKEN_SERVICE: &str = "bale-test";
const TOKEN_ISSUER: &str = "bale-test-issuer";

fn b64(data: &[u8], url: bool) -> String {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(STD[(n >> (18 - 6 * i)) as usize & 63] as char);
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    if url {
        out.replace('+', "-").replace('/', "_")
    } else {
        out
    }
}

/// An ECDSA signature in DER (what `openssl dgst -sign` writes) as JWS wants it: r || s.
fn der_to_raw(der: &[u8]) -> Vec<u8> {
    // SEQUENCE { INTEGER r, INTEGER s }, each at most 33 bytes for P-256.
    let mut i = 2;
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "an INTEGER");
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

/// A token service on loopback: for `GET /token?service=..&scope=..` with the right Basic
/// credentials it answers a JWT granting what the scopes ask; anything else gets 401.
struct TokenService {
    port: u16,
    stop: Arc<AtomicBool>,
    issued: Arc<AtomicUsize>,
}

impl TokenService {
    fn start(dir: &Path, user: &str, password: &str) -> TokenService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let want = format!(
            "Basic {}",
            b64(format!("{user}:{password}").as_bytes(), false)
        );
        let cert = std::fs::read(dir.join("token.der")).unwrap();
        let key = dir.join("token.key");
        let (stop2, issued2) = (stop.clone(), issued.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let (conn, _) = match listener.accept() {
                    Ok(c) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                conn.set_nonblocking(false).unwrap();
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut authorized = false;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") && v.trim() == want {
                            authorized = true;
                        }
                    }
                }
                let mut w = conn;
                if !authorized {
                    let _ = w.write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    continue;
                }
                let token = jwt(&target, &cert, &key);
                issued2.fetch_add(1, Ordering::SeqCst);
                let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                let _ = write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenService { port, stop, issued }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// An ES256 JWT for the scopes in the query of `target` (`/token?...&scope=repository:NAME:ACTIONS`).
fn jwt(target: &str, cert_der: &[u8], key: &Path) -> String {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let access: Vec<serde_json::Value> = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("scope="))
        .map(|sc| sc.replace("%3A", ":").replace("%2C", ",").replace("%2F", "/"))
        .filter_map(|sc| {
            let mut p = sc.splitn(3, ':');
            let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [b64(cert_der, false)]});
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": "tester", "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{now}"),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes(), true),
        b64(claims.to_string().as_bytes(), true)
    );
    let mut c = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success());
    format!("{input}.{}", b64(&der_to_raw(&o.stdout), true))
}

#[test]
fn token_auth_through_a_token_service() {
    if !have_registry() {
        return;
    }
    if !have("openssl") {
        return skip(&[], "openssl is needed; apt-get install openssl");
    }
    let d = tempfile::tempdir().unwrap();
    let dp = d.path();
    openssl(
        dp,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "token.key",
        ],
    );
    openssl(
        dp,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "token.key",
            "-out",
            "token.crt",
            "-days",
            "2",
            "-subj",
            "/CN=bale test token service",
        ],
    );
    openssl(
        dp,
        &[
            "x509",
            "-in",
            "token.crt",
            "-outform",
            "DER",
            "-out",
            "token.der",
        ],
    );
    let tokens = TokenService::start(dp, "tester", "t0ken-pass");
    let reg = Registry::start(RegistryOptions {
        token: Some((tokens.realm(), dp.join("token.crt"))),
        ..Default::default()
    });
    let with_stdin = |args: &[&str], input: &str| {
        let mut c = Command::new(bale_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let app = fixture();
    let r = format!("{}/ns/app:1", reg.host());
    let cred = ["-u", "tester", "--password-stdin"];

    // Without the right password the token service says no, and the error names the user.
    let o = with_stdin(
        &[&["push", s(&app), &r, "--chunk-mib", CHUNK][..], &cred[..]].concat(),
        "wrong\n",
    );
    assert!(!o.status.success(), "pushed with a wrong password");
    let e = stderr(&o);
    assert!(
        e.contains("rejected the credentials") && e.contains("tester"),
        "{e}"
    );

    ok(&with_stdin(
        &[&["push", s(&app), &r, "--chunk-mib", CHUNK][..], &cred[..]].concat(),
        "t0ken-pass\n",
    ));
    let out = dp.join("got.bale");
    ok(&with_stdin(
        &[&["pull", &r, "-o", s(&out)][..], &cred[..]].concat(),
        "t0ken-pass\n",
    ));
    same_file(&app, &out);
    assert!(
        tokens.issued.load(Ordering::SeqCst) >= 2,
        "no token was asked for"
    );
    // The registry itself refuses a client without a token.
    let (status, _) = http(reg.port, "GET", "/v2/ns/app/manifests/1", &[], b"");
    assert_eq!(status, 401);
}
