//! Reading the `--json` events of `bale install`, `reset` and `check`.

use serde_json::Value;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

/// Runs `bundle ARGS` (one of its `--json` commands), prints its exit code, time and output
/// under `label` for the log of a failing test, and returns the output and its events.
pub fn run_logged(bundle: &Path, args: &[impl AsRef<OsStr>], label: &str) -> (Output, Vec<Value>) {
    let t = Instant::now();
    let o = Command::new(bundle)
        .args(args)
        .env("BALE_STATE", super::admin_state())
        .output()
        .expect("run the bundle");
    eprintln!(
        "{label}: exit {:?} in {:.1}s\n{}{}",
        o.status.code(),
        t.elapsed().as_secs_f64(),
        super::stdout(&o),
        super::stderr(&o)
    );
    let ev = events(&super::stdout(&o));
    (o, ev)
}

/// Every JSON event line of a run's stdout.
pub fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// True when an event of `kind` (start, done, skip, fail) was seen for `phase` on `node`.
pub fn has(ev: &[Value], kind: &str, phase: &str, node: &str) -> bool {
    ev.iter()
        .any(|e| e["event"] == kind && e["phase"] == phase && e["node"] == node)
}

/// The nodes `phase` started on.
pub fn started(ev: &[Value], phase: &str) -> Vec<String> {
    ev.iter()
        .filter(|e| e["event"] == "start" && e["phase"] == phase)
        .map(|e| e["node"].as_str().unwrap_or("").to_string())
        .collect()
}

/// The run's final summary event.
pub fn summary(ev: &[Value]) -> &Value {
    ev.iter()
        .rev()
        .find(|e| e["event"] == "summary")
        .expect("a summary event")
}

/// The nodes the summary lists as failed.
pub fn failed_nodes(ev: &[Value]) -> Vec<String> {
    summary(ev)["failed"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| f["node"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}
