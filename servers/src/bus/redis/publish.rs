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

use super::{link::Link, wire};
use crate::{
    bus::{BusError, MemoryBusConfig, PublishError, Published},
    metrics::SpoolCounters,
    spool::{Spool, SpoolLimits},
    topic::TopicName,
};

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
        let conn = self.link.get().map_err(|e| Failure::Outage {
            attempted: false,
            detail: e.to_string(),
        })?;
        let topic = &pending.topic;
        let reply: Result<i64, _> = self
            .script
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
            .invoke_async(&mut conn.inner.clone())
            .await;
        match reply {
            Ok(seq) => u64::try_from(seq).map_err(|_| {
                Failure::Refused(BusError::TopicLimit {
                    limit: self.config.max_topics,
                })
            }),
            Err(error) if self.link.failed(&conn, &error) => Err(Failure::Outage {
                attempted: true,
                detail: format!("redis: {error}"),
            }),
            Err(error) => Err(Failure::Refused(BusError::Unavailable(format!(
                "redis: {error}"
            )))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Spool<Pending>> {
        // Every critical section is one spool operation, so a poisoned spool is still consistent.
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replays the spool front to back until it is empty; returns how many were replayed.
    async fn drain(&self) -> u64 {
        let mut replayed = 0;
        loop {
            let Some(front) = self.lock().front().cloned() else {
                return replayed;
            };
            if self.link.stop().is_cancelled() {
                return replayed;
            }
            match self.append(&front).await {
                Ok(_) => {
                    self.lock().replayed();
                    replayed += 1;
                }
                Err(Failure::Outage { attempted, .. }) => {
                    if attempted {
                        if let Some(front) = self.lock().front_mut() {
                            front.maybe_applied = true;
                        }
                    }
                    self.link.wait_up().await;
                }
                Err(Failure::Refused(error)) => {
                    tracing::warn!(topic = front.topic.as_str(), %error, "dropping a spooled publish Redis refused");
                    self.lock().dropped();
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
