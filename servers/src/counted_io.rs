//! A socket wrapper that reports every byte it reads and writes (headers and frames included) and its
//! own closing to an [`IoCounter`]. The server's listener and the load generator's clients share it.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Where a [`CountedIo`] reports.
pub trait IoCounter: Send + Sync + Unpin + 'static {
    fn read(&self, bytes: usize);
    fn wrote(&self, bytes: usize);
    /// The stream was dropped (the connection is closed).
    fn closed(&self);
}

pub struct CountedIo<S, C: IoCounter> {
    inner: S,
    counter: C,
}

impl<S, C: IoCounter> CountedIo<S, C> {
    pub fn new(inner: S, counter: C) -> Self {
        Self { inner, counter }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C: IoCounter> Drop for CountedIo<S, C> {
    fn drop(&mut self) {
        self.counter.closed();
    }
}

impl<S: AsyncRead + Unpin, C: IoCounter> AsyncRead for CountedIo<S, C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.counter.read(read);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin, C: IoCounter> AsyncWrite for CountedIo<S, C> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.counter.wrote(n);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            self.counter.wrote(n);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
