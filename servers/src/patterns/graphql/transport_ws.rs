//! The `graphql-transport-ws` protocol on `/graphql/ws`, as enisdenjo/graphql-ws's PROTOCOL.md
//! specifies it, with its close codes: 4400 invalid message, 4401 `subscribe` before the connection
//! was acknowledged, 4408 no `connection_init` within `--graphql-init-timeout`, 4409 a duplicate
//! operation id, 4429 a second `connection_init`. Each client message is handled before the next is
//! read, so a flood of pings is answered pong by pong under TCP backpressure, never buffered.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use async_graphql::{Data, Executor as _, Response, ServerError, Variables};
use futures_util::{
    stream::{self, BoxStream},
    StreamExt,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_stream::StreamMap;

use super::{
    direct, limits, schema::HandOver, slots::SubscriptionSlots, socket::message_bytes, Counted,
};
use crate::{
    app::AppState,
    extract::json_object,
    metrics::RejectReason,
    ws_close::{perform, Step},
    ws_conn::{WsConn, PING_FRAME},
};

/// A client message, checked as the reference implementation's `validateMessage` checks it.
#[derive(Debug)]
enum ClientMessage {
    ConnectionInit,
    Ping(Option<Value>),
    Pong,
    Subscribe {
        id: String,
        request: Box<async_graphql::Request>,
    },
    Complete {
        id: String,
    },
}

/// The wire form, before the checks that serde cannot express.
#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "type")]
    kind: Value,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    payload: Option<Value>,
}

/// Parses one client message; the error is the 4400 close reason.
fn parse(bytes: &[u8]) -> Result<ClientMessage, String> {
    let raw: Raw = json_object(bytes).map_err(|e| format!("invalid message: {e}"))?;
    let Value::String(kind) = raw.kind else {
        return Err("the message's `type` must be a string".into());
    };
    let object_or_nothing = |payload: Option<Value>| match payload {
        None | Some(Value::Null) => Ok(None),
        Some(object @ Value::Object(_)) => Ok(Some(object)),
        Some(_) => Err(format!(
            "`{kind}` expects its payload to be an object, null or missing"
        )),
    };
    let id = |id: Option<Value>| match id {
        Some(Value::String(id)) if !id.is_empty() => Ok(id),
        _ => Err(format!("`{kind}` needs a non-empty string `id`")),
    };
    Ok(match kind.as_str() {
        "connection_init" => {
            object_or_nothing(raw.payload)?;
            ClientMessage::ConnectionInit
        }
        "ping" => ClientMessage::Ping(object_or_nothing(raw.payload)?),
        "pong" => {
            object_or_nothing(raw.payload)?;
            ClientMessage::Pong
        }
        "subscribe" => ClientMessage::Subscribe {
            id: id(raw.id)?,
            request: Box::new(operation(raw.payload)?),
        },
        "complete" => ClientMessage::Complete { id: id(raw.id)? },
        other => return Err(format!("unexpected message type `{other}`")),
    })
}

/// A `subscribe` payload: `query` (a string), `variables` and `extensions` (objects, null or
/// missing), `operationName` (a string, null or missing).
fn operation(payload: Option<Value>) -> Result<async_graphql::Request, String> {
    let Some(Value::Object(mut payload)) = payload else {
        return Err("`subscribe` expects an object payload".into());
    };
    let Some(Value::String(query)) = payload.remove("query") else {
        return Err("`subscribe` expects a string `query` in its payload".into());
    };
    let mut request = async_graphql::Request::new(query);
    match payload.remove("variables") {
        None | Some(Value::Null) => {}
        Some(variables @ Value::Object(_)) => {
            request = request.variables(Variables::from_json(variables));
        }
        Some(_) => return Err("`variables` must be an object, null or missing".into()),
    }
    match payload.remove("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(name)) => request = request.operation_name(name),
        Some(_) => return Err("`operationName` must be a string, null or missing".into()),
    }
    match payload.remove("extensions") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(_) => return Err("`extensions` must be an object, null or missing".into()),
    }
    Ok(request)
}

/// Server → client messages.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage<'a> {
    ConnectionAck,
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
    },
    Next {
        id: &'a str,
        payload: &'a Response,
    },
    Error {
        id: &'a str,
        payload: &'a [ServerError],
    },
    Complete {
        id: &'a str,
    },
}

impl ServerMessage<'_> {
    fn json(&self) -> Vec<u8> {
        // Plain strings and JSON values: encoding cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn step(&self) -> Step {
        Step::text(self.json())
    }
}

/// What an operation's stream yields to the session.
// Moved once per event; boxing the answer would cost an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Out {
    Response {
        first: bool,
        response: Response,
    },
    /// A complete `next` message's frame, written by a direct plan.
    Frame(bytes::Bytes),
    End,
}

struct Session {
    state: AppState,
    executor: Counted,
    /// Data every operation of this socket sees: its subscription slots.
    data: Arc<Data>,
    init_received: bool,
    acknowledged: bool,
    operations: StreamMap<String, BoxStream<'static, Out>>,
}

pub async fn session(mut conn: WsConn, state: AppState, executor: Counted) {
    let slots = SubscriptionSlots::new(state.config.ws_max_subscriptions);
    conn.count_stalls_while(slots.open());
    let mut data = Data::default();
    data.insert(slots);
    let mut session = Session {
        state: state.clone(),
        executor,
        data: Arc::new(data),
        init_received: false,
        acknowledged: false,
        operations: StreamMap::new(),
    };
    let shutdown = state.shutdown.clone().cancelled_owned();
    let mut shutdown = std::pin::pin!(shutdown);
    let init_wait = tokio::time::sleep(state.config.graphql_init_timeout);
    let mut init_wait = std::pin::pin!(init_wait);
    let mut heartbeat = tokio::time::interval(state.config.heartbeat);
    heartbeat.reset();
    loop {
        let step = tokio::select! {
            () = &mut shutdown => {
                // Subscriptions end on the same token: say so before the close.
                for id in session.operations.keys() {
                    conn.queue_text(ServerMessage::Complete { id }.json());
                }
                Step::Close(1001, "server shutting down".into())
            }
            () = &mut init_wait, if !session.init_received => {
                state.metrics.rejected(RejectReason::RequestTimeout);
                Step::Close(4408, "Connection initialisation timeout".into())
            }
            message = conn.next() => match message_bytes(message, &conn) {
                Ok(bytes) => session.on_bytes(&bytes),
                Err(step) => step,
            },
            Some((id, out)) = session.operations.next(), if !session.operations.is_empty() => {
                session.on_output(&id, out)
            }
            _ = heartbeat.tick() => Step::Send(PING_FRAME),
        };
        if let Step::Close(..) = step {
            // Subscriptions end (and free their slots) before the socket does.
            session.operations.clear();
        }
        // Answers already waiting go out in the same write.
        if !perform(&mut conn, step, |cx| session.ready_output(cx)).await {
            return;
        }
    }
}

impl Session {
    /// The next operation output that is already waiting, if any.
    fn ready_output(&mut self, cx: &mut Context<'_>) -> Option<Step> {
        match self.operations.poll_next_unpin(cx) {
            Poll::Ready(Some((id, out))) => Some(self.on_output(&id, out)),
            _ => None,
        }
    }

    fn on_bytes(&mut self, bytes: &[u8]) -> Step {
        match parse(bytes) {
            Ok(message) => self.on_client_message(message),
            Err(reason) => self.refuse(4400, reason),
        }
    }

    fn on_client_message(&mut self, message: ClientMessage) -> Step {
        match message {
            ClientMessage::ConnectionInit if self.init_received => {
                self.refuse(4429, "Too many initialisation requests".into())
            }
            ClientMessage::ConnectionInit => {
                self.init_received = true;
                self.acknowledged = true;
                ServerMessage::ConnectionAck.step()
            }
            ClientMessage::Ping(payload) => ServerMessage::Pong { payload }.step(),
            ClientMessage::Pong => Step::Nothing,
            ClientMessage::Subscribe { .. } if !self.acknowledged => {
                self.refuse(4401, "Unauthorized".into())
            }
            ClientMessage::Subscribe { id, .. } if self.operations.contains_key(&id) => {
                self.refuse(4409, format!("Subscriber for {id} already exists"))
            }
            ClientMessage::Subscribe { id, mut request } => {
                // A plain `events` subscription has its items written directly once
                // async-graphql has validated and started it (`direct.rs`).
                let plan = direct::Plan::of(&mut request, &id);
                let hand_over = HandOver::default();
                let request = match plan {
                    Some(_) => request.data(hand_over.clone()),
                    None => *request,
                };
                let responses = self
                    .executor
                    .execute_stream(request, Some(self.data.clone()));
                let handed_over = stream::once(async move {
                    match (hand_over.take(), plan) {
                        (Some(live), Some(plan)) => {
                            plan.messages(live).map(Out::Frame).left_stream()
                        }
                        _ => stream::empty().right_stream(),
                    }
                })
                .flatten();
                let outputs = responses
                    .enumerate()
                    .map(|(n, response)| Out::Response {
                        first: n == 0,
                        response,
                    })
                    .chain(handed_over)
                    .chain(stream::once(async { Out::End }));
                self.operations.insert(id, outputs.boxed());
                Step::Nothing
            }
            // Completing an operation that already ended (or never existed) is no error.
            ClientMessage::Complete { id } => {
                self.operations.remove(&id);
                Step::Nothing
            }
        }
    }

    fn on_output(&mut self, id: &str, out: Out) -> Step {
        match out {
            // Refused before it ran (malformed, invalid, too complex): an `error` ends the
            // operation, with no `complete` after it.
            Out::Response { first, response } if first && refused_before_running(&response) => {
                self.operations.remove(id);
                ServerMessage::Error {
                    id,
                    payload: &response.errors,
                }
                .step()
            }
            Out::Response { response, .. } => ServerMessage::Next {
                id,
                payload: &response,
            }
            .step(),
            Out::Frame(frame) => Step::Send(frame),
            Out::End => {
                self.operations.remove(id);
                ServerMessage::Complete { id }.step()
            }
        }
    }

    fn refuse(&self, code: u16, reason: String) -> Step {
        self.state.metrics.rejected(RejectReason::BadMessage);
        Step::Close(code, reason)
    }
}

/// An answer with no data whose errors all say the operation itself was refused (parse,
/// validation, cost) rather than something that happened while it ran.
fn refused_before_running(response: &Response) -> bool {
    let before = [
        RejectReason::BadQuery.label(),
        RejectReason::TooComplex.label(),
    ];
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response
            .errors
            .iter()
            .all(|error| limits::code(error).is_some_and(|code| before.contains(&code)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_checked_like_the_reference_implementation() {
        let ok = |text: &str| parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(matches!(
            ok(r#"{"type":"connection_init"}"#),
            ClientMessage::ConnectionInit
        ));
        assert!(matches!(
            ok(r#"{"type":"ping","payload":{"a":1}}"#),
            ClientMessage::Ping(Some(_))
        ));
        assert!(matches!(
            ok(r#"{"type":"subscribe","id":"1","payload":{"query":"{ x }","variables":null}}"#),
            ClientMessage::Subscribe { .. }
        ));
        assert!(matches!(
            ok(r#"{"type":"complete","id":"1"}"#),
            ClientMessage::Complete { .. }
        ));
        for bad in [
            "[]",
            r#"["subscribe","1"]"#,
            "not json",
            r#"{"id":"1"}"#,
            r#"{"type":5}"#,
            r#"{"type":"shout"}"#,
            r#"{"type":"next","id":"1","payload":{}}"#,
            r#"{"type":"ping","payload":"x"}"#,
            r#"{"type":"subscribe","payload":{"query":"{ x }"}}"#,
            r#"{"type":"subscribe","id":"","payload":{"query":"{ x }"}}"#,
            r#"{"type":"subscribe","id":"1"}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":5}}"#,
            r#"{"type":"subscribe","id":"1","payload":{"query":"{ x }","variables":[]}}"#,
            r#"{"type":"complete"}"#,
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad} was accepted");
        }
    }
}
