//! The server's TCP listener: caps concurrent connections (a canned 503 beyond the cap), disables
//! Nagle, and counts every byte read and written on each socket, headers and frames included.

use std::{
    io,
    net::SocketAddr,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

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

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

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
            return (CountedIo::new(stream, ServerCounter(self.metrics.clone())), addr);
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
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

/// An accepted connection, counted.
pub type CountedStream = CountedIo<TcpStream, ServerCounter>;
