//! Shared by the registry tests: real OCI images made on the spot, an OCI layout on disk, a
//! real bundle holding that layout under `registry/`, a server on 127.0.0.1, a minimal
//! HTTP/1.1 client that shows exactly what went over the wire, waiting on conditions, and the
//! one rule for a test that cannot run on this machine ([`skip`]).

#![allow(dead_code)]

pub mod containerd;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bale_payload::{Bundle, BundleMeta, BundleWriter, WriteOptions};
use bale_registry::{RequestRecord, ServeOptions, ServerHandle};
use sha2::{Digest as _, Sha256};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What the test bundle holds, with the exact bytes of every blob in it.
pub struct Fixture {
    pub dir: PathBuf,
    /// The source OCI image layout the bundle was made from.
    pub layout: PathBuf,
    pub bundle: PathBuf,
    /// Whether the layer carries Debian's real static busybox (else a stand-in file).
    pub real_busybox: bool,
    /// Every blob in the bundle, by digest.
    pub blobs: BTreeMap<String, Vec<u8>>,
    /// `docker.io/library/busybox:1.36` and `:latest`, also `quay.io/library/busybox@` it.
    pub busybox: String,
    pub busybox_config: String,
    pub busybox_layer: String,
    /// `registry.k8s.io/pause:3.9`: an index of an amd64 manifest (present) and an arm64 one
    /// (neither it nor its blobs are in the bundle).
    pub pause_index: String,
    pub pause_amd64: String,
    pub pause_arm64: String,
    pub pause_layers: Vec<String>,
    pub pause_config: String,
    /// `registry.k8s.io/big:1`: a multi-frame layer for ranges and concurrent streaming.
    pub big: String,
    pub big_layer: String,
}

impl Fixture {
    pub fn blob(&self, d: &str) -> &[u8] {
        &self.blobs[d]
    }
}

/// Whether `tool` runs here.
pub fn have(tool: &str) -> bool {
    // openssl has no --version.
    let arg = if tool == "openssl" {
        "version"
    } else {
        "--version"
    };
    std::process::Command::new(tool)
        .arg(arg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// Each test program uses some of these.
#[allow(unused_imports)]
pub use bale_test_support::{
    check_the_skip_rule_on_this_program, is_root, skip, skips_forbidden_by, REQUIRE_ALL,
    REQUIRE_TESTBED,
};

/// Asks `check` every `every` until it gives an answer (`Some`) or `limit` passes (`None`).
/// Tests wait on conditions this way, never on fixed sleeps.
pub fn poll<T>(
    every: Duration,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if t0.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(every);
    }
}

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A gzipped tar of `root`, made reproducibly; returns (tar.gz bytes, diff_id).
fn layer_of(root: &Path, work: &Path, name: &str) -> (Vec<u8>, String) {
    let tar = work.join(format!("{name}.tar"));
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
        ])
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(root)
        .arg("."));
    let raw = std::fs::read(&tar).unwrap();
    let out = Command::new("gzip")
        .args(["-n", "-c"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(out.status.success());
    (out.stdout, sha(&raw))
}

fn descriptor(media_type: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({ "mediaType": media_type, "digest": sha(data), "size": data.len() })
}

fn config(arch: &str, diff_ids: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap()
}

/// Builds the images, the layout and the bundle once per test binary.
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(build)
}

fn build() -> Fixture {
    // One directory per test program, replaced on every run, so runs do not pile up.
    let exe = std::env::current_exe().unwrap();
    let program = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("fixture-{program}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut add = |data: Vec<u8>| -> String {
        let d = sha(&data);
        blobs.insert(d.clone(), data);
        d
    };

    // busybox: one layer with the static binary and a shell link, as a Docker v2 image.
    let root = dir.join("rootfs-busybox");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let real_busybox = Path::new("/bin/busybox").is_file();
    if real_busybox {
        std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    } else {
        eprintln!("note: /bin/busybox missing (apt-get install busybox-static); using a stand-in");
        std::fs::write(root.join("bin/busybox"), pseudo_random(1 << 20, 7)).unwrap();
    }
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let (bb_layer, bb_diff) = layer_of(&root, &dir, "busybox");
    let bb_config = config("amd64", &[&bb_diff]);
    let bb_manifest = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &bb_config),
        "layers": [descriptor(DOCKER_LAYER, &bb_layer)],
    }))
    .unwrap();

    // pause: an OCI index; the amd64 image reuses the busybox layer and adds one of its own.
    let root = dir.join("rootfs-pause");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("pause"), "pause\n").unwrap();
    let (pause_layer, pause_diff) = layer_of(&root, &dir, "pause");
    let amd_config = config("amd64", &[&bb_diff, &pause_diff]);
    let amd_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &amd_config),
        "layers": [descriptor(OCI_LAYER, &bb_layer), descriptor(OCI_LAYER, &pause_layer)],
    }))
    .unwrap();
    let arm_layer = pseudo_random(1000, 3);
    let arm_config = config("arm64", &[&sha(&arm_layer)]);
    let arm_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &arm_config),
        "layers": [descriptor(OCI_LAYER, &arm_layer)],
    }))
    .unwrap();
    let mut amd_desc = descriptor(OCI_MANIFEST, &amd_manifest);
    amd_desc["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
    let mut arm_desc = descriptor(OCI_MANIFEST, &arm_manifest);
    arm_desc["platform"] =
        serde_json::json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    let pause_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [amd_desc, arm_desc],
    }))
    .unwrap();

    // big: a layer of several bundle frames (2 MiB each) and registry chunks (256 KiB).
    let big_layer = pseudo_random((5 << 20) + 123, 11);
    let big_config = config("amd64", &[&sha(&big_layer)]);
    let big_manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &big_config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &big_layer)],
    }))
    .unwrap();

    let fx_busybox = sha(&bb_manifest);
    let refs = |desc: serde_json::Value, name: &str| {
        let mut d = desc;
        d["annotations"] = serde_json::json!({ "org.opencontainers.image.ref.name": name });
        d
    };
    let index = serde_json::to_vec_pretty(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            refs(descriptor(DOCKER_MANIFEST, &bb_manifest), "docker.io/library/busybox:1.36"),
            refs(descriptor(DOCKER_MANIFEST, &bb_manifest), "docker.io/library/busybox:latest"),
            refs(descriptor(DOCKER_MANIFEST, &bb_manifest),
                 &format!("quay.io/library/busybox@{fx_busybox}")),
            refs(descriptor(OCI_INDEX, &pause_index), "registry.k8s.io/pause:3.9"),
            refs(descriptor(OCI_MANIFEST, &big_manifest), "registry.k8s.io/big:1"),
        ],
    }))
    .unwrap();

    let f = Fixture {
        dir: dir.clone(),
        layout: dir.join("layout"),
        bundle: dir.join("images.bale"),
        real_busybox,
        busybox: add(bb_manifest),
        busybox_config: add(bb_config),
        busybox_layer: add(bb_layer.clone()),
        pause_index: add(pause_index),
        pause_amd64: add(amd_manifest),
        pause_arm64: sha(&arm_manifest),
        pause_layers: vec![sha(&bb_layer), add(pause_layer)],
        pause_config: add(amd_config),
        big: add(big_manifest),
        big_layer: add(big_layer),
        blobs,
    };
    let _ = (arm_config, arm_layer);

    // The source layout, as the image-collection step leaves it.
    let blob_dir = f.layout.join("blobs/sha256");
    std::fs::create_dir_all(&blob_dir).unwrap();
    std::fs::write(
        f.layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(f.layout.join("index.json"), &index).unwrap();
    for (d, data) in &f.blobs {
        std::fs::write(blob_dir.join(&d[7..]), data).unwrap();
    }

    // The bundle: a small ELF as the program, some unrelated content, then the layout.
    let stub = ["/bin/true", "/usr/bin/true"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| std::env::current_exe().unwrap());
    let meta = BundleMeta {
        name: "registry-test".into(),
        version: "1".into(),
        ..BundleMeta::default()
    };
    let opts = WriteOptions {
        threads: 2,
        ..WriteOptions::default()
    };
    let mut w = BundleWriter::create(&f.bundle, &stub, meta, opts).unwrap();
    w.add_dir("etc", 0o755).unwrap();
    w.add_bytes("etc/readme", 0o644, b"not an image\n").unwrap();
    w.add_dir("registry", 0o755).unwrap();
    w.add_dir("registry/blobs", 0o755).unwrap();
    w.add_dir("registry/blobs/sha256", 0o755).unwrap();
    w.add_bytes(
        "registry/oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    w.add_bytes("registry/index.json", 0o644, &index).unwrap();
    for d in f.blobs.keys() {
        let raw = hex::decode(&d[7..]).unwrap();
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&raw);
        w.add_blob(
            &format!("registry/blobs/sha256/{}", &d[7..]),
            &blob_dir.join(&d[7..]),
            Some(&digest),
        )
        .unwrap();
    }
    w.finish().unwrap();
    f
}

/// Deterministic incompressible bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A running server and every request it answered.
pub struct Server {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<RequestRecord>>>,
}

impl Server {
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log.lock().unwrap().clone()
    }
}

pub fn start(f: &Fixture, mut opts: ServeOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    opts.on_request = Some(Arc::new(move |r: &RequestRecord| {
        sink.lock().unwrap().push(r.clone());
    }));
    let bundle = Bundle::open(&f.bundle).unwrap();
    let handle = bale_registry::spawn(&bundle, vec![listener], opts).unwrap();
    Server { handle, addr, log }
}

/// One response as read off the socket.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `code` of the first OCI error in the body.
    pub fn error_code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends one request with `Connection: close` and reads the whole answer, so the test sees
/// exactly the bytes sent (a HEAD answer with a body would show up here).
pub fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    request_raw(addr, req.as_bytes())
}

/// Sends `req` as it is and reads the answer until the server closes the connection.
pub fn request_raw(addr: SocketAddr, req: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(req).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

pub fn get(addr: SocketAddr, target: &str) -> Resp {
    request(addr, "GET", target, &[])
}

pub fn head(addr: SocketAddr, target: &str) -> Resp {
    request(addr, "HEAD", target, &[])
}
