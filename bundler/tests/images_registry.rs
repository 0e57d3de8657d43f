//! Pulling from a real registry: Debian's docker-registry on 127.0.0.1, images pushed to it
//! with skopeo, and a small in-test server in front of it for token auth and failures.

mod images_support;

use bale_bundler::imageref::ImageRef;
use bale_bundler::images::registry::{api_host, is_loopback};
use bale_bundler::images::{collect, Cache, CollectOptions, ImagesError, Platform, RetryPolicy};
use images_support::*;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

const TOOLS: &[&str] = &["docker-registry", "skopeo"];

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).expect("reference")
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").expect("platform")
}

fn arm64() -> Platform {
    Platform::parse("linux/arm64").expect("platform")
}

fn opts(cache: &Path) -> CollectOptions {
    CollectOptions {
        cache_dir: Some(cache.to_path_buf()),
        // No credentials unless a test gives some.
        docker_config: Some(cache.join("no-docker-config")),
        progress: false,
        retry: RetryPolicy {
            retries: 2,
            delay: Duration::from_millis(20),
        },
        ..Default::default()
    }
}

/// A layout with a single-arch busybox image ("single"), a second image sharing its layer
/// ("other"), an arm64-only image ("armonly") and a two-platform index ("multi").
struct Images {
    _tmp: tempfile::TempDir,
    layout: Layout,
    single: serde_json::Value,
    other: serde_json::Value,
    multi: serde_json::Value,
    multi_amd64: serde_json::Value,
    multi_arm64: serde_json::Value,
}

fn images() -> Images {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let base = layer(&[("bin/busybox", &busybox(), 0o755)]);
    let extra = layer(&[("etc/motd", b"hello from bale", 0o644)]);
    let single = layout.image("amd64", std::slice::from_ref(&base));
    let other = layout.image("amd64", &[base.clone(), extra]);
    let armonly = layout.image("arm64", std::slice::from_ref(&base));
    let amd_extra = layer(&[("etc/arch", b"amd64", 0o644)]);
    let multi_amd64 = layout.image("amd64", &[base.clone(), amd_extra]);
    let arm_extra = layer(&[("etc/arch", b"arm64", 0o644)]);
    let multi_arm64 = layout.image("arm64", &[base, arm_extra]);
    let multi = layout.index(&[multi_amd64.clone(), multi_arm64.clone()]);
    layout.tag(&single, "single");
    layout.tag(&other, "other");
    layout.tag(&armonly, "armonly");
    layout.tag(&multi, "multi");
    Images {
        _tmp: tmp,
        layout,
        single,
        other,
        multi,
        multi_amd64,
        multi_arm64,
    }
}

#[test]
fn images_docker_hub_mapping_and_loopback() {
    assert_eq!(api_host("docker.io"), "registry-1.docker.io");
    assert_eq!(api_host("quay.io"), "quay.io");
    assert!(is_loopback("127.0.0.1:5000"));
    assert!(is_loopback("localhost"));
    assert!(is_loopback("[::1]:5000"));
    assert!(!is_loopback("registry.example.com:5000"));
}

#[test]
fn images_pull_single_multi_and_bundle() {
    if missing(TOOLS) {
        return;
    }
    let imgs = images();
    let reg = TestRegistry::start(None);
    let host = reg.host();
    push(
        &imgs.layout.dir,
        "single",
        &format!("{host}/test/busybox:1.36"),
        false,
        None,
    );
    push(
        &imgs.layout.dir,
        "other",
        &format!("{host}/test/other:1"),
        false,
        None,
    );
    push(
        &imgs.layout.dir,
        "multi",
        &format!("{host}/test/multi:2"),
        true,
        None,
    );

    let cache_dir = tempfile::tempdir().expect("tempdir");
    let refs = [
        r(&format!("{host}/test/busybox:1.36")),
        r(&format!("{host}/test/other:1")),
        r(&format!("{host}/test/multi:2")),
    ];
    let got = collect(&refs, &amd64(), &opts(cache_dir.path())).expect("pull");
    assert_eq!(got.len(), 3);
    for (img, reference) in got.iter().zip(&refs) {
        assert_eq!(img.name, reference.normalized());
        assert_eq!(img.source, format!("registry {host}"));
        // What the registry serves for the tag, byte for byte (skopeo's own view).
        let raw = inspect_raw(&reference.normalized(), None);
        assert_eq!(img.descriptor.digest, sha(&raw), "{}", img.name);
    }
    assert_eq!(got[0].descriptor.digest, digest_of(&imgs.single));
    assert_eq!(got[1].descriptor.digest, digest_of(&imgs.other));
    assert_eq!(got[2].descriptor.digest, digest_of(&imgs.multi));
    assert_eq!(got[2].manifest.digest, digest_of(&imgs.multi_amd64));

    // Only the wanted platform's blobs were fetched.
    let cache = Cache::open(cache_dir.path()).expect("cache");
    let (arm_cfg, arm_layers) = manifest_blobs(&imgs.layout, &imgs.multi_arm64);
    assert!(!cache.blob_path(&arm_cfg).expect("path").exists());
    assert!(!cache.blob_path(&arm_layers[1]).expect("path").exists());
    assert!(!cache
        .blob_path(&digest_of(&imgs.multi_arm64))
        .expect("path")
        .exists());

    // The bundle: every blob once and byte-identical to the source layout.
    let out = tempfile::tempdir().expect("tempdir");
    let (bundle, summary) = build_bundle(out.path(), cache_dir.path(), &got);
    assert_eq!(summary.count, 3);
    let (index, blobs, b) = bundle_registry(&bundle);
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .expect("name")
        })
        .collect();
    let mut want: Vec<String> = refs.iter().map(|r| r.normalized()).collect();
    want.sort();
    assert_eq!(names, want);
    // busybox: manifest, config, layer; other: manifest, config, +1 layer; multi: index,
    // manifest, config, +1 layer (and the busybox layer again).
    assert_eq!(blobs.len(), 3 + 3 + 4, "{:?}", blobs.keys());
    for (hex, e) in &blobs {
        let src = std::fs::read(imgs.layout.dir.join("blobs/sha256").join(hex)).expect("source");
        assert_eq!(read_entry(&b, e), src, "{hex}");
    }
    let v = bale_payload::verify::verify(&b, 2, &|_| {});
    assert!(v.is_ok(), "{v:?}");

    // arm64 from the same index, into another cache.
    let cache2 = tempfile::tempdir().expect("tempdir");
    let got = collect(&refs[2..], &arm64(), &opts(cache2.path())).expect("pull arm64");
    assert_eq!(got[0].descriptor.digest, digest_of(&imgs.multi));
    assert_eq!(got[0].manifest.digest, digest_of(&imgs.multi_arm64));
    assert_eq!(got[0].platform.to_string(), "linux/arm64");

    // Pulled again: nothing new to download, the same answer.
    let again = collect(&refs[2..], &arm64(), &opts(cache2.path())).expect("again");
    assert_eq!(again, got);

    // By the child's digest: that manifest alone.
    let child = r(&format!(
        "{host}/test/multi@{}",
        digest_of(&imgs.multi_arm64)
    ));
    let cache3 = tempfile::tempdir().expect("tempdir");
    let got = collect(&[child], &arm64(), &opts(cache3.path())).expect("by digest");
    assert_eq!(got[0].descriptor.digest, digest_of(&imgs.multi_arm64));

    // Unknown tag.
    let e = collect(
        &[r(&format!("{host}/test/busybox:nope"))],
        &amd64(),
        &opts(cache3.path()),
    )
    .expect_err("unknown tag");
    assert!(matches!(e, ImagesError::NotFound { .. }), "{e:?}");
    assert!(e.to_string().contains("test/busybox:nope"), "{e}");
}

#[test]
fn images_pull_platform_mismatch_is_refused() {
    if missing(TOOLS) {
        return;
    }
    let imgs = images();
    let reg = TestRegistry::start(None);
    let host = reg.host();
    push(
        &imgs.layout.dir,
        "armonly",
        &format!("{host}/test/armonly:1"),
        false,
        None,
    );
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let name = format!("{host}/test/armonly:1");
    let e = collect(&[r(&name)], &amd64(), &opts(cache_dir.path())).expect_err("mismatch");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "image {name} is linux/arm64, but the bundle is for linux/amd64"
        )),
        "{msg}"
    );
    // No layer was downloaded for it.
    let (_, layers) = manifest_blobs(&imgs.layout, &imgs.single);
    let cache = Cache::open(cache_dir.path()).expect("cache");
    assert!(!cache.blob_path(&layers[0]).expect("path").exists());
}

#[test]
fn images_pull_basic_auth() {
    if missing(&["docker-registry", "skopeo", "htpasswd"]) {
        return;
    }
    let imgs = images();
    let reg = TestRegistry::start(Some(("alice", "s3cret")));
    let host = reg.host();
    let name = format!("{host}/private/busybox:1");
    push(
        &imgs.layout.dir,
        "single",
        &name,
        false,
        Some("alice:s3cret"),
    );

    let cache_dir = tempfile::tempdir().expect("tempdir");
    let good = docker_config(&host, "alice", "s3cret");
    let mut o = opts(cache_dir.path());
    o.docker_config = Some(good.path().to_path_buf());
    let got = collect(&[r(&name)], &amd64(), &o).expect("pull with credentials");
    assert_eq!(
        got[0].descriptor.digest,
        sha(&inspect_raw(&name, Some("alice:s3cret")))
    );

    // Wrong password: a clear error naming the user and where the credentials came from.
    let bad = docker_config(&format!("http://{host}"), "alice", "wrong");
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut o = opts(fresh.path());
    o.docker_config = Some(bad.path().to_path_buf());
    let e = collect(&[r(&name)], &amd64(), &o).expect_err("wrong password");
    let msg = e.to_string();
    assert!(
        msg.contains("rejected the credentials of user \"alice\"")
            && msg.contains(&bad.path().join("config.json").display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains("wrong"), "the password leaked: {msg}");

    // None at all.
    let e = collect(&[r(&name)], &amd64(), &opts(fresh.path())).expect_err("no credentials");
    let msg = e.to_string();
    assert!(
        msg.contains("requires authentication") && msg.contains("docker login"),
        "{msg}"
    );
}

#[test]
fn images_pull_token_auth() {
    if missing(TOOLS) {
        return;
    }
    let imgs = images();
    let reg = TestRegistry::start(None);
    push(
        &imgs.layout.dir,
        "other",
        &format!("{}/team/other:1", reg.host()),
        false,
        None,
    );
    let (port, issued) = token_proxy(reg.port, "bob", "t0psecret");
    let front = format!("127.0.0.1:{port}");
    let name = format!("{front}/team/other:1");

    let cache_dir = tempfile::tempdir().expect("tempdir");
    let creds = docker_config(&front, "bob", "t0psecret");
    let mut o = opts(cache_dir.path());
    o.docker_config = Some(creds.path().to_path_buf());
    let got = collect(&[r(&name)], &amd64(), &o).expect("pull through the token service");
    assert_eq!(got[0].descriptor.digest, digest_of(&imgs.other));
    let n = issued.load(Ordering::SeqCst);
    // One token for the repository, reused for its manifest, config and layers.
    assert!((1..=2).contains(&n), "{n} tokens issued");
    let (cfg, layers) = manifest_blobs(&imgs.layout, &imgs.other);
    let cache = Cache::open(cache_dir.path()).expect("cache");
    for d in std::iter::once(&cfg).chain(&layers) {
        assert!(cache.blob_path(d).expect("path").is_file(), "{d}");
    }

    // The token service refuses wrong credentials.
    let bad = docker_config(&front, "bob", "nope");
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut o = opts(fresh.path());
    o.docker_config = Some(bad.path().to_path_buf());
    let e = collect(&[r(&name)], &amd64(), &o).expect_err("wrong credentials");
    assert!(
        e.to_string()
            .contains("rejected the credentials of user \"bob\""),
        "{e}"
    );
}

#[test]
fn images_pull_retries_server_errors() {
    if missing(TOOLS) {
        return;
    }
    let imgs = images();
    let reg = TestRegistry::start(None);
    push(
        &imgs.layout.dir,
        "single",
        &format!("{}/flaky/busybox:1", reg.host()),
        false,
        None,
    );
    // Two 503s: the ping takes one (any answer tells it the scheme works), the manifest
    // request is retried past the other.
    let (port, seen) = flaky_proxy(reg.port, 2);
    let name = format!("127.0.0.1:{port}/flaky/busybox:1");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let got = collect(&[r(&name)], &amd64(), &opts(cache_dir.path())).expect("retried");
    assert_eq!(got[0].descriptor.digest, digest_of(&imgs.single));
    assert!(seen.load(Ordering::SeqCst) >= 5);

    // Without retries, the 503 is the error.
    let (port, _) = flaky_proxy(reg.port, 100);
    let name = format!("127.0.0.1:{port}/flaky/busybox:1");
    let mut o = opts(cache_dir.path());
    o.retry = RetryPolicy {
        retries: 1,
        delay: Duration::from_millis(1),
    };
    let e = collect(&[r(&name)], &amd64(), &o).expect_err("fails");
    assert!(e.to_string().contains("HTTP 503"), "{e}");

    // Nothing listening at all.
    let dead = free_port();
    let e = collect(&[r(&format!("127.0.0.1:{dead}/x/y:1"))], &amd64(), &o).expect_err("refused");
    assert!(e.to_string().contains(&format!("127.0.0.1:{dead}")), "{e}");
}
