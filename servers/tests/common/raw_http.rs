//! Raw HTTP on a TCP socket, for requests no well-behaved client library sends (partial heads,
//! lying `Content-Length`s) and for reading exactly what the server answers before it closes.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::within;

/// Reads until the server closes the connection; returns what it sent (maybe nothing).
pub async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut answer = Vec::new();
    within("the server to close the connection", limit, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    answer
}

/// Sends `request` as is on a new connection and reads everything the server sends until it closes
/// the connection (bounded by [`STEP`](super::STEP)).
pub async fn until_closed(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A server that refuses early may close before the whole request is written.
    let _ = stream.write_all(request).await;
    let answer = read_until_closed(&mut stream, super::STEP).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Sends `request` as is on a new connection and reads the first answer, which must arrive within
/// `limit` (a whole answer: its head and as many body bytes as its `content-length` says).
pub async fn first_answer(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    within("the answer", limit, async {
        let mut chunk = [0u8; 4096];
        while !complete(&answer) {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A head followed by its `content-length` bytes of body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    body.len() >= length
}
