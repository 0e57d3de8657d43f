//! aarch64 bundles, built here with an aarch64 bale as stub and run by that aarch64 bale under
//! qemu-user: verified and extracted, and an amd64 + arm64 pair built from one Kubefile, each
//! serving its own architecture's image.
//!
//! Needs the release binary from `scripts/build-release.sh aarch64`, `qemu-aarch64-static` and
//! (for the pair) `skopeo`. `scripts/test.sh` provides them and sets BALE_REQUIRE_ALL=1, so
//! there a missing piece fails the test instead of skipping it (see `common::skip`).

mod common;

use common::oci::*;
use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[test]
fn aarch64_bundle_verifies_and_extracts_under_qemu() {
    let Some(arm) = aarch64_bale() else { return };
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let app = d.path().join("arm.bale");
    // Built on this host, for the other architecture.
    ok(&bale(&[
        "build",
        tree.to_str().unwrap(),
        "-o",
        app.to_str().unwrap(),
        "--stub",
        arm.to_str().unwrap(),
        "--name",
        "arm",
    ]));
    let o = bale(&["info", app.to_str().unwrap()]);
    ok(&o);
    assert!(
        stdout(&o).contains("arch:        aarch64"),
        "{}",
        stdout(&o)
    );

    // The bundle runs as an aarch64 program and acts on itself.
    let o = qemu(&app, &["info"]);
    ok(&o);
    assert!(stdout(&o).contains("arch:        aarch64"));
    let o = qemu(&app, &["verify"]);
    ok(&o);
    assert!(stdout(&o).contains(": OK,"), "{}", stdout(&o));
    let to = d.path().join("out");
    ok(&qemu(&app, &["extract", "--to", to.to_str().unwrap()]));
    assert_same_tree(&tree, &to);

    // And it catches damage the same way.
    let mut bytes = std::fs::read(&app).unwrap();
    let p = parts(&app);
    let tool = p.entries.iter().find(|e| e.path == "bin/tool").unwrap();
    bytes[(p.trailer.stub_len + tool.frames[0].offset + 5) as usize] ^= 1;
    let bad = d.path().join("bad.bale");
    std::fs::write(&bad, bytes).unwrap();
    let o = qemu(&arm, &["verify", bad.to_str().unwrap()]);
    damaged(&o, "entry \"bin/tool\" is damaged");
}

/// A registry server, stopped when the test is done with it (or fails).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bundle registry serve` on a free loopback port (under qemu for aarch64), and waits
/// until it answers.
fn serve(bundle: &Path, under_qemu: bool) -> (Server, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = if under_qemu {
        let mut c = Command::new("qemu-aarch64-static");
        c.arg(bundle);
        c
    } else {
        Command::new(bundle)
    };
    let mut server = Server(
        cmd.args(["registry", "serve", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the registry"),
    );
    // emulated, the program starts slower: give it room
    poll_until(
        Duration::from_millis(200),
        "the registry to answer",
        Duration::from_secs(120),
        || {
            if let Ok(Some(st)) = server.0.try_wait() {
                panic!("the registry of {} ended: {st}", bundle.display());
            }
            std::net::TcpStream::connect(&listen).is_ok()
        },
    );
    (server, port)
}

fn skopeo(args: &[&str]) -> String {
    let o = Command::new("skopeo")
        .args(args)
        .output()
        .expect("run skopeo");
    assert!(o.status.success(), "skopeo {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// One Kubefile, `--platform linux/amd64,linux/arm64`, real stubs for both architectures. Each
/// bundle runs as its own architecture's program, serves only its own architecture's image
/// under the original name from its built-in registry, and the program in that image runs.
#[test]
fn a_platform_pair_each_serves_and_runs_its_own_architecture() {
    let Some(arm) = aarch64_bale() else { return };
    if Command::new("skopeo").arg("--version").output().is_err() {
        return skip(&[REQUIRE_CROSS], "skopeo missing (apt-get install skopeo)");
    }
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path().join("ctx");
    write(
        &ctx.join("Kubefile"),
        "FROM scratch\nCOPY manifests/ manifests/\nCMD kubectl apply -f manifests/\n",
    );
    write(
        &ctx.join("manifests/tool.yaml"),
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: tool}\nspec:\n  template:\n    spec:\n      \
         restartPolicy: Never\n      containers:\n        - name: tool\n          \
         image: docker.io/tools/bale:1\n          args: [--version]\n",
    );
    // The image of each architecture carries that architecture's bale as its program.
    let layout = Layout(ctx.join("images/bale"));
    let programs = [
        std::fs::read(bale_bin()).unwrap(),
        std::fs::read(&arm).unwrap(),
    ];
    let layer_of = |program: &[u8]| sha(&tar(&[("bin/bale", program, 0o755)]));
    let amd = layout.image("amd64", &[("bin/bale", &programs[0], 0o755)]);
    let arm64 = layout.image("arm64", &[("bin/bale", &programs[1], 0o755)]);
    let idx = layout.index(&[amd, arm64]);
    let index_digest = idx["digest"].clone();
    layout.tag(&idx, "docker.io/tools/bale:1");
    let stubs = d.path().join("stubs");
    std::fs::create_dir_all(&stubs).unwrap();
    std::fs::copy(&arm, stubs.join("bale-aarch64")).unwrap();
    let out = d.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&bale(&[
        "build",
        "-t",
        "pair:1",
        "--offline",
        "--image-cache",
        &s(&d.path().join("cache")),
        "--platform",
        "linux/amd64,linux/arm64",
        "--stub-dir",
        &s(&stubs),
        "-o",
        &s(&out.join("pair-{arch}.bale")),
        &s(&ctx),
    ]));

    for (arch, kernel, layer, emulated) in [
        ("amd64", "x86_64", layer_of(&programs[0]), false),
        ("arm64", "aarch64", layer_of(&programs[1]), true),
    ] {
        let bundle = out.join(format!("pair-{arch}.bale"));
        let own = |args: &[&str]| {
            if emulated {
                qemu(&bundle, args)
            } else {
                run(&bundle, args)
            }
        };
        let o = own(&["info"]);
        ok(&o);
        assert!(
            stdout(&o).contains(&format!("arch:        {kernel}")),
            "{arch}: {}",
            stdout(&o)
        );
        ok(&own(&["verify"]));

        let (server, port) = serve(&bundle, emulated);
        let image = format!("docker://127.0.0.1:{port}/tools/bale:1");
        // asked as a client of that architecture asks
        let skopeo_as = |args: &[&str]| skopeo(&[&["--override-arch", arch], args].concat());
        let inspect: serde_json::Value =
            serde_json::from_str(&skopeo_as(&["inspect", "--tls-verify=false", &image])).unwrap();
        assert_eq!(inspect["Architecture"], arch, "{inspect}");
        // The name resolves to the source's own index (so digests pinned in manifests still
        // hold), and the platform manifest picked from it holds this architecture's layer.
        assert_eq!(inspect["Digest"], index_digest, "{arch}: {inspect}");
        assert_eq!(
            inspect["Layers"],
            serde_json::json!([layer]),
            "{arch}: {inspect}"
        );
        // The other architecture's manifest was left out of this bundle, and the registry says
        // so to a client that asks for it.
        let other = if emulated { "amd64" } else { "arm64" };
        let o = Command::new("skopeo")
            .args([
                "--override-arch",
                other,
                "inspect",
                "--tls-verify=false",
                &image,
            ])
            .output()
            .unwrap();
        assert!(
            !o.status.success() && stderr(&o).contains("is not in this bundle"),
            "{arch} bundle asked for {other}: {}",
            stderr(&o)
        );
        // The image's program, fetched from the bundle's registry, runs on its architecture.
        let fetched = d.path().join(format!("fetched-{arch}"));
        skopeo_as(&[
            "copy",
            "--src-tls-verify=false",
            &image,
            &format!("dir:{}", fetched.display()),
        ]);
        drop(server);
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fetched.join("manifest.json")).unwrap()).unwrap();
        let fetched_layer = manifest["layers"][0]["digest"].as_str().unwrap();
        let rootfs = d.path().join(format!("rootfs-{arch}"));
        std::fs::create_dir_all(&rootfs).unwrap();
        let untar = Command::new("tar")
            .arg("-xf")
            .arg(fetched.join(fetched_layer.trim_start_matches("sha256:")))
            .arg("-C")
            .arg(&rootfs)
            .output()
            .unwrap();
        ok(&untar);
        let program = rootfs.join("bin/bale");
        let o = if emulated {
            qemu(&program, &["--version"])
        } else {
            run(&program, &["--version"])
        };
        ok(&o);
        assert!(stdout(&o).starts_with("bale "), "{arch}: {}", stdout(&o));
    }
}
