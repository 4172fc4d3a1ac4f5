//! Connection timeouts below HTTP, so idle and slow sockets cannot hold the connection cap: a
//! request head must arrive complete within `--header-timeout` of its first byte, and a connection
//! with nothing in progress (new, or kept alive between requests) is closed after `--idle-timeout`. The HTTP layer marks requests in flight (until their
//! response body is done) and upgrades in the connection's [`Activity`]; while anything is in flight
//! — a long poll, an SSE stream, a WebSocket — nothing times out here.

use std::{
    convert::Infallible,
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{
            AtomicBool, AtomicU64, AtomicUsize,
            Ordering::{AcqRel, Acquire, Release},
        },
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Request},
    http::StatusCode,
    response::Response,
    Router,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};
use tower_service::Service;

use crate::{
    error::raw_error_response,
    listener::ConnInfo,
    metrics::{Metrics, RejectReason},
};

/// The two socket-level timeouts (`--header-timeout`, `--idle-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub header: Duration,
    pub idle: Duration,
}

/// What the HTTP layer tells a connection's socket: how many requests are in flight, and whether
/// the connection was upgraded (a WebSocket is never idle in the HTTP sense).
#[derive(Debug, Default)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Requests ever begun: one may begin and end between two reads of the socket.
    begun: AtomicU64,
    upgraded: AtomicBool,
}

impl Activity {
    /// Marks one request in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, AcqRel);
        self.begun.fetch_add(1, AcqRel);
        InFlight(self.clone())
    }

    /// The connection now carries another protocol for good.
    pub fn upgrade(&self) {
        self.upgraded.store(true, Release);
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Acquire) > 0 || self.upgraded.load(Acquire)
    }
}

/// One request in flight on its connection; see [`Activity::begin`].
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        // No wake-up: the answer is written after this, and the write arms the idle deadline.
        self.0.in_flight.fetch_sub(1, AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests, before any byte of the next one.
    Idle,
    /// Reading a request head, from its first byte.
    Head,
    /// A request is in flight, or the connection was upgraded.
    Busy,
}

/// A socket whose reads (and stalled writes) fail once the deadline of its phase passes.
pub struct Deadlined<S> {
    inner: S,
    activity: Arc<Activity>,
    timeouts: ConnTimeouts,
    metrics: Arc<Metrics>,
    phase: Phase,
    /// `Activity::begun` when last observed.
    seen_begun: u64,
    /// When the current phase's time is up.
    deadline: Instant,
    /// Never later than `deadline`. Moving the deadline later does not touch the timer (a request
    /// moves it twice); the timer fires early and is re-armed then.
    timer: Pin<Box<Sleep>>,
    expired: bool,
}

impl<S> Deadlined<S> {
    /// A new connection is idle until its first byte: a client may open its connection well
    /// before its first request (a load generator ramping up thousands does).
    pub fn new(
        inner: S,
        activity: Arc<Activity>,
        timeouts: ConnTimeouts,
        metrics: Arc<Metrics>,
    ) -> Self {
        let deadline = Instant::now() + timeouts.idle;
        Self {
            inner,
            activity,
            timeouts,
            metrics,
            phase: Phase::Idle,
            seen_begun: 0,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            expired: false,
        }
    }

    fn set_deadline(&mut self, after: Duration) {
        self.deadline = Instant::now() + after;
        if self.deadline < self.timer.deadline() {
            self.timer.as_mut().reset(self.deadline);
        }
    }

    /// Moves the phase on after a read or write; `read_bytes` when the read brought bytes.
    fn observe(&mut self, read_bytes: bool) {
        let begun = self.activity.begun.load(Acquire);
        if self.activity.busy() {
            self.phase = Phase::Busy;
            self.seen_begun = begun;
            return;
        }
        if self.phase == Phase::Busy || begun != self.seen_begun {
            self.seen_begun = begun;
            self.phase = Phase::Idle;
            self.set_deadline(self.timeouts.idle);
        }
        if read_bytes && self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.set_deadline(self.timeouts.header);
        }
    }

    /// `Ready(error)` once the phase's deadline has passed; otherwise arranges a wake-up for it.
    /// Nothing expires while busy. Every read and write polls this, and a request's answer is
    /// written after it stops being in flight, so the deadline of the next idle phase is armed by
    /// that write: no wake-up is needed when a request ends.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.phase == Phase::Busy {
            return Poll::Pending;
        }
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= self.deadline {
                break;
            }
            let deadline = self.deadline;
            self.timer.as_mut().reset(deadline);
        }
        self.expired = true;
        Poll::Ready(self.expire())
    }

    fn expire(&mut self) -> io::Error {
        let what = match self.phase {
            Phase::Head => {
                self.metrics.rejected(RejectReason::RequestTimeout);
                "no complete request head within the header timeout"
            }
            _ => {
                self.metrics
                    .idle_closed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                "idle longer than the idle timeout"
            }
        };
        io::Error::new(io::ErrorKind::TimedOut, what)
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
}

impl<S: AsyncRead + AsyncWrite + Unpin> Deadlined<S> {
    /// Best effort: a client that was slow rather than hostile learns why it is cut off.
    fn tell_head_timeout(&mut self, cx: &mut Context<'_>) {
        let answer = raw_error_response(
            "408 Request Timeout",
            RejectReason::RequestTimeout,
            &format!(
                "the request head did not arrive within {:?} (--header-timeout)",
                self.timeouts.header
            ),
        );
        let _ = Pin::new(&mut self.inner).poll_write(cx, answer.as_bytes());
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Deadlined<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read_bytes = buf.filled().len() > before;
        self.observe(read_bytes);
        if polled.is_ready() {
            return polled;
        }
        let head = self.phase == Phase::Head;
        match self.poll_expired(cx) {
            Poll::Ready(error) => {
                if head {
                    self.tell_head_timeout(cx);
                }
                Poll::Ready(Err(error))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> Deadlined<S> {
    /// After a write or flush: arms the deadline once no request is in flight, and fails an
    /// operation that would block past it — a client that does not read the end of its answer
    /// holds the connection like an idle one. A completed operation stands; the next one fails.
    fn after_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        self.observe(false);
        match (self.poll_expired(cx), polled) {
            (Poll::Ready(error), Poll::Pending) => Poll::Ready(Err(error)),
            (_, polled) => polled,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Deadlined<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.after_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.after_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One connection's router: each request carries `ConnectInfo<Arc<ConnInfo>>` and is marked in
/// flight on the connection until its answer is complete, so the socket's timeouts never cut off
/// work in progress (a held long poll); a 101 upgrade marks the connection for good. A refused
/// request is counted by the reason [`AppError`](crate::error::AppError) marks its answer with.
/// Served to hyper directly (`serve.rs`): nothing is boxed per request.
pub struct Tracked {
    router: Router,
    info: Arc<ConnInfo>,
    metrics: Arc<Metrics>,
}

impl Tracked {
    pub fn new(router: Router, info: ConnInfo, metrics: Arc<Metrics>) -> Self {
        Self {
            router,
            info: Arc::new(info),
            metrics,
        }
    }
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = TrackedFuture<<Router as Service<Request>>::Future>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let mut request = request.map(axum::body::Body::new);
        let in_flight = Some(self.info.activity.begin());
        request
            .extensions_mut()
            .insert(ConnectInfo(self.info.clone()));
        TrackedFuture {
            inner: self.router.clone().call(request),
            in_flight,
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, and its mark of being in flight until the answer is complete.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
        metrics: Arc<Metrics>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for TrackedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        if let Some(reason) = response.extensions().get::<RejectReason>() {
            this.metrics.rejected(*reason);
        }
        let Some(in_flight) = this.in_flight.take() else {
            return Poll::Ready(Ok(response));
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            in_flight.0.upgrade();
        }
        // A body already in memory is complete: what is left is writing it, which the socket's
        // deadlines may bound. A body still being produced (SSE) keeps the request in flight.
        if http_body::Body::size_hint(response.body())
            .exact()
            .is_some()
        {
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(response.map(|inner| {
            axum::body::Body::new(HeldBody {
                inner,
                _in_flight: in_flight,
            })
        })))
    }
}

/// A response body that keeps its request in flight until hyper drops it; everything else,
/// the size hint included (it decides between `content-length` and chunking), is the inner body's.
struct HeldBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for HeldBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn timeouts() -> ConnTimeouts {
        ConnTimeouts {
            header: Duration::from_millis(100),
            idle: Duration::from_millis(300),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_head_times_out_with_a_408() {
        let (mut client, server) = duplex(4096);
        let metrics = Arc::new(Metrics::default());
        let mut socket = Deadlined::new(server, Arc::default(), timeouts(), metrics.clone());
        client.write_all(b"G").await.unwrap_or_default();
        let mut buf = [0u8; 16];
        assert_eq!(socket.read(&mut buf).await.ok(), Some(1));
        let error = socket.read(&mut buf).await.err();
        assert_eq!(error.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        let mut answer = vec![0u8; 512];
        let n = client.read(&mut answer).await.unwrap_or_default();
        assert!(answer[..n].starts_with(b"HTTP/1.1 408"));
        assert_eq!(metrics.rejected_count(RejectReason::RequestTimeout), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_times_out_while_a_request_is_in_flight() {
        let (mut client, server) = duplex(4096);
        let activity = Arc::new(Activity::default());
        let metrics = Arc::new(Metrics::default());
        let mut socket = Deadlined::new(server, activity.clone(), timeouts(), metrics.clone());
        let held = activity.begin();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await;
        assert!(
            read.is_err(),
            "the read ended while a request was in flight"
        );
        // Once the request ends, the idle timeout runs (not the shorter header timeout).
        drop(held);
        let started = Instant::now();
        let error = socket.read(&mut buf).await.err();
        assert_eq!(error.map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            metrics
                .idle_closed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // An idle close is not an answer: the client sees only the end of the stream.
        let mut answer = Vec::new();
        drop(socket);
        let _ = client.read_to_end(&mut answer).await;
        assert!(answer.is_empty());
    }

    /// As hyper does it: one task, its read already blocked while the request was in flight, then
    /// the answer written. The write arms the idle deadline; no further read call is needed.
    #[tokio::test(start_paused = true)]
    async fn the_answer_written_after_a_request_arms_the_idle_deadline() {
        let (_client, server) = duplex(4096);
        let activity = Arc::new(Activity::default());
        let mut socket = Deadlined::new(server, activity.clone(), timeouts(), Arc::default());
        let mut held = Some(activity.begin());
        let mut buf = [0u8; 16];
        let started = Instant::now();
        let read = std::future::poll_fn(|cx| {
            let mut read_buf = ReadBuf::new(&mut buf);
            if let Poll::Ready(result) = Pin::new(&mut socket).poll_read(cx, &mut read_buf) {
                return Poll::Ready(result);
            }
            if let Some(request) = held.take() {
                drop(request);
                let _ = Pin::new(&mut socket).poll_write(cx, b"the answer");
            }
            Poll::Pending
        });
        let error = tokio::time::timeout(Duration::from_secs(5), read).await;
        let kind = error.ok().and_then(|read| read.err()).map(|e| e.kind());
        assert_eq!(kind, Some(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_connection_never_times_out() {
        let (_client, server) = duplex(4096);
        let activity = Arc::new(Activity::default());
        let mut socket = Deadlined::new(server, activity.clone(), timeouts(), Arc::default());
        activity.upgrade();
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(60), socket.read(&mut buf)).await;
        assert!(read.is_err(), "an upgraded connection timed out");
    }
}
