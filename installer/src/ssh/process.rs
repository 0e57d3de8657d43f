//! One command on a host, started here with `sh -c` or over the host's SSH session: its input
//! fed, its output collected and its end told apart from the loss of the connection.

use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The runtime under every command of every connection. The rest of bale runs on threads that
/// wait here with `block_on`; the one worker only drives pipes, timers and child processes.
pub(super) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bale-ssh")
            .enable_all()
            .build()
            // only fails when the process cannot make a thread or an epoll instance
            .expect("cannot start the runtime for host commands")
    })
}

/// Where a command reads its input.
pub(super) enum Stdin {
    /// A pipe from this process.
    Piped,
    /// A file or named pipe handed to the command itself: a bulk stream skips one copy.
    File(std::fs::File),
}

pub(super) type Writer = Box<dyn AsyncWrite + Unpin + Send>;
pub(super) type Reader = Box<dyn AsyncRead + Unpin + Send>;

/// A started command.
pub(super) enum Proc {
    Local(tokio::process::Child),
    Remote(openssh::Child<Arc<openssh::Session>>),
}

/// How a command ended.
pub(super) enum Ended {
    /// Its exit code; -1 when a signal ended it.
    Code(i32),
    /// ssh itself failed (exit 255): the session broke, or the remote side ended abnormally.
    Lost,
}

impl Proc {
    /// Starts `command` (a line for the login shell) here or over `session`; stdout is always
    /// a pipe, stderr one when `stderr` is set.
    pub(super) async fn start(
        session: Option<&Arc<openssh::Session>>,
        command: &str,
        stdin: Stdin,
        stderr: bool,
    ) -> std::io::Result<Proc> {
        use std::process::Stdio;
        let err_pipe = || {
            if stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        // Each builder is dropped before this returns: it holds a copy of a handed-over stdin,
        // and the command's writer must see the end once the command is gone.
        match session {
            None => {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c")
                    .arg(command)
                    .stdin(match stdin {
                        Stdin::Piped => Stdio::piped(),
                        Stdin::File(f) => Stdio::from(f),
                    })
                    .stdout(Stdio::piped())
                    .stderr(err_pipe())
                    .kill_on_drop(true);
                Ok(Proc::Local(c.spawn()?))
            }
            Some(s) => {
                let mut c = s.clone().arc_raw_command(command);
                c.stdin(match stdin {
                    Stdin::Piped => openssh::Stdio::piped(),
                    Stdin::File(f) => openssh::Stdio::from(f),
                })
                .stdout(openssh::Stdio::piped())
                .stderr(if stderr {
                    openssh::Stdio::piped()
                } else {
                    openssh::Stdio::null()
                });
                let child = c.spawn().await.map_err(std::io::Error::other)?;
                Ok(Proc::Remote(child))
            }
        }
    }

    pub(super) fn take_stdin(&mut self) -> Option<Writer> {
        match self {
            Proc::Local(c) => c.stdin.take().map(|w| Box::new(w) as Writer),
            Proc::Remote(c) => c.stdin().take().map(|w| Box::new(w) as Writer),
        }
    }

    pub(super) fn take_stdout(&mut self) -> Option<Reader> {
        match self {
            Proc::Local(c) => c.stdout.take().map(|r| Box::new(r) as Reader),
            Proc::Remote(c) => c.stdout().take().map(|r| Box::new(r) as Reader),
        }
    }

    pub(super) fn take_stderr(&mut self) -> Option<Reader> {
        match self {
            Proc::Local(c) => c.stderr.take().map(|r| Box::new(r) as Reader),
            Proc::Remote(c) => c.stderr().take().map(|r| Box::new(r) as Reader),
        }
    }

    pub(super) async fn wait(self) -> std::io::Result<Ended> {
        match self {
            Proc::Local(mut c) => Ok(Ended::Code(c.wait().await?.code().unwrap_or(-1))),
            Proc::Remote(c) => match c.wait().await {
                Ok(status) => Ok(Ended::Code(status.code().unwrap_or(-1))),
                Err(openssh::Error::RemoteProcessTerminated) => Ok(Ended::Lost),
                // the crate reports the shell's "not found" as an error; it is an exit code
                Err(openssh::Error::Remote(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(Ended::Code(127))
                }
                Err(e) => Err(std::io::Error::other(e)),
            },
        }
    }
}

/// Writes `prefix` and then `input` to a command's stdin, and closes it.
pub(super) async fn feed(
    stdin: Option<Writer>,
    prefix: Option<String>,
    input: crate::remote::Input<'_>,
) -> std::io::Result<()> {
    let Some(mut w) = stdin else {
        return Ok(());
    };
    if let Some(p) = &prefix {
        w.write_all(p.as_bytes()).await?;
    }
    match input {
        crate::remote::Input::None => {}
        crate::remote::Input::Bytes(b) => w.write_all(b).await?,
        crate::remote::Input::File(p) => {
            let mut f = tokio::fs::File::open(p).await?;
            tokio::io::copy(&mut f, &mut w).await?;
        }
    }
    w.shutdown().await
}

/// Everything a command prints on one stream.
pub(super) async fn read_all(r: Option<Reader>) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut r) = r {
        r.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// The first line a command prints, waiting at most `wait` for it; empty when it printed none.
pub(super) async fn first_line(r: Option<Reader>, wait: std::time::Duration) -> String {
    let Some(r) = r else {
        return String::new();
    };
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(r);
    let read = tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line);
    match tokio::time::timeout(wait, read).await {
        Ok(Ok(_)) => line,
        _ => String::new(),
    }
}
