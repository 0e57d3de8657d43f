//! The installer's side of the copy: which node feeds which, and driving each node's agent.
//!
//! The upload phase runs once per node, each in its own engine thread; they meet here. A node
//! asks [`Fanout::pick`] for a source: a node that already runs its chunk server and feeds no
//! one else yet, or else a node that holds the whole bundle (it may feed several), or else the
//! installer itself when it feeds no one. With every node starting
//! together that is a chain, installer → A → B → C, each link one full copy, all running at
//! once. A node that holds the whole bundle keeps serving while any other node still copies, so
//! a node whose source fails (its agent exits with [`EXIT_SOURCE_LOST`]) picks another source
//! and resumes. With fewer engine threads than nodes (`--parallel`), later nodes find the
//! earlier ones finished and gone, and the installer feeds the next chain: never more than one
//! stream leaves the installer at a time.

use super::agent::{Setup, Source, EXIT_SOURCE_LOST};
use super::store::{State, BUNDLE, STATE};
use super::wire;
use crate::engine::{lock, Node, PhaseError};
use crate::remote::{Cmd, Remote, Script};
use crate::ssh::SshError;
use bale_payload::chunks::{ChunkList, TAIL};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The program on the node that runs `agent copy` (the bundle's stub).
pub const AGENT: &str = ".bale-copy-agent";
/// Sources a node may lose before its copy is given up.
const MAX_ATTEMPTS: usize = 5;
/// A push that cannot write for this long is given up (the rest goes over SSH).
const PUSH_STALL: Duration = Duration::from_secs(20);

/// What goes wrong on the installer's side of a copy.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    #[error("{}", path.display())]
    Bundle {
        path: PathBuf,
        #[source]
        source: bale_payload::Error,
    },
    #[error("{}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a remote copy needs the node's address")]
    NoAddress,
    #[error("read /dev/urandom for a token: {0}")]
    Token(#[source] std::io::Error),
    #[error("make a pipe for ssh: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("the copy lost {attempts} sources, the last: {last}; run the install again to resume")]
    SourcesLost { attempts: usize, last: String },
    #[error("the copy found no source")]
    NoSource,
    #[error("the copy agent ended without its report: {0}")]
    NoReport(String),
    #[error(
        "the agent reported a complete copy, but {path} has header digest {found:?}, not \
         {expected}"
    )]
    WrongDigest {
        path: String,
        found: String,
        expected: String,
    },
    #[error("the copy agent failed (exit {code}): {stderr}")]
    Agent { code: i32, stderr: String },
}

impl FanoutError {
    /// True when the bundle being sent cannot be read as it should be: its bytes are wrong.
    pub fn is_damaged(&self) -> bool {
        match self {
            FanoutError::Bundle { source, .. } => source.is_corruption(),
            // The agent found a chunk this host sent wrong.
            FanoutError::Agent { code, .. } => *code == crate::engine::EXIT_DAMAGED,
            _ => false,
        }
    }
}

/// The bundle being installed, as the installer reads it.
pub struct Local {
    pub path: PathBuf,
    pub file: File,
    pub list: ChunkList,
    pub digest: String,
    pub stub_sha256: String,
}

impl Local {
    fn open(path: &Path) -> Result<Local, FanoutError> {
        let bundle = |source| FanoutError::Bundle {
            path: path.to_path_buf(),
            source,
        };
        let b = bale_payload::Bundle::open(path).map_err(bundle)?;
        let list = ChunkList::of_bundle(&b).map_err(bundle)?;
        let file = File::open(path).map_err(|source| FanoutError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Local {
            path: path.to_path_buf(),
            file,
            digest: hex::encode(b.trailer.header_sha256),
            stub_sha256: b.header.stub.sha256.clone(),
            list,
        })
    }

    pub fn read_chunk(&self, index: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
        let c = &self.list.chunks[index];
        buf.resize(c.len as usize, 0);
        self.file.read_exact_at(buf, c.offset)
    }
}

/// Where a node's chunks come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Src {
    Installer,
    Peer {
        node: usize,
        name: String,
        addr: SocketAddr,
        token: String,
        /// Where the program comes from: this peer when it runs the same one, else another
        /// peer that does (address and token), else the installer (`None`). A node of another
        /// architecture (a multi-platform bundle) serves the same chunks but not its program.
        program_from: Option<(SocketAddr, String)>,
    },
}

impl Src {
    fn label(&self) -> String {
        match self {
            Src::Installer => "the installer".into(),
            Src::Peer { name, .. } => name.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PeerState {
    /// Copying, chunk server not up yet.
    Starting,
    /// Copying, chunk server up.
    Serving,
    /// Holds the whole bundle, chunk server up.
    Complete,
    /// Its agent stopped (done or failed): not a source.
    Stopped,
}

struct Peer {
    name: String,
    state: PeerState,
    addr: Option<SocketAddr>,
    token: String,
    /// SHA-256 of the program its copy starts with.
    program: String,
    /// The nodes it feeds now: one while it copies itself, any number once it is complete.
    children: Vec<usize>,
}

struct Table {
    /// The node the installer feeds now.
    installer_child: Option<usize>,
    peers: BTreeMap<usize, Peer>,
}

/// A file to send, opened (or why it could not be), shared by the nodes that get it.
type Opened = Result<Arc<Local>, Arc<FanoutError>>;

/// Shared by every node's run of the upload phase.
pub struct Fanout {
    table: Mutex<Table>,
    changed: Condvar,
    /// The files sent, opened once each: the bundle, and for a multi-platform bundle the
    /// copies for the other architectures.
    locals: Mutex<BTreeMap<PathBuf, Opened>>,
}

impl Default for Fanout {
    fn default() -> Self {
        Self::new()
    }
}

/// Totals of one node's copy, over every start of its agent.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    /// Bytes the installer sent (program and chunks).
    pub from_installer: u64,
    /// Bytes received from other nodes.
    pub from_peers: u64,
    /// Bytes found in place from an earlier, interrupted copy.
    pub kept: u64,
    pub seconds: f64,
}

enum AttemptError {
    SourceLost(String),
    Fatal(PhaseError),
}

impl From<SshError> for AttemptError {
    fn from(e: SshError) -> Self {
        AttemptError::Fatal(e.into())
    }
}

impl Fanout {
    pub const fn new() -> Fanout {
        Fanout {
            table: Mutex::new(Table {
                installer_child: None,
                peers: BTreeMap::new(),
            }),
            changed: Condvar::new(),
            locals: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn local(&self, path: &Path) -> Result<Arc<Local>, PhaseError> {
        lock(&self.locals)
            .entry(path.to_path_buf())
            .or_insert_with(|| Local::open(path).map(Arc::new).map_err(Arc::new))
            .clone()
            .map_err(PhaseError::Fanout)
    }

    /// Waits for a source for node `me` and books it. `excluded`: peers that failed `me` before;
    /// `program`: the SHA-256 of the program `me`'s copy starts with.
    fn pick(&self, me: usize, name: &str, excluded: &[usize], token: &str, program: &str) -> Src {
        let mut t = lock(&self.table);
        t.peers.insert(
            me,
            Peer {
                name: name.to_string(),
                state: PeerState::Starting,
                addr: None,
                token: token.to_string(),
                program: program.to_string(),
                children: Vec::new(),
            },
        );
        loop {
            let usable = |i: usize, p: &Peer| {
                i != me
                    && !excluded.contains(&i)
                    && p.addr.is_some()
                    && matches!(p.state, PeerState::Serving | PeerState::Complete)
            };
            // A peer that feeds no one, the complete ones first.
            let free = t
                .peers
                .iter()
                .filter(|(i, p)| usable(**i, p) && p.children.is_empty())
                .max_by_key(|(i, p)| (p.state == PeerState::Complete, **i))
                .map(|(i, _)| *i);
            // A complete peer serves any number of nodes, and is as good a source as the
            // installer, whose link to the site is the one to spare: it is taken before the
            // installer feeds a second copy (CI: a node that came to pick just as the first
            // chain's head completed took the installer, and two copies left it).
            let shared = || {
                t.peers
                    .iter()
                    .filter(|(i, p)| usable(**i, p) && p.state == PeerState::Complete)
                    .min_by_key(|(i, p)| (p.children.len(), std::cmp::Reverse(**i)))
                    .map(|(i, _)| *i)
            };
            let pick_peer = free.or_else(shared);
            // Any peer whose server is up serves its program, whoever it feeds: the chosen one
            // first, so the program travels with the chunks when it can.
            let program_from = pick_peer
                .into_iter()
                .chain(t.peers.keys().copied())
                .find_map(|i| {
                    let p = t.peers.get(&i)?;
                    if !usable(i, p) || p.program != program {
                        return None;
                    }
                    Some((p.addr?, p.token.clone()))
                });
            if let Some(i) = pick_peer {
                if let Some(p) = t.peers.get_mut(&i) {
                    if let Some(addr) = p.addr {
                        p.children.push(me);
                        return Src::Peer {
                            node: i,
                            name: p.name.clone(),
                            addr,
                            token: p.token.clone(),
                            program_from,
                        };
                    }
                }
            }
            if t.installer_child.is_none() {
                t.installer_child = Some(me);
                return Src::Installer;
            }
            t = self
                .changed
                .wait_timeout(t, Duration::from_secs(1))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    fn update(&self, f: impl FnOnce(&mut Table)) {
        f(&mut lock(&self.table));
        self.changed.notify_all();
    }

    fn serving(&self, me: usize, addr: SocketAddr) {
        self.update(|t| {
            if let Some(p) = t.peers.get_mut(&me) {
                p.addr = Some(addr);
                if p.state == PeerState::Starting {
                    p.state = PeerState::Serving;
                }
            }
        });
    }

    fn complete(&self, me: usize) {
        self.update(|t| {
            if let Some(p) = t.peers.get_mut(&me) {
                p.state = PeerState::Complete;
            }
        });
    }

    /// `me` no longer needs `src`.
    fn release_source(&self, me: usize, src: &Src) {
        self.update(|t| match src {
            Src::Installer => {
                if t.installer_child == Some(me) {
                    t.installer_child = None;
                }
            }
            Src::Peer { node, .. } => {
                if let Some(p) = t.peers.get_mut(node) {
                    p.children.retain(|c| *c != me);
                }
            }
        });
    }

    fn stopped(&self, me: usize) {
        self.update(|t| {
            if let Some(p) = t.peers.get_mut(&me) {
                p.state = PeerState::Stopped;
                p.children.clear();
            }
        });
    }

    /// True, and `me` marked stopped, when no other node still copies: `me`'s chunk server may
    /// go. Checked and marked at once, so no node can pick `me` as it stops.
    fn try_stop(&self, me: usize) -> bool {
        let mut t = lock(&self.table);
        let busy = t
            .peers
            .iter()
            .any(|(i, p)| *i != me && matches!(p.state, PeerState::Starting | PeerState::Serving));
        if busy {
            return false;
        }
        if let Some(p) = t.peers.get_mut(&me) {
            p.state = PeerState::Stopped;
        }
        drop(t);
        self.changed.notify_all();
        true
    }

    /// Copies the bundle to one remote node, resuming what an earlier run left there.
    pub fn copy_to(
        &self,
        node: &Node,
        remote: &dyn Remote,
        source: &Path,
    ) -> Result<Totals, PhaseError> {
        let local = self.local(source)?;
        let ip = node
            .host
            .as_ref()
            .map(|h| h.addr)
            .ok_or(FanoutError::NoAddress)?;
        let mkdir =
            Script::new("[ -d {d} ] || install -d -m 0700 {d}").value("d", &node.ctx.data_dir);
        remote.run_ok(&Cmd::script("make the data dir", &mkdir))?;
        let mut excluded = Vec::new();
        let mut totals = Totals::default();
        let t0 = Instant::now();
        for attempt in 1..=MAX_ATTEMPTS {
            let token = wire::new_token().map_err(FanoutError::Token)?;
            let src = self.pick(
                node.index,
                &ip.to_string(),
                &excluded,
                &token,
                &local.stub_sha256,
            );
            let r = self.attempt(node, remote, &local, &src, &token, ip, &mut totals);
            self.release_source(node.index, &src);
            self.stopped(node.index);
            match r {
                Ok(()) => {
                    totals.seconds = t0.elapsed().as_secs_f64();
                    let agent = format!("{}/{AGENT}", node.ctx.data_dir);
                    let _ = remote
                        .run_ok(&Cmd::new("remove the copy agent", "rm").args(["-f", &agent]));
                    return Ok(totals);
                }
                Err(AttemptError::SourceLost(why)) if attempt < MAX_ATTEMPTS => {
                    node.note(&format!(
                        "copy: lost its source ({why}); resuming from another"
                    ));
                    if let Src::Peer { node: p, .. } = src {
                        excluded.push(p);
                    }
                }
                Err(AttemptError::SourceLost(why)) => {
                    return Err(FanoutError::SourcesLost {
                        attempts: MAX_ATTEMPTS,
                        last: why,
                    }
                    .into())
                }
                Err(AttemptError::Fatal(e)) => return Err(e),
            }
        }
        Err(FanoutError::NoSource.into())
    }

    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        node: &Node,
        remote: &dyn Remote,
        local: &Local,
        src: &Src,
        token: &str,
        ip: std::net::IpAddr,
        totals: &mut Totals,
    ) -> Result<(), AttemptError> {
        let data_dir = &node.ctx.data_dir;
        let agent = format!("{data_dir}/{AGENT}");
        let stub_len = local.list.trailer.stub_len;
        // 1. The agent program: the bundle's stub, from a peer if possible.
        let sum = Script::new("sha256sum {a} 2>/dev/null || true").value("a", &agent);
        let have = remote.run_ok(&Cmd::script("check the copy agent", &sum))?;
        if !have.starts_with(&local.stub_sha256) {
            let from_peer = match src {
                Src::Peer {
                    program_from: Some((addr, token)),
                    ..
                } => match stub_from_peer(remote, &agent, *addr, token, local) {
                    Ok(()) => true,
                    Err(e) => {
                        node.note(&format!(
                            "copy: could not fetch the program from {addr} ({e}); \
                                 sending it from here"
                        ));
                        false
                    }
                },
                Src::Installer | Src::Peer { .. } => false,
            };
            if !from_peer {
                stub_from_installer(remote, &agent, local)?;
                totals.from_installer += stub_len;
            }
        }

        // 2. The agent: receives, checks, serves; the installer feeds it or pings it on stdin.
        let fifo = Fifo::new().map_err(|e| AttemptError::Fatal(FanoutError::Pipe(e).into()))?;
        let run = wire::new_token()
            .map(|t| t[..12].to_string())
            .unwrap_or_default();
        let setup = Setup {
            token: token.to_string(),
            source: match src {
                Src::Installer => Source::Installer,
                Src::Peer { addr, token, .. } => Source::Peer {
                    addr: *addr,
                    token: token.clone(),
                },
            },
        };
        let cmd = Cmd::new("run the copy agent", &agent)
            .args(["agent", "copy", "--data-dir", data_dir])
            .args(["--digest", &local.digest])
            .arg("--listen")
            .arg(ip)
            .arg("--stub-len")
            .arg(stub_len)
            .args(["--run", &run])
            .stdin_file(&fifo.path);
        let ended = AtomicBool::new(false);
        let sent = AtomicU64::new(0);
        let latest: Mutex<Option<State>> = Mutex::new(None);
        let out = std::thread::scope(|s| {
            s.spawn(|| {
                let r = self.feed(node, local, &fifo.path, &setup, ip, &ended, &latest, &sent);
                if let Err(e) = r {
                    if !ended.load(Ordering::SeqCst) {
                        node.note(&format!("copy: feeding the agent stopped: {e}"));
                    }
                }
            });
            s.spawn(|| self.watch(node, remote, src, ip, &run, &ended, &latest));
            let out = remote.run(&cmd);
            ended.store(true, Ordering::SeqCst);
            out
        })?;
        totals.from_installer += sent.load(Ordering::SeqCst);
        match out.code {
            0 => {
                let st: State = out
                    .stdout_str()
                    .lines()
                    .rev()
                    .find_map(|l| serde_json::from_str(l).ok())
                    .ok_or_else(|| {
                        AttemptError::Fatal(FanoutError::NoReport(out.stderr_line()).into())
                    })?;
                totals.kept += st.kept;
                totals.from_peers += st
                    .from
                    .iter()
                    .filter(|(k, _)| *k != "installer" && *k != "local")
                    .map(|(_, v)| v)
                    .sum::<u64>();
                let have =
                    crate::phases::upload::remote_digest(remote, &format!("{data_dir}/{BUNDLE}"))?;
                if have.as_deref() != Some(local.digest.as_str()) {
                    return Err(AttemptError::Fatal(
                        FanoutError::WrongDigest {
                            path: format!("{data_dir}/{BUNDLE}"),
                            found: have.unwrap_or_default(),
                            expected: local.digest.clone(),
                        }
                        .into(),
                    ));
                }
                Ok(())
            }
            EXIT_SOURCE_LOST => Err(AttemptError::SourceLost(out.stderr_line())),
            code => Err(AttemptError::Fatal(
                FanoutError::Agent {
                    code,
                    stderr: out.stderr_line(),
                }
                .into(),
            )),
        }
    }

    /// Writes the agent's stdin: the setup line, the chunks when the installer is the source,
    /// then a ping a second until no node needs this one's chunks any more.
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &self,
        node: &Node,
        local: &Local,
        fifo: &Path,
        setup: &Setup,
        ip: std::net::IpAddr,
        ended: &AtomicBool,
        latest: &Mutex<Option<State>>,
        sent: &AtomicU64,
    ) -> std::io::Result<()> {
        let Some(mut w) = open_fifo_writer(fifo, ended)? else {
            return Ok(());
        };
        let line = serde_json::to_string(setup).unwrap_or_default();
        w.write_all(line.as_bytes())?;
        w.write_all(b"\n")?;
        let mut buf = Vec::new();
        if setup.source == Source::Installer {
            local.read_chunk(TAIL, &mut buf)?;
            wire::write_record(&mut w, TAIL as u32, &buf)?;
            sent.fetch_add(buf.len() as u64, Ordering::SeqCst);
            // What the node holds already, once it has re-checked it.
            let Some((have, port)) = held_chunks(&mut w, local, ended, latest)? else {
                return Ok(());
            };
            let todo: Vec<usize> = (0..have.len()).filter(|&i| !have[i] && i != TAIL).collect();
            // Straight over TCP to the agent's chunk server, pinging on stdin meanwhile; what
            // that did not deliver (no route to the port, a cut) goes on stdin.
            let pushed = std::thread::scope(|s| {
                let push = s.spawn(|| {
                    push_chunks(SocketAddr::new(ip, port), setup, local, &todo, sent, ended)
                });
                while !push.is_finished() && !ended.load(Ordering::SeqCst) {
                    if wire::write_record(&mut w, wire::PING, &[]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                push.join()
            });
            let failed = match pushed {
                Ok(Ok(())) => None,
                // the agent is gone: nothing to send, and the attempt reports why
                _ if ended.load(Ordering::SeqCst) => return Ok(()),
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the sending thread panicked".to_string()),
            };
            if let Some(e) = failed {
                node.note(&format!(
                    "copy: the direct connection to the agent failed ({e}); sending over SSH"
                ));
                let Some((have, _)) = held_chunks(&mut w, local, ended, latest)? else {
                    return Ok(());
                };
                for (i, held) in have.iter().enumerate() {
                    if *held || i == TAIL {
                        continue;
                    }
                    local.read_chunk(i, &mut buf)?;
                    wire::write_record(&mut w, i as u32, &buf)?;
                    sent.fetch_add(buf.len() as u64, Ordering::SeqCst);
                }
            }
        }
        w.flush()?;
        loop {
            if ended.load(Ordering::SeqCst) {
                return Ok(());
            }
            let complete = lock(latest).as_ref().is_some_and(|s| s.phase == "complete");
            if complete && self.try_stop(node.index) {
                return Ok(()); // closing stdin stops the agent
            }
            wire::write_record(&mut w, wire::PING, &[])?;
            w.flush()?;
            let t = lock(&self.table);
            let _ = self.changed.wait_timeout(t, Duration::from_secs(1));
        }
    }

    /// Reads the agent's state file: announces its chunk server, its completion, and progress.
    #[allow(clippy::too_many_arguments)]
    fn watch(
        &self,
        node: &Node,
        remote: &dyn Remote,
        src: &Src,
        ip: std::net::IpAddr,
        run: &str,
        ended: &AtomicBool,
        latest: &Mutex<Option<State>>,
    ) {
        let path = format!("{}/{STATE}", node.ctx.data_dir);
        let read = Cmd::cat_or_empty("read the copy state", &path);
        let (mut announced, mut completed) = (false, false);
        while !ended.load(Ordering::SeqCst) {
            // quick while the agent starts: the feed and the next node's pick wait for it
            let settled = lock(latest)
                .as_ref()
                .is_some_and(|s| s.phase != "listening" && s.port != 0);
            std::thread::sleep(Duration::from_millis(if settled { 400 } else { 100 }));
            let Ok(text) = remote.run_ok(&read) else {
                continue;
            };
            let Ok(st) = serde_json::from_str::<State>(text.trim()) else {
                continue;
            };
            if st.run != run {
                continue;
            }
            if st.port != 0 && !announced {
                announced = true;
                self.serving(node.index, SocketAddr::new(ip, st.port));
            }
            if st.phase == "complete" && !completed {
                completed = true;
                self.complete(node.index);
                self.release_source(node.index, src);
            }
            if !completed && st.file_len > 0 {
                node.progress("upload", st.have_bytes, st.file_len, &src.label());
            }
            *lock(latest) = Some(st);
        }
    }
}

/// Waits (pinging) until the agent has settled what it holds, and returns that and the port of
/// its chunk server; `None` when the agent ended first. The bitmap may lag behind the agent,
/// never run ahead of it: what it misses is only sent twice.
fn held_chunks(
    w: &mut File,
    local: &Local,
    ended: &AtomicBool,
    latest: &Mutex<Option<State>>,
) -> std::io::Result<Option<(Vec<bool>, u16)>> {
    loop {
        if ended.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let st = lock(latest).clone();
        if let Some(st) = st.filter(|s| s.phase == "ready" || s.phase == "complete") {
            let have = wire::bitmap_from_hex(&st.have, local.list.len()).ok_or_else(|| {
                std::io::Error::other("the agent's chunk bitmap does not fit the bundle")
            })?;
            return Ok(Some((have, st.port)));
        }
        wire::write_record(w, wire::PING, &[])?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `todo` to the agent's chunk server over a `push` connection: each chunk with
/// `sendfile`, so it goes from the page cache to the socket without passing through here.
fn push_chunks(
    addr: SocketAddr,
    setup: &Setup,
    local: &Local,
    todo: &[usize],
    sent: &AtomicU64,
    ended: &AtomicBool,
) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Err(std::io::Error::other("the agent named no port"));
    }
    let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    sock.set_write_timeout(Some(PUSH_STALL))?;
    writeln!(sock, "{} {} {}", wire::HELLO, setup.token, local.digest)?;
    writeln!(sock, "{}", wire::PUSH)?;
    for &i in todo {
        if ended.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the agent ended"));
        }
        let c = &local.list.chunks[i];
        sock.write_all(&wire::record_head(i as u32, c.len))?;
        let offset_of = |n: u64| i64::try_from(n).map_err(std::io::Error::other);
        let (mut offset, end) = (offset_of(c.offset)?, offset_of(c.offset + c.len)?);
        while offset < end {
            let want = (end - offset).min(1 << 30) as usize;
            // sendfile advances `offset` itself and leaves the file's own position alone
            // (other threads read it too).
            match nix::sys::sendfile::sendfile(&sock, &local.file, Some(&mut offset), want) {
                Ok(0) => return Err(std::io::Error::other("the bundle ended early")),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        sent.fetch_add(c.len, Ordering::SeqCst);
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    // The agent answers once every chunk is checked and written.
    sock.set_read_timeout(Some(PUSH_STALL))?;
    let mut answer = String::new();
    (&mut sock).take(64).read_to_string(&mut answer)?;
    match answer.trim_end() {
        "ok" => Ok(()),
        other => Err(std::io::Error::other(format!(
            "the agent did not confirm the chunks (answered {other:?})"
        ))),
    }
}

/// Fetches the program from a peer's chunk server with bash's `/dev/tcp` (the node has no bale
/// yet), then checks it against the bundle's digest.
fn stub_from_peer(
    remote: &dyn Remote,
    agent: &str,
    addr: SocketAddr,
    token: &str,
    local: &Local,
) -> Result<(), SshError> {
    let tmp = format!("{agent}.part");
    // The token comes on stdin, never on a command line; bash's /dev/tcp gets the address,
    // the port and the hello line as its arguments.
    let script = Script::new(
        "set -e; umask 077; IFS= read -r tok; \
         timeout 300 bash -c 'exec 3<>/dev/tcp/$1/$2; printf \"%s\\n\" \"$3\" stub >&3; \
         cat <&3' sh {ip} {port} {hello}\" $tok \"{digest} > {tmp}; \
         echo {sha}'  '{tmp} | sha256sum -c --quiet >/dev/null; chmod 0755 {tmp}; mv -f {tmp} {a}",
    )
    .value("ip", addr.ip())
    .value("port", addr.port())
    .value("hello", wire::HELLO)
    .value("digest", &local.digest)
    .value("tmp", &tmp)
    .value("sha", &local.stub_sha256)
    .value("a", agent);
    let input = format!("{token}\n");
    let r = remote
        .run_ok(&Cmd::script("fetch the program from a peer", &script).stdin(input.as_bytes()));
    if r.is_err() {
        let _ = remote.run_ok(&Cmd::new("clean up", "rm").args(["-f", &tmp]));
    }
    r.map(|_| ())
}

/// Sends the program from the installer over SSH and checks it on the node.
fn stub_from_installer(remote: &dyn Remote, agent: &str, local: &Local) -> Result<(), SshError> {
    let script = Script::new(
        "set -e; umask 077; head -c {len} > {tmp}; \
         echo {sha}'  '{tmp} | sha256sum -c --quiet >/dev/null; chmod 0755 {tmp}; mv -f {tmp} {a}",
    )
    .value("len", local.list.trailer.stub_len)
    .value("tmp", format!("{agent}.part"))
    .value("sha", &local.stub_sha256)
    .value("a", agent);
    let fifo = Fifo::new().map_err(|e| SshError::Io {
        host: remote.label().into(),
        what: "make a pipe for ssh".into(),
        source: e,
    })?;
    let ended = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| -> std::io::Result<()> {
            let Some(mut w) = open_fifo_writer(&fifo.path, &ended)? else {
                return Ok(());
            };
            let whole = PositionedReader {
                file: &local.file,
                pos: 0,
            };
            let mut stub = std::io::Read::take(whole, local.list.trailer.stub_len);
            std::io::copy(&mut stub, &mut w)?;
            Ok(())
        });
        let r = remote.run_ok(&Cmd::script("send the program", &script).stdin_file(&fifo.path));
        ended.store(true, Ordering::SeqCst);
        r
    })
    .map(|_| ())
}

/// Reads a file from a position with `pread`, so threads can share one open file.
struct PositionedReader<'a> {
    file: &'a File,
    pos: u64,
}

impl std::io::Read for PositionedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A named pipe in a private directory: what the remote streams into a command's stdin, so the
/// installer can write records to it as it goes.
struct Fifo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fifo {
    fn new() -> std::io::Result<Fifo> {
        let dir = tempfile::Builder::new().prefix("bale-copy-").tempdir()?;
        let path = dir.path().join("stdin");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        Ok(Fifo { _dir: dir, path })
    }
}

/// Opens the pipe for writing once ssh's feeder has opened it for reading; `None` when the
/// command ended first.
fn open_fifo_writer(path: &Path, ended: &AtomicBool) -> std::io::Result<Option<File>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
        {
            Ok(f) => {
                // Back to blocking writes.
                use nix::fcntl::{fcntl, FcntlArg, OFlag};
                let flags = OFlag::from_bits_truncate(fcntl(f.as_raw_fd(), FcntlArg::F_GETFL)?);
                fcntl(
                    f.as_raw_fd(),
                    FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)),
                )?;
                super::grow_pipe(&f);
                return Ok(Some(f));
            }
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENXIO as i32) => {
                if ended.load(Ordering::SeqCst) {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fake::{Fed, Scripted};
    use crate::ssh::Conn;

    /// The sample bundle, opened as the installer's copy.
    fn sample_local(dir: &Path) -> Local {
        Local::open(&crate::copy::store::tests::sample_bundle(dir)).unwrap()
    }

    #[test]
    fn the_program_goes_through_a_named_pipe_and_is_checked_on_arrival() {
        let dir = tempfile::tempdir().unwrap();
        let local = sample_local(dir.path());
        let agent = dir.path().join("the agent's dir").join("copy-agent");
        std::fs::create_dir(agent.parent().unwrap()).unwrap();
        let agent = agent.to_str().unwrap();
        stub_from_installer(&Conn::local().unwrap(), agent, &local).unwrap();
        let got = std::fs::read(agent).unwrap();
        assert_eq!(got.len() as u64, local.list.trailer.stub_len);
        assert_eq!(
            bale_payload::format::hex(&bale_payload::format::sha256(&got)),
            local.stub_sha256
        );
        assert!(!Path::new(&format!("{agent}.part")).exists());
    }

    #[test]
    fn the_program_is_fetched_from_a_peer_with_the_token_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let local = sample_local(dir.path());
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let serve = std::thread::spawn({
            let file = local.file.try_clone().unwrap();
            let stub_len = local.list.trailer.stub_len;
            move || {
                let (sock, _) = server.accept().unwrap();
                let mut lines = std::io::BufRead::lines(std::io::BufReader::new(&sock));
                let hello = lines.next().unwrap().unwrap();
                let what = lines.next().unwrap().unwrap();
                let whole = PositionedReader {
                    file: &file,
                    pos: 0,
                };
                std::io::copy(&mut whole.take(stub_len), &mut &sock).unwrap();
                (hello, what)
            }
        });
        let agent = dir.path().join("agent");
        let agent = agent.to_str().unwrap();
        stub_from_peer(&Conn::local().unwrap(), agent, addr, "s3cret tok", &local).unwrap();
        let (hello, what) = serve.join().unwrap();
        assert_eq!(
            hello,
            format!("{} s3cret tok {}", wire::HELLO, local.digest)
        );
        assert_eq!(what, "stub");
        assert_eq!(
            std::fs::metadata(agent).unwrap().len(),
            local.list.trailer.stub_len
        );
    }

    #[test]
    fn a_failed_fetch_from_a_peer_removes_the_part_file() {
        let dir = tempfile::tempdir().unwrap();
        let local = sample_local(dir.path());
        let r = Scripted::new("n")
            .fails(
                "/dev/tcp",
                1,
                "sha256sum: WARNING: 1 computed checksum did NOT match",
            )
            .on("'rm' '-f'", "");
        let e = stub_from_peer(&r, "/d/agent", addr(9), "tok", &local).unwrap_err();
        assert_eq!(
            e.to_string(),
            "n: fetch the program from a peer failed (exit 1): sha256sum: WARNING: 1 computed \
             checksum did NOT match"
        );
        let calls = r.calls();
        assert!(
            calls[0].line.contains(&format!(
                "sh '10.77.0.9' '4000' '{}'\" $tok \"'{}' > '/d/agent.part';",
                wire::HELLO,
                local.digest
            )),
            "{}",
            calls[0].line
        );
        assert_eq!(calls[0].stdin, Fed::Bytes(b"tok\n".to_vec()));
        assert_eq!(calls[1].line, "'rm' '-f' '/d/agent.part'");
    }

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 77, 0, n], 4000))
    }

    fn peer_of(src: &Src) -> Option<usize> {
        match src {
            Src::Peer { node, .. } => Some(*node),
            Src::Installer => None,
        }
    }

    #[test]
    fn nodes_form_a_chain_behind_the_installer() {
        let f = Fanout::new();
        assert_eq!(f.pick(0, "a", &[], "t0", "p"), Src::Installer);
        f.serving(0, addr(1));
        assert_eq!(peer_of(&f.pick(1, "b", &[], "t1", "p")), Some(0));
        f.serving(1, addr(2));
        assert_eq!(peer_of(&f.pick(2, "c", &[], "t2", "p")), Some(1));
    }

    #[test]
    fn a_node_of_another_program_is_a_source_of_chunks_but_not_of_the_program() {
        let f = Fanout::new();
        assert_eq!(f.pick(0, "x86", &[], "t0", "px"), Src::Installer);
        f.serving(0, addr(1));
        // The arm64 node: chunks from the x86_64 one, its program from nobody but the installer.
        match f.pick(1, "arm", &[], "t1", "pa") {
            Src::Peer {
                node, program_from, ..
            } => assert_eq!((node, program_from), (0, None)),
            other => panic!("{other:?}"),
        }
        f.serving(1, addr(2));
        // A second x86_64 node: chunks from the arm64 one (free), its program from the first.
        match f.pick(2, "x86 too", &[], "t2", "px") {
            Src::Peer {
                node, program_from, ..
            } => assert_eq!((node, program_from), (1, Some((addr(1), "t0".to_string())))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_complete_peer_is_taken_before_a_second_copy_from_the_installer() {
        let f = Fanout::new();
        let first = f.pick(0, "a", &[], "t0", "p");
        f.serving(0, addr(1));
        assert_eq!(peer_of(&f.pick(1, "b", &[], "t1", "p")), Some(0));
        // The head of the chain completes (and frees the installer) before the second node
        // has announced its own server: the third node must not take the installer.
        f.complete(0);
        f.release_source(0, &first);
        assert_eq!(peer_of(&f.pick(2, "c", &[], "t2", "p")), Some(0));
    }

    #[test]
    fn a_peer_that_failed_a_node_is_not_picked_again_by_it() {
        let f = Fanout::new();
        let first = f.pick(0, "a", &[], "t0", "p");
        f.serving(0, addr(1));
        f.complete(0);
        f.release_source(0, &first);
        assert_eq!(f.pick(1, "b", &[0], "t1", "p"), Src::Installer);
    }

    #[test]
    fn a_stopped_node_is_no_source() {
        let f = Fanout::new();
        let first = f.pick(0, "a", &[], "t0", "p");
        f.serving(0, addr(1));
        f.release_source(0, &first);
        assert!(f.try_stop(0));
        assert_eq!(f.pick(1, "b", &[], "t1", "p"), Src::Installer);
    }
}
