//! The one way the installer runs something on a node: a [`Cmd`] handed to a [`Remote`].
//!
//! The rule: callers never quote; values are arguments. A command is a program and its
//! arguments ([`Cmd::new`], [`Cmd::arg`]), each argument quoted here. What only a shell can do
//! (pipelines, redirections, `set -e` blocks) is a [`Script`]: a constant template whose
//! values are quoted here too ([`shell`]). Either way no value from a file, the network or
//! the user is ever read by a shell as anything but one word.
//!
//! A command carries a `what` ("read the journal"), which names it when it fails:
//! `{host}: {what} failed (exit {code}): {detail}` ([`Remote::run_ok`]), and what it reads on
//! stdin: bytes, or a file (or named pipe) streamed to it.
//!
//! [`crate::ssh::Conn`] is the real remote, over SSH or on this machine; tests use the
//! scripted one in `fake`, which records every command and answers from a table.

#[cfg(test)]
pub mod fake;
pub mod shell;

pub use shell::{readable_line, Script};

use crate::ssh::SshError;
use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

/// Runs commands as root on one node (and, for the few that must not, as the login user).
pub trait Remote: Send + Sync {
    /// The host's name in messages: its address (and port when not 22), or `local`.
    fn label(&self) -> &str;

    /// True when the node is this machine.
    fn is_local(&self) -> bool;

    /// Runs `cmd` as root and returns how it ended, whatever its exit code.
    fn run(&self, cmd: &Cmd) -> Result<Output, SshError>;

    /// Runs `cmd` as the login user, for what needs no privilege (the host's facts, its clock).
    fn run_as_user(&self, cmd: &Cmd) -> Result<Output, SshError>;

    /// Starts `cmd` as root and leaves it running until this remote is dropped, with its
    /// stdin open and a line written to it every few seconds; returns the first line it
    /// prints within `wait` (empty when none). For a lock on the host that cannot outlive
    /// this run: the command holds it until its stdin ends or falls silent. The command's
    /// stdin is those lines (after the sudo password, when there is one), not its own input.
    fn hold(&self, cmd: &Cmd, wait: Duration) -> Result<String, SshError>;

    /// Runs `cmd` as root and returns its stdout, or an error naming the command's `what`,
    /// its exit code and its last stderr lines.
    fn run_ok(&self, cmd: &Cmd) -> Result<String, SshError> {
        let o = self.run(cmd)?;
        if o.code != 0 {
            return Err(SshError::Failed {
                host: self.label().to_string(),
                what: cmd.what().to_string(),
                code: o.code,
                detail: o.stderr_line(),
            });
        }
        Ok(o.stdout_str())
    }
}

/// What a command reads on stdin.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    None,
    Bytes(&'a [u8]),
    /// A file or named pipe, streamed (after the sudo password, when there is one).
    File(&'a Path),
}

/// How a command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last three lines of stderr, joined with ` / `: the detail of an error.
    pub fn stderr_line(&self) -> String {
        let s = String::from_utf8_lossy(&self.stderr);
        let s = s.trim();
        let tail: Vec<&str> = s.lines().rev().take(3).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
    }
}

/// A command for a node: its shell text (built here, every value quoted), its stdin, and
/// what it does, for messages.
#[derive(Debug, Clone)]
pub struct Cmd<'a> {
    what: String,
    line: String,
    stdin: Input<'a>,
}

impl<'a> Cmd<'a> {
    /// `program` with no arguments yet; `what` names the command in errors.
    pub fn new(what: impl Into<String>, program: impl AsRef<str>) -> Cmd<'a> {
        Cmd {
            what: what.into(),
            line: shell::quote(program.as_ref()),
            stdin: Input::None,
        }
    }

    /// A shell script, for pipelines, redirections and `set -e` blocks.
    pub fn script(what: impl Into<String>, script: &Script) -> Cmd<'a> {
        Cmd {
            what: what.into(),
            line: script.text(),
            stdin: Input::None,
        }
    }

    /// Prints the file at `path`, or nothing when it is missing or unreadable.
    pub fn cat_or_empty(what: impl Into<String>, path: &str) -> Cmd<'a> {
        Cmd::script(
            what,
            &Script::new("cat {path} 2>/dev/null || true").value("path", path),
        )
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Display) -> Cmd<'a> {
        self.line.push(' ');
        self.line.push_str(&shell::quote(&arg.to_string()));
        self
    }

    /// Appends each of `args`.
    pub fn args<I>(self, args: I) -> Cmd<'a>
    where
        I: IntoIterator,
        I::Item: Display,
    {
        args.into_iter().fold(self, Cmd::arg)
    }

    /// Feeds `bytes` to the command's stdin.
    pub fn stdin(mut self, bytes: &'a [u8]) -> Cmd<'a> {
        self.stdin = Input::Bytes(bytes);
        self
    }

    /// Streams the file (or named pipe) at `path` to the command's stdin.
    pub fn stdin_file(mut self, path: &'a Path) -> Cmd<'a> {
        self.stdin = Input::File(path);
        self
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// The command as a line for `sh -c`.
    pub fn line(&self) -> &str {
        &self.line
    }

    pub fn input(&self) -> Input<'a> {
        self.stdin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_quote_their_program_and_every_argument() {
        let c = Cmd::new("run the agent", "/var/lib/bale dir/bundle.bale")
            .args(["agent", "step", "it's"])
            .arg("")
            .arg(5050u16)
            .arg("$(reboot)\nx");
        assert_eq!(
            c.line(),
            "'/var/lib/bale dir/bundle.bale' 'agent' 'step' 'it'\\''s' '' '5050' '$(reboot)\nx'"
        );
        assert_eq!(c.what(), "run the agent");
        assert!(matches!(c.input(), Input::None));
        let c = Cmd::cat_or_empty("read", "/d/it's.json").stdin(b"x");
        assert_eq!(c.line(), r"cat '/d/it'\''s.json' 2>/dev/null || true");
        assert!(matches!(c.input(), Input::Bytes(b"x")));
    }

    #[test]
    fn output_details_are_the_last_stderr_lines() {
        let o = Output {
            code: 1,
            stdout: b"out\n".to_vec(),
            stderr: b"a\nb\nc\nd\n".to_vec(),
        };
        assert_eq!(o.stderr_line(), "b / c / d");
        assert_eq!(o.stdout_str(), "out\n");
    }
}
