//! The bus over an append-only log broker (RabbitMQ streams, Kafka topics; `crate::log`): one log per
//! topic, so the broker orders each topic's events and its offsets are the sequence numbers (offset +
//! 1), the same on every instance. Each instance follows the logs of the topics it serves and holds
//! them in an in-process [`MemoryBus`] (`follow.rs`), which answers reads and feeds subscriptions
//! exactly as the single-server bus does; a publish learns its sequence number when its record comes
//! back through the follower. A read whose answer would be empty (or a cursor beyond the local head)
//! first asks the broker where the log ends and waits for the follower to get there, so a client sees
//! every event confirmed before its request. While the broker is unreachable `POST /publish` spools
//! (`publish.rs`, the shared replayer), followers resume where they left off, and whatever needs the
//! broker now answers 503.

mod ends;
mod follow;
mod publish;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use self::{
    ends::Ends,
    follow::Followers,
    publish::{Publisher, CATCH_UP},
};
use super::{
    outbox::AppendError, Bus, BusError, MemoryBus, MemoryBusConfig, PublishError, Published,
    ReadBatch, Subscription,
};
use crate::{
    log::{LogBroker, LogError},
    metrics::RedisCounters,
    spool::SpoolLimits,
    topic::TopicName,
};

/// How often a long poll on a topic whose log does not exist yet looks again.
const MISSING_POLL: Duration = Duration::from_millis(250);

/// [`Bus`] over a log broker shared by every instance. `--max-topics` bounds the topics this instance
/// follows (not the logs on the broker).
pub struct LogBus {
    broker: Arc<dyn LogBroker>,
    local: Arc<MemoryBus>,
    followers: Arc<Followers>,
    publisher: Arc<Publisher>,
    ends: Ends,
    stop: CancellationToken,
}

impl Drop for LogBus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn unavailable(error: LogError) -> BusError {
    BusError::Unavailable(error.to_string())
}

impl LogBus {
    /// A bus over `broker`; spooled publishes are counted in `counters.publish_spool`, follower
    /// reconnects in `counters.reconnect_attempts`.
    pub fn new(
        broker: Arc<dyn LogBroker>,
        config: MemoryBusConfig,
        spool: SpoolLimits,
        counters: Arc<RedisCounters>,
    ) -> Self {
        let stop = CancellationToken::new();
        let local = Arc::new(MemoryBus::new(config));
        let followers = Followers::new(
            config.max_topics,
            config.history_events,
            broker.clone(),
            local.clone(),
            counters.clone(),
            stop.clone(),
        );
        let publisher = Arc::new(Publisher::new(
            broker.clone(),
            followers.clone(),
            spool,
            counters.publish_spool.clone(),
        ));
        let replaying = publisher.clone();
        let until = stop.clone();
        tokio::spawn(async move { replaying.replayer().run(&*replaying, until).await });
        Self {
            ends: Ends::new(broker.clone()),
            broker,
            local,
            followers,
            publisher,
            stop,
        }
    }

    /// Brings this instance up to the log's end as of now: follows the topic if its log exists and
    /// waits until the follower has handed on everything the broker had. False when there is no log.
    async fn sync(&self, topic: &TopicName) -> Result<bool, BusError> {
        let end = match self.ends.end(topic).await {
            Ok(end) => end,
            Err(LogError::Missing(_)) => return Ok(self.followers.get(topic).is_some()),
            Err(error) => return Err(unavailable(error)),
        };
        let follower = self.followers.follow(topic, end)?;
        // The newest record's sequence number (offset end − 1).
        if end > 0 && !follower.caught_up(follower.seq_at(end - 1), CATCH_UP).await {
            return Err(BusError::Unavailable(format!(
                "this instance did not catch up with topic `{}` on the {} broker within {CATCH_UP:?}",
                topic.as_str(),
                self.broker.kind()
            )));
        }
        Ok(true)
    }
}

#[async_trait]
impl Bus for LogBus {
    async fn publish(&self, topic: &TopicName, payload: Bytes) -> Result<u64, BusError> {
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
        // Events after the cursor are already here: answer without the broker (the next read picks
        // up anything newer).
        if self.followers.get(topic).is_some() {
            if let Ok(batch) = self.local.read(topic, after, limit).await {
                if !batch.events.is_empty() {
                    return Ok(batch);
                }
            }
        }
        self.sync(topic).await?;
        self.local.read(topic, after, limit).await
    }

    async fn wait_for_event(
        &self,
        topic: &TopicName,
        after: u64,
        wait: Duration,
    ) -> Result<(), BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.sync(topic).await? {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                return self.local.wait_for_event(topic, after, left).await;
            }
            // No log yet: nothing was ever published; waiting creates nothing.
            if after > 0 {
                return Err(BusError::CursorAhead { after, head: 0 });
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::time::sleep_until(deadline.min(now + MISSING_POLL)).await;
        }
    }

    async fn subscribe(
        &self,
        topic: &TopicName,
        after: Option<u64>,
    ) -> Result<Subscription, BusError> {
        self.publisher
            .claim(topic)
            .await
            .map_err(AppendError::into_bus_error)?;
        self.sync(topic).await?;
        self.local.subscribe(topic, after).await
    }
}
