//! Publishing through Redis with an outage spool: an event that cannot reach Redis is held in a bounded
//! FIFO and replayed in order (by the generic [`Replayer`]) as soon as Redis answers again. While
//! anything waits in the spool, new publishes queue behind it, so one publisher's events keep their
//! order. Every publish carries the topic's floor (`floors.rs`), so numbering continues above what
//! this instance has seen even when Redis lost its data.

use std::sync::Arc;

use bytes::Bytes;
use redis::Script;
use tokio_util::sync::CancellationToken;

use super::{floors::Floors, wire};
use crate::{
    bus::{
        outbox::{AppendError, Outbox, PendingPublish},
        BusError, MemoryBusConfig, PublishError, Published,
    },
    metrics::SpoolCounters,
    redis::link::Link,
    spool::{Failure, Outcome, Replay, SpoolLimits},
    topic::TopicName,
};

/// The publishing side of one Redis bus instance.
pub struct Publisher {
    link: Arc<Link>,
    script: Script,
    config: MemoryBusConfig,
    outbox: Outbox,
    /// Shared with the followers and reads of this bus instance.
    floors: Arc<Floors>,
}

impl Publisher {
    /// Creates the publisher and starts its replay task, which ends when `stop` is cancelled.
    pub fn start(
        link: Arc<Link>,
        config: MemoryBusConfig,
        limits: SpoolLimits,
        counters: Arc<SpoolCounters>,
        floors: Arc<Floors>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let publisher = Arc::new(Self::new(link, config, limits, counters, floors));
        let replaying = publisher.clone();
        tokio::spawn(async move { replaying.outbox.replayer().run(&*replaying, stop).await });
        publisher
    }

    fn new(
        link: Arc<Link>,
        config: MemoryBusConfig,
        limits: SpoolLimits,
        counters: Arc<SpoolCounters>,
        floors: Arc<Floors>,
    ) -> Self {
        Self {
            link,
            script: Script::new(wire::PUBLISH),
            config,
            outbox: Outbox::new("Redis", limits, counters),
            floors,
        }
    }

    /// Appends now or fails; never spools (see [`Outbox::publish`]).
    pub async fn publish(&self, topic: &TopicName, payload: Bytes) -> Result<u64, BusError> {
        let append = |pending: PendingPublish| async move { self.append(&pending).await };
        self.outbox.publish(topic, payload, append).await
    }

    /// Appends now or spools the event for an in-order replay (see [`Outbox::publish_or_spool`]).
    pub async fn publish_or_spool(
        &self,
        topic: &TopicName,
        payload: Bytes,
    ) -> Result<Published, PublishError> {
        let append = |pending: PendingPublish| async move { self.append(&pending).await };
        self.outbox.publish_or_spool(topic, payload, append).await
    }

    /// Runs the script: the sequence number (which raises the topic's floor), or the topic limit.
    async fn append(&self, pending: &PendingPublish) -> Result<u64, AppendError> {
        let answer: i64 = self
            .link
            .invoke(&self.invocation(pending))
            .await
            .map_err(AppendError::Failed)?;
        let seq = u64::try_from(answer).map_err(|_| {
            AppendError::Limit(BusError::TopicLimit {
                limit: self.config.max_topics,
            })
        })?;
        self.floors.raise(&pending.topic, seq);
        Ok(seq)
    }

    fn invocation(&self, pending: &PendingPublish) -> redis::ScriptInvocation<'_> {
        let topic = &pending.topic;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(wire::TOPICS_KEY)
            .key(wire::seq_key(topic))
            .key(wire::stream_key(topic))
            .arg(topic.as_str())
            .arg(self.config.max_topics)
            .arg(pending.payload.as_ref())
            .arg(self.config.history_events)
            .arg(&pending.id)
            .arg(u8::from(pending.maybe_applied))
            .arg(wire::DEDUPE_WINDOW)
            .arg(self.floors.get(topic));
        invocation
    }
}

impl Replay for Publisher {
    type Item = PendingPublish;
    const NOUN: &'static str = "publish";

    /// One pipeline; each answer is a sequence number or -1 (the topic limit, a refusal for good).
    async fn apply_batch(&self, batch: &[PendingPublish]) -> Result<Vec<Outcome>, Failure> {
        let invocations: Vec<_> = batch.iter().map(|p| self.invocation(p)).collect();
        let answers: Vec<i64> = self.link.invoke_batch(&self.script, &invocations).await?;
        Ok(batch
            .iter()
            .zip(answers)
            .map(|(pending, seq)| match seq {
                1.. => {
                    self.floors.raise(&pending.topic, seq as u64);
                    Outcome::Applied
                }
                _ => Outcome::Refused(format!(
                    "the topic limit ({}) is reached",
                    self.config.max_topics
                )),
            })
            .collect())
    }

    async fn wait_up(&self) {
        self.link.wait_up().await;
    }

    /// The script then looks for the publish id among the topic's newest entries before appending.
    fn maybe_applied(pending: &mut PendingPublish) {
        pending.maybe_applied = true;
    }

    fn describe(pending: &PendingPublish) -> String {
        pending.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        metrics::RedisCounters,
        redis::link::{test_link, LinkShare},
    };

    /// A publisher without a replay task (a test drains the spool itself).
    fn test_publisher(
        link: &LinkShare,
        counters: &RedisCounters,
        floors: Arc<Floors>,
    ) -> Publisher {
        let config = MemoryBusConfig {
            history_events: 100,
            history_bytes: usize::MAX,
            max_topics: 10,
            subscriber_buffer: 8,
        };
        let limits = SpoolLimits {
            events: 10,
            bytes: 1000,
        };
        let spool = counters.publish_spool.clone();
        Publisher::new(link.link(), config, limits, spool, floors)
    }

    #[tokio::test]
    async fn a_replay_of_a_publish_that_was_applied_appends_nothing() {
        let counters = Arc::new(RedisCounters::default());
        let (_redis, client, link) = test_link(counters.clone()).await;
        // No replay task: the test drains the spool itself.
        let publisher = test_publisher(&link, &counters, Arc::new(Floors::new(10)));
        let topic = TopicName::parse("t").unwrap();

        let first = publisher.outbox.pending(&topic, Bytes::from_static(b"a"));
        assert_eq!(publisher.append(&first).await.ok(), Some(1));
        // Its answer was "lost": a replay marked maybe-applied finds it instead of appending again.
        let mut again = first.clone();
        again.maybe_applied = true;
        assert_eq!(publisher.append(&again).await.ok(), Some(1));
        // The same through the spool's batch replay, followed by a genuinely new publish.
        let next = publisher.outbox.pending(&topic, Bytes::from_static(b"b"));
        publisher.outbox.replayer().spool(again, 1).unwrap();
        publisher.outbox.replayer().spool(next, 1).unwrap();
        assert_eq!(publisher.outbox.replayer().drain(&publisher).await, 2);
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let length: u64 = redis::cmd("XLEN")
            .arg(wire::stream_key(&topic))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(length, 2, "a replay appended a duplicate");
        // Without the mark, the same id is not looked for (ids are unique, so that is only cheaper).
        let fresh = publisher.outbox.pending(&topic, Bytes::from_static(b"c"));
        assert_eq!(publisher.append(&fresh).await.ok(), Some(3));
    }

    #[tokio::test]
    async fn numbering_continues_above_the_floor_when_redis_lost_the_counter() {
        let counters = Arc::new(RedisCounters::default());
        let (_redis, client, link) = test_link(counters.clone()).await;
        let floors = Arc::new(Floors::new(10));
        let publisher = test_publisher(&link, &counters, floors.clone());
        let topic = TopicName::parse("t").unwrap();
        for seq in 1..=3 {
            let answer = publisher.publish(&topic, Bytes::from_static(b"x")).await;
            assert_eq!(answer, Ok(seq));
        }
        assert_eq!(floors.get(&topic), 3);
        // Redis forgets the topic (as after a restart without persistence).
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("FLUSHALL")
            .query_async(&mut connection)
            .await
            .unwrap();
        let answer = publisher.publish(&topic, Bytes::from_static(b"y")).await;
        assert_eq!(answer, Ok(4), "a number already handed out was reused");
        // Another instance's higher floor wins too: the counter only rises.
        let () = redis::cmd("SET")
            .arg(wire::seq_key(&topic))
            .arg(10)
            .query_async(&mut connection)
            .await
            .unwrap();
        let answer = publisher.publish(&topic, Bytes::from_static(b"z")).await;
        assert_eq!(answer, Ok(11));
    }
}
