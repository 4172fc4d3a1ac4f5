//! Client helpers shared by the criterion benches: an HTTP client tuned for loopback, a publish
//! helper, an SSE frame reader (the shared `event_stream` parser over a `reqwest` byte stream),
//! WebSocket, GraphQL and Socket.IO subscribe helpers; plus
//! [`register_report_font`], which every bench binary calls before criterion draws its report.
//!
//! Every helper returns [`Result`] with a boxed error so a bench can `expect` with context; none of
//! them retries or hides a failure, since a silently degraded client would skew the numbers.

use std::{net::SocketAddr, pin::Pin};

use bytes::Bytes;
use commbench_servers::{
    event_stream::{Frame, Parser},
    socketio_wire,
};
use futures_util::{SinkExt, Stream, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream, WebSocketStream};

/// DejaVu Sans, the font the load generator's charts embed (one copy in the repository).
static REPORT_FONT: &[u8] = include_bytes!("../../loadgen/assets/DejaVuSans.ttf");

/// Registers the font criterion's HTML report draws its charts with.
///
/// The workspace builds `plotters` with `ab_glyph` (the load generator's charts need it), and
/// with `ab_glyph` plotters knows only the fonts registered by name: without this criterion panics
/// with `FontUnavailable` while drawing its first chart. Idempotent.
pub fn register_report_font() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        use plotters::style::FontStyle;
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // criterion draws every label in `FontFamily::SansSerif`.
            plotters::style::register_font("sans-serif", style, REPORT_FONT)
                .unwrap_or_else(|_| panic!("the embedded report font does not parse"));
        }
    });
}

/// Any helper error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// An HTTP/1.1 client for loopback benches: no proxy (an environment proxy must not intercept
/// `127.0.0.1`), Nagle off, and an unbounded idle pool so every connection stays kept-alive.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .build()
        .unwrap_or_else(|e| panic!("building the HTTP client: {e}"))
}

/// Sends a request and returns the body of a 2xx answer; any other status is an error.
pub async fn body_of(request: reqwest::RequestBuilder) -> Result<Bytes> {
    let response = request.send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(body)
}

/// Publishes with `POST {base}/publish/{topic}` over the client's kept-alive connections.
#[derive(Clone)]
pub struct Publisher {
    client: reqwest::Client,
    base: String,
}

impl Publisher {
    /// `base` is `http://host:port` without a trailing slash (see `ServerHandle::url`).
    pub fn new(client: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            client,
            base: base.into(),
        }
    }

    /// Publishes `payload` to `topic` and returns the sequence number the server assigned.
    pub async fn publish(&self, topic: &str, payload: Bytes) -> Result<u64> {
        let url = format!("{}/publish/{topic}", self.base);
        let body = body_of(self.client.post(url).body(payload)).await?;
        json_u64(&body, "seq")
    }
}

/// Reads the unsigned integer field `field` of a JSON object.
pub fn json_u64(json: &[u8], field: &str) -> Result<u64> {
    let value: serde_json::Value = serde_json::from_slice(json)?;
    value[field]
        .as_u64()
        .ok_or_else(|| format!("no integer `{field}` in {}", String::from_utf8_lossy(json)).into())
}

/// The sequence numbers in a poll answer (`{"events":[{"seq":…},…],…}`), oldest first.
pub fn poll_seqs(body: &[u8]) -> Result<Vec<u64>> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let events = value["events"]
        .as_array()
        .ok_or_else(|| format!("no `events` in {}", String::from_utf8_lossy(body)))?;
    events
        .iter()
        .map(|e| {
            e["seq"]
                .as_u64()
                .ok_or_else(|| BoxError::from(format!("event without seq: {e}")))
        })
        .collect()
}

/// The `id:` of a frame as a sequence number, as commbench's server sends it.
pub fn frame_seq(frame: &Frame) -> Option<u64> {
    frame.id.as_deref().and_then(|id| id.parse().ok())
}

/// Largest SSE frame a bench accepts.
const MAX_SSE_FRAME: usize = 4 << 20;

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open SSE response read event by event.
pub struct SseReader {
    stream: ByteStream,
    parser: Parser,
}

impl SseReader {
    /// Opens `GET {base}/sse/{topic}` (live only: events published from now on) and waits for the
    /// server's `event: subscribed` frame, after which every publish is guaranteed to arrive.
    pub async fn subscribe(client: &reqwest::Client, base: &str, topic: &str) -> Result<Self> {
        let response = client.get(format!("{base}/sse/{topic}")).send().await?;
        if !response.status().is_success() {
            return Err(format!("SSE subscribe answered HTTP {}", response.status()).into());
        }
        let mut reader = Self {
            stream: Box::pin(response.bytes_stream()),
            parser: Parser::new(MAX_SSE_FRAME),
        };
        let first = reader.next_frame().await?;
        if first.dispatched_type() != Some("subscribed") {
            return Err(format!("expected `event: subscribed`, got {first:?}").into());
        }
        Ok(reader)
    }

    /// The next frame a browser would dispatch (heartbeats are skipped); an error when the stream
    /// ends.
    pub async fn next_frame(&mut self) -> Result<Frame> {
        loop {
            while let Some(frame) = self.parser.next_frame() {
                if frame.dispatched_type().is_some() {
                    return Ok(frame);
                }
            }
            match self.stream.next().await {
                Some(chunk) => self.parser.push(&chunk?)?,
                None => return Err("the SSE stream ended".into()),
            }
        }
    }

    /// The sequence number of the next event frame; any other frame (gap, lagged) is an error.
    pub async fn next_event(&mut self) -> Result<u64> {
        let frame = self.next_frame().await?;
        match (frame.dispatched_type(), frame_seq(&frame)) {
            (Some("message"), Some(seq)) => Ok(seq),
            _ => Err(format!("expected an event frame, got {frame:?}").into()),
        }
    }
}

/// A client WebSocket over plain TCP.
pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `ws://{addr}/ws` (Nagle off), subscribes to `topic` live without join notices and
/// waits for the `subscribed` acknowledgement, after which every publish is guaranteed to arrive.
pub async fn ws_subscribe(addr: SocketAddr, topic: &str) -> Result<WsStream> {
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let control = serde_json::json!({ "type": "subscribe", "topic": topic, "joins": false });
    ws.send(Message::text(control.to_string())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let reply: serde_json::Value = serde_json::from_str(&text)?;
                if reply["type"] == "subscribed" {
                    return Ok(ws);
                }
                return Err(format!("expected a `subscribed` reply, got {text}").into());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => return Err(format!("unexpected message {other:?}").into()),
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the WebSocket closed before the subscribe reply".into()),
        }
    }
}

/// The sequence number of the next event (a binary frame holding the event JSON); pings are
/// skipped (tungstenite answers them), a text frame (error, gap) or the end of the socket is an error.
pub async fn ws_next_event(ws: &mut WsStream) -> Result<u64> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(json))) => return json_u64(&json, "seq"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => return Err(format!("expected an event, got {other:?}").into()),
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the WebSocket closed".into()),
        }
    }
}

/// The GraphQL subscription the benches open: the event's fields every other pattern sends too.
const GRAPHQL_FEED: &str = "subscription($topic: String!, $after: Int) { \
    events(topic: $topic, after: $after) { event { topic seq data } gap { after oldest } } }";

/// Connects to `ws://{addr}/graphql/ws` with the `graphql-transport-ws` subprotocol (Nagle off),
/// completes the `connection_init` handshake and subscribes to `topic` after the cursor `after`.
///
/// The protocol has no subscribe acknowledgement: the cursor is what guarantees that every event
/// published after `after` arrives, even before the subscription is live.
pub async fn graphql_subscribe(addr: SocketAddr, topic: &str, after: u64) -> Result<WsStream> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("ws://{addr}/graphql/ws").into_client_request()?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
    let init = serde_json::json!({ "type": "connection_init", "payload": {} });
    ws.send(Message::text(init.to_string())).await?;
    let ack = graphql_ws_message(&mut ws).await?;
    if ack["type"] != "connection_ack" {
        return Err(format!("expected `connection_ack`, got {ack}").into());
    }
    let subscribe = serde_json::json!({
        "id": "1",
        "type": "subscribe",
        "payload": { "query": GRAPHQL_FEED, "variables": { "topic": topic, "after": after } },
    });
    ws.send(Message::text(subscribe.to_string())).await?;
    Ok(ws)
}

/// The sequence number of the next event on a [`graphql_subscribe`] socket; a gap, an error, the
/// end of the subscription or of the socket is an error.
pub async fn graphql_next_event(ws: &mut WsStream) -> Result<u64> {
    let message = graphql_ws_message(ws).await?;
    if message["type"] != "next" {
        return Err(format!("expected a `next` message, got {message}").into());
    }
    message["payload"]["data"]["events"]["event"]["seq"]
        .as_u64()
        .ok_or_else(|| format!("expected an event, got {message}").into())
}

/// The next graphql-transport-ws message (JSON text), skipping WebSocket pings.
async fn graphql_ws_message(ws: &mut WsStream) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(&next_text(ws).await?)?)
}

/// Connects to `ws://{addr}/socket.io/` (Engine.IO v4 over WebSocket, Nagle off), connects to the
/// main namespace and subscribes to `topic` live, waiting for the ack, after which every publish is
/// guaranteed to arrive.
pub async fn socketio_subscribe(addr: SocketAddr, topic: &str) -> Result<WsStream> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let open = next_text(&mut ws).await?;
    if !open.starts_with('0') {
        return Err(format!("expected the Engine.IO open packet, got {open}").into());
    }
    ws.send(Message::text("40")).await?;
    let connected = next_text(&mut ws).await?;
    if !connected.starts_with("40") {
        return Err(format!("expected CONNECT, got {connected}").into());
    }
    let arg = serde_json::json!({ "topic": topic }).to_string();
    let subscribe =
        socketio_wire::event(socketio_wire::MAIN_NAMESPACE, Some(1), "subscribe", &[&arg]);
    ws.send(Message::text(subscribe)).await?;
    let ack = next_text(&mut ws).await?;
    if !ack.starts_with("431[") {
        return Err(format!("expected the subscribe ack, got {ack}").into());
    }
    Ok(ws)
}

/// The sequence number of the next `event` on a [`socketio_subscribe`] socket; anything else
/// (a gap, an error, the end of the socket) is an error.
pub async fn socketio_next_event(ws: &mut WsStream) -> Result<u64> {
    let text = next_text(ws).await?;
    let Ok(socketio_wire::EnginePacket::Message(data)) = socketio_wire::decode_engine(&text) else {
        return Err(format!("expected an event, got {text}").into());
    };
    let packet = socketio_wire::decode_packet(data)?;
    match (packet.event_name().as_deref(), packet.event_args().first()) {
        (Some("event"), Some(event)) => json_u64(event.get().as_bytes(), "seq"),
        _ => Err(format!("expected an event, got {text}").into()),
    }
}

/// The next text frame (a graphql-transport-ws message, an Engine.IO packet), skipping WebSocket
/// pings; any other frame or the end of the socket is an error.
async fn next_text(ws: &mut WsStream) -> Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(other)) => return Err(format!("unexpected message {other:?}").into()),
            Some(Err(e)) => return Err(e.into()),
            None => return Err("the WebSocket closed".into()),
        }
    }
}

/// The `data` of a GraphQL answer; an answer carrying `errors` is an error.
pub fn graphql_data(body: &[u8]) -> Result<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_slice(body)?;
    if let Some(errors) = value.get("errors") {
        return Err(format!("GraphQL errors: {errors}").into());
    }
    Ok(value["data"].take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_answers_and_events_parse() {
        let body =
            br#"{"topic":"t","head":3,"more":false,"gap":null,"events":[{"seq":2},{"seq":3}]}"#;
        assert_eq!(poll_seqs(body).ok(), Some(vec![2, 3]));
        assert_eq!(json_u64(br#"{"topic":"t","seq":9}"#, "seq").ok(), Some(9));
        assert!(json_u64(b"{}", "seq").is_err());
    }

    #[test]
    fn graphql_answers_parse() {
        let data = graphql_data(br#"{"data":{"events":{"head":3}}}"#).ok();
        assert_eq!(data.map(|d| d["events"]["head"].clone()), Some(3.into()));
        assert!(graphql_data(br#"{"data":null,"errors":[{"message":"no"}]}"#).is_err());
    }
}
