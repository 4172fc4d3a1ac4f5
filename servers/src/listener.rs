//! The server's TCP listener: caps concurrent connections (a canned 503 beyond the cap), disables
//! Nagle, puts the header and idle timeouts under every socket, counts every byte read and written
//! on it, headers and frames included, and survives running out of file descriptors.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{
            AtomicBool,
            Ordering::{Acquire, Relaxed, Release},
        },
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures_util::{task::AtomicWaker, FutureExt};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};

use crate::{
    conn_timeouts::{Activity, ConnTimeouts, Deadlined},
    counted_io::{CountedIo, IoCounter},
    error::raw_error_response,
    handover::Handover,
    metrics::{Metrics, RejectReason},
};

/// Connections over the cap being answered at once; beyond it they are closed without an answer,
/// so a flood cannot turn refusals into a file-descriptor leak.
pub const REFUSALS_IN_FLIGHT: usize = 32;
/// After a failed accept, the pause before the next one (the connection stays queued meanwhile).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// At most one `accept failed` log line per this long; the others are counted.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);

/// Wraps a bound [`TcpListener`] for the accept loop (`serve.rs`).
pub struct CountingListener {
    inner: TcpListener,
    metrics: Arc<Metrics>,
    max_connections: usize,
    timeouts: ConnTimeouts,
    refusals: Arc<Semaphore>,
    /// A descriptor held in reserve: when accept fails for want of descriptors, closing it lets the
    /// listener accept one waiting connection and answer it 503 instead of leaving it hanging.
    spare: Option<std::fs::File>,
    accept_log: AcceptLog,
}

impl CountingListener {
    pub fn new(
        inner: TcpListener,
        metrics: Arc<Metrics>,
        max_connections: usize,
        timeouts: ConnTimeouts,
    ) -> Self {
        Self {
            inner,
            metrics,
            max_connections,
            timeouts,
            refusals: Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT)),
            spare: spare_descriptor(),
            accept_log: AcceptLog::default(),
        }
    }

    /// Out of descriptors: frees the spare, accepts one waiting connection, answers it 503 and
    /// takes the spare back. False when there was nothing to shed.
    fn shed_one(&mut self) -> bool {
        if self.spare.take().is_none() {
            self.spare = spare_descriptor();
            return false;
        }
        let shed = match self.inner.accept().now_or_never() {
            Some(Ok((stream, _))) => {
                self.metrics.rejected(RejectReason::ConnectionLimit);
                let answer = refusal(self.max_connections);
                // Best effort and without waiting: the descriptor is needed back at once.
                let _ = stream.try_write(answer.as_bytes());
                true
            }
            _ => false,
        };
        self.spare = spare_descriptor();
        shed
    }
}

fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Rate-limits the `accept failed` warning: the first at once, then one per [`ACCEPT_LOG_EVERY`]
/// saying how many were not logged.
#[derive(Default)]
struct AcceptLog {
    last: Option<Instant>,
    quiet: u64,
}

impl AcceptLog {
    fn failed(&mut self, error: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < ACCEPT_LOG_EVERY)
        {
            self.quiet += 1;
            return;
        }
        tracing::warn!(
            %error,
            unlogged_since_last = self.quiet,
            "accept failed; answering waiting connections 503 from a spare descriptor and retrying"
        );
        self.last = Some(now);
        self.quiet = 0;
    }
}

/// What a handler knows about its connection (as `ConnectInfo<Arc<ConnInfo>>`, put on every request by
/// `conn_timeouts::Tracked`): the peer, a switch
/// that aborts the connection (for cutting off a subscriber that stopped reading), and the activity
/// marks that keep the socket's idle timeout away while a request is in flight.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub closer: Closer,
    pub activity: Arc<Activity>,
    /// Where a streaming answer takes the socket from hyper after its head (SSE).
    pub handover: Handover<CountedStream>,
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE/ENFILE: counted, logged now and then, and the waiting
                    // connections answered rather than left hanging.
                    self.metrics.accept_errors.fetch_add(1, Relaxed);
                    self.accept_log.failed(&error);
                    if !self.shed_one() {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let open = self.metrics.connections_open.fetch_add(1, Relaxed) + 1;
            if open as usize > self.max_connections {
                self.metrics.connections_open.fetch_sub(1, Relaxed);
                self.metrics.rejected(RejectReason::ConnectionLimit);
                let limit = self.max_connections;
                match self.refusals.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            refuse(stream, limit).await;
                            drop(permit);
                        });
                    }
                    // A flood: answer without waiting for the request, and close at once.
                    Err(_) => {
                        let _ = stream.try_write(refusal(limit).as_bytes());
                    }
                }
                continue;
            }
            self.metrics.connections_accepted.fetch_add(1, Relaxed);
            let closer = Closer::default();
            let activity = Arc::new(Activity::default());
            let stream = Deadlined::new(
                stream,
                activity.clone(),
                self.timeouts,
                self.metrics.clone(),
            );
            let stream = Closable::new(stream, closer.clone());
            let info = ConnInfo {
                peer: addr,
                closer,
                activity,
                handover: Handover::default(),
            };
            return (
                CountedIo::new(stream, ServerCounter(self.metrics.clone())),
                info,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnInfo {
            peer: self.inner.local_addr()?,
            closer: Closer::default(),
            activity: Arc::default(),
            handover: Handover::default(),
        })
    }
}

fn refusal(limit: usize) -> String {
    raw_error_response(
        "503 Service Unavailable",
        RejectReason::ConnectionLimit,
        &format!("the server is at its limit of {limit} concurrent connections"),
    )
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let response = refusal(limit);
    let exchange = async {
        // Read what the client sent first, so closing does not reset the connection under the reply.
        let mut scratch = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut scratch)).await;
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), exchange).await;
}

/// The server side of [`CountedIo`]: bytes and open connections go to the server's metrics.
pub struct ServerCounter(Arc<Metrics>);

impl IoCounter for ServerCounter {
    fn read(&self, bytes: usize) {
        self.0.bytes_received.fetch_add(bytes as u64, Relaxed);
    }
    fn wrote(&self, bytes: usize) {
        self.0.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }
    fn closed(&self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

/// An accepted connection, counted and closable.
pub type CountedStream = CountedIo<Closable<Deadlined<TcpStream>>, ServerCounter>;

/// The switch that aborts one connection (for cutting off a subscriber that stopped reading):
/// once thrown, the connection's reads and writes fail, even while blocked on a full socket.
#[derive(Debug, Clone, Default)]
pub struct Closer(Arc<CloserState>);

#[derive(Debug, Default)]
struct CloserState {
    closed: AtomicBool,
    /// The task blocked on the connection (one task drives a connection's socket at a time).
    waker: AtomicWaker,
}

impl Closer {
    pub fn close(&self) {
        self.0.closed.store(true, Release);
        self.0.waker.wake();
    }

    pub fn is_closed(&self) -> bool {
        self.0.closed.load(Acquire)
    }

    /// `Ready(err)` once closed; otherwise arranges to be woken when it is.
    fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.0.waker.register(cx.waker());
        if self.is_closed() {
            Poll::Ready(closed())
        } else {
            Poll::Pending
        }
    }
}

/// A stream whose reads and writes fail once its [`Closer`] is thrown, even while blocked on a full
/// socket, so hyper drops the connection. The check on every operation is one atomic load.
pub struct Closable<S> {
    inner: S,
    closer: Closer,
}

impl<S> Closable<S> {
    pub fn new(inner: S, closer: Closer) -> Self {
        Self { inner, closer }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "closed by the server")
}

impl<S: AsyncRead + Unpin> AsyncRead for Closable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closer.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => self.closer.poll_closed(cx).map(Err),
            ready => ready,
        }
    }
}

/// A vectored write of one buffer goes out as a `send`, and of several small ones (hyper's chunk
/// header, chunk and CRLF; a head and a small body; a WebSocket session's queued frames) as one
/// `send` of a copy: a `writev` costs the kernel more than copying a few hundred bytes does.
const GATHER_BELOW: usize = 2048;

impl<S: AsyncWrite + Unpin> AsyncWrite for Closable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closer.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.closer.poll_closed(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closer.is_closed() {
            return Poll::Ready(Err(closed()));
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let polled = if let [one] = bufs {
            Pin::new(&mut self.inner).poll_write(cx, one)
        } else if total < GATHER_BELOW {
            let mut gathered = [0u8; GATHER_BELOW];
            let mut at = 0;
            for buf in bufs {
                gathered[at..at + buf.len()].copy_from_slice(buf);
                at += buf.len();
            }
            Pin::new(&mut self.inner).poll_write(cx, &gathered[..total])
        } else {
            Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
        };
        match polled {
            Poll::Pending => self.closer.poll_closed(cx).map(Err),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.closer.poll_closed(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_are_logged_once_per_interval_and_counted_between() {
        let mut log = AcceptLog::default();
        let error = io::Error::other("EMFILE");
        log.failed(&error);
        let first = log.last;
        assert!(first.is_some());
        for _ in 0..100 {
            log.failed(&error);
        }
        assert_eq!(log.last, first, "logged again within the interval");
        assert_eq!(log.quiet, 100);
    }

    #[tokio::test]
    async fn small_vectored_writes_are_gathered_and_a_closer_fails_a_blocked_read() {
        let (mut client, server) = tokio::io::duplex(4096);
        let closer = Closer::default();
        let mut socket = Closable::new(server, closer.clone());
        let bufs = [
            io::IoSlice::new(b"5\r\n"),
            io::IoSlice::new(b"hello"),
            io::IoSlice::new(b"\r\n"),
        ];
        let written = socket.write_vectored(&bufs).await.unwrap_or_default();
        assert_eq!(written, 10, "the three buffers went out together");
        let mut got = [0u8; 10];
        assert!(client.read_exact(&mut got).await.is_ok());
        assert_eq!(&got, b"5\r\nhello\r\n");

        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            socket.read(&mut buf).await.map_err(|e| e.kind())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        closer.close();
        let read = tokio::time::timeout(Duration::from_secs(5), reader).await;
        assert!(
            matches!(read, Ok(Ok(Err(io::ErrorKind::ConnectionAborted)))),
            "{read:?}"
        );
    }

    #[tokio::test]
    async fn out_of_descriptors_a_waiting_client_is_answered_from_the_spare() {
        let inner = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = inner.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let metrics = Arc::new(Metrics::default());
        let timeouts = ConnTimeouts {
            header: Duration::from_secs(1),
            idle: Duration::from_secs(1),
        };
        let mut listener = CountingListener::new(inner, metrics.clone(), 10, timeouts);
        let mut client = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The connection must be in the accept queue before the listener sheds it.
        let mut shed = false;
        for _ in 0..100 {
            if listener.shed_one() {
                shed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(shed, "nothing was shed");
        assert!(
            listener.spare.is_some(),
            "the spare descriptor was not taken back"
        );
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
        assert_eq!(metrics.rejected_count(RejectReason::ConnectionLimit), 1);
    }
}
