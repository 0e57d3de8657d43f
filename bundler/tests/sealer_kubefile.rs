//! Sealer's Kubefile instructions with sealer's meaning: one test per instruction (its meaning
//! in the plan, or in the laid-out bundle tree and its apps), and the corpus of real Kubefiles
//! from sealer, ACK Distro and sealos (`tests/fixtures/sealer/kubefiles`, sources in
//! `tests/fixtures/sealer/SOURCES`), each with its expected outcome.

use bale_bundler::build::{prepare, PrepareOptions, Prepared};
use bale_bundler::kubefile::{
    parse_for, AppRole, BuildPlan, BuildVars, Command, InstallStep, Step,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn plan_for(arch: &str, text: &str) -> Result<BuildPlan, String> {
    parse_for(
        "Kubefile",
        text,
        &BTreeMap::new(),
        &BuildVars::for_arch(arch),
    )
    .map_err(|e| e.to_string())
}

fn ok(text: &str) -> BuildPlan {
    plan_for("amd64", text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match plan_for("amd64", text) {
        Ok(p) => panic!("expected a refusal, got {p:#?}"),
        Err(e) => e,
    }
}

fn shells(plan: &BuildPlan) -> Vec<String> {
    plan.install_steps
        .iter()
        .map(|s| match s {
            InstallStep::Cmd {
                command: Command::Shell(c),
                ..
            } => c.clone(),
            other => panic!("not a shell CMD: {other:?}"),
        })
        .collect()
}

// ---- CMD, CMDS -------------------------------------------------------------------------

/// Old sealer and every sealos image write CMD as a list of shell commands.
#[test]
fn cmd_exec_list_is_shell_commands_run_in_order() {
    let p = ok("FROM scratch\n\
                CMD [\"kubectl apply -f a.yaml\", \"helm install b charts/b --set x=1\"]\n\
                CMD kubectl get pods\n");
    assert_eq!(
        shells(&p),
        [
            "kubectl apply -f a.yaml",
            "helm install b charts/b --set x=1",
            "kubectl get pods"
        ]
    );
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    // Both elements come from line 2, for messages at install time.
    assert!(matches!(
        p.install_steps[1],
        InstallStep::Cmd { line: 2, .. }
    ));
}

/// Docker's argv form reads differently in sealer: each word would run alone. Warned.
#[test]
fn cmd_argv_list_follows_sealer_and_warns() {
    let p = ok("FROM scratch\nCMD [\"kubectl\", \"get\", \"pods\"]\n");
    assert_eq!(shells(&p), ["kubectl", "get", "pods"]);
    assert_eq!(
        p.warnings,
        [
            "Kubefile:2: CMD [\"kubectl\", \"get\", \"pods\"] runs each element as its own shell \
          command (sealer's meaning), not as one program with arguments; to run one command \
          write CMD [\"kubectl get pods\"]"
        ]
    );
}

#[test]
fn cmds_is_a_list_of_shell_commands() {
    let p =
        ok("FROM scratch\nCMDS [\"kubectl apply -f abc.yaml\", \"kubectl apply -f bcd.yaml\"]\n");
    assert_eq!(
        shells(&p),
        ["kubectl apply -f abc.yaml", "kubectl apply -f bcd.yaml"]
    );
    // Text that is no list is one command, as sealer reads it.
    assert_eq!(
        shells(&ok("FROM scratch\nCMDS kubectl apply -f a.yaml\n")),
        ["kubectl apply -f a.yaml"]
    );
    assert_eq!(
        err("FROM scratch\nCMDS [\"a\"]\nCMDS [\"b\"]\n"),
        "Kubefile:3: a second CMDS (the first is at line 2); put all commands in one CMDS list"
    );
    assert!(err("FROM scratch\nCMDS ['a', 'b']\n")
        .starts_with("Kubefile:2: CMDS [...] must be a JSON array"));
    assert_eq!(
        err("FROM scratch\nCMDS []\n"),
        "Kubefile:2: CMDS [] is empty; give at least one command"
    );
}

/// RUN keeps Docker's argv form: sealer hands RUN to its image builder.
#[test]
fn run_exec_form_stays_argv() {
    let p = ok("FROM scratch\nRUN [\"sh\", \"-c\", \"echo hi\"]\n");
    let Step::Run(r) = &p.steps[0] else {
        panic!("{:?}", p.steps)
    };
    assert_eq!(
        r.command,
        Command::Exec(vec!["sh".into(), "-c".into(), "echo hi".into()])
    );
}

// ---- APP, CNI, CSI, LAUNCH, APPCMDS, APPENV ----------------------------------------------

#[test]
fn app_cni_csi_record_their_sources_and_directory() {
    let p = ok("FROM scratch\n\
                CNI calico local://cni/calico.yaml\n\
                CSI openebs local://charts/openebs\n\
                APP web local://web.yaml local://web-init.sh\n\
                LAUNCH [\"web\"]\n");
    let roles: Vec<(&str, AppRole, &str)> = p
        .apps
        .values()
        .map(|a| (a.name.as_str(), a.role, a.dir.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        roles,
        [
            ("calico", AppRole::Cni, "application/apps/calico"),
            ("openebs", AppRole::Csi, "application/apps/openebs"),
            ("web", AppRole::App, "application/apps/web"),
        ]
    );
    assert_eq!(p.apps["web"].sources, ["web.yaml", "web-init.sh"]);
    // CNI, then CSI, then what LAUNCH names.
    let launched: Vec<&str> = p
        .install_steps
        .iter()
        .map(|s| match s {
            InstallStep::Launch { app, .. } => app.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(launched, ["calico", "openebs", "web"]);
    assert_eq!(
        err("FROM scratch\nAPP web https://example.com/web.yaml\n"),
        "Kubefile:2: APP source \"https://example.com/web.yaml\": only local:// sources are \
         allowed; download it in a RUN step or beforehand and write local://PATH"
    );
}

#[test]
fn launch_takes_a_list_or_bare_names() {
    let p = ok("FROM scratch\nAPP a local://a.yaml\nAPP b local://b.yaml\nLAUNCH a, b\n");
    assert_eq!(p.install_steps.len(), 2);
    assert_eq!(
        err("FROM scratch\nAPP a local://a.yaml\nLAUNCH [\"web\"]\n"),
        "Kubefile:3: LAUNCH names app \"web\" that no APP above defines; define it first: APP web local://path"
    );
}

/// Sealer joins APPCMDS' list into one command (`["executable", "param", …]`); a list of
/// whole commands runs them in order.
#[test]
fn appcmds_argv_list_is_one_command() {
    let p = ok(
        "FROM scratch\nAPP a local://a\nAPPCMDS a [\"kubectl\", \"apply\", \"-f\", \"a.yaml\"]\n",
    );
    assert_eq!(p.apps["a"].cmds, ["kubectl apply -f a.yaml"]);
    let p =
        ok("FROM scratch\nAPP a local://a\nAPPCMDS a [\"kubectl apply -f x.yaml\", \"sh y.sh\"]\n");
    assert_eq!(p.apps["a"].cmds, ["kubectl apply -f x.yaml", "sh y.sh"]);
}

#[test]
fn appenv_gives_an_app_its_variables() {
    let p = ok("FROM scratch\nENV G=1\nAPP a local://a.yaml\n\
                APPENV a key1=value1 key2=value2\nAPPENV a key1=value3\nLAUNCH [\"a\"]\n");
    let env: Vec<(&str, &str)> = p.apps["a"]
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("key1", "value3"), ("key2", "value2")]);
    // The app's variables are its own, not the bundle's.
    assert_eq!(p.env.keys().collect::<Vec<_>>(), ["G"]);
    assert_eq!(
        err("FROM scratch\nAPPENV nope k=v\n"),
        "Kubefile:2: APPENV names app \"nope\" that no APP above defines; define it first: APP nope local://path"
    );
    assert_eq!(
        err("FROM scratch\nAPP a local://a.yaml\nAPPENV a novalue\n"),
        "Kubefile:3: APPENV a: \"novalue\" is not KEY=VALUE with a name of letters, digits and _; write APPENV a key=value"
    );
    assert!(err("FROM scratch\nAPP a local://a.yaml\nAPPENV a\n")
        .contains("APPENV needs an app name and KEY=VALUE pairs"));
}

#[test]
fn kubeversion_env_arg_label_maintainer() {
    let p = ok("ARG V=1\nFROM scratch\nKUBEVERSION >=1.20\nENV A=$V\nLABEL k=v\nMAINTAINER me\n");
    assert_eq!(p.kube_version.as_deref(), Some(">=1.20"));
    assert_eq!(p.env["A"], "1");
    assert_eq!(p.labels["k"], "v");
    assert_eq!(p.labels["maintainer"], "me");
}

// ---- ${ARCH} ------------------------------------------------------------------------------

#[test]
fn arch_is_the_platform_being_built() {
    let text = "FROM scratch\nCOPY ${ARCH}/bin ./bin\nADD [\"rpm/$ARCH\", \"rpm/\"]\n";
    for arch in ["amd64", "arm64"] {
        let p = plan_for(arch, text).unwrap();
        let sources: Vec<&str> = p
            .steps
            .iter()
            .map(|s| match s {
                Step::Copy(c) => c.sources[0].as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sources, [format!("{arch}/bin"), format!("rpm/{arch}")]);
        assert_eq!(p.arch, arch);
        assert!(p.platform_dependent);
    }
    // The kernel's names are read as Go's.
    assert_eq!(plan_for("x86_64", text).unwrap().arch, "amd64");
    assert_eq!(plan_for("aarch64", text).unwrap().arch, "arm64");
    assert!(!ok("FROM scratch\nCOPY bin bin\n").platform_dependent);
    // The Kubefile's own ARCH wins.
    let p = ok("FROM scratch\nARG ARCH=riscv64\nCOPY ${ARCH}/bin bin\n");
    assert!(matches!(&p.steps[0], Step::Copy(c) if c.sources == ["riscv64/bin"]));
    assert!(!p.platform_dependent);
    // In APP sources too.
    let p = ok("FROM scratch\nAPP a local://$ARCH/a.yaml\n");
    assert_eq!(p.apps["a"].sources, ["amd64/a.yaml"]);
}

/// A variable that is not set in a path is named, not read as an absolute path.
#[test]
fn an_unknown_variable_in_a_path_is_named() {
    assert_eq!(
        err("FROM scratch\nCOPY ${ARHC}/bin bin\n"),
        "Kubefile:2: COPY ${ARHC}/bin bin: $ARHC is not set; did you mean $ARCH? the build \
         variables are $ARCH (amd64, arm64: the platform being built); declare others with \
         ARG ARHC=default (or ARG ARHC and --build-arg ARHC=...) or ENV ARHC=..."
    );
    assert!(err("FROM ack-distro:${TAG}\n")
        .starts_with("Kubefile:1: FROM ack-distro:${TAG}: $TAG is not set;"));
    assert!(err("FROM scratch\nAPP a local://${DIR}/a.yaml\n").contains("$DIR is not set"));
}

// ---- Builds: what goes into the bundle ----------------------------------------------------

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn prepared(ctx: &Path, kubefile: &str, arch: &str) -> Result<Prepared, String> {
    write(&ctx.join("Kubefile"), kubefile);
    prepare(
        &ctx.join("Kubefile"),
        ctx,
        &PrepareOptions {
            arch: Some(arch.into()),
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())
}

fn tree(p: &Prepared) -> Vec<&str> {
    p.layout.keys().map(String::as_str).collect()
}

/// APP/CNI/CSI sources go to `application/apps/<name>/` where the launch finds them; the
/// launch is judged as sealer judges it: chart, YAML files, first shell script.
#[test]
fn app_sources_are_put_in_the_bundle() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path();
    write(&ctx.join("yamls/a.yaml"), "kind: List\n");
    write(&ctx.join("yamls/sub/b.yml"), "kind: List\n");
    write(&ctx.join("chart/Chart.yaml"), "name: c\n");
    write(&ctx.join("chart/templates/x.yaml"), "kind: List\n");
    write(&ctx.join("scripts/1.sh"), "echo 1\n");
    write(&ctx.join("scripts/2.sh"), "echo 2\n");
    write(&ctx.join("calico.yaml"), "kind: List\n");
    let p = prepared(
        ctx,
        "FROM scratch\n\
         CNI calico local://calico.yaml\n\
         CSI store local://chart\n\
         APP web local://yamls\n\
         APP setup local://scripts\n\
         LAUNCH [\"web\", \"setup\"]\n",
        "amd64",
    )
    .unwrap();
    for path in [
        "application/apps/calico/calico.yaml",
        "application/apps/store/Chart.yaml",
        "application/apps/store/templates/x.yaml",
        "application/apps/web/a.yaml",
        "application/apps/web/sub/b.yml",
        "application/apps/setup/1.sh",
        "application/apps/setup/2.sh",
    ] {
        assert!(tree(&p).contains(&path), "{path} missing: {:?}", tree(&p));
    }
    let sources = |n: &str| p.apps[n].sources.clone();
    assert_eq!(sources("calico"), ["application/apps/calico/calico.yaml"]);
    assert_eq!(sources("store"), ["application/apps/store"]);
    assert_eq!(
        sources("web"),
        [
            "application/apps/web/a.yaml",
            "application/apps/web/sub/b.yml"
        ]
    );
    assert_eq!(sources("setup"), ["application/apps/setup/1.sh"]);
    // The parsed plan still names the context, for image discovery.
    assert_eq!(p.plan.apps["web"].sources, ["yamls"]);
}

#[test]
fn an_app_of_other_files_needs_appcmds() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path();
    write(&ctx.join("mixed/install.sh"), "echo\n");
    write(&ctx.join("mixed/app.yaml"), "kind: List\n");
    let e = prepared(
        ctx,
        "FROM scratch\nAPP m local://mixed\nLAUNCH m\n",
        "amd64",
    )
    .err()
    .unwrap();
    assert!(
        e.ends_with(
            "Kubefile:2: APP m: it holds both YAML (application/apps/m/app.yaml) and shell \
             scripts (application/apps/m/install.sh), so the app has no default launch (sealer \
             refuses it too); say how to launch it: APPCMDS m [\"kubectl apply -f .\"] (run \
             in application/apps/m)"
        ),
        "{e}"
    );
    let p = prepared(
        ctx,
        "FROM scratch\nAPP m local://mixed\nAPPCMDS m [\"kubectl apply -f app.yaml\"]\nLAUNCH m\n",
        "amd64",
    )
    .unwrap();
    assert_eq!(p.apps["m"].cmds, ["kubectl apply -f app.yaml"]);
    assert_eq!(p.apps["m"].dir.as_deref(), Some("application/apps/m"));
    let e = prepared(ctx, "FROM scratch\nAPP m local://nope.yaml\n", "amd64")
        .err()
        .unwrap();
    assert!(
        e.contains(
            "Kubefile:2: APP m source local://nope.yaml does not exist in the build context"
        ),
        "{e}"
    );
}

/// APPENV reaches the app's commands and, at install, the app's templates: the build has
/// nothing to warn about (the install renders `*.tmpl` files, see installer/src/site.rs).
#[test]
fn appenv_and_templates_build_without_warnings() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path();
    write(
        &ctx.join("app/deploy.yaml.tmpl"),
        "replicas: {{ .replicas }}\n",
    );
    write(
        &ctx.join("etc/kubeadm.yml.tmpl"),
        "podSubnet: {{ .PodCIDR }}\n",
    );
    let p = prepared(
        ctx,
        "FROM scratch\nENV PodCIDR=10.0.0.0/16\nCOPY etc etc\nAPP a local://app\n\
         APPENV a replicas=2\nAPPCMDS a [\"kubectl apply -f deploy.yaml\"]\nLAUNCH a\n",
        "amd64",
    )
    .unwrap();
    assert_eq!(p.apps["a"].env["replicas"], "2");
    assert!(p.layout.contains_key("etc/kubeadm.yml.tmpl"));
    assert!(p.layout.contains_key("application/apps/a/deploy.yaml.tmpl"));
    assert!(p.warnings.is_empty(), "{:#?}", p.warnings);
}

#[test]
fn arch_picks_the_files_of_the_platform() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path();
    write(&ctx.join("amd64/bin/kubectl"), "x86\n");
    write(&ctx.join("arm64/bin/kubectl"), "arm\n");
    for arch in ["amd64", "arm64"] {
        let p = prepared(ctx, "FROM scratch\nCOPY ${ARCH}/bin ./bin\n", arch).unwrap();
        let placed = &p.layout["bin/kubectl"];
        match &placed.node {
            bale_bundler::build::Node::File { source, .. } => {
                assert_eq!(
                    source,
                    &ctx.canonicalize().unwrap().join(arch).join("bin/kubectl")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }
}

/// Current sealer (as Docker) copies a directory's contents; old sealer put the directory in
/// by its name. The build follows the current rule and names the files that moved.
#[test]
fn copy_of_a_directory_warns_where_old_sealer_differed() {
    let d = tempfile::tempdir().unwrap();
    let ctx = d.path();
    write(&ctx.join("etc/kubeadm.yaml"), "a\n");
    write(&ctx.join("etc/sub/b.conf"), "b\n");
    write(&ctx.join("yamls/x.yaml"), "x\n");
    write(&ctx.join("plugin.yml"), "p\n");
    let p = prepared(
        ctx,
        "FROM scratch\nCOPY etc .\nCOPY yamls yamls\nCOPY plugin.yml manifests\n",
        "amd64",
    )
    .unwrap();
    assert!(tree(&p).contains(&"kubeadm.yaml"), "{:?}", tree(&p));
    assert!(tree(&p).contains(&"yamls/x.yaml"));
    assert!(tree(&p).contains(&"manifests"));
    let shown = format!("{}/", ctx.display());
    let warnings: Vec<String> = p.warnings.iter().map(|w| w.replace(&shown, "")).collect();
    assert_eq!(
        warnings,
        [
            "Kubefile:2: COPY etc .: laid out as current sealer and Docker do, which differs \
             from old sealer: kubeadm.yaml (old sealer: etc/kubeadm.yaml), sub/b.conf (old \
             sealer: etc/sub/b.conf); to keep the old layout write COPY etc etc",
            "Kubefile:4: COPY plugin.yml manifests: laid out as current sealer and Docker do, \
             which differs from old sealer: manifests (old sealer: manifests/plugin.yml); to \
             keep the old layout write COPY plugin.yml manifests/",
        ]
    );
}

// ---- The corpus ---------------------------------------------------------------------------

enum Outcome {
    /// Parsed: install steps, apps, warnings (those about a named `FROM` base left out: that
    /// is the named-base work's, and they change with it).
    Accepted(usize, usize, &'static [&'static str]),
    /// Refused with this message (after `file:line: `).
    Refused(&'static str),
}

fn ok_(steps: usize, apps: usize, warnings: &'static [&'static str]) -> Outcome {
    Outcome::Accepted(steps, apps, warnings)
}

const TAG_REFUSED: &str = "FROM ack-distro:${TAG}: $TAG is not set; the build variables are \
    $ARCH (amd64, arm64: the platform being built); declare others with ARG TAG=default (or \
    ARG TAG and --build-arg TAG=...) or ENV TAG=...";

fn corpus_table() -> Vec<(&'static str, Outcome)> {
    vec![
        ("ackdistro--build--Kubefile", ok_(0, 0, &[])),
        ("ackdistro--build--Kubefile-upgrade", ok_(0, 0, &[])),
        ("ackdistro--build--Kubefile1", Outcome::Refused(TAG_REFUSED)),
        ("ackdistro--build--Kubefile2", Outcome::Refused(TAG_REFUSED)),
        ("ackdistro--build--Kubefile@1be037a6", ok_(0, 0, &[])),
        ("ackdistro--build--Kubefile@2ca53a9d", ok_(0, 0, &[])),
        ("ackdistro--build--Kubefile@4fc396ad", ok_(0, 0, &[])),
        ("ackdistro--build--Kubefile@63742c04", ok_(6, 0, &[])),
        ("ackdistro--build--Kubefile@f138cee0", ok_(3, 0, &[])),
        ("ackdistro--build--test-Kubefile", ok_(3, 0, &[])),
        ("ackdistro--context--Kubefile", ok_(0, 0, &[])),
        (
            "ackdistro--test--suites--build--fixtures--cloud_build--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "ackdistro--test--suites--build--fixtures--container_build--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "ackdistro--test--suites--build--fixtures--lite_build--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "ackdistro--test--suites--build--fixtures--local_build--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "ackdistro--test--suites--build--fixtures--local_build--Kubefile_only_copy",
            ok_(0, 0, &[]),
        ),
        ("sealer--applications--calico--Kubefile", ok_(2, 0, &[])),
        (
            "sealer--applications--calico--latest--Kubefile",
            ok_(2, 0, &[]),
        ),
        ("sealer--applications--cassandra--Kubefile", ok_(1, 0, &[])),
        (
            "sealer--applications--cockroachdb--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--applications--dashboard--v2.2.0--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--applications--debug--ubuntu--Kubefile",
            ok_(0, 0, &[]),
        ),
        ("sealer--applications--flannel--Kubefile", ok_(1, 0, &[])),
        (
            "sealer--applications--gpu-operator--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--applications--helm--v3.6.0--Kubefile",
            ok_(1, 0, &[]),
        ),
        ("sealer--applications--ingress--Kubefile", ok_(1, 0, &[])),
        ("sealer--applications--kafka--Kubefile", ok_(1, 0, &[])),
        (
            "sealer--applications--kube-prometheus-stack--Kubefile",
            ok_(4, 0, &[]),
        ),
        (
            "sealer--applications--loki-stack--fluentbit-loki-stack--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--applications--loki-stack--promtail-loki-stack--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--applications--loki-stack-fluentbit--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--applications--loki-stack-promtail--Kubefile",
            ok_(1, 0, &[]),
        ),
        ("sealer--applications--longhorn--Kubefile", ok_(1, 0, &[])),
        ("sealer--applications--minio--Kubefile", ok_(1, 0, &[])),
        ("sealer--applications--mongodb--Kubefile", ok_(1, 0, &[])),
        ("sealer--applications--mysql--Kubefile", ok_(1, 0, &[])),
        // Exec-list CMDs: one step per shell command.
        (
            "sealer--applications--mysql-operator--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealer--applications--nvidia-plugin--Kubefile",
            ok_(0, 0, &[]),
        ),
        ("sealer--applications--nydus--Kubefile", ok_(0, 0, &[])),
        (
            "sealer--applications--openebs--cstor--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--applications--openebs--jiva--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealer--applications--openebs--localpv--Kubefile",
            ok_(1, 0, &[]),
        ),
        ("sealer--applications--postgresql--Kubefile", ok_(1, 0, &[])),
        (
            "sealer--applications--prometheus-stack--Kubefile",
            ok_(2, 0, &[]),
        ),
        ("sealer--applications--redis--Kubefile", ok_(1, 0, &[])),
        (
            "sealer--applications--redis-operator--Kubefile",
            ok_(3, 0, &[]),
        ),
        ("sealer--applications--rocketmq--Kubefile", ok_(3, 0, &[])),
        ("sealer--applications--rook-ceph--Kubefile", ok_(1, 0, &[])),
        ("sealer--applications--rookceph--Kubefile", ok_(3, 0, &[])),
        (
            "sealer--applications--rookceph--rookceph-block--Kubefile",
            ok_(4, 0, &[]),
        ),
        (
            "sealer--applications--rookceph--rookceph-file--Kubefile",
            ok_(4, 0, &[]),
        ),
        (
            "sealer--applications--rookceph--rookceph-object--Kubefile",
            ok_(4, 0, &[]),
        ),
        ("sealer--applications--skywalking--Kubefile", ok_(1, 0, &[])),
        (
            "sealer--applications--strimzi-kafka--Kubefile",
            ok_(4, 0, &[]),
        ),
        ("sealer--applications--tidb--Kubefile", ok_(3, 0, &[])),
        ("sealer--applications--zookeeper--Kubefile", ok_(1, 0, &[])),
        (
            "sealer--e2e-test--suites--build--fixtures--lite_build--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--e2e-test--suites--build--fixtures--local_build--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--e2e-test--suites--build--fixtures--local_build--Kubefile_only_copy",
            ok_(0, 0, &[]),
        ),
        (
            "sealer--filesystem--rootfs--rootfs--Kubefile",
            ok_(0, 0, &[]),
        ),
        (
            "sealer--pkg--filesystem--rootfs--rootfs--Kubefile",
            ok_(0, 0, &[]),
        ),
        ("sealer--pkg--plugin--test--Kubefile", ok_(0, 0, &[])),
        ("sealer--plugin--test--Kubefile", ok_(0, 0, &[])),
        (
            "sealer--test--suites--build--fixtures--build_test--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--build_with_appcmds--Kubefile",
            ok_(
                2,
                3,
                &["APP yamlapp is defined but never launched; add LAUNCH [\"yamlapp\"]"],
            ),
        ),
        (
            "sealer--test--suites--build--fixtures--build_with_cmds--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--build_with_imagelist_flag--Kubefile",
            ok_(0, 0, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--build_with_launch--Kubefile",
            ok_(1, 1, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--build_with_multi_arch--Kubefile",
            ok_(1, 1, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--cloud_build--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--container_build--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--lite_build--Kubefile",
            ok_(0, 0, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--local_build--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--local_build--Kubefile_only_copy",
            ok_(0, 0, &[]),
        ),
        (
            "sealer--test--suites--build--fixtures--only_copy--Kubefile",
            ok_(0, 0, &[]),
        ),
        ("sealer-nvidia-plugin-pack--Kubefile", ok_(0, 0, &[])),
        // sealos cluster images: exec-list CMDs, $(NAME) install variables.
        (
            "sealos--applications--apisix--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--bitnami-apisix--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--bitnami-mongodb--6.0.2--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--cert-manager--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--crunchy-postgres-operator--v5.2.0--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealos--applications--eck-operator--2.4.0--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealos--applications--fluxcd--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--harbor--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--istio--1.16.2-min--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealos--applications--keda--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--kubeapps--latest--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealos--applications--kubesphere--v3.4.0--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealos--applications--loki-stack--2.6.1--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--metrics-server--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--mongodb-single--6.0.6--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--nerdctl--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--oceanbase-operator--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--openobserve--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--podman--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--rabbitmq-cluster-operator--2.0.0--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealos--applications--rook--v1.10.2--Kubefile",
            ok_(2, 0, &[]),
        ),
        (
            "sealos--applications--stakater-reloader--latest--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--trivy-operator--v0.5.0--Kubefile",
            ok_(1, 0, &[]),
        ),
        (
            "sealos--applications--wordpress--v6.0.1--Kubefile",
            ok_(1, 0, &[]),
        ),
        ("sealos-runtime--Kubefile", ok_(0, 0, &[])),
    ]
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sealer/kubefiles")
}

/// Every real Kubefile of the corpus parses with sealer's meaning, or is refused with the
/// message the table gives; the table names every file and every file has its SOURCES line.
#[test]
fn every_corpus_kubefile_has_its_expected_outcome() {
    let dir = corpus_dir();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let table = corpus_table();
    let named: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    assert_eq!(files, named, "the table lists every corpus file, in order");
    let sources = std::fs::read_to_string(dir.join("../SOURCES")).unwrap();
    let mut problems = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for (name, want) in &table {
        if !sources
            .lines()
            .any(|l| l.starts_with(&format!("tests/fixtures/sealer/kubefiles/{name} ")))
        {
            problems.push(format!("{name}: no line in SOURCES"));
        }
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let got = parse_for(name, &text, &BTreeMap::new(), &BuildVars::for_arch("amd64"));
        match (want, got) {
            (Outcome::Accepted(steps, apps, warnings), Ok(p)) => {
                accepted += 1;
                let w: Vec<String> = p
                    .warnings
                    .iter()
                    .filter(|w| !w.contains(": FROM "))
                    .map(|w| w.splitn(3, ':').nth(2).unwrap_or("").trim().to_string())
                    .collect();
                if (p.install_steps.len(), p.apps.len()) != (*steps, *apps) || w != *warnings {
                    problems.push(format!(
                        "{name}: {} install steps, {} apps, warnings {w:?}; want {steps}, {apps}, {warnings:?}",
                        p.install_steps.len(),
                        p.apps.len()
                    ));
                }
            }
            (Outcome::Refused(msg), Err(e)) => {
                refused += 1;
                let e = e.to_string();
                let text = e.splitn(3, ':').nth(2).unwrap_or("").trim();
                if text != *msg {
                    problems.push(format!("{name}: refused with {e:?}; want {msg:?}"));
                }
            }
            (Outcome::Accepted(..), Err(e)) => problems.push(format!("{name}: refused: {e}")),
            (Outcome::Refused(msg), Ok(_)) => {
                problems.push(format!("{name}: accepted; want refused with {msg:?}"))
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(table.len() >= 40, "the corpus has {} files", table.len());
    eprintln!(
        "sealer Kubefile corpus: {} files, {accepted} accepted, {refused} refused",
        table.len()
    );
}

/// Where the corpus's exec-list CMDs go: one shell command per element, none an argv.
#[test]
fn corpus_exec_list_cmds_are_shell_commands() {
    let text = std::fs::read_to_string(
        corpus_dir().join("sealer--applications--redis-operator--Kubefile"),
    )
    .unwrap();
    let p = parse_for(
        "redis-operator",
        &text,
        &BTreeMap::new(),
        &BuildVars::host(),
    )
    .unwrap();
    assert_eq!(
        shells(&p),
        [
            "kubectl apply -f manifests/databases.spotahome.com_redisfailovers.yaml",
            "kubectl apply -f manifests/all-redis-operator-resources.yaml",
            "kubectl apply -f manifests/basic.yaml",
        ]
    );
}

/// A stand-in for a source the corpus file copies: a file when its name looks like one, else
/// a directory with a manifest in it.
fn fake_source(ctx: &Path, src: &str) {
    if src == "." {
        return;
    }
    let concrete = src.replace(['*', '?'], "x");
    let path = ctx.join(&concrete);
    if path.exists() {
        return;
    }
    let last = concrete.rsplit('/').next().unwrap_or(&concrete);
    let known_files = [
        "imageList",
        "Metadata",
        "VERSION",
        "KUBE_VERSION",
        "KOORD_SCHE_VERSION",
        "kubectl",
        "kubeadm",
        "kubelet",
        "helm",
        "trident",
        "seautil",
        "Clusterfile",
    ];
    if last.contains('.') || known_files.contains(&last) {
        write(&path, "kind: List\n");
    } else {
        write(&path.join("app.yaml"), "kind: List\n");
    }
}

/// The directories of a sealer cluster image's rootfs, standing in for a named base.
const BASE_DIRS: &[&str] = &[
    "bin",
    "etc",
    "manifests",
    "charts",
    "chart",
    "scripts",
    "plugin",
    "plugins",
    "statics",
    "images",
    "cri",
    "rpm",
    "tgz",
];

/// Every accepted corpus Kubefile also lays out a bundle tree, a directory with a cluster
/// image's top directories in place of its base and its RUN steps left out (they download),
/// with its sources faked: the COPY, ADD and APP steps of real files do what they say, app
/// sources land in the app directories, and the places where old sealer laid a COPY out
/// differently are counted.
#[test]
fn every_accepted_corpus_kubefile_lays_out_a_tree() {
    let dir = corpus_dir();
    let mut problems = Vec::new();
    let (mut built, mut moved) = (0, 0);
    for (name, want) in corpus_table() {
        let Outcome::Accepted(..) = want else {
            continue;
        };
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let mut lines = Vec::new();
        let mut in_run = false;
        for l in text.lines() {
            let word = l
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            // A continued RUN goes on while its lines end in a backslash.
            if in_run || word == "RUN" {
                in_run = l.trim_end().ends_with('\\');
                lines.push(String::new());
            } else if word == "FROM" {
                lines.push("FROM base-root".into());
            } else {
                lines.push(l.to_string());
            }
        }
        let kubefile = lines.join("\n") + "\n";
        let d = tempfile::tempdir().unwrap();
        let ctx = d.path();
        for top in BASE_DIRS {
            write(&ctx.join("base-root").join(top).join(".keep"), "");
        }
        let plan = plan_for("amd64", &kubefile).unwrap();
        for step in &plan.steps {
            if let Step::Copy(c) = step {
                for s in &c.sources {
                    fake_source(ctx, s);
                }
            }
        }
        for app in plan.apps.values() {
            for s in &app.sources {
                fake_source(ctx, s);
            }
        }
        match prepared(ctx, &kubefile, "amd64") {
            Ok(p) => {
                built += 1;
                moved += p
                    .warnings
                    .iter()
                    .filter(|w| w.contains("differs from old sealer"))
                    .count();
                if std::env::var_os("SHOW_CORPUS_WARNINGS").is_some() {
                    eprintln!("{name}: {:#?}", p.warnings);
                }
                for app in p.apps.values() {
                    for s in &app.sources {
                        if !p.layout.contains_key(s) {
                            problems.push(format!(
                                "{name}: app {} source {s} not in the tree",
                                app.name
                            ));
                        }
                    }
                }
            }
            Err(e) => problems.push(format!("{name}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!(
        "sealer Kubefile corpus: {built} trees laid out; {moved} COPY steps laid out \
         differently from old sealer"
    );
}
