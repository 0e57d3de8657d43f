//! Runs the phases: each phase on every node still in the run, at most `parallel` nodes at a
//! time, then the next phase. A node that fails drops out (the failed phase is undone; the
//! phases it finished stay in its journal, so a re-run resumes after them) and the others go
//! on; a failed cross-node check stops everything.

use super::{lock, Event, Node, Phase, PhaseError};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub node: String,
    pub phase: String,
    pub error: String,
}

#[derive(Debug, Default)]
pub struct RunReport {
    pub ok: Vec<String>,
    pub failed: Vec<Failure>,
    /// Set when a cross-node check stopped the whole run.
    pub stopped: Option<String>,
    /// Wall time of each phase that ran somewhere, in order.
    pub timings: Vec<(String, f64)>,
}

impl RunReport {
    pub fn success(&self) -> bool {
        self.failed.is_empty() && self.stopped.is_none()
    }
}

pub struct Manager {
    pub phases: Vec<Box<dyn Phase>>,
    pub parallel: usize,
    pub dry_run: bool,
}

/// Runs `f` on every item with at most `limit` threads.
pub fn for_each_parallel<T: Sync>(items: &[T], limit: usize, f: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    let workers = limit.clamp(1, items.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(it) = items.get(i) else { break };
                f(it);
            });
        }
    });
}

impl Manager {
    pub fn run(&self, nodes: &[Node]) -> RunReport {
        let Some(first) = nodes.first() else {
            return RunReport::default();
        };
        let rep = &first.ctx.reporter;
        // Per node: the failure that took it out.
        let failed: Vec<Mutex<Option<Failure>>> = nodes.iter().map(|_| Mutex::new(None)).collect();
        let plans: Vec<Mutex<Vec<String>>> = nodes.iter().map(|_| Mutex::new(Vec::new())).collect();
        let mut stopped = None;
        let mut timings = Vec::new();

        for phase in self.phases.iter() {
            let title = phase.title();
            let live: Vec<&Node> = nodes
                .iter()
                .filter(|n| lock(&failed[n.index]).is_none())
                .collect();
            if live.is_empty() {
                break;
            }
            let planning = self.dry_run && !phase.read_only();
            let phase_start = Instant::now();
            let ran_somewhere = std::sync::atomic::AtomicBool::new(false);
            for_each_parallel(&live, self.parallel, |n| {
                let name = n.name();
                let inputs = if phase.journaled() {
                    phase.inputs(n)
                } else {
                    String::new()
                };
                if phase.journaled() && lock(&n.journal).is_done_with(title, &inputs) {
                    if planning {
                        lock(&plans[n.index]).push(format!("{title}: already done"));
                    } else {
                        rep.emit(&Event::Skip {
                            phase: title,
                            node: &name,
                            reason: "done in an earlier run",
                        });
                    }
                    return;
                }
                if !phase.should_run(n) {
                    if planning {
                        lock(&plans[n.index]).push(format!("{title}: nothing to do"));
                    } else {
                        rep.emit(&Event::Skip {
                            phase: title,
                            node: &name,
                            reason: "nothing to do",
                        });
                    }
                    return;
                }
                if planning {
                    lock(&plans[n.index]).push(format!("{title}: {}", phase.dry_run(n)));
                    return;
                }
                rep.emit(&Event::Start {
                    phase: title,
                    node: &name,
                });
                let t = Instant::now();
                ran_somewhere.store(true, Ordering::Relaxed);
                let r = phase.run(n).and_then(|()| {
                    if phase.journaled() {
                        let conn = n.conn()?;
                        lock(&n.journal)
                            .record_with(&conn, &n.ctx.data_dir, title, &inputs)
                            .map_err(PhaseError::from)?;
                    }
                    Ok(())
                });
                match r {
                    Ok(()) => rep.emit(&Event::Done {
                        phase: title,
                        node: &name,
                        seconds: t.elapsed().as_secs_f64(),
                    }),
                    Err(e) => {
                        let error = e.to_string();
                        rep.emit(&Event::Fail {
                            phase: title,
                            node: &name,
                            error: &error,
                        });
                        *lock(&failed[n.index]) = Some(Failure {
                            node: name.clone(),
                            phase: title.into(),
                            error,
                        });
                        // Only the failed phase is undone: the phases before it finished and are
                        // in the journal, so a re-run resumes after them.
                        if let Err(e) = phase.undo(n) {
                            rep.emit(&Event::Undo {
                                phase: title,
                                node: &name,
                                error: Some(&e.to_string()),
                            });
                        }
                    }
                }
            });
            if planning {
                continue;
            }
            if ran_somewhere.load(Ordering::Relaxed) {
                timings.push((title.to_string(), phase_start.elapsed().as_secs_f64()));
            }
            let ok: Vec<&Node> = live
                .iter()
                .copied()
                .filter(|n| lock(&failed[n.index]).is_none())
                .collect();
            if let Err(reason) = phase.after_all(&ok, &first.ctx) {
                rep.emit(&Event::Stopped {
                    phase: title,
                    reason: &reason,
                });
                if !self.dry_run {
                    stopped = Some(format!("{title} failed"));
                    break;
                }
            }
        }

        if self.dry_run {
            for n in nodes {
                let steps = lock(&plans[n.index]).clone();
                if lock(&failed[n.index]).is_none() {
                    rep.emit(&Event::Plan {
                        node: &n.name(),
                        steps: &steps,
                    });
                }
            }
        }
        let mut report = RunReport {
            stopped,
            timings,
            ..Default::default()
        };
        for n in nodes {
            match lock(&failed[n.index]).take() {
                Some(f) => report.failed.push(f),
                None => report.ok.push(n.name()),
            }
        }
        if report.stopped.is_some() {
            report.ok.clear();
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{BundleInfo, Ctx, PhaseResult, Reporter};
    use crate::ssh::SshOptions;
    use std::sync::Arc;

    struct Fake {
        title: &'static str,
        fail_on: Option<usize>,
        runs: Arc<AtomicUsize>,
        undos: Arc<AtomicUsize>,
    }

    impl Phase for Fake {
        fn title(&self) -> &str {
            self.title
        }
        fn dry_run(&self, _: &Node) -> String {
            "would fake".into()
        }
        fn run(&self, n: &Node) -> PhaseResult {
            self.runs.fetch_add(1, Ordering::SeqCst);
            if self.fail_on == Some(n.index) {
                return Err(PhaseError::Msg("boom".into()));
            }
            Ok(())
        }
        fn undo(&self, _: &Node) -> PhaseResult {
            self.undos.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn journaled(&self) -> bool {
            false
        }
    }

    fn ctx() -> Arc<Ctx> {
        Arc::new(Ctx {
            bundle: BundleInfo {
                path: "/b".into(),
                name: "b".into(),
                version: "1".into(),
                arch: "x86_64".into(),
                digest: "d".into(),
                size: 1,
            },
            data_dir: "/tmp/x".into(),
            site: Default::default(),
            ssh: SshOptions {
                known_hosts: "/kh".into(),
                accept_new_host_keys: false,
                connect_timeout_secs: 1,
                askpass_exe: "/bale".into(),
            },
            ignore_preflight: vec![],
            peers: vec![],
            reporter: Reporter::new(true),
        })
    }

    #[test]
    fn a_failing_node_drops_out_and_others_go_on() {
        let c = ctx();
        let nodes: Vec<Node> = (0..4).map(|i| Node::new(i, None, c.clone())).collect();
        let (r1, u1, r2, u2) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let m = Manager {
            phases: vec![
                Box::new(Fake {
                    title: "one",
                    fail_on: None,
                    runs: r1.clone(),
                    undos: u1.clone(),
                }),
                Box::new(Fake {
                    title: "two",
                    fail_on: Some(2),
                    runs: r2.clone(),
                    undos: u2.clone(),
                }),
                Box::new(Fake {
                    title: "three",
                    fail_on: None,
                    runs: Arc::new(AtomicUsize::new(0)),
                    undos: Arc::new(AtomicUsize::new(0)),
                }),
            ],
            parallel: 2,
            dry_run: false,
        };
        let rep = m.run(&nodes);
        assert_eq!(rep.failed.len(), 1);
        assert_eq!(rep.failed[0].phase, "two");
        assert_eq!(rep.ok.len(), 3);
        assert_eq!(r1.load(Ordering::SeqCst), 4);
        // Node 2 undid "two", the phase that failed, and kept "one" for a resume.
        assert_eq!(
            (u1.load(Ordering::SeqCst), u2.load(Ordering::SeqCst)),
            (0, 1)
        );
    }
}
