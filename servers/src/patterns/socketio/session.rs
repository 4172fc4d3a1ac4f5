//! One Socket.IO connection: the Engine.IO handshake and heartbeat, the connection to the main
//! namespace, the feed's `subscribe` / `unsubscribe` / `publish` events (answered by ack when the
//! client asks for one, else by an event), and delivery of the shared pre-encoded event packets.
//! Malformed packets close the socket with a code and a reason that says what was wrong.

use std::{
    pin::pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, value::RawValue};
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{
    app::AppState,
    bus::{Delivery, Subscription},
    error::{error_json, AppError},
    metrics::{PatternKind, RejectReason},
    socketio_wire::{self as wire, EnginePacket, Handshake, Packet, PacketType, MAIN_NAMESPACE},
    topic::TopicName,
    ws_close::{none, perform, text_or_step, Step},
    ws_conn::WsConn,
};

pub(super) async fn run(state: AppState, conn: WsConn) {
    Session::new(state).run(conn).await;
}

/// Close codes (RFC 6455) this server uses beyond those `ws_close` picks for read errors.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_PROTOCOL: u16 = 1002;
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_POLICY: u16 = 1008;

/// Characters of session ids (the reference server's are base64url too).
const SID_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn new_sid() -> String {
    (0..20)
        .map(|_| char::from(SID_CHARS[fastrand::usize(..SID_CHARS.len())]))
        .collect()
}

/// `subscribe` argument.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    topic: String,
    after: Option<u64>,
}

/// `unsubscribe` argument.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Unsubscribe {
    topic: String,
}

/// `publish` argument.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    topic: String,
    payload: String,
}

struct Session {
    state: AppState,
    /// The Socket.IO id once the client connected to the main namespace.
    sid: Option<String>,
    /// Followed topics (an ended subscription leaves the map by itself).
    topics: StreamMap<TopicName, Subscription>,
    /// When the outstanding ping must have been answered.
    pong_due: Option<Instant>,
    /// When the client must have connected to the namespace.
    connect_due: Option<Instant>,
}

impl Session {
    fn new(state: AppState) -> Self {
        let connect_due = Some(Instant::now() + connect_window(&state));
        Self {
            state,
            sid: None,
            topics: StreamMap::new(),
            pong_due: None,
            connect_due,
        }
    }

    async fn run(mut self, mut conn: WsConn) {
        let _active = self.state.metrics.active(PatternKind::SocketIo);
        let config = self.state.config.clone();
        let shutdown = self.state.shutdown.clone().cancelled_owned();
        let mut shutdown = pin!(shutdown);
        let open = Handshake {
            sid: new_sid(),
            upgrades: Vec::new(),
            ping_interval: millis(config.heartbeat),
            ping_timeout: millis(config.send_timeout),
            max_payload: config.max_body as u64,
        };
        let mut step = Step::text(open.encode());
        let mut follows = false;
        let mut ping =
            tokio::time::interval_at(Instant::now() + config.heartbeat, config.heartbeat);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // One timer for whichever deadline (pong, namespace connection) comes first, re-armed only
        // when it changes, so a delivered event costs no timer registration.
        let mut armed = self.deadline();
        let mut deadline = pin!(tokio::time::sleep_until(armed.unwrap_or_else(Instant::now)));
        loop {
            // After a delivery, the events already waiting go out in the same write.
            let more = if follows {
                perform(&mut conn, step, |cx| self.ready_topic(cx)).await
            } else {
                perform(&mut conn, step, none).await
            };
            if !more {
                return;
            }
            if self.deadline() != armed {
                armed = self.deadline();
                if let Some(at) = armed {
                    deadline.as_mut().reset(at);
                }
            }
            follows = false;
            step = tokio::select! {
                () = &mut shutdown => {
                    Step::Close(CLOSE_GOING_AWAY, "server shutting down".into())
                }
                message = conn.next() => self.on_frame(message).await,
                Some((topic, out)) = self.topics.next(), if !self.topics.is_empty() => {
                    follows = true;
                    self.on_topic(topic, out)
                }
                _ = ping.tick() => {
                    self.pong_due.get_or_insert(Instant::now() + config.send_timeout);
                    Step::text(wire::PING)
                }
                () = &mut deadline, if armed.is_some() => {
                    // Disarm: a fired timer stays ready, so it must be re-armed before it is
                    // polled again.
                    armed = None;
                    self.on_deadline()
                }
            };
        }
    }

    /// The next delivery that is already waiting, if any.
    fn ready_topic(&mut self, cx: &mut Context<'_>) -> Option<Step> {
        match self.topics.poll_next_unpin(cx) {
            Poll::Ready(Some((topic, out))) => Some(self.on_topic(topic, out)),
            _ => None,
        }
    }

    /// The earliest deadline the client has to meet.
    fn deadline(&self) -> Option<Instant> {
        match (self.pong_due, self.connect_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_deadline(&mut self) -> Step {
        let now = Instant::now();
        if self.pong_due.is_some_and(|due| due <= now) {
            return Step::Close(
                CLOSE_POLICY,
                format!(
                    "no pong within pingTimeout ({} ms)",
                    millis(self.state.config.send_timeout)
                ),
            );
        }
        if self.connect_due.is_some_and(|due| due <= now) {
            return Step::Close(
                CLOSE_POLICY,
                format!(
                    "no CONNECT to a namespace within {} ms",
                    millis(connect_window(&self.state))
                ),
            );
        }
        Step::Nothing
    }

    async fn on_frame(&mut self, message: Option<Result<Message, tungstenite::Error>>) -> Step {
        let max_body = self.state.config.max_body;
        let binary = "binary frames (Socket.IO binary attachments) are not accepted";
        match text_or_step(message, max_body, &self.state.metrics, binary) {
            Ok(text) => self.on_engine_packet(&text).await,
            Err(step) => step,
        }
    }

    async fn on_engine_packet(&mut self, text: &str) -> Step {
        match wire::decode_engine(text) {
            Ok(EnginePacket::Message(data)) => self.on_packet(data).await,
            Ok(EnginePacket::Pong(_)) => {
                self.pong_due = None;
                Step::Nothing
            }
            // A ping from the client (an upgrade probe, or an EIO3 habit) is answered in kind.
            Ok(EnginePacket::Ping(data)) => Step::text(format!("{}{data}", wire::PONG)),
            Ok(EnginePacket::Close) => {
                Step::Close(CLOSE_NORMAL, "client closed the session".into())
            }
            // Nothing to upgrade from: a WebSocket session starts upgraded.
            Ok(EnginePacket::Upgrade | EnginePacket::Noop) => Step::Nothing,
            Ok(EnginePacket::Open(_)) => {
                self.protocol_error("a client may not send an open packet")
            }
            Err(error) => self.protocol_error(&format!("invalid Engine.IO packet: {error}")),
        }
    }

    async fn on_packet(&mut self, data: &str) -> Step {
        let packet = match wire::decode_packet(data) {
            Ok(packet) => packet,
            Err(error) => {
                return self.protocol_error(&format!("invalid Socket.IO packet: {error}"))
            }
        };
        match packet.kind {
            PacketType::BinaryEvent | PacketType::BinaryAck => {
                self.state.metrics.rejected(RejectReason::BadMessage);
                return Step::Close(
                    CLOSE_UNSUPPORTED,
                    "binary attachments are not accepted; send JSON arguments".into(),
                );
            }
            PacketType::Connect => return self.connect(packet.namespace),
            _ => {}
        }
        if self.sid.is_none() {
            return self.protocol_error(&format!(
                "{} before CONNECT: connect to the namespace first",
                packet.kind.name()
            ));
        }
        if packet.namespace != MAIN_NAMESPACE {
            return self
                .protocol_error(&format!("namespace {} is not connected", packet.namespace));
        }
        match packet.kind {
            PacketType::Event => self.on_event(&packet).await,
            PacketType::Disconnect => {
                // Leaving the namespace ends its subscriptions; the Engine.IO session stays open
                // for a new CONNECT (within the same window as the first).
                self.topics.clear();
                self.sid = None;
                self.connect_due = Some(Instant::now() + connect_window(&self.state));
                Step::Nothing
            }
            // The server never asks for acks, so there is nothing to match one against.
            PacketType::Ack => Step::Nothing,
            _ => self.protocol_error(&format!("a client may not send {}", packet.kind.name())),
        }
    }

    fn connect(&mut self, namespace: &str) -> Step {
        if namespace != MAIN_NAMESPACE {
            // As the reference server answers; the socket stays open for the main namespace.
            self.state.metrics.rejected(RejectReason::NotFound);
            return text(wire::connect_error(namespace, "Invalid namespace"));
        }
        self.connect_due = None;
        let sid = self.sid.get_or_insert_with(new_sid);
        text(wire::connect_ok(MAIN_NAMESPACE, sid))
    }

    async fn on_event(&mut self, packet: &Packet<'_>) -> Step {
        let id = packet.id;
        let name = packet.event_name().unwrap_or_default();
        let arg = packet.event_args().first().copied();
        match name.as_ref() {
            "subscribe" => match argument::<Subscribe>(arg) {
                Ok(s) => self.subscribe(id, &s.topic, s.after).await,
                Err(detail) => self.error(id, RejectReason::BadMessage, &detail),
            },
            "unsubscribe" => match argument::<Unsubscribe>(arg) {
                Ok(u) => self.unsubscribe(id, &u.topic),
                Err(detail) => self.error(id, RejectReason::BadMessage, &detail),
            },
            "publish" => match argument::<Publish>(arg) {
                Ok(p) => self.publish(id, &p.topic, p.payload).await,
                Err(detail) => self.error(id, RejectReason::BadMessage, &detail),
            },
            other => self.error(
                id,
                RejectReason::BadMessage,
                &format!("unknown event {other:?}; expected subscribe, unsubscribe or publish"),
            ),
        }
    }

    async fn subscribe(&mut self, id: Option<u64>, topic: &str, after: Option<u64>) -> Step {
        let name = match TopicName::parse(topic) {
            Ok(name) => name,
            Err(error) => return self.error(id, RejectReason::BadTopic, &error.to_string()),
        };
        let limit = self.state.config.ws_max_subscriptions;
        if !self.topics.contains_key(&name) && self.topics.len() >= limit {
            return self.error(
                id,
                RejectReason::SubscriptionLimit,
                &format!("a socket may subscribe to at most {limit} topics"),
            );
        }
        let subscription = match self.state.bus.subscribe(&name, after).await {
            Ok(subscription) => subscription,
            Err(error) => return self.app_error(id, AppError::Bus(error)),
        };
        let ack = json!({ "topic": topic, "after": subscription.after, "head": subscription.head });
        // Re-subscribing replaces the old subscription.
        self.topics.insert(name, subscription);
        reply(id, "subscribed", &ack)
    }

    fn unsubscribe(&mut self, id: Option<u64>, topic: &str) -> Step {
        match TopicName::parse(topic) {
            Ok(name) if self.topics.remove(&name).is_some() => {
                reply(id, "unsubscribed", &json!({ "topic": topic }))
            }
            Ok(_) => self.error(
                id,
                RejectReason::BadMessage,
                &format!("not subscribed to {topic}"),
            ),
            Err(error) => self.error(id, RejectReason::BadTopic, &error.to_string()),
        }
    }

    async fn publish(&mut self, id: Option<u64>, topic: &str, payload: String) -> Step {
        let name = match TopicName::parse(topic) {
            Ok(name) => name,
            Err(error) => return self.error(id, RejectReason::BadTopic, &error.to_string()),
        };
        match self.state.publish(&name, payload.into()).await {
            Ok(seq) => reply(id, "published", &json!({ "topic": topic, "seq": seq })),
            Err(error) => self.app_error(id, AppError::Bus(error)),
        }
    }

    fn on_topic(&mut self, topic: TopicName, out: Delivery) -> Step {
        match out {
            Delivery::Event(event) => {
                self.state.metrics.delivered(PatternKind::SocketIo, 1);
                Step::Send(event.socketio_frame().clone())
            }
            Delivery::Gap(gap) => text(wire::event(
                MAIN_NAMESPACE,
                None,
                "gap",
                &[
                    &json!({ "topic": topic.as_str(), "after": gap.after, "oldest": gap.oldest })
                        .to_string(),
                ],
            )),
            Delivery::Lagged { missed } => {
                self.state.metrics.lagged_disconnect(PatternKind::SocketIo);
                Step::Close(
                    CLOSE_POLICY,
                    format!("fell {missed} events behind on {topic}; resubscribe from your cursor"),
                )
            }
        }
    }

    /// A refused request: an ack holding `{"type":"error","error","detail"}` when the client asked
    /// for one, else an `error` event with it. The socket stays open.
    fn error(&self, id: Option<u64>, reason: RejectReason, detail: &str) -> Step {
        self.state.metrics.rejected(reason);
        let body = error_json(reason, detail);
        match id {
            Some(id) => text(wire::ack(MAIN_NAMESPACE, id, &[&body])),
            None => text(wire::event(MAIN_NAMESPACE, None, "error", &[&body])),
        }
    }

    fn app_error(&self, id: Option<u64>, error: AppError) -> Step {
        self.error(id, error.reason(), &error.to_string())
    }

    /// A packet the protocol does not allow: counted, and the socket is closed with the reason.
    fn protocol_error(&self, detail: &str) -> Step {
        self.state.metrics.rejected(RejectReason::BadMessage);
        Step::Close(CLOSE_PROTOCOL, detail.to_owned())
    }
}

/// How long a client has to connect to a namespace: what a silent client would get anyway
/// (one ping interval plus the time to answer it).
fn connect_window(state: &AppState) -> Duration {
    state.config.heartbeat + state.config.send_timeout
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Reads an event's first argument as `T`; the error says what was expected.
fn argument<'a, T: Deserialize<'a>>(arg: Option<&'a RawValue>) -> Result<T, String> {
    let arg = arg.ok_or("the event needs an object argument")?;
    serde_json::from_str(arg.get()).map_err(|e| format!("malformed argument: {e}"))
}

fn text(packet: String) -> Step {
    Step::text(packet)
}

/// The answer to a request: an ack when the client asked for one, else the named event.
fn reply(id: Option<u64>, event: &str, value: &serde_json::Value) -> Step {
    let value = value.to_string();
    match id {
        Some(id) => text(wire::ack(MAIN_NAMESPACE, id, &[&value])),
        None => text(wire::event(MAIN_NAMESPACE, None, event, &[&value])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse_or_say_why_not() {
        let raw = |s: &'static str| -> &'static RawValue { serde_json::from_str(s).unwrap() };
        let s: Subscribe = argument(Some(raw(r#"{"topic":"a","after":3}"#))).unwrap();
        assert_eq!((s.topic.as_str(), s.after), ("a", Some(3)));
        assert!(argument::<Subscribe>(None).is_err());
        assert!(argument::<Subscribe>(Some(raw(r#""a""#))).is_err());
        assert!(argument::<Publish>(Some(raw(r#"{"topic":"a","payload":1}"#))).is_err());
        let sid = new_sid();
        assert_eq!(sid.len(), 20);
        assert_ne!(sid, new_sid());
    }
}
