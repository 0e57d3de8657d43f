//! `bale agent copy`: the node side of a copy. Started by the installer over SSH from
//! `<data-dir>/.bale-copy-agent` (the bundle's program, checked with sha256sum first).
//!
//! stdin is the control channel: a setup line (JSON: this run's token, where chunks come from),
//! then records ([`wire`]): the chunks themselves when the installer is the source, pings
//! otherwise. When stdin ends the agent stops (the installer closes it once no node needs this
//! one's chunks any more); when nothing arrives on it for [`SILENCE`] the installer is gone and
//! the agent stops too, so a partition never leaves an agent behind for long.
//!
//! Exit codes: 0 the copy is complete and `bundle.bale` in place (the final state is printed on
//! stdout as JSON); [`EXIT_SOURCE_LOST`] the peer it fetched from failed (the installer picks
//! another source and starts the agent again: the copy resumes); 3 the installer sent a chunk
//! that does not check out (its bundle is damaged, as every bale command exits for one); 1 any
//! other failure.

use super::server::Server;
use super::sink::{OnBadChunk, Sink};
use super::store::{Store, LOCK};
use super::wire;
use super::CopyError;
use bale_payload::chunks::TAIL;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const EXIT_SOURCE_LOST: i32 = 75;
/// Without a word from the installer for this long, the agent gives up.
pub const SILENCE: Duration = Duration::from_secs(45);
/// A peer that sends nothing for this long is taken for lost.
const PEER_STALL: Duration = Duration::from_secs(20);

/// What `bale agent copy` is started with.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Where bundle.bale goes.
    pub data_dir: PathBuf,
    /// Header digest of the bundle (hex).
    pub digest: String,
    /// This node's address, where other nodes fetch chunks.
    pub listen: IpAddr,
    /// Length of the program part of the bundle (what `stub` requests get).
    pub stub_len: u64,
    /// This start's name, written to the state file.
    pub run: String,
}

/// The first line on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// Clients of this node's chunk server must present it.
    pub token: String,
    pub source: Source,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The chunks follow the setup line on stdin.
    Installer,
    /// Fetch from another node's chunk server.
    Peer { addr: SocketAddr, token: String },
}

/// Runs the agent; returns the exit code.
pub fn run(opts: CopyOptions) -> i32 {
    match copy(opts) {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("bale agent copy: {msg}");
            code
        }
    }
}

pub(super) type Failure = (i32, String);

/// Ends the agent from a thread other than the copy's own: the failure goes into the state
/// for the installer, and to stderr like any other.
pub(super) fn stop_now(store: &Store, (code, why): Failure) -> ! {
    store.fail(&why);
    eprintln!("bale agent copy: {why}");
    std::process::exit(code)
}

/// Why a copy fed by the installer stops on a chunk it cannot take: one that does not check out
/// (the installer read it from its own bundle, so another try cannot mend it), or one this
/// node cannot store.
pub(super) fn bad_from_installer(e: &CopyError) -> Failure {
    if e.is_damaged() {
        return (
            crate::engine::EXIT_DAMAGED,
            format!("the installer sent a chunk that does not check out: {e}"),
        );
    }
    fatal(format!(
        "cannot store a chunk from the installer: {}",
        crate::engine::report::chain(e)
    ))
}

pub(super) fn fatal(message: impl std::fmt::Display) -> Failure {
    (1, message.to_string())
}

/// An error with its causes.
fn failed<E: std::error::Error + 'static>(e: E) -> Failure {
    (1, crate::engine::report::chain(&e))
}

fn copy(opts: CopyOptions) -> Result<(), Failure> {
    super::grow_pipe(&std::io::stdin());
    let mut control = BufReader::with_capacity(1 << 20, std::io::stdin());
    let line = wire::read_line(&mut control)
        .map_err(failed)?
        .ok_or_else(|| fatal("stdin ended before the setup line"))?;
    let setup: Setup =
        serde_json::from_str(&line).map_err(|e| fatal(format!("bad setup line: {e}")))?;
    let _lock = take_lock(&opts.data_dir).map_err(failed)?;
    let store = Arc::new(Store::open(&opts.data_dir, &opts.digest, &opts.run).map_err(failed)?);
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    store.fill_stub_from(&exe).map_err(failed)?;

    let listener = TcpListener::bind(SocketAddr::new(opts.listen, 0))
        .map_err(|e| fatal(format!("listen on {}: {e}", opts.listen)))?;
    let port = listener.local_addr().map_err(failed)?.port();
    store.set_port(port);
    let server = Arc::new(Server {
        store: store.clone(),
        token: setup.token.clone(),
        digest: opts.digest.clone(),
        exe: exe.clone(),
        stub_len: opts.stub_len,
    });
    std::thread::spawn(move || server.run(listener));

    // Save the state for the installer twice a second, and stop when it falls silent.
    let heard = Arc::new(AtomicU64::new(now_ms()));
    {
        let store = store.clone();
        let heard = heard.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let _ = store.save();
            if now_ms().saturating_sub(heard.load(Ordering::Relaxed)) > SILENCE.as_millis() as u64 {
                let why = format!(
                    "no word from the installer for {} s: stopping",
                    SILENCE.as_secs()
                );
                stop_now(&store, fatal(why));
            }
        });
    }
    store
        .set_phase(if store.list().is_some() {
            "ready"
        } else {
            "listening"
        })
        .map_err(failed)?;

    match &setup.source {
        Source::Installer => {
            // Chunks and pings on stdin, until it ends.
            let bad = |e: CopyError| {
                let f = bad_from_installer(&e);
                store.fail(&f.1);
                f
            };
            let sink = Sink::start(store.clone(), "installer", OnBadChunk::Fail);
            loop {
                let mut buf = sink.buffer();
                let r = next_record(&mut control, &heard, &mut buf).map_err(|e| {
                    let m = format!("reading from the installer: {e}");
                    store.fail(&m);
                    fatal(m)
                })?;
                let Some(index) = r else { break };
                if index == wire::PING {
                    continue;
                }
                if store.list().is_none() && index as usize == TAIL {
                    // the tail names every other chunk: it is settled before any of them
                    store.accept(TAIL, &buf, "installer").map_err(bad)?;
                    store.fill_stub_from(&exe).map_err(failed)?;
                    store.set_phase("ready").map_err(failed)?;
                    store.finish_if_complete().map_err(failed)?;
                    continue;
                }
                sink.put(index as usize, buf).map_err(bad)?;
            }
            sink.close().map_err(bad)?;
        }
        Source::Peer { addr, token } => {
            let stop = Arc::new(AtomicBool::new(false));
            {
                let heard = heard.clone();
                let stop = stop.clone();
                // Pings only; the end of stdin means stop.
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    while let Ok(Some(_)) = next_record(&mut control, &heard, &mut buf) {}
                    stop.store(true, Ordering::SeqCst);
                });
            }
            if let Err((code, m)) = fetch(&store, &exe, *addr, token, &opts.digest, opts.stub_len) {
                store.fail(&m);
                return Err((code, m));
            }
            store.finish_if_complete().map_err(failed)?;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    if !store.is_complete() {
        let m = "the installer closed the copy before every chunk arrived";
        store.fail(m);
        return Err(fatal(m));
    }
    store.save().map_err(failed)?;
    println!(
        "{}",
        serde_json::to_string(&store.state()).unwrap_or_default()
    );
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Reads one record from the installer into `buf`; `None` at the end of stdin. Every MiB that
/// arrives counts as word from the installer.
fn next_record(
    r: &mut impl Read,
    heard: &AtomicU64,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<u32>> {
    wire::read_record(r, buf, || heard.store(now_ms(), Ordering::Relaxed))
}

/// Fetches every missing chunk from a peer, in order, as the peer gets them.
///
/// The peer may hold the copy of a multi-platform bundle for another architecture: every chunk
/// but the program and the tail is the same in both, the program is this node's own, and the
/// peer's tail is made this copy's (`stub_len` is this copy's program length) before it is
/// checked.
fn fetch(
    store: &Arc<Store>,
    exe: &Path,
    addr: SocketAddr,
    token: &str,
    digest: &str,
    stub_len: u64,
) -> Result<(), Failure> {
    let lost = |what: String| (EXIT_SOURCE_LOST, format!("peer {addr}: {what}"));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| lost(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(PEER_STALL))
        .and_then(|()| stream.set_write_timeout(Some(PEER_STALL)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(|e| lost(crate::engine::report::chain(&e)))?;
    let mut rd = BufReader::with_capacity(1 << 20, stream.try_clone().map_err(failed)?);
    let mut wr = BufWriter::new(stream);
    let source = addr.ip().to_string();
    writeln!(wr, "{} {token} {digest}", wire::HELLO)
        .and_then(|()| wr.flush())
        .map_err(|e| lost(format!("send: {e}")))?;
    let want = |wr: &mut BufWriter<TcpStream>, list: &[usize]| -> Result<(), Failure> {
        writeln!(wr, "want {}", wire::encode_ranges(list))
            .and_then(|()| wr.flush())
            .map_err(|e| lost(format!("send: {e}")))
    };
    if store.list().is_none() {
        want(&mut wr, &[TAIL])?;
        receive(&mut rd, store, &[TAIL], &source, stub_len)
            .map_err(|e| lost(crate::engine::report::chain(&e)))?;
        store.fill_stub_from(exe).map_err(failed)?;
        store.set_phase("ready").map_err(failed)?;
    }
    // A chunk that fails its check is asked for once more before the peer is given up on.
    for round in 0..2 {
        let missing = store.missing();
        if missing.is_empty() {
            return Ok(());
        }
        if round == 1 {
            eprintln!(
                "bale agent copy: {} chunk(s) from {addr} did not check out; asking again",
                missing.len()
            );
        }
        want(&mut wr, &missing)?;
        receive(&mut rd, store, &missing, &source, stub_len)
            .map_err(|e| lost(crate::engine::report::chain(&e)))?;
    }
    let left = store.missing().len();
    Err(lost(format!(
        "{left} chunk(s) it sent twice did not match the bundle's digests"
    )))
}

/// Reads the answers to one `want` line. Chunks that do not check out are left missing.
fn receive(
    rd: &mut impl BufRead,
    store: &Arc<Store>,
    wanted: &[usize],
    source: &str,
    stub_len: u64,
) -> Result<(), CopyError> {
    let sink = Sink::start(store.clone(), source, OnBadChunk::Skip);
    for &index in wanted {
        let mut buf = sink.buffer();
        let got = wire::read_record(rd, &mut buf, || {})
            .map_err(|e| CopyError::Protocol(format!("reading chunk {index}: {e}")))?
            .ok_or_else(|| CopyError::Protocol("the peer closed the connection".into()))?;
        if got == wire::ERROR {
            return Err(CopyError::Protocol(format!(
                "the peer says: {}",
                String::from_utf8_lossy(&buf)
            )));
        }
        if got as usize != index {
            return Err(CopyError::Protocol(format!(
                "sent chunk {got} where {index} was due"
            )));
        }
        if index == TAIL {
            bale_payload::chunks::rebase_tail(&mut buf, stub_len);
        }
        sink.put(index, buf)?;
    }
    sink.close()
}

/// One copy per data dir at a time. An agent left over from an interrupted run (it stops on its
/// own within [`SILENCE`]) is asked to stop at once.
pub fn take_lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, CopyError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join(LOCK);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| CopyError::Io {
            path: path.clone(),
            what: "open the copy lock".into(),
            source,
        })?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut asked = false;
    let held = loop {
        f = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(held) => break held,
            Err((back, _)) => back,
        };
        if !asked {
            asked = true;
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                if pid > 1 && cmd.contains("agent\0copy\0") {
                    // A process checked to be a stale copy agent.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
        if Instant::now() > deadline {
            return Err(CopyError::Held(path.to_path_buf()));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    use std::os::unix::fs::FileExt;
    let _ = held.set_len(0);
    let _ = held.write_all_at(std::process::id().to_string().as_bytes(), 0);
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_line_format() {
        let s = Setup {
            token: "t".into(),
            source: Source::Peer {
                addr: "10.0.0.2:4000".parse().unwrap(),
                token: "u".into(),
            },
        };
        let j = serde_json::to_string(&s).unwrap();
        assert!(j.contains("\"peer\""), "{j}");
        let back: Setup = serde_json::from_str(&j).unwrap();
        assert_eq!(back.source, s.source);
        let i: Setup = serde_json::from_str(r#"{"token":"x","source":"installer"}"#).unwrap();
        assert_eq!(i.source, Source::Installer);
    }
}
