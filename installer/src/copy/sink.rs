//! Checking and writing chunks off the receiving thread.
//!
//! A receiver that hashes and writes each chunk before it reads the next one leaves its source
//! waiting: sshd (or the peer's socket) blocks on a full pipe while the agent hashes, and the
//! two take turns instead of running at once. The receiver hands each chunk to a [`Sink`]
//! instead, whose workers check and write while it reads on. The queue is bounded, so a slow
//! disk still slows the source down instead of filling memory.

use super::store::Store;
use super::CopyError;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Chunks waiting for a worker (each up to a few MiB).
const QUEUE: usize = 6;

/// What a chunk that fails its check means for the copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnBadChunk {
    /// Stop: the source read it from its own checked bundle, so asking again cannot help.
    Fail,
    /// Leave the chunk missing; the receiver asks for it again.
    Skip,
}

pub struct Sink {
    queue: Option<SyncSender<(usize, Vec<u8>)>>,
    spare: Receiver<Vec<u8>>,
    workers: Vec<JoinHandle<()>>,
    error: Arc<Mutex<Option<CopyError>>>,
}

impl Sink {
    /// Starts the workers: one per core, up to four (SHA-256 runs at about 0.8 GB/s per core,
    /// so four keep up with a 25 Gbit/s link).
    pub fn start(store: Arc<Store>, source: &str, on_bad: OnBadChunk) -> Sink {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let (queue, work) = sync_channel::<(usize, Vec<u8>)>(QUEUE);
        let (give_back, spare) = sync_channel::<Vec<u8>>(QUEUE + threads + 1);
        let work = Arc::new(Mutex::new(work));
        let error = Arc::new(Mutex::new(None));
        let workers = (0..threads)
            .map(|_| {
                let (store, work, error) = (store.clone(), work.clone(), error.clone());
                let (give_back, source) = (give_back.clone(), source.to_string());
                std::thread::spawn(move || loop {
                    let next = work.lock().map(|w| w.recv());
                    let Ok(Ok((index, buf))) = next else { return };
                    let r = store
                        .accept(index, &buf, &source)
                        .or_else(|e| match e {
                            CopyError::BadChunk { .. } if on_bad == OnBadChunk::Skip => Ok(()),
                            e => Err(e),
                        })
                        .and_then(|()| store.finish_if_complete());
                    let _ = give_back.try_send(buf);
                    if let Err(e) = r {
                        if let Ok(mut slot) = error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                })
            })
            .collect();
        Sink {
            queue: Some(queue),
            spare,
            workers,
            error,
        }
    }

    /// An empty buffer for the next chunk: one a worker is done with, or a new one.
    pub fn buffer(&self) -> Vec<u8> {
        self.spare.try_recv().unwrap_or_default()
    }

    /// Queues a chunk; waits while the queue is full. Fails once a worker has failed.
    pub fn put(&self, index: usize, buf: Vec<u8>) -> Result<(), CopyError> {
        self.failure()?;
        let sent = self.queue.as_ref().map(|q| q.send((index, buf)));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => self.failure().and(Err(CopyError::WritersStopped)),
        }
    }

    /// Waits until every queued chunk is checked and written; the first failure, if any.
    pub fn close(mut self) -> Result<(), CopyError> {
        self.queue = None;
        for w in self.workers.drain(..) {
            if w.join().is_err() {
                return Err(CopyError::WriterPanicked);
            }
        }
        self.failure()
    }

    fn failure(&self) -> Result<(), CopyError> {
        match self.error.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy::store::tests::{chunk_bytes, sample_chunks};
    use bale_payload::chunks::TAIL;

    #[test]
    fn every_chunk_lands_and_the_copy_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, list, digest) = sample_chunks(dir.path());
        let dest = dir.path().join("dest");
        std::fs::create_dir(&dest).unwrap();
        let store = Arc::new(Store::open(&dest, &digest, "t").unwrap());
        let at = |i: usize| chunk_bytes(&bytes, &list, i);
        store.accept(TAIL, &at(TAIL), "test").unwrap();
        let sink = Sink::start(store.clone(), "test", OnBadChunk::Fail);
        for i in (0..list.len()).filter(|&i| i != TAIL) {
            let mut b = sink.buffer();
            b.clear();
            b.extend_from_slice(&at(i));
            sink.put(i, b).unwrap();
        }
        sink.close().unwrap();
        assert!(store.is_complete());
        assert_eq!(std::fs::read(dest.join("bundle.bale")).unwrap(), bytes);
    }

    #[test]
    fn a_bad_chunk_fails_or_stays_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, list, digest) = sample_chunks(dir.path());
        let tail = chunk_bytes(&bytes, &list, TAIL);
        let last = list.len() - 1;
        let mut bad = chunk_bytes(&bytes, &list, last);
        bad[0] ^= 1;
        for (policy, dest) in [(OnBadChunk::Fail, "fail"), (OnBadChunk::Skip, "skip")] {
            let dest = dir.path().join(dest);
            std::fs::create_dir(&dest).unwrap();
            let store = Arc::new(Store::open(&dest, &digest, "t").unwrap());
            store.accept(TAIL, &tail, "test").unwrap();
            let sink = Sink::start(store.clone(), "test", policy);
            sink.put(last, bad.clone()).unwrap();
            let r = sink.close();
            match policy {
                OnBadChunk::Fail => assert!(
                    matches!(r, Err(CopyError::BadChunk { index, .. }) if index == last),
                    "{r:?}"
                ),
                OnBadChunk::Skip => {
                    r.unwrap();
                    assert!(store.missing().contains(&last));
                }
            }
        }
    }
}
