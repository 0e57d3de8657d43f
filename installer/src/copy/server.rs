//! The chunk server inside `bale agent copy`: lets other nodes fetch this node's chunks, each as
//! soon as this node holds it (so a chain of nodes copies in a pipeline), and the program itself
//! (`stub`) for a node that has no bale yet.
//!
//! Bound to the node's own address, answering only clients that know the one-time token the
//! installer handed out for this run and the bundle's digest. Clients re-check every chunk
//! against the digests anyway: the token keeps strangers out, it does not vouch for the bytes.
//!
//! Strangers cannot keep the peers of the run out either: a connection has [`AUTH_DEADLINE`]
//! in all to send its hello line (a byte now and then does not stretch it), connections that
//! have not yet sent it are bounded apart (in all and per address) and never take one of the
//! [`MAX_CLIENTS`] slots, which only clients that proved they belong to the run occupy.

use super::agent::{bad_from_installer, stop_now};
use super::sink::{OnBadChunk, Sink};
use super::store::Store;
use super::{wire, CopyError};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Authenticated clients served at once; more wait for a slot.
const MAX_CLIENTS: usize = 8;
/// Connections that have not yet sent their hello line, at once; more are closed at once.
const MAX_UNAUTHENTICATED: usize = 32;
/// The same, from one address: a stranger cannot take them all.
const MAX_UNAUTHENTICATED_PER_PEER: usize = 4;
/// How long a connection has, in all, to send its hello line.
const AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// A hello line is the magic, a token and a digest: far shorter than this.
const MAX_HELLO: usize = 512;
/// How long a chunk may take to reach this node before a client waiting for it is told so.
const CHUNK_WAIT: Duration = Duration::from_secs(120);
/// A client that sends nothing for this long, or stops reading, is dropped.
const CLIENT_IDLE: Duration = Duration::from_secs(60);

pub struct Server {
    pub store: Arc<Store>,
    pub token: String,
    pub digest: String,
    /// This program (the bundle's stub) and its length.
    pub exe: PathBuf,
    pub stub_len: u64,
}

/// The bounds [`Server::run`] applies; tests shorten the deadline.
#[derive(Debug, Clone, Copy)]
struct Limits {
    auth_deadline: Duration,
    max_clients: usize,
    max_unauthenticated: usize,
    max_unauthenticated_per_peer: usize,
}

const LIMITS: Limits = Limits {
    auth_deadline: AUTH_DEADLINE,
    max_clients: MAX_CLIENTS,
    max_unauthenticated: MAX_UNAUTHENTICATED,
    max_unauthenticated_per_peer: MAX_UNAUTHENTICATED_PER_PEER,
};

/// Who holds what: authenticated clients being served, and connections still owing their
/// hello, by address.
#[derive(Default)]
struct Counts {
    serving: usize,
    unauthenticated: HashMap<IpAddr, usize>,
}

struct Gates {
    limits: Limits,
    counts: Mutex<Counts>,
    slot_freed: Condvar,
}

impl Gates {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for one more connection still owing its hello, if there is.
    fn unauthenticated(self: &Arc<Self>, peer: IpAddr) -> Option<Unauthenticated> {
        let mut c = self.lock();
        let total: usize = c.unauthenticated.values().sum();
        let mine = c.unauthenticated.entry(peer).or_default();
        if total >= self.limits.max_unauthenticated
            || *mine >= self.limits.max_unauthenticated_per_peer
        {
            if *mine == 0 {
                c.unauthenticated.remove(&peer);
            }
            return None;
        }
        *mine += 1;
        Some(Unauthenticated(self.clone(), peer))
    }

    /// Waits for a slot among the authenticated clients.
    fn serving(self: &Arc<Self>) -> Serving {
        let mut c = self.lock();
        while c.serving >= self.limits.max_clients {
            c = self.slot_freed.wait(c).unwrap_or_else(|e| e.into_inner());
        }
        c.serving += 1;
        Serving(self.clone())
    }
}

/// A connection counted among those owing their hello, until dropped.
struct Unauthenticated(Arc<Gates>, IpAddr);

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        let mut c = self.0.lock();
        if let Some(n) = c.unauthenticated.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                c.unauthenticated.remove(&self.1);
            }
        }
    }
}

/// One of the authenticated clients' slots, until dropped.
struct Serving(Arc<Gates>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.lock().serving -= 1;
        self.0.slot_freed.notify_one();
    }
}

impl Server {
    /// Accepts clients until the process ends.
    pub fn run(self: Arc<Self>, listener: TcpListener) {
        self.run_with(listener, LIMITS)
    }

    fn run_with(self: Arc<Self>, listener: TcpListener, limits: Limits) {
        let gates = Arc::new(Gates {
            limits,
            counts: Mutex::new(Counts::default()),
            slot_freed: Condvar::new(),
        });
        for conn in listener.incoming() {
            let Ok(stream) = conn else { continue };
            let Ok(peer) = stream.peer_addr() else {
                continue;
            };
            // Closed at once: a peer of the run that meets this retries.
            let Some(pending) = gates.unauthenticated(peer.ip()) else {
                continue;
            };
            let me = self.clone();
            let gates = gates.clone();
            std::thread::spawn(move || {
                if let Err(e) = me.client(stream, pending, &gates) {
                    eprintln!("bale agent copy: serving {peer}: {e}");
                }
            });
        }
    }

    fn client(
        &self,
        stream: TcpStream,
        pending: Unauthenticated,
        gates: &Arc<Gates>,
    ) -> std::io::Result<()> {
        stream.set_write_timeout(Some(CLIENT_IDLE))?;
        stream.set_nodelay(true)?;
        let mut rd = BufReader::new(stream.try_clone()?);
        let deadline = Instant::now() + gates.limits.auth_deadline;
        let hello = read_hello(&stream, &mut rd, deadline)?;
        let mut words = hello.split(' ');
        let ok = words.next() == Some(wire::HELLO)
            && words
                .next()
                .is_some_and(|t| wire::same_secret(t, &self.token))
            && words.next() == Some(self.digest.as_str());
        if !ok {
            return wire::write_error(
                &mut &stream,
                "refused: wrong token or bundle (this server belongs to another install run)",
            );
        }
        drop(pending);
        let _slot = gates.serving();
        stream.set_read_timeout(Some(CLIENT_IDLE))?;
        // Allocated only now: strangers cost no more than their socket.
        let mut wr = BufWriter::with_capacity(1 << 20, stream);
        let mut buf = Vec::new();
        while let Some(line) = wire::read_line(&mut rd)? {
            if line == wire::PUSH {
                self.take_pushed(&mut rd)?;
                // everything is checked and written: the installer may count it delivered
                wr.write_all(b"ok\n")?;
                return wr.flush();
            }
            if line == "stub" {
                let mut exe = std::fs::File::open(&self.exe)?.take(self.stub_len);
                let n = std::io::copy(&mut exe, &mut wr)?;
                wr.flush()?;
                self.store.note_served(n);
                return Ok(());
            }
            let Some(ranges) = line.strip_prefix("want ") else {
                return wire::write_error(&mut wr, &format!("unknown request {line:?}"));
            };
            let list = match self.store.wait_list(CHUNK_WAIT) {
                Ok(l) => l,
                Err(e) => return wire::write_error(&mut wr, &e.to_string()),
            };
            let wanted = match wire::decode_ranges(ranges, list.len()) {
                Ok(w) => w,
                Err(e) => return wire::write_error(&mut wr, &e),
            };
            for index in wanted {
                if let Err(e) = self.store.read_chunk(&list, index, &mut buf, CHUNK_WAIT) {
                    return wire::write_error(&mut wr, &e.to_string());
                }
                wire::write_record(&mut wr, index as u32, &buf)?;
                // Each chunk leaves at once: the next one may not be here yet.
                wr.flush()?;
                self.store.note_served(buf.len() as u64);
            }
        }
        Ok(())
    }

    /// Checks and writes the chunks the installer pushes, until it closes. A chunk that does not
    /// check out ends the agent, as it does on stdin.
    fn take_pushed(&self, rd: &mut impl Read) -> std::io::Result<()> {
        if self.store.list().is_none() {
            return Err(std::io::Error::other("a push before the bundle's tail"));
        }
        let give_up = |e: CopyError| -> ! { stop_now(&self.store, bad_from_installer(&e)) };
        let sink = Sink::start(self.store.clone(), "installer", OnBadChunk::Fail);
        loop {
            let mut buf = sink.buffer();
            let Some(index) = wire::read_record(rd, &mut buf, || {})? else {
                break;
            };
            if let Err(e) = sink.put(index as usize, buf) {
                give_up(e);
            }
        }
        if let Err(e) = sink.close() {
            give_up(e);
        }
        Ok(())
    }
}

/// The hello line, which must arrive in full by `deadline` however slowly its bytes trickle in.
fn read_hello(
    stream: &TcpStream,
    rd: &mut BufReader<TcpStream>,
    deadline: Instant,
) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind};
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(
                ErrorKind::TimedOut,
                "no hello line in time: not a peer of this run",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let buf = match rd.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed before its hello line",
            ));
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        rd.consume(if done { take + 1 } else { take });
        if line.len() > MAX_HELLO {
            return Err(Error::new(ErrorKind::InvalidData, "hello line too long"));
        }
        if done {
            return String::from_utf8(line)
                .map_err(|_| Error::new(ErrorKind::InvalidData, "hello line is not UTF-8"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::mpsc;

    const TOKEN: &str = "0123456789abcdef";

    /// A chunk server of a fresh store on 127.0.0.1; its address, the stub it serves and the
    /// hello line that opens it.
    fn start(dir: &std::path::Path, limits: Limits) -> (SocketAddr, Vec<u8>, String) {
        let digest = "ab".repeat(32);
        let store = Arc::new(Store::open(dir, &digest, "run").unwrap());
        let stub: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let exe = dir.join("exe");
        std::fs::write(&exe, &stub).unwrap();
        let server = Arc::new(Server {
            store,
            token: TOKEN.into(),
            digest: digest.clone(),
            exe,
            stub_len: stub.len() as u64,
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || server.run_with(listener, limits));
        (addr, stub, format!("{} {TOKEN} {digest}\n", wire::HELLO))
    }

    /// A connection from another loopback address, as a stranger on the network would have.
    fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::from((from, 0))).unwrap();
            let std = s.connect(to).await.unwrap().into_std().unwrap();
            std.set_nonblocking(false).unwrap();
            std
        })
    }

    /// Whether the server closes `s` within `within` (it sends nothing to a stranger).
    fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 64];
        loop {
            match s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    /// Finding F19: eight strangers that sent a byte now and then held all eight slots, and the
    /// peers of the run waited for the whole install.
    #[test]
    fn strangers_trickling_bytes_neither_stay_nor_keep_the_peers_out() {
        let dir = tempfile::tempdir().unwrap();
        let deadline = Duration::from_secs(2);
        let limits = Limits {
            auth_deadline: deadline,
            ..LIMITS
        };
        let (addr, stub, hello) = start(dir.path(), limits);
        let mut strangers: Vec<TcpStream> = (1..=8)
            .map(|i| {
                let mut s = connect_from(Ipv4Addr::new(127, 0, 3, i), addr);
                s.write_all(b"B").unwrap();
                s
            })
            .collect();
        // One of them keeps trickling, a byte every 200 ms, until its connection fails.
        let mut trickler = strangers.pop().unwrap();
        let mut trickle = trickler.try_clone().unwrap();
        std::thread::spawn(move || {
            while trickle.write_all(b"B").is_ok() {
                std::thread::sleep(Duration::from_millis(200));
            }
        });

        // A peer of the run is served at once.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(format!("{hello}stub\n").as_bytes()).unwrap();
            let mut got = Vec::new();
            let r = s.read_to_end(&mut got).map(|_| got);
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the peer of the run was kept out by strangers")
            .unwrap();
        assert!(got == stub, "the stub came back wrong");

        // The strangers, the trickling one too, are gone by the deadline.
        let started = Instant::now();
        assert!(
            closed_within(&mut trickler, deadline * 3),
            "a stranger sending a byte every 200 ms kept its connection"
        );
        for s in &mut strangers {
            assert!(closed_within(s, deadline * 3), "a silent stranger stayed");
        }
        assert!(started.elapsed() < deadline * 3);
    }

    /// A stranger's connections beyond its share of the unauthenticated ones are closed at once.
    #[test]
    fn a_stranger_gets_a_few_unauthenticated_connections_only() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, _, _) = start(dir.path(), LIMITS);
        let from = Ipv4Addr::new(127, 0, 4, 1);
        let mut held: Vec<TcpStream> = (0..MAX_UNAUTHENTICATED_PER_PEER)
            .map(|_| connect_from(from, addr))
            .collect();
        let mut extra = connect_from(from, addr);
        assert!(closed_within(&mut extra, Duration::from_secs(5)));
        // The ones within the share are still open, waiting for their hello.
        assert!(!closed_within(&mut held[0], Duration::from_millis(200)));
    }
}
