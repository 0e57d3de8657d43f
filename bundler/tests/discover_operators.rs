//! Images that operators and sidecars are handed outside `image:` fields: in container
//! arguments and environment values, as an operator resource's `baseImage` with a `version`,
//! and sealer's local-registry aliases, which name no image anyone can pull.

use bale_bundler::discover::{discover, DiscoverOptions, Discovery};
use std::fs;

const MANIFEST: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: operator}
spec:
  template:
    spec:
      containers:
      - name: operator
        image: quay.io/prometheus-operator/prometheus-operator:v0.66.0
        args:
        - --kubelet-service=kube-system/kubelet
        - --prometheus-config-reloader=quay.io/prometheus-operator/prometheus-config-reloader:v0.66.0
        - --log-level=info
        - ghcr.io/example/solver:v1.2.3
        - busybox:1.36
        env:
        - name: ACME_SOLVER_IMAGE
          value: quay.io/jetstack/cert-manager-acmesolver:v1.14.4
        - name: NOT_AN_IMAGE
          value: "https://quay.io/path:8080"
        - name: UNPINNED
          value: quay.io/jetstack/cert-manager-ctl
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: k8s}
spec:
  baseImage: quay.io/prometheus/prometheus
  version: v2.45.0
---
apiVersion: monitoring.coreos.com/v1
kind: Alertmanager
metadata: {name: main}
spec:
  baseImage: quay.io/prometheus/alertmanager
---
apiVersion: v1
kind: Pod
metadata: {name: old}
spec:
  containers:
  - name: web
    image: sea.hub:5000/library/nginx:1.25
"#;

fn run() -> Discovery {
    let d = tempfile::tempdir().unwrap();
    fs::create_dir_all(d.path().join("manifests")).unwrap();
    fs::write(d.path().join("manifests/app.yaml"), MANIFEST).unwrap();
    fs::write(
        d.path().join("imageList"),
        "docker.io/library/redis:7.2\nsea.hub:5000/calico/cni:v3.26.1\n",
    )
    .unwrap();
    let opts = DiscoverOptions {
        search_path: Some("".into()),
        ..Default::default()
    };
    discover(d.path(), &opts).unwrap()
}

#[test]
fn arguments_environment_and_base_images_are_found() {
    let d = run();
    let found: Vec<(&str, Vec<String>)> = d
        .images
        .iter()
        .map(|i| {
            (
                i.reference.as_str(),
                i.locations.iter().map(ToString::to_string).collect(),
            )
        })
        .collect();
    let names: Vec<&str> = found.iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        [
            "docker.io/library/redis:7.2",
            "ghcr.io/example/solver:v1.2.3",
            "quay.io/jetstack/cert-manager-acmesolver:v1.14.4",
            "quay.io/prometheus-operator/prometheus-config-reloader:v0.66.0",
            "quay.io/prometheus-operator/prometheus-operator:v0.66.0",
            "quay.io/prometheus/prometheus:v2.45.0",
        ],
        "{found:#?}"
    );
    let at = |name: &str| {
        found
            .iter()
            .find(|f| f.0 == name)
            .map(|f| f.1.join(" | "))
            .unwrap()
    };
    let reloader = at("quay.io/prometheus-operator/prometheus-config-reloader:v0.66.0");
    assert!(reloader.contains("containers[0].args[1]"), "{reloader}");
    let solver = at("quay.io/jetstack/cert-manager-acmesolver:v1.14.4");
    assert!(solver.contains("containers[0].env[0].value"), "{solver}");
    let prometheus = at("quay.io/prometheus/prometheus:v2.45.0");
    assert!(
        prometheus.contains("spec.baseImage (tag from the resource's version)"),
        "{prometheus}"
    );
}

#[test]
fn what_cannot_be_told_or_pulled_is_a_warning() {
    let d = run();
    let warnings: Vec<String> = d.warnings.iter().map(ToString::to_string).collect();
    let has = |needle: &str| warnings.iter().any(|w| w.contains(needle));
    assert!(
        has("baseImage \"quay.io/prometheus/alertmanager\" has no tag"),
        "{warnings:#?}"
    );
    assert!(
        has("\"sea.hub:5000/library/nginx:1.25\" names sealer's local registry (sea.hub:5000)"),
        "{warnings:#?}"
    );
    assert!(
        has("imageList: line 2: \"sea.hub:5000/calico/cni:v3.26.1\" names sealer's local registry"),
        "{warnings:#?}"
    );
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
}
