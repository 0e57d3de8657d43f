//! Discovery follows the Kubefile: manifests, charts and image lists that `COPY` and `APP`
//! bring in from outside the context's manifests/ and charts/ (fixture tests/fixtures/copied:
//! multi-document YAML with Deployments, StatefulSets, DaemonSets, CronJobs, initContainers,
//! custom resources with keys ending in `image`, a CRD, a chart and an image list).

use bale_bundler::build::{discover_images_with, parse};
use bale_bundler::discover::{DiscoverOptions, Discovery};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/copied")
}

/// Options that never find a helm: none is installed here (Debian packages no Kubernetes
/// helm), and the search path is empty so a helm installed later does not change the result.
fn no_helm() -> DiscoverOptions {
    DiscoverOptions {
        search_path: Some("".into()),
        ..Default::default()
    }
}

fn discover(ctx: &Path, opts: DiscoverOptions) -> Discovery {
    let (plan, _) = parse(&ctx.join("Kubefile"), &BTreeMap::new()).expect("parse");
    discover_images_with(ctx, &plan, opts).expect("discover")
}

/// reference -> locations, as printed.
fn found(d: &Discovery) -> BTreeMap<String, Vec<String>> {
    d.images
        .iter()
        .map(|i| {
            (
                i.reference.clone(),
                i.locations.iter().map(ToString::to_string).collect(),
            )
        })
        .collect()
}

const COPY3: &str = " (via Kubefile:3 (COPY))";
const COPY4: &str = " (via Kubefile:4 (COPY))";

#[test]
fn images_in_copied_files_are_found_with_their_place() {
    let d = discover(&fixture(), no_helm());
    let f = found(&d);
    let platform = |doc: &str| format!("deploy/platform.yaml: {doc}{COPY3}");
    let expected: BTreeMap<String, Vec<String>> = [
        ("docker.io/envoyproxy/envoy:v1.29.1", platform("doc 2 (Deployment api) .spec.template.spec.containers[1].image")),
        ("docker.io/library/busybox:1.36.1", platform("doc 2 (Deployment api) .spec.template.spec.initContainers[0].image")),
        ("docker.io/library/nginx:1.25.4", "apps/web.yaml: doc 1 (Deployment web) .spec.template.spec.containers[0].image (via Kubefile:9 (APP web))".into()),
        ("docker.io/library/postgres:16.2-alpine", platform("doc 3 (StatefulSet db) .spec.template.spec.containers[0].image")),
        ("docker.io/library/redis:7.2.4", platform("doc 6 (Cache sessions) .spec.image")),
        ("docker.io/oliver006/redis_exporter:v1.58.0", platform("doc 6 (Cache sessions) .spec.exporterImage")),
        ("ghcr.io/acme/api-migrations:4.2.0", platform("doc 2 (Deployment api) .spec.template.spec.initContainers[1].image")),
        ("ghcr.io/acme/api:4.2.0", platform("doc 2 (Deployment api) .spec.template.spec.containers[0].image")),
        ("ghcr.io/acme/sidecar:1", platform("doc 2 (Deployment api) .spec.template.spec.containers[0].env[0].value")),
        ("ghcr.io/acme/seed:2024.03", "deploy/extra-objects.yaml: doc 1 (Job seed) .spec.template.spec.containers[0].image (via Kubefile:6 (COPY))".into()),
        ("quay.io/brancz/kube-rbac-proxy:v0.16.0", format!("deploy/monitoring/node-exporter.yaml: doc 1 (DaemonSet node-exporter) .spec.template.spec.containers[1].image{COPY4}")),
        ("quay.io/prometheus-operator/prometheus-config-reloader:v0.72.0", format!("deploy/monitoring/prometheus.yml: doc 2 (Alertmanager main) .spec.configReloaderImage{COPY4}")),
        ("quay.io/prometheus/alertmanager:v0.27.0", format!("deploy/monitoring/prometheus.yml: doc 2 (Alertmanager main) .spec.image{COPY4}")),
        ("quay.io/prometheus/node-exporter:v1.7.0", format!("deploy/monitoring/node-exporter.yaml: doc 1 (DaemonSet node-exporter) .spec.template.spec.containers[0].image{COPY4}")),
        ("quay.io/prometheus/prometheus:v2.50.1", format!("deploy/monitoring/prometheus.yml: doc 1 (Prometheus k8s) .spec.image{COPY4}")),
        ("quay.io/thanos/thanos:v0.34.1", format!("deploy/monitoring/prometheus.yml: doc 1 (Prometheus k8s) .spec.thanos.image{COPY4}")),
        ("registry.example.com/ops/backup-prep:0.3", platform("doc 4 (CronJob db-backup) .spec.jobTemplate.spec.template.spec.initContainers[0].image")),
        ("registry.example.com/ops/pg-backup:1.4", platform("doc 4 (CronJob db-backup) .spec.jobTemplate.spec.template.spec.containers[0].image")),
        ("registry.k8s.io/ingress-nginx/controller:1.10.0", "third_party/charts/ingress/values.yaml: .controller.image (tag from Chart.yaml appVersion) (via Kubefile:7 (COPY))".into()),
        ("registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.4.0", "third_party/charts/ingress/values.yaml: .controller.admissionWebhooks.patch.image (via Kubefile:7 (COPY))".into()),
        ("registry.k8s.io/pause:3.9", "lists/imageList: line 2 (via Kubefile:8 (COPY))".into()),
    ]
    .into_iter()
    .map(|(r, l)| (r.to_string(), vec![l]))
    .collect();
    assert_eq!(f, expected);
    // Not images: a config file copied outside manifests/ (no apiVersion/kind), a document
    // without them in a copied file, an env var's value that pins no tag, the CRD's schema
    // properties.
    for absent in ["not/an-image-reference", "ignored-default", "not-scanned"] {
        assert!(!f.keys().any(|k| k.contains(absent)), "{absent}");
    }
    // The one warning: the copied chart read without helm, said so.
    let w: Vec<String> = d.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "third_party/charts/ingress: helm was not found (no bin/helm in the build context and \
          none on PATH), so only values.yaml was read; images that the templates build \
          differently are missed: put helm at bin/helm or list them in manifests/imageList"
        ]
    );
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, text).expect("write");
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - {name: a, image: IMAGE}\n";

#[test]
fn copying_the_whole_context_scans_manifests_once_and_missing_sources_are_warnings() {
    let d = tempfile::tempdir().expect("tempdir");
    let ctx = d.path();
    write(
        &ctx.join("Kubefile"),
        "FROM scratch\nCOPY . .\nRUN make-out\nCOPY out/gen.yaml manifests/\n",
    );
    write(&ctx.join("manifests/a.yaml"), &POD.replace("IMAGE", "a:1"));
    write(&ctx.join("deploy/b.yaml"), &POD.replace("IMAGE", "b:1"));
    // An OCI layout's JSON under images/ is never read as manifests.
    write(
        &ctx.join("images/x/index.json"),
        "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"image\": \"never:1\"}",
    );
    let found = discover(ctx, no_helm());
    assert_eq!(
        found
            .images
            .iter()
            .map(|i| (i.reference.as_str(), i.locations.len()))
            .collect::<Vec<_>>(),
        [("docker.io/library/a:1", 1), ("docker.io/library/b:1", 1)]
    );
    assert_eq!(
        found.images[0].locations[0].to_string(),
        "manifests/a.yaml: doc 1 (Pod p) .spec.containers[0].image"
    );
    assert_eq!(
        found.images[1].locations[0].to_string(),
        "deploy/b.yaml: doc 1 (Pod p) .spec.containers[0].image (via Kubefile:2 (COPY))"
    );
    // out/gen.yaml is made by the RUN step, which --list-images does not run.
    let w: Vec<String> = found.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains(":4: COPY source \"out/gen.yaml\" does not exist")
            && w[0].ends_with("its images (if any) are not listed"),
        "{w:?}"
    );
}
