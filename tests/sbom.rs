//! The SBOM every build writes (`.bale/sbom.cdx.json`), through the real `bale` binary: what it
//! lists (files with the digests `sha256sum` gives, images with their manifest and layer
//! digests, Debian packages of a layer and of the tree, Go modules of a Go binary, the base and
//! the Kubernetes version), that a CycloneDX validator accepts it, that builds stay
//! reproducible, and that a tampered SBOM is caught.

mod common;

use common::oci::*;
use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const SBOM: &str = ".bale/sbom.cdx.json";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

const STATUS_D: &str = "Package: busybox-static\nVersion: 1:1.36.1-9\nArchitecture: amd64\n\
Source: busybox\n";
const STATUS: &str = "Package: base-files\nStatus: install ok installed\nVersion: 12.4+deb12u5\n\
Architecture: amd64\n\nPackage: removed\nStatus: deinstall ok config-files\nVersion: 1\n\
Architecture: amd64\n";

/// A context with files, a dpkg database, an image whose layer carries a status.d file, and
/// the Kubernetes version label. Returns the image's manifest descriptor for this host.
fn context(ctx: &Path) -> Value {
    write(
        &ctx.join("Kubefile"),
        "FROM scratch\nKUBEVERSION v1.36.3\nLABEL io.bale.kubernetes.version=v1.36.3\n\
         COPY bin bin\nCOPY etc etc\nCOPY var var\nCOPY manifests/ manifests/\n\
         CMD kubectl apply -f manifests/\n",
    );
    write(
        &ctx.join("bin/tool.sh"),
        "#!/bin/sh\necho a tool that is not a Go binary, long enough\n",
    );
    std::fs::set_permissions(
        ctx.join("bin/tool.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&ctx.join("etc/app.conf"), "port=8080\n");
    write(&ctx.join("etc/copy.conf"), "port=8080\n");
    write(&ctx.join("var/lib/dpkg/status"), STATUS);
    write(
        &ctx.join("manifests/web.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n    - name: web\n      image: example.com/team/web:1.0\n",
    );
    let l = Layout(ctx.join("images/web"));
    let layer = tar(&[
        ("bin/web", b"#!/bin/sh\necho web\n", 0o755),
        (
            "var/lib/dpkg/status.d/busybox-static",
            STATUS_D.as_bytes(),
            0o644,
        ),
        (
            "var/lib/dpkg/status.d/busybox-static.md5sums",
            b"00  bin/busybox\n",
            0o644,
        ),
    ]);
    let mine = l.image_of_layers(
        host_arch(),
        &[&layer, &tar(&[("etc/motd", b"hi\n", 0o644)])],
    );
    let mut m = mine.clone();
    m["platform"] = serde_json::json!({"architecture": host_arch(), "os": "linux"});
    let other = l.image_of_layers("s390x", &[&tar(&[("x", b"y", 0o644)])]);
    let mut o = other.clone();
    o["platform"] = serde_json::json!({"architecture": "s390x", "os": "linux"});
    let idx = l.index(&[m, o]);
    l.tag(&idx, "example.com/team/web:1.0");
    mine
}

fn build_in(d: &Path, extra: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let ctx = d.join("ctx");
    let out = d.join("app.bale");
    let mut args = vec!["build", "-t", "app:1.0", "--offline", "--image-cache"];
    let cache = d.join("cache");
    args.push(s(&cache));
    args.extend_from_slice(&["-o", s(&out)]);
    args.extend_from_slice(extra);
    args.push(s(&ctx));
    ok(&bale(&args));
    (ctx, out)
}

fn sbom_of(bundle: &Path) -> Value {
    let o = bale(&["sbom", s(bundle)]);
    ok(&o);
    serde_json::from_slice(&o.stdout).expect("the SBOM is JSON")
}

fn components(v: &Value) -> &Vec<Value> {
    v["components"].as_array().unwrap()
}

fn by_ref<'a>(v: &'a Value, r: &str) -> &'a Value {
    components(v)
        .iter()
        .find(|c| c["bom-ref"] == r)
        .unwrap_or_else(|| panic!("no component {r}"))
}

fn depends_on(v: &Value, r: &str) -> Vec<String> {
    v["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["ref"] == r)
        .map(|d| {
            d["dependsOn"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

fn prop<'a>(c: &'a Value, name: &str) -> Vec<&'a str> {
    c["properties"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|p| p["name"] == name)
                .map(|p| p["value"].as_str().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_sbom_lists_files_images_packages_and_the_kubernetes_version() {
    let d = tempfile::tempdir().unwrap();
    let mine = context(&d.path().join("ctx"));
    let (_, out) = build_in(d.path(), &[]);
    ok(&bale(&["verify", "--content", s(&out)]));
    let v = sbom_of(&out);
    assert_eq!(v["bomFormat"], "CycloneDX");
    assert_eq!(v["specVersion"], "1.5");
    assert!(
        v["metadata"].get("timestamp").is_none(),
        "no time unless asked"
    );
    let meta = &v["metadata"]["component"];
    assert_eq!(
        (meta["name"].as_str(), meta["version"].as_str()),
        (Some("app"), Some("1.0"))
    );
    assert_eq!(prop(&v["metadata"], "bale:kubernetes:version"), ["v1.36.3"]);

    // Every file's digest is what sha256sum says of the extracted file.
    let x = d.path().join("x");
    ok(&bale(&["extract", s(&out), "--to", s(&x)]));
    let files: Vec<&Value> = components(&v)
        .iter()
        .filter(|c| c["type"] == "file")
        .collect();
    let parts = parts(&out);
    let want: Vec<&str> = parts
        .entries
        .iter()
        .filter(|e| {
            matches!(e.kind, bale_payload::Kind::File | bale_payload::Kind::Blob) && e.path != SBOM
        })
        .map(|e| e.path.as_str())
        .collect();
    let got: Vec<&str> = files.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(got, want);
    let mut sums = std::process::Command::new("sha256sum");
    sums.current_dir(&x);
    for c in &files {
        sums.arg(c["name"].as_str().unwrap());
    }
    let o = sums.output().expect("run sha256sum");
    ok(&o);
    let text = stdout(&o);
    for (line, c) in text.lines().zip(&files) {
        let (sum, name) = line.split_once("  ").unwrap();
        assert_eq!(name, c["name"].as_str().unwrap());
        assert_eq!(c["hashes"][0]["alg"], "SHA-256");
        assert_eq!(c["hashes"][0]["content"].as_str().unwrap(), sum, "{name}");
    }
    assert_eq!(text.lines().count(), files.len());

    // The image: its original name, platform, manifest and layer digests, purl.
    let img = by_ref(&v, "image:example.com/team/web:1.0");
    assert_eq!(img["type"], "container");
    assert_eq!(img["name"], "example.com/team/web:1.0");
    assert_eq!(img["version"], "1.0");
    assert_eq!(
        prop(img, "bale:image:manifest-digest"),
        [mine["digest"].as_str().unwrap()]
    );
    assert_eq!(
        prop(img, "bale:image:platform"),
        [format!("linux/{}", host_arch()).as_str()]
    );
    let layers = prop(img, "bale:image:layer");
    assert_eq!(layers.len(), 2);
    let purl = img["purl"].as_str().unwrap();
    assert!(
        purl.starts_with("pkg:oci/web@sha256%3A")
            && purl.contains("repository_url=example.com/team/web")
            && purl.ends_with("&tag=1.0"),
        "{purl}"
    );
    let parts_of_image = depends_on(&v, "image:example.com/team/web:1.0");
    let first_layer = format!("file:registry/blobs/sha256/{}", &layers[0][7..]);
    assert!(parts_of_image.contains(&first_layer), "{parts_of_image:?}");
    assert_eq!(depends_on(&v, "bundle"), ["image:example.com/team/web:1.0"]);

    // Debian packages: from the layer's status.d and from the tree's dpkg database.
    let deb = "pkg:deb/debian/busybox-static@1%3A1.36.1-9?arch=amd64";
    assert_eq!(depends_on(&v, &first_layer), [deb]);
    assert_eq!(by_ref(&v, deb)["version"], "1:1.36.1-9");
    assert_eq!(
        depends_on(&v, "file:var/lib/dpkg/status"),
        ["pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64"]
    );
    assert!(!components(&v).iter().any(|c| c["name"] == "removed"));
}

#[test]
fn the_sbom_is_valid_cyclonedx_1_5() {
    let Some(python) = std::env::var_os("BALE_TEST_PYTHON") else {
        skip(
            &[],
            "BALE_TEST_PYTHON is not set: scripts/test.sh sets it to a venv with \
             cyclonedx-python-lib[json-validation]",
        );
        return;
    };
    let d = tempfile::tempdir().unwrap();
    context(&d.path().join("ctx"));
    let (_, out) = build_in(d.path(), &["--timestamp"]);
    let file = d.path().join("sbom.json");
    ok(&bale(&["sbom", s(&out), "-o", s(&file)]));
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(v["metadata"]["timestamp"].as_str().unwrap().ends_with('Z'));
    // The plain packing of a directory writes one too.
    let tree = d.path().join("tree");
    sample_tree(&tree);
    let packed = d.path().join("tree.bale");
    common::build(&tree, &packed);
    let file2 = d.path().join("sbom2.json");
    ok(&bale(&["sbom", s(&packed), "--output", s(&file2)]));
    let script = r#"import sys
from cyclonedx.validation.json import JsonStrictValidator
from cyclonedx.schema import SchemaVersion
v = JsonStrictValidator(SchemaVersion.V1_5)
bad = 0
for f in sys.argv[1:]:
    e = v.validate_str(open(f).read())
    if e is not None:
        print(f, e)
        bad += 1
sys.exit(1 if bad else 0)
"#;
    let o = std::process::Command::new(python)
        .args(["-c", script, s(&file), s(&file2)])
        .output()
        .expect("run the validator");
    ok(&o);
}

#[test]
fn builds_stay_reproducible_and_a_tampered_sbom_is_caught() {
    let d = tempfile::tempdir().unwrap();
    context(&d.path().join("ctx"));
    let (_, out) = build_in(d.path(), &[]);
    let first = std::fs::read(&out).unwrap();
    let (_, out) = build_in(d.path(), &[]);
    assert!(
        std::fs::read(&out).unwrap() == first,
        "the second build differs"
    );

    let p = parts(&out);
    let e = p.entries.iter().find(|e| e.path == SBOM).unwrap();
    let at = p.trailer.stub_len + e.frames[0].offset + e.frames[0].stored_len / 2;
    let mut bytes = first.clone();
    bytes[at as usize] ^= 0x20;
    let bad = d.path().join("bad.bale");
    std::fs::write(&bad, &bytes).unwrap();
    damaged(&bale(&["verify", s(&bad)]), SBOM);
    damaged(&bale(&["sbom", s(&bad)]), SBOM);

    // A bundle from before SBOMs: said plainly.
    let old = d.path().join("old.bale");
    reforge(&out, &old, |entries| {
        entries.retain(|e| !e.path.starts_with(".bale"));
    });
    let o = bale(&["sbom", s(&old)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no SBOM"), "{}", stderr(&o));
}

#[test]
fn a_build_on_a_base_names_the_base_and_keeps_its_findings() {
    let d = tempfile::tempdir().unwrap();
    context(&d.path().join("ctx"));
    let (_, base) = build_in(d.path(), &[]);
    let base_sbom = sbom_of(&base);
    let app = d.path().join("app");
    write(
        &app.join("Kubefile"),
        "FROM base.bale\nCOPY extra.txt extra.txt\n",
    );
    write(&app.join("extra.txt"), "more\n");
    std::fs::rename(&base, app.join("base.bale")).unwrap();
    let out = d.path().join("on-base.bale");
    let o = bale(&[
        "build",
        "-t",
        "on-base:2",
        "-o",
        s(&out),
        "--offline",
        s(&app),
    ]);
    ok(&o);
    assert!(
        stderr(&o).contains("taken from the base's SBOM"),
        "{}",
        stderr(&o)
    );
    let v = sbom_of(&out);
    let h = parts(&app.join("base.bale")).trailer.header_sha256;
    let digest = format!("sha256:{}", bale_payload::format::hex(&h));
    let base = by_ref(&v, &format!("base:{digest}"));
    assert_eq!(
        (base["name"].as_str(), base["version"].as_str()),
        (Some("app"), Some("1.0"))
    );
    assert_eq!(
        prop(&v["metadata"], "bale:base:header-digest"),
        [digest.as_str()]
    );
    assert_eq!(prop(&v["metadata"], "bale:kubernetes:version"), ["v1.36.3"]);
    assert!(depends_on(&v, "bundle").contains(&format!("base:{digest}")));
    // The base's packages are still there, found again from its SBOM.
    let debs = |v: &Value| -> Vec<String> {
        components(v)
            .iter()
            .filter_map(|c| c["purl"].as_str())
            .filter(|p| p.starts_with("pkg:deb/"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(debs(&v), debs(&base_sbom));
    assert!(components(&v).iter().any(|c| c["name"] == "extra.txt"));
    assert!(components(&v).iter().any(|c| c["type"] == "container"));
}

#[test]
fn a_go_binary_names_its_modules() {
    let go = std::process::Command::new("go").arg("version").output();
    if !go.is_ok_and(|o| o.status.success()) {
        skip(&[], "go is not installed: apt-get install golang-go");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    write(&src.join("go.mod"), "module example.com/hello\n\ngo 1.18\n");
    write(
        &src.join("main.go"),
        "package main\n\nfunc main() { println(\"hi\") }\n",
    );
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    let st = std::process::Command::new("go")
        .args(["build", "-trimpath", "-buildvcs=false", "-o"])
        .arg(tree.join("bin/hello"))
        .arg(".")
        .current_dir(&src)
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", d.path().join("gocache"))
        .env("CGO_ENABLED", "0")
        .status()
        .unwrap();
    assert!(st.success());
    let out = d.path().join("go.bale");
    common::build(&tree, &out);
    let v = sbom_of(&out);
    let deps = depends_on(&v, "file:bin/hello");
    assert!(
        deps.contains(&"pkg:golang/example.com/hello".to_string()),
        "{deps:?}"
    );
    let std_ref = deps
        .iter()
        .find(|d| d.starts_with("pkg:golang/stdlib@"))
        .unwrap();
    assert_eq!(by_ref(&v, std_ref)["type"], "library");
    let main = by_ref(&v, "pkg:golang/example.com/hello");
    assert_eq!(main["type"], "application");
    let file = by_ref(&v, "file:bin/hello");
    assert_eq!(prop(file, "bale:go:package"), ["example.com/hello"]);
    assert!(prop(file, "bale:go:toolchain")[0].starts_with("go1."));

    // The same binary inside an image layer: found as the layer streams by.
    let bin = std::fs::read(tree.join("bin/hello")).unwrap();
    let ctx = d.path().join("ctx");
    write(
        &ctx.join("Kubefile"),
        "FROM scratch\nCOPY manifests/ manifests/\n",
    );
    write(
        &ctx.join("manifests/pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec:\n  containers:\n    - name: h\n      image: example.com/hello:1\n",
    );
    let l = Layout(ctx.join("images/hello"));
    let m = l.image_of_layers(host_arch(), &[&tar(&[("usr/bin/hello", &bin, 0o755)])]);
    l.tag(&m, "example.com/hello:1");
    let out = d.path().join("img.bale");
    let cache = d.path().join("cache");
    ok(&bale(&[
        "build",
        "--offline",
        "--image-cache",
        s(&cache),
        "-o",
        s(&out),
        s(&ctx),
    ]));
    let v = sbom_of(&out);
    let img = by_ref(&v, "image:example.com/hello:1");
    let layer = format!(
        "file:registry/blobs/sha256/{}",
        &prop(img, "bale:image:layer")[0][7..]
    );
    let deps = depends_on(&v, &layer);
    assert!(
        deps.contains(&"pkg:golang/example.com/hello".to_string()),
        "{deps:?}"
    );
    let found = prop(by_ref(&v, &layer), "bale:layer:go-binary");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("usr/bin/hello: example.com/hello (go1."),
        "{found:?}"
    );
}
