//! Response bodies: small in-memory ones, and blobs streamed from the bundle by offset.
//!
//! A blob is read with `pread` in chunks of [`CHUNK`] bytes on tokio's blocking pool (a cold
//! page cache must not stall the few worker threads that every other client needs), into one
//! buffer per response that is reclaimed once hyper has written the previous chunk. hyper asks
//! for the next chunk only when the socket has taken the last one, so a slow client costs one
//! chunk of memory, whatever the blob's size.

use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

/// Bytes read from the bundle per step.
pub const CHUNK: usize = 256 << 10;

/// Every body the server sends.
pub enum Body {
    Empty,
    Full(Option<Bytes>),
    Blob(BlobStream),
}

impl Body {
    pub fn full(b: impl Into<Bytes>) -> Body {
        Body::Full(Some(b.into()))
    }
}

/// A byte range of the bundle file, read on demand.
pub struct BlobStream {
    file: Arc<File>,
    pos: u64,
    end: u64,
    buf: Option<BytesMut>,
    pending: Option<JoinHandle<io::Result<(BytesMut, Bytes)>>>,
    /// For the log line when reading fails.
    what: String,
}

impl BlobStream {
    pub fn new(file: Arc<File>, offset: u64, len: u64, what: String) -> BlobStream {
        BlobStream {
            file,
            pos: offset,
            end: offset + len,
            buf: None,
            pending: None,
            what,
        }
    }

    fn remaining(&self) -> u64 {
        self.end - self.pos
    }
}

fn read_chunk(
    file: &File,
    mut buf: BytesMut,
    offset: u64,
    n: usize,
) -> io::Result<(BytesMut, Bytes)> {
    // Reclaims the whole allocation once the chunk handed out last time has been dropped.
    buf.reserve(n);
    buf.resize(n, 0);
    file.read_exact_at(&mut buf[..n], offset)?;
    let chunk = buf.split_to(n).freeze();
    Ok((buf, chunk))
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Blob(s) => s.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Blob(s) => s.remaining() == 0 && s.pending.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Blob(s) => SizeHint::with_exact(s.remaining()),
        }
    }
}

impl BlobStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        loop {
            if let Some(task) = self.pending.as_mut() {
                let res = ready!(Pin::new(task).poll(cx));
                self.pending = None;
                let res = res.map_err(io::Error::other).and_then(|r| r);
                return Poll::Ready(Some(match res {
                    Ok((buf, chunk)) => {
                        self.buf = Some(buf);
                        self.pos += chunk.len() as u64;
                        Ok(Frame::data(chunk))
                    }
                    Err(e) => {
                        tracing::warn!(
                            "reading {} from the bundle at {}: {e}",
                            self.what,
                            self.pos
                        );
                        // Ends the stream: the client sees a short body, never wrong bytes.
                        self.end = self.pos;
                        Err(e)
                    }
                }));
            }
            if self.remaining() == 0 {
                return Poll::Ready(None);
            }
            let n = self.remaining().min(CHUNK as u64) as usize;
            let buf = self
                .buf
                .take()
                .unwrap_or_else(|| BytesMut::with_capacity(CHUNK));
            let file = self.file.clone();
            let offset = self.pos;
            self.pending = Some(tokio::task::spawn_blocking(move || {
                read_chunk(&file, buf, offset, n)
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;
    use std::io::Write;

    #[tokio::test]
    async fn streams_exactly_the_range_in_chunks() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(CHUNK * 2 + 1000))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        f.write_all(&data).unwrap();
        let file = Arc::new(f);
        let (off, len) = (10u64, (CHUNK * 2 + 5) as u64);
        let mut body = Body::Blob(BlobStream::new(file, off, len, "test".into()));
        assert_eq!(body.size_hint().exact(), Some(len));
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(fr) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let d = fr.unwrap().into_data().unwrap();
            assert!(d.len() <= CHUNK);
            got.extend_from_slice(&d);
            frames += 1;
        }
        assert_eq!(frames, 3);
        assert_eq!(&got[..], &data[off as usize..(off + len) as usize]);
        assert!(body.is_end_stream());
    }
}
