//! The Redis bus: per-topic streams in one shared Redis, so several server instances serve one feed.
//!
//! Publishing is one Lua script (claim the topic, INCR the counter, XADD `{seq}-0`), so sequence
//! numbers are per topic, strictly increasing and the same on every instance. Each instance follows a
//! topic's stream with one task and fans events out like the in-process bus.

mod hub;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, Script, Value};
use tokio::sync::broadcast;

use super::{Bus, BusError, Delivery, Gap, MemoryBusConfig, ReadBatch, Subscription};
use crate::{event::SharedEvent, topic::TopicName};

/// Bound on connecting and on every ordinary command, so a stalled Redis becomes a 503, not a hang.
const TIMEOUT: Duration = Duration::from_secs(5);
/// How often a waiter polls when this instance cannot follow one more topic.
const FALLBACK_POLL: Duration = Duration::from_millis(50);

/// [`Bus`] over a Redis server shared by every instance. `--history-bytes` does not apply: the
/// stream is bounded by `--history` events.
pub struct RedisBus {
    client: redis::Client,
    connection: MultiplexedConnection,
    config: MemoryBusConfig,
    publish: Script,
    claim: Script,
    hubs: hub::Hubs,
}

fn unavailable(error: redis::RedisError) -> BusError {
    BusError::Unavailable(format!("redis: {error}"))
}

impl RedisBus {
    /// Connects to `url` (`redis://host:port`) and checks that Redis answers.
    pub async fn connect(url: &str, config: MemoryBusConfig) -> Result<Self, BusError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let mut connection = client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
            .map_err(unavailable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            client,
            connection,
            config,
            publish: Script::new(wire::PUBLISH),
            claim: Script::new(wire::CLAIM_TOPIC),
            hubs: hub::Hubs::new(config.max_topics, config.subscriber_buffer),
        })
    }

    /// A connection of its own for blocking reads, which must not stall the shared one.
    async fn blocking_connection(&self) -> Result<MultiplexedConnection, BusError> {
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
            .map_err(unavailable)
    }

    async fn head(&self, topic: &TopicName) -> Result<u64, BusError> {
        let head: Option<u64> = redis::cmd("GET")
            .arg(wire::seq_key(topic))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(head.unwrap_or(0))
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
        let connection = self.blocking_connection().await?;
        Ok(self.hubs.follow(topic, head, connection))
    }
}

#[async_trait]
impl Bus for RedisBus {
    async fn publish(&self, topic: &TopicName, payload: Bytes) -> Result<u64, BusError> {
        let seq: i64 = self
            .publish
            .key(wire::TOPICS_KEY)
            .key(wire::seq_key(topic))
            .key(wire::stream_key(topic))
            .arg(topic.as_str())
            .arg(self.config.max_topics)
            .arg(payload.as_ref())
            .arg(self.config.history_events)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        match u64::try_from(seq) {
            // Encoded only by the instances that serve it (their follower tasks), not here.
            Ok(seq) => Ok(seq),
            Err(_) => Err(BusError::TopicLimit {
                limit: self.config.max_topics,
            }),
        }
    }

    async fn read(
        &self,
        topic: &TopicName,
        after: u64,
        limit: usize,
    ) -> Result<ReadBatch, BusError> {
        // The stream never holds more than `history_events`, so that bounds an unlimited read; one
        // more than asked tells whether there is more.
        let count = limit.min(self.config.history_events).saturating_add(1);
        let stream = wire::stream_key(topic);
        let (head, first, range): (Option<u64>, Value, Value) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(wire::seq_key(topic))
            .cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XRANGE")
            .arg(&stream)
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        let head = head.unwrap_or(0);
        if after > head {
            return Err(BusError::CursorAhead { after, head });
        }
        let oldest = wire::parse_entries(topic, &first)
            .map_err(BusError::Unavailable)?
            .first()
            .map_or(head + 1, |e| e.seq);
        let mut events = wire::parse_entries(topic, &range).map_err(BusError::Unavailable)?;
        let more = events.len() > limit;
        events.truncate(limit);
        Ok(ReadBatch {
            events,
            head,
            gap: (after + 1 < oldest).then_some(Gap { after, oldest }),
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
        let claimed: i64 = self
            .claim
            .key(wire::TOPICS_KEY)
            .arg(topic.as_str())
            .arg(self.config.max_topics)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
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
        let backlog = self.read(topic, after, usize::MAX).await?;
        let head = backlog.head;
        let last = backlog.events.last().map_or(after.max(head), |e| e.seq);
        let mut items: Vec<Delivery> = Vec::with_capacity(backlog.events.len() + 1);
        items.extend(backlog.gap.map(Delivery::Gap));
        items.extend(backlog.events.into_iter().map(Delivery::Event));
        let live = stream::unfold(Some((receiver, last)), |state| async move {
            let (mut receiver, mut last) = state?;
            loop {
                match receiver.recv().await {
                    // The follower may hand on events the backlog already delivered.
                    Ok(event) if event.seq <= last => continue,
                    Ok(event) => {
                        last = event.seq;
                        return Some((Delivery::Event(event), Some((receiver, last))));
                    }
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
