//! The registry's HTTP behaviour, byte for byte, over a plain TCP client: status codes,
//! headers, bodies, ranges, name resolution, errors, auth, and many clients at once.

mod registry_common;

/// Named so that `cargo test registry` selects these tests.
mod registry_http {
    use std::sync::Arc;

    use crate::registry_common::*;
    use bale_registry::{Auth, ServeOptions};

    fn server() -> (&'static Fixture, Server) {
        let f = fixture();
        (f, start(f, ServeOptions::default()))
    }

    #[track_caller]
    fn assert_error(r: &Resp, status: u16, code: &str) {
        assert_eq!(
            r.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.error_code(), code, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }

    /// The installer tests' skip rule (`registry_common::skip`), on this program.
    #[test]
    fn a_skip_fails_where_tests_must_run_and_is_loud_elsewhere() {
        check_the_skip_rule_on_this_program(REQUIRE_TESTBED);
    }

    #[test]
    fn base_endpoint() {
        let (_, s) = server();
        for path in ["/v2/", "/v2"] {
            let r = get(s.addr, path);
            assert_eq!(r.status, 200);
            assert_eq!(r.body, b"{}");
            assert_eq!(
                r.header("docker-distribution-api-version"),
                Some("registry/2.0")
            );
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
        let r = head(s.addr, "/v2/");
        assert_eq!((r.status, r.body.len()), (200, 0));
        assert_eq!(r.header("content-length"), Some("2"));
        assert_error(&get(s.addr, "/"), 404, "UNSUPPORTED");
        assert_error(&get(s.addr, "/v2x/"), 404, "UNSUPPORTED");
        assert_error(&get(s.addr, "/v2/pause/nothing/here"), 404, "UNSUPPORTED");
    }

    #[test]
    fn manifests_by_tag_and_digest_with_every_naming() {
        let (f, s) = server();
        let bb = f.blob(&f.busybox);
        let by_full = get(s.addr, "/v2/docker.io/library/busybox/manifests/1.36");
        assert_eq!(by_full.status, 200);
        assert_eq!(by_full.body, bb);
        assert_eq!(by_full.header("content-type"), Some(DOCKER_MANIFEST));
        assert_eq!(by_full.header("docker-content-digest"), Some(&*f.busybox));
        assert_eq!(
            by_full.header("content-length"),
            Some(&*bb.len().to_string())
        );

        let h = head(s.addr, "/v2/docker.io/library/busybox/manifests/1.36");
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty(), "HEAD sent a body");
        for k in ["content-type", "docker-content-digest", "content-length"] {
            assert_eq!(h.header(k), by_full.header(k), "{k}");
        }

        for target in [
            "/v2/library/busybox/manifests/1.36?ns=docker.io",
            "/v2/library/busybox/manifests/latest?ns=registry-1.docker.io",
            "/v2/busybox/manifests/latest",
            &format!("/v2/busybox/manifests/{}", f.busybox),
            &format!("/v2/quay.io/library/busybox/manifests/{}", f.busybox),
            &format!("/v2/library/busybox/manifests/{}?ns=quay.io", f.busybox),
        ] {
            let r = get(s.addr, target);
            assert_eq!(r.status, 200, "{target}");
            assert_eq!(r.body, bb, "{target}");
            assert_eq!(r.header("docker-content-digest"), Some(&*f.busybox));
        }

        // Two registries have library/busybox (podman and Docker ask a mirror without ns): a
        // tag or digest that only one of them holds, or that both hold with the same bytes,
        // is served; the tags list cannot choose and names both candidates.
        for target in [
            "/v2/library/busybox/manifests/1.36".to_string(),
            format!("/v2/library/busybox/manifests/{}", f.busybox),
            format!("/v2/library/busybox/blobs/{}", f.busybox_config),
        ] {
            let r = get(s.addr, &target);
            assert_eq!(r.status, 200, "{target}");
        }
        assert_eq!(get(s.addr, "/v2/library/busybox/manifests/1.36").body, bb);
        let r = get(s.addr, "/v2/library/busybox/tags/list");
        assert_error(&r, 404, "NAME_UNKNOWN");
        let msg = r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains("ambiguous")
                && msg.contains("docker.io/library/busybox")
                && msg.contains("quay.io/library/busybox"),
            "{msg}"
        );
        assert_error(
            &get(s.addr, "/v2/library/busybox/manifests/9.9"),
            404,
            "MANIFEST_UNKNOWN",
        );
        // quay.io only has it by digest; a mirror request for another registry finds nothing.
        assert_error(
            &get(s.addr, "/v2/library/busybox/manifests/1.36?ns=quay.io"),
            404,
            "MANIFEST_UNKNOWN",
        );
        assert_error(
            &get(s.addr, "/v2/library/busybox/manifests/1.36?ns=ghcr.io"),
            404,
            "NAME_UNKNOWN",
        );
        assert_error(
            &get(s.addr, "/v2/library/busybox/manifests/1.36?ns=bad/host"),
            400,
            "NAME_INVALID",
        );

        // The multi-platform index, its present child, and its absent one.
        let r = get(s.addr, "/v2/pause/manifests/3.9");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, f.blob(&f.pause_index));
        assert_eq!(r.header("content-type"), Some(OCI_INDEX));
        let r = get(
            s.addr,
            &format!("/v2/pause/manifests/{}?ns=registry.k8s.io", f.pause_amd64),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.body, f.blob(&f.pause_amd64));
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        let arm = format!("/v2/pause/manifests/{}", f.pause_arm64);
        assert_error(&get(s.addr, &arm), 404, "MANIFEST_UNKNOWN");
        let r = head(s.addr, &arm);
        assert_eq!((r.status, r.body.len()), (404, 0));
        // A manifest of another repository is not served under this one.
        assert_error(
            &get(s.addr, &format!("/v2/pause/manifests/{}", f.busybox)),
            404,
            "MANIFEST_UNKNOWN",
        );
        assert_error(
            &get(s.addr, "/v2/pause/manifests/3.10"),
            404,
            "MANIFEST_UNKNOWN",
        );
        assert_error(
            &get(s.addr, "/v2/pause/manifests/-x"),
            404,
            "MANIFEST_UNKNOWN",
        );
        assert_error(&get(s.addr, "/v2/nothere/manifests/1"), 404, "NAME_UNKNOWN");
    }

    #[test]
    fn untrusted_paths_are_refused() {
        let (f, s) = server();
        let hex = &f.pause_layers[1][7..];
        for (target, status, code) in [
            ("/v2/pause/blobs/sha256:abc", 400, "DIGEST_INVALID"),
            (
                &format!("/v2/pause/blobs/sha256:{}", hex.to_uppercase()),
                400,
                "DIGEST_INVALID",
            ),
            (
                &format!("/v2/pause/blobs/sha512:{hex}"),
                400,
                "DIGEST_INVALID",
            ),
            (&format!("/v2/pause/blobs/{hex}"), 400, "DIGEST_INVALID"),
            (
                "/v2/pause/blobs/sha256:../../../etc/passwd",
                400,
                "DIGEST_INVALID",
            ),
            (
                "/v2/pause/blobs/..%2F..%2Fetc%2Fpasswd",
                400,
                "DIGEST_INVALID",
            ),
            ("/v2/pause/manifests/sha256:xyz", 400, "DIGEST_INVALID"),
            ("/v2/Pause/manifests/3.9", 400, "NAME_INVALID"),
            ("/v2/a/../pause/manifests/3.9", 400, "NAME_INVALID"),
            ("/v2/%2e%2e/manifests/3.9", 400, "NAME_INVALID"),
            ("/v2//manifests/3.9", 400, "NAME_INVALID"),
            ("/v2/a%2Fb/tags/list", 400, "NAME_INVALID"),
        ] {
            let r = get(s.addr, target);
            assert_error(&r, status, code);
        }
    }

    #[test]
    fn blobs_whole_head_and_ranges() {
        let (f, s) = server();
        let layer = &f.pause_layers[1];
        let data = f.blob(layer);
        let url = format!("/v2/pause/blobs/{layer}");
        let r = get(s.addr, &url);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, data);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert_eq!(r.header("docker-content-digest"), Some(&**layer));
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert_eq!(r.header("content-length"), Some(&*data.len().to_string()));
        let h = head(s.addr, &url);
        assert_eq!(h.status, 200);
        assert!(h.body.is_empty());
        assert_eq!(h.header("content-length"), r.header("content-length"));
        assert_eq!(h.header("docker-content-digest"), Some(&**layer));
        // HEAD ignores Range.
        let h = request(s.addr, "HEAD", &url, &[("Range", "bytes=0-1")]);
        assert_eq!(h.status, 200);
        assert_eq!(h.header("content-length"), r.header("content-length"));

        // The multi-frame blob, across chunk (256 KiB) and frame (2 MiB) boundaries.
        let big = f.blob(&f.big_layer);
        let len = big.len() as u64;
        let url = format!("/v2/registry.k8s.io/big/blobs/{}", f.big_layer);
        let r = get(s.addr, &url);
        assert_eq!(r.status, 200);
        assert!(r.body == big, "big blob differs");
        for (spec, a, b) in [
            ("bytes=0-9".to_string(), 0, 9),
            ("bytes=262140-2097160".to_string(), 262140, 2097160),
            (format!("bytes={}-", len - 5), len - 5, len - 1),
            ("bytes=-100".to_string(), len - 100, len - 1),
            (format!("bytes=-{}", len + 7), 0, len - 1),
            (format!("bytes=4194300-{}", len + 1000), 4194300, len - 1),
            (format!("bytes={0}-{0}", len - 1), len - 1, len - 1),
        ] {
            let r = request(s.addr, "GET", &url, &[("Range", &spec)]);
            assert_eq!(r.status, 206, "{spec}");
            assert_eq!(
                r.header("content-range"),
                Some(&*format!("bytes {a}-{b}/{len}")),
                "{spec}"
            );
            assert_eq!(
                r.header("content-length"),
                Some(&*(b - a + 1).to_string()),
                "{spec}"
            );
            assert!(
                r.body == big[a as usize..=b as usize],
                "{spec}: wrong bytes"
            );
            assert_eq!(r.header("docker-content-digest"), Some(&*f.big_layer));
        }
        for spec in [
            format!("bytes={len}-"),
            format!("bytes={}-{}", len + 1, len + 5),
            "bytes=10-5".to_string(),
            "bytes=-0".to_string(),
            "bytes=x-y".to_string(),
            "bytes=5".to_string(),
        ] {
            let r = request(s.addr, "GET", &url, &[("Range", &spec)]);
            assert_eq!(r.status, 416, "{spec}");
            assert_eq!(
                r.header("content-range"),
                Some(&*format!("bytes */{len}")),
                "{spec}"
            );
        }
        // Other units and several ranges: the whole blob, as RFC 9110 allows.
        for spec in ["items=0-5", "bytes=0-1,4-5"] {
            let r = request(s.addr, "GET", &url, &[("Range", spec)]);
            assert_eq!(r.status, 200, "{spec}");
            assert_eq!(r.body.len(), big.len());
        }

        // Present in the bundle, but not part of this repository's images.
        assert_error(
            &get(s.addr, &format!("/v2/pause/blobs/{}", f.big_layer)),
            404,
            "BLOB_UNKNOWN",
        );
        let unknown = sha(b"not in the bundle");
        assert_error(
            &get(s.addr, &format!("/v2/pause/blobs/{unknown}")),
            404,
            "BLOB_UNKNOWN",
        );
        let h = head(s.addr, &format!("/v2/pause/blobs/{unknown}"));
        assert_eq!((h.status, h.body.len()), (404, 0));
        assert_error(
            &get(s.addr, &format!("/v2/nothere/blobs/{unknown}")),
            404,
            "NAME_UNKNOWN",
        );
        // Manifests are blobs too.
        let r = get(s.addr, &format!("/v2/busybox/blobs/{}", f.busybox));
        assert_eq!((r.status, &r.body[..]), (200, f.blob(&f.busybox)));
    }

    /// Finding F23: a request without Host, and one with both Content-Length and
    /// Transfer-Encoding, were answered like any other.
    #[test]
    fn requests_without_host_or_with_two_lengths_are_refused() {
        let (_, srv) = server();
        let without_host = request_raw(srv.addr, b"GET /v2/ HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_error(&without_host, 400, "UNSUPPORTED");
        let two_hosts = request_raw(
            srv.addr,
            b"GET /v2/ HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        );
        assert_error(&two_hosts, 400, "UNSUPPORTED");
        // The smuggled second request must not be answered: the connection ends after the 400.
        let smuggled = format!(
            "GET /v2/ HTTP/1.1\r\nHost: {}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
             0\r\n\r\nGET /v2/_catalog HTTP/1.1\r\nHost: x\r\n\r\n",
            srv.addr
        );
        let r = request_raw(srv.addr, smuggled.as_bytes());
        assert_error(&r, 400, "UNSUPPORTED");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(
            !String::from_utf8_lossy(&r.body).contains("HTTP/1.1"),
            "a second response followed: {}",
            String::from_utf8_lossy(&r.body)
        );
        // HTTP/1.0 needs no Host, and a well-formed HTTP/1.1 request is still served.
        let old = request_raw(srv.addr, b"GET /v2/ HTTP/1.0\r\n\r\n");
        assert_eq!(old.status, 200);
        assert_eq!(get(srv.addr, "/v2/").status, 200);
        assert!(srv.requests().iter().all(|r| r.path != "/v2/_catalog"));
    }

    #[test]
    fn writes_are_refused() {
        let (f, s) = server();
        for (method, target) in [
            ("PUT", "/v2/pause/manifests/3.9".to_string()),
            ("DELETE", format!("/v2/pause/manifests/{}", f.pause_index)),
            ("DELETE", format!("/v2/pause/blobs/{}", f.pause_config)),
            ("POST", "/v2/pause/blobs/uploads/".to_string()),
            ("PATCH", "/v2/pause/blobs/uploads/1234".to_string()),
            (
                "PUT",
                "/v2/pause/blobs/uploads/1234?digest=sha256:00".to_string(),
            ),
            ("OPTIONS", "/v2/".to_string()),
        ] {
            let r = request(s.addr, method, &target, &[("Content-Length", "0")]);
            assert_error(&r, 405, "UNSUPPORTED");
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method} {target}");
        }
        assert_error(
            &get(s.addr, "/v2/pause/blobs/uploads/1234"),
            405,
            "UNSUPPORTED",
        );
    }

    #[test]
    fn catalog_and_tags_with_pagination() {
        let (_, s) = server();
        let all = [
            "docker.io/library/busybox",
            "quay.io/library/busybox",
            "registry.k8s.io/big",
            "registry.k8s.io/pause",
        ];
        let r = get(s.addr, "/v2/_catalog");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["repositories"], serde_json::json!(all));
        assert_eq!(r.header("link"), None);
        let r = get(s.addr, "/v2/_catalog?n=2");
        assert_eq!(r.json()["repositories"], serde_json::json!(all[..2]));
        assert_eq!(
            r.header("link"),
            Some("</v2/_catalog?n=2&last=quay.io/library/busybox>; rel=\"next\"")
        );
        let r = get(s.addr, "/v2/_catalog?n=2&last=quay.io/library/busybox");
        assert_eq!(r.json()["repositories"], serde_json::json!(all[2..]));
        assert_eq!(r.header("link"), None);
        let r = get(s.addr, "/v2/_catalog?n=0");
        assert_eq!(r.json()["repositories"], serde_json::json!([]));
        assert_error(
            &get(s.addr, "/v2/_catalog?n=many"),
            400,
            "PAGINATION_NUMBER_INVALID",
        );

        let r = get(s.addr, "/v2/library/busybox/tags/list?ns=docker.io");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            serde_json::json!({"name": "library/busybox", "tags": ["1.36", "latest"]})
        );
        let r = get(s.addr, "/v2/docker.io/library/busybox/tags/list?n=1");
        assert_eq!(r.json()["tags"], serde_json::json!(["1.36"]));
        assert_eq!(
            r.header("link"),
            Some("</v2/docker.io/library/busybox/tags/list?n=1&last=1.36>; rel=\"next\"")
        );
        let r = get(s.addr, "/v2/library/busybox/tags/list?ns=quay.io");
        assert_eq!(r.json()["tags"], serde_json::json!([]));
        assert_eq!(
            get(s.addr, "/v2/pause/tags/list").json()["tags"],
            serde_json::json!(["3.9"])
        );
        assert_error(
            &get(s.addr, "/v2/library/busybox/tags/list"),
            404,
            "NAME_UNKNOWN",
        );
        assert_error(&get(s.addr, "/v2/nothere/tags/list"), 404, "NAME_UNKNOWN");
    }

    #[test]
    fn basic_auth_guards_every_path() {
        let f = fixture();
        let s = start(
            f,
            ServeOptions {
                auth: Some(Arc::new(Auth::single("puller", "s3cret"))),
                ..ServeOptions::default()
            },
        );
        use base64::Engine as _;
        let cred = |u: &str, p: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let good = cred("puller", "s3cret");
        let blob = format!("/v2/pause/blobs/{}", f.pause_config);
        for target in ["/v2/", "/v2/_catalog", "/v2/pause/manifests/3.9", &blob] {
            let r = get(s.addr, target);
            assert_error(&r, 401, "UNAUTHORIZED");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Basic realm=\"bale registry\"")
            );
            let r = request(
                s.addr,
                "GET",
                target,
                &[("Authorization", &cred("puller", "no"))],
            );
            assert_eq!(r.status, 401, "{target}");
            let r = request(
                s.addr,
                "GET",
                target,
                &[("Authorization", &cred("x", "s3cret"))],
            );
            assert_eq!(r.status, 401, "{target}");
            let r = request(s.addr, "GET", target, &[("Authorization", "Bearer abc")]);
            assert_eq!(r.status, 401, "{target}");
            let r = request(s.addr, "GET", target, &[("Authorization", &good)]);
            assert_eq!(r.status, 200, "{target}");
        }
        let r = head(s.addr, "/v2/");
        assert_eq!((r.status, r.body.len()), (401, 0));
        assert!(r.header("www-authenticate").is_some());
        let r = request(s.addr, "GET", &blob, &[("Authorization", &good)]);
        assert_eq!(r.body, f.blob(&f.pause_config));
        // Writes are refused after authentication, not instead of it.
        let r = request(s.addr, "DELETE", &blob, &[("Content-Length", "0")]);
        assert_eq!(r.status, 401);
        let r = request(
            s.addr,
            "DELETE",
            &blob,
            &[("Authorization", &good), ("Content-Length", "0")],
        );
        assert_eq!(r.status, 405);
    }

    #[test]
    fn many_clients_at_once_get_exact_bytes() {
        let (f, s) = server();
        let big = f.blob(&f.big_layer);
        let want = sha(big);
        let url = format!("/v2/registry.k8s.io/big/blobs/{}", f.big_layer);
        let addr = s.addr;
        let threads: Vec<_> = (0..24)
            .map(|i| {
                let url = url.clone();
                let want = want.clone();
                std::thread::spawn(move || {
                    let r = if i % 3 == 0 {
                        request(
                            addr,
                            "GET",
                            &url,
                            &[("Range", &format!("bytes={}-", i * 1000))],
                        )
                    } else {
                        get(addr, &url)
                    };
                    assert!(r.status == 200 || r.status == 206);
                    if r.status == 200 {
                        assert_eq!(sha(&r.body), want);
                    }
                    r.body.len()
                })
            })
            .collect();
        let mut total = 0;
        for t in threads {
            total += t.join().unwrap();
        }
        let whole = big.len();
        let expect: usize = (0..24)
            .map(|i| if i % 3 == 0 { whole - i * 1000 } else { whole })
            .sum();
        assert_eq!(total, expect);
        assert_eq!(s.requests().iter().filter(|r| r.path == url).count(), 24);
    }

    #[test]
    fn a_bundle_without_images_serves_an_empty_catalog() {
        let f = fixture();
        let path = f.dir.join("no-images.bale");
        let mut w = bale_payload::BundleWriter::create(
            &path,
            &f.bundle,
            bale_payload::BundleMeta::default(),
            bale_payload::WriteOptions {
                threads: 1,
                ..Default::default()
            },
        )
        .unwrap();
        w.add_bytes("etc/x", 0o644, b"x").unwrap();
        w.finish().unwrap();
        let bundle = bale_payload::Bundle::open(&path).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = bale_registry::spawn(&bundle, vec![l], ServeOptions::default()).unwrap();
        assert_eq!(get(addr, "/v2/").status, 200);
        assert_eq!(
            get(addr, "/v2/_catalog").json(),
            serde_json::json!({"repositories": []})
        );
        assert_error(&get(addr, "/v2/pause/manifests/3.9"), 404, "NAME_UNKNOWN");
        h.stop().unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still listening after stop"
        );
    }

    #[test]
    fn serve_refuses_an_address_it_cannot_bind() {
        let f = fixture();
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let options = bale_registry::RegistryOptions {
            bundle: Some(f.bundle.clone()),
            listen: vec![busy.local_addr().unwrap()],
            max_connections: 4,
            ..bale_registry::RegistryOptions::default()
        };
        let err = format!("{:#}", bale_registry::serve(options).unwrap_err());
        assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
    }
}
