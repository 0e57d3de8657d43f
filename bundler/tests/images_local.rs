//! Images from files: OCI layouts, docker-archive and oci-archive tarballs, into the cache and
//! into a bundle. The archives come from skopeo when it is installed, and are also made by
//! hand in the shape `docker save` writes.

mod images_support;

use bale_bundler::imageref::ImageRef;
use bale_bundler::images::{
    collect, Cache, CollectOptions, ImageSource, ImagesError, Platform, ResolvedImage,
};
use images_support::*;
use serde_json::{json, Value};
use std::path::Path;

fn r(s: &str) -> ImageRef {
    ImageRef::parse(s).expect("reference")
}

fn amd64() -> Platform {
    Platform::parse("linux/amd64").expect("platform")
}

fn arm64() -> Platform {
    Platform::parse("linux/arm64").expect("platform")
}

fn offline(cache: &Path, sources: Vec<ImageSource>) -> CollectOptions {
    CollectOptions {
        cache_dir: Some(cache.to_path_buf()),
        sources,
        pull: false,
        progress: false,
        ..Default::default()
    }
}

/// A layout with two single-arch images sharing their busybox layer, and a multi-arch one.
struct Fixture {
    _tmp: tempfile::TempDir,
    layout: Layout,
    app1: Value,
    app2: Value,
    multi: Value,
    multi_amd64: Value,
    multi_arm64: Value,
    shared_layer: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let base = layer(&[("bin/busybox", &busybox(), 0o755)]);
    let shared_layer = sha(&base.0);
    let a1 = layer(&[("etc/app1", b"one", 0o644)]);
    let a2 = layer(&[("etc/app2", b"two", 0o644)]);
    let app1 = layout.image("amd64", &[base.clone(), a1]);
    let app2 = layout.image("amd64", &[base.clone(), a2]);
    let multi_amd64 = layout.image("amd64", std::slice::from_ref(&base));
    let arm = layer(&[("etc/arch", b"arm64", 0o644)]);
    let mut multi_arm64 = layout.image("arm64", &[base, arm]);
    multi_arm64["platform"]["variant"] = json!("v8");
    let multi = layout.index(&[multi_amd64.clone(), multi_arm64.clone()]);
    layout.tag(&app1, "registry.example.com/team/app1:1.0");
    layout.tag(&app2, "docker.io/library/app2:2.0");
    layout.tag(&multi, "multi:3");
    Fixture {
        _tmp: tmp,
        layout,
        app1,
        app2,
        multi,
        multi_amd64,
        multi_arm64,
        shared_layer,
    }
}

fn names(images: &[ResolvedImage]) -> Vec<&str> {
    images.iter().map(|i| i.name.as_str()).collect()
}

#[test]
fn images_oci_layout_into_bundle_shares_layers() {
    let f = fixture();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(cache_dir.path()).expect("cache");
    let src = ImageSource::OciLayout(f.layout.dir.clone());
    let images = src.import(&cache, &amd64(), None).expect("import");
    assert_eq!(
        names(&images),
        [
            "registry.example.com/team/app1:1.0",
            "docker.io/library/app2:2.0",
            "docker.io/library/multi:3"
        ]
    );
    assert_eq!(images[0].descriptor.digest, digest_of(&f.app1));
    assert_eq!(images[2].descriptor.digest, digest_of(&f.multi));
    assert_eq!(images[2].manifest.digest, digest_of(&f.multi_amd64));
    assert_eq!(images[2].platform.to_string(), "linux/amd64");

    let out = tempfile::tempdir().expect("tempdir");
    let (bundle, summary) = build_bundle(out.path(), cache_dir.path(), &images);
    assert_eq!(summary.count, 3);
    let (index, blobs, b) = bundle_registry(&bundle);
    let listed: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .expect("name"),
                m["digest"].as_str().expect("digest"),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("docker.io/library/app2:2.0", digest_of(&f.app2).as_str()),
            ("docker.io/library/multi:3", digest_of(&f.multi).as_str()),
            (
                "registry.example.com/team/app1:1.0",
                digest_of(&f.app1).as_str()
            ),
        ]
    );
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "amd64");
    // Blobs: app1 (manifest, config, 2 layers) + app2 (manifest, config, 1 new layer) +
    // multi (index, amd64 manifest, config; the shared layer again). The arm64 child and its
    // own blobs stay out.
    assert_eq!(blobs.len(), 4 + 3 + 3, "{:?}", blobs.keys());
    assert_eq!(summary.blobs, 10);
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    assert!(blobs.contains_key(&hex(&f.shared_layer)));
    assert!(!blobs.contains_key(&hex(&digest_of(&f.multi_arm64))));
    // Every blob is byte-identical to the source layout's.
    for (h, e) in &blobs {
        let src = std::fs::read(f.layout.dir.join("blobs/sha256").join(h)).expect("source blob");
        assert_eq!(read_entry(&b, e), src, "{h}");
        assert!(e.contiguous_raw().is_some(), "{h} is not stored raw");
    }
    let md = &summary.images;
    assert_eq!(md.len(), 3);
    assert_eq!(md[0].name, "docker.io/library/app2:2.0");
    assert_eq!(md[0].platform, "linux/amd64");
    assert_eq!(md[1].media_type, "application/vnd.oci.image.index.v1+json");
    assert!(md[1].size > busybox().len() as u64 / 4);
    // The layout is deterministic: the same images give the same bundle bytes.
    let out2 = tempfile::tempdir().expect("tempdir");
    let (bundle2, _) = build_bundle(out2.path(), cache_dir.path(), &images);
    assert_eq!(
        std::fs::read(&bundle).expect("read"),
        std::fs::read(&bundle2).expect("read")
    );
}

#[test]
fn images_multi_arch_selects_the_platform() {
    let f = fixture();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(
        cache_dir.path(),
        vec![ImageSource::OciLayout(f.layout.dir.clone())],
    );
    let got = collect(&[r("multi:3")], &arm64(), &opts).expect("collect");
    assert_eq!(got.len(), 1);
    let img = &got[0];
    assert_eq!(img.descriptor.digest, digest_of(&f.multi));
    assert_eq!(img.manifest.digest, digest_of(&f.multi_arm64));
    assert_eq!(img.platform.to_string(), "linux/arm64/v8");
    let (arm_cfg, arm_layers) = manifest_blobs(&f.layout, &f.multi_arm64);
    let (amd_cfg, _) = manifest_blobs(&f.layout, &f.multi_amd64);
    let digests: Vec<&str> = img.blobs.iter().map(|b| b.digest.as_str()).collect();
    assert!(digests.contains(&arm_cfg.as_str()));
    assert!(arm_layers.iter().all(|l| digests.contains(&l.as_str())));
    assert!(!digests.contains(&amd_cfg.as_str()));
    let cache = Cache::open(cache_dir.path()).expect("cache");
    assert!(!cache.blob_path(&amd_cfg).expect("path").exists());
    // A variant the index does not have is refused, naming what it has.
    let e = collect(
        &[r("multi:3")],
        &Platform::parse("linux/arm/v7").expect("platform"),
        &opts,
    )
    .expect_err("no arm/v7");
    let msg = e.to_string();
    assert!(msg.contains("docker.io/library/multi:3"), "{msg}");
    assert!(msg.contains("linux/arm/v7"), "{msg}");
    assert!(msg.contains("linux/amd64, linux/arm64/v8"), "{msg}");
    // The index digest still resolves, offline, from the layout. The cache holds nothing of
    // the layout's images, so without the layout it does not.
    let pinned = r(&format!("docker.io/library/multi@{}", digest_of(&f.multi)));
    let again = collect(std::slice::from_ref(&pinned), &arm64(), &opts).expect("pinned");
    assert_eq!(again[0].manifest.digest, digest_of(&f.multi_arm64));
    let e = collect(&[pinned], &arm64(), &offline(cache_dir.path(), Vec::new()))
        .expect_err("not in the cache");
    assert!(matches!(e, ImagesError::NotFound { .. }), "{e:?}");
}

#[test]
fn images_one_name_in_a_layout_per_platform_gives_each_platform_its_own() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut descs = Vec::new();
    let mut sources = Vec::new();
    for arch in ["amd64", "arm64"] {
        let mut layout = Layout::new(&tmp.path().join(format!("proxy-{arch}")));
        let l = layer(&[("etc/arch", arch.as_bytes(), 0o644)]);
        let d = layout.image(arch, &[l]);
        layout.tag(&d, "registry.k8s.io/kube-proxy:v1.36.3");
        descs.push(digest_of(&d));
        sources.push(ImageSource::OciLayout(layout.dir.clone()));
    }
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(cache_dir.path(), sources);
    let want = [r("registry.k8s.io/kube-proxy:v1.36.3")];
    for (platform, digest) in [(amd64(), &descs[0]), (arm64(), &descs[1])] {
        let got = collect(&want, &platform, &opts).expect("collect");
        assert_eq!(&got[0].manifest.digest, digest, "{platform}");
    }
    // A platform none of them has is refused as before, naming the first one's.
    let riscv = Platform::parse("linux/riscv64").expect("platform");
    let e = collect(&want, &riscv, &opts).expect_err("no riscv64");
    assert!(matches!(e, ImagesError::PlatformMismatch { .. }), "{e:?}");
}

#[test]
fn images_single_arch_platform_mismatch_is_refused() {
    let f = fixture();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(
        cache_dir.path(),
        vec![ImageSource::OciLayout(f.layout.dir.clone())],
    );
    let e = collect(&[r("registry.example.com/team/app1:1.0")], &arm64(), &opts)
        .expect_err("amd64 image for arm64");
    assert!(matches!(e, ImagesError::PlatformMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("registry.example.com/team/app1:1.0 is linux/amd64")
            && msg.contains("bundle is for linux/arm64"),
        "{msg}"
    );
    // Offline, an image no source has is an error naming it.
    let e = collect(&[r("nothere:1")], &amd64(), &opts).expect_err("missing");
    assert!(e.to_string().contains("docker.io/library/nothere:1"), "{e}");
}

#[test]
fn images_damaged_layout_blob_fails_the_bundle_and_is_never_kept() {
    let f = fixture();
    let (_, layers) = manifest_blobs(&f.layout, &f.app1);
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(
        cache_dir.path(),
        vec![ImageSource::OciLayout(f.layout.dir.clone())],
    );
    // Collecting opens the layers but does not read them: that happens once, into the bundle.
    let got =
        collect(&[r("registry.example.com/team/app1:1.0")], &amd64(), &opts).expect("collect");
    // The layout changes after the collect: same size, other content.
    let victim = f.layout.blob_path(&layers[1]);
    let mut data = std::fs::read(&victim).expect("read");
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(&victim, data).expect("write");
    let out = tempfile::tempdir().expect("tempdir");
    let e = try_build_bundle(out.path(), cache_dir.path(), &got).expect_err("damaged layer");
    let msg = e.to_string();
    assert!(
        msg.contains(&layers[1])
            && msg.contains("registry.example.com/team/app1:1.0")
            && msg.contains(&f.layout.dir.display().to_string())
            && msg.contains("damaged"),
        "{msg}"
    );
    let cache = Cache::open(cache_dir.path()).expect("cache");
    assert!(!cache.blob_path(&layers[1]).expect("path").exists());
    assert_eq!(std::fs::read_dir(out.path()).expect("out").count(), 0);
}

#[test]
fn images_from_a_layout_never_enter_the_cache() {
    let f = fixture();
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(
        cache_dir.path(),
        vec![ImageSource::OciLayout(f.layout.dir.clone())],
    );
    let refs = [
        r("registry.example.com/team/app1:1.0"),
        r("app2:2.0"),
        r("multi:3"),
    ];
    let got = collect(&refs, &amd64(), &opts).expect("collect");
    let out = tempfile::tempdir().expect("tempdir");
    let (bundle, summary) = build_bundle(out.path(), cache_dir.path(), &got);
    assert_eq!(summary.count, 3);
    let (_, blobs, b) = bundle_registry(&bundle);
    for (h, e) in &blobs {
        let src = std::fs::read(f.layout.dir.join("blobs/sha256").join(h)).expect("source blob");
        assert_eq!(read_entry(&b, e), src, "{h}");
    }
    let cached: Vec<_> = std::fs::read_dir(cache_dir.path().join("blobs/sha256"))
        .expect("cache blobs")
        .collect();
    assert!(cached.is_empty(), "{cached:?}");
    let cache = Cache::open(cache_dir.path()).expect("cache");
    assert_eq!(
        cache.lookup("docker.io/library/app2:2.0").expect("index"),
        None
    );
}

/// A tarball in the shape of classic `docker save`: `<id>/layer.tar` (uncompressed),
/// `<config>.json`, `manifest.json`, a layer deduplicated by a symlink, legacy metadata.
fn docker_save_tar(path: &Path, gzip: bool) -> (Vec<u8>, Vec<Vec<u8>>) {
    let l1 = plain_layer(&[("bin/busybox", &busybox(), 0o755)]);
    let l2 = plain_layer(&[("etc/hostname", b"saved", 0o644)]);
    let cfg = config("amd64", &[sha(&l1), sha(&l2), sha(&l1)]);
    let cfg_name = format!("{}.json", sha(&cfg).trim_start_matches("sha256:"));
    let manifest = serde_json::to_vec(&json!([{
        "Config": cfg_name,
        "RepoTags": ["saved/app:7", "localhost:5000/saved/app:latest"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar", "ccc/layer.tar"],
    }]))
    .expect("json");
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, name, data).expect("tar");
    };
    add("aaa/VERSION", b"1.0");
    add("aaa/json", b"{}");
    add("aaa/layer.tar", &l1);
    add("bbb/layer.tar", &l2);
    add(&cfg_name, &cfg);
    add("repositories", b"{}");
    add("manifest.json", &manifest);
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "ccc/layer.tar", "../aaa/layer.tar")
        .expect("symlink");
    let tar = b.into_inner().expect("tar");
    let data = if gzip {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        gz.finish().expect("gzip")
    } else {
        tar
    };
    std::fs::write(path, data).expect("write");
    (cfg, vec![l1, l2])
}

#[test]
fn images_docker_archive_made_by_hand() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for gzip in [false, true] {
        let path = tmp.path().join(if gzip { "app.tar.gz" } else { "app.tar" });
        let (cfg, layers) = docker_save_tar(&path, gzip);
        let src = ImageSource::detect(&path).expect("detect");
        assert_eq!(src, ImageSource::DockerArchive(path.clone()));
        let cache_dir = tempfile::tempdir().expect("tempdir");
        let opts = offline(cache_dir.path(), vec![src]);
        let got = collect(
            &[r("saved/app:7"), r("localhost:5000/saved/app")],
            &amd64(),
            &opts,
        )
        .expect("collect");
        assert_eq!(
            names(&got),
            ["docker.io/saved/app:7", "localhost:5000/saved/app:latest"]
        );
        assert_eq!(got[0].descriptor, got[1].descriptor);
        let cache = Cache::open(cache_dir.path()).expect("cache");
        let m: Value = serde_json::from_slice(
            &std::fs::read(cache.blob_path(&got[0].descriptor.digest).expect("path"))
                .expect("manifest"),
        )
        .expect("json");
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(m["config"]["digest"], sha(&cfg));
        let ls = m["layers"].as_array().expect("layers");
        assert_eq!(ls.len(), 3);
        for (l, want) in ls.iter().zip([&layers[0], &layers[1], &layers[0]]) {
            assert_eq!(l["mediaType"], "application/vnd.oci.image.layer.v1.tar");
            assert_eq!(l["digest"], sha(want));
            let stored = std::fs::read(
                cache
                    .blob_path(l["digest"].as_str().expect("digest"))
                    .expect("path"),
            )
            .expect("layer");
            assert_eq!(&stored, want, "layers stay byte-identical");
        }
        // The conversion is deterministic.
        let again = collect(&[r("saved/app:7")], &amd64(), &opts).expect("again");
        assert_eq!(again[0].descriptor, got[0].descriptor);
    }
}

#[test]
fn images_scan_dir_and_stem_tags() {
    let ctx = tempfile::tempdir().expect("tempdir");
    let images = ctx.path().join("images");
    std::fs::create_dir_all(&images).expect("mkdir");
    // A layout named like the image, tagged with a bare tag (what `oci:DIR:TAG` writes).
    let mut l = Layout::new(&images.join("busybox"));
    let base = layer(&[("bin/busybox", &busybox(), 0o755)]);
    let d = l.image("amd64", &[base]);
    l.tag(&d, "1.36");
    docker_save_tar(&images.join("saved.tar"), false);
    std::fs::write(images.join("README.md"), "not an image").expect("write");
    std::fs::write(images.join(".hidden.tar"), "x").expect("write");
    let sources = bale_bundler::images::context_sources(ctx.path()).expect("scan");
    assert_eq!(
        sources,
        [
            ImageSource::OciLayout(images.join("busybox")),
            ImageSource::DockerArchive(images.join("saved.tar")),
        ]
    );
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(cache_dir.path(), sources);
    let got = collect(&[r("busybox:1.36"), r("saved/app:7")], &amd64(), &opts).expect("collect");
    assert_eq!(got[0].descriptor.digest, digest_of(&d));
    assert_eq!(
        got[0].source,
        format!("OCI layout {}", images.join("busybox").display())
    );
    assert!(got[1].source.starts_with("docker-archive"));
    // Asked of that source alone, its only image tagged 1.36 answers to any name.
    let cache = Cache::open(cache_dir.path()).expect("cache");
    let alone = ImageSource::OciLayout(images.join("busybox"))
        .import(&cache, &amd64(), Some(&r("example.com/tools/bb:1.36")))
        .expect("explicit source");
    assert_eq!(alone[0].name, "example.com/tools/bb:1.36");
    assert_eq!(alone[0].descriptor.digest, digest_of(&d));
    // Searched among sources, a bare tag does not match an image of another name.
    let e = collect(&[r("other/busybox2:1.36")], &amd64(), &opts).expect_err("no match");
    assert!(
        e.to_string().contains("docker.io/other/busybox2:1.36"),
        "{e}"
    );
}

#[test]
fn images_skopeo_archives() {
    if missing(&["skopeo"]) {
        return;
    }
    let f = fixture();
    let tmp = tempfile::tempdir().expect("tempdir");
    let oci_ar = tmp.path().join("app1.oci.tar");
    let docker_ar = tmp.path().join("app1.docker.tar");
    let multi_ar = tmp.path().join("multi.oci.tar");
    // The layout's ref names contain ':' and '/', which skopeo's oci: syntax cannot take; give
    // it a copy tagged with plain tags.
    let mut plain = Layout::new(&tmp.path().join("plain"));
    copy_blobs(&f.layout.dir, &plain.dir);
    plain.tag(&f.app1, "app1");
    plain.tag(&f.multi, "multi");
    skopeo_copy(
        &plain.dir,
        "app1",
        &format!(
            "oci-archive:{}:registry.example.com/team/app1:1.0",
            oci_ar.display()
        ),
        &[],
    );
    skopeo_copy(
        &plain.dir,
        "app1",
        &format!(
            "docker-archive:{}:registry.example.com/team/app1:1.0",
            docker_ar.display()
        ),
        &[],
    );
    skopeo_copy(
        &plain.dir,
        "multi",
        &format!(
            "oci-archive:{}:docker.io/library/multi:3",
            multi_ar.display()
        ),
        &["--all"],
    );
    assert_eq!(
        ImageSource::detect(&oci_ar).expect("detect"),
        ImageSource::OciArchive(oci_ar.clone())
    );
    assert_eq!(
        ImageSource::detect(&docker_ar).expect("detect"),
        ImageSource::DockerArchive(docker_ar.clone())
    );
    let (app1_cfg, app1_layers) = manifest_blobs(&f.layout, &f.app1);

    // oci-archive: the same manifest, byte for byte.
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(
        cache_dir.path(),
        vec![ImageSource::OciArchive(oci_ar.clone())],
    );
    let got =
        collect(&[r("registry.example.com/team/app1:1.0")], &amd64(), &opts).expect("oci-archive");
    assert_eq!(got[0].descriptor.digest, digest_of(&f.app1));

    // docker-archive: the config as is, the layers byte-identical to what skopeo wrote (it
    // may have stored them decompressed: then each is its diff ID).
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(
        cache_dir.path(),
        vec![ImageSource::DockerArchive(docker_ar.clone())],
    );
    let got = collect(&[r("registry.example.com/team/app1:1.0")], &amd64(), &opts)
        .expect("docker-archive");
    let img = &got[0];
    let digests: Vec<&str> = img.blobs.iter().map(|b| b.digest.as_str()).collect();
    assert!(digests.contains(&app1_cfg.as_str()), "config kept as is");
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(f.layout.blob_path(&app1_cfg)).expect("cfg"))
            .expect("json");
    let diff_ids: Vec<&str> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("str"))
        .collect();
    let layer_ds: Vec<&str> = img.blobs[2..].iter().map(|b| b.digest.as_str()).collect();
    assert_eq!(layer_ds.len(), 2);
    for (i, l) in layer_ds.iter().enumerate() {
        assert!(
            *l == app1_layers[i] || *l == diff_ids[i],
            "layer {i}: {l} is neither the source layer nor its diff ID"
        );
    }

    // A multi-arch oci-archive: the wanted platform only, the index kept.
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(cache_dir.path(), vec![ImageSource::OciArchive(multi_ar)]);
    let got = collect(&[r("multi:3")], &arm64(), &opts).expect("multi oci-archive");
    assert_eq!(got[0].descriptor.digest, digest_of(&f.multi));
    assert_eq!(got[0].manifest.digest, digest_of(&f.multi_arm64));

    // Into a bundle, with the docker-archive image too: what they share (at least the
    // config) is stored once.
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let opts = offline(
        cache_dir.path(),
        vec![
            ImageSource::OciArchive(oci_ar),
            ImageSource::DockerArchive(docker_ar),
        ],
    );
    let mut got =
        collect(&[r("registry.example.com/team/app1:1.0")], &amd64(), &opts).expect("collect");
    // The docker-archive has the same image; import it under another name next to it.
    let cache = Cache::open(cache_dir.path()).expect("cache");
    let mut other = opts.sources[1]
        .import(
            &cache,
            &amd64(),
            Some(&r("registry.example.com/team/app1:1.0")),
        )
        .expect("import");
    other[0].name = "registry.example.com/team/app1-docker:1.0".into();
    got.append(&mut other);
    let out = tempfile::tempdir().expect("tempdir");
    let (bundle, summary) = build_bundle(out.path(), cache_dir.path(), &got);
    assert_eq!(summary.count, 2);
    let (_, blobs, _) = bundle_registry(&bundle);
    let unique: std::collections::BTreeSet<&str> = got
        .iter()
        .flat_map(|i| i.blobs.iter().map(|b| b.digest.as_str()))
        .collect();
    assert_eq!(blobs.len(), unique.len());
    assert!(blobs.len() < got[0].blobs.len() + got[1].blobs.len());
}

fn copy_blobs(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from.join("blobs/sha256")).expect("read") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join("blobs/sha256").join(e.file_name())).expect("copy");
    }
}
