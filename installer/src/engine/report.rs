//! Progress and results, as lines for people or, with `--json`, one JSON object per event on
//! stdout.

use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;

#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event<'a> {
    Start {
        phase: &'a str,
        node: &'a str,
    },
    Done {
        phase: &'a str,
        node: &'a str,
        seconds: f64,
    },
    Skip {
        phase: &'a str,
        node: &'a str,
        reason: &'a str,
    },
    Fail {
        phase: &'a str,
        node: &'a str,
        error: &'a str,
    },
    Undo {
        phase: &'a str,
        node: &'a str,
        error: Option<&'a str>,
    },
    Info {
        node: &'a str,
        message: &'a str,
    },
    Plan {
        node: &'a str,
        steps: &'a [String],
    },
    Preflight {
        node: &'a str,
        hostname: &'a str,
        checks: &'a [crate::preflight::Check],
    },
    Stopped {
        phase: &'a str,
        reason: &'a str,
    },
    Summary {
        /// install, reset, delete or check.
        verb: &'a str,
        ok: &'a [String],
        failed: &'a [crate::engine::manager::Failure],
        stopped: Option<&'a str>,
        retry: Option<&'a str>,
        /// Wall seconds of each phase that ran.
        timings: &'a [(String, f64)],
    },
}

pub struct Reporter {
    json: bool,
    out: Mutex<()>,
}

impl Reporter {
    pub fn new(json: bool) -> Reporter {
        Reporter {
            json,
            out: Mutex::new(()),
        }
    }

    pub fn emit(&self, e: &Event) {
        let text = if self.json {
            serde_json::to_string(e).unwrap_or_default()
        } else {
            human(e)
        };
        if text.is_empty() {
            return;
        }
        let _g = crate::engine::lock(&self.out);
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{text}");
        let _ = o.flush();
    }
}

fn human(e: &Event) -> String {
    match e {
        Event::Start { .. } => String::new(),
        Event::Done {
            phase,
            node,
            seconds,
        } => format!("[{node}] {phase}: done ({seconds:.1}s)"),
        Event::Skip {
            phase,
            node,
            reason,
        } => format!("[{node}] {phase}: skipped, {reason}"),
        Event::Fail { phase, node, error } => format!("[{node}] {phase}: FAILED: {error}"),
        Event::Undo {
            phase,
            node,
            error: None,
        } => format!("[{node}] {phase}: undone"),
        Event::Undo {
            phase,
            node,
            error: Some(err),
        } => format!("[{node}] {phase}: undo failed: {err}"),
        Event::Info { node, message } => format!("[{node}] {message}"),
        Event::Plan { node, steps } => {
            let mut s = format!("plan for {node}:");
            for (i, st) in steps.iter().enumerate() {
                s.push_str(&format!("\n  {}. {st}", i + 1));
            }
            s
        }
        Event::Preflight {
            node,
            hostname,
            checks,
        } => crate::preflight::table(node, hostname, checks),
        Event::Stopped { phase, reason } => format!("stopped at {phase}:\n{reason}"),
        Event::Summary {
            verb,
            ok,
            failed,
            stopped,
            retry,
            timings,
        } => {
            let mut s = String::new();
            if !timings.is_empty() {
                let t: Vec<String> = timings
                    .iter()
                    .map(|(p, secs)| format!("{p} {secs:.1}s"))
                    .collect();
                s.push_str(&format!("phase times: {}\n", t.join(", ")));
            }
            if failed.is_empty() && stopped.is_none() {
                s.push_str(&format!(
                    "{verb} finished on {} node(s): {}",
                    ok.len(),
                    ok.join(", ")
                ));
            } else {
                if let Some(r) = stopped {
                    s.push_str(&format!("{verb} stopped: {r}\n"));
                }
                if !failed.is_empty() {
                    s.push_str(&format!("{verb} FAILED on {} node(s):\n", failed.len()));
                    for f in failed.iter() {
                        s.push_str(&format!("  {} at {}: {}\n", f.node, f.phase, f.error));
                    }
                }
                if !ok.is_empty() {
                    s.push_str(&format!("succeeded on: {}\n", ok.join(", ")));
                }
                if let Some(r) = retry {
                    s.push_str(&format!(
                        "fix the cause, then run again (completed phases are skipped):\n  {r}"
                    ));
                }
            }
            s.trim_end().to_string()
        }
    }
}
