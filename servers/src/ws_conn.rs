//! The WebSocket connection every route shares (`/ws`, `/socket.io/`, `/graphql/ws`): the upgrade,
//! checked and answered exactly as axum's extractor does it, and one connection type that reads
//! through tungstenite (which answers pings and close frames itself) but writes data frames itself:
//! an event's frame is built once and shared by every subscriber ([`frame`]), and everything a
//! session queued is written in one vectored write, bounded by `--send-timeout`.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{
        ws::rejection::{
            ConnectionNotUpgradable, InvalidConnectionHeader, InvalidUpgradeHeader,
            InvalidWebSocketVersionHeader, MethodNotGet, WebSocketKeyHeaderMissing,
            WebSocketUpgradeRejection,
        },
        FromRequestParts,
    },
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    response::Response,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::{
    tungstenite::{
        self,
        handshake::derive_accept_key,
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Message,
    },
    WebSocketStream,
};

use crate::{
    app::AppState,
    metrics::{Metrics, PatternKind},
    wake_flag::WakeFlag,
};

/// Bytes tungstenite reads at once. Client messages are control messages of a few dozen bytes;
/// larger ones still arrive whole (the buffer grows for them), but an idle socket holds only this.
const READ_CHUNK: usize = 512;
/// How long a close frame may take to go out, and how long a closed socket keeps reading for the
/// client's answering close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// WebSocket opcodes of the frames the server writes itself.
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
/// An empty ping: the server's heartbeat.
pub const PING_FRAME: Bytes = Bytes::from_static(&[0x89, 0]);

/// A complete unmasked server frame (FIN set) around `payload`.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    frame_of(opcode, &[payload])
}

/// [`frame`] around a payload made of `parts`, copied once, straight into the frame.
pub fn frame_of(opcode: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|part| part.len()).sum();
    let mut out = BytesMut::with_capacity(len + 10);
    out.put_u8(0x80 | opcode);
    match len {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    for part in parts {
        out.put_slice(part);
    }
    out.freeze()
}

/// An upgrade request, checked as axum's `WebSocketUpgrade` checks it (same rejections).
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
    /// The subprotocols the client offered, in its order.
    offered: Vec<HeaderValue>,
    protocol: Option<HeaderValue>,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = WebSocketUpgradeRejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(MethodNotGet::default().into());
        }
        if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(InvalidConnectionHeader::default().into());
        }
        if !header_eq(&parts.headers, header::UPGRADE, "websocket") {
            return Err(InvalidUpgradeHeader::default().into());
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or(WebSocketKeyHeaderMissing::default())?
            .clone();
        if !header_eq(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(InvalidWebSocketVersionHeader::default().into());
        }
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or(ConnectionNotUpgradable::default())?;
        let offered = parts
            .headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .filter_map(|protocol| HeaderValue::from_bytes(protocol.trim_ascii()).ok())
            .collect();
        Ok(Self {
            key,
            on_upgrade,
            offered,
            protocol: None,
        })
    }
}

fn header_eq(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .is_some_and(|header| header.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

fn header_contains(headers: &HeaderMap, key: HeaderName, value: &str) -> bool {
    headers
        .get(&key)
        .and_then(|header| std::str::from_utf8(header.as_bytes()).ok())
        .is_some_and(|header| header.to_ascii_lowercase().contains(value))
}

/// What a connection needs from the server: its bounds and where it counts.
#[derive(Clone)]
pub struct Limits {
    /// Largest message (and frame) a client may send: beyond it, close 1009.
    pub max_message: usize,
    pub send_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Whose lagging clients a stalled write counts.
    pub pattern: PatternKind,
}

impl Limits {
    /// The server's `--max-body` and `--send-timeout`, counted under `pattern`.
    pub fn of(state: &AppState, pattern: PatternKind) -> Self {
        Self {
            max_message: state.config.max_body,
            send_timeout: state.config.send_timeout,
            metrics: state.metrics.clone(),
            pattern,
        }
    }
}

impl Upgrade {
    /// Chooses the first of `supported` (the server's order of preference) that the client offered.
    pub fn protocols(mut self, supported: &[&'static str]) -> Self {
        self.protocol = supported
            .iter()
            .find(|protocol| {
                self.offered
                    .iter()
                    .any(|o| o.as_bytes() == protocol.as_bytes())
            })
            .map(|protocol| HeaderValue::from_static(protocol));
        self
    }

    pub fn selected_protocol(&self) -> Option<&HeaderValue> {
        self.protocol.as_ref()
    }

    /// Answers 101 (the headers axum sends) and runs `session` on the connection once hyper hands
    /// the socket over.
    pub fn on_upgrade<F, Fut>(self, limits: Limits, session: F) -> Response
    where
        F: FnOnce(WsConn) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            // A failed upgrade (the client went away first) has nobody to tell.
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let config = WebSocketConfig::default()
                .read_buffer_size(READ_CHUNK)
                // tungstenite writes only close frames and pongs, each at once.
                .write_buffer_size(0)
                .max_message_size(Some(limits.max_message))
                .max_frame_size(Some(limits.max_message));
            let io = Io {
                inner: TokioIo::new(upgraded),
                unflushed: false,
            };
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
            session(WsConn {
                socket,
                reads: WakeFlag::default(),
                queued: Vec::new(),
                limits,
                open: None,
            })
            .await;
        });
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(self.key.as_bytes())) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = self.protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}

/// The upgraded socket under tungstenite. It remembers whether tungstenite's last write was left
/// unfinished (a pong or close frame the socket had no room for), so the connection's own frames
/// never cut into one.
struct Io {
    inner: TokioIo<hyper::upgrade::Upgraded>,
    unflushed: bool,
}

impl AsyncRead for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // tungstenite always offers everything it holds, so anything less leaves it holding some.
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.unflushed = !matches!(polled, Poll::Ready(Ok(n)) if n == buf.len());
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why queued frames could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client is gone (or the socket failed).
    Gone,
    /// The client did not read for `--send-timeout`: a lagging client.
    Stalled,
}

/// One upgraded WebSocket connection.
pub struct WsConn {
    socket: WebSocketStream<Io>,
    /// Whether the client's side woke the session since it was last found waiting.
    reads: WakeFlag,
    /// Frames to write, in order: written together by [`WsConn::flush`].
    queued: Vec<Bytes>,
    limits: Limits,
    /// When set, a stalled write counts as a lagging subscriber only while this is above zero.
    open: Option<Arc<AtomicUsize>>,
}

impl WsConn {
    /// Counts a stalled client as lagging only while `open` (its subscriptions) is above zero: a
    /// lag that ended its subscriptions was counted where they were cut off.
    pub fn count_stalls_while(&mut self, open: Arc<AtomicUsize>) {
        self.open = Some(open);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.limits.metrics
    }

    pub fn max_message(&self) -> usize {
        self.limits.max_message
    }

    /// The next message from the client; pings and the close handshake are answered by
    /// tungstenite. Cancel-safe. tungstenite is polled only when the socket woke the session (or
    /// last gave a message), not on the wake-ups a subscription's events cause.
    pub async fn next(&mut self) -> Option<Result<Message, tungstenite::Error>> {
        let Self { socket, reads, .. } = self;
        std::future::poll_fn(|cx| reads.poll(cx, |cx| socket.poll_next_unpin(cx))).await
    }

    /// Queues a complete frame (an event's shared frame, see [`frame`]).
    pub fn queue(&mut self, frame: Bytes) {
        self.queued.push(frame);
    }

    /// Queues a text message.
    pub fn queue_text(&mut self, text: impl AsRef<[u8]>) {
        self.queued.push(frame(TEXT, text.as_ref()));
    }

    pub fn has_queued(&self) -> bool {
        !self.queued.is_empty()
    }

    /// Writes everything queued, in as few writes as the socket allows, waiting for the client at
    /// most `--send-timeout`; a client that stalls that long is counted as lagging.
    pub async fn flush(&mut self) -> Result<(), SendError> {
        let flushed = self.write_queued().await;
        if flushed == Err(SendError::Stalled)
            && self.open.as_ref().is_none_or(|open| open.load(Relaxed) > 0)
        {
            self.limits.metrics.lagged_disconnect(self.limits.pattern);
        }
        flushed
    }

    async fn write_queued(&mut self) -> Result<(), SendError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let send_timeout = self.limits.send_timeout;
        let written = tokio::time::timeout(send_timeout, async {
            if self.socket.get_ref().unflushed {
                // Finish tungstenite's pong or close frame before anything else goes out.
                self.socket.flush().await.map_err(|_| SendError::Gone)?;
            }
            crate::vectored::write_all(&mut self.socket.get_mut().inner, &self.queued)
                .await
                .map_err(|_| SendError::Gone)
        })
        .await;
        self.queued.clear();
        match written {
            Ok(result) => result,
            Err(_) => Err(SendError::Stalled),
        }
    }

    /// Writes what is queued, then a close frame (reason cut to the protocol's 123 bytes), giving a
    /// slow or vanished client at most a second for it, then reads (and drops) what the client still
    /// sends until its own close frame, for at most a second: closing a socket with unread data in
    /// it resets the connection, and a client that was still sending would lose the close frame.
    pub async fn close(&mut self, code: u16, reason: &str) {
        if self.flush().await.is_err() {
            return;
        }
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: close_reason(reason).into(),
        };
        let sent =
            tokio::time::timeout(CLOSE_WAIT, self.socket.send(Message::Close(Some(frame)))).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            while let Some(Ok(message)) = self.socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Close reasons are limited to 123 bytes by the protocol; cut on a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_use_the_shortest_length_encoding() {
        assert_eq!(&frame(TEXT, b"hi")[..], b"\x81\x02hi");
        let medium = frame(BINARY, &[7; 300]);
        assert_eq!(&medium[..4], &[0x82, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let large = frame(BINARY, &[7; 70_000]);
        assert_eq!(&large[..2], &[0x82, 127]);
        assert_eq!(&large[2..10], &70_000u64.to_be_bytes());
    }

    #[test]
    fn close_reasons_fit_the_protocol_limit() {
        assert_eq!(close_reason("short"), "short");
        assert!(close_reason(&"é".repeat(100)).len() <= 123);
    }
}
