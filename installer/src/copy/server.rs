//! The chunk server inside `bale agent copy`: lets other nodes fetch this node's chunks, each as
//! soon as this node holds it (so a chain of nodes copies in a pipeline), and the program itself
//! (`stub`) for a node that has no bale yet.
//!
//! Bound to the node's own address, answering only clients that know the one-time token the
//! installer handed out for this run and the bundle's digest. Clients re-check every chunk
//! against the digests anyway: the token keeps strangers out, it does not vouch for the bytes.

use super::agent::{bad_from_installer, stop_now};
use super::sink::{OnBadChunk, Sink};
use super::store::Store;
use super::{wire, CopyError};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections served at once; more wait in the listen queue.
const MAX_CLIENTS: usize = 8;
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

impl Server {
    /// Accepts clients until the process ends.
    pub fn run(self: Arc<Self>, listener: TcpListener) {
        let busy = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            let Ok(stream) = conn else { continue };
            while busy.load(Ordering::SeqCst) >= MAX_CLIENTS {
                std::thread::sleep(Duration::from_millis(20));
            }
            busy.fetch_add(1, Ordering::SeqCst);
            let me = self.clone();
            let busy = busy.clone();
            std::thread::spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                if let Err(e) = me.client(stream) {
                    eprintln!("bale agent copy: serving {peer}: {e}");
                }
                busy.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    fn client(&self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_read_timeout(Some(CLIENT_IDLE))?;
        stream.set_write_timeout(Some(CLIENT_IDLE))?;
        stream.set_nodelay(true)?;
        let mut rd = BufReader::new(stream.try_clone()?);
        let mut wr = BufWriter::with_capacity(1 << 20, stream);
        let hello = wire::read_line(&mut rd)?.unwrap_or_default();
        let mut words = hello.split(' ');
        let ok = words.next() == Some(wire::HELLO)
            && words
                .next()
                .is_some_and(|t| wire::same_secret(t, &self.token))
            && words.next() == Some(self.digest.as_str());
        if !ok {
            return wire::write_error(
                &mut wr,
                "refused: wrong token or bundle (this server belongs to another install run)",
            );
        }
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
        let give_up = |e: CopyError| -> ! { stop_now(&self.store, &bad_from_installer(&e)) };
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
