//! Response bodies: small in-memory ones, and blobs streamed from the bundle by offset.
//!
//! A blob is read with `pread` in chunks of [`CHUNK`] bytes on tokio's blocking pool (a cold
//! page cache must not stall the few worker threads that every other client needs), into one
//! buffer per response that is reclaimed once hyper has written the previous chunk. hyper asks
//! for the next chunk only when the socket has taken the last one, so a slow client costs one
//! chunk of memory, whatever the blob's size.
//!
//! On plain-HTTP connections blobs go out with `sendfile(2)` instead, straight from the page
//! cache to the socket: the stream hands hyper placeholder bytes (a static, never-read buffer)
//! and records the file range they stand for in the connection's [`Spool`]; the connection's
//! writer, [`SendfileIo`], recognises the placeholder by its address when hyper writes it and
//! sends the file range in its place. hyper is told to queue body buffers as they are
//! (`writev(true)`), never to copy them, so the placeholder always reaches the writer intact;
//! a placeholder that does not match the next recorded range fails the connection rather than
//! send wrong bytes.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future as _;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Bytes read from the bundle per step.
pub const CHUNK: usize = 256 << 10;
/// Bytes one placeholder stands for on a sendfile connection.
pub const SENDFILE_CHUNK: usize = 4 << 20;
/// What hyper is handed in place of blob bytes on a sendfile connection. Never read: only its
/// address matters. Allocated zeroed at first use (fresh pages that are never touched cost no
/// memory): a `static` array of zeros would sit in .rodata and add its 4 MiB to the program
/// file, which every bundle carries.
static PLACEHOLDER: LazyLock<Box<[u8]>> =
    LazyLock::new(|| vec![0u8; SENDFILE_CHUNK].into_boxed_slice());

/// A file range a placeholder stands for.
struct Pending {
    file: Arc<File>,
    offset: u64,
    len: usize,
    sent: usize,
}

/// One connection's queue of file ranges, in the order hyper will write their placeholders.
#[derive(Clone, Default)]
pub struct Spool(Arc<Mutex<VecDeque<Pending>>>);

impl Spool {
    fn push(&self, p: Pending) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(p);
    }
}

/// Where a buffer lies in [`PLACEHOLDER`], if it does.
fn placeholder_offset(buf: &[u8]) -> Option<usize> {
    let start = PLACEHOLDER.as_ptr() as usize;
    let p = buf.as_ptr() as usize;
    (!buf.is_empty() && p >= start && p + buf.len() <= start + SENDFILE_CHUNK).then(|| p - start)
}

/// A plain TCP connection that sends the file ranges of a [`Spool`] with sendfile(2) where
/// hyper writes their placeholders.
pub struct SendfileIo {
    tcp: TcpStream,
    spool: Spool,
}

impl SendfileIo {
    pub fn new(tcp: TcpStream, spool: Spool) -> SendfileIo {
        SendfileIo { tcp, spool }
    }

    fn poll_sendfile(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
        at: usize,
    ) -> Poll<io::Result<usize>> {
        let mut q = self.spool.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(front) = q.front_mut() else {
            return Poll::Ready(Err(io::Error::other(
                "blob placeholder without a file range",
            )));
        };
        if at != front.sent || buf.len() != front.len - front.sent {
            return Poll::Ready(Err(io::Error::other(format!(
                "blob placeholder out of step (at {at}, {} bytes; expected at {}, {} bytes)",
                buf.len(),
                front.sent,
                front.len - front.sent
            ))));
        }
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let Ok(mut off) = i64::try_from(front.offset + front.sent as u64) else {
                return Poll::Ready(Err(io::Error::other(
                    "a blob offset beyond what sendfile can address",
                )));
            };
            let want = front.len - front.sent;
            let file = &front.file;
            let tcp = &self.tcp;
            let r = tcp.try_io(Interest::WRITABLE, || {
                nix::sys::sendfile::sendfile(tcp, file.as_ref(), Some(&mut off), want)
                    .map_err(io::Error::from)
            });
            match r {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the bundle file ends before the blob does",
                    )))
                }
                Ok(n) => {
                    front.sent += n;
                    if front.sent == front.len {
                        q.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        match placeholder_offset(buf) {
            Some(at) => me.poll_sendfile(cx, buf, at),
            None => Pin::new(&mut me.tcp).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        // Plain bytes up to the first placeholder in one writev; the placeholder on the next
        // call (hyper calls again with what is left).
        match bufs.iter().position(|b| placeholder_offset(b).is_some()) {
            Some(0) => {
                let at = placeholder_offset(&bufs[0]).unwrap_or(0);
                me.poll_sendfile(cx, &bufs[0], at)
            }
            Some(k) => Pin::new(&mut me.tcp).poll_write_vectored(cx, &bufs[..k]),
            None => Pin::new(&mut me.tcp).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

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

    /// Sends a blob body with sendfile through this connection's spool.
    pub fn with_spool(self, spool: &Spool) -> Body {
        match self {
            Body::Blob(mut s) => {
                s.spool = Some(spool.clone());
                Body::Blob(s)
            }
            b => b,
        }
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
    /// Set on sendfile connections: ranges go there, placeholders to hyper.
    spool: Option<Spool>,
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
            spool: None,
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
            if let Some(spool) = &self.spool {
                let n = self.remaining().min(SENDFILE_CHUNK as u64) as usize;
                spool.push(Pending {
                    file: self.file.clone(),
                    offset: self.pos,
                    len: n,
                    sent: 0,
                });
                self.pos += n as u64;
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    &PLACEHOLDER.as_ref()[..n],
                )))));
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

    /// Two blob ranges bigger than a placeholder, over one keep-alive connection through hyper
    /// and [`SendfileIo`]: the client gets exactly the file's bytes, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sendfile_connection_sends_the_exact_ranges() {
        use hyper::server::conn::http1;
        use hyper_util::rt::TokioIo;
        use std::io::{BufRead, BufReader, Read};

        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(SENDFILE_CHUNK * 2 + 12345))
            .map(|i| (i * 31 % 253) as u8)
            .collect();
        f.write_all(&data).unwrap();
        let file = Arc::new(f);
        let ranges = [(7u64, (SENDFILE_CHUNK * 2 + 100) as u64), (1u64, 5000u64)];

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server_file = file.clone();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let spool = Spool::default();
            let io = SendfileIo::new(tcp, spool.clone());
            let n = std::sync::atomic::AtomicUsize::new(0);
            let svc = hyper::service::service_fn(move |_req| {
                let (off, len) = ranges[n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)];
                let body = Body::Blob(BlobStream::new(server_file.clone(), off, len, "t".into()))
                    .with_spool(&spool);
                let mut resp = hyper::Response::new(body);
                resp.headers_mut()
                    .insert(hyper::header::CONTENT_LENGTH, len.into());
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            http1::Builder::new()
                .writev(true)
                .serve_connection(TokioIo::new(io), svc)
                .await
                .unwrap();
        });
        let got = tokio::task::spawn_blocking(move || {
            let s = std::net::TcpStream::connect(addr).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut bodies = Vec::new();
            for i in 0..2 {
                let close = if i == 1 { "Connection: close\r\n" } else { "" };
                w.write_all(format!("GET /b HTTP/1.1\r\nHost: x\r\n{close}\r\n").as_bytes())
                    .unwrap();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; len];
                r.read_exact(&mut body).unwrap();
                bodies.push(body);
            }
            bodies
        })
        .await
        .unwrap();
        for (body, (off, len)) in got.iter().zip(ranges) {
            assert_eq!(body.len() as u64, len);
            assert!(body[..] == data[off as usize..(off + len) as usize]);
        }
        server.await.unwrap();
    }
}
