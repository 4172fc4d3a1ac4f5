//! WebSocket push and chat: `GET /ws`. Clients send JSON text control messages (`subscribe`,
//! `unsubscribe`, `publish`); events arrive as binary frames holding the shared event JSON; replies,
//! join notices, gaps and errors arrive as JSON text frames. Lagging or stalled clients are closed.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
};

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use axum::{
    extract::{ws::rejection::WebSocketUpgradeRejection, State},
    response::Response,
    routing::get,
    Extension, Router,
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_stream::{wrappers::BroadcastStream, StreamMap};
use tokio_tungstenite::tungstenite::{self, Message};

use crate::{
    app::AppState,
    bus::{BusError, Delivery, Subscription},
    error::{error_json, AppError},
    extract::json_object,
    metrics::{Metrics, PatternKind, RejectReason},
    topic::TopicName,
    ws_close::{perform, text_or_step, Step},
    ws_conn::{Limits, Upgrade, WsConn},
};

pub fn routes(_: &AppState) -> Router<AppState> {
    Router::new()
        .route("/ws", get(upgrade))
        .layer(Extension(Arc::new(Presence::default())))
}

async fn upgrade(
    State(state): State<AppState>,
    Extension(presence): Extension<Arc<Presence>>,
    ws: Result<Upgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::WebSocket);
    let ws = ws.map_err(|rejection| {
        AppError::BadQuery(format!(
            "GET /ws needs a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    let limits = Limits::of(&state, PatternKind::WebSocket);
    Ok(ws.on_upgrade(limits, move |conn| Session::new(state, presence).run(conn)))
}

/// Client → server control messages.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Control {
    Subscribe {
        topic: String,
        after: Option<u64>,
        /// `false` opts out of join notices (a pure push subscriber; commbench's load clients do).
        #[serde(default = "yes")]
        joins: bool,
    },
    Unsubscribe {
        topic: String,
    },
    Publish {
        topic: String,
        payload: String,
    },
}

fn yes() -> bool {
    true
}

/// Who subscribed to which topic, so a join can be announced to the others in the room.
/// Rooms exist only for topics the bus accepted, so they are bounded by `--max-topics`.
#[derive(Default)]
struct Presence {
    next_session: AtomicU64,
    rooms: Mutex<HashMap<TopicName, Room>>,
}

struct Room {
    notices: broadcast::Sender<JoinNotice>,
    members: Arc<AtomicUsize>,
}

/// One socket's membership of a room; leaving (drop) updates the member count.
struct Membership(Arc<AtomicUsize>);

impl Drop for Membership {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
struct JoinNotice {
    joiner: u64,
    subscribers: usize,
}

/// Join notices a room buffers per member before a slow member starts missing them (counted).
const PRESENCE_BUFFER: usize = 64;

impl Presence {
    /// Announces `joiner` to the room; returns its membership and, when it `listens`, the notices of
    /// later joins. Members that do not listen cost nothing per join.
    fn join(
        &self,
        topic: &TopicName,
        joiner: u64,
        listens: bool,
    ) -> (Membership, Option<broadcast::Receiver<JoinNotice>>) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms.entry(topic.clone()).or_insert_with(|| Room {
            notices: broadcast::channel(PRESENCE_BUFFER).0,
            members: Arc::default(),
        });
        let subscribers = room.members.fetch_add(1, Relaxed) + 1;
        let receiver = listens.then(|| room.notices.subscribe());
        let _ = room.notices.send(JoinNotice {
            joiner,
            subscribers,
        });
        (Membership(room.members.clone()), receiver)
    }
}

/// What one subscribed topic yields to the session.
enum Out {
    Delivery(Delivery),
    Join(JoinNotice),
}

/// One followed topic: its deliveries and, for a member that listens, the room's join notices,
/// taken in turn. It ends with the subscription; dropping it leaves the room.
struct TopicFeed {
    deliveries: Subscription,
    joins: Option<BroadcastStream<JoinNotice>>,
    me: u64,
    metrics: Arc<Metrics>,
    joins_first: bool,
    _membership: Membership,
}

impl TopicFeed {
    fn poll_join(&mut self, cx: &mut Context<'_>) -> Poll<Option<Out>> {
        let Some(joins) = &mut self.joins else {
            return Poll::Pending;
        };
        loop {
            match joins.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(notice))) if notice.joiner != self.me => {
                    return Poll::Ready(Some(Out::Join(notice)))
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(_))) => {
                    self.metrics.join_notices_dropped.fetch_add(1, Relaxed);
                }
                Poll::Ready(None) => {
                    self.joins = None;
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl futures_util::Stream for TopicFeed {
    type Item = Out;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Out>> {
        let this = &mut *self;
        // Fair between the two, as a select of both streams would be.
        this.joins_first = !this.joins_first;
        if this.joins_first {
            if let Poll::Ready(out) = this.poll_join(cx) {
                return Poll::Ready(out);
            }
        }
        match this.deliveries.poll_next_unpin(cx) {
            Poll::Ready(delivery) => return Poll::Ready(delivery.map(Out::Delivery)),
            Poll::Pending => {}
        }
        if !this.joins_first {
            return this.poll_join(cx);
        }
        Poll::Pending
    }
}

struct Session {
    state: AppState,
    presence: Arc<Presence>,
    id: u64,
    topics: StreamMap<TopicName, TopicFeed>,
}

impl Session {
    fn new(state: AppState, presence: Arc<Presence>) -> Self {
        let id = presence.next_session.fetch_add(1, Relaxed);
        Self {
            state,
            presence,
            id,
            topics: StreamMap::new(),
        }
    }

    async fn run(mut self, mut conn: WsConn) {
        let _active = self.state.metrics.active(PatternKind::WebSocket);
        let shutdown = self.state.shutdown.clone().cancelled_owned();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut heartbeat = tokio::time::interval(self.state.config.heartbeat);
        heartbeat.reset();
        loop {
            let step = tokio::select! {
                () = &mut shutdown => Step::Close(1001, "server shutting down".into()),
                message = conn.next() => self.on_message(message).await,
                Some((topic, out)) = self.topics.next(), if !self.topics.is_empty() => {
                    self.on_topic(topic, out)
                }
                _ = heartbeat.tick() => Step::Send(crate::ws_conn::PING_FRAME),
            };
            // Events already waiting go out in the same write.
            if !perform(&mut conn, step, |cx| self.ready_topic(cx)).await {
                return;
            }
        }
    }

    /// The next delivery that is already waiting, if any.
    fn ready_topic(&mut self, cx: &mut Context<'_>) -> Option<Step> {
        match self.topics.poll_next_unpin(cx) {
            Poll::Ready(Some((topic, out))) => Some(self.on_topic(topic, out)),
            _ => None,
        }
    }

    async fn on_message(&mut self, message: Option<Result<Message, tungstenite::Error>>) -> Step {
        let max_body = self.state.config.max_body;
        let binary = "binary messages are not accepted; send JSON text";
        let text = match text_or_step(message, max_body, &self.state.metrics, binary) {
            Ok(text) => text,
            Err(step) => return step,
        };
        match json_object::<Control>(text.as_bytes()) {
            Ok(control) => self.on_control(control).await,
            Err(error) => self.error(
                RejectReason::BadMessage,
                &format!("malformed control message: {error}"),
            ),
        }
    }

    async fn on_control(&mut self, control: Control) -> Step {
        match control {
            Control::Subscribe {
                topic,
                after,
                joins,
            } => self.subscribe(&topic, after, joins).await,
            Control::Unsubscribe { topic } => match TopicName::parse(&topic) {
                Ok(name) if self.topics.remove(&name).is_some() => {
                    reply(json!({ "type": "unsubscribed", "topic": topic }))
                }
                Ok(_) => self.error(
                    RejectReason::BadMessage,
                    &format!("not subscribed to {topic}"),
                ),
                Err(error) => self.error(RejectReason::BadTopic, &error.to_string()),
            },
            Control::Publish { topic, payload } => {
                let name = match TopicName::parse(&topic) {
                    Ok(name) => name,
                    Err(error) => return self.error(RejectReason::BadTopic, &error.to_string()),
                };
                match self.state.publish(&name, Bytes::from(payload)).await {
                    Ok(seq) => reply(json!({ "type": "published", "topic": topic, "seq": seq })),
                    Err(error) => self.bus_error(&error),
                }
            }
        }
    }

    async fn subscribe(&mut self, topic: &str, after: Option<u64>, listens: bool) -> Step {
        let name = match TopicName::parse(topic) {
            Ok(name) => name,
            Err(error) => return self.error(RejectReason::BadTopic, &error.to_string()),
        };
        let limit = self.state.config.ws_max_subscriptions;
        if !self.topics.contains_key(&name) && self.topics.len() >= limit {
            return self.error(
                RejectReason::SubscriptionLimit,
                &format!("a socket may subscribe to at most {limit} topics"),
            );
        }
        let subscription = match self.state.bus.subscribe(&name, after).await {
            Ok(subscription) => subscription,
            Err(error) => return self.bus_error(&error),
        };
        let ack = json!({
            "type": "subscribed",
            "topic": topic,
            "after": subscription.after,
            "head": subscription.head,
        });
        // Re-subscribing replaces the old subscription: leave the room first so it is not counted
        // twice.
        self.topics.remove(&name);
        let (membership, joins) = self.presence.join(&name, self.id, listens);
        let feed = TopicFeed {
            deliveries: subscription,
            joins: joins.map(BroadcastStream::new),
            me: self.id,
            metrics: self.state.metrics.clone(),
            joins_first: false,
            _membership: membership,
        };
        self.topics.insert(name, feed);
        reply(ack)
    }

    fn on_topic(&mut self, topic: TopicName, out: Out) -> Step {
        match out {
            Out::Delivery(Delivery::Event(event)) => {
                self.state.metrics.delivered(PatternKind::WebSocket, 1);
                Step::Send(event.ws_frame().clone())
            }
            Out::Delivery(Delivery::Gap(gap)) => reply(json!({
                "type": "gap", "topic": topic.as_str(), "after": gap.after, "oldest": gap.oldest,
            })),
            Out::Delivery(Delivery::Lagged { missed }) => {
                self.state.metrics.lagged_disconnect(PatternKind::WebSocket);
                Step::Close(
                    1008,
                    format!("fell {missed} events behind on {topic}; resubscribe from your cursor"),
                )
            }
            Out::Join(notice) => reply(json!({
                "type": "join", "topic": topic.as_str(), "subscribers": notice.subscribers,
            })),
        }
    }

    fn error(&self, reason: RejectReason, detail: &str) -> Step {
        self.state.metrics.rejected(reason);
        Step::text(error_json(reason, detail))
    }

    fn bus_error(&self, error: &BusError) -> Step {
        let reason = match error {
            BusError::CursorAhead { .. } => RejectReason::CursorAhead,
            BusError::TopicLimit { .. } => RejectReason::TopicLimit,
            BusError::Unavailable(_) => RejectReason::Unavailable,
        };
        self.error(reason, &error.to_string())
    }
}

fn reply(value: serde_json::Value) -> Step {
    Step::text(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_parse() {
        let c: Result<Control, _> =
            serde_json::from_str(r#"{"type":"subscribe","topic":"a","after":3}"#);
        assert!(matches!(c, Ok(Control::Subscribe { after: Some(3), .. })));
        let c: Result<Control, _> = serde_json::from_str(r#"{"type":"shout","topic":"a"}"#);
        assert!(c.is_err());
    }
}
