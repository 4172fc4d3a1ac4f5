//! `GET /graphql/ws`: the upgrade, and the legacy `graphql-ws` (subscriptions-transport-ws)
//! protocol through async-graphql's engine driven by our own socket loop, so those sockets get the
//! limits `/ws` has (message size, send timeout, heartbeat, shutdown close). `graphql-transport-ws`
//! is served by `transport_ws.rs`.

use std::{str::FromStr, sync::atomic::Ordering::Relaxed, time::Duration};

use async_graphql::{
    http::{WebSocket as Engine, WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS},
    Data,
};
use axum::{
    extract::{
        ws::{rejection::WebSocketUpgradeRejection, Message, WebSocket},
        State, WebSocketUpgrade,
    },
    response::Response,
    Extension,
};
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{slots::SubscriptionSlots, Counted};
use crate::{
    app::AppState,
    error::AppError,
    metrics::{PatternKind, RejectReason},
    ws_close::{close_for_read_error, close_gracefully},
};

/// Read buffer per socket: client messages are small; larger ones still arrive whole.
const READ_BUFFER: usize = 8 << 10;
/// Client messages waiting for the engine. It drains them whenever the loop polls it, so a full
/// queue means a client flooding faster than it is served.
const INBOX: usize = 64;
/// After shutdown, most `complete` messages sent before the close frame.
const DRAIN_ON_SHUTDOWN: usize = 1024;

pub async fn upgrade(
    State(state): State<AppState>,
    Extension(executor): Extension<Counted>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::GraphQl);
    let ws = ws.map_err(|rejection| {
        AppError::BadQuery(format!(
            "GET /graphql/ws needs a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    // The server's order of preference: graphql-transport-ws, then the legacy graphql-ws.
    let ws = ws.protocols(ALL_WEBSOCKET_PROTOCOLS);
    let protocol = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .and_then(|p| WebSocketProtocols::from_str(p).ok())
        .ok_or_else(|| {
            AppError::BadQuery(
                "GET /graphql/ws needs the header Sec-WebSocket-Protocol: graphql-transport-ws"
                    .into(),
            )
        })?;
    let limit = state.config.max_body;
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            match protocol {
                WebSocketProtocols::GraphQLWS => {
                    super::transport_ws::session(socket, state, executor).await
                }
                WebSocketProtocols::SubscriptionsTransportWS => {
                    legacy_session(socket, state, executor, protocol).await
                }
            }
        }))
}

/// What the loop does after one input.
enum Step {
    Send(Message),
    Nothing,
    Close(u16, String),
    /// The peer is gone or the protocol ended the connection cleanly.
    Gone,
}

/// The legacy `graphql-ws` protocol, as async-graphql's engine speaks it.
async fn legacy_session(
    socket: WebSocket,
    state: AppState,
    executor: Counted,
    protocol: WebSocketProtocols,
) {
    let metrics = state.metrics.clone();
    let shutdown = state.shutdown.clone();
    let send_timeout = state.config.send_timeout;
    let (mut sink, mut incoming) = socket.split();
    let (inbox, inbox_rx) = mpsc::channel::<Bytes>(INBOX);
    let slots = SubscriptionSlots::new(state.config.ws_max_subscriptions);
    let open = slots.open();
    let mut data = Data::default();
    data.insert(slots);
    let mut engine =
        Engine::new(executor, ReceiverStream::new(inbox_rx), protocol).connection_data(data);
    let mut heartbeat = tokio::time::interval(state.config.heartbeat);
    heartbeat.reset();
    loop {
        let step = tokio::select! {
            () = shutdown.cancelled() => {
                // Subscriptions end on the same token: send their `complete` before the close.
                for _ in 0..DRAIN_ON_SHUTDOWN {
                    match engine.next().now_or_never() {
                        Some(Some(WsMessage::Text(text))) => {
                            let message = Message::Text(text.into());
                            if send(&mut sink, message, send_timeout).await != Sent::Done {
                                return;
                            }
                        }
                        _ => break,
                    }
                }
                Step::Close(1001, "server shutting down".into())
            }
            message = incoming.next() => on_message(message, &inbox, &state),
            out = engine.next() => match out {
                Some(WsMessage::Text(text)) => Step::Send(Message::Text(text.into())),
                Some(WsMessage::Close(code, reason)) => {
                    // The engine closes on a malformed or out-of-order protocol message.
                    metrics.rejected(RejectReason::BadMessage);
                    Step::Close(code, reason)
                }
                None => Step::Close(1000, "connection terminated".into()),
            },
            _ = heartbeat.tick() => Step::Send(Message::Ping(Bytes::new())),
        };
        match step {
            Step::Send(message) => match send(&mut sink, message, send_timeout).await {
                Sent::Done => {}
                Sent::Failed => return,
                Sent::Stalled => {
                    // The client stopped reading: a lagging subscriber, unless its subscriptions
                    // already ended (a lag is counted where the subscription is cut off).
                    if open.load(Relaxed) > 0 {
                        metrics.lagged_disconnect(PatternKind::GraphQl);
                    }
                    return;
                }
            },
            Step::Nothing => {}
            Step::Close(code, reason) => {
                close_gracefully(&mut sink, &mut incoming, code, &reason).await;
                return;
            }
            Step::Gone => return,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sent {
    Done,
    Failed,
    /// Not written within --send-timeout.
    Stalled,
}

/// Sends one message, giving up after `limit` (a client that stopped reading).
pub(super) async fn send(
    sink: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    message: Message,
    limit: Duration,
) -> Sent {
    match tokio::time::timeout(limit, sink.send(message)).await {
        Ok(Ok(())) => Sent::Done,
        Ok(Err(_)) => Sent::Failed,
        Err(_) => Sent::Stalled,
    }
}

/// Hands a client message to the engine, or decides how the socket ends.
fn on_message(
    message: Option<Result<Message, axum::Error>>,
    inbox: &mpsc::Sender<Bytes>,
    state: &AppState,
) -> Step {
    let metrics = &state.metrics;
    let data = match message {
        None | Some(Ok(Message::Close(_))) => return Step::Gone,
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Step::Nothing,
        // graphql-transport-ws is text; the engine reads JSON from binary frames just as well.
        Some(Ok(Message::Text(text))) => Bytes::from(text),
        Some(Ok(Message::Binary(bytes))) => bytes,
        Some(Err(error)) => {
            return match close_for_read_error(error, state.config.max_body, metrics) {
                Some((code, reason)) => Step::Close(code, reason),
                None => Step::Gone,
            };
        }
    };
    match inbox.try_send(data) {
        Ok(()) => Step::Nothing,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics.rejected(RejectReason::BadMessage);
            Step::Close(1008, "too many messages in flight".into())
        }
        // The engine is done with the connection; its end arrives on the next turn.
        Err(mpsc::error::TrySendError::Closed(_)) => Step::Nothing,
    }
}
