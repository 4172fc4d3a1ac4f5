//! Byte-for-byte wire tests, one per pattern a client follows a topic with: a raw TCP client drives a
//! fixed script (handshake, subscribe after a cursor older than history, the backlog, live events
//! with a UTF-8 payload that needs escaping, a binary one, a long one, requests over the socket, the
//! close) and everything the server sent is compared with the committed capture in `tests/wire/`.
//! Only the `date` header and Socket.IO's random session ids are masked. A change to what a client
//! receives — framing, chunking, headers, close frames — fails here; to accept a deliberate change,
//! run with `COMMBENCH_WIRE_UPDATE=1` and review the diff of `tests/wire/*.txt`.

#![allow(clippy::unwrap_used)]

mod common;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use commbench_servers::ServerHandle;
use common::{client, metric, publish, spawn_with, wait_until, within, STEP};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const TOPIC: &str = "wire";

/// A server whose history keeps 4 events (so a cursor of 1 after 6 publishes gets a gap) and whose
/// heartbeats never fire during a test.
async fn server() -> ServerHandle {
    let server = spawn_with(|c| {
        c.history = 4;
        c.heartbeat = Duration::from_secs(3600);
    })
    .await;
    let http = client();
    for n in 1..=6 {
        publish(&http, &server.url(), TOPIC, format!("backlog {n}")).await;
    }
    server
}

/// The live events every pattern receives after its backlog: text that needs JSON escaping, a
/// payload that is not UTF-8 (`data_b64`), one long enough for a 16-bit WebSocket length, and the
/// end marker.
async fn publish_live(server: &ServerHandle) {
    let http = client();
    let base = server.url();
    publish(
        &http,
        &base,
        TOPIC,
        "he said \"hi\"\n\tü € \u{1F600} \\".as_bytes(),
    )
    .await;
    publish(&http, &base, TOPIC, vec![0xff, 0x00, 0x80, b'x']).await;
    publish(&http, &base, TOPIC, "l".repeat(300)).await;
    publish(&http, &base, TOPIC, "end").await;
}

/// A raw client: what it sent is its business, what it received is recorded whole.
struct Raw {
    stream: TcpStream,
    received: Vec<u8>,
    /// Where the search for the next marker starts.
    seen: usize,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        let stream = within("connect", STEP, TcpStream::connect(addr))
            .await
            .unwrap();
        Self {
            stream,
            received: Vec::new(),
            seen: 0,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        within("a write", STEP, self.stream.write_all(bytes))
            .await
            .unwrap();
    }

    /// Reads until `marker` arrives after everything already matched.
    async fn until(&mut self, marker: &str) {
        let what = format!("{marker:?} from the server");
        let marker = marker.as_bytes();
        within(&what, STEP, async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(at) = find(&self.received[self.seen..], marker) {
                    self.seen += at + marker.len();
                    return;
                }
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(
                    n > 0,
                    "closed before {what}; received {}",
                    render(&self.received)
                );
                self.received.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
    }

    /// Reads until the server closes the connection.
    async fn until_closed(&mut self) {
        within("the server to close", STEP, async {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = self.stream.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                self.received.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
    }

    /// A client WebSocket frame: FIN, `opcode`, masked with a fixed key.
    async fn ws_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask = [0x1b, 0x2c, 0x3d, 0x4e];
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.send(&frame).await;
    }

    async fn ws_text(&mut self, text: &str) {
        self.ws_frame(0x1, text.as_bytes()).await;
    }

    async fn ws_close(&mut self, code: u16) {
        self.ws_frame(0x8, &code.to_be_bytes()).await;
    }

    /// Opens a WebSocket on `path` (the RFC 6455 sample key, so the accept value is fixed).
    async fn ws_open(addr: SocketAddr, path: &str, protocol: Option<&str>) -> Self {
        let mut raw = Self::connect(addr).await;
        let protocol = protocol
            .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: wire\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
        );
        raw.send(request.as_bytes()).await;
        raw.until("\r\n\r\n").await;
        raw
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Bytes as reviewable text: printable ASCII as is, a line break after each CRLF or LF, other
/// bytes as `\xNN`; the `date` header's value and Socket.IO session ids masked.
fn render(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &bytes[i..];
        if rest.starts_with(b"date: ") {
            if let Some(end) = find(rest, b"\r\n") {
                out.push_str("date: <date>");
                i += end;
                continue;
            }
        }
        if rest.starts_with(b"\"sid\":\"") && rest.len() >= 7 + 21 && rest[7 + 20] == b'"' {
            out.push_str("\"sid\":\"<sid>");
            i += 7 + 20;
            continue;
        }
        match bytes[i] {
            b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                out.push_str("\\r\\n\n");
                i += 1;
            }
            b'\n' => out.push_str("\\n\n"),
            b'\\' => out.push_str("\\\\"),
            b @ 0x20..=0x7e => out.push(char::from(b)),
            b => out.push_str(&format!("\\x{b:02x}")),
        }
        i += 1;
    }
    out
}

/// Compares what `raw` received with `tests/wire/{name}.txt` (or writes it there when
/// `COMMBENCH_WIRE_UPDATE=1`).
fn check(name: &str, raw: &Raw) {
    let got = render(&raw.received);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/wire")
        .join(format!("{name}.txt"));
    if std::env::var_os("COMMBENCH_WIRE_UPDATE").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with COMMBENCH_WIRE_UPDATE=1 to capture it",
            path.display()
        )
    });
    if got != expected {
        let line = got
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| got.lines().count().min(expected.lines().count()));
        panic!(
            "{name}: the bytes on the wire changed (first difference on line {}):\n\
             --- expected ({})\n{}\n--- received\n{}",
            line + 1,
            path.display(),
            expected
                .lines()
                .skip(line)
                .take(6)
                .collect::<Vec<_>>()
                .join("\n"),
            got.lines()
                .skip(line)
                .take(6)
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
}

#[tokio::test]
async fn sse_bytes_are_unchanged() {
    let server = server().await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send(b"GET /sse/wire?after=1 HTTP/1.1\r\nHost: wire\r\nAccept: text/event-stream\r\n\r\n")
        .await;
    raw.until("id: 6\n").await;
    raw.until("\n\n").await;
    publish_live(&server).await;
    raw.until("\"data\":\"end\"}\n\n").await;
    raw.until("\r\n").await;
    check("sse", &raw);
}

/// The end of a stream: a heartbeat, then the server's shutdown ends the chunked body with its last
/// chunk and closes the connection.
#[tokio::test]
async fn sse_heartbeat_and_shutdown_bytes_are_unchanged() {
    let server = spawn_with(|c| c.heartbeat = Duration::from_millis(700)).await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send(b"GET /sse/wire HTTP/1.1\r\nHost: wire\r\n\r\n")
        .await;
    raw.until(": heartbeat\n\n\r\n").await;
    within("the shutdown", STEP, server.shutdown())
        .await
        .unwrap();
    raw.until_closed().await;
    check("sse-end", &raw);
}

/// An HTTP/1.0 client gets the stream without chunking, ended by the close.
#[tokio::test]
async fn sse_over_http_1_0_bytes_are_unchanged() {
    let server = server().await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send(b"GET /sse/wire?after=1 HTTP/1.0\r\nHost: wire\r\n\r\n")
        .await;
    raw.until("id: 6\n").await;
    publish_live(&server).await;
    raw.until("\"data\":\"end\"}\n\n").await;
    within("the shutdown", STEP, server.shutdown())
        .await
        .unwrap();
    raw.until_closed().await;
    check("sse-http10", &raw);
}

/// `HEAD` gets the stream's head and no body, and the connection takes the next request.
#[tokio::test]
async fn sse_head_bytes_are_unchanged() {
    let server = server().await;
    let mut raw = Raw::connect(server.addr).await;
    raw.send(b"HEAD /sse/wire HTTP/1.1\r\nHost: wire\r\n\r\n")
        .await;
    raw.until("\r\n\r\n").await;
    exchange(&mut raw, "/poll/wire?after=5").await;
    check("sse-head", &raw);
}

#[tokio::test]
async fn websocket_bytes_are_unchanged() {
    let server = server().await;
    let mut raw = Raw::ws_open(server.addr, "/ws", None).await;
    raw.ws_text(r#"{"type":"subscribe","topic":"wire","after":1,"joins":false}"#)
        .await;
    raw.until(r#""seq":6,"data":"backlog 6"}"#).await;
    raw.ws_text(r#"{"type":"shout"}"#).await;
    raw.until("malformed control message").await;
    raw.until("}").await;
    raw.ws_text(r#"{"type":"publish","topic":"wire","payload":"via the socket"}"#)
        .await;
    raw.until(r#""data":"via the socket"}"#).await;
    publish_live(&server).await;
    raw.until(r#""data":"end"}"#).await;
    // A binary message is refused with a close frame; the server lingers for the client's close.
    raw.ws_frame(0x2, b"{}").await;
    raw.until("send JSON text").await;
    raw.ws_close(1000).await;
    raw.until_closed().await;
    check("ws", &raw);
}

#[tokio::test]
async fn socketio_bytes_are_unchanged() {
    let server = server().await;
    let mut raw = Raw::ws_open(server.addr, "/socket.io/?EIO=4&transport=websocket", None).await;
    raw.until("\"maxPayload\":").await;
    raw.until("}").await;
    raw.ws_text("40").await;
    raw.until("40{\"sid\":\"").await;
    raw.until("}").await;
    raw.ws_text(r#"421["subscribe",{"topic":"wire","after":1}]"#)
        .await;
    raw.until(r#""seq":6,"data":"backlog 6"}]"#).await;
    raw.ws_text(r#"422["publish",{"topic":"wire","payload":"via the socket"}]"#)
        .await;
    raw.until(r#""data":"via the socket"}]"#).await;
    raw.ws_text("3").await;
    publish_live(&server).await;
    raw.until(r#""data":"end"}]"#).await;
    raw.ws_text("0{}").await;
    raw.until("open packet").await;
    raw.ws_close(1000).await;
    raw.until_closed().await;
    check("socketio", &raw);
}

const SUBSCRIPTION: &str = r#"subscription { events(topic: \"wire\", after: 1) { event { topic seq data dataB64 } gap { after oldest } } }"#;

/// A GraphQL socket speaking `protocol`, initialised and subscribed (with the protocol's `start`
/// message type) after seq 1, read up to the end of the backlog.
async fn graphql_subscribed(protocol: &'static str, start: &str) -> (ServerHandle, Raw) {
    let server = server().await;
    let mut raw = Raw::ws_open(server.addr, "/graphql/ws", Some(protocol)).await;
    raw.ws_text(r#"{"type":"connection_init"}"#).await;
    raw.until("connection_ack\"}").await;
    raw.ws_text(&format!(
        r#"{{"type":"{start}","id":"w1","payload":{{"query":"{SUBSCRIPTION}"}}}}"#
    ))
    .await;
    raw.until(r#""seq":6,"data":"backlog 6","dataB64":null},"gap":null}}}}"#)
        .await;
    (server, raw)
}

/// Publishes the live events and reads the subscription up to the last one.
async fn graphql_live(server: &ServerHandle, raw: &mut Raw) {
    publish_live(server).await;
    raw.until(r#""data":"end","dataB64":null},"gap":null}}}}"#)
        .await;
}

#[tokio::test]
async fn graphql_transport_ws_bytes_are_unchanged() {
    let (server, mut raw) = graphql_subscribed("graphql-transport-ws", "subscribe").await;
    raw.ws_text(r#"{"type":"ping","payload":{"n":1}}"#).await;
    raw.until(r#""type":"pong","payload":{"n":1}}"#).await;
    graphql_live(&server, &mut raw).await;
    raw.ws_text(r#"{"type":"complete","id":"w1"}"#).await;
    raw.ws_text(r#"{"type":"connection_init"}"#).await;
    raw.until("Too many initialisation requests").await;
    raw.ws_close(1000).await;
    raw.until_closed().await;
    check("graphql-transport-ws", &raw);
}

#[tokio::test]
async fn legacy_graphql_ws_bytes_are_unchanged() {
    let (server, mut raw) = graphql_subscribed("graphql-ws", "start").await;
    graphql_live(&server, &mut raw).await;
    raw.ws_text(r#"{"type":"stop","id":"w1"}"#).await;
    raw.until(r#"{"type":"complete","id":"w1"}"#).await;
    raw.ws_close(1000).await;
    raw.until_closed().await;
    check("graphql-ws", &raw);
}

/// An HTTP/1.1 request on the raw keep-alive connection, read until its `content-length` body.
async fn exchange(raw: &mut Raw, path: &str) {
    raw.send(format!("GET {path} HTTP/1.1\r\nHost: wire\r\n\r\n").as_bytes())
        .await;
    raw.until("content-length: ").await;
    let start = raw.seen;
    raw.until("\r\n").await;
    let length: usize = std::str::from_utf8(&raw.received[start..raw.seen - 2])
        .unwrap()
        .parse()
        .unwrap();
    raw.until("\r\n\r\n").await;
    let body_end = raw.seen + length;
    within("the body", STEP, async {
        let mut chunk = [0u8; 4096];
        while raw.received.len() < body_end {
            let n = raw.stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed inside a body");
            raw.received.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    raw.seen = body_end;
}

#[tokio::test]
async fn long_poll_bytes_are_unchanged() {
    let server = server().await;
    let mut raw = Raw::connect(server.addr).await;
    exchange(&mut raw, "/longpoll/wire?after=1&timeout_ms=5000").await;
    // A held poll, answered by the next publish.
    raw.send(b"GET /longpoll/wire?after=6&timeout_ms=10000 HTTP/1.1\r\nHost: wire\r\n\r\n")
        .await;
    wait_until("the poll to be held", STEP, || {
        metric(&server, "commbench_active{pattern=\"long_poll\"}") == 1
    })
    .await;
    publish(&client(), &server.url(), TOPIC, "he said \"hi\"").await;
    raw.until("\"data\":\"he said \\\"hi\\\"\"}]}").await;
    // A poll that times out empty, and one with a cursor ahead of the head.
    exchange(&mut raw, "/longpoll/wire?after=7&timeout_ms=10").await;
    exchange(&mut raw, "/longpoll/wire?after=99&timeout_ms=10").await;
    check("long-poll", &raw);
}

#[tokio::test]
async fn short_poll_bytes_are_unchanged() {
    let server = server().await;
    publish_live(&server).await;
    let mut raw = Raw::connect(server.addr).await;
    exchange(&mut raw, "/poll/wire?after=1").await;
    exchange(&mut raw, "/poll/wire?after=10").await;
    exchange(&mut raw, "/poll/wire?after=0&limit=2").await;
    exchange(&mut raw, "/poll/wire?after=99").await;
    check("short-poll", &raw);
}
