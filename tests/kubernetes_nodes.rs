//! Kubernetes end to end on the test nodes: the base bundle built from
//! examples/kubernetes (Kubernetes v1.36.3 and everything else compiled here from Go modules),
//! the appliance layered on it (`FROM kubernetes.bale`, examples/appliance/Kubefile.kubernetes),
//! and `install --masters n1 --nodes n2,n3`. What a site would check: every node Ready with the
//! bundle's version, a pod of the helm-installed app on each worker, pod-to-pod traffic across
//! nodes, its ClusterIP Service and NodePort answering from every node, the kubectl-applied
//! DaemonSet answering on each worker, every image (pause included) from the bale registry
//! with no packet leaving the test network. Then the lifecycle: a re-run converges without a
//! second `kubeadm init`, a worker joins by a longer `--nodes`, `delete` takes it out of the
//! cluster and out of every node's routes, `reset` leaves no Kubernetes state behind, and a
//! reinstall works.
//!
//! Needs root, the testbed, and the inputs of examples/kubernetes/build-inputs.sh and
//! examples/appliance/make-images.sh (scripts/test.sh runs both first).

mod common;

use common::events::*;
use common::testbed::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

const KUBECTL: &str = "KUBECONFIG=/etc/kubernetes/admin.conf /usr/local/bin/kubectl";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn copy_tree(from: &Path, to: &Path) {
    let o = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("run cp");
    ok(&o);
}

/// The base bundle and the appliance on it, built with this build of bale.
fn bundles(dir: &Path) -> PathBuf {
    let k8s = root().join("examples/kubernetes");
    let app = root().join("examples/appliance");
    for (need, script) in [
        (
            "examples/kubernetes/bin/kubeadm",
            "examples/kubernetes/build-inputs.sh",
        ),
        (
            "examples/kubernetes/imageList",
            "examples/kubernetes/build-inputs.sh",
        ),
        (
            "examples/appliance/images/web/index.json",
            "examples/appliance/make-images.sh",
        ),
    ] {
        assert!(
            root().join(need).exists(),
            "{need} is missing: run {script} (scripts/test.sh does)"
        );
    }
    // The app's context: the appliance's files beside the base bundle it names.
    let ctx = dir.join("app");
    std::fs::create_dir_all(ctx.join("rootfs")).unwrap();
    for p in ["images", "charts", "imageList", "Kubefile.kubernetes"] {
        copy_tree(&app.join(p), &ctx.join(p));
    }
    for p in ["etc", "manifests"] {
        copy_tree(&app.join("rootfs").join(p), &ctx.join("rootfs").join(p));
    }
    ok(&bale(&[
        "build",
        "-f",
        k8s.join("Kubefile").to_str().unwrap(),
        "-t",
        "kubernetes:v1.36.3",
        "--offline",
        "-o",
        ctx.join("kubernetes.bale").to_str().unwrap(),
        k8s.to_str().unwrap(),
    ]));
    let out = dir.join("appliance-k8s.bale");
    ok(&bale(&[
        "build",
        "-f",
        ctx.join("Kubefile.kubernetes").to_str().unwrap(),
        "-t",
        "appliance-k8s:0.1.0",
        "--offline",
        "-o",
        out.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]));
    out
}

fn run_on(
    bundle: &Path,
    verb: &str,
    hosts: &[&str],
    extra: &[&str],
) -> (Output, Vec<serde_json::Value>) {
    let key = key();
    let kh = known_hosts_path();
    let mut args = vec![verb, "--json"];
    args.extend_from_slice(hosts);
    args.extend_from_slice(&["--key", &key, "--known-hosts", &kh]);
    args.extend_from_slice(extra);
    run_logged(bundle, &args, &format!("{verb} {hosts:?} {extra:?}"))
}

fn kubectl(args: &str) -> String {
    on_ok("n1", &format!("{KUBECTL} {args}"))
}

/// name -> (Ready, InternalIP, version)
fn nodes() -> Vec<(String, bool, String, String)> {
    let out = kubectl(
        "get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status} {.status.addresses[?(@.type==\"InternalIP\")].address} {.status.nodeInfo.kubeletVersion}{\"\\n\"}{end}'",
    );
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4).then(|| {
                (
                    f[0].to_string(),
                    f[1] == "True",
                    f[2].to_string(),
                    f[3].to_string(),
                )
            })
        })
        .collect()
}

fn wait_all_ready(count: usize) {
    poll_ok(
        Duration::from_secs(1),
        &format!("{count} Ready nodes"),
        Duration::from_secs(120),
        || {
            let n = nodes();
            if n.len() == count && n.iter().all(|x| x.1) {
                Ok(())
            } else {
                Err(n)
            }
        },
    );
}

/// An HTTP GET made on `node` with bash's /dev/tcp (the nodes have no curl): the response.
fn get_on(node: &str, host: &str, port: u16) -> Result<String, String> {
    let o = on(
        node,
        &format!(
            "timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/{port}; printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'"
        ),
    );
    if o.status.success() {
        Ok(stdout(&o))
    } else {
        Err(format!("{node} -> {host}:{port}: {}", stderr(&o)))
    }
}

fn answers(node: &str, host: &str, port: u16) {
    poll_ok(
        Duration::from_millis(500),
        &format!("{host}:{port} from {node}"),
        Duration::from_secs(60),
        || match get_on(node, host, port) {
            Ok(b) if b.contains("The example appliance is up") => Ok(()),
            other => Err(other),
        },
    );
}

/// Routes to pod subnets on a node (bale tags them with its own protocol number).
fn pod_routes(node: &str) -> String {
    on_ok(node, "ip route show proto 180")
}

#[test]
fn kubernetes_cluster_installs_joins_deletes_resets_and_reinstalls() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = bundles(dir.path());
    let Some(bed) = Testbed::up(4, &[]) else {
        return;
    };
    let three = ["--masters", N1, "--nodes", &format!("{N2},{N3}")].map(String::from);
    let three: Vec<&str> = three.iter().map(String::as_str).collect();

    // The install, from nodes that have nothing.
    let t = Instant::now();
    let (o, ev) = run_on(&bundle, "install", &three, &[]);
    ok(&o);
    let took = t.elapsed();
    assert_eq!(started(&ev, "kube-init"), [N1]);
    let mut joined = started(&ev, "kube-join");
    joined.sort();
    assert_eq!(joined, [N2, N3]);
    wait_all_ready(3);
    eprintln!(
        "install to every node Ready: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(took < Duration::from_secs(300), "install took {took:?}");
    for (name, _, ip, version) in nodes() {
        assert_eq!(version, "v1.36.3", "{name} ({ip})");
    }

    // The control plane and the addons run, CoreDNS and kube-proxy included.
    poll_ok(
        Duration::from_secs(1),
        "every kube-system pod Running",
        Duration::from_secs(120),
        || {
            let s = kubectl("get pods -n kube-system --no-headers");
            let bad: Vec<&str> = s.lines().filter(|l| !l.contains(" Running ")).collect();
            if bad.is_empty() && s.contains("coredns") && s.contains("kube-proxy") {
                Ok(())
            } else {
                Err(s.clone())
            }
        },
    );

    // The helm release has a pod on each worker; pod-to-pod across nodes.
    let pods = kubectl(
        "get pods -l app=hello -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{\"\\n\"}{end}'",
    );
    let pods: Vec<Vec<String>> = pods
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    let mut on_nodes: Vec<&str> = pods.iter().map(|p| p[1].as_str()).collect();
    on_nodes.sort();
    assert_eq!(on_nodes, ["n2", "n3"], "{pods:?}");
    let (a, b) = (&pods[0], &pods[1]);
    let across = kubectl(&format!(
        "exec {} -c web -- sh -c \"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {} 8080\"",
        a[0], b[2]
    ));
    assert!(across.contains("The example appliance is up"), "{across}");

    // Its ClusterIP Service and NodePort from every node; the DaemonSet on each worker.
    let cluster_ip = kubectl("get svc hello -o jsonpath='{.spec.clusterIP}'");
    for n in ["n1", "n2", "n3"] {
        answers(n, cluster_ip.trim(), 80);
        for ip in [N1, N2, N3] {
            answers(n, ip, 30080);
        }
    }
    for ip in [N2, N3] {
        answers("n1", ip, 8080);
    }
    // Every image came from the node's registry under its original name: no pull left.
    for n in ["n1", "n2"] {
        let images = on_ok(n, "/usr/local/bin/crictl images -o json");
        assert!(
            images.contains("registry.k8s.io/pause:3.10.2"),
            "{n}: {images}"
        );
    }

    // check: every node Ready and every system pod Running, as the first master's API says.
    let (o, _) = run_on(&bundle, "check", &three, &[]);
    ok(&o);
    let log = stderr(&o) + &stdout(&o);
    assert!(log.contains("nodes: 3 of 3 Ready"), "{log}");
    assert!(
        log.contains("kube-system: ") && log.contains(" pods Running"),
        "{log}"
    );

    // A re-run converges: no second init, no second join.
    let (o, _) = run_on(&bundle, "install", &three, &[]);
    ok(&o);
    let log = stderr(&o) + &stdout(&o);
    assert_eq!(
        log.matches("cluster: apply: nothing to change").count(),
        3,
        "kubeadm ran again somewhere: {log}"
    );

    // A fourth host joins as a worker with a longer --nodes; every node routes to its pods.
    let four = format!("{N2},{N3},{N4}");
    let (o, ev) = run_on(
        &bundle,
        "install",
        &["--masters", N1, "--nodes", &four],
        &[],
    );
    ok(&o);
    assert_eq!(started(&ev, "kube-join").len(), 3);
    wait_all_ready(4);
    let n4_cidr = kubectl("get node n4 -o jsonpath='{.spec.podCIDR}'");
    let n4_cidr = n4_cidr.trim().to_string();
    assert!(pod_routes("n1").contains(&format!("{n4_cidr} via {N4}")));

    // delete: the Node object goes, the routes to it too, the host is clean.
    let (o, _) = run_on(&bundle, "delete", &["--nodes", N4], &["--yes"]);
    ok(&o);
    let names: Vec<String> = nodes().into_iter().map(|n| n.0).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);
    for n in ["n1", "n2", "n3"] {
        assert!(!pod_routes(n).contains(&n4_cidr), "{n}: {}", pod_routes(n));
    }
    let left = on_ok(
        "n4",
        "ls -d /etc/kubernetes /var/lib/etcd /etc/cni/net.d /run/netns/cni-* 2>/dev/null; \
         ip -br link | grep -E 'cni0|veth' || true; systemctl is-active kubelet || true",
    );
    assert_eq!(left.trim(), "inactive", "n4 after delete: {left}");

    // reset: no Kubernetes state, no pod network, no kube-proxy rules; then a reinstall.
    let (o, _) = run_on(&bundle, "reset", &three, &["--yes"]);
    ok(&o);
    for n in ["n1", "n2", "n3"] {
        let left = on_ok(
            n,
            "ls -d /etc/kubernetes /var/lib/etcd /etc/cni/net.d /run/netns/cni-* \
             /var/lib/kubelet/pods 2>/dev/null; ip -br link | grep -E 'cni0|veth' || true; \
             ip route show proto 180; nft list ruleset 2>/dev/null | grep -c KUBE- || true; \
             systemctl is-active kubelet || true",
        );
        assert_eq!(left.trim(), "0\ninactive", "{n} after reset: {left}");
    }
    let (o, _) = run_on(&bundle, "install", &three, &[]);
    ok(&o);
    wait_all_ready(3);
    answers("n2", N3, 30080);
    bed.finish();
}
