//! Runs the phases: each phase on every node still in the run, at most `parallel` nodes at a
//! time, then the next phase. A node that fails drops out and the others go on; a failed
//! cross-node check stops everything. A failure removes only what the failed attempt itself
//! created ([`Phase::clean_up`]); the phases a node finished stay done and in its journal, so a
//! re-run resumes after them (the rule is in the engine's module doc).

use super::{lock, Attempt, Event, Node, Phase, PhaseError};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// How a phase ended on a node that dropped out of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The phase failed; what it had installed before stays, and so does what earlier phases
    /// and runs installed.
    Failed,
    /// The phase was applied, but its journal entry could not be written: nothing is removed,
    /// and the next run applies it again (which changes nothing).
    NotJournaled,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub node: String,
    pub phase: String,
    pub error: String,
    pub outcome: Outcome,
    /// Set when removing what the failed attempt created failed too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_up_error: Option<String>,
    /// The failure came from a damaged bundle (the run then exits as damaged).
    #[serde(skip)]
    pub damaged: bool,
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

/// Applies one phase on one node and records it in the node's journal: `Ok` when both
/// happened, the outcome and error otherwise. Only a failed apply is cleaned up, and only of
/// what the attempt recorded.
fn attempt(phase: &dyn Phase, n: &Node, inputs: &str) -> Result<(), Failure> {
    let title = phase.title();
    let rep = &n.ctx.reporter;
    let failure = |outcome, error: &PhaseError, clean_up_error| Failure {
        node: n.name(),
        phase: title.into(),
        error: super::report::chain(error),
        outcome,
        clean_up_error,
        damaged: error.is_damaged(),
    };
    let attempt = Attempt::default();
    if let Err(e) = phase.run(n, &attempt) {
        let (removed, clean_up_error) = match phase.clean_up(n, &attempt) {
            Ok(removed) => (removed, None),
            Err(ce) => (Vec::new(), Some(super::report::chain(&ce))),
        };
        if !removed.is_empty() || clean_up_error.is_some() {
            rep.emit(&Event::CleanUp {
                phase: title,
                node: &n.name(),
                removed: &removed,
                error: clean_up_error.as_deref(),
            });
        }
        return Err(failure(Outcome::Failed, &e, clean_up_error));
    }
    if phase.journaled() {
        let recorded = n.remote().and_then(|remote| {
            lock(&n.journal)
                .record_with(&*remote, &n.ctx.data_dir, title, inputs)
                .map_err(PhaseError::from)
        });
        if let Err(e) = recorded {
            return Err(failure(Outcome::NotJournaled, &e, None));
        }
    }
    Ok(())
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
            let ran_somewhere = AtomicBool::new(false);
            for_each_parallel(&live, self.parallel, |n| {
                let name = n.name();
                let inputs = if phase.journaled() {
                    phase.inputs(n)
                } else {
                    String::new()
                };
                let skip = |plan: &str, reason: &str| {
                    if planning {
                        lock(&plans[n.index]).push(format!("{title}: {plan}"));
                    } else {
                        rep.emit(&Event::Skip {
                            phase: title,
                            node: &name,
                            reason,
                        });
                    }
                };
                if phase.journaled() && lock(&n.journal).is_done_with(title, &inputs) {
                    return skip("already done", "done in an earlier run");
                }
                if !phase.should_run(n) {
                    return skip("nothing to do", "nothing to do");
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
                match attempt(phase.as_ref(), n, &inputs) {
                    Ok(()) => rep.emit(&Event::Done {
                        phase: title,
                        node: &name,
                        seconds: t.elapsed().as_secs_f64(),
                    }),
                    Err(f) => {
                        let error = match f.outcome {
                            Outcome::Failed => f.error.clone(),
                            Outcome::NotJournaled => format!(
                                "applied, but its journal entry could not be written ({}); \
                                 nothing was removed, and a re-run applies it again",
                                f.error
                            ),
                        };
                        rep.emit(&Event::Fail {
                            phase: title,
                            node: &name,
                            error: &error,
                        });
                        *lock(&failed[n.index]) = Some(Failure { error, ..f });
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
                    reason: &reason.to_string(),
                });
                // A dry run stops here too: the plan after a failed check would be a plan for
                // hosts that cannot take it, and the run must not report success.
                stopped = Some(format!("{title} failed"));
                break;
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
    use crate::engine::{Ctx, PhaseResult};
    use crate::ssh::Conn;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    /// The error of a fake step that printed `output`.
    fn fails(output: &str) -> PhaseError {
        PhaseError::Script {
            what: "fake".into(),
            code: 1,
            output: output.into(),
        }
    }

    /// A phase that writes `<dir>/<title>.<node>` as its result, first creating a temp file
    /// `<dir>/<title>.<node>.tmp` recorded in its attempt, and fails where told to.
    struct Fake {
        title: &'static str,
        dir: PathBuf,
        fail_on: Option<usize>,
        /// Fail after writing the result (the temp file stays for clean-up to find).
        journaled: bool,
        clean_up_fails: bool,
        runs: Arc<AtomicUsize>,
        clean_ups: Arc<AtomicUsize>,
    }

    impl Fake {
        fn new(title: &'static str, dir: &Path) -> Fake {
            Fake {
                title,
                dir: dir.to_path_buf(),
                fail_on: None,
                journaled: false,
                clean_up_fails: false,
                runs: Arc::new(AtomicUsize::new(0)),
                clean_ups: Arc::new(AtomicUsize::new(0)),
            }
        }
        fn result(&self, n: usize) -> PathBuf {
            self.dir.join(format!("{}.{n}", self.title))
        }
        fn temp(&self, n: usize) -> PathBuf {
            self.dir.join(format!("{}.{n}.tmp", self.title))
        }
    }

    impl Phase for Fake {
        fn title(&self) -> &str {
            self.title
        }
        fn dry_run(&self, _: &Node) -> String {
            "would fake".into()
        }
        fn run(&self, n: &Node, attempt: &Attempt) -> PhaseResult {
            self.runs.fetch_add(1, Ordering::SeqCst);
            let temp = self.temp(n.index);
            attempt.creates(temp.to_string_lossy());
            let io = |source| PhaseError::Io {
                path: temp.clone(),
                source,
            };
            std::fs::write(&temp, b"half").map_err(io)?;
            if self.fail_on == Some(n.index) {
                return Err(fails("boom"));
            }
            std::fs::rename(&temp, self.result(n.index)).map_err(io)?;
            Ok(())
        }
        fn clean_up(&self, n: &Node, attempt: &Attempt) -> Result<Vec<String>, PhaseError> {
            self.clean_ups.fetch_add(1, Ordering::SeqCst);
            if self.clean_up_fails {
                return Err(fails("clean-up refused"));
            }
            attempt.remove_created(n)
        }
        fn journaled(&self) -> bool {
            self.journaled
        }
    }

    /// A phase whose cross-node check fails.
    struct FailingCheck;

    impl Phase for FailingCheck {
        fn title(&self) -> &str {
            "preflight"
        }
        fn dry_run(&self, _: &Node) -> String {
            "check".into()
        }
        fn run(&self, _: &Node, _: &Attempt) -> PhaseResult {
            Ok(())
        }
        fn journaled(&self) -> bool {
            false
        }
        fn read_only(&self) -> bool {
            true
        }
        fn after_all(&self, _: &[&Node], _: &Ctx) -> PhaseResult {
            Err(PhaseError::SameHostname)
        }
    }

    fn ctx(data_dir: &Path) -> Arc<Ctx> {
        crate::engine::test_ctx(&data_dir.to_string_lossy(), Default::default())
    }

    /// `count` nodes on this machine, each with a local connection.
    fn nodes(count: usize, data_dir: &Path) -> Vec<Node> {
        let c = ctx(data_dir);
        (0..count)
            .map(|i| {
                let n = Node::new(i, None, c.clone());
                n.set_remote(Some(Arc::new(Conn::local().expect("a local connection"))));
                n
            })
            .collect()
    }

    fn manager(phases: Vec<Box<dyn Phase>>, dry_run: bool) -> Manager {
        Manager {
            phases,
            parallel: 2,
            dry_run,
        }
    }

    #[test]
    fn a_failed_apply_removes_only_what_its_attempt_created() {
        let dir = tempfile::tempdir().unwrap();
        let ns = nodes(4, &dir.path().join("data"));
        let one = Fake::new("one", dir.path());
        let mut two = Fake::new("two", dir.path());
        two.fail_on = Some(2);
        let three = Fake::new("three", dir.path());
        let (runs3, clean_ups2) = (three.runs.clone(), two.clean_ups.clone());
        let (one_result, two_temp, two_result_0) = (one.result(2), two.temp(2), two.result(0));
        let rep = manager(vec![Box::new(one), Box::new(two), Box::new(three)], false).run(&ns);

        assert_eq!(rep.failed.len(), 1);
        assert_eq!(rep.failed[0].phase, "two");
        assert_eq!(rep.failed[0].outcome, Outcome::Failed);
        assert_eq!(rep.failed[0].error, "fake failed with exit code 1:\nboom");
        assert!(rep.failed[0].clean_up_error.is_none());
        assert_eq!(rep.ok.len(), 3);
        // The node that failed kept what "one" made before, lost only the failed attempt's
        // temp file, and went no further; the others went on.
        assert!(one_result.exists(), "an earlier phase's result was removed");
        assert!(!two_temp.exists(), "the failed attempt's temp file stayed");
        assert!(two_result_0.exists());
        assert_eq!(clean_ups2.load(Ordering::SeqCst), 1);
        assert_eq!(runs3.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_failed_clean_up_is_reported_and_removes_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let ns = nodes(2, &dir.path().join("data"));
        let one = Fake::new("one", dir.path());
        let mut two = Fake::new("two", dir.path());
        two.fail_on = Some(1);
        two.clean_up_fails = true;
        let (one_result, two_temp) = (one.result(1), two.temp(1));
        let rep = manager(vec![Box::new(one), Box::new(two)], false).run(&ns);

        assert_eq!(rep.failed.len(), 1);
        let f = &rep.failed[0];
        assert_eq!((f.phase.as_str(), f.outcome), ("two", Outcome::Failed));
        assert_eq!(
            f.clean_up_error.as_deref(),
            Some("fake failed with exit code 1:\nclean-up refused")
        );
        assert!(one_result.exists());
        // The clean-up did not run, so its temp file is still there, and nothing else went.
        assert!(two_temp.exists());
        assert_eq!(rep.ok.len(), 1);
    }

    #[test]
    fn applied_but_not_journaled_keeps_the_work_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        // The data dir is a regular file: the journal cannot be written there.
        let data = dir.path().join("data");
        std::fs::write(&data, b"not a directory").unwrap();
        let ns = nodes(2, &data);
        let mut one = Fake::new("one", dir.path());
        one.journaled = true;
        let (clean_ups, result) = (one.clean_ups.clone(), one.result(0));
        let rep = manager(vec![Box::new(one)], false).run(&ns);

        assert_eq!(rep.failed.len(), 2);
        for f in &rep.failed {
            assert_eq!(f.outcome, Outcome::NotJournaled, "{f:?}");
            assert!(f.error.contains("journal"), "{}", f.error);
            assert!(f.error.contains("a re-run applies it again"), "{}", f.error);
        }
        assert!(result.exists(), "the applied work was removed");
        assert_eq!(
            clean_ups.load(Ordering::SeqCst),
            0,
            "no clean-up after a good apply"
        );
    }

    #[test]
    fn a_journaled_phase_is_skipped_on_the_next_run_and_a_failed_one_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let run = |fail_on: Option<usize>| {
            let ns = nodes(2, &data);
            for n in &ns {
                let remote = n.remote().unwrap();
                *lock(&n.journal) = crate::engine::journal::Journal::load(
                    &*remote,
                    &n.ctx.data_dir,
                    &n.ctx.bundle.digest,
                )
                .unwrap();
            }
            let mut one = Fake::new("one", dir.path());
            one.journaled = true;
            one.fail_on = fail_on;
            let runs = one.runs.clone();
            let rep = manager(vec![Box::new(one)], false).run(&ns);
            (rep, runs.load(Ordering::SeqCst))
        };
        // Both local nodes share one journal: the failing node 1 records nothing, node 0 does.
        let (rep, runs) = run(Some(1));
        assert_eq!((rep.failed.len(), runs), (1, 2));
        let (rep, runs) = run(None);
        assert!(rep.success());
        assert_eq!(runs, 0, "the journal says done: nothing runs again");
    }

    #[test]
    fn a_failed_cross_node_check_stops_a_dry_run_too() {
        let dir = tempfile::tempdir().unwrap();
        let ns = nodes(2, &dir.path().join("data"));
        let later = Fake::new("later", dir.path());
        let runs = later.runs.clone();
        let rep = manager(vec![Box::new(FailingCheck), Box::new(later)], true).run(&ns);
        assert_eq!(rep.stopped.as_deref(), Some("preflight failed"));
        assert!(!rep.success());
        assert!(rep.ok.is_empty());
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        let rep = manager(vec![Box::new(FailingCheck)], false).run(&ns);
        assert_eq!(rep.stopped.as_deref(), Some("preflight failed"));
    }
}
