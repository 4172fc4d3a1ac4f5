//! Opening a WebSocket on a counted socket (handshake bytes and frame headers count), shared by the
//! feed WebSocket, GraphQL subscription, Socket.IO and profile-driven clients and the publisher.

use std::{net::SocketAddr, sync::Arc};

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::{
    client_async_with_config,
    tungstenite::{self, client::IntoClientRequest, http, protocol::WebSocketConfig, Message},
    WebSocketStream,
};

use super::ClientCtx;
use crate::{
    http::ClientError,
    net::{connect, counted, CountedStream},
    record::{Metric, Recorder},
    target::Target,
};

pub type Socket = WebSocketStream<CountedStream>;

/// Largest message a client accepts.
const MAX_MESSAGE: usize = 16 << 20;

/// Bytes read from the socket at a time: a handful of event frames.
const READ_CHUNK: usize = 1 << 10;

/// Connects to `path` on the target and completes the WebSocket handshake, recording connect time.
/// With a `subprotocol` the client asks for it (`Sec-WebSocket-Protocol`), and the handshake fails
/// unless the server agrees to it.
pub async fn open(
    ctx: &ClientCtx,
    path: &str,
    subprotocol: Option<&'static str>,
) -> Result<Socket, ClientError> {
    let started = ctx.now_ns();
    let socket = open_on(
        &ctx.target,
        ctx.source,
        &ctx.shared.recorder,
        path,
        subprotocol,
    )
    .await?;
    let micros = ctx.now_ns().saturating_sub(started) / 1_000;
    ctx.recorder().record(ctx.id, Metric::Connect, micros);
    Ok(socket)
}

/// [`open`] for a connection that is not a client's (the publisher's): its bytes count into
/// `recorder`, its connect time nowhere.
pub async fn open_on(
    target: &Target,
    source: Option<SocketAddr>,
    recorder: &Arc<Recorder>,
    path: &str,
    subprotocol: Option<&'static str>,
) -> Result<Socket, ClientError> {
    let stream = connect(target.addr, source)
        .await
        .map_err(ClientError::Connect)?;
    let websocket_error = |e: tungstenite::Error| ClientError::WebSocket(e.to_string());
    let mut request = format!("ws://{}{}", target.authority, path)
        .into_client_request()
        .map_err(websocket_error)?;
    if let Some(subprotocol) = subprotocol {
        request.headers_mut().insert(
            http::header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(subprotocol),
        );
    }
    // Small per-socket buffers, as the server uses: thousands of sockets, small frames. tungstenite
    // zero-fills its whole read buffer before each read, so all of it is resident per socket (8 KiB
    // was a third of an idle client's memory); a larger message still arrives whole, over more reads.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let (socket, _response) =
        client_async_with_config(request, counted(stream, recorder), Some(config))
            .await
            .map_err(websocket_error)?;
    Ok(socket)
}

pub async fn send_text(socket: &mut Socket, text: String) -> Result<(), ClientError> {
    socket
        .send(Message::text(text))
        .await
        .map_err(|e| ClientError::WebSocket(e.to_string()))
}

/// The next message, with read errors mapped; `None` when the socket closed.
pub async fn next(socket: &mut Socket) -> Option<Result<Message, ClientError>> {
    socket
        .next()
        .await
        .map(|m| m.map_err(|e| ClientError::WebSocket(e.to_string())))
}

/// Reads and drops every message already waiting, without waiting for more; an error once the
/// socket has closed.
pub fn drain_ready(socket: &mut Socket) -> Result<(), ClientError> {
    loop {
        match socket.next().now_or_never() {
            None => return Ok(()),
            Some(Some(Ok(Message::Close(_))) | None) => {
                return Err(ClientError::WebSocket("closed by the server".into()))
            }
            Some(Some(Ok(_))) => {}
            Some(Some(Err(error))) => return Err(ClientError::WebSocket(error.to_string())),
        }
    }
}
