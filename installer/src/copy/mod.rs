//! The self-copy: the bundle copies itself to every node, checked as it arrives, resumable,
//! node to node.
//!
//! # Design
//!
//! **Chunks.** The bundle is cut along its own index ([`bale_payload::chunks`]): chunk 0 is the
//! tail (entry table, header, trailer), chunk 1 the program, then runs of frames of about
//! 2 MiB. The tail travels first; it is checked against the header digest the installer
//! names (the bundle's identity) and holds every other chunk's digest. Together the chunks
//! tile the file, so a node that checked each chunk as it wrote it has checked every byte: no
//! second read.
//!
//! **Receiving** ([`store`]). Chunks go into `<data-dir>/.bundle.bale.partial` at their offset;
//! `.bundle.bale.copy.json` records which are held. A cut copy leaves both behind; the next
//! run re-hashes what the record claims (a damaged or unsynced chunk simply becomes missing) and
//! fetches only what is missing. Complete: fsync, rename to `bundle.bale`.
//!
//! **The agent on the node** ([`agent`], `bale agent copy`). The node runs the bundle's own
//! program (sent first to `<data-dir>/.bale-copy-agent` and checked with `sha256sum` against the
//! header). It receives chunks from its source, checks and writes them, and runs a small TCP
//! chunk server ([`server`]) on the node's address, on a port of its choosing, for a one-time
//! token the installer generated for this run. A client asks `want 3-9` and gets each chunk the
//! moment this node has it, so copies pipeline through a chain of nodes. The token travels on
//! stdin, never on a command line. stdin is the control channel: the installer's chunks (when
//! it is the source), pings, and its end means "stop"; an agent that hears nothing for 45 s
//! stops by itself, so a partition leaves nothing running for long.
//!
//! **Checking off the reading thread** ([`sink`]). Chunks are hashed and written by worker
//! threads while the receiver reads on, and the partial file is flushed every 64 MiB, so the
//! source never waits on a hash and the final flush is short.
//!
//! **The installer's chunks** go straight to the agent's chunk server over TCP (`push`), sent
//! with `sendfile`; stdin then only carries the tail and pings. SSH's encryption and the copies
//! through its session were the slowest link (1 GiB to one test node: 2.6 s direct, 4.6 s
//! through the session). Where the node's firewall admits SSH only, the chunks go on stdin
//! instead, and the copy notes so.
//!
//! **Fan-out** ([`fanout`], on the installer). Each node's upload runs in its own engine thread;
//! they share a table of sources. A node takes a serving node that feeds no one yet, or else the
//! installer when it feeds no one: starting together, the nodes form a chain installer → A → B →
//! C, every link streaming at once, so N nodes take about one copy's time and the installer
//! sends one copy (plus nothing: later nodes fetch even the program from their peer, with bash's
//! `/dev/tcp`, falling back to SSH from the installer). Traffic between nodes stays on their
//! addresses. Parallelism is bounded twice: by the engine's `--parallel` threads, and by one
//! child per source. The installer learns each agent's port and progress by reading its state
//! file over the SSH connection, and keeps a finished node serving while any other node still
//! copies, so a node whose source dies (partition, power loss) picks another source and resumes.
//! When every node is done, the installer closes the agents' stdin and they exit.
//!
//! Not done: nodes that cannot run bash get the program from the installer.

pub mod agent;
pub mod fanout;
pub mod server;
pub mod sink;
pub mod store;
pub mod wire;

use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Lets a pipe hold 1 MiB instead of 64 KiB, so its two ends trade places less often on a bulk
/// stream. Not a pipe, or not allowed: nothing changes, which only costs speed.
pub fn grow_pipe(fd: &impl AsRawFd) {
    let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        source: std::io::Error,
    },
    #[error("chunk {index} (file offset {offset}) does not check out: {why}")]
    BadChunk {
        index: usize,
        offset: u64,
        why: String,
    },
    #[error("copy protocol: {0}")]
    Protocol(String),
    #[error("--digest {0:?} is not 64 hex digits")]
    BadDigest(String),
    #[error("another copy holds {} and did not stop", .0.display())]
    Held(PathBuf),
    #[error("the chunk writers stopped")]
    WritersStopped,
    #[error("a chunk writer panicked")]
    WriterPanicked,
    /// A relay asked for what this node cannot give, because its own copy failed.
    #[error("this node's copy failed: {0}")]
    ThisNodeFailed(String),
    #[error("{what} did not arrive here in time")]
    Late { what: String },
    #[error("the copy is not complete")]
    Incomplete,
}

impl CopyError {
    /// True when the bytes received do not check out: the bundle being sent is damaged.
    pub fn is_damaged(&self) -> bool {
        matches!(self, CopyError::BadChunk { .. })
    }
}
