//! `*.tmpl` rendering.

use bale_bundler::kubefile::{render_template, TemplateError};
use std::collections::BTreeMap;

fn env() -> BTreeMap<String, String> {
    [
        ("PodCIDR", "100.64.0.0/10"),
        ("Registry", "sea.hub:5000"),
        ("Empty", ""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn render(text: &str) -> Result<String, TemplateError> {
    render_template("etc/kubeadm.yaml.tmpl", text, &env())
}

#[test]
fn both_syntaxes_and_defaults() {
    let text = "podSubnet: {{ .PodCIDR }}\nrepo: {{.Registry}}/k8s\nsvc: ${SvcCIDR:-10.96.0.0/16}\nreg: ${Registry}\nempty: [${Empty:-dflt}] [${Empty}]\n";
    assert_eq!(
        render(text).expect("renders"),
        "podSubnet: 100.64.0.0/10\nrepo: sea.hub:5000/k8s\nsvc: 10.96.0.0/16\nreg: sea.hub:5000\nempty: [dflt] []\n"
    );
}

#[test]
fn shell_dollars_are_left_alone_and_can_be_escaped() {
    let text = "#!/bin/sh\necho $HOME $1 $$ \"$${HOME}\" ${Registry}\n";
    assert_eq!(
        render(text).expect("renders"),
        "#!/bin/sh\necho $HOME $1 $$ \"${HOME}\" sea.hub:5000\n"
    );
}

#[test]
fn trim_markers() {
    assert_eq!(
        render("a:\n  {{- .Registry -}}  \n b").expect("renders"),
        "a:sea.hub:5000b"
    );
}

#[test]
fn no_template_syntax_is_unchanged() {
    let text = "plain: text\n{ single: braces }\n";
    assert_eq!(render(text).expect("renders"), text);
}

#[test]
fn missing_key_names_file_line_and_key() {
    let e = render("a: 1\nb: {{ .ServiceCIDR }}\n").expect_err("missing");
    assert_eq!(
        e,
        TemplateError::MissingKey {
            file: "etc/kubeadm.yaml.tmpl".into(),
            line: 2,
            key: "ServiceCIDR".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "etc/kubeadm.yaml.tmpl:2: no value for \"ServiceCIDR\"; set it with ENV ServiceCIDR=... in the Kubefile (or at install time), or give a default: ${ServiceCIDR:-default}"
    );
    let e = render("\n\n\nx: ${VIP}").expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("etc/kubeadm.yaml.tmpl:4: no value for \"VIP\""),
        "{e}"
    );
}

#[test]
fn syntax_errors() {
    let cases = [
        ("x: {{ .A", "etc/kubeadm.yaml.tmpl:1: \"{{\" is not closed with \"}}\""),
        ("\nx: ${A", "etc/kubeadm.yaml.tmpl:2: \"${\" is not closed with \"}\" (write $${ for a literal ${)"),
        (
            "{{ if .A }}x{{ end }}",
            "etc/kubeadm.yaml.tmpl:1: unsupported template action {{ if .A }}: only {{ .Key }} is supported",
        ),
        (
            "x: {{ .A.B }}",
            "etc/kubeadm.yaml.tmpl:1: unsupported template action {{ .A.B }}: only {{ .Key }} is supported",
        ),
        (
            "x: ${arr[@]}",
            "etc/kubeadm.yaml.tmpl:1: ${arr[@]} is not a template variable; write ${Key} or ${Key:-default}, or $${ for a literal ${",
        ),
    ];
    for (text, want) in cases {
        let got = render(text).expect_err(text).to_string();
        assert_eq!(got, want, "input {text:?}");
    }
}
