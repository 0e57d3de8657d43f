//! Image reference parsing through the public API.

use bale_bundler::imageref::{ImageRef, ImageRefError};

const DIGEST: &str = "sha256:4aea012537edfad80f98d870a36e6b90b4c09b27be7f4b4759d72db863baeebb";

fn parse(s: &str) -> ImageRef {
    match ImageRef::parse(s) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn normalization_table() {
    let d = DIGEST;
    let cases = [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25.3", "docker.io/library/nginx:1.25.3"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("bitnami/redis:7.2", "docker.io/bitnami/redis:7.2"),
        (
            "index.docker.io/library/nginx:1",
            "docker.io/library/nginx:1",
        ),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        (
            "registry.k8s.io/coredns/coredns:v1.11.1",
            "registry.k8s.io/coredns/coredns:v1.11.1",
        ),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b", "localhost:5000/a/b:latest"),
        (
            "sea.hub:5000/library/nginx:1",
            "sea.hub:5000/library/nginx:1",
        ),
        (
            "quay.io/prometheus/node-exporter:v1.7.0",
            "quay.io/prometheus/node-exporter:v1.7.0",
        ),
        ("a/b/c/d:e", "docker.io/a/b/c/d:e"),
        (
            "my_org/my__app-x--y.z:TAG_1.0-rc",
            "docker.io/my_org/my__app-x--y.z:TAG_1.0-rc",
        ),
        ("192.168.1.10:5000/app:1", "192.168.1.10:5000/app:1"),
        ("MyRegistry/app", "MyRegistry/app:latest"),
    ];
    for (input, want) in cases {
        assert_eq!(parse(input).normalized(), want, "{input}");
    }
    assert_eq!(
        parse(&format!("nginx@{d}")).normalized(),
        format!("docker.io/library/nginx@{d}")
    );
    assert_eq!(
        parse(&format!("localhost:5000/a/b@{d}")).normalized(),
        format!("localhost:5000/a/b@{d}")
    );
    assert_eq!(
        parse(&format!("registry.k8s.io/pause:3.9@{d}")).normalized(),
        format!("registry.k8s.io/pause:3.9@{d}")
    );
}

#[test]
fn parts_and_original_are_kept() {
    let r = parse(&format!("localhost:5000/team/app:2.0@{DIGEST}"));
    assert_eq!(r.original, format!("localhost:5000/team/app:2.0@{DIGEST}"));
    assert_eq!(r.domain, "localhost:5000");
    assert_eq!(r.path, "team/app");
    assert_eq!(r.tag.as_deref(), Some("2.0"));
    assert_eq!(r.digest.as_deref(), Some(DIGEST));
    assert_eq!(r.name(), "localhost:5000/team/app");
    assert_eq!(r.effective_tag(), Some("2.0"));

    let r = parse("nginx");
    assert_eq!(
        (r.original.as_str(), r.tag.as_deref(), r.effective_tag()),
        ("nginx", None, Some("latest"))
    );
    assert_eq!(r.to_string(), "docker.io/library/nginx:latest");
    assert_eq!(parse(&format!("nginx@{DIGEST}")).effective_tag(), None);

    let via_fromstr: ImageRef = "redis:7".parse().expect("parses");
    assert_eq!(via_fromstr, parse("redis:7"));
    let json = serde_json::to_string(&via_fromstr).expect("json");
    assert_eq!(
        serde_json::from_str::<ImageRef>(&json).expect("back"),
        via_fromstr
    );
}

#[test]
fn errors_name_the_reference_and_the_rule() {
    let cases = [
        ("", "invalid image reference \"\": the reference is empty"),
        ("nginx ", "invalid image reference \"nginx \": it contains whitespace"),
        (":1.0", "invalid image reference \":1.0\": the repository name is missing"),
        ("nginx:", "invalid image reference \"nginx:\": the tag after ':' is empty"),
        (
            "Nginx:1",
            "invalid image reference \"Nginx:1\": repository names must be lowercase (\"Nginx\"); write \"nginx\"",
        ),
        (
            "nginx:.x",
            "invalid image reference \"nginx:.x\": tag \".x\" is not valid (letters, digits, _ . -; not starting with . or -)",
        ),
        (
            "nginx@sha256:1234",
            "invalid image reference \"nginx@sha256:1234\": a sha256 digest is 64 lowercase hex digits, got \"1234\"",
        ),
        (
            "nginx@latest",
            "invalid image reference \"nginx@latest\": digest \"latest\" must be algorithm:hex, e.g. sha256:<64 hex digits>",
        ),
        (
            "registry.k8s.io//pause",
            "invalid image reference \"registry.k8s.io//pause\": the repository path has an empty component (\"//\" or a trailing \"/\")",
        ),
        (
            "-bad.io/x",
            "invalid image reference \"-bad.io/x\": \"-bad.io\" is not a valid registry host[:port]",
        ),
        (
            "host.io:port/x",
            "invalid image reference \"host.io:port/x\": \"host.io:port\" has an invalid port \"port\"",
        ),
        (
            "a/b..c",
            "invalid image reference \"a/b..c\": \"b..c\" is not a valid repository name component (lowercase letters, digits and single separators . _ __ -)",
        ),
    ];
    for (input, want) in cases {
        let e: ImageRefError = ImageRef::parse(input).expect_err(input);
        assert_eq!(e.reference, input);
        assert_eq!(e.to_string(), want);
    }
    let long = format!("example.com/{}", "a".repeat(250));
    assert!(ImageRef::parse(&long)
        .expect_err("too long")
        .to_string()
        .ends_with("the name is longer than 255 characters"));
}
