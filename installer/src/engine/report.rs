//! Progress and results, as lines for people or, with `--json`, one JSON object per event on
//! stdout. Long transfers report [`Event::Progress`]: on a terminal that is a live bar per node
//! (bytes, rate, time left); in a log, a line per node every few seconds.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a log (not a terminal) gets a progress line per node and phase.
const LINE_EVERY: Duration = Duration::from_secs(3);
/// How often `--json` gets a progress event per node and phase.
const JSON_EVERY: Duration = Duration::from_secs(1);

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
    /// After a failed attempt: what it had created and was removed again, or why that failed.
    CleanUp {
        phase: &'a str,
        node: &'a str,
        removed: &'a [String],
        error: Option<&'a str>,
    },
    Info {
        node: &'a str,
        message: &'a str,
    },
    /// Bytes of a transfer to a node so far.
    Progress {
        phase: &'a str,
        node: &'a str,
        done: u64,
        total: u64,
        /// Where the bytes come from (`installer`, or a peer's address).
        source: &'a str,
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

/// An error and its causes on one line, each layer once: `outer: cause: root cause`. Errors
/// keep their cause out of their own text and name it as their source, so this (or anyhow's
/// `{:#}`) is how one is shown whole.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        next = cause.source();
    }
    s
}

pub struct Reporter {
    json: bool,
    out: Mutex<Screen>,
}

/// What is on the screen: the live bars (on a terminal), and when each transfer last reported.
struct Screen {
    bars: Option<MultiProgress>,
    live: HashMap<(String, String), ProgressBar>,
    /// Per node and phase: when the last line went out, and the bytes then.
    last: HashMap<(String, String), (Instant, u64)>,
}

impl Reporter {
    /// Lines or JSON on stdout; bars when stdout is a terminal.
    pub fn new(json: bool) -> Reporter {
        let bars = (!json && std::io::stdout().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Reporter::with_bars(json, bars)
    }

    fn with_bars(json: bool, bars: Option<MultiProgress>) -> Reporter {
        Reporter {
            json,
            out: Mutex::new(Screen {
                bars,
                live: HashMap::new(),
                last: HashMap::new(),
            }),
        }
    }

    pub fn emit(&self, e: &Event) {
        let mut screen = crate::engine::lock(&self.out);
        if let Event::Progress {
            phase,
            node,
            done,
            total,
            source,
        } = e
        {
            let key = (node.to_string(), phase.to_string());
            if let Some(bars) = screen.bars.clone() {
                screen.draw(bars, key, *done, *total, source);
                return;
            }
            let every = if self.json { JSON_EVERY } else { LINE_EVERY };
            let now = Instant::now();
            let rate = match screen.last.get(&key) {
                Some((t, _)) if now.duration_since(*t) < every && done < total => return,
                Some((t, before)) => {
                    done.saturating_sub(*before) as f64 / now.duration_since(*t).as_secs_f64()
                }
                None => 0.0,
            };
            screen.last.insert(key, (now, *done));
            if !self.json {
                // the first sample has no rate yet, and a finished transfer has its own line
                if rate == 0.0 || done >= total {
                    return;
                }
                let line = format!(
                    "[{node}] {phase}: {} of {} ({:.0}%), {}/s from {source}",
                    human_bytes(*done),
                    human_bytes(*total),
                    *done as f64 * 100.0 / (*total).max(1) as f64,
                    human_bytes(rate as u64),
                );
                return print(&line);
            }
        }
        let text = if self.json {
            serde_json::to_string(e).unwrap_or_default()
        } else {
            human(e)
        };
        if text.is_empty() {
            return;
        }
        // A phase that ended on a node ends its bar there too, even one that never reached
        // its total (a failed copy).
        if let Event::Done { phase, node, .. } | Event::Fail { phase, node, .. } = e {
            screen.end_bar(&(node.to_string(), phase.to_string()));
        }
        match &screen.bars {
            // above the bars, which are drawn again below it
            Some(bars) if !screen.live.is_empty() => {
                let _ = bars.println(&text);
            }
            _ => print(&text),
        }
    }
}

impl Screen {
    /// Moves the bar of one node's transfer; a finished transfer's bar goes away (the phase
    /// reports the totals in its own line).
    fn draw(
        &mut self,
        bars: MultiProgress,
        key: (String, String),
        done: u64,
        total: u64,
        source: &str,
    ) {
        let bar = self.live.entry(key.clone()).or_insert_with(|| {
            let style = ProgressStyle::with_template(
                "[{prefix}] {msg} [{bar:28}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar = ProgressBar::hidden()
                .with_style(style)
                .with_prefix(key.0.clone())
                .with_message(format!("{} from {source}", key.1));
            bar.set_length(total);
            bar.set_position(done);
            // what was there before the bar is not part of its rate
            bar.reset_eta();
            bars.add(bar)
        });
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(format!("{} from {source}", key.1));
        if done >= total {
            self.end_bar(&key);
        }
    }

    fn end_bar(&mut self, key: &(String, String)) {
        if let (Some(bars), Some(bar)) = (&self.bars, self.live.remove(key)) {
            bar.finish_and_clear();
            bars.remove(&bar);
        }
    }
}

fn print(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}

fn human_bytes(n: u64) -> String {
    bale_payload::error::human_bytes(n)
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
        Event::CleanUp {
            phase,
            node,
            removed,
            error: None,
        } => format!(
            "[{node}] {phase}: removed what the failed attempt created: {}",
            removed.join(", ")
        ),
        Event::CleanUp {
            phase,
            node,
            error: Some(err),
            ..
        } => format!("[{node}] {phase}: could not remove what the failed attempt created: {err}"),
        Event::Info { node, message } => format!("[{node}] {message}"),
        // drawn or throttled in `Reporter::emit`
        Event::Progress { .. } => String::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::InMemoryTerm;

    fn progress<'a>(node: &'a str, done: u64, source: &'a str) -> Event<'a> {
        Event::Progress {
            phase: "upload",
            node,
            done,
            total: 8 << 20,
            source,
        }
    }

    /// The terminal's lines that are not blank.
    fn lines(term: &InMemoryTerm) -> Vec<String> {
        term.contents()
            .lines()
            .map(|l| l.trim_end().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn a_terminal_shows_a_bar_per_node_with_bytes_and_rate_and_lines_above_them() {
        let term = InMemoryTerm::new(12, 110);
        let bars =
            MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(term.clone())));
        let r = Reporter::with_bars(false, Some(bars));
        r.emit(&progress("10.0.0.2", 1 << 20, "the installer"));
        r.emit(&progress("10.0.0.3", 2 << 20, "10.0.0.2"));
        // indicatif draws at most about 20 times a second
        std::thread::sleep(Duration::from_millis(120));
        r.emit(&progress("10.0.0.2", 3 << 20, "the installer"));
        r.emit(&Event::Stopped {
            phase: "preflight",
            reason: "two lines\nof reason",
        });
        std::thread::sleep(Duration::from_millis(120));
        r.emit(&progress("10.0.0.3", 4 << 20, "10.0.0.2"));
        let shown = lines(&term);
        assert_eq!(shown.len(), 5, "{shown:#?}");
        assert_eq!(
            shown[..3],
            ["stopped at preflight:", "two lines", "of reason"]
        );
        assert!(
            shown[3].starts_with("[10.0.0.2] upload from the installer [")
                && shown[3].contains("3.00 MiB/8.00 MiB")
                && shown[3].contains("/s eta"),
            "{shown:#?}"
        );
        assert!(
            shown[4].starts_with("[10.0.0.3] upload from 10.0.0.2 [")
                && shown[4].contains("4.00 MiB/8.00 MiB"),
            "{shown:#?}"
        );
        // A finished transfer's bar goes; the other stays.
        r.emit(&progress("10.0.0.2", 8 << 20, "the installer"));
        std::thread::sleep(Duration::from_millis(120));
        r.emit(&progress("10.0.0.3", 5 << 20, "10.0.0.2"));
        let shown = lines(&term);
        assert_eq!(shown.len(), 4, "{shown:#?}");
        assert!(shown[3].starts_with("[10.0.0.3] upload"), "{shown:#?}");
        // The phase failing on that node short of its total takes the last bar away too.
        r.emit(&Event::Fail {
            phase: "upload",
            node: "10.0.0.3",
            error: "cut off",
        });
        std::thread::sleep(Duration::from_millis(120));
        let shown = lines(&term);
        assert!(
            !shown.iter().any(|l| l.contains("] upload from")),
            "{shown:#?}"
        );
    }
}
