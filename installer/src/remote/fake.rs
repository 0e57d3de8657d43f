//! A scripted [`Remote`] for unit tests: it records every command it gets and answers from a
//! table of rules, the first that matches the command's line. A command no rule matches is a
//! mistake in the test, and panics with its line.

use super::{Cmd, Input, Output, Remote};
use crate::ssh::SshError;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// How a command was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Root,
    User,
    Hold,
}

/// What a command read on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed {
    Nothing,
    Bytes(Vec<u8>),
    File(PathBuf),
}

/// One command the fake got.
#[derive(Debug, Clone)]
pub struct Call {
    pub how: How,
    pub what: String,
    pub line: String,
    pub stdin: Fed,
}

struct Rule {
    /// Matches a line that contains it.
    pattern: String,
    answer: Output,
    /// How many more times it answers; None: always.
    left: Option<usize>,
}

/// The scripted remote.
pub struct Scripted {
    label: String,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<Call>>,
}

impl Scripted {
    pub fn new(label: &str) -> Scripted {
        Scripted {
            label: label.into(),
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every command whose line contains `pattern` exits 0 and prints `stdout`.
    pub fn on(self, pattern: &str, stdout: &str) -> Scripted {
        self.rule(pattern, None, ok(stdout))
    }

    /// The next command whose line contains `pattern` exits 0 and prints `stdout`; later ones
    /// go on to the rules after this one.
    pub fn once(self, pattern: &str, stdout: &str) -> Scripted {
        self.rule(pattern, Some(1), ok(stdout))
    }

    /// Every command whose line contains `pattern` exits with `code` and prints `stderr`.
    pub fn fails(self, pattern: &str, code: i32, stderr: &str) -> Scripted {
        let answer = Output {
            code,
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        };
        self.rule(pattern, None, answer)
    }

    fn rule(self, pattern: &str, left: Option<usize>, answer: Output) -> Scripted {
        self.rules.lock().unwrap().push(Rule {
            pattern: pattern.into(),
            answer,
            left,
        });
        self
    }

    /// The commands so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn answer(&self, how: How, cmd: &Cmd) -> Output {
        self.calls.lock().unwrap().push(Call {
            how,
            what: cmd.what().into(),
            line: cmd.line().into(),
            stdin: match cmd.input() {
                Input::None => Fed::Nothing,
                Input::Bytes(b) => Fed::Bytes(b.to_vec()),
                Input::File(p) => Fed::File(p.to_path_buf()),
            },
        });
        let mut rules = self.rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| r.left != Some(0) && cmd.line().contains(&r.pattern));
        let Some(rule) = rule else {
            panic!("{}: no answer for {:?}", self.label, cmd.line());
        };
        if let Some(n) = rule.left.as_mut() {
            *n -= 1;
        }
        rule.answer.clone()
    }
}

fn ok(stdout: &str) -> Output {
    Output {
        code: 0,
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
    }
}

impl Remote for Scripted {
    fn label(&self) -> &str {
        &self.label
    }
    fn is_local(&self) -> bool {
        false
    }
    fn run(&self, cmd: &Cmd) -> Result<Output, SshError> {
        Ok(self.answer(How::Root, cmd))
    }
    fn run_as_user(&self, cmd: &Cmd) -> Result<Output, SshError> {
        Ok(self.answer(How::User, cmd))
    }
    fn hold(&self, cmd: &Cmd, _wait: Duration) -> Result<String, SshError> {
        let o = self.answer(How::Hold, cmd);
        Ok(o.stdout_str()
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_from_the_table_and_records_the_calls() {
        let r = Scripted::new("10.0.0.1")
            .once("flock", "busy someone")
            .on("flock", "locked")
            .fails("false", 3, "no\nreally not");
        let lock = Cmd::new("lock", "flock");
        assert_eq!(r.hold(&lock, Duration::ZERO).unwrap(), "busy someone");
        assert_eq!(r.hold(&lock, Duration::ZERO).unwrap(), "locked");
        let e = r
            .run_ok(&Cmd::new("say no", "false").stdin(b"in"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "10.0.0.1: say no failed (exit 3): no / really not"
        );
        let calls = r.calls();
        assert_eq!(calls.len(), 3);
        assert_eq!(calls[2].how, How::Root);
        assert_eq!(calls[2].line, "'false'");
        assert_eq!(calls[2].stdin, Fed::Bytes(b"in".to_vec()));
    }

    #[test]
    #[should_panic(expected = "no answer for")]
    fn an_unexpected_command_is_a_mistake_in_the_test() {
        let _ = Scripted::new("n").run(&Cmd::new("x", "reboot"));
    }
}
