//! Taking a connection's socket back from hyper after a response head, for an answer that streams
//! until the connection ends (SSE). hyper hands a socket over only after a 101, and keeps an
//! HTTP/1 connection's read and header buffers (two resident pages) for as long as its response
//! lasts. So hyper reads and writes through a [`Detachable`] socket: a handler asks for the socket
//! ([`Handover::request`]) and answers with a [`HandoverBody`]; hyper polls that body only once the
//! head is in its write buffer, and flushes the socket only once that buffer is all written, so the
//! first flush after the body's first poll hands the socket to the handler's task, and hyper's side
//! of the connection ends (its body fails at once).

use std::{
    fmt, io,
    pin::Pin,
    sync::{
        atomic::{
            AtomicBool,
            Ordering::{AcqRel, Acquire, Release},
        },
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{oneshot, watch},
};

use crate::lock::lock;

/// A connection's hand-over switch: a handler asks through it, the connection's [`Detachable`]
/// socket answers.
pub struct Handover<S>(Arc<State<S>>);

struct State<S> {
    /// The answer's head is in hyper's write buffer: its next flush hands the socket over.
    armed: AtomicBool,
    /// Where the socket goes.
    taker: Mutex<Option<oneshot::Sender<Detached<S>>>>,
    /// The socket was handed over: hyper's side must end.
    detached: AtomicBool,
}

impl<S> Default for Handover<S> {
    fn default() -> Self {
        Self(Arc::new(State {
            armed: AtomicBool::new(false),
            taker: Mutex::new(None),
            detached: AtomicBool::new(false),
        }))
    }
}

impl<S> Clone for Handover<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> fmt::Debug for Handover<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handover")
            .field("armed", &self.0.armed.load(Acquire))
            .field("detached", &self.0.detached.load(Acquire))
            .finish()
    }
}

impl<S> Handover<S> {
    /// Asks for the socket. It arrives through the receiver once the response whose body is the
    /// returned [`HandoverBody`] has its head on the wire. If hyper drops that body unpolled (a
    /// `HEAD` request, a client gone before the head), the request is withdrawn and the receiver
    /// fails. (A connection whose socket was handed over takes no more requests.)
    pub fn request(&self) -> (oneshot::Receiver<Detached<S>>, HandoverBody<S>) {
        let (sender, receiver) = oneshot::channel();
        *lock(&self.0.taker) = Some(sender);
        (receiver, HandoverBody(self.clone()))
    }

    /// Withdraws a request that was not answered.
    fn withdraw(&self) {
        self.0.armed.store(false, Release);
        lock(&self.0.taker).take();
    }
}

/// What the handler's task gets: the socket, and the mark that keeps the server's graceful
/// shutdown waiting until the task is done with it.
pub struct Detached<S> {
    pub io: S,
    pub tenure: Tenure,
}

/// Held while a connection is open: the server's shutdown waits until every one is dropped.
#[derive(Debug, Clone)]
pub struct Tenure {
    _open: watch::Receiver<()>,
}

impl Tenure {
    pub fn new(open: watch::Receiver<()>) -> Self {
        Self { _open: open }
    }
}

/// The body of a response whose socket is handed over: its first poll arms the hand-over; it never
/// yields data, and fails once the socket is gone, which ends hyper's connection without another
/// byte written.
pub struct HandoverBody<S>(Handover<S>);

/// hyper's side of a connection whose socket was handed over.
#[derive(Debug, thiserror::Error)]
#[error("the connection's socket was handed over")]
pub struct HandedOver;

impl<S> http_body::Body for HandoverBody<S> {
    type Data = Bytes;
    type Error = HandedOver;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, HandedOver>>> {
        let state = &self.0 .0;
        if state.detached.load(Acquire) {
            return Poll::Ready(Some(Err(HandedOver)));
        }
        // The hand-over happens in hyper's flush, which then wakes this same task.
        state.armed.store(true, Release);
        Poll::Pending
    }
}

impl<S> Drop for HandoverBody<S> {
    fn drop(&mut self) {
        if !self.0 .0.detached.load(Acquire) {
            self.0.withdraw();
        }
    }
}

/// The socket hyper reads and writes; see the module doc.
pub struct Detachable<S> {
    io: Option<S>,
    handover: Handover<S>,
    tenure: Option<Tenure>,
    /// hyper has not read yet (see `poll_read`).
    first_read: bool,
}

impl<S> Detachable<S> {
    pub fn new(io: S, handover: Handover<S>, tenure: Tenure) -> Self {
        Self {
            io: Some(io),
            handover,
            tenure: Some(tenure),
            first_read: true,
        }
    }

    /// After hyper's flush: once an armed answer's head is all on the wire, the socket goes to the
    /// handler's task.
    fn hand_over_if_due(&mut self, cx: &mut Context<'_>) {
        let state = &self.handover.0;
        if !state.armed.load(Acquire) || !state.armed.swap(false, AcqRel) {
            return;
        }
        let Some(taker) = lock(&state.taker).take() else {
            return;
        };
        let (Some(io), Some(tenure)) = (self.io.take(), self.tenure.take()) else {
            return;
        };
        state.detached.store(true, Release);
        // A taker that went away drops the socket, which closes it.
        let _ = taker.send(Detached { io, tenure });
        cx.waker().wake_by_ref();
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the socket was handed over")
}

impl<S: AsyncRead + Unpin> AsyncRead for Detachable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let first = std::mem::take(&mut self.first_read);
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        if !first || buf.remaining() == 0 {
            return Pin::new(io).poll_read(cx, buf);
        }
        // hyper's first read of a connection gets one byte. Its next read then reserves 8 KiB
        // beside that byte, which doubles its read buffer to 16 KiB. With 8 KiB, the read hyper
        // makes while each request is in flight (to notice a client that hangs up) finds less than
        // 8 KiB free beside the request head it still shares, and allocates a new buffer: a malloc
        // and free of 8 KiB per request, about a tenth of a short-poll answer's CPU (docs/perf).
        let mut one = [0u8; 1];
        let mut limited = ReadBuf::new(&mut one);
        let polled = Pin::new(io).poll_read(cx, &mut limited);
        if polled.is_pending() {
            self.first_read = true;
        }
        buf.put_slice(limited.filled());
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Detachable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    /// hyper flushes the socket only once everything it buffered is written: after the body's first
    /// poll, its head is all out.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let polled = Pin::new(io).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.hand_over_if_due(cx);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// How a handed-over response's body goes on the wire: as hyper would have framed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HTTP/1.1: chunked, ended by the last chunk.
    Chunked,
    /// HTTP/1.0: the body ends where the connection does.
    ToClose,
}

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl Framing {
    /// hyper's framing for a body of unknown length answering a request of `version`.
    pub fn of(version: axum::http::Version) -> Self {
        if version == axum::http::Version::HTTP_10 {
            Framing::ToClose
        } else {
            Framing::Chunked
        }
    }

    /// `data` framed as one piece of the body.
    pub fn frame(self, data: &[u8]) -> Bytes {
        match self {
            Framing::Chunked => chunk(data),
            Framing::ToClose => Bytes::copy_from_slice(data),
        }
    }
}

/// `data` as one chunk of a chunked body, byte for byte as hyper writes it (upper-case hex size).
pub fn chunk(data: &[u8]) -> Bytes {
    let size = format!("{:X}\r\n", data.len());
    let mut out = bytes::BytesMut::with_capacity(size.len() + data.len() + 2);
    out.extend_from_slice(size.as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use http_body::Body;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    fn detachable() -> (
        Detachable<DuplexStream>,
        Handover<DuplexStream>,
        DuplexStream,
    ) {
        let (client, server) = duplex(1024);
        let handover = Handover::default();
        let (_open, open) = watch::channel(());
        let socket = Detachable::new(server, handover.clone(), Tenure::new(open));
        (socket, handover, client)
    }

    async fn poll_body(body: &mut HandoverBody<DuplexStream>) -> Poll<bool> {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx).map(|f| f.is_some()))).await
    }

    #[tokio::test]
    async fn the_flush_after_the_bodys_first_poll_hands_the_socket_over() {
        let (mut socket, handover, mut client) = detachable();
        let (mut taken, mut body) = handover.request();
        // Before the body is polled, hyper is still writing earlier answers.
        socket.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        socket.flush().await.unwrap();
        assert!(taken.try_recv().is_err());
        assert!(poll_body(&mut body).await.is_pending());
        socket.flush().await.unwrap();
        let Detached { io: mut taken, .. } = taken.await.unwrap();
        // hyper's side: its body fails, its socket is gone.
        assert_eq!(poll_body(&mut body).await, Poll::Ready(true));
        assert!(socket.write_all(b"0\r\n\r\n").await.is_err());
        assert!(socket.read(&mut [0; 8]).await.is_err());
        socket.shutdown().await.unwrap();
        // The taker writes on the same connection.
        taken.write_all(b"stream").await.unwrap();
        drop((socket, taken, body));
        let mut received = String::new();
        client.read_to_string(&mut received).await.unwrap();
        assert_eq!(received, "HTTP/1.1 200 OK\r\n\r\nstream");
    }

    #[tokio::test]
    async fn a_body_dropped_unpolled_withdraws_the_request() {
        let (mut socket, handover, mut client) = detachable();
        let (taken, body) = handover.request();
        // The head of an answer without a body (HEAD), and the next answer: hyper keeps both.
        socket.write_all(b"head").await.unwrap();
        drop(body);
        assert!(taken.await.is_err());
        socket.flush().await.unwrap();
        socket.write_all(b" next").await.unwrap();
        socket.flush().await.unwrap();
        drop(socket);
        let mut received = String::new();
        client.read_to_string(&mut received).await.unwrap();
        assert_eq!(received, "head next");
    }

    #[test]
    fn chunks_are_framed_as_hyper_frames_them() {
        assert_eq!(&chunk(b"hello")[..], b"5\r\nhello\r\n");
        assert_eq!(&chunk(&[b'x'; 300])[..5], b"12C\r\n");
        assert_eq!(Framing::of(axum::http::Version::HTTP_10), Framing::ToClose);
        assert_eq!(&Framing::ToClose.frame(b"as is")[..], b"as is");
    }
}
