//! Publishing through Redis with an outage spool: an event that cannot reach Redis is held in a bounded
//! FIFO and one task replays it, in order, as soon as Redis answers again. While anything waits in the
//! spool, new publishes queue behind it, so one publisher's events keep their order.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc, Mutex,
};

use bytes::Bytes;
use redis::Script;
use tokio::sync::Notify;

use super::{
    link::{Conn, Link},
    wire,
};
use crate::{
    bus::{BusError, MemoryBusConfig, PublishError, Published},
    metrics::SpoolCounters,
    spool::{Spool, SpoolLimits},
    topic::TopicName,
};

/// Most spooled publishes replayed in one pipeline.
const REPLAY_BATCH: usize = 64;

/// One publish on its way to Redis.
#[derive(Clone)]
struct Pending {
    topic: TopicName,
    payload: Bytes,
    /// Unique per publish; stored with the event so a replay can tell it was already applied.
    id: String,
    /// An earlier attempt reached Redis but its answer was lost, so it may already be applied.
    maybe_applied: bool,
}

/// Why an append did not happen.
enum Failure {
    /// Redis is unreachable; `attempted` when the command was sent (it may have been applied).
    Outage { attempted: bool, detail: String },
    /// Redis answered with a refusal (the topic limit, a script error): spooling would not help.
    Refused(BusError),
}

/// The publishing side of one Redis bus instance.
pub struct Publisher {
    link: Arc<Link>,
    script: Script,
    config: MemoryBusConfig,
    spool: Mutex<Spool<Pending>>,
    wake: Notify,
    /// Random per instance, so publish ids never collide across instances or restarts.
    instance: u64,
    next_id: AtomicU64,
}

impl Publisher {
    /// Creates the publisher and starts its replay task (which ends with the link's stop token).
    pub fn start(
        link: Arc<Link>,
        config: MemoryBusConfig,
        limits: SpoolLimits,
        counters: Arc<SpoolCounters>,
    ) -> Arc<Self> {
        let publisher = Arc::new(Self {
            link,
            script: Script::new(wire::PUBLISH),
            config,
            spool: Mutex::new(Spool::new(limits, counters)),
            wake: Notify::new(),
            instance: fastrand::u64(..),
            next_id: AtomicU64::new(0),
        });
        tokio::spawn(replay(publisher.clone()));
        publisher
    }

    /// Appends now or fails; never spools. Refused (503) while publishes wait in the spool, so a
    /// publish that cannot be spooled (WebSocket, GraphQL) never overtakes them.
    pub async fn publish(&self, topic: &TopicName, payload: Bytes) -> Result<u64, BusError> {
        let waiting = self.lock().len();
        if waiting > 0 {
            return Err(BusError::Unavailable(format!(
                "{waiting} publishes wait in the outage spool for Redis; retry later"
            )));
        }
        match self.append(&self.pending(topic, payload)).await {
            Ok(seq) => Ok(seq),
            Err(Failure::Outage { detail, .. }) => Err(BusError::Unavailable(detail)),
            Err(Failure::Refused(error)) => Err(error),
        }
    }

    /// Appends now, or, when Redis is unreachable or earlier publishes still wait, spools the event
    /// for an in-order replay. Refused when the spool is full or Redis refuses the publish itself.
    pub async fn publish_or_spool(
        &self,
        topic: &TopicName,
        payload: Bytes,
    ) -> Result<Published, PublishError> {
        let mut pending = self.pending(topic, payload);
        if self.lock().is_empty() {
            match self.append(&pending).await {
                Ok(seq) => return Ok(Published::Appended(seq)),
                Err(Failure::Refused(error)) => return Err(error.into()),
                Err(Failure::Outage { attempted, .. }) => pending.maybe_applied = attempted,
            }
        }
        let size = pending.payload.len() + pending.topic.as_str().len();
        let depth = self.lock().push(pending, size)?;
        self.wake.notify_one();
        Ok(Published::Spooled { depth })
    }

    fn pending(&self, topic: &TopicName, payload: Bytes) -> Pending {
        let n = self.next_id.fetch_add(1, Relaxed);
        Pending {
            topic: topic.clone(),
            payload,
            id: format!("{:016x}-{n}", self.instance),
            maybe_applied: false,
        }
    }

    async fn append(&self, pending: &Pending) -> Result<u64, Failure> {
        let conn = self.connection()?;
        let reply: Result<i64, _> = self
            .invocation(pending)
            .invoke_async(&mut conn.inner.clone())
            .await;
        match reply {
            Ok(seq) => u64::try_from(seq).map_err(|_| self.topic_limit()),
            Err(error) => Err(self.failure(&conn, error)),
        }
    }

    /// Appends a batch in one pipeline, in order; each answer is a sequence number or -1 (topic limit).
    async fn append_batch(&self, batch: &[Pending]) -> Result<Vec<i64>, Failure> {
        let conn = self.connection()?;
        let invocations: Vec<_> = batch.iter().map(|p| self.invocation(p)).collect();
        let mut pipe = redis::pipe();
        // A pipeline does not load scripts on demand, and a restarted Redis has forgotten them.
        pipe.load_script(&self.script).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        pipe.query_async(&mut conn.inner.clone())
            .await
            .map_err(|error| self.failure(&conn, error))
    }

    fn invocation(&self, pending: &Pending) -> redis::ScriptInvocation<'_> {
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
            .arg(wire::DEDUPE_WINDOW);
        invocation
    }

    fn connection(&self) -> Result<Conn, Failure> {
        self.link.get().map_err(|e| Failure::Outage {
            attempted: false,
            detail: e.to_string(),
        })
    }

    fn failure(&self, conn: &Conn, error: redis::RedisError) -> Failure {
        let detail = format!("redis: {error}");
        if self.link.failed(conn, &error) {
            Failure::Outage {
                attempted: true,
                detail,
            }
        } else {
            Failure::Refused(BusError::Unavailable(detail))
        }
    }

    fn topic_limit(&self) -> Failure {
        Failure::Refused(BusError::TopicLimit {
            limit: self.config.max_topics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spool<Pending>> {
        // Every critical section is one spool operation, so a poisoned spool is still consistent.
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that the oldest `n` spooled publishes reached Redis without an answer: their replay must
    /// check for an earlier append.
    fn maybe_applied(&self, n: usize) {
        self.lock()
            .oldest_mut(n)
            .for_each(|p| p.maybe_applied = true);
    }

    /// Replays the spool front to back, in batches, until it is empty; returns how many were replayed.
    async fn drain(&self) -> u64 {
        let mut replayed = 0;
        // After a batch Redis refused, go one at a time through it to drop only the refused publish.
        let mut single = 0usize;
        loop {
            let size = if single > 0 { 1 } else { REPLAY_BATCH };
            let batch: Vec<Pending> = self.lock().oldest(size).cloned().collect();
            if batch.is_empty() || self.link.stop().is_cancelled() {
                return replayed;
            }
            match self.append_batch(&batch).await {
                Ok(seqs) => {
                    single = single.saturating_sub(batch.len());
                    let mut spool = self.lock();
                    for (pending, seq) in batch.iter().zip(seqs) {
                        if seq > 0 {
                            spool.replayed();
                            replayed += 1;
                        } else {
                            tracing::warn!(
                                topic = pending.topic.as_str(),
                                "dropping a spooled publish: the topic limit is reached"
                            );
                            spool.dropped();
                        }
                    }
                }
                Err(Failure::Outage { attempted, .. }) => {
                    if attempted {
                        self.maybe_applied(batch.len());
                    }
                    self.link.wait_up().await;
                }
                Err(Failure::Refused(_)) if batch.len() > 1 => {
                    // Some of the batch may be applied; the dedupe check makes retrying them safe.
                    self.maybe_applied(batch.len());
                    single = batch.len();
                }
                Err(Failure::Refused(error)) => {
                    tracing::warn!(topic = batch[0].topic.as_str(), %error, "dropping a spooled publish Redis refused");
                    self.lock().dropped();
                    single = single.saturating_sub(1);
                }
            }
        }
    }
}

/// Drains the spool whenever something is spooled; logs each recovery with its count.
async fn replay(publisher: Arc<Publisher>) {
    let stop = publisher.link.stop().clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = publisher.wake.notified() => {}
        }
        let replayed = publisher.drain().await;
        if replayed > 0 {
            tracing::info!(replayed, "replayed spooled publishes to redis, in order");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bus::redis::link::test_link, metrics::RedisCounters};

    #[tokio::test]
    async fn a_replay_of_a_publish_that_was_applied_appends_nothing() {
        let counters = Arc::new(RedisCounters::default());
        let (_redis, client, link, stop) = test_link(counters.clone()).await;
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
        let publisher = Publisher::start(link, config, limits, counters.publish_spool.clone());
        let topic = TopicName::parse("t").unwrap();

        let first = publisher.pending(&topic, Bytes::from_static(b"a"));
        assert_eq!(publisher.append(&first).await.ok(), Some(1));
        // Its answer was "lost": a replay marked maybe-applied finds it instead of appending again.
        let mut again = first.clone();
        again.maybe_applied = true;
        assert_eq!(publisher.append(&again).await.ok(), Some(1));
        // The same through the spool's batch replay, followed by a genuinely new publish.
        let next = publisher.pending(&topic, Bytes::from_static(b"b"));
        publisher.lock().push(again, 1).unwrap();
        publisher.lock().push(next, 1).unwrap();
        assert_eq!(publisher.drain().await, 2);
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let length: u64 = redis::cmd("XLEN")
            .arg(wire::stream_key(&topic))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(length, 2, "a replay appended a duplicate");
        // Without the mark, the same id is not looked for (ids are unique, so that is only cheaper).
        let fresh = publisher.pending(&topic, Bytes::from_static(b"c"));
        assert_eq!(publisher.append(&fresh).await.ok(), Some(3));
        stop.cancel();
    }
}
