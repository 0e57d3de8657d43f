//! F15: build-context manifests nested deep are refused by a linear pre-scan instead of being
//! parsed in quadratic time (200 KB took 18-25 s before serde_yaml's depth limit said no).

use bale_bundler::discover::{discover, DiscoverOptions};
use std::time::{Duration, Instant};

#[test]
fn a_deeply_nested_manifest_is_skipped_with_a_warning_at_once() {
    let ctx = tempfile::tempdir().expect("tempdir");
    let manifests = ctx.path().join("manifests");
    std::fs::create_dir(&manifests).expect("mkdir");
    let n = 100_000;
    let deep = format!(
        "apiVersion: v1\nkind: ConfigMap\ndata: {}{}\n",
        "[".repeat(n),
        "]".repeat(n)
    );
    assert!(deep.len() > 200_000);
    std::fs::write(manifests.join("deep.yaml"), deep).expect("write");
    std::fs::write(
        manifests.join("ok.yaml"),
        "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n    - image: busybox:1.36\n",
    )
    .expect("write");
    let opts = DiscoverOptions {
        search_path: Some("".into()),
        ..Default::default()
    };
    let t = Instant::now();
    let found = discover(ctx.path(), &opts).expect("discover");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(found.references(), ["docker.io/library/busybox:1.36"]);
    let w: Vec<String> = found.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("deep.yaml") && w.contains("nested more than")),
        "{w:?}"
    );
}
