//! Shared helpers for the integration tests: a server on an ephemeral loopback port, a small HTTP
//! client wrapper, an SSE frame reader (the shared `event_stream` parser over a reqwest byte
//! stream) and WebSocket helpers.
//!
//! Every helper that waits is bounded: a stuck server fails the test instead of hanging it.

#![allow(dead_code, clippy::unwrap_used)]

pub mod child;
pub mod gql_ws;
pub mod raw_http;

use std::{future::Future, time::Duration};

use bytes::Bytes;
use commbench_servers::{
    event_stream::{Frame, Parser},
    ServerConfig, ServerHandle,
};
use futures_util::{stream::BoxStream, SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    tungstenite::{self, Message},
    MaybeTlsStream, WebSocketStream,
};

/// Bound for one ordinary step (a request, a frame, a message). Generous: the machine is noisy.
pub const STEP: Duration = Duration::from_secs(10);

/// The directory of the reference clients (npm packages that scripts/install-test-deps.sh installs
/// into servers/tests/js), once `package` is found there; `None`, said on stderr, where node itself
/// is missing, so the caller skips. A missing package with node present fails: the install step
/// was skipped.
pub fn reference_clients(package: &str) -> Option<&'static str> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js");
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: node is not installed (scripts/install-test-deps.sh installs it)");
        return None;
    }
    assert!(
        std::path::Path::new(dir)
            .join("node_modules")
            .join(package)
            .exists(),
        "servers/tests/js/node_modules/{package} is missing: run scripts/install-test-deps.sh"
    );
    Some(dir)
}

/// Runs `fut`, failing the test with `what` if it takes longer than `limit`.
pub async fn within<F: Future>(what: &str, limit: Duration, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Polls `condition` every 20 ms until it holds; fails the test after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`wait_until`] but reports the outcome instead of failing.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The default configuration on an ephemeral loopback port.
pub fn test_config() -> ServerConfig {
    ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    }
}

/// Spawns a server with the default configuration changed by `tweak`.
pub async fn spawn_with(tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut config = test_config();
    tweak(&mut config);
    config.validate().unwrap();
    within("the server to bind", STEP, ServerHandle::spawn(config))
        .await
        .unwrap()
}

/// Spawns a server with the default configuration.
pub async fn spawn_default() -> ServerHandle {
    spawn_with(|_| {}).await
}

/// An HTTP client that never goes through a proxy (the tests only talk to 127.0.0.1).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A complete HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): status {} body {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_owned())
    }

    /// Asserts the documented error shape: `status`, a JSON content type and
    /// `{"error": error, "detail": "<non-empty>"}`.
    pub fn assert_error(&self, status: u16, error: &str) -> Value {
        assert_eq!(
            self.status,
            status,
            "expected {status} {error}, got {} {:?}",
            self.status,
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error content type is {content_type:?}; body {:?}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["error"], error, "error body {body}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "error without a detail: {body}");
        body
    }
}

/// Sends one request and reads the whole answer, bounded by [`STEP`].
pub async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> Reply {
    let what = format!("{method} {url}");
    within(&what, STEP, async {
        let mut builder = client.request(method.clone(), url);
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let response = builder
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("reading the body of {method} {url} failed: {e}"));
        Reply {
            status,
            headers,
            body,
        }
    })
    .await
}

pub async fn get(client: &reqwest::Client, url: &str) -> Reply {
    request(client, reqwest::Method::GET, url, None).await
}

pub async fn post(client: &reqwest::Client, url: &str, body: impl Into<Vec<u8>>) -> Reply {
    request(client, reqwest::Method::POST, url, Some(body.into())).await
}

/// Publishes `n` one-byte events to `topic` in-process without yielding, far faster than a socket
/// carries them: a subscriber falls behind.
pub async fn publish_burst(server: &ServerHandle, topic: &str, n: usize) {
    let topic = commbench_servers::topic::TopicName::parse(topic).unwrap();
    for _ in 0..n {
        server
            .state
            .publish(&topic, Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
}

/// `POST /publish/{topic}`; asserts success and returns the assigned sequence number.
pub async fn publish(
    client: &reqwest::Client,
    base: &str,
    topic: &str,
    payload: impl Into<Vec<u8>>,
) -> u64 {
    let reply = post(client, &format!("{base}/publish/{topic}"), payload).await;
    assert_eq!(reply.status, 200, "publish failed: {}", reply.text());
    let body = reply.json();
    assert_eq!(body["topic"], topic, "publish answer {body}");
    body["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("publish answer without seq: {body}"))
}

/// `GET /poll/{topic}?after=…`; asserts 200 and returns the JSON answer.
pub async fn poll(client: &reqwest::Client, base: &str, topic: &str, query: &str) -> Value {
    let reply = get(client, &format!("{base}/poll/{topic}?{query}")).await;
    assert_eq!(reply.status, 200, "poll failed: {}", reply.text());
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    reply.json()
}

/// Sequence numbers of the events in a poll answer.
pub fn seqs(batch: &Value) -> Vec<u64> {
    batch["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events array in {batch}"))
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Server-sent events
// ---------------------------------------------------------------------------------------------

/// One SSE frame (the lines up to a blank line), as the shared parser reads it.
#[derive(Debug, Clone)]
pub struct SseFrame(pub Frame);

impl std::ops::Deref for SseFrame {
    type Target = Frame;
    fn deref(&self) -> &Frame {
        &self.0
    }
}

impl SseFrame {
    /// A frame made only of comments (the server's `: heartbeat`).
    pub fn is_heartbeat(&self) -> bool {
        self.id.is_none()
            && self.event.is_none()
            && self.data.is_none()
            && self.comments.iter().any(|c| c.trim() == "heartbeat")
    }

    pub fn json(&self) -> Value {
        let data = self
            .data
            .as_deref()
            .unwrap_or_else(|| panic!("frame without data: {self:?}"));
        serde_json::from_str(data)
            .unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {self:?}"))
    }
}

/// Reads SSE frames from a streaming reqwest response.
pub struct SseStream {
    stream: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: Parser,
    ended: bool,
}

/// Largest frame the tests accept from the server.
const MAX_SSE_FRAME: usize = 16 << 20;

/// Opens `GET {url}` with extra headers; returns the answer status and, on 200, the stream.
pub async fn sse_open(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<SseStream, Reply> {
    let response = within(&format!("SSE response head of {url}"), STEP, async {
        let mut builder = client.get(url).header("accept", "text/event-stream");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.send().await.unwrap()
    })
    .await;
    let status = response.status().as_u16();
    if status != 200 {
        let headers = response.headers().clone();
        let body = within("SSE error body", STEP, response.bytes())
            .await
            .unwrap();
        return Err(Reply {
            status,
            headers,
            body,
        });
    }
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("text/event-stream"),
        "SSE content type is {content_type:?}"
    );
    Ok(SseStream {
        stream: response.bytes_stream().boxed(),
        parser: Parser::new(MAX_SSE_FRAME),
        ended: false,
    })
}

/// Opens an SSE stream that must succeed and reads its `subscribed` frame; returns both.
pub async fn sse_subscribe(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (SseStream, Value) {
    let mut stream = match sse_open(client, url, headers).await {
        Ok(stream) => stream,
        Err(reply) => panic!("SSE {url} refused: {} {}", reply.status, reply.text()),
    };
    let hello = stream.expect_subscribed().await;
    (stream, hello)
}

impl SseStream {
    /// The next frame, or `None` once the server ended the stream. Fails after [`STEP`].
    pub async fn next_frame(&mut self) -> Option<SseFrame> {
        self.next_frame_within(STEP).await
    }

    pub async fn next_frame_within(&mut self, limit: Duration) -> Option<SseFrame> {
        within("the next SSE frame", limit, self.read_frame()).await
    }

    async fn read_frame(&mut self) -> Option<SseFrame> {
        loop {
            if let Some(frame) = self.parser.next_frame() {
                assert!(
                    frame.ignored.is_empty(),
                    "unexpected SSE fields {:?} in frame {frame:?}",
                    frame.ignored
                );
                assert!(
                    !frame.data().contains('\u{fffd}'),
                    "SSE frame is not UTF-8: {frame:?}"
                );
                return Some(SseFrame(frame));
            }
            if self.ended {
                assert!(!self.parser.in_frame(), "SSE stream ended inside a frame");
                return None;
            }
            match self.stream.next().await {
                Some(Ok(chunk)) => self
                    .parser
                    .push(&chunk)
                    .unwrap_or_else(|e| panic!("SSE stream: {e}")),
                // An abrupt end (reset) counts as the end of the stream; the caller checks what it got.
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// The next frame that is not a heartbeat (`None` at the end of the stream).
    pub async fn next_non_heartbeat(&mut self) -> Option<SseFrame> {
        loop {
            match self.next_frame().await {
                Some(frame) if frame.is_heartbeat() => continue,
                other => return other,
            }
        }
    }

    /// Reads the opening frame and checks its shape; returns its data.
    pub async fn expect_subscribed(&mut self) -> Value {
        let frame = self
            .next_frame()
            .await
            .expect("SSE stream ended before the subscribed frame");
        assert_eq!(frame.event.as_deref(), Some("subscribed"), "{frame:?}");
        assert_eq!(frame.retry, Some(1000), "{frame:?}");
        frame.json()
    }

    /// The next event frame (skipping heartbeats): checks `id` matches the JSON `seq`.
    pub async fn next_event(&mut self) -> Value {
        let frame = self
            .next_non_heartbeat()
            .await
            .expect("SSE stream ended while an event was expected");
        assert!(frame.event.is_none(), "expected an event, got {frame:?}");
        let event = frame.json();
        let id = frame
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("no id: {frame:?}"));
        assert_eq!(
            id,
            event["seq"].as_u64().unwrap().to_string(),
            "SSE id differs from the event seq: {frame:?}"
        );
        event
    }

    /// Reads until the server ends the stream; returns the frames seen on the way.
    pub async fn read_to_end(&mut self, limit: Duration) -> Vec<SseFrame> {
        within("the end of the SSE stream", limit, async {
            let mut frames = Vec::new();
            while let Some(frame) = self.read_frame().await {
                frames.push(frame);
            }
            frames
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn ws_url(server: &ServerHandle) -> String {
    format!("ws://{}/ws", server.addr)
}

pub async fn ws_connect(server: &ServerHandle) -> Ws {
    ws_connect_url(&ws_url(server)).await
}

/// Connects to a WebSocket URL (`ws://host:port/ws`), e.g. of a server in another process.
pub async fn ws_connect_url(url: &str) -> Ws {
    let (ws, response) = within(
        "the WebSocket handshake",
        STEP,
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap();
    assert_eq!(response.status().as_u16(), 101);
    ws
}

pub async fn ws_send(ws: &mut Ws, value: Value) {
    within(
        "a WebSocket send",
        STEP,
        ws.send(Message::text(value.to_string())),
    )
    .await
    .unwrap();
}

/// The next message other than ping/pong, or `None` when the connection ended (with or without error).
pub async fn ws_next(ws: &mut Ws) -> Option<Message> {
    within("the next WebSocket message", STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => return Some(message),
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
}

/// The next text message, parsed; join notices are skipped when `skip_joins`. Fails on anything else.
pub async fn ws_text_inner(ws: &mut Ws, skip_joins: bool) -> Value {
    loop {
        match ws_next(ws).await {
            Some(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("text message is not JSON ({e}): {text}"));
                if skip_joins && value["type"] == "join" {
                    continue;
                }
                return value;
            }
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next text message (control reply, notice or error), join notices skipped.
pub async fn ws_text(ws: &mut Ws) -> Value {
    ws_text_inner(ws, true).await
}

/// The next event (a binary frame holding the event JSON); join notices are skipped.
pub async fn ws_event(ws: &mut Ws) -> Value {
    loop {
        match ws_next(ws).await {
            Some(Message::Binary(bytes)) => {
                return serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    panic!(
                        "binary frame is not event JSON ({e}): {:?}",
                        String::from_utf8_lossy(&bytes)
                    )
                })
            }
            Some(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(value["type"], "join", "expected an event, got {value}");
            }
            other => panic!("expected a binary event frame, got {other:?}"),
        }
    }
}

/// Subscribes and returns the `subscribed` acknowledgement (checked).
pub async fn ws_subscribe(ws: &mut Ws, topic: &str, after: Option<u64>) -> Value {
    let mut message = serde_json::json!({ "type": "subscribe", "topic": topic });
    if let Some(after) = after {
        message["after"] = after.into();
    }
    ws_send(ws, message).await;
    let ack = ws_text(ws).await;
    assert_eq!(ack["type"], "subscribed", "subscribe answer {ack}");
    assert_eq!(ack["topic"], topic, "subscribe answer {ack}");
    ack
}

/// Reads until the server's close frame and returns its code; fails if the connection ends without
/// one or anything but events and notices arrives first.
pub async fn ws_close_code(ws: &mut Ws) -> u16 {
    within("a WebSocket close frame", STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    })
    .await
}

/// A raw WebSocket text frame with arbitrary (possibly invalid UTF-8) bytes.
pub fn raw_text_frame(bytes: &'static [u8]) -> Message {
    use tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    Message::Frame(Frame::message(
        Bytes::from_static(bytes),
        OpCode::Data(Data::Text),
        true,
    ))
}

/// A private `redis-server` for one test, durable (append-only, fsync always) when it will be killed
/// and restarted; panics with the install hint when `redis-server` is missing.
pub async fn start_redis(durable: bool) -> commbench_servers::redis::server::RedisServer {
    use commbench_servers::redis::server::{RedisOptions, RedisServer};
    RedisServer::start(RedisOptions { durable })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A server on `redis` (its bus, and its queue), with `tweak` applied to the test configuration.
pub async fn redis_instance(
    redis: &commbench_servers::redis::server::RedisServer,
    tweak: impl FnOnce(&mut ServerConfig),
) -> ServerHandle {
    let mut config = test_config();
    config.bus = Some(redis.url().to_owned());
    tweak(&mut config);
    config.validate().unwrap();
    within("a Redis-backed server", STEP, ServerHandle::spawn(config))
        .await
        .unwrap()
}

/// The value of one line of the server's metrics (`name` includes any labels), or 0 when absent.
pub fn metric(server: &ServerHandle, name: &str) -> i64 {
    let text = server.state.metrics.render();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Two servers on `redis` and, on the second, a live SSE stream and a WebSocket subscription of topic
/// `t` from its start: what the broker-failure tests watch while the first one publishes.
pub async fn redis_pair_watching_t(
    redis: &commbench_servers::redis::server::RedisServer,
) -> (ServerHandle, ServerHandle, SseStream, Ws) {
    let a = redis_instance(redis, |_| {}).await;
    let b = redis_instance(redis, |_| {}).await;
    let (sse, _) = sse_subscribe(&client(), &format!("{}/sse/t?after=0", b.url()), &[]).await;
    let mut ws = ws_connect(&b).await;
    ws_subscribe(&mut ws, "t", Some(0)).await;
    (a, b, sse, ws)
}
