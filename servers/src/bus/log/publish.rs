//! Publishing to topic logs with the outage spool: a publish that cannot reach the broker is held in
//! the bounded FIFO and replayed in order by the one generic [`Replayer`] when the broker answers
//! again. Each publish carries an id; the follower reports the sequence number the record got, and a
//! replay of a publish that may have been applied looks for its id among the topic's newest records
//! first, so it is not appended twice.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;

use super::follow::{topic_log, Followers, DEDUPE_WINDOW};
use crate::{
    bus::{
        outbox::{AppendError, Outbox, PendingPublish},
        BusError, PublishError, Published,
    },
    log::{find_id, LogBroker, LogError},
    metrics::SpoolCounters,
    spool::{Failure, Outcome, Replay, Replayer, SpoolLimits},
    topic::TopicName,
};

/// How long a confirmed publish may take to come back through this instance's follower.
const SEQ_WAIT: Duration = Duration::from_secs(10);
/// How long a follower may take to catch up with the log's end before a read answers 503.
pub const CATCH_UP: Duration = Duration::from_secs(10);

/// The publishing side of one log bus instance.
pub struct Publisher {
    broker: Arc<dyn LogBroker>,
    followers: Arc<Followers>,
    outbox: Outbox,
    /// Logs known to exist (created here or seen), so a publish does not ask again.
    created: Mutex<HashSet<TopicName>>,
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
            outbox: Outbox::new(broker.kind(), limits, counters),
            broker,
            followers,
            created: Mutex::new(HashSet::new()),
            claiming: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }

    pub fn replayer(&self) -> &Replayer<PendingPublish> {
        self.outbox.replayer()
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

    /// Makes sure the topic's log exists and is followed here; the log's end when it had to look.
    pub async fn claim(&self, topic: &TopicName) -> Result<(), AppendError> {
        if self.claimed(topic) {
            return Ok(());
        }
        // One claim of a topic at a time here: a hundred clients subscribing to a new topic at
        // once make one stream, not a hundred racing creators (RabbitMQ fails the whole connection
        // on some of those races).
        let _stripe = self.claiming[stripe_of(topic)].lock().await;
        if self.claimed(topic) {
            return Ok(());
        }
        let log = topic_log(topic);
        let end = match self.broker.end(&log).await {
            Ok(end) => end,
            Err(LogError::Missing(_)) => {
                self.broker.create(&log).await.map_err(log_failed)?;
                self.broker.end(&log).await.map_err(log_failed)?
            }
            Err(error) => return Err(log_failed(error)),
        };
        self.followers
            .follow(topic, end)
            .map_err(AppendError::Limit)?;
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.clone());
        Ok(())
    }

    /// Whether the topic's log is known to exist and followed here.
    fn claimed(&self, topic: &TopicName) -> bool {
        let known = self
            .created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(topic);
        known && self.followers.get(topic).is_some()
    }

    /// Appends one publish and learns its sequence number from this instance's follower.
    async fn append(&self, pending: &PendingPublish) -> Result<u64, AppendError> {
        self.claim(&pending.topic).await?;
        let follower = self
            .followers
            .get(&pending.topic)
            .ok_or_else(|| log_failed(LogError::down("the topic's follower stopped")))?;
        if pending.maybe_applied {
            let log = topic_log(&pending.topic);
            let found = find_id(&*self.broker, &log, &pending.id, DEDUPE_WINDOW as u64)
                .await
                .map_err(log_failed)?;
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
                return Err(AppendError::Failed(Failure::Outage {
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
            self.broker.create(&log).await.map_err(log_failed)?;
            appended = self.broker.append(&log, &records).await;
        }
        if let Err(error) = appended {
            self.followers.forget(&pending.id);
            return Err(log_failed(error));
        }
        match tokio::time::timeout(SEQ_WAIT, seq).await {
            Ok(Ok(seq)) => Ok(seq),
            _ => {
                self.followers.forget(&pending.id);
                Err(AppendError::Failed(Failure::Outage {
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

/// A log broker's failure as an append's.
fn log_failed(error: LogError) -> AppendError {
    AppendError::Failed(error.into())
}

impl Replay for Publisher {
    type Item = PendingPublish;
    const NOUN: &'static str = "publish";

    /// One item at a time, in order (each waits for its sequence number); a full topic limit is a
    /// refusal for good. Every replayed item first looks for its id (a cheap local lookup once the
    /// follower caught up), since an item after a failure in the same batch is resent unmarked.
    async fn apply_batch(&self, batch: &[PendingPublish]) -> Result<Vec<Outcome>, Failure> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for pending in batch {
            let checked = PendingPublish {
                maybe_applied: true,
                ..pending.clone()
            };
            match self.append(&checked).await {
                Ok(_) => outcomes.push(Outcome::Applied),
                Err(AppendError::Limit(limit)) => {
                    outcomes.push(Outcome::Refused(limit.to_string()))
                }
                // What was applied so far counts; the rest is sent again (marked maybe-applied).
                Err(AppendError::Failed(failure)) if outcomes.is_empty() => return Err(failure),
                Err(AppendError::Failed(_)) => break,
            }
        }
        Ok(outcomes)
    }

    async fn wait_up(&self) {
        self.broker.wait_up().await;
    }

    fn maybe_applied(pending: &mut PendingPublish) {
        pending.maybe_applied = true;
    }

    fn describe(pending: &PendingPublish) -> String {
        pending.describe()
    }
}
