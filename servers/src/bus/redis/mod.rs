//! The Redis bus: per-topic streams in one shared Redis, so several server instances serve one feed.
//!
//! Publishing is one Lua script (claim the topic, INCR the counter, XADD `{seq}-0`), so sequence
//! numbers are per topic, strictly increasing and the same on every instance. Each instance follows a
//! topic's stream with one task and fans events out like the in-process bus. When Redis becomes
//! unreachable, the shared connection recovers with backoff (`crate::redis::link`), `POST /publish`
//! spools (`publish.rs`) and followers resume where they left off (`hub.rs`); reads answer 503
//! meanwhile. When Redis comes back without its data, numbering continues above the highest number
//! this instance has seen (`floors.rs`) and readers get a gap for what was lost.

mod floors;
mod hub;
mod publish;
mod recent;
pub(crate) mod wire;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use redis::{Script, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use self::floors::Floors;
use super::{
    Bus, BusError, Delivery, Gap, MemoryBusConfig, PublishError, Published, ReadBatch, Subscription,
};
use crate::{
    event::SharedEvent,
    metrics::RedisCounters,
    redis::link::{Conn, Link, LinkDown, LinkShare},
    spool::{Failure, SpoolLimits},
    topic::TopicName,
};

/// How often a waiter polls when this instance cannot follow one more topic.
const FALLBACK_POLL: Duration = Duration::from_millis(50);
/// Topics whose counters one round trip of the repair after a data loss raises.
const REPAIR_BATCH: usize = 256;

/// What a Redis bus needs beyond the feed limits.
#[derive(Debug, Clone)]
pub struct RedisBusOptions {
    /// Bounds of the outage spool for publishes.
    pub spool: SpoolLimits,
    /// Where reconnects and the spool are counted (the server's `/metrics` shares these).
    pub counters: Arc<RedisCounters>,
}

impl Default for RedisBusOptions {
    fn default() -> Self {
        Self {
            spool: SpoolLimits {
                events: 10_000,
                bytes: 64 << 20,
            },
            counters: Arc::default(),
        }
    }
}

/// [`Bus`] over a Redis server shared by every instance. `--history-bytes` does not apply: the
/// stream is bounded by `--history` events.
pub struct RedisBus {
    /// Shared with the Redis queue when the server runs both (see `AppState::connect`).
    link: LinkShare,
    config: MemoryBusConfig,
    publisher: Arc<publish::Publisher>,
    claim: Script,
    hubs: hub::Hubs,
    floors: Arc<Floors>,
    /// Ends the replay and follower tasks when the bus is dropped.
    stop: CancellationToken,
}

fn unavailable(error: redis::RedisError) -> BusError {
    BusError::Unavailable(format!("redis: {error}"))
}

impl From<LinkDown> for BusError {
    fn from(down: LinkDown) -> Self {
        BusError::Unavailable(down.to_string())
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisBus {
    /// Connects to `url` (`redis://host:port`) with the default spool and fresh counters.
    pub async fn connect(url: &str, config: MemoryBusConfig) -> Result<Self, BusError> {
        Self::connect_with(url, config, RedisBusOptions::default()).await
    }

    /// Connects to `url` and checks that Redis answers; an unreachable Redis at startup is an error
    /// (later outages are survived).
    pub async fn connect_with(
        url: &str,
        config: MemoryBusConfig,
        options: RedisBusOptions,
    ) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let link = Link::connect(client, options.counters.clone())
            .await
            .map_err(unavailable)?;
        Ok(Self::over(link, config, options.spool))
    }

    /// A bus over an already connected link (reconnects are counted where the link counts them;
    /// spooled publishes in the link's `publish_spool` counters).
    pub(crate) fn over(link: LinkShare, config: MemoryBusConfig, spool: SpoolLimits) -> Self {
        let stop = link.child_stop();
        let floors = Arc::new(Floors::new(config.max_topics.saturating_mul(2)));
        let publisher = publish::Publisher::start(
            link.link(),
            config,
            spool,
            link.counters().publish_spool.clone(),
            floors.clone(),
            stop.clone(),
        );
        let repairing = (link.link(), floors.clone());
        link.link().on_data_loss(stop.clone(), move || {
            let (link, floors) = repairing.clone();
            async move { raise_counters(&link, &floors).await }
        });
        Self {
            hubs: hub::Hubs::new(
                config.max_topics,
                config.subscriber_buffer,
                link.link(),
                floors.clone(),
                stop.clone(),
            ),
            link,
            config,
            publisher,
            claim: Script::new(wire::CLAIM_TOPIC),
            floors,
            stop,
        }
    }

    /// The topic's newest sequence number: Redis's counter, or this instance's floor when that is
    /// higher (Redis lost its data and the repair has not raised the counter yet).
    async fn head(&self, topic: &TopicName) -> Result<u64, BusError> {
        let conn = self.link.get()?;
        let head: Option<u64> = redis::cmd("GET")
            .arg(wire::seq_key(topic))
            .query_async(&mut conn.inner.clone())
            .await
            .map_err(|e| self.failed(&conn, e))?;
        Ok(self.floors.raise(topic, head.unwrap_or(0)))
    }

    /// Reports a failed command to the link (which retires the connection on an outage).
    fn failed(&self, conn: &Conn, error: redis::RedisError) -> BusError {
        self.link.failed(conn, &error);
        unavailable(error)
    }

    /// A receiver of every live event after the current head (read before joining, see
    /// [`hub::Hubs::follow`]); `None` when this instance follows too many topics.
    async fn live(
        &self,
        topic: &TopicName,
    ) -> Result<Option<broadcast::Receiver<SharedEvent>>, BusError> {
        if let Some(receiver) = self.hubs.existing(topic) {
            return Ok(Some(receiver));
        }
        let head = self.head(topic).await?;
        Ok(self.hubs.follow(topic, head))
    }
}

/// A live subscription's state after handing on `event`.
type Live = Option<(broadcast::Receiver<SharedEvent>, u64, Option<SharedEvent>)>;

fn next_event(receiver: broadcast::Receiver<SharedEvent>, event: SharedEvent) -> (Delivery, Live) {
    let last = event.seq;
    (Delivery::Event(event), Some((receiver, last, None)))
}

/// The repair after Redis lost its data: every topic's counter is raised to this instance's floor, so
/// readers, and instances that never saw the topic, find the head where it was and numbering goes on
/// above it.
async fn raise_counters(link: &Link, floors: &Floors) -> Result<(), Failure> {
    let script = Script::new(wire::RAISE_FLOOR);
    let floors = floors.all();
    for chunk in floors.chunks(REPAIR_BATCH) {
        let invocations: Vec<_> = chunk
            .iter()
            .map(|(topic, floor)| {
                let mut invocation = script.prepare_invoke();
                invocation.key(wire::seq_key(topic)).arg(*floor);
                invocation
            })
            .collect();
        let _: Vec<i64> = link.invoke_batch(&script, &invocations).await?;
    }
    tracing::info!(
        topics = floors.len(),
        "raised the sequence counters Redis lost to the highest numbers this instance has seen"
    );
    Ok(())
}

/// The gap before `events` (read after `after` from a stream whose newest number is `head`), and how
/// many of them are contiguous. Numbers are handed out one by one, so a hole means events are gone:
/// trimmed from history, or lost by Redis. A hole inside the batch ends it there (the next read after
/// the batch reports it), so a batch never hides one.
fn holes(after: u64, events: &[SharedEvent], head: u64) -> (Option<Gap>, usize) {
    let first = events.first().map_or(head + 1, |e| e.seq);
    let gap = (first > after + 1).then_some(Gap {
        after,
        oldest: first,
    });
    let contiguous = events
        .windows(2)
        .position(|pair| pair[1].seq != pair[0].seq + 1)
        .map_or(events.len(), |i| i + 1);
    (gap, contiguous)
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &TopicName, payload: Bytes) -> Result<u64, BusError> {
        // Encoded only by the instances that serve it (their follower tasks), not here.
        self.publisher.publish(topic, payload).await
    }

    async fn publish_or_spool(
        &self,
        topic: &TopicName,
        payload: Bytes,
    ) -> Result<Published, PublishError> {
        self.publisher.publish_or_spool(topic, payload).await
    }

    async fn read(
        &self,
        topic: &TopicName,
        after: u64,
        limit: usize,
    ) -> Result<ReadBatch, BusError> {
        // A followed topic's newest events are already here (a woken long poll re-reads exactly
        // those): no round trip.
        if let Some(batch) = self.hubs.read_recent(topic, after, limit) {
            return Ok(batch);
        }
        // The stream never holds more than `history_events`, so that bounds an unlimited read; one
        // more than asked tells whether there is more.
        let count = limit.min(self.config.history_events).saturating_add(1);
        let conn = self.link.get()?;
        let (head, range): (Option<u64>, Value) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(wire::seq_key(topic))
            .cmd("XRANGE")
            .arg(wire::stream_key(topic))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn.inner.clone())
            .await
            .map_err(|e| self.failed(&conn, e))?;
        let head = self.floors.raise(topic, head.unwrap_or(0));
        if after > head {
            return Err(BusError::CursorAhead { after, head });
        }
        let mut events = wire::parse_entries(topic, &range).map_err(BusError::Unavailable)?;
        let (gap, contiguous) = holes(after, &events, head);
        let more = events.len() > limit.min(contiguous);
        events.truncate(limit.min(contiguous));
        Ok(ReadBatch {
            events,
            head,
            gap,
            more,
        })
    }

    async fn wait_for_event(
        &self,
        topic: &TopicName,
        after: u64,
        wait: Duration,
    ) -> Result<(), BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        // Following a stream claims no topic in Redis, so waiters use no topic slot.
        let mut receiver = self.live(topic).await?;
        loop {
            let head = self.head(topic).await?;
            if after > head {
                return Err(BusError::CursorAhead { after, head });
            }
            if head > after || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            match receiver.as_mut() {
                Some(receiver) => {
                    // Any outcome (an event, a lag, a closed follower, the deadline) means: look again,
                    // once; the caller reads whatever is there.
                    let _ = tokio::time::timeout_at(deadline, receiver.recv()).await;
                    return Ok(());
                }
                None => {
                    tokio::time::sleep_until(
                        deadline.min(tokio::time::Instant::now() + FALLBACK_POLL),
                    )
                    .await
                }
            }
        }
    }

    async fn subscribe(
        &self,
        topic: &TopicName,
        after: Option<u64>,
    ) -> Result<Subscription, BusError> {
        let conn = self.link.get()?;
        let claimed: i64 = self
            .claim
            .key(wire::TOPICS_KEY)
            .arg(topic.as_str())
            .arg(self.config.max_topics)
            .invoke_async(&mut conn.inner.clone())
            .await
            .map_err(|e| self.failed(&conn, e))?;
        let limit = BusError::TopicLimit {
            limit: self.config.max_topics,
        };
        if claimed < 0 {
            return Err(limit);
        }
        // Joined before the backlog is read, so every event after the backlog arrives live.
        let receiver = self.live(topic).await?.ok_or(limit)?;
        let after = match after {
            Some(after) => after,
            None => self.head(topic).await?,
        };
        // A read stops at a hole (events lost in between), so the backlog may take a few.
        let mut items: Vec<Delivery> = Vec::new();
        let mut last = after;
        let head = loop {
            let backlog = self.read(topic, last, usize::MAX).await?;
            if let Some(gap) = backlog.gap {
                last = gap.oldest - 1;
                items.push(Delivery::Gap(gap));
            }
            last = backlog.events.last().map_or(last, |e| e.seq);
            items.extend(backlog.events.into_iter().map(Delivery::Event));
            if !backlog.more {
                break backlog.head;
            }
        };
        let live = stream::unfold(Some((receiver, last, None)), |state| async move {
            let (mut receiver, mut last, held) = state?;
            if let Some(event) = held {
                return Some(next_event(receiver, event));
            }
            loop {
                match receiver.recv().await {
                    // The follower may hand on events the backlog already delivered.
                    Ok(event) if event.seq <= last => continue,
                    // Numbers are handed out one by one: a jump means events this subscriber will
                    // never see (lost by Redis, or trimmed before the follower read them).
                    Ok(event) if event.seq > last + 1 => {
                        let gap = Gap {
                            after: last,
                            oldest: event.seq,
                        };
                        last = event.seq - 1;
                        return Some((Delivery::Gap(gap), Some((receiver, last, Some(event)))));
                    }
                    Ok(event) => return Some(next_event(receiver, event)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        return Some((Delivery::Lagged { missed }, None))
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(Subscription::new(
            after,
            head,
            stream::iter(items).chain(live),
        ))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::Event;

    fn events(seqs: &[u64]) -> Vec<SharedEvent> {
        let topic = TopicName::parse("t").unwrap_or_else(|e| panic!("{e}"));
        seqs.iter()
            .map(|&seq| Event::new(topic.clone(), seq, Bytes::new()))
            .collect()
    }

    #[test]
    fn a_hole_is_a_gap_before_the_batch_or_ends_it() {
        assert_eq!(holes(3, &events(&[4, 5]), 5), (None, 2));
        // Trimmed, or lost by Redis: the batch starts later than asked.
        let gap = Some(Gap {
            after: 3,
            oldest: 21,
        });
        assert_eq!(holes(3, &events(&[21, 22]), 22), (gap, 2));
        // Nothing left after the cursor although the head is beyond it.
        let gap = Some(Gap {
            after: 3,
            oldest: 21,
        });
        assert_eq!(holes(3, &events(&[]), 20), (gap, 0));
        assert_eq!(holes(20, &events(&[]), 20), (None, 0));
        // A hole inside: only the events before it are contiguous.
        assert_eq!(holes(0, &events(&[1, 2, 21, 22]), 22), (None, 2));
    }
}
