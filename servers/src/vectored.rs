//! Writing a list of shared buffers (pre-framed events) to a socket in as few writes as it takes:
//! the WebSocket edge's queued frames and a handed-over SSE stream's chunks.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::Poll,
};

use bytes::Bytes;
use tokio::io::AsyncWrite;

/// Buffers offered to one vectored write.
const MAX_SLICES: usize = 64;

/// Writes every byte of `frames`, waiting for the socket as needed. A socket that accepts nothing
/// more (a write of 0) is an error.
pub async fn write_all<W: AsyncWrite + Unpin>(io: &mut W, frames: &[Bytes]) -> io::Result<()> {
    let mut frame = 0;
    let mut offset = 0;
    std::future::poll_fn(|cx| {
        while frame < frames.len() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (i, bytes) in frames[frame..].iter().take(MAX_SLICES).enumerate() {
                slices[i] = IoSlice::new(if i == 0 { &bytes[offset..] } else { bytes });
                count = i + 1;
            }
            let mut written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            };
            while written > 0 {
                let left = frames[frame].len() - offset;
                if written >= left {
                    written -= left;
                    frame += 1;
                    offset = 0;
                } else {
                    offset += written;
                    written = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_vectored_write_resumes_inside_a_frame() {
        let (mut client, mut server) = tokio::io::duplex(7);
        let frames = [Bytes::from_static(b"abcde"), Bytes::from_static(b"fghij")];
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut all).await;
            all
        });
        assert!(write_all(&mut server, &frames).await.is_ok());
        drop(server);
        assert_eq!(reader.await.ok(), Some(b"abcdefghij".to_vec()));
    }

    #[tokio::test]
    async fn a_closed_peer_is_an_error() {
        let (client, mut server) = tokio::io::duplex(4);
        drop(client);
        let frames = [Bytes::from_static(b"abcdefgh")];
        assert!(write_all(&mut server, &frames).await.is_err());
    }
}
