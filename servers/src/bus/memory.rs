//! The in-process bus: per-topic bounded history ring plus a [`Fanout`] of bounded per-subscriber
//! mailboxes.
//!
//! Publish, history append and fan-out happen under one per-topic lock, and subscribe snapshots the
//! backlog and joins the fan-out under the same lock, so a subscriber sees every event exactly once.
//! Long polls wait on a per-topic notification instead of subscribing.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{Bus, BusError, Delivery, Fanout, Gap, ReadBatch, Subscription};
use crate::lock::lock;
use crate::{
    event::{Event, SharedEvent},
    topic::TopicName,
};

/// Bounds of the in-process bus.
#[derive(Debug, Clone, Copy)]
pub struct MemoryBusConfig {
    /// Events kept per topic for cursor reads.
    pub history_events: usize,
    /// Bytes kept per topic (payload plus encodings); the older events go first.
    pub history_bytes: usize,
    /// Most topics held at once.
    pub max_topics: usize,
    /// How far a live subscriber may fall behind before it is cut off.
    pub subscriber_buffer: usize,
}

struct TopicState {
    inner: Mutex<TopicInner>,
    subscribers: Fanout,
    /// Wakes long polls waiting for the next event.
    published: Notify,
}

struct TopicInner {
    history: VecDeque<SharedEvent>,
    history_bytes: usize,
    head: u64,
}

impl TopicInner {
    fn oldest(&self) -> u64 {
        self.history.front().map_or(self.head + 1, |e| e.seq)
    }

    /// Events after `after`, at most `limit`, with a gap when `after` fell out of history.
    fn since(&self, after: u64, limit: usize) -> Result<ReadBatch, BusError> {
        if after > self.head {
            return Err(BusError::CursorAhead {
                after,
                head: self.head,
            });
        }
        let oldest = self.oldest();
        let gap = (after + 1 < oldest).then_some(Gap { after, oldest });
        let start = after.max(oldest - 1);
        // Sequence numbers in history are contiguous, so the index is arithmetic.
        let skip = (start + 1 - oldest) as usize;
        let available = self.history.len().saturating_sub(skip);
        let events: Vec<_> = self
            .history
            .iter()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        Ok(ReadBatch {
            more: available > events.len(),
            events,
            head: self.head,
            gap,
        })
    }
}

/// The default, in-process implementation of [`Bus`].
pub struct MemoryBus {
    config: MemoryBusConfig,
    topics: RwLock<HashMap<TopicName, Arc<TopicState>>>,
    /// Wakes readers waiting for a topic that does not exist yet.
    topic_created: Notify,
}

impl MemoryBus {
    pub fn new(config: MemoryBusConfig) -> Self {
        Self {
            config,
            topics: RwLock::new(HashMap::new()),
            topic_created: Notify::new(),
        }
    }

    fn existing(&self, topic: &TopicName) -> Option<Arc<TopicState>> {
        read_lock(&self.topics).get(topic).cloned()
    }

    fn get_or_create(&self, topic: &TopicName) -> Result<Arc<TopicState>, BusError> {
        if let Some(state) = self.existing(topic) {
            return Ok(state);
        }
        let mut topics = self.topics.write().unwrap_or_else(|p| p.into_inner());
        if let Some(state) = topics.get(topic) {
            return Ok(state.clone());
        }
        if topics.len() >= self.config.max_topics {
            // A topic nobody published to and nobody follows (left by a departed subscriber) holds
            // nothing: reclaim one before refusing.
            let idle = topics
                .iter()
                // Only the map holds it (no subscribe is half-way), nobody listens, nothing published.
                .find(|(_, state)| {
                    Arc::strong_count(state) == 1
                        && state.subscribers.receiver_count() == 0
                        && lock(&state.inner).head == 0
                })
                .map(|(name, _)| name.clone());
            match idle {
                Some(name) => {
                    topics.remove(&name);
                }
                None => {
                    return Err(BusError::TopicLimit {
                        limit: self.config.max_topics,
                    })
                }
            }
        }
        let state = Arc::new(TopicState {
            inner: Mutex::new(TopicInner {
                history: VecDeque::new(),
                history_bytes: 0,
                head: 0,
            }),
            subscribers: Fanout::new(self.config.subscriber_buffer),
            published: Notify::new(),
        });
        topics.insert(topic.clone(), state.clone());
        self.topic_created.notify_waiters();
        Ok(state)
    }
}

impl MemoryBus {
    /// Appends an event whose sequence number was assigned elsewhere — the offset a log broker gave it
    /// (`bus/log/`), which this bus then serves as its local history and fan-out. Returns false (and
    /// changes nothing) when `seq` is not beyond the head: the event is already here. A jump beyond
    /// head + 1 (the first event a follower saw, or history the broker no longer holds) restarts the
    /// history at `seq`, so an older cursor gets an explicit gap.
    pub fn append_at(&self, topic: &TopicName, seq: u64, payload: Bytes) -> Result<bool, BusError> {
        let state = self.get_or_create(topic)?;
        let mut inner = lock(&state.inner);
        if seq <= inner.head {
            return Ok(false);
        }
        if seq > inner.head + 1 {
            inner.history.clear();
            inner.history_bytes = 0;
        }
        let event = Event::new(topic.clone(), seq, payload);
        self.push(&state, &mut inner, event);
        drop(inner);
        state.published.notify_waiters();
        Ok(true)
    }

    /// The topic's head here (0 for a topic this bus does not hold).
    pub fn head(&self, topic: &TopicName) -> u64 {
        self.existing(topic)
            .map_or(0, |state| lock(&state.inner).head)
    }

    /// Makes `event` the head: into history (evicting beyond the bounds), then to subscribers, under
    /// the topic lock, so subscribers joining meanwhile see it once: in their backlog or live. The
    /// caller wakes the waiting pollers (`published`) once it has let the lock go.
    fn push(&self, state: &TopicState, inner: &mut TopicInner, event: SharedEvent) -> u64 {
        inner.head = event.seq;
        inner.history_bytes += event.footprint();
        inner.history.push_back(event.clone());
        while inner.history.len() > self.config.history_events
            || (inner.history_bytes > self.config.history_bytes && inner.history.len() > 1)
        {
            if let Some(old) = inner.history.pop_front() {
                inner.history_bytes -= old.footprint();
            }
        }
        // No subscribers is fine: the event is still in history for pollers.
        state.subscribers.send(&event);
        event.seq
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave the map half-updated, so poisoning is ignored.
    lock.read().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &TopicName, payload: Bytes) -> Result<u64, BusError> {
        let state = self.get_or_create(topic)?;
        let mut inner = lock(&state.inner);
        let event = Event::new(topic.clone(), inner.head + 1, payload);
        let seq = self.push(&state, &mut inner, event);
        drop(inner);
        state.published.notify_waiters();
        Ok(seq)
    }

    async fn read(
        &self,
        topic: &TopicName,
        after: u64,
        limit: usize,
    ) -> Result<ReadBatch, BusError> {
        match self.existing(topic) {
            Some(state) => lock(&state.inner).since(after, limit),
            // Reading never creates a topic, so hostile readers cannot exhaust the topic limit.
            None if after == 0 => Ok(ReadBatch {
                events: Vec::new(),
                head: 0,
                gap: None,
                more: false,
            }),
            None => Err(BusError::CursorAhead { after, head: 0 }),
        }
    }

    async fn wait_for_event(
        &self,
        topic: &TopicName,
        after: u64,
        wait: std::time::Duration,
    ) -> Result<(), BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so a topic created in between still wakes us.
            let created = self.topic_created.notified();
            let mut created = std::pin::pin!(created);
            created.as_mut().enable();
            if let Some(state) = self.existing(topic) {
                // Registered before looking, so a publish after the look still wakes us.
                let published = state.published.notified();
                let mut published = std::pin::pin!(published);
                published.as_mut().enable();
                {
                    let inner = lock(&state.inner);
                    if after > inner.head {
                        return Err(BusError::CursorAhead {
                            after,
                            head: inner.head,
                        });
                    }
                    if inner.head > after {
                        return Ok(());
                    }
                }
                // An event or the deadline: either way the caller looks again.
                let _ = tokio::time::timeout_at(deadline, published).await;
                return Ok(());
            }
            if after > 0 {
                return Err(BusError::CursorAhead { after, head: 0 });
            }
            if tokio::time::timeout_at(deadline, created).await.is_err() {
                return Ok(());
            }
        }
    }

    async fn subscribe(
        &self,
        topic: &TopicName,
        after: Option<u64>,
    ) -> Result<Subscription, BusError> {
        let state = self.get_or_create(topic)?;
        let (after, backlog, receiver) = {
            let inner = lock(&state.inner);
            let after = after.unwrap_or(inner.head);
            let backlog = inner.since(after, usize::MAX)?;
            (after, backlog, state.subscribers.subscribe())
        };
        let head = backlog.head;
        let mut items: Vec<Delivery> = Vec::with_capacity(backlog.events.len() + 1);
        items.extend(backlog.gap.map(Delivery::Gap));
        items.extend(backlog.events.into_iter().map(Delivery::Event));
        Ok(Subscription::with_backlog(after, head, items, receiver))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    fn bus(history_events: usize, subscriber_buffer: usize) -> MemoryBus {
        MemoryBus::new(MemoryBusConfig {
            history_events,
            history_bytes: usize::MAX,
            max_topics: 4,
            subscriber_buffer,
        })
    }

    fn t(name: &str) -> TopicName {
        TopicName::parse(name).unwrap_or_else(|e| panic!("{e}"))
    }

    fn seqs(batch: &ReadBatch) -> Vec<u64> {
        batch.events.iter().map(|e| e.seq).collect()
    }

    async fn publish_n(bus: &MemoryBus, topic: &TopicName, n: usize) {
        for i in 0..n {
            let got = bus.publish(topic, Bytes::from(format!("p{i}"))).await;
            assert!(got.is_ok());
        }
    }

    #[tokio::test]
    async fn sequence_numbers_are_per_topic_from_one() {
        let bus = bus(8, 8);
        publish_n(&bus, &t("a"), 3).await;
        let b = bus.publish(&t("b"), Bytes::new()).await;
        assert_eq!(b, Ok(1));
        let batch = bus
            .read(&t("a"), 0, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seqs(&batch), vec![1, 2, 3]);
        assert_eq!(batch.head, 3);
        assert!(!batch.more);
    }

    #[tokio::test]
    async fn read_limit_sets_more() {
        let bus = bus(8, 8);
        publish_n(&bus, &t("a"), 5).await;
        let batch = bus
            .read(&t("a"), 1, 2)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(seqs(&batch), vec![2, 3]);
        assert!(batch.more);
    }

    #[tokio::test]
    async fn old_cursor_gets_a_gap_naming_the_oldest() {
        let bus = bus(3, 8);
        publish_n(&bus, &t("a"), 10).await;
        let batch = bus
            .read(&t("a"), 2, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            batch.gap,
            Some(Gap {
                after: 2,
                oldest: 8
            })
        );
        assert_eq!(batch.gap.map(|g| g.missed()), Some(5));
        assert_eq!(seqs(&batch), vec![8, 9, 10]);
    }

    #[tokio::test]
    async fn history_is_also_bounded_by_bytes() {
        let bus = MemoryBus::new(MemoryBusConfig {
            history_events: 100,
            history_bytes: 1000,
            max_topics: 4,
            subscriber_buffer: 8,
        });
        for _ in 0..20 {
            assert!(bus
                .publish(&t("a"), Bytes::from(vec![b'x'; 200]))
                .await
                .is_ok());
        }
        let batch = bus
            .read(&t("a"), 0, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(batch.events.len() < 20 && !batch.events.is_empty());
        assert!(batch.gap.is_some());
    }

    #[tokio::test]
    async fn cursor_ahead_is_an_error() {
        let bus = bus(8, 8);
        publish_n(&bus, &t("a"), 2).await;
        assert_eq!(
            bus.read(&t("a"), 5, 10).await.err(),
            Some(BusError::CursorAhead { after: 5, head: 2 })
        );
        assert!(bus.read(&t("nothing"), 1, 10).await.is_err());
        assert!(bus.read(&t("nothing"), 0, 10).await.is_ok());
    }

    #[tokio::test]
    async fn idle_topics_are_reclaimed_at_the_limit() {
        let bus = bus(8, 8);
        for name in ["a", "b", "c"] {
            assert!(bus.publish(&t(name), Bytes::new()).await.is_ok());
        }
        // A subscriber creates "d" and leaves without anything being published: reclaimable.
        drop(bus.subscribe(&t("d"), None).await);
        assert!(bus.publish(&t("e"), Bytes::new()).await.is_ok());
        assert_eq!(bus.read(&t("d"), 0, 1).await.map(|b| b.head), Ok(0));
    }

    #[tokio::test]
    async fn waiting_for_an_event_never_creates_the_topic() {
        let bus = Arc::new(bus(8, 8));
        let waiter = {
            let bus = bus.clone();
            tokio::spawn(async move {
                bus.wait_for_event(&t("new"), 0, std::time::Duration::from_secs(10))
                    .await
            })
        };
        tokio::task::yield_now().await;
        assert!(read_lock(&bus.topics).is_empty());
        assert!(bus
            .publish(&t("new"), Bytes::from_static(b"x"))
            .await
            .is_ok());
        let woke = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert!(matches!(woke, Ok(Ok(Ok(())))));
        let quick = bus
            .wait_for_event(&t("none"), 0, std::time::Duration::from_millis(10))
            .await;
        assert_eq!(quick, Ok(()));
        assert!(bus.read(&t("none"), 0, 1).await.is_ok());
        assert_eq!(read_lock(&bus.topics).len(), 1);
    }

    #[tokio::test]
    async fn topic_limit_is_enforced() {
        let bus = bus(8, 8);
        for name in ["a", "b", "c", "d"] {
            assert!(bus.publish(&t(name), Bytes::new()).await.is_ok());
        }
        assert_eq!(
            bus.publish(&t("e"), Bytes::new()).await.err(),
            Some(BusError::TopicLimit { limit: 4 })
        );
    }

    #[tokio::test]
    async fn subscription_replays_backlog_then_follows_without_duplicates() {
        let bus = bus(16, 16);
        publish_n(&bus, &t("a"), 3).await;
        let mut sub = bus
            .subscribe(&t("a"), Some(1))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sub.head, 3);
        publish_n(&bus, &t("a"), 2).await;
        let mut got = Vec::new();
        for _ in 0..4 {
            match sub.next().await {
                Some(Delivery::Event(e)) => got.push(e.seq),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, vec![2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn live_subscription_starts_at_the_head() {
        let bus = bus(16, 16);
        publish_n(&bus, &t("a"), 3).await;
        let mut sub = bus
            .subscribe(&t("a"), None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((sub.after, sub.head), (3, 3));
        publish_n(&bus, &t("a"), 1).await;
        assert!(matches!(sub.next().await, Some(Delivery::Event(e)) if e.seq == 4));
    }

    #[tokio::test]
    async fn slow_subscriber_is_cut_off_with_lagged() {
        let bus = bus(16, 4);
        let mut sub = bus
            .subscribe(&t("a"), Some(0))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        publish_n(&bus, &t("a"), 10).await;
        let mut last = None;
        while let Some(item) = sub.next().await {
            last = Some(item);
        }
        assert!(
            matches!(last, Some(Delivery::Lagged { missed: 6 })),
            "{last:?}"
        );
    }
}
