//! GraphQL subscription: one `graphql-transport-ws` socket per client on `/graphql/ws`, the `events`
//! subscription after the head learnt over HTTP; answers pings, and resubscribes after its cursor on
//! a new socket when the stream ends (closed, or ended by the server with `error`/`complete`).

use std::time::Duration;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::{
    graphql_poll::{head, operation_start},
    stream_feed::Arrival,
    ws_conn::{self, Socket},
    ws_feed::{self, FeedProtocol, Opened, Step},
    ClientCtx, FeedReceiver,
};
use crate::{
    http::{ClientError, HttpConn},
    wire::{self, FeedItem},
};

const PATH: &str = "/graphql/ws";
const SUBPROTOCOL: &str = "graphql-transport-ws";

/// The feed after a cursor; the same event fields as every other pattern (see `graphql_poll`).
const SUBSCRIPTION: &str =
    "subscription($topic:String!,$after:Int){events(topic:$topic,after:$after)\
                            {event{topic seq data} gap{oldest}}}";

/// The one operation a client runs on its socket.
const ID: &str = "1";

/// How long the server may take to acknowledge `connection_init`.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

struct GraphqlWs {
    /// The subscribe payload up to the cursor (built once per client).
    operation_start: String,
}

impl FeedProtocol for GraphqlWs {
    async fn subscribe(&mut self, ctx: &ClientCtx, cursor: Option<u64>) -> Opened {
        let after = match cursor {
            Some(cursor) => cursor,
            // A subscription confirms no cursor, so the first start is the head, asked over HTTP
            // (during the ramp: its traffic is outside the measured window).
            None => {
                let target = &ctx.target;
                let mut conn = HttpConn::open(target, ctx.source, &ctx.shared.recorder).await?;
                head(&mut conn, ctx.topic()).await?
            }
        };
        let mut socket = open(ctx, PATH).await?;
        let subscribe = subscribe_message(&self.operation_start, after);
        ws_conn::send_text(&mut socket, subscribe).await?;
        Ok((socket, Some(after)))
    }

    fn message(&mut self, message: Message, arrival: Arrival<'_>) -> Step {
        let ctx = arrival.ctx;
        let counters = &ctx.recorder().counters;
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                counters.error("bad_graphql_message");
                return Step::Continue;
            }
            // WebSocket pings are answered by the socket itself.
            _ => return Step::Continue,
        };
        let Some(message) = wire::gql_ws_message(&text) else {
            counters.error("bad_graphql_message");
            return Step::Continue;
        };
        match message.kind {
            "next" if message.id == Some(ID) => {
                next(
                    ctx,
                    message.payload,
                    arrival.receiver.as_mut(),
                    arrival.now_ns,
                );
                Step::Continue
            }
            kind => control(kind, counters),
        }
    }
}

/// What a `graphql-transport-ws` message other than a result asks of the client: a pong for a
/// ping; `error` (a lagged subscriber gets one, then `complete`) and `complete` end the operation.
pub(super) fn control(kind: &str, counters: &crate::record::Counters) -> Step {
    match kind {
        "ping" => Step::Reply(r#"{"type":"pong"}"#.to_owned()),
        "error" => {
            counters.error("graphql_error");
            Step::End
        }
        "complete" => Step::End,
        _ => Step::Continue,
    }
}

/// Opens `path` with the `graphql-transport-ws` subprotocol and waits for `connection_ack`.
pub(super) async fn open(ctx: &ClientCtx, path: &str) -> Result<Socket, ClientError> {
    let mut socket = ws_conn::open(ctx, path, Some(SUBPROTOCOL)).await?;
    let init = r#"{"type":"connection_init","payload":{}}"#;
    ws_conn::send_text(&mut socket, init.to_owned()).await?;
    tokio::time::timeout(ACK_TIMEOUT, acknowledged(&mut socket))
        .await
        .map_err(|_| ClientError::Timeout(ACK_TIMEOUT))??;
    Ok(socket)
}

/// `{"id":"1","type":"subscribe","payload":{"query":…,"variables":{"topic":…,"after":N}}}`.
fn subscribe_message(operation_start: &str, after: u64) -> String {
    format!("{{\"id\":\"{ID}\",\"type\":\"subscribe\",\"payload\":{operation_start},\"after\":{after}}}}}}}")
}

/// Reads until `connection_ack`, answering pings; anything else first is a protocol error.
async fn acknowledged(socket: &mut Socket) -> Result<(), ClientError> {
    loop {
        let text = match ws_conn::next(socket).await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                return Err(ClientError::Protocol(
                    "socket closed before connection_ack".into(),
                ))
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error),
        };
        match wire::gql_ws_message(&text).map(|m| m.kind) {
            Some("connection_ack") => return Ok(()),
            Some("ping") => ws_conn::send_text(socket, r#"{"type":"pong"}"#.to_owned()).await?,
            _ => {
                return Err(ClientError::Protocol(format!(
                    "expected connection_ack, got {text}"
                )))
            }
        }
    }
}

/// One `next`: a feed item carries exactly one of an event or a gap.
fn next(
    ctx: &ClientCtx,
    payload: Option<&RawValue>,
    receiver: Option<&mut FeedReceiver>,
    now_ns: u64,
) {
    let counters = &ctx.recorder().counters;
    let Some(result) = payload.and_then(|p| wire::graphql::<FeedItem>(p.get().as_bytes())) else {
        counters.error("bad_graphql_message");
        return;
    };
    if result.has_errors() {
        counters.error("graphql_error");
    }
    let Some((item, receiver)) = result.events().zip(receiver) else {
        return;
    };
    match (item.event, item.gap) {
        (Some(event), _) => receiver.event(ctx, event.seq, event.data.as_deref(), now_ns),
        (None, Some(gap)) => receiver.gap(gap.oldest),
        (None, None) => counters.error("bad_feed_item"),
    }
}

pub async fn run(ctx: ClientCtx) {
    let operation_start = operation_start(SUBSCRIPTION, ctx.topic());
    ws_feed::run(ctx, GraphqlWs { operation_start }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_message_is_graphql_transport_ws() {
        let text = subscribe_message(&operation_start(SUBSCRIPTION, "t0"), 7);
        let message: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(message["type"], "subscribe");
        assert_eq!(message["id"], ID);
        assert_eq!(message["payload"]["query"], SUBSCRIPTION);
        assert_eq!(
            message["payload"]["variables"],
            serde_json::json!({"topic": "t0", "after": 7})
        );
    }
}
