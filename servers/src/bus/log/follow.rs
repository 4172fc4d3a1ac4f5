//! Per-instance followers of topic logs: one task per followed topic reads its log from an offset and
//! appends every record to this instance's [`MemoryBus`] under the broker-assigned sequence number
//! (offset + 1), which then serves reads and live subscriptions exactly as the in-process bus does. A
//! broker failure never ends a follower: it reopens its reader with backoff (counted) and resumes after
//! the last record it handed on, so subscriptions stay open through an outage and miss nothing.

use std::{
    collections::{HashMap, VecDeque},
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Duration,
};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::lock::lock;
use crate::{
    bus::{BusError, MemoryBus},
    log::{
        follow::{follow, Sink},
        log_name, Entry, LogBroker, LogError,
    },
    metrics::RedisCounters,
    topic::TopicName,
};

/// Publish ids remembered per followed topic, so a replayed publish can be found instead of appended
/// twice.
pub const DEDUPE_WINDOW: usize = 1000;

/// The log of a feed topic.
pub fn topic_log(topic: &TopicName) -> String {
    log_name("t", topic.as_str())
}

/// One followed topic.
pub struct Follower {
    /// The newest sequence number handed on to the local bus.
    progress: watch::Sender<u64>,
    /// Sequence number = base + offset + 1; the base moves only when the broker lost the log.
    base: std::sync::atomic::AtomicU64,
    /// The newest publish ids seen, with their sequence numbers.
    ids: Mutex<VecDeque<(String, u64)>>,
}

impl Follower {
    /// The sequence number a record at `offset` gets.
    pub fn seq_at(&self, offset: u64) -> u64 {
        self.base.load(Relaxed) + offset + 1
    }

    /// The sequence number a publish with `id` got, if it is among the newest seen.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        lock(&self.ids)
            .iter()
            .rev()
            .find_map(|(seen, seq)| (seen == id).then_some(*seq))
    }

    /// The newest sequence number handed on to the local bus so far.
    pub fn handed_on(&self) -> u64 {
        *self.progress.borrow()
    }

    /// Waits until everything up to `seq` has been handed on, at most `within`.
    pub async fn caught_up(&self, seq: u64, within: Duration) -> bool {
        let mut progress = self.progress.subscribe();
        tokio::time::timeout(within, progress.wait_for(|done| *done >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The followed topics of one instance; at most `limit` at once, so memory stays bounded.
pub struct Followers {
    map: Mutex<HashMap<TopicName, Arc<Follower>>>,
    limit: usize,
    history: usize,
    broker: Arc<dyn LogBroker>,
    local: Arc<MemoryBus>,
    /// Publishes of this instance waiting to learn their sequence number, by publish id.
    waiters: Mutex<HashMap<String, oneshot::Sender<u64>>>,
    counters: Arc<RedisCounters>,
    stop: CancellationToken,
}

impl Followers {
    pub fn new(
        limit: usize,
        history: usize,
        broker: Arc<dyn LogBroker>,
        local: Arc<MemoryBus>,
        counters: Arc<RedisCounters>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            map: Mutex::new(HashMap::new()),
            limit,
            history,
            broker,
            local,
            waiters: Mutex::new(HashMap::new()),
            counters,
            stop,
        })
    }

    pub fn get(&self, topic: &TopicName) -> Option<Arc<Follower>> {
        lock(&self.map).get(topic).cloned()
    }

    /// The topic's follower, started at `end` − history (`end`: the log's end, read just now) when
    /// the topic is not followed yet; refused at the limit.
    pub fn follow(
        self: &Arc<Self>,
        topic: &TopicName,
        end: u64,
    ) -> Result<Arc<Follower>, BusError> {
        let mut map = lock(&self.map);
        if let Some(follower) = map.get(topic) {
            return Ok(follower.clone());
        }
        if map.len() >= self.limit {
            return Err(BusError::TopicLimit { limit: self.limit });
        }
        let start = end.saturating_sub(self.history as u64);
        let follower = Arc::new(Follower {
            // Everything before the start counts as handed on: this instance will never see it.
            progress: watch::Sender::new(start),
            base: std::sync::atomic::AtomicU64::new(0),
            ids: Mutex::new(VecDeque::new()),
        });
        map.insert(topic.clone(), follower.clone());
        let sink = TopicSink {
            topic: topic.clone(),
            follower: follower.clone(),
            followers: self.clone(),
        };
        tokio::spawn(follow(
            self.broker.clone(),
            topic_log(topic),
            start,
            sink,
            self.counters.clone(),
            self.stop.clone(),
        ));
        Ok(follower)
    }

    /// Registers a publish waiting for the sequence number its record gets.
    pub fn expect(&self, id: &str) -> oneshot::Receiver<u64> {
        let (sender, receiver) = oneshot::channel();
        lock(&self.waiters).insert(id.to_owned(), sender);
        receiver
    }

    pub fn forget(&self, id: &str) {
        lock(&self.waiters).remove(id);
    }
}

/// Hands a topic's records to the local bus under their sequence numbers, and their publishers.
struct TopicSink {
    topic: TopicName,
    follower: Arc<Follower>,
    followers: Arc<Followers>,
}

impl Sink for TopicSink {
    fn records(&mut self, entries: Vec<Entry>) {
        let topic = &self.topic;
        for entry in entries {
            let seq = self.follower.seq_at(entry.offset);
            if let Err(error) = self.followers.local.append_at(topic, seq, entry.payload) {
                tracing::warn!(topic = topic.as_str(), %error, "cannot hold a followed event");
            }
            {
                let mut ids = lock(&self.follower.ids);
                ids.push_back((entry.id.clone(), seq));
                if ids.len() > DEDUPE_WINDOW {
                    ids.pop_front();
                }
            }
            if let Some(waiter) = lock(&self.followers.waiters).remove(&entry.id) {
                let _ = waiter.send(seq);
            }
            self.follower.progress.send_replace(seq);
        }
    }

    /// The broker lost the topic's log: numbering goes on after the last event this instance handed
    /// on, so no sequence number is used twice here (instances that were behind may differ).
    fn reset(&mut self, error: &LogError) {
        let head = *self.follower.progress.borrow();
        self.follower.base.store(head, Relaxed);
        tracing::warn!(topic = self.topic.as_str(), head, %error, "topic log reset: numbering continues after the last event seen");
    }
}
