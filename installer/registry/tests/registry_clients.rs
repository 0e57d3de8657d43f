//! The registry against the real clients that will use it: skopeo (inspect, copy to `dir:` and
//! `oci:` layouts, TLS with a verified certificate, basic auth) and containerd's `ctr` pulling
//! through a hosts directory mirror, from a containerd of the test's own.
//!
//! Nothing leaves the machine: the server listens on 127.0.0.1 and the hosts.toml upstream is
//! 127.0.0.1:1, where nothing listens, so any request that missed our mirror fails the pull.
//! A missing tool skips its test with the reason, or fails it under BALE_REQUIRE_ALL=1
//! (`scripts/test.sh` installs them and sets that; see `registry_common::skip`).

mod registry_common;

/// Named so that `cargo test registry` selects these tests.
mod registry_clients {
    use std::path::Path;
    use std::process::{Command, Output};
    use std::sync::Arc;

    use crate::registry_common::containerd::TestContainerd;
    use crate::registry_common::*;
    use bale_registry::{load_tls, Auth, ServeOptions};

    /// A client command with no proxy settings and a private home, so only the test's own
    /// configuration applies.
    fn client(tool: &str, home: &Path) -> Command {
        let mut c = Command::new(tool);
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            c.env_remove(v);
        }
        c.env("NO_PROXY", "*")
            .env("HOME", home)
            .env("XDG_RUNTIME_DIR", home)
            .env("REGISTRY_AUTH_FILE", home.join("auth.json"));
        c
    }

    fn out_text(o: &Output) -> String {
        format!(
            "status {:?}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }

    fn skopeo(home: &Path, args: &[&str]) -> Output {
        client("skopeo", home)
            .arg("--insecure-policy")
            .args(args)
            .output()
            .expect("run skopeo")
    }

    #[track_caller]
    fn ok(o: Output) -> Output {
        assert!(o.status.success(), "{}", out_text(&o));
        o
    }

    /// Every file of a `blobs/sha256` directory (or of a `dir:` copy) is byte-identical to the
    /// source blob of that digest; returns the digests seen.
    fn compare_blobs(dir: &Path, f: &Fixture) -> Vec<String> {
        let mut seen = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() != 64 {
                continue;
            }
            let d = format!("sha256:{name}");
            let data = std::fs::read(e.path()).unwrap();
            assert_eq!(
                sha(&data),
                d,
                "{} is not what its name says",
                e.path().display()
            );
            let src = f
                .blobs
                .get(&d)
                .unwrap_or_else(|| panic!("{d} is not in the source layout"));
            assert!(data == *src, "{d} differs from the source");
            seen.push(d);
        }
        seen.sort();
        seen
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn skopeo_inspects_and_copies_byte_identical_images() {
        if !have("skopeo") {
            return skip(&[], "skopeo is not installed (apt-get install skopeo)");
        }
        let f = fixture();
        if !f.real_busybox {
            return skip(
                &[],
                "/bin/busybox is missing (apt-get install busybox-static)",
            );
        }
        let s = start(f, ServeOptions::default());
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let host = s.addr.to_string();

        for (reference, digest) in [
            (format!("{host}/docker.io/library/busybox:1.36"), &f.busybox),
            (format!("{host}/busybox:latest"), &f.busybox),
            (
                format!("{host}/quay.io/library/busybox@{}", f.busybox),
                &f.busybox,
            ),
            (format!("{host}/pause:3.9"), &f.pause_index),
            (
                format!("{host}/registry.k8s.io/pause@{}", f.pause_amd64),
                &f.pause_amd64,
            ),
        ] {
            let o = ok(skopeo(
                h,
                &[
                    "inspect",
                    "--tls-verify=false",
                    "--raw",
                    &format!("docker://{reference}"),
                ],
            ));
            assert!(
                o.stdout == f.blob(digest),
                "{reference}: raw manifest differs"
            );
        }
        let o = ok(skopeo(
            h,
            &[
                "inspect",
                "--tls-verify=false",
                &format!("docker://{host}/docker.io/library/busybox:1.36"),
            ],
        ));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["Digest"], f.busybox.as_str());
        assert_eq!(j["Layers"], serde_json::json!([f.busybox_layer]));
        assert_eq!(j["RepoTags"], serde_json::json!(["1.36", "latest"]));
        assert_eq!(j["Architecture"], "amd64");

        // A Docker v2 image to a dir: copy keeps every byte as served.
        let out = h.join("busybox-dir");
        ok(skopeo(
            h,
            &[
                "copy",
                "--src-tls-verify=false",
                "--preserve-digests",
                &format!("docker://{host}/docker.io/library/busybox:1.36"),
                &format!("dir:{}", out.display()),
            ],
        ));
        assert!(std::fs::read(out.join("manifest.json")).unwrap() == f.blob(&f.busybox));
        assert_eq!(
            compare_blobs(&out, f),
            sorted(vec![f.busybox_config.clone(), f.busybox_layer.clone()])
        );

        // The multi-platform image to an OCI layout: the amd64 instance, byte for byte.
        let out = h.join("pause-oci");
        ok(skopeo(
            h,
            &[
                "--override-arch",
                "amd64",
                "--override-os",
                "linux",
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{host}/pause:3.9"),
                &format!("oci:{}:3.9", out.display()),
            ],
        ));
        let mut want = vec![f.pause_amd64.clone(), f.pause_config.clone()];
        want.extend(f.pause_layers.iter().cloned());
        assert_eq!(compare_blobs(&out.join("blobs/sha256"), f), sorted(want));
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(idx["manifests"][0]["digest"], f.pause_amd64.as_str());

        // All platforms cannot be had: the arm64 one is not in the bundle.
        let o = skopeo(
            h,
            &[
                "copy",
                "--all",
                "--src-tls-verify=false",
                &format!("docker://{host}/pause:3.9"),
                &format!("oci:{}:3.9", h.join("pause-all").display()),
            ],
        );
        assert!(!o.status.success(), "copying every platform succeeded");
        let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(err.contains("manifest unknown"), "{}", out_text(&o));
        let arm = format!("/v2/pause/manifests/{}", f.pause_arm64);
        assert!(s
            .requests()
            .iter()
            .any(|r| r.path == arm && r.status == 404));

        let reqs = s.requests();
        eprintln!("skopeo: {} requests served", reqs.len());
        assert!(reqs.iter().all(|r| r.status < 500));
    }

    #[test]
    fn skopeo_over_verified_tls_with_basic_auth() {
        if !have("skopeo") || !have("openssl") {
            return skip(&[], "skopeo or openssl is not installed");
        }
        let f = fixture();
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let certs = h.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        let (cert, key) = (certs.join("ca.crt"), h.join("key.pem"));
        let o = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", out_text(&o));
        let htpasswd = h.join("htpasswd");
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&htpasswd, format!("puller:{hash}\n")).unwrap();
        let s = start(
            f,
            ServeOptions {
                tls: Some(load_tls(&cert, &key).unwrap()),
                auth: Some(Arc::new(Auth::from_htpasswd(&htpasswd).unwrap())),
                ..ServeOptions::default()
            },
        );
        let image = format!("docker://{}/pause:3.9", s.addr);
        let certdir = format!("--cert-dir={}", certs.display());
        // The certificate is verified: this is HTTPS, with no fallback to plain HTTP.
        let o = ok(skopeo(
            h,
            &[
                "inspect",
                "--raw",
                &certdir,
                "--creds=puller:s3cret",
                &image,
            ],
        ));
        assert!(o.stdout == f.blob(&f.pause_index));
        let o = skopeo(h, &["inspect", "--raw", &certdir, &image]);
        assert!(!o.status.success(), "no credentials, yet served");
        let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
        assert!(
            err.contains("unauthorized") || err.contains("authentication required"),
            "{}",
            out_text(&o)
        );
        let o = skopeo(
            h,
            &["inspect", "--raw", &certdir, "--creds=puller:nope", &image],
        );
        assert!(!o.status.success(), "wrong password, yet served");
        let out = h.join("pause-tls");
        ok(skopeo(
            h,
            &[
                "--override-arch",
                "amd64",
                "--override-os",
                "linux",
                "copy",
                &format!("--src-{}", &certdir[2..]),
                "--src-creds=puller:s3cret",
                &image,
                &format!("oci:{}:3.9", out.display()),
            ],
        ));
        assert_eq!(compare_blobs(&out.join("blobs/sha256"), f).len(), 4);
        assert!(s.requests().iter().any(|r| r.status == 401));
    }

    /// A containerd of the test's own, with the CRI plugin off (this test pulls with `ctr`).
    fn start_containerd() -> Result<TestContainerd, String> {
        TestContainerd::start(
            "bale-ctrd-",
            |d, sock| {
                Ok(format!(
                    r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
"#,
                    root = d.join("root").display(),
                    state = d.join("state").display(),
                    sock = sock.display(),
                ))
            },
            |c| Ok(ctr(c, &["version"]).status.success()),
        )
    }

    fn ctr(c: &TestContainerd, args: &[&str]) -> Output {
        client("ctr", c.dir.path())
            .arg("--address")
            .arg(&c.socket)
            .args(["--namespace", "bale-test"])
            .args(args)
            .output()
            .expect("run ctr")
    }

    #[test]
    fn containerd_pulls_original_names_through_a_hosts_dir_mirror() {
        if !have("containerd") || !have("ctr") {
            return skip(
                &[],
                "containerd/ctr are not installed (apt-get install containerd)",
            );
        }
        if !is_root() {
            return skip(&[], "containerd needs root to run");
        }
        let f = fixture();
        if !f.real_busybox {
            return skip(
                &[],
                "/bin/busybox is missing (apt-get install busybox-static)",
            );
        }
        let s = start(f, ServeOptions::default());
        let ctrd = match start_containerd() {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let hosts = ctrd.dir.path().join("hosts");
        for upstream in ["docker.io", "registry.k8s.io"] {
            let d = hosts.join(upstream);
            std::fs::create_dir_all(&d).unwrap();
            // The upstream is a closed loopback port: only our mirror can answer.
            std::fs::write(
                d.join("hosts.toml"),
                format!(
                    "server = \"http://127.0.0.1:1\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                    s.addr
                ),
            )
            .unwrap();
        }
        let hosts_dir = hosts.to_string_lossy().into_owned();
        let pull = |image: &str| {
            let o = ctr(
                &ctrd,
                &[
                    "images",
                    "pull",
                    "--hosts-dir",
                    &hosts_dir,
                    "--platform",
                    "linux/amd64",
                    "--snapshotter",
                    "native",
                    image,
                ],
            );
            assert!(
                o.status.success(),
                "ctr pull {image}: {}\ncontainerd log:\n{}",
                out_text(&o),
                ctrd.log()
            );
        };

        pull("docker.io/library/busybox:1.36");
        let reqs = s.requests();
        let manifest = reqs
            .iter()
            .find(|r| r.path == "/v2/library/busybox/manifests/1.36")
            .expect("containerd asked for the manifest by tag");
        assert_eq!(manifest.query.as_deref(), Some("ns=docker.io"));
        assert_eq!(manifest.status, 200);
        let layer = format!("/v2/library/busybox/blobs/{}", f.busybox_layer);
        assert!(
            reqs.iter().any(|r| r.path == layer
                && r.method == "GET"
                && r.query.as_deref() == Some("ns=docker.io")
                && r.status == 200),
            "layer not fetched with ns=docker.io: {reqs:#?}"
        );
        for r in &reqs {
            eprintln!(
                "containerd -> {} {}?{} {}",
                r.method,
                r.path,
                r.query.as_deref().unwrap_or(""),
                r.status
            );
        }

        pull("registry.k8s.io/pause:3.9");
        let reqs = s.requests();
        let ns_k8s = Some("ns=registry.k8s.io");
        assert!(reqs
            .iter()
            .any(|r| r.path == "/v2/pause/manifests/3.9" && r.query.as_deref() == ns_k8s));
        let amd = format!("/v2/pause/manifests/{}", f.pause_amd64);
        assert!(reqs
            .iter()
            .any(|r| r.path == amd && r.query.as_deref() == ns_k8s && r.status == 200));
        assert!(
            !reqs.iter().any(|r| r.path.contains(&f.pause_arm64[7..])),
            "the arm64 manifest was asked for"
        );
        assert!(reqs.iter().all(|r| r.status < 500));

        let o = ctr(&ctrd, &["images", "ls"]);
        let ls = String::from_utf8_lossy(&o.stdout);
        for (name, digest) in [
            ("docker.io/library/busybox:1.36", &f.busybox),
            ("registry.k8s.io/pause:3.9", &f.pause_index),
        ] {
            assert!(
                ls.lines()
                    .any(|l| l.starts_with(name) && l.contains(digest.as_str())),
                "{name} @ {digest} not in:\n{ls}"
            );
        }
        let o = ctr(&ctrd, &["content", "ls", "-q"]);
        let content = String::from_utf8_lossy(&o.stdout);
        let mut want = vec![
            &f.busybox,
            &f.busybox_config,
            &f.busybox_layer,
            &f.pause_index,
            &f.pause_amd64,
            &f.pause_config,
        ];
        want.extend(f.pause_layers.iter());
        for d in want {
            assert!(
                content.lines().any(|l| l == d),
                "{d} not in containerd's store"
            );
        }
        // Unpacked: the snapshot holds the very busybox binary.
        let o = ctr(&ctrd, &["snapshots", "--snapshotter", "native", "ls"]);
        assert!(
            o.status.success() && String::from_utf8_lossy(&o.stdout).lines().count() > 1,
            "no snapshot: {}",
            out_text(&o)
        );
        let snapshots = ctrd
            .dir
            .path()
            .join("root/io.containerd.snapshotter.v1.native/snapshots");
        let found = std::fs::read_dir(&snapshots)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                std::fs::read(e.path().join("bin/busybox"))
                    .is_ok_and(|b| b == std::fs::read("/bin/busybox").unwrap_or_default())
            });
        assert!(found, "no unpacked snapshot holds bin/busybox");
        eprintln!("containerd: {} requests served", reqs.len());
    }

    /// Podman on a site that keeps the original names: `docker.io` is mirrored to the bale
    /// registry in registries.conf, and the image runs. Private storage (vfs, no mounts), config
    /// and registries files, so the machine's own podman set-up plays no part.
    #[test]
    fn podman_pulls_original_names_through_a_mirror_and_runs_the_image() {
        if !have("podman") {
            return skip(&[], "podman is not installed (apt-get install podman)");
        }
        if !is_root() {
            return skip(&[], "podman runs containers here only as root");
        }
        let f = fixture();
        if !f.real_busybox {
            return skip(
                &[],
                "/bin/busybox is missing (apt-get install busybox-static)",
            );
        }
        let s = start(f, ServeOptions::default());
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let storage = h.join("storage.conf");
        std::fs::write(
            &storage,
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                h.display()
            ),
        )
        .unwrap();
        let conf = h.join("containers.conf");
        std::fs::write(
            &conf,
            "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n\
             [containers]\nnetns = \"none\"\n",
        )
        .unwrap();
        // podman, unlike skopeo, wants the auth file `client` names to exist.
        std::fs::write(h.join("auth.json"), "{\"auths\": {}}").unwrap();
        let registries = h.join("registries.conf");
        // docker.io mirrored to `location`, the only registry podman may ask.
        let mirror_at = |location: &str| {
            std::fs::write(
                &registries,
                format!(
                    "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"docker.io\"\n\n\
                     [[registry.mirror]]\nlocation = \"{location}\"\ninsecure = true\n"
                ),
            )
            .unwrap()
        };
        mirror_at(&s.addr.to_string());
        let podman = |args: &[&str]| {
            client("podman", h)
                .env("CONTAINERS_STORAGE_CONF", &storage)
                .env("CONTAINERS_CONF", &conf)
                .env("CONTAINERS_REGISTRIES_CONF", &registries)
                .args(args)
                .output()
                .expect("run podman")
        };
        let image = "docker.io/library/busybox:1.36";
        ok(podman(&["pull", "--quiet", image]));
        let o = ok(podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Digest}}",
            image,
        ]));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), f.busybox);
        // The mirror answered under the name without its domain, as podman asks a mirror.
        let manifest = "/v2/library/busybox/manifests/1.36";
        assert!(
            s.requests()
                .iter()
                .any(|r| r.path == manifest && r.status == 200),
            "podman did not fetch {manifest} from the bale registry"
        );
        // Low rlimits: podman's default (nofile 1048576) is above this machine's hard limit.
        let o = ok(podman(&[
            "run",
            "--rm",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            image,
            "/bin/busybox",
            "echo",
            "hello from podman",
        ]));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("hello from podman"),
            "{}",
            out_text(&o)
        );
        // A name the bundle does not hold fails.
        let o = podman(&["pull", "--quiet", "docker.io/library/busybox:9.9"]);
        assert!(!o.status.success(), "pulled a tag the bundle lacks");
        // The mirror form that never depends on short names: the registry host in the path.
        ok(podman(&["rmi", "--all", "--force"]));
        mirror_at(&format!("{}/docker.io", s.addr));
        ok(podman(&["pull", "--quiet", image]));
        let full = "/v2/docker.io/library/busybox/manifests/1.36";
        assert!(
            s.requests()
                .iter()
                .any(|r| r.path == full && r.status == 200),
            "podman did not fetch {full}"
        );
        let reqs = s.requests();
        assert!(reqs.iter().all(|r| r.status < 500));
        eprintln!("podman: {} requests served", reqs.len());
        let _ = podman(&["rmi", "--all", "--force"]);
    }
}
