//! One streamed HTTP/1.1 response (an SSE stream) on a counted socket, without hyper's client: the
//! request is written once, the head parsed with `httparse`, and the body decoded (chunked, by
//! length, or to the close) through one small buffer. A hyper client connection keeps a request
//! channel and an 8 KiB header buffer per socket for a stream that never sends a second request:
//! two thirds of an idle SSE client's memory.

use std::{net::SocketAddr, ops::Range, str::FromStr, sync::Arc};

use bytes::{Buf, BytesMut};
use http::{header::HeaderName, uri::PathAndQuery, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    http::ClientError,
    net::{connect, counted, CountedStream},
    record::Recorder,
    target::Target,
};

/// Bytes read from the socket at a time: a handful of small events; a large one arrives whole over
/// more reads.
pub const READ_CHUNK: usize = 2 << 10;
/// Largest response head (status line and headers) accepted.
pub const MAX_HEAD: usize = 64 << 10;
/// Most response headers accepted.
const MAX_HEADERS: usize = 64;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4 << 10;

/// A response whose head has arrived; its body is read with [`StreamResponse::next_data`].
pub struct StreamResponse {
    io: CountedStream,
    /// Read but not yet decoded; bounded by [`MAX_HEAD`] and [`MAX_LINE`] (a body's data is handed
    /// on as it arrives).
    buf: BytesMut,
    body: Body,
    /// Bytes of `buf` the last [`next_data`](Self::next_data) handed out, dropped on the next call.
    handed_out: usize,
}

impl StreamResponse {
    /// Connects (from `source` when given), sends `GET path` with a `host` header and `headers`,
    /// and reads the response head. Any status is returned; the caller judges it.
    pub async fn get(
        target: &Target,
        source: Option<SocketAddr>,
        recorder: &Arc<Recorder>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Self), ClientError> {
        let request = request_head(&target.authority, path, headers)?;
        let stream = connect(target.addr, source)
            .await
            .map_err(ClientError::Connect)?;
        let mut io = counted(stream, recorder);
        io.write_all(&request).await.map_err(ClientError::Io)?;
        let mut response = Self {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            body: Body::Done,
            handed_out: 0,
        };
        let status = response.read_head().await?;
        Ok((status, response))
    }

    /// Reads heads until a final one (1xx interim answers are skipped) and sets up the body.
    async fn read_head(&mut self) -> Result<StatusCode, ClientError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = parsed.code.unwrap_or(0);
                    let status = StatusCode::from_u16(code)
                        .map_err(|_| protocol(format!("status {code} is not a status code")))?;
                    // 204 and 304 have no body whatever their headers say (RFC 9112 §6.3).
                    let body = if matches!(code, 204 | 304) {
                        Body::Done
                    } else {
                        Body::framed_by(parsed.headers)?
                    };
                    self.buf.advance(len);
                    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                        continue;
                    }
                    self.body = body;
                    return Ok(status);
                }
                Ok(httparse::Status::Partial) if self.buf.len() >= MAX_HEAD => {
                    return Err(protocol(format!(
                        "response head larger than {MAX_HEAD} bytes"
                    )))
                }
                Ok(httparse::Status::Partial) => {
                    if !self.fill().await? {
                        return Err(ClientError::Closed);
                    }
                }
                Err(error) => return Err(protocol(format!("bad response head: {error}"))),
            }
        }
    }

    /// The next piece of body data, `None` at the body's end. A stream closed mid-body is
    /// [`ClientError::Closed`]; malformed chunk framing a protocol error.
    pub async fn next_data(&mut self) -> Result<Option<&[u8]>, ClientError> {
        self.buf.advance(std::mem::take(&mut self.handed_out));
        loop {
            let step = self.body.decode(&self.buf)?;
            if let Some(data) = step.data {
                self.handed_out = step.used;
                return Ok(Some(&self.buf[data]));
            }
            self.buf.advance(step.used);
            if self.body.is_done() {
                return Ok(None);
            }
            if step.used > 0 {
                continue;
            }
            if self.buf.len() >= MAX_LINE {
                return Err(protocol(format!(
                    "chunk framing line longer than {MAX_LINE} bytes"
                )));
            }
            if !self.fill().await? {
                return match self.body {
                    Body::UntilClose => {
                        self.body = Body::Done;
                        Ok(None)
                    }
                    _ => Err(ClientError::Closed),
                };
            }
        }
    }

    /// One read into the buffer; false at end of stream.
    async fn fill(&mut self) -> Result<bool, ClientError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        let read = self.io.read_buf(&mut self.buf).await.map_err(|error| {
            if matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) {
                ClientError::Closed
            } else {
                ClientError::Io(error)
            }
        })?;
        Ok(read > 0)
    }
}

/// `GET path HTTP/1.1` with `host` and `headers`, each checked as hyper's client would.
fn request_head(
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Vec<u8>, ClientError> {
    let path =
        PathAndQuery::from_str(path).map_err(|e| protocol(format!("bad path `{path}`: {e}")))?;
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\n").into_bytes();
    for (name, value) in headers {
        let name = HeaderName::from_str(name)
            .map_err(|e| protocol(format!("bad header name `{name}`: {e}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| protocol(format!("bad value for header `{name}`: {e}")))?;
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

fn protocol(why: String) -> ClientError {
    ClientError::Protocol(why)
}

/// How the body is delimited, and how much of it is left (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// `Content-Length` bytes left (never 0: an ended body is `Done`).
    Length(u64),
    /// Neither: the body ends when the server closes.
    UntilClose,
    Done,
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Bytes of the current chunk left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// What one decoding step did with the buffered bytes.
#[derive(Debug, PartialEq)]
struct Step {
    /// Bytes of the buffer this step took (framing and data).
    used: usize,
    /// Where in the buffer the body data it found lies.
    data: Option<Range<usize>>,
}

impl Body {
    fn framed_by(headers: &[httparse::Header<'_>]) -> Result<Self, ClientError> {
        let value = |name: &str| {
            headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        };
        let codings = value("transfer-encoding");
        if let Some(last) = codings.last() {
            // Only the final coding says how the message ends; anything but chunked runs to close.
            return Ok(
                if last.rsplit(',').next().map(str::trim) == Some("chunked") {
                    Body::Chunked(Chunk::Size)
                } else {
                    Body::UntilClose
                },
            );
        }
        match value("content-length").as_slice() {
            [] => Ok(Body::UntilClose),
            lengths => {
                let first = &lengths[0];
                if lengths.iter().any(|l| l != first) {
                    return Err(protocol("conflicting Content-Length headers".into()));
                }
                first
                    .parse()
                    .map(|length| match length {
                        0 => Body::Done,
                        left => Body::Length(left),
                    })
                    .map_err(|_| protocol(format!("bad Content-Length `{first}`")))
            }
        }
    }

    fn is_done(&self) -> bool {
        *self == Body::Done
    }

    /// One step over `input` (the buffered, undecoded bytes): `used == 0` and no data means it needs
    /// more bytes.
    fn decode(&mut self, input: &[u8]) -> Result<Step, ClientError> {
        let need_more = Step {
            used: 0,
            data: None,
        };
        match self {
            Body::Done => Ok(need_more),
            Body::Length(left) | Body::Chunked(Chunk::Data(left)) => {
                let take = (*left).min(input.len() as u64) as usize;
                if take == 0 {
                    return Ok(need_more);
                }
                *left -= take as u64;
                match self {
                    Body::Length(0) => *self = Body::Done,
                    Body::Chunked(chunk @ Chunk::Data(0)) => *chunk = Chunk::DataEnd,
                    _ => {}
                }
                Ok(Step {
                    used: take,
                    data: Some(0..take),
                })
            }
            Body::UntilClose => Ok(if input.is_empty() {
                need_more
            } else {
                Step {
                    used: input.len(),
                    data: Some(0..input.len()),
                }
            }),
            Body::Chunked(chunk) => {
                let Some((line, used)) = line(input) else {
                    return Ok(need_more);
                };
                *self = match chunk {
                    Chunk::Size => match chunk_size(line)? {
                        0 => Body::Chunked(Chunk::Trailers),
                        size => Body::Chunked(Chunk::Data(size)),
                    },
                    Chunk::DataEnd if line.is_empty() => Body::Chunked(Chunk::Size),
                    Chunk::DataEnd => {
                        return Err(protocol("chunk data longer than its size".into()))
                    }
                    Chunk::Trailers if line.is_empty() => Body::Done,
                    Chunk::Trailers => Body::Chunked(Chunk::Trailers),
                    Chunk::Data(_) => unreachable!("handled above"),
                };
                Ok(Step { used, data: None })
            }
        }
    }
}

/// The first line of `input` without its line end (CRLF, or a bare LF as lenient parsers accept),
/// and the bytes it took with its end; `None` when no line end has arrived yet.
fn line(input: &[u8]) -> Option<(&[u8], usize)> {
    let end = input.iter().position(|&b| b == b'\n')?;
    let line = &input[..end];
    Some((line.strip_suffix(b"\r").unwrap_or(line), end + 1))
}

/// A chunk-size line: hex digits, then optional whitespace and `;extensions` (ignored).
fn chunk_size(line: &[u8]) -> Result<u64, ClientError> {
    let bad = || {
        protocol(format!(
            "bad chunk size `{}`",
            String::from_utf8_lossy(line)
        ))
    };
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    if digits == 0 || digits > 15 || !(rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t')) {
        return Err(bad());
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| bad())?;
    u64::from_str_radix(text, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `piece` bytes; the body, or the first error.
    fn decode_in_pieces(mut body: Body, wire: &[u8], piece: usize) -> Result<Vec<u8>, String> {
        let (mut buffered, mut out, mut fed) = (Vec::new(), Vec::new(), 0);
        loop {
            let step = body.decode(&buffered).map_err(|e| e.to_string())?;
            if let Some(data) = step.data.clone() {
                out.extend_from_slice(&buffered[data]);
            }
            buffered.drain(..step.used);
            if body.is_done() {
                return Ok(out);
            }
            if step.used == 0 && step.data.is_none() {
                if fed == wire.len() {
                    return match body {
                        Body::UntilClose => Ok(out),
                        _ => Err("closed mid-body".into()),
                    };
                }
                let end = (fed + piece).min(wire.len());
                buffered.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_reads_split() {
        let wire =
            b"5\r\nhello\r\n1;name=value\r\n \r\nA \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        for piece in 1..wire.len() {
            assert_eq!(
                decode_in_pieces(Body::Chunked(Chunk::Size), wire, piece).unwrap(),
                b"hello 0123456789",
                "{piece}-byte reads"
            );
        }
        // Bare LF line ends, as lenient servers send.
        assert_eq!(
            decode_in_pieces(Body::Chunked(Chunk::Size), b"3\nabc\n0\n\n", 2).unwrap(),
            b"abc"
        );
    }

    #[test]
    fn malformed_chunks_and_early_closes_are_errors() {
        for (wire, want) in [
            (&b"zz\r\nhello\r\n"[..], "bad chunk size"),
            (b"\r\n", "bad chunk size"),
            (b"5x\r\nhello\r\n", "bad chunk size"),
            (b"ffffffffffffffff\r\n", "bad chunk size"),
            (b"3\r\nabcdef\r\n", "longer than its size"),
            (b"5\r\nhel", "closed mid-body"),
            (b"5\r\nhello\r\n", "closed mid-body"),
        ] {
            let error = decode_in_pieces(Body::Chunked(Chunk::Size), wire, 3).unwrap_err();
            assert!(error.contains(want), "{error} for {wire:?}");
        }
    }

    #[test]
    fn length_and_close_delimited_bodies() {
        assert_eq!(
            decode_in_pieces(Body::Length(5), b"hello", 2).unwrap(),
            b"hello"
        );
        assert!(decode_in_pieces(Body::Length(9), b"hello", 2).is_err());
        assert_eq!(
            decode_in_pieces(Body::UntilClose, b"data: x\n\n", 4).unwrap(),
            b"data: x\n\n"
        );
    }

    #[test]
    fn the_last_transfer_coding_or_the_length_frames_the_body() {
        let framed = |headers: &[(&str, &str)]| {
            let headers: Vec<_> = headers
                .iter()
                .map(|(name, value)| httparse::Header {
                    name,
                    value: value.as_bytes(),
                })
                .collect();
            Body::framed_by(&headers).map_err(|e| e.to_string())
        };
        assert_eq!(
            framed(&[("Transfer-Encoding", "Chunked")]),
            Ok(Body::Chunked(Chunk::Size))
        );
        assert_eq!(
            framed(&[
                ("transfer-encoding", "gzip, chunked"),
                ("content-length", "3")
            ]),
            Ok(Body::Chunked(Chunk::Size))
        );
        assert_eq!(
            framed(&[("transfer-encoding", "chunked, gzip")]),
            Ok(Body::UntilClose)
        );
        assert_eq!(framed(&[("content-length", "12")]), Ok(Body::Length(12)));
        assert_eq!(framed(&[("content-length", "0")]), Ok(Body::Done));
        assert_eq!(framed(&[]), Ok(Body::UntilClose));
        assert!(framed(&[("content-length", "1"), ("content-length", "2")]).is_err());
        assert!(framed(&[("content-length", "-1")]).is_err());
    }

    #[test]
    fn requests_refuse_what_would_split_the_head() {
        let head = request_head("127.0.0.1:1", "/sse/a?x=1", &[("last-event-id", "7")]).unwrap();
        assert_eq!(
            head,
            b"GET /sse/a?x=1 HTTP/1.1\r\nhost: 127.0.0.1:1\r\nlast-event-id: 7\r\n\r\n"
        );
        assert!(request_head("h", "/a b", &[]).is_err());
        assert!(request_head("h", "/a", &[("x", "1\r\nevil: 2")]).is_err());
        assert!(request_head("h", "/a", &[("bad name", "1")]).is_err());
    }

    /// Serves `answer` (after reading the request head) on a loopback port, then holds the socket
    /// until the client leaves; a response's head and body as `StreamResponse` reads them.
    async fn served(answer: &'static [u8]) -> Result<(StatusCode, Vec<u8>), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 512];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            socket.write_all(answer).await.unwrap();
            while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
        });
        let target = Target {
            addr,
            authority: addr.to_string(),
            path: "/".into(),
        };
        let recorder = Arc::new(Recorder::new(1));
        let read = async {
            let (status, mut response) =
                StreamResponse::get(&target, None, &recorder, "/events", &[])
                    .await
                    .map_err(|e| e.to_string())?;
            let mut body = Vec::new();
            while let Some(data) = response.next_data().await.map_err(|e| e.to_string())? {
                body.extend_from_slice(data);
            }
            Ok((status, body))
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    #[tokio::test]
    async fn heads_interim_answers_and_bodiless_statuses() {
        let (status, body) = served(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"abc"[..]));
        // A 204 ends at its head even on a kept-alive socket that sends nothing more.
        let (status, body) = served(b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n")
            .await
            .unwrap();
        assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
        let (status, body) = served(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\ndata")
            .await
            .unwrap();
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"data"[..]));
        assert!(served(b"HTTP/1.1 2000 Bad\r\n\r\n")
            .await
            .unwrap_err()
            .contains("bad response head"));
        assert!(served(b"SSH-2.0-OpenSSH\r\n\r\n")
            .await
            .unwrap_err()
            .contains("bad response head"));
    }
}
