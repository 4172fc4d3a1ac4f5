//! The server's TCP listener: caps concurrent connections (a canned 503 beyond the cap), disables
//! Nagle, and counts every byte read and written on each socket, headers and frames included.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{atomic::Ordering::Relaxed, Arc},
    task::{Context, Poll},
    time::Duration,
};

use axum::{extract::connect_info::Connected, serve::IncomingStream};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::{
    counted_io::{CountedIo, IoCounter},
    error::error_json,
    metrics::{Metrics, RejectReason},
};

/// Wraps a bound [`TcpListener`] for `axum::serve`.
pub struct CountingListener {
    inner: TcpListener,
    metrics: Arc<Metrics>,
    max_connections: usize,
}

impl CountingListener {
    pub fn new(inner: TcpListener, metrics: Arc<Metrics>, max_connections: usize) -> Self {
        Self {
            inner,
            metrics,
            max_connections,
        }
    }
}

/// What a handler knows about its connection (as `ConnectInfo<ConnInfo>`): the peer, and a switch
/// that aborts the connection, for cutting off a subscriber that stopped reading.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub closer: CancellationToken,
}

impl Connected<IncomingStream<'_, CountingListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, CountingListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = ConnInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually EMFILE/ENFILE: back off instead of spinning; the connection stays queued.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let open = self.metrics.connections_open.fetch_add(1, Relaxed) + 1;
            if open as usize > self.max_connections {
                self.metrics.connections_open.fetch_sub(1, Relaxed);
                self.metrics.rejected(RejectReason::ConnectionLimit);
                tokio::spawn(refuse(stream, self.max_connections));
                continue;
            }
            self.metrics.connections_accepted.fetch_add(1, Relaxed);
            let closer = CancellationToken::new();
            let stream = Closable::new(stream, closer.clone());
            let info = ConnInfo { peer: addr, closer };
            return (
                CountedIo::new(stream, ServerCounter(self.metrics.clone())),
                info,
            );
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(ConnInfo {
            peer: self.inner.local_addr()?,
            closer: CancellationToken::new(),
        })
    }
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse(mut stream: TcpStream, limit: usize) {
    let body = error_json(
        RejectReason::ConnectionLimit,
        &format!("the server is at its limit of {limit} concurrent connections"),
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    );
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
pub type CountedStream = CountedIo<Closable<TcpStream>, ServerCounter>;

/// A stream whose reads and writes fail once its closer is cancelled, even while blocked on a full
/// socket, so hyper drops the connection.
pub struct Closable<S> {
    inner: S,
    closer: CancellationToken,
    /// Registered only when an operation would block, so the fast path is one atomic load.
    wakeup: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<S> Closable<S> {
    pub fn new(inner: S, closer: CancellationToken) -> Self {
        Self {
            inner,
            closer,
            wakeup: None,
        }
    }

    /// `Ready(err)` once closed; otherwise arranges to be woken when it is.
    fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let closer = &self.closer;
        let wakeup = self
            .wakeup
            .get_or_insert_with(|| Box::pin(closer.clone().cancelled_owned()));
        match wakeup.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(closed()),
            Poll::Pending => Poll::Pending,
        }
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
        if self.closer.is_cancelled() {
            return Poll::Ready(Err(closed()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => self.poll_closed(cx).map(Err),
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Closable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.closer.is_cancelled() {
            return Poll::Ready(Err(closed()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.poll_closed(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.closer.is_cancelled() {
            return Poll::Ready(Err(closed()));
        }
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.poll_closed(cx).map(Err),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_closed(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
