//! Shared by the bundler's tests: real images made on the spot, a real registry
//! (Debian's docker-registry) on 127.0.0.1, a tiny HTTP server that stands in front of it
//! to play a token service or a failing server, waiting on conditions, and the one rule for
//! a test that cannot run on this machine ([`skip`]). Nothing here talks to anything but
//! loopback.

#![allow(dead_code)]

use base64::Engine;
use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

// Each test program uses some of these.
#[allow(unused_imports)]
pub use bale_test_support::{
    check_the_skip_rule_on_this_program, have, skip, skips_forbidden_by, REQUIRE_ALL, REQUIRE_HELM,
};

/// True (after [`skip`], which fails the test where it must run) if a tool is missing.
#[track_caller]
pub fn missing(tools: &[&str]) -> bool {
    let gone: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if gone.is_empty() {
        return false;
    }
    skip(
        &[],
        &format!(
            "{} not installed (apt-get install docker-registry skopeo busybox-static apache2-utils)",
            gone.join(", ")
        ),
    );
    true
}

/// Polls `cond` every `every` until it holds (true) or `limit` passes (false). Tests wait on
/// conditions this way, never on fixed sleeps.
pub fn poll_until(every: Duration, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// The busybox binary to put in test images: the real static one when busybox-static is
/// installed, else stand-in bytes (the tests never run it).
pub fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").unwrap_or_else(|_| b"#!/bin/sh\necho not busybox\n".to_vec())
}

/// A gzip layer tar holding `files` (path, content, mode); returns (tar.gz, diff_id).
pub fn layer(files: &[(&str, &[u8], u32)]) -> (Vec<u8>, String) {
    let tar = plain_layer(files);
    let diff_id = sha(&tar);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (gz.finish().expect("gzip"), diff_id)
}

/// An uncompressed layer tar holding `files`.
pub fn plain_layer(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, *data).expect("tar");
    }
    b.into_inner().expect("tar")
}

pub fn config(arch: &str, diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "bale test"}],
    }))
    .expect("json")
}

/// An OCI image layout being written.
pub struct Layout {
    pub dir: PathBuf,
    pub entries: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
        Layout {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        }
    }

    pub fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        std::fs::write(self.blob_path(&d), data).expect("write blob");
        d
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// An image for `arch` with gzip `layers` (tar.gz, diff_id); returns its descriptor.
    pub fn image(&self, arch: &str, layers: &[(Vec<u8>, String)]) -> Value {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.1.clone()).collect();
        let cfg = config(arch, &diff_ids);
        let cfg_d = self.blob(&cfg);
        let layer_ds: Vec<Value> = layers
            .iter()
            .map(|(gz, _)| {
                json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": self.blob(gz),
                    "size": gz.len(),
                })
            })
            .collect();
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg.len()},
            "layers": layer_ds,
        }))
        .expect("json");
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": self.blob(&m),
            "size": m.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    }

    /// An index of `children` (image descriptors with platforms).
    pub fn index(&self, children: &[Value]) -> Value {
        let idx = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
        }))
        .expect("json");
        json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": self.blob(&idx),
            "size": idx.len(),
        })
    }

    /// Lists `desc` in index.json under `name`.
    pub fn tag(&mut self, desc: &Value, name: &str) {
        let mut d = desc.clone();
        if let Some(o) = d.as_object_mut() {
            o.remove("platform");
            o.insert(
                "annotations".into(),
                json!({"org.opencontainers.image.ref.name": name}),
            );
        }
        self.entries.push(d);
        let idx = json!({"schemaVersion": 2, "manifests": self.entries});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).expect("json"),
        )
        .expect("write");
    }
}

pub fn digest_of(v: &Value) -> String {
    v["digest"].as_str().expect("digest").to_string()
}

/// The blobs of a manifest descriptor in a layout: (config digest, layer digests).
pub fn manifest_blobs(layout: &Layout, desc: &Value) -> (String, Vec<String>) {
    let m: Value =
        serde_json::from_slice(&std::fs::read(layout.blob_path(&digest_of(desc))).expect("read"))
            .expect("json");
    let cfg = m["config"]["digest"].as_str().expect("cfg").to_string();
    let layers = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    (cfg, layers)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn wait_for_port(port: u16) {
    let up = poll_until(Duration::from_millis(50), Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "nothing listens on 127.0.0.1:{port}");
}

/// Debian's docker-registry on 127.0.0.1, with its own storage and config; killed on drop.
pub struct TestRegistry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl TestRegistry {
    /// With `user`, the registry requires that user (htpasswd, bcrypt) for everything.
    pub fn start(user: Option<(&str, &str)>) -> TestRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = user {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, &out.stdout).expect("write");
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: bale-test\n    path: {}\n",
                file.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).expect("write");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        wait_for_port(port);
        TestRegistry { port, dir, child }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `skopeo copy` from an OCI layout tag to `dest` (any skopeo transport), failing the test if
/// skopeo does.
pub fn skopeo_copy(layout: &Path, tag: &str, dest: &str, extra: &[&str]) {
    let src = format!("oci:{}:{tag}", layout.display());
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .args(extra)
        .arg(&src)
        .arg(dest)
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo copy {src} {dest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pushes a layout tag to the registry, plain HTTP.
pub fn push(layout: &Path, tag: &str, dest: &str, all: bool, creds: Option<&str>) {
    let mut extra = vec!["--dest-tls-verify=false"];
    if all {
        extra.push("--all");
    }
    let c;
    if let Some(cr) = creds {
        c = format!("--dest-creds={cr}");
        extra.push(&c);
    }
    skopeo_copy(layout, tag, &format!("docker://{dest}"), &extra);
}

/// `skopeo inspect --raw`: the exact manifest bytes the registry serves.
pub fn inspect_raw(reference: &str, creds: Option<&str>) -> Vec<u8> {
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "--insecure-policy",
        "inspect",
        "--raw",
        "--tls-verify=false",
    ]);
    if let Some(c) = creds {
        cmd.arg(format!("--creds={c}"));
    }
    let out = cmd
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A docker config dir whose config.json holds `user:pass` for `host`.
pub fn docker_config(host: &str, user: &str, pass: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_vec(&json!({"auths": {host: {"auth": auth}}})).expect("json"),
    )
    .expect("write");
    dir
}

/// A request as the test server saw it.
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    raw_head: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the test server does with a request.
pub enum Action {
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Pass it on to the upstream registry, without the Authorization header.
    Forward,
}

pub type Handler = Arc<dyn Fn(&Request) -> Action + Send + Sync>;

/// A small HTTP/1.1 server on 127.0.0.1 in front of `upstream` (a port on 127.0.0.1). One
/// request per connection. Runs until the test process ends.
pub fn serve(upstream: u16, handler: Handler) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let handler = Arc::clone(&handler);
            std::thread::spawn(move || {
                let _ = handle(conn, upstream, &handler);
            });
        }
    });
    port
}

fn handle(mut conn: TcpStream, upstream: u16, handler: &Handler) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut b)? == 0 || head.len() > 65536 {
            return Ok(());
        }
        // A TLS hello (clients probe HTTPS first): hang up, as a plain-HTTP server would.
        if head.is_empty() && b[0] == 0x16 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let req = Request {
        method,
        path,
        headers,
        raw_head: head,
    };
    match handler(&req) {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            conn.write_all(out.as_bytes())?;
            conn.write_all(&body)?;
        }
        Action::Forward => {
            let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
            let mut fwd = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
            for (k, v) in &req.headers {
                let k_l = k.to_ascii_lowercase();
                if k_l == "authorization" || k_l == "connection" || k_l == "host" {
                    continue;
                }
                fwd.push_str(&format!("{k}: {v}\r\n"));
            }
            fwd.push_str(&format!(
                "Host: 127.0.0.1:{upstream}\r\nConnection: close\r\n\r\n"
            ));
            let _ = &req.raw_head;
            up.write_all(fwd.as_bytes())?;
            std::io::copy(&mut up, &mut conn)?;
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}

pub fn respond(status: u16, headers: &[(&str, &str)], body: &str) -> Action {
    Action::Respond {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

/// A token service in front of a registry: registry requests need `Bearer <token>`; the
/// token comes from `/token` given Basic `user:pass`. Counts the tokens it issued.
pub fn token_proxy(upstream: u16, user: &str, pass: &str) -> (u16, Arc<AtomicUsize>) {
    let issued = Arc::new(AtomicUsize::new(0));
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let port_cell = Arc::new(std::sync::OnceLock::<u16>::new());
    let pc = Arc::clone(&port_cell);
    let counter = Arc::clone(&issued);
    let handler: Handler = Arc::new(move |req: &Request| {
        let port = pc.get().copied().unwrap_or_default();
        if req.path.starts_with("/token") {
            if !req.path.contains("service=bale-test") || !req.path.contains("scope=repository") {
                return respond(400, &[], "bad token request");
            }
            if req.header("authorization") != Some(good.as_str()) {
                return respond(401, &[], r#"{"details":"bad credentials"}"#);
            }
            counter.fetch_add(1, Ordering::SeqCst);
            return respond(
                200,
                &[("Content-Type", "application/json")],
                r#"{"token":"t0ken","expires_in":300}"#,
            );
        }
        if req.header("authorization") == Some("Bearer t0ken") {
            return Action::Forward;
        }
        let repo = req
            .path
            .strip_prefix("/v2/")
            .and_then(|p| {
                p.split_once("/manifests/")
                    .or_else(|| p.split_once("/blobs/"))
            })
            .map(|(r, _)| r.to_string());
        let mut challenge =
            format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="bale-test""#);
        if let Some(r) = repo {
            challenge.push_str(&format!(r#",scope="repository:{r}:pull""#));
        }
        respond(
            401,
            &[
                ("WWW-Authenticate", &challenge),
                ("Content-Type", "application/json"),
            ],
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
    });
    let port = serve(upstream, handler);
    let _ = port_cell.set(port);
    (port, issued)
}

/// A registry front that answers 503 to the first `failures` requests.
pub fn flaky_proxy(upstream: u16, failures: usize) -> (u16, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    let handler: Handler = Arc::new(move |_req: &Request| {
        if s.fetch_add(1, Ordering::SeqCst) < failures {
            respond(503, &[], "try later")
        } else {
            Action::Forward
        }
    });
    (serve(upstream, handler), seen)
}

/// Opens a built bundle and returns its `registry/index.json` and blob entries by hex.
pub fn bundle_registry(
    path: &Path,
) -> (
    Value,
    std::collections::BTreeMap<String, bale_payload::Entry>,
    bale_payload::Bundle,
) {
    let b = bale_payload::Bundle::open(path).expect("open bundle");
    let entries = b.entries().expect("entries");
    let mut blobs = std::collections::BTreeMap::new();
    let mut index = None;
    for e in entries {
        if e.path == "registry/index.json" {
            let mut data = Vec::new();
            b.open_entry(&e)
                .expect("open")
                .read_to_end(&mut data)
                .expect("read");
            index = Some(serde_json::from_slice(&data).expect("index json"));
        } else if let Some(hex) = e.path.strip_prefix("registry/blobs/sha256/") {
            assert_eq!(e.kind, bale_payload::Kind::Blob, "{}", e.path);
            blobs.insert(hex.to_string(), e);
        }
    }
    (index.expect("registry/index.json"), blobs, b)
}

/// The content of a bundle entry.
pub fn read_entry(b: &bale_payload::Bundle, e: &bale_payload::Entry) -> Vec<u8> {
    let mut data = Vec::new();
    b.open_entry(e)
        .expect("open")
        .read_to_end(&mut data)
        .expect("read");
    data
}

/// Writes a bundle holding `images` from `cache`; returns its path (inside `dir`).
pub fn build_bundle(
    dir: &Path,
    cache: &Path,
    images: &[bale_bundler::images::ResolvedImage],
) -> (PathBuf, bale_bundler::images::ImagesSummary) {
    try_build_bundle(dir, cache, images).expect("add images")
}

/// [`build_bundle`], returning the images' error.
pub fn try_build_bundle(
    dir: &Path,
    cache: &Path,
    images: &[bale_bundler::images::ResolvedImage],
) -> Result<(PathBuf, bale_bundler::images::ImagesSummary), bale_bundler::images::ImagesError> {
    let dest = dir.join("test.bale");
    let stub = std::env::current_exe().expect("exe");
    let mut w = bale_payload::BundleWriter::create(
        &dest,
        &stub,
        bale_payload::BundleMeta {
            name: "images-test".into(),
            version: "1".into(),
            images: images.len() as u64,
            ..Default::default()
        },
        bale_payload::WriteOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .expect("create bundle");
    let summary = bale_bundler::images::add_images_to_bundle(&mut w, cache, images)?;
    w.finish().expect("finish");
    Ok((dest, summary))
}
