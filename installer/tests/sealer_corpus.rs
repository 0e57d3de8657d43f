//! Every real sealer Clusterfile and plugin file of the corpus (`tests/fixtures/sealer/`, each
//! listed in its SOURCES with repository, commit and path) is read with sealer's meaning or
//! refused with the file, the field and the fix: the outcome of each is pinned in [`EXPECTED`].
//! A Clusterfile is read as `install -f` reads it (the cluster, its hosts and logins, then its
//! Plugin and Config documents); a plugin file as the bundle's `plugins/` directory is read.

use bale_installer::clusterfile::Clusterfile;
use bale_installer::engine::report::chain;
use bale_installer::hosts::SshOverrides;
use bale_installer::plugins::Documents;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What bale makes of a corpus file.
enum Expect {
    /// Read; one entry per warning, in order, each a piece of that warning's text.
    Read(&'static [&'static str]),
    /// Refused with a message holding this text.
    Refused(&'static str),
}
use Expect::{Read, Refused};

/// The outcome of every corpus file. The texts start where the file's name ends.
const EXPECTED: &[(&str, Expect)] = &[
    ("clusterfiles/ackdistro-docs-user-guide-getting-started-block1.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/ackdistro-docs-user-guide-getting-started-block2.yaml", Refused(": not valid YAML: mapping values are not allowed in this context at line 7 column 6")),
    ("clusterfiles/ackdistro-docs-user-guide-getting-started-block3.yaml", Refused(": not valid YAML: mapping values are not allowed in this context at line 7 column 11")),
    ("clusterfiles/ackdistro-docs-user-guide-getting-started-block4.yaml", Refused(": not valid YAML: mapping values are not allowed in this context at line 7 column 19")),
    ("clusterfiles/ackdistro-docs-user-guide-getting-started-block5.yaml", Refused(": not valid YAML: mapping values are not allowed in this context at line 7 column 6")),
    ("clusterfiles/ackdistro-test-suites-apply-fixtures-cluster_file_for_test.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/cnstack-deploy-Clusterfile.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image", ": spec.containerRuntime is not acted on: bale installs the bundle's co", ": spec.registry is not acted on: the bundle serves its own registry on", " line 94 (document 2): spec.process is not acted on by bale: spec.data", " line 450 (document 3): spec.process is not acted on by bale: spec.dat", " line 471 (document 4): spec.process is not acted on by bale: spec.dat", " line 490 (document 5): spec.process is not acted on by bale: spec.dat", " line 577 (document 6): spec.process is not acted on by bale: spec.dat", " line 1080 (document 7): spec.process is not acted on by bale: spec.da", " line 1095 (document 8): spec.process is not acted on by bale: spec.da"])),
    ("clusterfiles/cnstack-deploy-cnstack-virt.clusterfile.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image", ": spec.registry is not acted on: the bundle serves its own registry on", " line 166 (document 2): spec.process is not acted on by bale: spec.dat", " line 187 (document 3): spec.process is not acted on by bale: spec.dat", " line 269 (document 4): spec.process is not acted on by bale: spec.dat", " line 284 (document 5): spec.process is not acted on by bale: spec.dat"])),
    ("clusterfiles/cnstack-deploy-cnstack-virt.software-emulation.clusterfile.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image", ": spec.registry is not acted on: the bundle serves its own registry on", " line 166 (document 2): spec.process is not acted on by bale: spec.dat", " line 187 (document 3): spec.process is not acted on by bale: spec.dat", " line 269 (document 4): spec.process is not acted on by bale: spec.dat", " line 284 (document 5): spec.process is not acted on by bale: spec.dat"])),
    ("clusterfiles/cnstack-deploy-vcns-oss.clusterfile.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image", ": spec.registry is not acted on: the bundle serves its own registry on", " line 64 (document 2): spec.process is not acted on by bale: spec.data", " line 84 (document 3): spec.process is not acted on by bale: spec.data", " line 120 (document 4): spec.process is not acted on by bale: spec.dat", " line 134 (document 5): spec.process is not acted on by bale: spec.dat"])),
    ("clusterfiles/sealer-applications-calico-example-Clusterfile-bare.yaml", Refused(": document 1 (apiVersion \"sealer.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current seale")),
    ("clusterfiles/sealer-applications-calico-example-Clusterfile.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-applications-loki-stack-fluentbit-loki-stack-examples-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-applications-loki-stack-promtail-loki-stack-examples-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-applications-nvidia-plugin-Clusterfile.yaml", Refused(": not valid YAML: did not find expected alphabetic or numeric character at line 11 column 14, while scanning a")),
    ("clusterfiles/sealer-applications-openebs-example-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-applications-prometheus-stack-examples-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-applications-rookceph-rookceph-block-examples-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-applications-rookceph-rookceph-file-examples-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-applications-rookceph-rookceph-object-examples-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-applications-yrcloudfile-example-Clusterfile.yaml", Refused(": document 3 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-build-testing-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-cmd-sealer-test-Clusterfile.yaml", Refused(": not valid YAML: did not find expected alphabetic or numeric character at line 9 column 14, while scanning an")),
    ("clusterfiles/sealer-config-test_clusterfile.yaml", Refused(": document 1 (apiVersion \"sealer.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.provider), which current sealer")),
    ("clusterfiles/sealer-docs-api-clusterfile-block1.yaml", Refused(": document 1 (apiVersion \"sealer.io/v1\") is a v1 Clusterfile (spec.masters), which current sealer no longer re")),
    ("clusterfiles/sealer-docs-design-clusterfile-v2-block1.yaml", Refused(": spec.ssh.pk: xxx does not exist, and no password is given to fall back on; give an existing key file in spec")),
    ("clusterfiles/sealer-docs-design-clusterfile-v2-block2.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-docs-design-clusterfile-v2-block3.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-docs-design-clusterfile-v2-block6.yaml", Refused(": document 1 (kind: Cluster): spec.env: invalid type: map, expected a sequence at line 8 column 5; write env a")),
    ("clusterfiles/sealer-docs-design-clusterfile-v2-block7.yaml", Read(&[": document 2 (kind: Infra): spec is not acted on: bale creates no mach", ": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-docs-design-clusterfile-v2-block8.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-docs-design-plugin-block8.yaml", Refused(" line 20 (document 2): spec.type: \"LABEL\" is not supported: bale runs SHELL hooks; give the host's labels and ")),
    ("clusterfiles/sealer-docs-site-src-docs-getting-started-config-block2.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-docs-site-src-docs-getting-started-config-block3.yaml", Refused(": document 1 (apiVersion \"sealer.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.provider), which current sealer")),
    ("clusterfiles/sealer-docs-site-src-docs-getting-started-config-block7.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-docs-site-src-docs-getting-started-plugin-block8.yaml", Refused(" line 20 (document 2): spec.type: \"LABEL\" is not supported: bale runs SHELL hooks; give the host's labels and ")),
    ("clusterfiles/sealer-docs-site-src-docs-reference-clusterfile-block1.yaml", Refused(": spec.ssh.pk: xxx does not exist, and no password is given to fall back on; give an existing key file in spec")),
    ("clusterfiles/sealer-docs-site-src-docs-reference-clusterfile-block2.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-docs-site-src-docs-reference-clusterfile-block3.yaml", Read(&[": spec.image is not acted on: the bundle being run is the image"])),
    ("clusterfiles/sealer-filesystem-rootfs-rootfs-etc-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-pkg-config-test-test_clusterfile.yaml", Refused(": document 1 (apiVersion \"sealer.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.provider), which current sealer")),
    ("clusterfiles/sealer-pkg-config-test_clusterfile.yaml", Refused(": document 1 (apiVersion \"sealer.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.provider), which current sealer")),
    ("clusterfiles/sealer-pkg-filesystem-rootfs-rootfs-etc-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-pkg-plugin-test-test_clusterfile.yaml", Refused(" line 50 (document 3): spec.type: \"LABEL\" is not supported: bale runs SHELL hooks; give the host's labels and ")),
    ("clusterfiles/sealer-plugin-test-test_clusterfile.yaml", Refused(": document 1 (apiVersion \"sealer.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current seale")),
    ("clusterfiles/sealer-plugin-test_clusterfile.yaml", Refused(": document 1 (apiVersion \"sealer.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current seale")),
    ("clusterfiles/sealer-sealer-test-Clusterfile.yaml", Refused(": not valid YAML: did not find expected alphabetic or numeric character at line 9 column 14, while scanning an")),
    ("clusterfiles/sealer-test-suites-apply-fixtures-cluster_file_for_test.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-test-suites-apply-fixtures-cluster_file_rootfs.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-test-suites-build-fixtures-cloud_build-Clusterfile.yaml", Refused(": document 1 (apiVersion \"zlink.aliyun.com/v1alpha1\") is a v1 Clusterfile (spec.masters), which current sealer")),
    ("clusterfiles/sealer-utils-test-file-Clusterfile.yaml", Refused(": document 2 (kind: Cluster): spec.provider: bale creates no machines, it installs on hosts that exist; drop s")),
    ("clusterfiles/sealer-utils-test-file-v1Clusterfile.yaml", Refused(": not valid YAML: mapping values are not allowed in this context at line 15 column 11")),
    ("plugins/ackdistro-build-plugins-disk_init_rollback_shell_plugin.yaml", Read(&[])),
    ("plugins/ackdistro-build-plugins-disk_init_shell_plugin.yaml", Read(&[])),
    ("plugins/ackdistro-build-plugins-post_init_master_shell_plugin.yaml", Read(&[])),
    ("plugins/ackdistro-build-plugins-post_install_shell_plugin.yaml", Read(&[])),
    ("plugins/ackdistro-build-plugins-post_scaleup_shell_plugin.yaml", Read(&[" line 7 (document 1): spec.action \"post-scaleup\" of hook \"post_scaleup"])),
    ("plugins/ackdistro-build-plugins-pre_init_host_shell_plugin.yaml", Read(&[])),
    ("plugins/ackdistro-build-plugins-preflight_shell_plugin.yaml", Read(&[])),
    ("plugins/ackdistro-build-plugins-upgrade_host_shell_plugin.yaml", Read(&[" line 7 (document 1): spec.action \"upgrade-host\" of hook \"upgrade_host"])),
    ("plugins/ackdistro-build-v1.20.11-aliyun.1-plugins-upgrade_shell_plugin.yaml", Read(&[" line 7 (document 1): spec.action \"upgrade\" of hook \"upgrade-trident-t"])),
    ("plugins/ackdistro-build-v1.22.15-aliyun.1-plugins-rollback_shell_plugin.yaml", Read(&[" line 7 (document 1): spec.action \"rollback\" of hook \"rollback\" has no"])),
    ("plugins/ackdistro-build-v1.22.15-aliyun.1-plugins-upgrade_shell_plugin.yaml", Read(&[" line 7 (document 1): spec.action \"upgrade\" of hook \"upgrade\" has no m"])),
    ("plugins/sealer-applications-nvidia-plugin-plugin.yaml", Read(&[])),
    ("plugins/sealer-docs-design-plugin-block1.yaml", Refused(" line 7 (document 1): spec.type: \"HOSTNAME\" is not supported: bale runs SHELL hooks; set the host names with a")),
    ("plugins/sealer-docs-design-plugin-block2.yaml", Read(&[])),
    ("plugins/sealer-docs-design-plugin-block3.yaml", Refused(" line 6 (document 1): spec.type: \"LABEL\" is not supported: bale runs SHELL hooks; give the host's labels and t")),
    ("plugins/sealer-docs-design-plugin-block4.yaml", Refused(" line 6 (document 1): spec.type: \"CLUSTERCHECK\" is not supported: bale runs SHELL hooks; write it as a SHELL h")),
    ("plugins/sealer-docs-design-plugin-block5.yaml", Refused(" line 6 (document 1): spec.type: \"ETCD\" is not supported: bale runs SHELL hooks; write it as a SHELL hook (typ")),
    ("plugins/sealer-docs-design-plugin-block6.yaml", Refused(" line 6 (document 1): spec.type: \"TAINT\" is not supported: bale runs SHELL hooks; give the host's labels and t")),
    ("plugins/sealer-docs-design-plugin-block7.yaml", Refused(" line 6 (document 1): spec.type: \"LABEL_TEST_SO\" is not supported: bale runs SHELL hooks; write it as a SHELL ")),
    ("plugins/sealer-docs-design-plugin-block9.yaml", Read(&[])),
    ("plugins/sealer-docs-site-src-docs-getting-started-config-block6.yaml", Read(&[])),
    ("plugins/sealer-docs-site-src-docs-getting-started-plugin-block1.yaml", Refused(" line 7 (document 1): spec.type: \"HOSTNAME\" is not supported: bale runs SHELL hooks; set the host names with a")),
    ("plugins/sealer-docs-site-src-docs-getting-started-plugin-block2.yaml", Read(&[])),
    ("plugins/sealer-docs-site-src-docs-getting-started-plugin-block3.yaml", Refused(" line 6 (document 1): spec.type: \"LABEL\" is not supported: bale runs SHELL hooks; give the host's labels and t")),
    ("plugins/sealer-docs-site-src-docs-getting-started-plugin-block4.yaml", Refused(" line 6 (document 1): spec.type: \"CLUSTERCHECK\" is not supported: bale runs SHELL hooks; write it as a SHELL h")),
    ("plugins/sealer-docs-site-src-docs-getting-started-plugin-block5.yaml", Refused(" line 6 (document 1): spec.type: \"ETCD\" is not supported: bale runs SHELL hooks; write it as a SHELL hook (typ")),
    ("plugins/sealer-docs-site-src-docs-getting-started-plugin-block6.yaml", Refused(" line 6 (document 1): spec.type: \"TAINT\" is not supported: bale runs SHELL hooks; give the host's labels and t")),
    ("plugins/sealer-docs-site-src-docs-getting-started-plugin-block7.yaml", Refused(" line 6 (document 1): spec.type: \"LABEL_TEST_SO\" is not supported: bale runs SHELL hooks; write it as a SHELL ")),
    ("plugins/sealer-docs-site-src-docs-getting-started-plugin-block9.yaml", Read(&[])),
    ("plugins/sealer-pkg-cluster-runtime-test-test.yaml", Read(&[])),
    ("plugins/sealer-pkg-plugin-test-label_nodes.yaml", Refused(" line 20 (document 1): spec.type: \"LABEL_TEST_SO\" is not supported: bale runs SHELL hooks; write it as a SHELL")),
    ("plugins/sealer-plugin-test-label_nodes.yaml", Refused(" line 20 (document 1): spec.type: \"LABEL_TEST_SO\" is not supported: bale runs SHELL hooks; write it as a SHELL")),
    ("plugins/sealer-test-suites-apply-fixtures-config_plugin_for_test.yaml", Read(&[" line 49 (document 4): spec.action \"PreJoin\" of hook \"clusterfile_prej", " line 58 (document 5): spec.action \"PostJoin\" of hook \"clusterfile_Pos", " line 70 (document 6): spec.action \"PostJoin\" of hook \"clusterfile_pos"])),
    ("plugins/sealer-test-suites-build-fixtures-cloud_build-Plugins.yaml", Read(&[])),
    ("plugins/sealer-test-suites-build-fixtures-lite_build-test-plugins.yaml", Read(&[" line 41 (document 3): spec.action \"PostJoin\" of hook \"MyShell\" has no", " line 73 (document 6): spec.action \"PostJoin\" of hook \"MyShell\" has no", " line 84 (document 7): spec.action \"PreJoin\" of hook \"MyShell\" has no "])),
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/sealer")
}

/// What bale makes of one corpus file (`area/name`): `Ok(warnings)` or `Err(message)`.
fn outcome(file: &str) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(corpus().join(file)).map_err(|e| format!("{file}: {e}"))?;
    let mut warnings = Vec::new();
    if file.starts_with("clusterfiles/") {
        let mut cf = Clusterfile::parse(&text, Path::new(file)).map_err(|e| chain(&e))?;
        if cf.has_hosts() {
            cf.host_list(None, None, &SshOverrides::default())
                .map_err(|e| chain(&e))?;
        }
        warnings.extend(cf.warnings);
    }
    let docs = Documents::parse(&text, file).map_err(|e| chain(&e))?;
    warnings.extend(docs.warnings);
    Ok(warnings)
}

fn files_on_disk() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for area in ["clusterfiles", "plugins"] {
        for e in std::fs::read_dir(corpus().join(area)).unwrap() {
            out.insert(format!(
                "{area}/{}",
                e.unwrap().file_name().to_string_lossy()
            ));
        }
    }
    out
}

#[test]
fn every_corpus_file_has_a_source_and_an_expected_outcome() {
    let on_disk = files_on_disk();
    let sources = std::fs::read_to_string(corpus().join("SOURCES")).unwrap();
    let mut listed = BTreeSet::new();
    for line in sources.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 4, "SOURCES: {line}");
        assert!(
            f[2].len() == 40 && f[2].chars().all(|c| c.is_ascii_hexdigit()),
            "{line}"
        );
        if f[0].starts_with("clusterfiles/") || f[0].starts_with("plugins/") {
            listed.insert(f[0].to_string());
        }
    }
    assert_eq!(listed, on_disk, "files and SOURCES differ");
    let expected: BTreeSet<String> = EXPECTED.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(expected, on_disk, "files and EXPECTED differ");
    assert!(on_disk.len() >= 35, "{} files", on_disk.len());
}

#[test]
fn every_corpus_file_is_read_or_refused_as_expected() {
    let (mut read, mut refused, mut warned) = (0, 0, 0);
    let mut wrong = Vec::new();
    for (file, want) in EXPECTED {
        let got = outcome(file);
        match (want, &got) {
            (Read(pieces), Ok(warnings)) => {
                read += 1;
                warned += usize::from(!warnings.is_empty());
                let fits = pieces.len() == warnings.len()
                    && pieces
                        .iter()
                        .zip(warnings)
                        .all(|(p, w)| w.starts_with(file) && w.contains(p));
                if !fits {
                    wrong.push(format!("{file}: warnings {warnings:#?}"));
                }
            }
            (Refused(piece), Err(msg)) => {
                refused += 1;
                if !(msg.starts_with(file) && msg.contains(piece)) {
                    wrong.push(format!("{file}: refused with {msg}"));
                }
                // "not valid YAML" only when it is not.
                let text = std::fs::read_to_string(corpus().join(file)).unwrap();
                let yaml_ok = serde_yaml::Deserializer::from_str(&text).all(|d| {
                    serde::Deserialize::deserialize(d)
                        .map(|_: serde_yaml::Value| ())
                        .is_ok()
                });
                assert_eq!(msg.contains("not valid YAML"), !yaml_ok, "{msg}");
                // No part of a message said twice.
                let parts: Vec<&str> = msg.split(": ").filter(|p| p.len() > 12).collect();
                let unique: BTreeSet<&&str> = parts.iter().collect();
                assert_eq!(unique.len(), parts.len(), "repeated text: {msg}");
            }
            (_, got) => wrong.push(format!("{file}: {got:?}")),
        }
    }
    println!(
        "sealer corpus: {} files, {read} read ({warned} with warnings), {refused} refused",
        EXPECTED.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Prints every file's outcome, to review and to write [`EXPECTED`] from:
/// `cargo test -p bale-installer --test sealer_corpus -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_outcomes() {
    for file in files_on_disk() {
        match outcome(&file) {
            Ok(w) => println!("READ {file}\n    {}", w.join("\n    ")),
            Err(e) => println!("REFUSED {file}\n    {e}"),
        }
    }
}
