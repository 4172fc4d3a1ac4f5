//! Publishing to topic logs with the outage spool: a publish that cannot reach the broker is held in
//! the bounded FIFO and replayed in order by the one generic [`Replayer`] when the broker answers
//! again. Each publish carries an id; the follower reports the sequence number the record got, and a
//! replay of a publish that may have been applied looks for its id among the topic's newest records
//! first, so it is not appended twice.

use std::{
    collections::HashSet,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;

use super::follow::{topic_log, Followers, DEDUPE_WINDOW};
use crate::{
    bus::{BusError, PublishError, Published},
    log::{find_id, LogBroker, LogError},
    metrics::SpoolCounters,
    spool::{Failure, Outcome, Replay, Replayer, SpoolLimits},
    topic::TopicName,
};

/// How long a confirmed publish may take to come back through this instance's follower.
const SEQ_WAIT: Duration = Duration::from_secs(10);
/// How long a follower may take to catch up with the log's end before a read answers 503.
pub const CATCH_UP: Duration = Duration::from_secs(10);

/// One publish on its way to the broker.
#[derive(Clone)]
pub struct Pending {
    topic: TopicName,
    payload: Bytes,
    id: String,
    maybe_applied: bool,
}

/// The publishing side of one log bus instance.
pub struct Publisher {
    broker: Arc<dyn LogBroker>,
    followers: Arc<Followers>,
    replayer: Replayer<Pending>,
    /// Logs known to exist (created here or seen), so a publish does not ask again.
    created: Mutex<HashSet<TopicName>>,
    instance: u64,
    next_id: AtomicU64,
    /// Claims in progress, striped by topic.
    claiming: [tokio::sync::Mutex<()>; CLAIM_STRIPES],
}

/// Stripes of the claim lock (see [`Publisher::claim`]).
const CLAIM_STRIPES: usize = 64;

fn stripe_of(topic: &TopicName) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(topic.as_str()) as usize % CLAIM_STRIPES
}

impl Publisher {
    pub fn new(
        broker: Arc<dyn LogBroker>,
        followers: Arc<Followers>,
        limits: SpoolLimits,
        counters: Arc<SpoolCounters>,
    ) -> Self {
        Self {
            broker,
            followers,
            replayer: Replayer::new(limits, counters),
            created: Mutex::new(HashSet::new()),
            instance: fastrand::u64(..),
            next_id: AtomicU64::new(0),
            claiming: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }

    pub fn replayer(&self) -> &Replayer<Pending> {
        &self.replayer
    }

    /// Appends now or fails; refused (503) while publishes wait in the spool, so a publish that cannot
    /// be spooled never overtakes them.
    pub async fn publish(&self, topic: &TopicName, payload: Bytes) -> Result<u64, BusError> {
        let waiting = self.replayer.len();
        if waiting > 0 {
            return Err(BusError::Unavailable(format!(
                "{waiting} publishes wait in the outage spool for the broker; retry later"
            )));
        }
        match self.append(&self.pending(topic, payload)).await {
            Ok(seq) => Ok(seq),
            Err(Publish::Limit(limit)) => Err(limit),
            Err(Publish::Failed(Failure::Outage { detail, .. } | Failure::Refused(detail))) => {
                Err(BusError::Unavailable(detail))
            }
        }
    }

    /// Appends now, or spools the event while the broker is unreachable or earlier publishes wait.
    pub async fn publish_or_spool(
        &self,
        topic: &TopicName,
        payload: Bytes,
    ) -> Result<Published, PublishError> {
        let mut pending = self.pending(topic, payload);
        if self.replayer.is_empty() {
            match self.append(&pending).await {
                Ok(seq) => return Ok(Published::Appended(seq)),
                Err(Publish::Limit(limit)) => return Err(limit.into()),
                Err(Publish::Failed(Failure::Refused(detail))) => {
                    return Err(BusError::Unavailable(detail).into())
                }
                Err(Publish::Failed(Failure::Outage { attempted, .. })) => {
                    pending.maybe_applied = attempted
                }
            }
        }
        let size = pending.payload.len() + pending.topic.as_str().len();
        let depth = self.replayer.spool(pending, size)?;
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

    /// Makes sure the topic's log exists and is followed here; the log's end when it had to look.
    pub async fn claim(&self, topic: &TopicName) -> Result<(), Publish> {
        let known = self
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(topic);
        if known && self.followers.get(topic).is_some() {
            return Ok(());
        }
        // One claim of a topic at a time here: a hundred clients subscribing to a new topic at
        // once make one stream, not a hundred racing creators (RabbitMQ fails the whole connection
        // on some of those races).
        let stripe = self.claiming[stripe_of(topic)].lock().await;
        let known = self
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(topic);
        if known && self.followers.get(topic).is_some() {
            return Ok(());
        }
        let _stripe = stripe;
        let log = topic_log(topic);
        let end = match self.broker.end(&log).await {
            Ok(end) => end,
            Err(LogError::Missing(_)) => {
                self.broker.create(&log).await.map_err(Publish::log)?;
                self.broker.end(&log).await.map_err(Publish::log)?
            }
            Err(error) => return Err(Publish::log(error)),
        };
        self.followers.follow(topic, end).map_err(Publish::Limit)?;
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.clone());
        Ok(())
    }

    /// Appends one publish and learns its sequence number from this instance's follower.
    async fn append(&self, pending: &Pending) -> Result<u64, Publish> {
        self.claim(&pending.topic).await?;
        let follower = self
            .followers
            .get(&pending.topic)
            .ok_or_else(|| Publish::log(LogError::down("the topic's follower stopped")))?;
        if pending.maybe_applied {
            let log = topic_log(&pending.topic);
            let found = find_id(&*self.broker, &log, &pending.id, DEDUPE_WINDOW as u64)
                .await
                .map_err(Publish::log)?;
            if found.is_some() {
                // Applied before its answer was lost: its sequence number is what this instance's
                // follower gives it once it gets there.
                let deadline = tokio::time::Instant::now() + SEQ_WAIT;
                while tokio::time::Instant::now() < deadline {
                    if let Some(seq) = follower.seq_of(&pending.id) {
                        return Ok(seq);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                return Err(Publish::Failed(Failure::Outage {
                    attempted: true,
                    detail: format!(
                        "publish {} is in the log but this instance has not caught up",
                        pending.id
                    ),
                }));
            }
        }
        let seq = self.followers.expect(&pending.id);
        let log = topic_log(&pending.topic);
        let records = [(pending.id.clone(), pending.payload.clone())];
        let mut appended = self.broker.append(&log, &records).await;
        if let Err(LogError::Missing(_)) = appended {
            // The broker lost the log (a restart without its data): make it again, once.
            self.created
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pending.topic);
            self.broker.create(&log).await.map_err(Publish::log)?;
            appended = self.broker.append(&log, &records).await;
        }
        if let Err(error) = appended {
            self.followers.forget(&pending.id);
            return Err(Publish::log(error));
        }
        match tokio::time::timeout(SEQ_WAIT, seq).await {
            Ok(Ok(seq)) => Ok(seq),
            _ => {
                self.followers.forget(&pending.id);
                Err(Publish::Failed(Failure::Outage {
                    attempted: true,
                    detail: format!(
                        "the {} broker confirmed a publish to `{}` but it did not come back within {SEQ_WAIT:?}",
                        self.broker.kind(),
                        pending.topic.as_str()
                    ),
                }))
            }
        }
    }
}

/// Why one append did not go through.
pub enum Publish {
    /// This instance follows as many topics as it may.
    Limit(BusError),
    Failed(Failure),
}

impl Publish {
    fn log(error: LogError) -> Self {
        Publish::Failed(error.into())
    }
}

impl Replay for Publisher {
    type Item = Pending;
    const NOUN: &'static str = "publish";

    /// One item at a time, in order (each waits for its sequence number); a full topic limit is a
    /// refusal for good. Every replayed item first looks for its id (a cheap local lookup once the
    /// follower caught up), since an item after a failure in the same batch is resent unmarked.
    async fn apply_batch(&self, batch: &[Pending]) -> Result<Vec<Outcome>, Failure> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for pending in batch {
            let checked = Pending {
                maybe_applied: true,
                ..pending.clone()
            };
            match self.append(&checked).await {
                Ok(_) => outcomes.push(Outcome::Applied),
                Err(Publish::Limit(limit)) => outcomes.push(Outcome::Refused(limit.to_string())),
                // What was applied so far counts; the rest is sent again (marked maybe-applied).
                Err(Publish::Failed(failure)) if outcomes.is_empty() => return Err(failure),
                Err(Publish::Failed(_)) => break,
            }
        }
        Ok(outcomes)
    }

    async fn wait_up(&self) {
        self.broker.wait_up().await;
    }

    fn maybe_applied(pending: &mut Pending) {
        pending.maybe_applied = true;
    }

    fn describe(pending: &Pending) -> String {
        format!(
            "publish {} to topic `{}`",
            pending.id,
            pending.topic.as_str()
        )
    }
}
