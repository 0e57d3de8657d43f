//! `bale build -f Kubefile` end to end through the real `bale` binary: steps, metadata,
//! reproducibility, layering on a base bundle, images from the context, and errors.

mod common;

use bale_payload::format::{self, Entry, Kind};
use common::oci::*;
use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn build(args: &[&str]) -> Output {
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    bale(&all)
}

fn paths(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.path.as_str()).collect()
}

/// Compressible, not trivially so: several frames of 2 MiB.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 4 == 0 {
                x as u8
            } else {
                b'a' + (i % 7) as u8
            }
        })
        .collect()
}

fn read(path: &Path, e: &Entry) -> Vec<u8> {
    let b = bale_payload::Bundle::open(path).unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut b.open_entry(e).unwrap(), &mut out).unwrap();
    out
}

fn entry<'a>(entries: &'a [Entry], path: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} not in {:?}", paths(entries)))
}

fn scratch_context(dir: &Path) {
    write(
        &dir.join("Kubefile"),
        "ARG VERSION=0.1\n\
         ARG GREETING\n\
         FROM scratch\n\
         ENV APP_VERSION=$VERSION APP_PORT=8080\n\
         LABEL vendor=acme\n\
         COPY manifests manifests/\n\
         COPY etc/app.conf etc/\n\
         COPY scripts/*.sh scripts/\n\
         RUN echo \"generated $VERSION $GREETING\" > gen.txt && echo to-stdout && echo to-stderr >&2\n\
         COPY gen.txt etc/gen.txt\n\
         CMD sh scripts/a.sh\n\
         CMD [\"kubectl apply -f manifests/\", \"kubectl get cm c\"]\n",
    );
    write(
        &dir.join("manifests/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    write(&dir.join("manifests/sub/x.yaml"), "kind: List\n");
    write(&dir.join("etc/app.conf"), "port=8080\n");
    write(&dir.join("etc/other.conf"), "not copied\n");
    write(&dir.join("scripts/a.sh"), "echo a\n");
    write(&dir.join("scripts/b.sh"), "echo b\n");
    write(&dir.join("scripts/c.txt"), "not matched\n");
    std::fs::set_permissions(
        dir.join("scripts/a.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
}

#[test]
fn scratch_build_copies_runs_and_records_install_steps() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    scratch_context(&ctx);
    let out = d.path().join("app.bale");
    let o = build(&[
        "-f",
        s(&ctx.join("Kubefile")),
        "-t",
        "app:2.0",
        "--build-arg",
        "VERSION=0.2",
        "--build-arg",
        "GREETING=hello",
        "-o",
        s(&out),
        s(&ctx),
    ]);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("RUN[9] to-stdout"), "{err}");
    assert!(err.contains("RUN[9] to-stderr"), "{err}");

    let p = parts(&out);
    assert_eq!(
        paths(&p.entries),
        [
            ".bale",
            ".bale/sbom.cdx.json",
            "etc",
            "etc/app.conf",
            "etc/gen.txt",
            "manifests",
            "manifests/config.yaml",
            "manifests/sub",
            "manifests/sub/x.yaml",
            "scripts",
            "scripts/a.sh",
            "scripts/b.sh",
        ]
    );
    assert_eq!(entry(&p.entries, "scripts/a.sh").mode, 0o755);
    assert_eq!(
        read(&out, entry(&p.entries, "etc/gen.txt")),
        b"generated 0.2 hello\n"
    );
    let h = &p.header;
    assert_eq!((h.name.as_str(), h.version.as_str()), ("app", "2.0"));
    let m = &h.metadata;
    assert_eq!(
        m["install_steps"],
        json!([
            {"type": "cmd", "line": 11, "command": {"shell": "sh scripts/a.sh"}},
            // Sealer's exec-list CMD: shell commands run in order.
            {"type": "cmd", "line": 12, "command": {"shell": "kubectl apply -f manifests/"}},
            {"type": "cmd", "line": 12, "command": {"shell": "kubectl get cm c"}},
        ])
    );
    assert_eq!(m["env"], json!({"APP_PORT": "8080", "APP_VERSION": "0.2"}));
    assert_eq!(m["labels"], json!({"vendor": "acme"}));
    let text = std::fs::read(ctx.join("Kubefile")).unwrap();
    assert_eq!(
        m["kubefile"],
        json!(format!("sha256:{}", format::hex(&format::sha256(&text))))
    );
    assert!(m.get("layers").is_none());
    assert!(!m.contains_key("created_at"));
    ok(&bale(&["verify", s(&out)]));
}

#[test]
fn two_builds_give_the_same_bytes_and_skip_their_own_output() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    scratch_context(&ctx);
    // Everything, with the output inside the context: the output is never packed.
    write(
        &ctx.join("Kubefile"),
        "FROM scratch\nRUN printf 'x%.0s' 1 2 3 > gen.txt\nCOPY . /\nCMD true\n",
    );
    write(&ctx.join("big.bin"), data(5 << 20, 3));
    let out = ctx.join("app.bale");
    let args = ["-t", "app:1", "-o", s(&out), s(&ctx)];
    ok(&build(&args));
    let first = std::fs::read(&out).unwrap();
    ok(&build(&args));
    let second = std::fs::read(&out).unwrap();
    assert!(first == second, "two builds differ");
    let p = parts(&out);
    assert!(!paths(&p.entries).contains(&"app.bale"));
    assert!(paths(&p.entries).contains(&"gen.txt"));
    assert!(paths(&p.entries).contains(&"Kubefile"));
}

#[test]
fn an_app_on_a_base_bundle_reuses_the_base_frames() {
    let d = tempfile::tempdir().unwrap();
    let rt = d.path().join("runtime");
    write(
        &rt.join("Kubefile"),
        "FROM scratch\nCOPY bin/ bin/\nCOPY etc/ etc/\nENV RUNTIME=1\nCMD install-runtime\n",
    );
    write(&rt.join("bin/containerd"), data(5 << 20, 7));
    write(&rt.join("bin/runc"), data(100 << 10, 8));
    write(&rt.join("etc/base.conf"), "base\n");
    write(&rt.join("etc/keep.conf"), "keep\n");
    std::os::unix::fs::symlink("containerd", rt.join("bin/ctr")).unwrap();
    let app_ctx = d.path().join("app");
    std::fs::create_dir_all(&app_ctx).unwrap();
    let base = app_ctx.join("runtime.bale");
    // The base at a high level: recompressing at the app's level would change the frames.
    ok(&build(&[
        "-t",
        "runtime:1.0",
        "--level",
        "19",
        "-o",
        s(&base),
        s(&rt),
    ]));
    write(
        &app_ctx.join("Kubefile"),
        "FROM runtime.bale\nCOPY etc/base.conf etc/\nCOPY app/ app/\nCMD kubectl apply -f app/\n",
    );
    write(&app_ctx.join("etc/base.conf"), "overridden\n");
    write(&app_ctx.join("app/web.yaml"), "kind: List\n");
    let out = d.path().join("app.bale");
    ok(&build(&["-t", "app:1.0", "-o", s(&out), s(&app_ctx)]));
    ok(&bale(&["verify", s(&out)]));
    ok(&bale(&["verify", "--content", s(&out)]));

    let b = parts(&base);
    let a = parts(&out);
    assert_eq!(
        paths(&a.entries),
        [
            ".bale",
            ".bale/sbom.cdx.json",
            "app",
            "app/web.yaml",
            "bin",
            "bin/containerd",
            "bin/ctr",
            "bin/runc",
            "etc",
            "etc/base.conf",
            "etc/keep.conf",
        ]
    );
    assert_eq!(
        read(&out, entry(&a.entries, "etc/base.conf")),
        b"overridden\n"
    );
    assert_eq!(entry(&a.entries, "bin/ctr").target, "containerd");
    for path in ["bin/containerd", "bin/runc", "etc/keep.conf"] {
        let (be, ae) = (entry(&b.entries, path), entry(&a.entries, path));
        assert_eq!(be.sha256, ae.sha256, "{path}");
        assert_eq!(be.frames.len(), ae.frames.len(), "{path}");
        for (bf, af) in be.frames.iter().zip(&ae.frames) {
            assert_eq!(
                (bf.codec, bf.stored_len, bf.raw_len, bf.sha256),
                (af.codec, af.stored_len, af.raw_len, af.sha256),
                "{path}"
            );
            let bs = b.trailer.stub_len + bf.offset;
            let as_ = a.trailer.stub_len + af.offset;
            assert_eq!(
                &b.bytes[bs as usize..][..bf.stored_len as usize],
                &a.bytes[as_ as usize..][..af.stored_len as usize],
                "{path}"
            );
        }
    }
    assert!(entry(&a.entries, "bin/containerd")
        .frames
        .iter()
        .any(|f| f.codec == format::Codec::Zstd));
    let layers = &a.header.metadata["layers"];
    let base_bytes = &b.bytes[b.trailer.header_offset as usize..][..b.trailer.header_len as usize];
    assert_eq!(
        layers[0]["digest"],
        json!(format!(
            "sha256:{}",
            format::hex(&format::sha256(base_bytes))
        ))
    );
    assert_eq!(layers[0]["name"], json!("runtime"));
    assert_eq!(layers[0]["version"], json!("1.0"));
    assert_eq!(
        layers[0]["install_steps"][0]["command"]["shell"],
        json!("install-runtime")
    );
    assert_eq!(a.header.metadata["env"]["RUNTIME"], json!("1"));

    // A base damaged on disk stops the build as damaged (exit 3), naming the base, and
    // leaves no output behind.
    let rt_entry = entry(&b.entries, "bin/containerd");
    let at = (b.trailer.stub_len + rt_entry.frames[0].offset + 100) as usize;
    let mut damaged = b.bytes.clone();
    damaged[at] ^= 0x5a;
    std::fs::write(&base, &damaged).unwrap();
    let out2 = d.path().join("app2.bale");
    let o = build(&["-t", "app:1.0", "-o", s(&out2), s(&app_ctx)]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("runtime.bale"), "{e}");
    assert!(!out2.exists());
}

#[test]
fn failures_name_the_kubefile_line() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    write(&ctx.join("a.txt"), "a");
    let out = d.path().join("x.bale");
    let kf = ctx.join("Kubefile");

    write(
        &kf,
        "FROM scratch\nCOPY a.txt a.txt\nRUN echo before && exit 3\n",
    );
    let o = build(&["-o", s(&out), s(&ctx)]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains(":3: RUN failed with exit code 3"), "{e}");
    assert!(e.contains("RUN[3] before"), "{e}");
    assert!(!out.exists());

    write(&kf, "FROM scratch\nCOPPY a.txt a.txt\n");
    let o = build(&["-o", s(&out), s(&ctx)]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("Kubefile:2:"), "{e}");

    write(&kf, "FROM scratch\n\nCOPY missing/ dest/\n");
    let o = build(&["-o", s(&out), s(&ctx)]);
    let e = stderr(&o);
    assert!(
        e.contains("Kubefile:3:") && e.contains("does not exist"),
        "{e}"
    );

    write(&kf, "FROM base.bale\n");
    let o = build(&["-o", s(&out), s(&ctx)]);
    let e = stderr(&o);
    assert!(e.contains("Kubefile:1: FROM base.bale"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_directory_without_kubefile_is_still_packed() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    write(&tree.join("a/b.txt"), "b");
    let out = d.path().join("t.bale");
    ok(&build(&[s(&tree), "-o", s(&out)]));
    assert_eq!(
        paths(&parts(&out).entries),
        [".bale", ".bale/sbom.cdx.json", "a", "a/b.txt"]
    );
}

// ---- images ----

fn busybox() -> Option<Vec<u8>> {
    match std::fs::read("/bin/busybox") {
        Ok(b) => Some(b),
        Err(_) => {
            skip(&[], "/bin/busybox missing (apt-get install busybox-static)");
            None
        }
    }
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

fn image_context(ctx: &Path, bb: &[u8]) -> (Value, Value) {
    write(
        &ctx.join("Kubefile"),
        "FROM scratch\nCOPY manifests/ manifests/\nCMD kubectl apply -f manifests/\n",
    );
    write(
        &ctx.join("manifests/web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n    - name: web\n      image: busybox:1.36\n",
    );
    let l = Layout(ctx.join("images/busybox"));
    let amd = l.image("amd64", &[("bin/busybox", bb, 0o755)]);
    let arm = l.image("arm64", &[("bin/busybox", b"arm stand-in", 0o755)]);
    let idx = l.index(&[amd.clone(), arm.clone()]);
    l.tag(&idx, "docker.io/library/busybox:1.36");
    (amd, arm)
}

fn registry_index(path: &Path) -> (Value, Vec<Entry>) {
    let p = parts(path);
    let idx = read(path, entry(&p.entries, "registry/index.json"));
    (serde_json::from_slice(&idx).unwrap(), p.entries)
}

fn blob_names(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == Kind::Blob)
        .map(|e| format!("sha256:{}", e.path.rsplit('/').next().unwrap()))
        .collect()
}

#[test]
fn images_named_by_manifests_come_from_the_context() {
    let Some(bb) = busybox() else { return };
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    let (amd, arm) = image_context(&ctx, &bb);
    let cache = d.path().join("cache");

    let o = build(&["--list-images", s(&ctx)]);
    ok(&o);
    let listing = stdout(&o);
    assert!(
        listing.contains("docker.io/library/busybox:1.36"),
        "{listing}"
    );
    assert!(listing.contains("manifests/web.yaml"), "{listing}");
    assert!(listing.contains("1 image,"), "{listing}");

    let out = d.path().join("app.bale");
    ok(&build(&[
        "-t",
        "app:1",
        "--offline",
        "--image-cache",
        s(&cache),
        "-o",
        s(&out),
        s(&ctx),
    ]));
    ok(&bale(&["verify", "--content", s(&out)]));
    // The layout's blobs went into the bundle from the layout: none was copied into the cache.
    let cached: Vec<_> = std::fs::read_dir(cache.join("blobs/sha256"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(cached.is_empty(), "copied into the cache: {cached:?}");
    let (idx, entries) = registry_index(&out);
    assert_eq!(
        idx["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        json!("docker.io/library/busybox:1.36")
    );
    let blobs = blob_names(&entries);
    let (mine, other) = if host_arch() == "arm64" {
        (&arm, &amd)
    } else {
        (&amd, &arm)
    };
    assert!(blobs.contains(&mine["digest"].as_str().unwrap().to_string()));
    assert!(!blobs.contains(&other["digest"].as_str().unwrap().to_string()));
    assert!(paths(&entries).contains(&"registry/oci-layout"));
    assert!(!paths(&entries).iter().any(|p| p.starts_with("images")));
    let h = parts(&out).header;
    assert_eq!(h.counts.images, 1);
    assert_eq!(
        h.metadata["images"][0]["name"],
        json!("docker.io/library/busybox:1.36")
    );
    // The busybox binary is in a layer blob, stored raw.
    let layer = tar(&[("bin/busybox", &bb, 0o755)]);
    if host_arch() == "amd64" {
        assert!(blobs.contains(&sha(&layer)));
    }
}

/// The one of bale's two architectures that this host is not, as (kernel name, OCI name, ELF
/// machine number): the one a fake stub stands in for.
fn other_arch() -> Option<(&'static str, &'static str, u16)> {
    match std::env::consts::ARCH {
        "x86_64" => Some(("aarch64", "arm64", 183)),
        "aarch64" => Some(("x86_64", "amd64", 62)),
        _ => None,
    }
}

/// Just enough of an ELF header to pass for a program of ELF machine `machine` as a stub.
fn fake_stub(path: &Path, machine: u16) {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = 1;
    h[6] = 1;
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    write(path, h);
}

#[test]
fn one_bundle_per_platform_each_with_its_own_image() {
    let Some(bb) = busybox() else { return };
    let Some((other_kernel, other_oci, other_machine)) = other_arch() else {
        return skip(
            &[],
            "bale builds for x86_64 and aarch64 only, and this host is neither",
        );
    };
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    let (amd, arm) = image_context(&ctx, &bb);
    let stubs = d.path().join("stubs");
    fake_stub(&stubs.join(format!("bale-{other_kernel}")), other_machine);
    let outdir = d.path().join("out");
    std::fs::create_dir_all(&outdir).unwrap();
    let pattern = outdir.join("app-{arch}.bale");
    ok(&build(&[
        "-t",
        "app:1",
        "--offline",
        "--image-cache",
        s(&d.path().join("cache")),
        "--platform",
        "linux/amd64,linux/arm64",
        "--stub-dir",
        s(&stubs),
        "-o",
        s(&pattern),
        s(&ctx),
    ]));
    for (arch, kernel, mine, other) in [
        ("amd64", "x86_64", &amd, &arm),
        ("arm64", "aarch64", &arm, &amd),
    ] {
        let out = outdir.join(format!("app-{arch}.bale"));
        ok(&bale(&["verify", s(&out)]));
        let (_, entries) = registry_index(&out);
        let blobs = blob_names(&entries);
        assert!(blobs.contains(&mine["digest"].as_str().unwrap().to_string()));
        assert!(!blobs.contains(&other["digest"].as_str().unwrap().to_string()));
        let h = parts(&out).header;
        assert_eq!(h.arch, kernel);
        assert_eq!(h.metadata["platform"], json!(format!("linux/{arch}")));
    }

    // Without a stub for the other architecture, the error says where it looked.
    let o = build(&[
        "--offline",
        "--platform",
        &format!("linux/{other_oci}"),
        "-o",
        s(&outdir.join("x.bale")),
        s(&ctx),
    ]);
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(
        e.contains(&format!("bale-{other_kernel}")) && e.contains("--stub"),
        "{e}"
    );
}

/// Random bytes: a layer that does not compress, so its frames are stored raw.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `FROM base.bale` where both carry images: one file with both image sets in one registry
/// layout, the base's entries (files and blobs) copied as stored frames, the base's share of
/// the entries recorded, and the same bytes on a second build.
#[test]
fn an_app_with_images_on_a_base_with_images_merges_the_registries() {
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().join("cache");
    let shared_layer = tar(&[("usr/lib/libshared.so", &noise(3 << 20, 1), 0o644)]);
    let a_layer = tar(&[("bin/a", &data(3 << 20, 2), 0o755)]);
    let b_layer = tar(&[("bin/b", &noise(1 << 20, 3), 0o755)]);

    // The runtime: image A (shared layer + its own), a compressible file, install step.
    let rt = d.path().join("runtime");
    write(
        &rt.join("Kubefile"),
        "FROM scratch\nCOPY manifests/ manifests/\nCOPY bin/ bin/\nCMD install-runtime\n",
    );
    write(&rt.join("bin/containerd"), data(5 << 20, 7));
    write(
        &rt.join("manifests/a.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n    - {name: a, image: example.com/rt/a:1}\n",
    );
    let la = Layout(rt.join("images/a"));
    let a = la.image_of_layers(host_arch(), &[&shared_layer, &a_layer]);
    la.tag(&a, "example.com/rt/a:1");
    let app_ctx = d.path().join("app");
    let base = app_ctx.join("runtime.bale");
    std::fs::create_dir_all(&app_ctx).unwrap();
    ok(&build(&[
        "-t",
        "runtime:1.0",
        "--offline",
        "--image-cache",
        s(&cache),
        "--level",
        "19",
        "-o",
        s(&base),
        s(&rt),
    ]));

    // The app: image B shares a layer with A; its manifest names A too (kept from the base).
    write(
        &app_ctx.join("Kubefile"),
        "FROM runtime.bale\nCOPY manifests/ manifests/\nCMD kubectl apply -f manifests/b.yaml\n",
    );
    write(
        &app_ctx.join("manifests/b.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\nspec:\n  template:\n    spec:\n      initContainers:\n        - {name: a, image: example.com/rt/a:1}\n      containers:\n        - {name: b, image: example.com/app/b:2}\n",
    );
    let lb = Layout(app_ctx.join("images/b"));
    let b = lb.image_of_layers(host_arch(), &[&shared_layer, &b_layer]);
    lb.tag(&b, "example.com/app/b:2");
    let out = d.path().join("app.bale");
    let args = [
        "-t",
        "app:1.0",
        "--offline",
        "--image-cache",
        s(&cache),
        "-o",
        s(&out),
        s(&app_ctx),
    ];
    let o = build(&args);
    ok(&o);
    let log = stderr(&o);
    assert!(
        log.contains("image example.com/rt/a:1: already in the base runtime.bale, kept from there"),
        "{log}"
    );
    ok(&bale(&["verify", "--content", s(&out)]));

    let bp = parts(&base);
    let ap = parts(&out);
    // One index naming both images, sorted; each blob once.
    let (idx, entries) = registry_index(&out);
    let names: Vec<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["example.com/app/b:2", "example.com/rt/a:1"]);
    let digest_of = |name: &str| {
        idx["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == json!(name))
            .map(|m| m["digest"].clone())
            .unwrap()
    };
    assert_eq!(digest_of("example.com/rt/a:1"), a["digest"]);
    assert_eq!(digest_of("example.com/app/b:2"), b["digest"]);
    let blobs = blob_names(&entries);
    for layer in [&shared_layer, &a_layer, &b_layer] {
        assert_eq!(blobs.iter().filter(|x| **x == sha(layer)).count(), 1);
    }
    assert_eq!(ap.header.counts.images, 2);
    let listed: Vec<&str> = ap.header.metadata["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["example.com/app/b:2", "example.com/rt/a:1"]);

    // The base's files and blobs: the very frames the base stored, copied, never compressed
    // again; the build says how many it copied, and that is every distinct base frame kept.
    let mut kept_frames = std::collections::BTreeSet::new();
    for be in bp
        .entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::File | Kind::Blob))
    {
        if be.path == "registry/index.json"
            || be.path == "registry/oci-layout"
            || be.path == ".bale/sbom.cdx.json"
        {
            continue;
        }
        let ae = entry(&ap.entries, &be.path);
        assert_eq!((ae.kind, ae.sha256), (be.kind, be.sha256), "{}", be.path);
        for (bf, af) in be.frames.iter().zip(&ae.frames) {
            assert_eq!(
                (bf.codec, bf.sha256, bf.stored_len),
                (af.codec, af.sha256, af.stored_len)
            );
            kept_frames.insert(bf.offset);
        }
    }
    let copied = format!("FROM runtime.bale: {} frames (", kept_frames.len());
    assert!(log.contains(&copied), "want {copied:?} in {log}");
    // containerd was compressed at level 19 in the base: a recompression at 3 would differ.
    assert!(entry(&ap.entries, "bin/containerd")
        .frames
        .iter()
        .any(|f| f.codec == format::Codec::Zstd));

    // Which entries came from the base.
    let layers = &ap.header.metadata["layers"];
    assert_eq!(layers.as_array().unwrap().len(), 1);
    assert_eq!(layers[0]["name"], json!("runtime"));
    let from_base: Vec<&str> = layers[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // manifests/ itself is the app's (its COPY put the directory there), a.yaml the base's.
    let mut want = vec!["bin/".to_string(), "manifests/a.yaml".into()];
    for layer_or_blob in bp.entries.iter().filter(|e| e.kind == Kind::Blob) {
        want.push(layer_or_blob.path.clone());
    }
    want.sort();
    assert_eq!(from_base, want);
    assert_eq!(
        layers[0]["install_steps"][0]["command"]["shell"],
        json!("install-runtime")
    );

    // The same inputs, the same bytes.
    let again = d.path().join("again.bale");
    let mut args2 = args;
    args2[6] = s(&again);
    ok(&build(&args2));
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
        "rebuild differs"
    );

    // The merged layout is one valid OCI layout: skopeo reads both images from it.
    if std::process::Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok()
    {
        let x = d.path().join("x");
        ok(&bale(&["extract", s(&out), "--to", s(&x), "registry"]));
        for (name, desc) in [("example.com/rt/a:1", &a), ("example.com/app/b:2", &b)] {
            let o = std::process::Command::new("skopeo")
                .args([
                    "inspect",
                    "--raw",
                    &format!("oci:{}:{name}", s(&x.join("registry"))),
                ])
                .output()
                .unwrap();
            ok(&o);
            assert_eq!(json!(sha(&o.stdout)), desc["digest"], "{name}");
        }
    } else {
        skip(
            &[],
            "skopeo missing (apt-get install skopeo): the merged layout was not read by skopeo",
        );
    }

    // An app context holding another image under a name the base carries keeps the base's
    // (one name resolves to one image on site), and adds its other images.
    let lb2 = Layout(app_ctx.join("images/b"));
    let other_a = lb2.image_of_layers(host_arch(), &[&b_layer]);
    lb2.tag(&other_a, "example.com/rt/a:1");
    write(
        &app_ctx.join("manifests/b.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  containers:\n    - {name: a, image: example.com/rt/a:1}\n    - {name: c, image: example.com/app/c:1}\n",
    );
    let lc = Layout(app_ctx.join("images/c"));
    let c = lc.image_of_layers(host_arch(), &[&b_layer]);
    lc.tag(&c, "example.com/app/c:1");
    ok(&build(&args));
    ok(&bale(&["verify", s(&out)]));
    let (idx, _) = registry_index(&out);
    let named: Vec<(&str, &Value)> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap(),
                &m["digest"],
            )
        })
        .collect();
    assert_eq!(
        named,
        [
            ("example.com/app/c:1", &c["digest"]),
            ("example.com/rt/a:1", &a["digest"])
        ]
    );
}

/// `ADD` unpacks local tar archives (plain, gzip, zstd, xz, bzip2) into the destination as
/// Docker does, copies any other file as it is, and refuses URLs and unsafe archives with the
/// Kubefile line and the fix.
#[test]
fn add_unpacks_local_archives_and_copies_other_files() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    let tree = d.path().join("tree");
    write(&tree.join("bin/tool"), data(300 << 10, 5));
    std::fs::set_permissions(
        tree.join("bin/tool"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    write(&tree.join("etc/app/app.conf"), "port = 80\n");
    std::os::unix::fs::symlink("tool", tree.join("bin/tool-link")).unwrap();
    std::fs::hard_link(
        tree.join("etc/app/app.conf"),
        tree.join("etc/app/hard.conf"),
    )
    .unwrap();
    std::fs::create_dir_all(tree.join("var/empty")).unwrap();
    std::fs::create_dir_all(&ctx).unwrap();
    let mut have = vec![
        ("plain", "rt.tar", vec!["-cf"]),
        ("gz", "rt.tar.gz", vec!["-czf"]),
    ];
    for (name, file, flag, tool) in [
        ("zst", "rt.tar.zst", "--zstd", "zstd"),
        ("xz", "rt.tar.xz", "-J", "xz"),
        ("bz2", "rt.tbz", "-j", "bzip2"),
    ] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok()
        {
            have.push((name, file, vec![flag, "-cf"]));
        } else {
            skip(&[], &format!("{tool} missing: ADD of {file} not checked"));
        }
    }
    let mut kubefile = String::from("FROM scratch\n");
    for (name, file, flags) in &have {
        let mut args: Vec<&str> = flags.clone();
        let dest = ctx.join(file);
        args.extend([s(&dest), "-C", s(&tree), "."]);
        let o = std::process::Command::new("tar")
            .args(&args)
            .output()
            .unwrap();
        ok(&o);
        kubefile.push_str(&format!("ADD {file} rt-{name}/\n"));
    }
    // Not archives: a plain file, and a gzip file that holds no tar.
    write(&ctx.join("notes.txt"), "hello\n");
    let gz = std::process::Command::new("gzip")
        .arg("-c")
        .arg(ctx.join("notes.txt"))
        .output()
        .unwrap();
    write(&ctx.join("notes.txt.gz"), &gz.stdout);
    kubefile.push_str("ADD notes.txt notes.txt.gz doc/\n");
    write(&ctx.join("Kubefile"), &kubefile);
    let out = d.path().join("add.bale");
    ok(&build(&["-t", "add:1", "-o", s(&out), s(&ctx)]));
    ok(&bale(&["verify", "--content", s(&out)]));
    let p = parts(&out);
    for (name, _, _) in &have {
        let at = |rel: &str| format!("rt-{name}/{rel}");
        let tool = entry(&p.entries, &at("bin/tool"));
        assert_eq!(tool.kind, Kind::File);
        assert_eq!(tool.mode, 0o750, "{name}");
        assert_eq!(read(&out, tool), data(300 << 10, 5), "{name}");
        assert_eq!(entry(&p.entries, &at("bin/tool-link")).target, "tool");
        assert_eq!(
            read(&out, entry(&p.entries, &at("etc/app/hard.conf"))),
            b"port = 80\n"
        );
        assert_eq!(
            read(&out, entry(&p.entries, &at("etc/app/app.conf"))),
            b"port = 80\n"
        );
        assert_eq!(entry(&p.entries, &at("var/empty")).kind, Kind::Dir);
    }
    assert_eq!(read(&out, entry(&p.entries, "doc/notes.txt")), b"hello\n");
    assert_eq!(read(&out, entry(&p.entries, "doc/notes.txt.gz")), gz.stdout);

    // A URL: refused at its line, with the fix.
    write(
        &ctx.join("Kubefile"),
        "FROM scratch\nADD notes.txt doc/\nADD https://example.com/rt.tar.gz rt/\n",
    );
    let o = build(&["-t", "add:1", "-o", s(&out), s(&ctx)]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("Kubefile:3: ADD cannot download https://example.com/rt.tar.gz")
            && e.contains("download it in a RUN step"),
        "{e}"
    );

    // A member that climbs out with "..": refused, naming the member.
    write(&ctx.join("evil.tar"), tar(&[("../escape", b"x", 0o644)]));
    write(&ctx.join("Kubefile"), "FROM scratch\nADD evil.tar x/\n");
    let o = build(&["-t", "add:1", "-o", s(&out), s(&ctx)]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("Kubefile:2: ADD") && e.contains("\"../escape\" climbs out"),
        "{e}"
    );
}

#[test]
fn an_app_on_a_base_keeps_the_apps_the_base_launches() {
    let d = tempfile::tempdir().unwrap();
    let base_ctx = d.path().join("base");
    write(
        &base_ctx.join("Kubefile"),
        "FROM scratch\nCOPY web.yaml .\nAPP web local://web.yaml\nLAUNCH [\"web\"]\n",
    );
    write(&base_ctx.join("web.yaml"), "kind: List\n");
    let base = d.path().join("app").join("base.bale");
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    ok(&build(&["-t", "base:1.0", "-o", s(&base), s(&base_ctx)]));
    write(
        &d.path().join("app/Kubefile"),
        "FROM base.bale\nCMD echo app\n",
    );
    let out = d.path().join("app.bale");
    ok(&build(&[
        "-t",
        "app:1.0",
        "-o",
        s(&out),
        s(&d.path().join("app")),
    ]));
    let a = parts(&out);
    let m = &a.header.metadata;
    assert_eq!(m["schema"], json!(1));
    // The base's LAUNCH step travels in its layer, and the app it names with it.
    assert_eq!(
        m["layers"][0]["install_steps"][0],
        json!({"type": "launch", "line": 4, "app": "web"})
    );
    // The APP source travels in the bundle, in the app's directory, as sealer lays it out.
    assert_eq!(
        m["apps"]["web"]["sources"],
        json!(["application/apps/web/web.yaml"])
    );
    assert!(paths(&a.entries).contains(&"application/apps/web/web.yaml"));
}

/// Sealer's `${ARCH}`: each platform's bundle takes that platform's files, and an app's
/// sources travel in the bundle where its launch finds them.
#[test]
fn arch_in_copy_sources_gives_each_platform_its_files() {
    let Some((other_kernel, _, other_machine)) = other_arch() else {
        return skip(
            &[],
            "bale builds for x86_64 and aarch64 only, and this host is neither",
        );
    };
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    write(
        &ctx.join("Kubefile"),
        "FROM scratch\n\
         COPY ${ARCH}/bin bin\n\
         APP web local://app.yaml\n\
         LAUNCH [\"web\"]\n\
         CMD [\"kubectl get pods\", \"kubectl get svc\"]\n",
    );
    write(&ctx.join("amd64/bin/tool"), "x86 tool\n");
    write(&ctx.join("arm64/bin/tool"), "arm tool\n");
    write(&ctx.join("app.yaml"), "kind: List\n");
    let stubs = d.path().join("stubs");
    fake_stub(&stubs.join(format!("bale-{other_kernel}")), other_machine);
    let outdir = d.path().join("out");
    std::fs::create_dir_all(&outdir).unwrap();
    ok(&build(&[
        "-t",
        "app:1",
        "--offline",
        "--platform",
        "linux/amd64,linux/arm64",
        "--stub-dir",
        s(&stubs),
        "-o",
        s(&outdir.join("app-{arch}.bale")),
        s(&ctx),
    ]));
    for (arch, want) in [("amd64", "x86 tool\n"), ("arm64", "arm tool\n")] {
        let out = outdir.join(format!("app-{arch}.bale"));
        let p = parts(&out);
        assert_eq!(read(&out, entry(&p.entries, "bin/tool")), want.as_bytes());
        assert!(!paths(&p.entries)
            .iter()
            .any(|e| e.starts_with("amd64") || e.starts_with("arm64")));
        assert_eq!(
            read(&out, entry(&p.entries, "application/apps/web/app.yaml")),
            b"kind: List\n"
        );
        let m = &p.header.metadata;
        assert_eq!(
            m["apps"]["web"]["sources"],
            json!(["application/apps/web/app.yaml"])
        );
        assert_eq!(
            m["install_steps"],
            json!([
                {"type": "launch", "line": 4, "app": "web"},
                {"type": "cmd", "line": 5, "command": {"shell": "kubectl get pods"}},
                {"type": "cmd", "line": 5, "command": {"shell": "kubectl get svc"}},
            ])
        );
    }
}
