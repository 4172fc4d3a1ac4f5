//! `GET /graphql/ws`: the upgrade, and the legacy `graphql-ws` (subscriptions-transport-ws)
//! protocol through async-graphql's engine driven by our own socket loop, so those sockets get the
//! limits `/ws` has (message size, send timeout, heartbeat, shutdown close). `graphql-transport-ws`
//! is served by `transport_ws.rs`.

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

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
use futures_util::{
    stream::{SplitSink, SplitStream},
    FutureExt, SinkExt, StreamExt,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{slots::SubscriptionSlots, Counted};
use crate::{
    app::AppState,
    error::AppError,
    metrics::{Metrics, PatternKind, RejectReason},
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

/// What a socket loop does after one input.
pub(super) enum Step {
    Send(Message),
    Nothing,
    Close(u16, String),
    /// The peer is gone or the protocol ended the connection cleanly.
    Gone,
}

/// One GraphQL socket's two halves and what sending on it needs; both protocols' loops use it.
pub(super) struct Wire {
    sink: SplitSink<WebSocket, Message>,
    pub incoming: SplitStream<WebSocket>,
    send_timeout: Duration,
    /// The socket's open subscriptions (shared with its slots).
    open: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    max_body: usize,
}

impl Wire {
    pub fn new(socket: WebSocket, state: &AppState, open: Arc<AtomicUsize>) -> Self {
        let (sink, incoming) = socket.split();
        Self {
            sink,
            incoming,
            send_timeout: state.config.send_timeout,
            open,
            metrics: state.metrics.clone(),
            max_body: state.config.max_body,
        }
    }

    /// Carries out one step; false when the session is over.
    pub async fn carry_out(&mut self, step: Step) -> bool {
        match step {
            Step::Send(message) => self.deliver(message).await,
            Step::Nothing => true,
            Step::Close(code, reason) => {
                close_gracefully(&mut self.sink, &mut self.incoming, code, &reason).await;
                false
            }
            Step::Gone => false,
        }
    }

    /// Sends one message; false when the session must end: the client is gone, or it stopped
    /// reading for --send-timeout — a lagging subscriber (counted), unless its subscriptions already
    /// ended, since a lag is counted where the subscription is cut off.
    pub async fn deliver(&mut self, message: Message) -> bool {
        match tokio::time::timeout(self.send_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                if self.open.load(Relaxed) > 0 {
                    self.metrics.lagged_disconnect(PatternKind::GraphQl);
                }
                false
            }
        }
    }

    /// The bytes of a protocol message read from the socket, or how the socket ends. Both protocols
    /// are JSON text; a binary frame holding the same JSON is read the same way.
    pub fn message_bytes(
        &self,
        message: Option<Result<Message, axum::Error>>,
    ) -> Result<Bytes, Step> {
        match message {
            None | Some(Ok(Message::Close(_))) => Err(Step::Gone),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Err(Step::Nothing),
            Some(Ok(Message::Text(text))) => Ok(Bytes::from(text)),
            Some(Ok(Message::Binary(bytes))) => Ok(bytes),
            Some(Err(error)) => Err(
                match close_for_read_error(error, self.max_body, &self.metrics) {
                    Some((code, reason)) => Step::Close(code, reason),
                    None => Step::Gone,
                },
            ),
        }
    }
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
    let (inbox, inbox_rx) = mpsc::channel::<Bytes>(INBOX);
    let slots = SubscriptionSlots::new(state.config.ws_max_subscriptions);
    let mut wire = Wire::new(socket, &state, slots.open());
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
                            if !wire.deliver(Message::Text(text.into())).await {
                                return;
                            }
                        }
                        _ => break,
                    }
                }
                Step::Close(1001, "server shutting down".into())
            }
            message = wire.incoming.next() => match wire.message_bytes(message) {
                Ok(bytes) => to_engine(bytes, &inbox, &metrics),
                Err(step) => step,
            },
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
        if !wire.carry_out(step).await {
            return;
        }
    }
}

/// Hands a client message to the engine; a client flooding faster than it is served is closed.
fn to_engine(data: Bytes, inbox: &mpsc::Sender<Bytes>, metrics: &Metrics) -> Step {
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
