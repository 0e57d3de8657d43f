//! The phases against a scripted node: the commands they send (every value quoted once, by
//! the remote seam), what they feed them, and how they read the answers.

use super::*;
use crate::engine::{test_ctx, Attempt, Node, PhaseError};
use crate::hosts::{Host, Role};
use crate::remote::fake::{Fed, How, Scripted};
use crate::remote::Remote;
use crate::site::Site;
use std::sync::Arc;

/// A data dir that needs quoting.
const D: &str = "/var/lib/it's bale";
/// `D` as the shell reads it.
const QD: &str = r"'/var/lib/it'\''s bale'";

fn node_on(remote: &Arc<Scripted>, site: Site) -> Node {
    let n = Node::new(0, None, test_ctx(D, site));
    let r: Arc<dyn Remote> = remote.clone();
    n.set_remote(Some(r));
    n
}

#[test]
fn forget_looks_for_and_removes_bales_files_only() {
    let r = Arc::new(Scripted::new("n").on("for p in", "").on("rm -rf", ""));
    let n = node_on(&r, Site::default());
    assert!(forget::Forget.should_run(&n));
    forget::Forget.run(&n, &Attempt::default()).unwrap();
    let calls = r.calls();
    let listed: Vec<String> = crate::layout::ALL
        .iter()
        .map(|p| format!(r"'/var/lib/it'\''s bale/{p}'"))
        .collect();
    assert_eq!(
        calls[0].line,
        format!(
            "for p in {}; do [ ! -e \"$p\" ] || exit 0; done; exit 1",
            listed.join(" ")
        )
    );
    assert_eq!(
        calls[1].line,
        format!(
            "rm -rf {}; rmdir {QD} 2>/dev/null || true",
            listed.join(" ")
        )
    );
    // Nothing there: nothing to do.
    let r = Arc::new(Scripted::new("n").fails("for p in", 1, ""));
    assert!(!forget::Forget.should_run(&node_on(&r, Site::default())));
}

#[test]
fn extract_swaps_the_tree_in_one_script() {
    let r = Arc::new(Scripted::new("n").on("extract --sync", ""));
    let site = Site {
        tree_top: vec!["etc".into(), "my charts".into()],
        ..Default::default()
    };
    let n = node_on(&r, site);
    let attempt = Attempt::default();
    extract::Extract.run(&n, &attempt).unwrap();
    assert_eq!(attempt.created(), [format!("{D}/rootfs.part")]);
    let p = |name: &str| format!(r"'/var/lib/it'\''s bale/{name}'");
    let (part, old, dest) = (p("rootfs.part"), p("rootfs.old"), p("rootfs"));
    assert_eq!(
        r.calls()[0].line,
        format!(
            "set -e; rm -rf {part} {old}; {} extract --sync --to {part} 'etc' 'my charts'; \
             if [ -e {dest} ]; then mv {dest} {old}; fi; \
             if ! mv {part} {dest}; then [ ! -e {old} ] || mv {old} {dest}; exit 1; fi; \
             rm -rf {old}",
            p("bundle.bale")
        )
    );
}

#[test]
fn overlays_are_fed_on_stdin() {
    let r = Arc::new(Scripted::new("n").on("mkdir -p", ""));
    let site = Site {
        overlays: vec![("etc/a b.conf".into(), "x = $y\n".into())],
        ..Default::default()
    };
    overlay::Overlay
        .run(&node_on(&r, site), &Attempt::default())
        .unwrap();
    let c = &r.calls()[0];
    assert_eq!(c.what, "write the overlay of etc/a b.conf");
    assert_eq!(
        c.line,
        r"set -e; mkdir -p '/var/lib/it'\''s bale/rootfs/etc'; cat > '/var/lib/it'\''s bale/rootfs/etc/.bale-config.tmp'; mv -f '/var/lib/it'\''s bale/rootfs/etc/.bale-config.tmp' '/var/lib/it'\''s bale/rootfs/etc/a b.conf'"
    );
    assert_eq!(c.stdin, Fed::Bytes(b"x = $y\n".to_vec()));
}

#[test]
fn the_node_context_is_written_and_read_back() {
    let r = Arc::new(Scripted::new("n").on("mv -f", "").once("cat ", ""));
    let n = node_on(&r, Site::default());
    let c = context::node_context(&n);
    context::write_context(&n, &c).unwrap();
    assert_eq!(context::read_context(&n).unwrap(), None);
    let calls = r.calls();
    assert_eq!(
        calls[0].line,
        format!(
            "set -e; [ -d {QD} ] || install -d -m 0700 {QD}; cat > {t}; sync {t} 2>/dev/null \
             || true; mv -f {t} {f}",
            t = r"'/var/lib/it'\''s bale/.node.json.tmp'",
            f = r"'/var/lib/it'\''s bale/node.json'"
        )
    );
    let Fed::Bytes(body) = &calls[0].stdin else {
        panic!("{:?}", calls[0].stdin)
    };
    assert_eq!(
        serde_json::from_slice::<crate::node::context::NodeContext>(body).unwrap(),
        c
    );
    assert_eq!(
        calls[1].line,
        r"cat '/var/lib/it'\''s bale/node.json' 2>/dev/null || true"
    );

    let r = Arc::new(Scripted::new("n").on("cat ", "{not json"));
    let e = context::read_context(&node_on(&r, Site::default())).unwrap_err();
    assert!(matches!(e, PhaseError::NodeContext { .. }), "{e}");
}

#[test]
fn agent_steps_run_the_bundle_with_their_arguments() {
    let r = Arc::new(
        Scripted::new("n")
            .on("'apply'", "step one\nruntime: ready\n")
            .fails("'undo'", 2, "undo: containerd busy\n"),
    );
    let n = node_on(&r, Site::default());
    let out = agent_step::agent_step(&n, "runtime", "apply").unwrap();
    assert_eq!(agent_step::last_line(&out), Some("runtime: ready"));
    let c = &r.calls()[0];
    assert_eq!(c.how, How::Root);
    assert_eq!(
        c.line,
        format!(
            r"'/var/lib/it'\''s bale/bundle.bale' 'agent' 'step' 'runtime' 'apply' '--data-dir' {QD}"
        )
    );
    match agent_step::agent_step(&n, "runtime", "undo") {
        Err(PhaseError::Agent {
            step,
            action,
            code,
            output,
        }) => {
            assert_eq!(
                (step.as_str(), action.as_str(), code),
                ("runtime", "undo", 2)
            );
            assert_eq!(output, "undo: containerd busy");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_bundle_is_looked_for_with_test() {
    let r = Arc::new(Scripted::new("n").on("'test' '-x'", ""));
    assert!(has_bundle(&node_on(&r, Site::default())));
    assert_eq!(
        r.calls()[0].line,
        r"'test' '-x' '/var/lib/it'\''s bale/bundle.bale'"
    );
    let r = Arc::new(Scripted::new("n").fails("'test' '-x'", 1, ""));
    assert!(!has_bundle(&node_on(&r, Site::default())));
}

#[test]
fn hooks_run_after_the_prelude_with_the_users_script_as_written() {
    let r = Arc::new(
        Scripted::new("n")
            .once("exec 2>&1", "")
            .fails("exec 2>&1", 4, ""),
    );
    let mut site = Site::default();
    site.env.insert("GREETING".into(), "it's $HOME".into());
    let n = node_on(&r, site);
    let prelude = hooks::prelude(&n).unwrap();
    let user = "echo \"$GREETING\" | tee {out}";
    hooks::run_script(&*n.remote().unwrap(), &prelude, user, || "hook".into()).unwrap();
    let line = &r.calls()[0].line;
    assert!(
        line.contains("export GREETING='it'\\''s $HOME'\n"),
        "{line}"
    );
    assert!(
        line.contains("export BALE_DATA_DIR='/var/lib/it'\\''s bale'\n"),
        "{line}"
    );
    assert!(
        line.contains(
            "if [ -d '/var/lib/it'\\''s bale/rootfs' ]; then cd '/var/lib/it'\\''s bale/rootfs'; \
             else cd /; fi\n"
        ),
        "{line}"
    );
    assert!(
        line.ends_with("exec 2>&1\necho \"$GREETING\" | tee {out}"),
        "{line}"
    );
    let e = hooks::run_script(&*n.remote().unwrap(), &prelude, "false", || "hook x".into())
        .unwrap_err();
    assert!(matches!(e, PhaseError::Script { code: 4, .. }), "{e}");

    // An env name that is no variable name stops the phase before anything runs.
    let mut site = Site::default();
    site.env.insert("A;B".into(), "v".into());
    let n = node_on(&r, site);
    assert!(matches!(hooks::prelude(&n), Err(PhaseError::EnvName(k)) if k == "A;B"));
}

/// A host of the site `hosts` (the first master first), with these Clusterfile extras.
fn host_node(
    remote: &Arc<Scripted>,
    hosts: &[(&str, Role)],
    index: usize,
    extra: impl FnOnce(&mut Host),
    docs: crate::plugins::Documents,
) -> Node {
    let site = Site {
        hosts: hosts
            .iter()
            .map(|(a, r)| (a.parse().unwrap(), *r))
            .collect(),
        docs,
        kubernetes: true,
        ..Default::default()
    };
    let (addr, role) = hosts[index];
    let mut host = Host {
        addr: addr.parse().unwrap(),
        role,
        ssh: crate::hosts::SshOverrides::default().resolve(),
        env: vec![],
        roles: vec![],
        labels: vec![],
        taints: vec![],
    };
    extra(&mut host);
    let n = Node::new(index, Some(host), test_ctx(D, site));
    let r: Arc<dyn Remote> = remote.clone();
    n.set_remote(Some(r));
    n
}

/// Issue 15: a `scope: node` hook never runs on a master; a cluster hook (`post-install`)
/// runs on the first master alone; a scope naming another Clusterfile role finds its hosts.
#[test]
fn hooks_run_on_the_hosts_sealer_runs_them_on() {
    let docs = crate::plugins::Documents::parse(
        "kind: Plugin\nmetadata: {name: workers}\nspec: {action: post-init-host, scope: node, data: echo w}\n\
         ---\nkind: Plugin\nmetadata: {name: once}\nspec: {action: post-install, data: echo once}\n\
         ---\nkind: Plugin\nmetadata: {name: dbs}\nspec: {action: post-init-host, scope: db, data: echo db}\n",
        "plugins/p.yaml",
    )
    .unwrap();
    let hosts = [
        ("10.0.0.2", Role::Master),
        ("10.0.0.3", Role::Master),
        ("10.0.0.5", Role::Node),
    ];
    let phase = hooks::Hooks {
        action: crate::plugins::Action::PreApps,
        journaled: true,
    };
    let ran = |index: usize, roles: Vec<String>| {
        let r = Arc::new(Scripted::new("n").on("exec 2>&1", ""));
        let n = host_node(&r, &hosts, index, |h| h.roles = roles, docs.clone());
        if phase.should_run(&n) {
            phase.run(&n, &Attempt::default()).unwrap();
        }
        r.calls()
            .iter()
            .map(|c| c.line.rsplit('\n').next().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ran(0, vec![]), ["echo once"]);
    assert!(ran(1, vec![]).is_empty());
    assert_eq!(ran(2, vec![]), ["echo w"]);
    // By name, as sealer runs them: "dbs" before "workers".
    assert_eq!(ran(2, vec!["db".into()]), ["echo db", "echo w"]);
}

/// Issue 15: a host's Clusterfile labels and taints go to `agent kube mark` on the first
/// master, after the joins, on every run; a host with none has no such phase.
#[test]
fn node_marks_ask_the_first_master() {
    let master =
        Arc::new(Scripted::new("m").on("'mark'", "kubectl label node w1 --overwrite disk=ssd"));
    let m: Arc<dyn Remote> = master.clone();
    let phase = kube::NodeMarks(Arc::new(kube::KubeRun::answering(m, D)));
    let hosts = [("10.0.0.2", Role::Master), ("10.0.0.5", Role::Node)];
    let here = Arc::new(Scripted::new("n"));
    let n = host_node(
        &here,
        &hosts,
        1,
        |h| {
            h.labels = vec![("disk".into(), "ssd".into())];
            h.taints = vec![crate::marks::Taint::parse("dedicated=db:NoSchedule").unwrap()];
        },
        Default::default(),
    );
    assert!(phase.should_run(&n) && !phase.journaled());
    phase.run(&n, &Attempt::default()).unwrap();
    assert_eq!(
        master.calls()[0].line,
        concat!(
            r"'/var/lib/it'\''s bale/bundle.bale' 'agent' 'kube' 'mark' '--address' '10.0.0.5' ",
            "'--label' 'disk=ssd' '--taint' 'dedicated=db:NoSchedule'"
        )
    );
    assert!(here.calls().is_empty(), "nothing runs on the host itself");
    let bare = host_node(&here, &hosts, 1, |_| {}, Default::default());
    assert!(!phase.should_run(&bare));
}
