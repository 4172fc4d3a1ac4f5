//! `GET /graphql/ws`: the upgrade, and the legacy `graphql-ws` (subscriptions-transport-ws)
//! protocol through async-graphql's engine driven by our own socket loop on the shared WebSocket
//! connection (`ws_conn.rs`), so those sockets get the limits `/ws` has (message size, send timeout,
//! heartbeat, shutdown close). `graphql-transport-ws` is served by `transport_ws.rs`.

use std::{
    str::FromStr,
    task::{Context, Poll},
};

use async_graphql::{
    http::{WebSocket as Engine, WebSocketProtocols, WsMessage, ALL_WEBSOCKET_PROTOCOLS},
    Data,
};
use axum::{
    extract::{ws::rejection::WebSocketUpgradeRejection, State},
    response::Response,
    Extension,
};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{slots::SubscriptionSlots, Counted};
use crate::{
    app::AppState,
    error::AppError,
    metrics::{Metrics, PatternKind, RejectReason},
    ws_close::{close_for_read_error, perform, Step},
    ws_conn::{Limits, Upgrade, WsConn, PING_FRAME},
};

/// Client messages waiting for the engine. It drains them whenever the loop polls it, so a full
/// queue means a client flooding faster than it is served.
const INBOX: usize = 64;
/// After shutdown, most `complete` messages sent before the close frame.
const DRAIN_ON_SHUTDOWN: usize = 1024;

pub async fn upgrade(
    State(state): State<AppState>,
    Extension(executor): Extension<Counted>,
    ws: Result<Upgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::GraphQl);
    let ws = ws.map_err(|rejection| {
        AppError::BadQuery(format!(
            "GET /graphql/ws needs a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    // The server's order of preference: graphql-transport-ws, then the legacy graphql-ws.
    let ws = ws.protocols(&ALL_WEBSOCKET_PROTOCOLS);
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
    let limits = Limits::of(&state, PatternKind::GraphQl);
    Ok(ws.on_upgrade(limits, move |conn| async move {
        match protocol {
            WebSocketProtocols::GraphQLWS => {
                super::transport_ws::session(conn, state, executor).await
            }
            WebSocketProtocols::SubscriptionsTransportWS => {
                legacy_session(conn, state, executor, protocol).await
            }
        }
    }))
}

/// The bytes of a protocol message read from the socket, or how the socket ends. Both protocols
/// are JSON text; a binary frame holding the same JSON is read the same way.
pub(super) fn message_bytes(
    message: Option<Result<Message, tungstenite::Error>>,
    conn: &WsConn,
) -> Result<Bytes, Step> {
    match message {
        None | Some(Ok(Message::Close(_))) => Err(Step::Gone),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Err(Step::Nothing),
        Some(Ok(Message::Text(text))) => Ok(Bytes::from(text)),
        Some(Ok(Message::Binary(bytes))) => Ok(bytes),
        Some(Err(error)) => Err(
            match close_for_read_error(error, conn.max_message(), conn.metrics()) {
                Some((code, reason)) => Step::Close(code, reason),
                None => Step::Gone,
            },
        ),
    }
}

/// The legacy `graphql-ws` protocol, as async-graphql's engine speaks it.
async fn legacy_session(
    mut conn: WsConn,
    state: AppState,
    executor: Counted,
    protocol: WebSocketProtocols,
) {
    let metrics = state.metrics.clone();
    let shutdown = state.shutdown.clone().cancelled_owned();
    let mut shutdown = std::pin::pin!(shutdown);
    let (inbox, inbox_rx) = mpsc::channel::<Bytes>(INBOX);
    let slots = SubscriptionSlots::new(state.config.ws_max_subscriptions);
    conn.count_stalls_while(slots.open());
    let mut data = Data::default();
    data.insert(slots);
    let mut engine =
        Engine::new(executor, ReceiverStream::new(inbox_rx), protocol).connection_data(data);
    let mut heartbeat = tokio::time::interval(state.config.heartbeat);
    heartbeat.reset();
    loop {
        let step = tokio::select! {
            () = &mut shutdown => {
                // Subscriptions end on the same token: send their `complete` before the close.
                for _ in 0..DRAIN_ON_SHUTDOWN {
                    match engine.next().now_or_never() {
                        Some(Some(WsMessage::Text(text))) => conn.queue_text(text),
                        _ => break,
                    }
                }
                Step::Close(1001, "server shutting down".into())
            }
            message = conn.next() => match message_bytes(message, &conn) {
                Ok(bytes) => to_engine(bytes, &inbox, &metrics),
                Err(step) => step,
            },
            out = engine.next() => engine_step(out, &metrics),
            _ = heartbeat.tick() => Step::Send(PING_FRAME),
        };
        // Answers the engine already has go out in the same write.
        let ready = |cx: &mut Context<'_>| match engine.poll_next_unpin(cx) {
            Poll::Ready(out) => Some(engine_step(out, &metrics)),
            Poll::Pending => None,
        };
        if !perform(&mut conn, step, ready).await {
            return;
        }
    }
}

/// What the engine's output means for the socket.
fn engine_step(out: Option<WsMessage>, metrics: &Metrics) -> Step {
    match out {
        Some(WsMessage::Text(text)) => Step::text(text),
        Some(WsMessage::Close(code, reason)) => {
            // The engine closes on a malformed or out-of-order protocol message.
            metrics.rejected(RejectReason::BadMessage);
            Step::Close(code, reason)
        }
        None => Step::Close(1000, "connection terminated".into()),
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
