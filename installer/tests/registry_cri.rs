//! containerd's CRI plugin, the path kubelet pulls through, against the bale registry: a
//! containerd of the test's own, configured by bale's own `config.toml` (private directories
//! swapped in) whose `config_path` holds hosts files rendered by bale, driven by bale's CRI
//! client. `ctr` reads the hosts files only when given `--hosts-dir` (registry_clients.rs);
//! the CRI plugin must find them through `config_path`, which only a CRI pull shows.
//!
//! The registry listens on 127.0.0.1 and is the very server `bale registry serve` runs. The
//! machine has no way out, so the negative control (the hosts file removed) must fail: the
//! pull went through the hosts file or not at all. containerd gets a closed loopback port as
//! its HTTPS proxy, so that an upstream attempt fails at once instead of waiting on DNS, and
//! nothing could leave the machine anyway (loopback itself is never proxied).
//!
//! Needs root and Debian's containerd (`scripts/test.sh` installs it); without them the test
//! skips, or fails under BALE_REQUIRE_ALL=1 or BALE_REQUIRE_TESTBED=1 (see
//! `registry_common::skip`).

// The registry crate's test helpers: the same fixture bundle and test containerd.
#[path = "../registry/tests/registry_common/mod.rs"]
mod registry_common;

/// Named so that `cargo test registry` selects these tests.
mod registry_cri {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use crate::registry_common::containerd::TestContainerd;
    use crate::registry_common::*;
    use bale_installer::node::containerd_config as cc;
    use bale_installer::node::cri::{CriClient, CriError};
    use bale_installer::node::runtime;
    use bale_payload::Bundle;
    use bale_registry::ServeOptions;

    /// The negative control must fail by itself well within this, not by the client's timeout.
    const NEGATIVE_BOUND: Duration = Duration::from_secs(20);

    /// bale's containerd config with the test's directories in place of the node's, and the
    /// plugins that would touch the host (or need what this machine lacks) disabled.
    fn private_config(d: &Path, cri: bool) -> String {
        let mut c = cc::render_config_toml(
            cc::CgroupDriver::detect(&bale_installer::node::host::HostRoot::system()),
            &cc::ConfigOptions::default(),
        );
        for (node, ours) in [
            (cc::SOCKET, d.join("c.sock")),
            (cc::ROOT_DIR, d.join("root")),
            (cc::STATE_DIR, d.join("state")),
            (cc::HOSTS_DIR, d.join("hosts")),
            (cc::CNI_BIN_DIR, d.join("cni-bin")),
            (cc::CNI_CONF_DIR, d.join("cni-conf")),
        ] {
            // Quoted, so that the state directory does not also match inside the socket path.
            let node = format!("\"{node}\"");
            assert_eq!(c.matches(&node).count(), 1, "{node} in:\n{c}");
            c = c.replace(&node, &format!("\"{}\"", ours.display()));
        }
        // Top-level keys must come before the first table.
        let at = c.find("\n[").expect("a table in the config") + 1;
        c.insert_str(
            at,
            "disabled_plugins = [\n\
             \x20 \"io.containerd.internal.v1.opt\",\n\
             \x20 \"io.containerd.snapshotter.v1.aufs\",\n\
             \x20 \"io.containerd.snapshotter.v1.btrfs\",\n\
             \x20 \"io.containerd.snapshotter.v1.devmapper\",\n\
             \x20 \"io.containerd.snapshotter.v1.zfs\",\n\
             \x20 \"io.containerd.tracing.processor.v1.otlp\",\n\
             ]\n\n",
        );
        if !cri {
            c = c.replacen(
                "disabled_plugins = [\n",
                "disabled_plugins = [\n  \"io.containerd.grpc.v1.cri\",\n",
                1,
            );
        }
        c.push_str(&format!(
            "\n[ttrpc]\n  address = \"{}\"\n[debug]\n  address = \"\"\n  level = \"info\"\n\
             [metrics]\n  address = \"\"\n",
            d.join("c.sock.ttrpc").display()
        ));
        c
    }

    /// A containerd of the test's own with bale's config: with its CRI plugin, or (`cri`
    /// false) with the plugin disabled.
    fn start_containerd(cri: bool) -> Result<TestContainerd, String> {
        TestContainerd::start(
            "bale-cri-",
            |d, _| {
                for sub in ["hosts", "cni-bin", "cni-conf"] {
                    std::fs::create_dir_all(d.join(sub)).map_err(|e| e.to_string())?;
                }
                Ok(private_config(d, cri))
            },
            |c| match (cri_of(c).version(), cri) {
                (Ok(_), true) | (Err(CriError::Unimplemented { .. }), false) => Ok(true),
                // Serving, but not as asked: waiting will not help.
                (Ok(_), false) => Err("the CRI plugin is not disabled".into()),
                (Err(e @ CriError::Unimplemented { .. }), true) => Err(format!("{e}\n{}", c.log())),
                _ => Ok(false),
            },
        )
    }

    fn cri_of(c: &TestContainerd) -> CriClient {
        CriClient::new(&c.socket)
    }

    fn hosts_dir(c: &TestContainerd) -> PathBuf {
        c.dir.path().join("hosts")
    }

    fn write_hosts(hosts: &Path, domain: &str, port: u16) {
        let d = hosts.join(domain);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("hosts.toml"),
            cc::render_hosts_toml(domain, port, None),
        )
        .unwrap();
    }

    /// What the runtime step's check pulls: the smallest image (busybox's one layer, not pause's
    /// two nor big's 5 MiB), ties by name; names not in the bundle come last.
    #[test]
    fn the_check_pulls_the_smallest_bundled_image() {
        let f = fixture();
        let bundle = Bundle::open(&f.bundle).unwrap();
        let entries = bundle.entries().unwrap();
        let names = runtime::bundled_image_names(&bundle, &entries).unwrap();
        assert_eq!(names.len(), 5, "{names:?}");
        let pick = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            runtime::smallest_image(&bundle, &names)
        };
        assert_eq!(
            runtime::smallest_image(&bundle, &names).as_deref(),
            Some("docker.io/library/busybox:1.36")
        );
        let pinned = format!("quay.io/library/busybox@{}", f.busybox);
        assert_eq!(
            pick(&[
                "registry.k8s.io/big:1",
                &pinned,
                "registry.k8s.io/pause:3.9"
            ]),
            Some(pinned.clone())
        );
        assert_eq!(
            pick(&[
                "docker.io/library/nothere:1",
                "registry.k8s.io/big:1",
                "registry.k8s.io/pause:3.9"
            ])
            .as_deref(),
            Some("registry.k8s.io/pause:3.9")
        );
        assert_eq!(
            pick(&["docker.io/library/nothere:1"]).as_deref(),
            Some("docker.io/library/nothere:1")
        );
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn cri_plugin_pulls_original_names_through_config_path() {
        if !is_root() {
            return skip(&[REQUIRE_TESTBED], "containerd needs root to run");
        }
        if !have("containerd") {
            return skip(
                &[REQUIRE_TESTBED],
                "containerd is not installed (apt-get install containerd)",
            );
        }
        let f = fixture();
        let s = start(f, ServeOptions::default());
        let ctrd = start_containerd(true).unwrap_or_else(|e| panic!("{e}"));
        let cri = cri_of(&ctrd);
        let log = |what: &str| format!("{what}\ncontainerd log:\n{}", ctrd.log());

        let v = cri
            .version()
            .unwrap_or_else(|e| panic!("{}", log(&e.to_string())));
        eprintln!(
            "CRI answers: {} {} (API {})",
            v.runtime_name, v.runtime_version, v.runtime_api_version
        );
        assert_eq!(v.runtime_name, "containerd");
        assert!(!v.runtime_version.is_empty());
        assert_eq!(v.runtime_api_version, "v1");

        // The image the runtime step's check pulls: the smallest, by its original name.
        let bundle = Bundle::open(&f.bundle).unwrap();
        let entries = bundle.entries().unwrap();
        let names = runtime::bundled_image_names(&bundle, &entries).unwrap();
        let image = runtime::smallest_image(&bundle, &names).expect("an image in the bundle");
        assert_eq!(image, "docker.io/library/busybox:1.36");

        let (domains, bad) = cc::registry_domains(names.iter().map(String::as_str));
        assert!(bad.is_empty(), "{bad:?}");
        for d in &domains {
            write_hosts(&hosts_dir(&ctrd), d, s.addr.port());
        }
        assert!(
            cri.image_status(&image).unwrap().is_none(),
            "a fresh containerd has {image}"
        );

        let t = Instant::now();
        let image_ref = cri
            .pull_image(&image)
            .unwrap_or_else(|e| panic!("{}", log(&e.to_string())));
        eprintln!("CRI pull of {image}: {image_ref} in {:?}", t.elapsed());
        // containerd answers with the image id, the digest of its config; the manifest's
        // digest shows in the image's repo digests.
        assert_eq!(image_ref, f.busybox_config);
        let reqs = s.requests();
        assert!(
            reqs.iter()
                .any(|r| r.path == "/v2/library/busybox/manifests/1.36"
                    && r.query.as_deref() == Some("ns=docker.io")
                    && r.status == 200),
            "the manifest did not come from the bale registry: {reqs:#?}"
        );
        let layer = format!("/v2/library/busybox/blobs/{}", f.busybox_layer);
        assert!(
            reqs.iter().any(|r| r.path == layer
                && r.method == "GET"
                && r.query.as_deref() == Some("ns=docker.io")
                && r.status == 200),
            "the layer did not come from the bale registry: {reqs:#?}"
        );

        let st = cri
            .image_status(&image)
            .unwrap()
            .unwrap_or_else(|| panic!("{image} is not there after its pull"));
        assert_eq!(st.id, image_ref);
        assert!(st.repo_tags.contains(&image), "{st:?}");
        let by_digest = format!("docker.io/library/busybox@{}", f.busybox);
        assert!(st.repo_digests.contains(&by_digest), "{st:?}");
        assert!(st.size > 0);

        // A multi-platform image: the CRI plugin picks this node's platform from the index.
        if cfg!(target_arch = "x86_64") {
            let pause = "registry.k8s.io/pause:3.9";
            let r = cri
                .pull_image(pause)
                .unwrap_or_else(|e| panic!("{}", log(&e.to_string())));
            assert_eq!(r, f.pause_config);
            let st = cri.image_status(pause).unwrap().expect("pause is there");
            let by_digest = format!("registry.k8s.io/pause@{}", f.pause_index);
            assert!(st.repo_digests.contains(&by_digest), "{st:?}");
        }

        // Negative control: without docker.io's hosts file the same registry's next name does
        // not come from the bale registry, though it holds it (same manifest, other tag).
        std::fs::remove_dir_all(hosts_dir(&ctrd).join("docker.io")).unwrap();
        let served = s.requests().len();
        let other = "docker.io/library/busybox:latest";
        let t = Instant::now();
        let e = cri
            .clone()
            .with_pull_timeout(NEGATIVE_BOUND)
            .pull_image(other)
            .expect_err("pulled without a hosts file: not through config_path");
        let took = t.elapsed();
        eprintln!("negative control: {other} failed in {took:?}: {e}");
        assert!(
            matches!(&e, CriError::Pull { image, .. } if image == other),
            "{}",
            log(&format!("not the pull failure expected: {e}"))
        );
        assert!(took < NEGATIVE_BOUND, "the failing pull took {took:?}");
        let after = s.requests();
        assert_eq!(
            after.len(),
            served,
            "the bale registry was asked without a hosts file: {:#?}",
            &after[served..]
        );
        assert!(cri.image_status(other).unwrap().is_none());
        // The image pulled before is still there: the failure was the name's, not the store's.
        assert!(cri.image_status(&image).unwrap().is_some());
        eprintln!("bale registry: {} requests served", after.len());
    }

    /// A containerd whose CRI plugin is off (as in many a stock config.toml) answers
    /// Unimplemented, and the client says so, naming the socket and the remedy.
    #[test]
    fn a_containerd_without_its_cri_plugin_is_told_apart() {
        if !is_root() {
            return skip(&[REQUIRE_TESTBED], "containerd needs root to run");
        }
        if !have("containerd") {
            return skip(
                &[REQUIRE_TESTBED],
                "containerd is not installed (apt-get install containerd)",
            );
        }
        let ctrd = start_containerd(false).unwrap_or_else(|e| panic!("{e}"));
        for e in [
            cri_of(&ctrd).version().unwrap_err(),
            cri_of(&ctrd)
                .pull_image("docker.io/library/busybox:1.36")
                .unwrap_err(),
        ] {
            let text = e.to_string();
            eprintln!("{text}");
            assert!(matches!(e, CriError::Unimplemented { .. }), "{text}");
            assert!(text.contains(&ctrd.socket.display().to_string()), "{text}");
            assert!(text.contains("disabled_plugins"), "{text}");
        }
    }
}
