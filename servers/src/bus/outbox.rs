//! The publish front every broker bus (Redis, the log brokers) shares: a publish goes to the broker
//! now, or, while the broker is unreachable or earlier publishes still wait, into the bounded outage
//! spool that the one [`Replayer`] empties in order. Each publish carries an id unique across
//! instances, so a replay of one whose answer was lost can find it instead of appending it twice.

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use bytes::Bytes;

use super::{BusError, PublishError, Published};
use crate::{
    metrics::SpoolCounters,
    spool::{Failure, Replayer, SpoolLimits},
    topic::TopicName,
};

/// One publish on its way to the broker.
#[derive(Clone)]
pub struct PendingPublish {
    pub topic: TopicName,
    pub payload: Bytes,
    /// Unique per publish; stored with the event so a replay can tell it was already applied.
    pub id: String,
    /// An earlier attempt reached the broker but its answer was lost, so it may already be applied.
    pub maybe_applied: bool,
}

impl PendingPublish {
    /// How the replayer names it in logs.
    pub fn describe(&self) -> String {
        format!("publish {} to topic `{}`", self.id, self.topic.as_str())
    }
}

/// Why one append did not go through.
pub enum AppendError {
    /// Refused for good by a limit (no use spooling it): the topic limit.
    Limit(BusError),
    /// The broker refused it or could not be reached.
    Failed(Failure),
}

/// The spool and the publish ids of one bus instance.
pub struct Outbox {
    replayer: Replayer<PendingPublish>,
    /// Names the broker in the 503 a refused publish gets.
    broker: &'static str,
    /// Random per instance, so publish ids never collide across instances or restarts.
    instance: u64,
    next_id: AtomicU64,
}

impl Outbox {
    pub fn new(
        broker: &'static str,
        limits: SpoolLimits,
        counters: std::sync::Arc<SpoolCounters>,
    ) -> Self {
        Self {
            replayer: Replayer::new(limits, counters),
            broker,
            instance: fastrand::u64(..),
            next_id: AtomicU64::new(0),
        }
    }

    pub fn replayer(&self) -> &Replayer<PendingPublish> {
        &self.replayer
    }

    pub fn pending(&self, topic: &TopicName, payload: Bytes) -> PendingPublish {
        let n = self.next_id.fetch_add(1, Relaxed);
        PendingPublish {
            topic: topic.clone(),
            payload,
            id: format!("{:016x}-{n}", self.instance),
            maybe_applied: false,
        }
    }

    /// Appends now (with `append`) or fails; never spools. Refused (503) while publishes wait in the
    /// spool, so a publish that cannot be spooled (WebSocket, GraphQL) never overtakes them.
    pub async fn publish<F, Fut>(
        &self,
        topic: &TopicName,
        payload: Bytes,
        append: F,
    ) -> Result<u64, BusError>
    where
        F: FnOnce(PendingPublish) -> Fut,
        Fut: Future<Output = Result<u64, AppendError>>,
    {
        let waiting = self.replayer.len();
        if waiting > 0 {
            return Err(BusError::Unavailable(format!(
                "{waiting} publishes wait in the outage spool for {}; retry later",
                self.broker
            )));
        }
        append(self.pending(topic, payload))
            .await
            .map_err(AppendError::into_bus_error)
    }

    /// Appends now, or, when the broker is unreachable or earlier publishes still wait, spools the
    /// event for an in-order replay. Refused when the spool is full or the broker refuses the
    /// publish itself.
    pub async fn publish_or_spool<F, Fut>(
        &self,
        topic: &TopicName,
        payload: Bytes,
        append: F,
    ) -> Result<Published, PublishError>
    where
        F: FnOnce(PendingPublish) -> Fut,
        Fut: Future<Output = Result<u64, AppendError>>,
    {
        let mut pending = self.pending(topic, payload);
        if self.replayer.is_empty() {
            match append(pending.clone()).await {
                Ok(seq) => return Ok(Published::Appended(seq)),
                Err(AppendError::Failed(Failure::Outage { attempted, .. })) => {
                    pending.maybe_applied = attempted
                }
                Err(other) => return Err(other.into_bus_error().into()),
            }
        }
        let size = pending.payload.len() + pending.topic.as_str().len();
        let depth = self.replayer.spool(pending, size)?;
        Ok(Published::Spooled { depth })
    }
}

impl AppendError {
    pub fn into_bus_error(self) -> BusError {
        match self {
            AppendError::Limit(limit) => limit,
            AppendError::Failed(Failure::Outage { detail, .. } | Failure::Refused(detail)) => {
                BusError::Unavailable(detail)
            }
        }
    }
}
