//! Kubefile parsing: instructions, substitution, build args and every error.

use bale_bundler::kubefile::{
    parse, parse_build_arg, parse_file, App, AppRole, Base, BuildPlan, Command, CopyKind, CopyStep,
    InstallStep, KubefileError, RunStep, Step,
};
use std::collections::BTreeMap;
use std::path::Path;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kubefile/Kubefile")
}

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    args(pairs)
}

fn ok(text: &str) -> BuildPlan {
    match parse("Kubefile", text, &BTreeMap::new()) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn err(text: &str) -> String {
    match parse("Kubefile", text, &BTreeMap::new()) {
        Ok(p) => panic!("expected an error, got {p:#?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn fixture_parses_into_the_full_plan() {
    let plan = parse_file(&fixture(), &BTreeMap::new()).expect("parses");
    assert_eq!(plan.file, fixture().display().to_string());
    assert_eq!(
        plan.from,
        Base::Bundle {
            path: "kubernetes-v1.28.2.bale".into()
        }
    );
    assert_eq!(
        plan.labels,
        map(&[
            ("description", "Shop cluster with web and db"),
            ("maintainer", "Shop Ops <ops@example.com>"),
            ("org.example.team", "shop"),
        ])
    );
    assert_eq!(
        plan.env,
        map(&[
            ("Greeting", "hello   world"),
            ("PodCIDR", "100.64.0.0/10"),
            ("SvcCIDR", "10.96.0.0/16")
        ])
    );
    let want_args: BTreeMap<String, Option<String>> = [
        ("BASE", Some("kubernetes-v1.28.2.bale")),
        ("CHART_VERSION", Some("0.3.0")),
        ("REGISTRY", None),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
    .collect();
    assert_eq!(plan.args, want_args);
    assert_eq!(plan.kube_version.as_deref(), Some(">=1.26 <1.30"));

    let mut run_env = map(&[
        ("BASE", "kubernetes-v1.28.2.bale"),
        ("CHART_VERSION", "0.3.0"),
    ]);
    run_env.extend(plan.env.clone());
    assert_eq!(
        plan.steps,
        vec![
            Step::Copy(CopyStep {
                line: 15,
                kind: CopyKind::Copy,
                sources: vec!["manifests".into()],
                dest: "manifests".into(),
                dest_is_dir: true,
            }),
            Step::Copy(CopyStep {
                line: 16,
                kind: CopyKind::Copy,
                sources: vec!["charts/*.tgz".into(), "imageList".into()],
                dest: "charts".into(),
                dest_is_dir: true,
            }),
            Step::Copy(CopyStep {
                line: 17,
                kind: CopyKind::Add,
                sources: vec!["scripts/install web.sh".into()],
                dest: "scripts".into(),
                dest_is_dir: true,
            }),
            // RUN is recorded verbatim: the shell expands ${CHART_VERSION}
            // from `env`; the comment line inside the continuation is gone.
            Step::Run(RunStep {
                line: 18,
                command: Command::Shell(
                    "helm pull ./charts/web --version ${CHART_VERSION}     && helm dependency build charts/web".into()
                ),
                env: run_env.clone().into(),
            }),
            Step::Run(RunStep {
                line: 21,
                command: Command::Exec(vec!["sh".into(), "-c".into(), "echo $CHART_VERSION".into()]),
                env: run_env.into(),
            }),
        ]
    );

    assert_eq!(
        plan.apps.values().cloned().collect::<Vec<App>>(),
        vec![
            App {
                name: "calico".into(),
                line: 23,
                role: AppRole::Cni,
                sources: vec!["cni/calico.yaml".into()],
                cmds: vec![],
                dir: Some("application/apps/calico".into()),
                env: BTreeMap::new(),
            },
            App {
                name: "db".into(),
                line: 25,
                role: AppRole::App,
                sources: vec!["manifests/db.yaml".into(), "scripts/db-init.sh".into()],
                cmds: vec!["kubectl apply -f db.yaml".into(), "sh db-init.sh".into()],
                dir: Some("application/apps/db".into()),
                env: BTreeMap::new(),
            },
            App {
                name: "web".into(),
                line: 24,
                role: AppRole::App,
                sources: vec!["charts/web".into()],
                cmds: vec![],
                dir: Some("application/apps/web".into()),
                env: BTreeMap::new(),
            },
        ]
    );
    // The CNI nobody launched goes first; the rest keeps Kubefile order.
    assert_eq!(
        plan.install_steps,
        vec![
            InstallStep::Launch {
                line: 23,
                app: "calico".into()
            },
            InstallStep::Cmd {
                line: 27,
                command: Command::Shell("kubectl apply -f manifests/namespace.yaml".into())
            },
            InstallStep::Launch {
                line: 28,
                app: "db".into()
            },
            InstallStep::Launch {
                line: 28,
                app: "web".into()
            },
            // Sealer's exec-list CMD: each element is a shell command, run in order.
            InstallStep::Cmd {
                line: 29,
                command: Command::Shell("kubectl rollout status deploy/web -n shop".into())
            },
            InstallStep::Cmd {
                line: 29,
                command: Command::Shell("kubectl get pods -n shop".into())
            },
        ]
    );
    assert!(plan.warnings.is_empty(), "{:#?}", plan.warnings);
    assert!(plan.unused_build_args.is_empty());
}

#[test]
fn build_args_override_and_unknown_ones_are_reported() {
    let plan = parse_file(
        &fixture(),
        &args(&[
            ("BASE", "./rootfs"),
            ("REGISTRY", "sea.hub:5000"),
            ("TYPO", "1"),
            ("CHART_VERSON", "2"),
        ]),
    )
    .expect("parses");
    assert_eq!(
        plan.from,
        Base::Directory {
            path: "./rootfs".into()
        }
    );
    assert_eq!(plan.args["REGISTRY"].as_deref(), Some("sea.hub:5000"));
    assert_eq!(plan.args["CHART_VERSION"].as_deref(), Some("0.3.0"));
    assert_eq!(plan.unused_build_args, ["CHART_VERSON", "TYPO"]);
    let f = fixture().display().to_string();
    assert_eq!(
        plan.warnings,
        [
            format!("{f}: --build-arg CHART_VERSON was given but no ARG CHART_VERSON declares it; add ARG CHART_VERSON or drop the flag"),
            format!("{f}: --build-arg TYPO was given but no ARG TYPO declares it; add ARG TYPO or drop the flag"),
        ]
    );
}

#[test]
fn build_arg_flag_parsing() {
    assert_eq!(
        parse_build_arg("A=b=c").expect("ok"),
        ("A".to_string(), "b=c".to_string())
    );
    assert_eq!(
        parse_build_arg("A=").expect("ok"),
        ("A".to_string(), String::new())
    );
    let e = parse_build_arg("A").expect_err("no =");
    assert_eq!(
        e.to_string(),
        "invalid --build-arg \"A\": write NAME=VALUE, e.g. --build-arg VERSION=1.2.3"
    );
    let e = parse_build_arg("1A=x").expect_err("bad name");
    assert!(matches!(e, KubefileError::BuildArg { .. }));
}

#[test]
fn from_forms() {
    assert_eq!(ok("FROM scratch").from, Base::Scratch);
    assert_eq!(ok("from SCRATCH").from, Base::Scratch);
    assert_eq!(
        ok("FROM /opt/bases/k8s.bale").from,
        Base::Bundle {
            path: "/opt/bases/k8s.bale".into()
        }
    );
    assert_eq!(
        ok("FROM ./rootfs/").from,
        Base::Directory {
            path: "./rootfs/".into()
        }
    );
    assert_eq!(
        ok("ARG V=1.28\nFROM k8s-${V}.bale").from,
        Base::Bundle {
            path: "k8s-1.28.bale".into()
        }
    );
    assert_eq!(
        ok("FROM 127.0.0.1:5000/ns/base:1").from,
        Base::Registry {
            reference: "127.0.0.1:5000/ns/base:1".into()
        }
    );
    assert_eq!(
        ok("FROM registry.example.com/kubernetes:v1.36").from,
        Base::Registry {
            reference: "registry.example.com/kubernetes:v1.36".into()
        }
    );
}

#[test]
fn substitution_follows_dockerfile_rules() {
    let plan = ok(r#"
FROM scratch
ARG A=arg
ARG EMPTY=
ENV A=env B=$A C=${NOPE:-dflt} D=${EMPTY:-e} E=${EMPTY-e} F=${A:+set} G='$A' H="$A x" I=\$A J=${B}
ENV K=$B
LABEL "x.y"=$K z=${C}z
COPY $A/f "dir with space/" ${NOPE:-src} out/
"#);
    assert_eq!(
        plan.env,
        map(&[
            ("A", "env"),
            // Same-line references see the values from before the line, and
            // ARG A is what $A meant there.
            ("B", "arg"),
            ("C", "dflt"),
            ("D", "e"),
            ("E", ""),
            ("F", "set"),
            ("G", "$A"),
            ("H", "arg x"),
            ("I", "$A"),
            ("J", ""),
            // ENV wins over ARG from here on.
            ("K", "arg"),
        ])
    );
    assert_eq!(plan.labels, map(&[("x.y", "arg"), ("z", "dfltz")]));
    let Step::Copy(c) = &plan.steps[0] else {
        panic!("copy")
    };
    assert_eq!(c.sources, ["env/f", "dir with space", "src"]);
    assert_eq!(
        plan.warnings,
        ["Kubefile:5: $B is not set, so it expands to nothing; declare it with ARG B=... or ENV B=..."]
    );
}

#[test]
fn arg_redeclared_after_from_keeps_its_value() {
    let plan = ok("ARG V=1\nFROM scratch\nARG V\nENV X=$V");
    assert_eq!(plan.env["X"], "1");
    let plan = parse(
        "Kubefile",
        "ARG V=1\nFROM scratch\nARG V=2\nENV X=$V",
        &args(&[("V", "9")]),
    )
    .expect("parses");
    assert_eq!(plan.env["X"], "9");
}

#[test]
fn required_variable_syntax() {
    assert_eq!(
        err("FROM scratch\nARG TOKEN\nENV T=${TOKEN:?set the registry token}"),
        "Kubefile:3: TOKEN is not set: set the registry token; pass --build-arg TOKEN=... or set it with ARG/ENV"
    );
}

#[test]
fn continuations_comments_and_blank_lines() {
    let plan = ok("# head\n\n   # indented comment\nFROM scratch\nLABEL a=1 \\\n\n  # skipped\n  b=2\r\nCMD echo \\\n  done\\");
    assert_eq!(plan.labels, map(&[("a", "1"), ("b", "2")]));
    assert_eq!(
        plan.install_steps,
        [InstallStep::Cmd {
            line: 9,
            command: Command::Shell("echo   done".into())
        }]
    );
}

#[test]
fn copy_paths_are_normalized() {
    let plan = ok(
        "FROM scratch\nCOPY ./a/./b/../c / \nADD x /etc/x\nCOPY [\"a\", \"b\", \"dir/\"]\nCOPY . .",
    );
    let copies: Vec<(Vec<String>, String, bool)> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::Copy(c) => (c.sources.clone(), c.dest.clone(), c.dest_is_dir),
            Step::Run(_) => panic!("run"),
        })
        .collect();
    assert_eq!(
        copies,
        [
            (vec!["a/c".to_string()], ".".to_string(), true),
            (vec!["x".to_string()], "etc/x".to_string(), false),
            (
                vec!["a".to_string(), "b".to_string()],
                "dir".to_string(),
                true
            ),
            (vec![".".to_string()], ".".to_string(), true),
        ]
    );
}

#[test]
fn launch_and_app_forms() {
    let plan = ok("FROM scratch\nCSI openebs local://csi/\nAPP a local://a.yaml\nAPP b local://b.sh\nAPP c local://c/\nLAUNCH a, b\nLAUNCH [c]\nAPPCMDS c helm install c ./c");
    let launched: Vec<String> = plan
        .install_steps
        .iter()
        .map(|s| match s {
            InstallStep::Launch { app, .. } => app.clone(),
            InstallStep::Cmd { .. } => panic!("cmd"),
        })
        .collect();
    assert_eq!(launched, ["openebs", "a", "b", "c"]);
    assert_eq!(plan.apps["c"].cmds, ["helm install c ./c"]);
    assert_eq!(plan.apps["openebs"].role, AppRole::Csi);

    let plan = ok(
        "FROM scratch\nCNI calico local://calico.yaml\nAPP x local://x\nLAUNCH [\"x\", \"calico\"]",
    );
    // Launched explicitly, so the CNI keeps its place.
    let launched: Vec<&str> = plan
        .install_steps
        .iter()
        .filter_map(|s| match s {
            InstallStep::Launch { app, .. } => Some(app.as_str()),
            InstallStep::Cmd { .. } => None,
        })
        .collect();
    assert_eq!(launched, ["x", "calico"]);
}

#[test]
fn warnings_for_unlaunched_apps_and_build_args_in_cmd() {
    let plan = ok("FROM scratch\nARG VERSION=1\nENV REG=x\nAPP web local://web\nCMD helm install web --version $VERSION --set r=${REG}");
    assert_eq!(
        plan.warnings,
        [
            "Kubefile:5: CMD uses $VERSION, a build ARG that is not set at install time; add ENV VERSION=$VERSION",
            "Kubefile:4: APP web is defined but never launched; add LAUNCH [\"web\"]",
        ]
    );
}

#[test]
fn shell_commands_starting_with_a_bracket_stay_shell() {
    let plan = ok("FROM scratch\nRUN [ -f x ] && echo yes\nCMD [ \"$A\" = x ]");
    let Step::Run(r) = &plan.steps[0] else {
        panic!("run")
    };
    assert_eq!(r.command, Command::Shell("[ -f x ] && echo yes".into()));
    assert_eq!(
        plan.install_steps,
        [InstallStep::Cmd {
            line: 3,
            command: Command::Shell("[ \"$A\" = x ]".into())
        }]
    );
}

#[test]
fn plan_is_serializable_and_deterministic() {
    let a = parse_file(&fixture(), &BTreeMap::new()).expect("parses");
    let b = parse_file(&fixture(), &BTreeMap::new()).expect("parses");
    let ja = serde_json::to_string_pretty(&a).expect("json");
    assert_eq!(ja, serde_json::to_string_pretty(&b).expect("json"));
    let back: BuildPlan = serde_json::from_str(&ja).expect("parse back");
    assert_eq!(back, a);
    let steps = serde_json::to_value(&a.install_steps).expect("json");
    assert_eq!(
        steps[0],
        serde_json::json!({"type": "launch", "line": 23, "app": "calico"})
    );
    assert_eq!(
        steps[1],
        serde_json::json!({"type": "cmd", "line": 27, "command": {"shell": "kubectl apply -f manifests/namespace.yaml"}})
    );
    assert_eq!(
        serde_json::to_value(&a.from).expect("json"),
        serde_json::json!({"type": "bundle", "path": "kubernetes-v1.28.2.bale"})
    );
}

/// Every error: (Kubefile text, exact message).
#[test]
fn every_error_names_file_line_and_fix() {
    let cases: &[(&str, &str)] = &[
        ("FROM scratch\n\n\n\n\n\nCOPPY a b", "Kubefile:7: unknown instruction \"COPPY\"; did you mean COPY?"),
        ("FROM scratch\nlabl a=b", "Kubefile:2: unknown instruction \"labl\"; did you mean LABEL?"),
        (
            "FROM scratch\nRUN a\n  -f x",
            "Kubefile:3: unknown instruction \"-f\"; a Kubefile knows FROM, COPY, ADD, ARG, ENV, LABEL, MAINTAINER, RUN, CMD, CMDS, APP, APPCMDS, APPENV, LAUNCH, CNI, CSI, KUBEVERSION (if this line continues the one before, end that line with \\)",
        ),
        ("FROM scratch\nWORKDIR /x", "Kubefile:2: WORKDIR is a Dockerfile instruction that a Kubefile does not support: paths are relative to the build context and COPY destinations to the bundle root; remove it"),
        ("FROM scratch\nENTRYPOINT x", "Kubefile:2: ENTRYPOINT is a Dockerfile instruction that a Kubefile does not support: use CMD for steps that run at install time"),
        ("FROM scratch\nEXPOSE 80", "Kubefile:2: EXPOSE is a Dockerfile instruction that a Kubefile does not support: it has no meaning in a cluster bundle; remove it"),
        // FROM
        ("", "Kubefile: no FROM instruction; begin with FROM scratch, FROM base.bale or FROM ./rootfs-dir"),
        ("# only a comment\nARG A=1", "Kubefile: no FROM instruction; begin with FROM scratch, FROM base.bale or FROM ./rootfs-dir"),
        ("COPY a b\nFROM scratch", "Kubefile:1: COPY before FROM; a Kubefile starts with FROM (only ARG may come before it), e.g. FROM scratch"),
        ("FROM scratch\nFROM other.bale", "Kubefile:2: a second FROM; a Kubefile has one FROM (line 1) and no build stages"),
        ("FROM", "Kubefile:1: FROM needs a base: FROM scratch, FROM base.bale or FROM ./rootfs-dir"),
        ("FROM base.bale AS build", "Kubefile:1: FROM ... AS ...: a Kubefile has no build stages; remove \"AS name\""),
        ("FROM a b", "Kubefile:1: FROM takes one base, got 2: FROM scratch, FROM base.bale or FROM ./rootfs-dir"),
        ("FROM --platform=arm64 x.bale", "Kubefile:1: FROM does not take --platform=arm64; write FROM scratch, FROM base.bale or FROM ./rootfs-dir"),
        ("FROM https://example.com/k8s.bale", "Kubefile:1: FROM https://example.com/k8s.bale: a base is a local .bale file or directory; download it before building"),
        // ARG / ENV / LABEL / MAINTAINER
        ("ARG\nFROM scratch", "Kubefile:1: ARG needs a name, e.g. ARG VERSION or ARG VERSION=1.0"),
        ("ARG 1X=2\nFROM scratch", "Kubefile:1: ARG name \"1X\" is not valid; use letters, digits and _, not starting with a digit"),
        ("FROM scratch\nENV", "Kubefile:2: ENV needs a name and a value, e.g. ENV PodCIDR=\"100.64.0.0/10\""),
        ("FROM scratch\nENV A", "Kubefile:2: ENV A has no value; write ENV A=value (an empty value is ENV A=)"),
        ("FROM scratch\nENV A=1 B", "Kubefile:2: ENV expects KEY=VALUE pairs, got \"B\"; quote values with spaces: ENV PodCIDR=\"100.64.0.0/10\""),
        ("FROM scratch\nENV A=\"1", "Kubefile:2: unterminated double quote in \"A=\\\"1\""),
        ("FROM scratch\nENV my-var=1", "Kubefile:2: ENV name \"my-var\" is not valid; use letters, digits and _, not starting with a digit"),
        ("FROM scratch\nENV A=${B", "Kubefile:2: missing } in \"${B\""),
        ("FROM scratch\nENV A=${B/x/y}", "Kubefile:2: bad substitution ${B/x/y}: write ${NAME} or ${NAME:-default}"),
        ("FROM scratch\nLABEL", "Kubefile:2: LABEL needs a name and a value, e.g. LABEL version=\"1.0\" description=\"my cluster\""),
        ("FROM scratch\nLABEL a=1 =2", "Kubefile:2: LABEL expects KEY=VALUE pairs, got \"=2\"; quote values with spaces: LABEL version=\"1.0\" description=\"my cluster\""),
        ("FROM scratch\nMAINTAINER", "Kubefile:2: MAINTAINER needs a name, e.g. MAINTAINER Jane Doe <jane@example.com>"),
        // COPY / ADD
        ("FROM scratch\n\nCOPY manifests", "Kubefile:3: COPY needs at least a source and a destination, e.g. COPY manifests/ manifests/"),
        ("FROM scratch\nADD", "Kubefile:2: ADD needs at least a source and a destination, e.g. ADD manifests/ manifests/"),
        (
            "FROM scratch\nADD https://get.helm.sh/helm-v3.14.0-linux-amd64.tar.gz bin/",
            "Kubefile:2: ADD cannot download https://get.helm.sh/helm-v3.14.0-linux-amd64.tar.gz: a build reads local files only; download it in a RUN step (RUN curl -fLo file.tgz https://get.helm.sh/helm-v3.14.0-linux-amd64.tar.gz) or beforehand, then COPY it",
        ),
        ("FROM scratch\nCOPY http://x/y.yaml m/", "Kubefile:2: COPY copies files from the build context, not URLs (http://x/y.yaml); download it in a RUN step or beforehand"),
        ("FROM scratch\nCOPY ../secrets/key.pem etc/", "Kubefile:2: COPY source \"../secrets/key.pem\" is outside the build context; move it into the context or build from a higher directory"),
        ("FROM scratch\nCOPY a/../../b etc/", "Kubefile:2: COPY source \"a/../../b\" is outside the build context; move it into the context or build from a higher directory"),
        ("FROM scratch\nCOPY /etc/hosts etc/", "Kubefile:2: COPY source \"/etc/hosts\" is absolute; sources are relative to the build context: move the file into it and write its relative path"),
        ("FROM scratch\nCOPY a ../out", "Kubefile:2: COPY destination \"../out\" leaves the bundle root; remove the \"..\""),
        ("FROM scratch\nCOPY a \"\"", "Kubefile:2: COPY destination is empty; write COPY src dest/"),
        ("FROM scratch\nCOPY \"\" x", "Kubefile:2: COPY source is empty"),
        ("FROM scratch\nCOPY a b dest", "Kubefile:2: COPY with several sources or a wildcard needs a destination directory ending in /, e.g. COPY a b dest/"),
        ("FROM scratch\nCOPY *.yaml dest", "Kubefile:2: COPY with several sources or a wildcard needs a destination directory ending in /, e.g. COPY *.yaml dest/"),
        ("FROM scratch\nCOPY --chown=1000 a b", "Kubefile:2: COPY --chown is not supported: files in a bundle are owned by root; change ownership in a CMD step"),
        ("FROM scratch\nCOPY --from=build a b", "Kubefile:2: COPY --from is not supported: a Kubefile has no build stages; copy from the build context"),
        ("FROM scratch\nADD --chmod=755 a b", "Kubefile:2: ADD --chmod is not supported: the source file's mode is kept; set it on the file before building"),
        ("FROM scratch\nCOPY --link a b", "Kubefile:2: COPY --link is not supported: COPY takes no flags; remove it"),
        ("FROM scratch\nCOPY ['a', 'b']", "Kubefile:2: COPY [...] must be a JSON array of strings in double quotes, e.g. COPY [\"my dir/\", \"manifests/\"]"),
        // RUN / CMD
        ("FROM scratch\nRUN", "Kubefile:2: RUN needs a command, e.g. RUN helm pull ./charts/app"),
        ("FROM scratch\nCMD   ", "Kubefile:2: CMD needs a command, e.g. CMD kubectl apply -f manifests/"),
        ("FROM scratch\nCMD []", "Kubefile:2: CMD [] is empty; give a command"),
        ("FROM scratch\nCMD ['kubectl', 'apply']", "Kubefile:2: CMD ['kubectl', 'apply'] is not a valid JSON array; use double quotes: CMD [\"kubectl\", \"apply\", \"-f\", \"x.yaml\"]"),
        ("FROM scratch\nRUN [\"a\", \"b\",]", "Kubefile:2: RUN [\"a\", \"b\",] is not a valid JSON array; use double quotes: RUN [\"kubectl\", \"apply\", \"-f\", \"x.yaml\"]"),
        ("FROM scratch\nRUN cat <<EOF > /tmp/x", "Kubefile:2: RUN heredocs (<<EOF) are not supported; put the lines in a script, COPY it and RUN it"),
        // APP / CNI / CSI / LAUNCH / APPCMDS
        ("FROM scratch\nAPP web", "Kubefile:2: APP needs a name and at least one source, e.g. APP nginx local://nginx"),
        ("FROM scratch\nCNI", "Kubefile:2: CNI needs a name and at least one source, e.g. CNI calico local://calico"),
        ("FROM scratch\nAPP Web local://w", "Kubefile:2: app name \"Web\" is not valid; use lowercase letters, digits and -, starting and ending with a letter or digit"),
        ("FROM scratch\nAPP web local://a\nAPP web local://b", "Kubefile:3: app \"web\" is already defined at line 2; give this one another name"),
        ("FROM scratch\nAPP web charts/web", "Kubefile:2: APP source \"charts/web\" needs the local:// prefix: APP web local://charts/web"),
        ("FROM scratch\nAPP web https://charts.example.com/web-1.0.tgz", "Kubefile:2: APP source \"https://charts.example.com/web-1.0.tgz\": only local:// sources are allowed; download it in a RUN step or beforehand and write local://PATH"),
        ("FROM scratch\nAPP web local://../web", "Kubefile:2: APP source \"../web\" is outside the build context; move it into the context or build from a higher directory"),
        ("FROM scratch\nCNI calico local://c.yaml\nCNI flannel local://f.yaml", "Kubefile:3: a second CNI (flannel); the cluster has one pod network, already calico at line 2"),
        ("FROM scratch\nLAUNCH", "Kubefile:2: LAUNCH needs app names, e.g. LAUNCH [\"nginx\", \"redis\"]"),
        ("FROM scratch\nLAUNCH []", "Kubefile:2: LAUNCH needs app names, e.g. LAUNCH [\"nginx\", \"redis\"]"),
        ("FROM scratch\nAPP nginx local://n\nLAUNCH [\"ngnix\"]", "Kubefile:3: LAUNCH names app \"ngnix\" that no APP above defines; did you mean \"nginx\"?"),
        ("FROM scratch\nLAUNCH [\"redis\"]", "Kubefile:2: LAUNCH names app \"redis\" that no APP above defines; define it first: APP redis local://path"),
        ("FROM scratch\nAPP a local://a\nLAUNCH a\nLAUNCH a", "Kubefile:4: app \"a\" is already launched at line 3; launch it once"),
        ("FROM scratch\nLAUNCH [\"a\"", "Kubefile:2: LAUNCH list is not closed with ]; write LAUNCH [\"a\", \"b\"]"),
        ("FROM scratch\nAPPCMDS a", "Kubefile:2: APPCMDS needs an app name and commands, e.g. APPCMDS nginx [\"helm install nginx charts/nginx\"]"),
        ("FROM scratch\nAPPCMDS a [\"x\"]", "Kubefile:2: APPCMDS names app \"a\" that no APP above defines; define it first: APP a local://path"),
        ("FROM scratch\nAPP a local://a\nAPPCMDS a []", "Kubefile:3: APPCMDS [] is empty; give at least one command"),
        ("FROM scratch\nAPP a local://a\nAPPCMDS a ['x']", "Kubefile:3: APPCMDS [...] must be a JSON array of strings in double quotes, e.g. APPCMDS nginx [\"kubectl apply -f app.yaml\"]"),
        ("FROM scratch\nAPP a local://a\nAPPCMDS a x\nAPPCMDS a y", "Kubefile:4: APPCMDS for \"a\" is already given at line 3; put all commands in one list"),
        // KUBEVERSION
        ("FROM scratch\nKUBEVERSION", "Kubefile:2: KUBEVERSION needs a version or range, e.g. KUBEVERSION v1.28.2 or KUBEVERSION >=1.26 <1.30"),
        ("FROM scratch\nKUBEVERSION v1.28\nKUBEVERSION v1.29", "Kubefile:3: a second KUBEVERSION (the first is at line 2); keep one"),
    ];
    let mut failures = Vec::new();
    for (text, want) in cases {
        let got = match parse("Kubefile", text, &BTreeMap::new()) {
            Ok(_) => "<parsed without error>".to_string(),
            Err(e) => e.to_string(),
        };
        if got != *want {
            failures.push(format!("input: {text:?}\n want: {want}\n  got: {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn error_line_is_where_a_continued_instruction_starts() {
    assert_eq!(
        err("FROM scratch\nCOPY \\\n  a \\\n  ../b \\\n  dest/"),
        "Kubefile:2: COPY source \"../b\" is outside the build context; move it into the context or build from a higher directory"
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let e = parse_file(Path::new("/nonexistent/Kubefile"), &BTreeMap::new()).expect_err("missing");
    assert!(matches!(e, KubefileError::Io { .. }));
    assert!(e.to_string().starts_with("/nonexistent/Kubefile: "), "{e}");
}

mod resolve {
    use super::*;
    use std::fs;

    fn context() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path();
        fs::create_dir_all(p.join("manifests/sub")).expect("mkdir");
        for f in [
            "manifests/b.yaml",
            "manifests/a.yaml",
            "manifests/c.yml",
            "manifests/sub/d.yaml",
            "imageList",
        ] {
            fs::write(p.join(f), "x").expect("write");
        }
        tmp
    }

    fn copy_step(plan: &BuildPlan, i: usize) -> &CopyStep {
        match &plan.steps[i] {
            Step::Copy(c) => c,
            Step::Run(_) => panic!("not a copy"),
        }
    }

    #[test]
    fn globs_expand_sorted_per_component() {
        let ctx = context();
        let plan = ok("FROM scratch\nCOPY manifests/*.yaml manifests/*/*.yaml imageList out/\nCOPY manifests dir/");
        let got = plan
            .resolve_sources(copy_step(&plan, 0), ctx.path())
            .expect("resolves");
        let rel: Vec<String> = got
            .iter()
            .map(|p| {
                p.strip_prefix(ctx.path().canonicalize().expect("canon"))
                    .expect("inside")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            rel,
            [
                "manifests/a.yaml",
                "manifests/b.yaml",
                "manifests/sub/d.yaml",
                "imageList"
            ]
        );
        assert_eq!(
            plan.resolve_sources(copy_step(&plan, 1), ctx.path())
                .expect("resolves")
                .len(),
            1
        );
    }

    #[test]
    fn missing_sources_and_symlink_escapes_are_errors() {
        let ctx = context();
        let plan =
            ok("FROM scratch\nCOPY nope.yaml x\nCOPY manifests/*.json out/\nCOPY link/passwd x");
        let e = plan
            .resolve_sources(copy_step(&plan, 0), ctx.path())
            .expect_err("missing");
        assert_eq!(
            e.to_string(),
            format!(
                "Kubefile:2: COPY source \"nope.yaml\" does not exist in the build context {}",
                ctx.path().display()
            )
        );
        let e = plan
            .resolve_sources(copy_step(&plan, 1), ctx.path())
            .expect_err("no match");
        assert_eq!(
            e.to_string(),
            format!("Kubefile:3: COPY source \"manifests/*.json\" matches no files in the build context {}", ctx.path().display())
        );
        std::os::unix::fs::symlink("/etc", ctx.path().join("link")).expect("symlink");
        let e = plan
            .resolve_sources(copy_step(&plan, 2), ctx.path())
            .expect_err("escape");
        let msg = e.to_string();
        assert!(msg.starts_with("Kubefile:4: COPY source "), "{msg}");
        assert!(msg.ends_with("resolves to /etc/passwd, outside the build context (a symlink?); copy the file into the context"), "{msg}");
    }
}

#[test]
fn from_an_image_name_warns() {
    let plan = ok("FROM kubernetes:v1.28.2");
    assert_eq!(
        plan.from,
        Base::Directory {
            path: "kubernetes:v1.28.2".into()
        }
    );
    assert_eq!(
        plan.warnings,
        ["Kubefile:1: FROM kubernetes:v1.28.2 is read as a directory; a base is a .bale file, a directory, or a bundle in a registry named with its host (FROM registry.example.com/ns/kubernetes:v1.28.2)"]
    );
}

/// `A` doubled from 16 bytes up to `size` bytes, one ENV line per doubling.
fn doubling(lines: usize) -> String {
    let mut k = String::from("FROM scratch\nENV A=0123456789abcdef\n");
    for _ in 0..lines {
        k.push_str("ENV A=$A$A\n");
    }
    k
}

/// F14: `ENV A=$A$A` doubled per line (a 404-byte file wanted 16 GiB); it now stops at the
/// line that passes the expansion limit.
#[test]
fn self_doubling_variables_stop_at_the_expansion_limit() {
    let e = err(&doubling(17));
    assert!(
        e.starts_with("Kubefile:19: ") && e.contains("more than 1048576 bytes"),
        "{e}"
    );
    // the 404-byte file of the report
    let k = doubling(30);
    assert!(k.len() < 404, "{}", k.len());
    let t = std::time::Instant::now();
    assert!(err(&k).starts_with("Kubefile:19: "));
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    // 16 doublings (1 MiB) are still fine
    assert_eq!(ok(&doubling(16)).env["A"].len(), 1 << 20);
}

/// F14: `${A:-${A:-…}}` nested was quadratic; past 16 levels it is refused at once.
#[test]
fn nested_defaults_are_refused_past_the_limit() {
    let n = 50_000;
    let k = format!(
        "FROM scratch\nENV B=1\nENV C={}x{}\n",
        "${A:-".repeat(n),
        "}".repeat(n)
    );
    let t = std::time::Instant::now();
    let e = err(&k);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    assert!(
        e.starts_with("Kubefile:3: ") && e.contains("nest more than 16"),
        "{e}"
    );
    let k = format!(
        "FROM scratch\nENV C={}x{}\n",
        "${A:-".repeat(16),
        "}".repeat(16)
    );
    assert_eq!(ok(&k).env["C"], "x");
}

/// F14: every RUN line cloned the whole environment; RUN lines now share one until an ARG or
/// ENV changes it.
#[test]
fn run_steps_share_their_environment() {
    let mut k = String::from("FROM scratch\nARG V=1\nENV A=1\n");
    for _ in 0..1000 {
        k.push_str("RUN true\n");
    }
    k.push_str("ENV B=2\nRUN true\n");
    let plan = ok(&k);
    let envs: Vec<&bale_bundler::kubefile::RunEnv> = plan
        .steps
        .iter()
        .map(|s| match s {
            Step::Run(r) => &r.env,
            Step::Copy(_) => panic!("copy"),
        })
        .collect();
    assert!(envs[..1000].iter().all(|e| e.shares(envs[0])));
    assert_eq!(envs[0].len(), 2);
    assert!(!envs[1000].shares(envs[0]));
    assert_eq!(envs[1000]["B"], "2");
    // the plan still serializes every step's variables
    let json = serde_json::to_value(&plan.steps[0]).expect("json");
    assert_eq!(json["env"], serde_json::json!({"A": "1", "V": "1"}));
}

/// F14: what the variables and the RUN environments may hold together is bounded too.
#[test]
fn variables_and_run_environments_are_bounded() {
    // A is 512 KiB after 15 doublings; with its seventh copy the variables pass 4 MiB
    let mut k = doubling(15);
    for i in 0..9 {
        k.push_str(&format!("ENV V{i}=$A\n"));
    }
    let e = err(&k);
    assert!(e.contains("add up to more than 4194304 bytes"), "{e}");
    assert!(e.starts_with("Kubefile:24: "), "{e}");
    // six copies (3.5 MiB) are fine, but a fresh 3.5 MiB environment for each of twenty
    // RUN lines is not
    let mut k = doubling(15);
    for i in 0..6 {
        k.push_str(&format!("ENV V{i}=$A\n"));
    }
    for i in 0..20 {
        k.push_str(&format!("ENV N={i}\nRUN true\n"));
    }
    let e = err(&k);
    assert!(e.contains("RUN steps' environments"), "{e}");
    let big = format!("FROM scratch\n#{}\n", "x".repeat(1 << 20));
    assert!(err(&big).contains("larger than 1048576 bytes"));
}
