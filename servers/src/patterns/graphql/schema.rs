//! The GraphQL schema over the shared feed: `events` query (short polling), `publish` mutation and
//! `events` subscription (backlog, then live), with the server's limits, metrics and error labels.

use std::sync::{Arc, Mutex};

use async_graphql::{
    Context, Error, ErrorExtensions as _, Object, Result, Schema, SimpleObject, Subscription,
};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{future::Either, stream::BoxStream, Stream, StreamExt};

use super::{
    limits::{CostLimits, ResponseBudget},
    slots::{Slot, SubscriptionSlots},
};
use crate::{
    app::AppState,
    bus::{self, BusError, Delivery},
    event::SharedEvent,
    metrics::{ActiveGuard, Metrics, PatternKind, RejectReason},
    topic::TopicName,
};

pub type FeedSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Nesting the parser's recursive checks accept (selections, lists, objects); above
/// [`MAX_DEPTH`](super::limits::MAX_DEPTH) so an over-deep selection gets the clearer depth error.
pub const MAX_RECURSION: usize = 16;
/// Directives accepted on one field; the schema defines none beyond `@skip`/`@include`.
pub const MAX_DIRECTIVES: usize = 4;

/// The message of the error that ends a subscription which fell too far behind (the contract).
pub const LAGGED: &str = "lagged";

/// Builds the schema once; the shared state travels in the schema data.
pub fn build(state: AppState) -> FeedSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(state)
        // Depth and complexity are checked there, so the refusal carries its reason code.
        .extension(CostLimits)
        .limit_recursive_depth(MAX_RECURSION)
        .limit_directives(MAX_DIRECTIVES)
        .finish()
}

/// The schema in SDL (no state needed to print it).
pub fn sdl() -> String {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .finish()
        .sdl()
}

/// A GraphQL error carrying the same reason label as the HTTP routes' `error` field in
/// `extensions.code`, so clients and the rejection counter can tell refusals apart.
pub fn refusal(reason: RejectReason, detail: impl Into<String>) -> Error {
    Error::new(detail).extend_with(|_, ext| ext.set("code", reason.label()))
}

fn bus_refusal(error: BusError) -> Error {
    let reason = match error {
        BusError::CursorAhead { .. } => RejectReason::CursorAhead,
        BusError::TopicLimit { .. } => RejectReason::TopicLimit,
        BusError::Unavailable(_) => RejectReason::Unavailable,
    };
    refusal(reason, error.to_string())
}

fn topic_name(topic: &str) -> Result<TopicName> {
    TopicName::parse(topic).map_err(|e| refusal(RejectReason::BadTopic, e.to_string()))
}

fn state<'a>(ctx: &Context<'a>) -> Result<&'a AppState> {
    ctx.data::<AppState>()
}

/// One event. `data` holds a UTF-8 payload and `dataB64` any other payload, base64-encoded: the same
/// rule as the event JSON every other pattern sends.
#[derive(Clone)]
pub struct Event(SharedEvent);

/// One event: `data` when the payload is UTF-8, otherwise `dataB64`.
#[Object]
impl Event {
    async fn topic(&self) -> &str {
        self.0.topic.as_str()
    }

    async fn seq(&self) -> u64 {
        self.0.seq
    }

    async fn data(&self) -> Option<&str> {
        std::str::from_utf8(&self.0.payload).ok()
    }

    async fn data_b64(&self) -> Option<String> {
        std::str::from_utf8(&self.0.payload)
            .is_err()
            .then(|| base64::engine::general_purpose::STANDARD.encode(&self.0.payload))
    }
}

/// Events `after + 1 .. oldest` are gone from history.
#[derive(SimpleObject, Clone, Copy)]
pub struct Gap {
    after: u64,
    oldest: u64,
}

impl From<bus::Gap> for Gap {
    fn from(gap: bus::Gap) -> Self {
        Self {
            after: gap.after,
            oldest: gap.oldest,
        }
    }
}

/// A poll answer, as `GET /poll/{topic}` gives it.
#[derive(SimpleObject)]
pub struct EventPage {
    topic: String,
    head: u64,
    more: bool,
    gap: Option<Gap>,
    events: Vec<Event>,
}

#[derive(SimpleObject)]
pub struct Published {
    topic: String,
    seq: u64,
}

/// One subscription item: exactly one of `event` and `gap` is set.
#[derive(SimpleObject)]
pub struct FeedItem {
    event: Option<Event>,
    gap: Option<Gap>,
}

pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// Events after the cursor, at most `limit` (default and cap: --poll-max-events) and at most
    /// --graphql-max-response bytes of them per answer; `more` marks a capped answer and `gap` a
    /// cursor older than history. The GraphQL form of short polling.
    async fn events(
        &self,
        ctx: &Context<'_>,
        topic: String,
        #[graphql(default = 0)] after: u64,
        limit: Option<u64>,
    ) -> Result<EventPage> {
        let state = state(ctx)?;
        let name = topic_name(&topic)?;
        // A limit too large for usize is out of range all the same.
        let limit = limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let limit = super::super::poll_limit(limit, state.config.poll_max_events)
            .map_err(|e| refusal(e.reason(), e.to_string()))?;
        let mut batch = state
            .bus
            .read(&name, after, limit)
            .await
            .map_err(bus_refusal)?;
        // One answer carries a bounded amount of event data, however many aliases ask for it.
        if let Some(budget) = ctx.data_opt::<ResponseBudget>() {
            let fits = budget.take(&batch.events);
            if fits == 0 && !batch.events.is_empty() {
                return Err(refusal(
                    RejectReason::ResponseTooLarge,
                    format!(
                        "this answer already carries its limit of {} bytes of events \
                         (--graphql-max-response); ask for fewer aliases or a smaller limit",
                        budget.limit()
                    ),
                ));
            }
            if fits < batch.events.len() {
                batch.events.truncate(fits);
                batch.more = true;
            }
        }
        state
            .metrics
            .delivered(PatternKind::GraphQl, batch.events.len() as u64);
        Ok(EventPage {
            topic,
            head: batch.head,
            more: batch.more,
            gap: batch.gap.map(Gap::from),
            events: batch.events.into_iter().map(Event).collect(),
        })
    }
}

pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Publishes `payload` to `topic` (counted like every other publish).
    async fn publish(
        &self,
        ctx: &Context<'_>,
        topic: String,
        payload: String,
    ) -> Result<Published> {
        let name = topic_name(&topic)?;
        let seq = state(ctx)?
            .publish(&name, Bytes::from(payload))
            .await
            .map_err(bus_refusal)?;
        Ok(Published { topic, seq })
    }
}

pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Follows a topic after `after` (backlog, then live; without `after`, live from the head). A
    /// cursor older than history yields a `gap` item; a subscriber that falls more than
    /// --subscriber-buffer events behind gets the error `lagged` and the stream ends.
    async fn events(
        &self,
        ctx: &Context<'_>,
        topic: String,
        after: Option<u64>,
    ) -> Result<impl Stream<Item = Result<FeedItem>>> {
        let state = state(ctx)?;
        let name = topic_name(&topic)?;
        let slot = ctx
            .data_opt::<SubscriptionSlots>()
            .map(SubscriptionSlots::take)
            .transpose()?;
        let subscription = state
            .bus
            .subscribe(&name, after)
            .await
            .map_err(bus_refusal)?;
        let live = Live {
            deliveries: subscription
                .take_until(state.shutdown.clone().cancelled_owned())
                .boxed(),
            // The stream owns its slot and active mark: ending it (complete, close, lag) frees them.
            held: Some((slot, state.metrics.active(PatternKind::GraphQl))),
            metrics: state.metrics.clone(),
        };
        // A session that renders this operation's items itself takes the stream over; the
        // execution then ends without an item.
        if let Some(hand_over) = ctx.data_opt::<HandOver>() {
            hand_over.put(live);
            return Ok(Either::Left(
                futures_util::stream::empty::<Result<FeedItem>>(),
            ));
        }
        Ok(Either::Right(live.items().map(|item| match item {
            LiveItem::Event(event) => Ok(FeedItem {
                event: Some(Event(event)),
                gap: None,
            }),
            LiveItem::Gap(gap) => Ok(FeedItem {
                event: None,
                gap: Some(gap.into()),
            }),
            LiveItem::Lagged { missed } => Err(lagged(missed)),
        })))
    }
}

/// A started `events` subscription: its deliveries (ending at shutdown), and the subscription slot
/// and active mark it holds until it ends.
pub struct Live {
    deliveries: BoxStream<'static, Delivery>,
    held: Option<(Option<Slot>, ActiveGuard)>,
    metrics: Arc<Metrics>,
}

/// What a [`Live`] subscription yields, counted.
pub enum LiveItem {
    Event(SharedEvent),
    Gap(bus::Gap),
    /// The last item: the subscriber fell too far behind.
    Lagged {
        missed: u64,
    },
}

impl Live {
    /// The items, each delivered event counted; a lag is counted as a lagged disconnect and frees
    /// the slot and active mark at once.
    pub fn items(self) -> impl Stream<Item = LiveItem> + Send + 'static {
        let Self {
            deliveries,
            held,
            metrics,
        } = self;
        deliveries.scan(held, move |held, delivery| {
            let item = match delivery {
                Delivery::Event(event) => {
                    metrics.delivered(PatternKind::GraphQl, 1);
                    LiveItem::Event(event)
                }
                Delivery::Gap(gap) => LiveItem::Gap(gap),
                // The bus ends the stream after this item. The subscriber is cut off now, so
                // it no longer counts as open should the error itself then stall the socket.
                Delivery::Lagged { missed } => {
                    *held = None;
                    metrics.lagged_disconnect(PatternKind::GraphQl);
                    LiveItem::Lagged { missed }
                }
            };
            std::future::ready(Some(item))
        })
    }
}

/// Request data through which the `events` resolver hands its started subscription to the caller
/// instead of executing the selection for every item (see `direct.rs`).
#[derive(Clone, Default)]
pub struct HandOver(Arc<Mutex<Option<Live>>>);

impl HandOver {
    fn put(&self, live: Live) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
    }

    /// The subscription the resolver handed over, if it started one.
    pub fn take(&self) -> Option<Live> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The error that ends a subscription which fell too far behind.
pub fn lagged(missed: u64) -> Error {
    Error::new(LAGGED).extend_with(|_, ext| {
        ext.set("code", LAGGED);
        ext.set("missed", missed);
        ext.set(
            "detail",
            "fell too far behind; subscribe again with after: <your cursor>",
        );
    })
}
