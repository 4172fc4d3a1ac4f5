//! The bus over an append-only log broker (RabbitMQ streams, Kafka topics; `crate::log`): one log per
//! topic, so the broker orders each topic's events and its offsets are the sequence numbers (offset +
//! 1), the same on every instance. Each instance follows the logs of the topics it serves and holds
//! them in an in-process [`MemoryBus`] (`follow.rs`), which answers reads and feeds subscriptions
//! exactly as the single-server bus does; a publish learns its sequence number when its record comes
//! back through the follower. A read whose answer would be empty (or a cursor beyond the local head)
//! first asks the broker where the log ends and waits for the follower to get there, so a client sees
//! every event confirmed before its request; a long poll at or behind what the instance holds just
//! waits on the local copy, which the follower brings up to date. While the broker is unreachable
//! `POST /publish` spools (`publish.rs`, the shared replayer), followers resume where they left
//! off, and whatever needs the broker now answers 503.

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
        // A followed topic whose local copy already holds the cursor: the follower hands on whatever
        // the log gets next, which wakes the local wait, so no end query is needed. Every poller of
        // a topic would otherwise queue behind one (a thousand long polls on RabbitMQ waited about
        // 40 ms each). The read that follows the wait still goes to the broker when the local copy
        // cannot answer, so an outage is still a 503, at the wait's end.
        if let Some(follower) = self.followers.get(topic) {
            if after <= follower.handed_on() {
                return self.local.wait_for_event(topic, after, wait).await;
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering::SeqCst},
        Mutex,
    };

    use super::*;
    use crate::log::{Entry, LogReader};

    /// Each log's records (id, payload), by name.
    type Logs = Arc<Mutex<std::collections::HashMap<String, Vec<(String, Bytes)>>>>;

    /// Logs in memory, counting how often a log's end is asked.
    #[derive(Default)]
    struct InMemory {
        logs: Logs,
        ends: AtomicUsize,
    }

    struct Reader {
        logs: Logs,
        log: String,
        next: u64,
    }

    #[async_trait]
    impl LogReader for Reader {
        async fn next(&mut self, wait: Duration) -> Result<Vec<Entry>, LogError> {
            let deadline = tokio::time::Instant::now() + wait.min(Duration::from_millis(20));
            loop {
                let entries: Vec<Entry> = {
                    let logs = self.logs.lock().unwrap();
                    let records = logs.get(&self.log).map(Vec::as_slice).unwrap_or_default();
                    (self.next..records.len() as u64)
                        .map(|offset| Entry {
                            offset,
                            id: records[offset as usize].0.clone(),
                            payload: records[offset as usize].1.clone(),
                        })
                        .collect()
                };
                if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
                    self.next += entries.len() as u64;
                    return Ok(entries);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    #[async_trait]
    impl LogBroker for InMemory {
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn create(&self, log: &str) -> Result<(), LogError> {
            self.logs.lock().unwrap().entry(log.to_owned()).or_default();
            Ok(())
        }
        async fn append(&self, log: &str, records: &[(String, Bytes)]) -> Result<(), LogError> {
            let mut logs = self.logs.lock().unwrap();
            let Some(held) = logs.get_mut(log) else {
                return Err(LogError::Missing(log.to_owned()));
            };
            held.extend_from_slice(records);
            Ok(())
        }
        async fn end(&self, log: &str) -> Result<u64, LogError> {
            self.ends.fetch_add(1, SeqCst);
            let logs = self.logs.lock().unwrap();
            logs.get(log)
                .map(|records| records.len() as u64)
                .ok_or_else(|| LogError::Missing(log.to_owned()))
        }
        async fn reader(&self, log: &str, offset: u64) -> Result<Box<dyn LogReader>, LogError> {
            Ok(Box::new(Reader {
                logs: self.logs.clone(),
                log: log.to_owned(),
                next: offset,
            }))
        }
        async fn wait_up(&self) {}
        fn remakes_under_readers(&self) -> bool {
            false
        }
    }

    fn bus(broker: Arc<InMemory>) -> LogBus {
        LogBus::new(
            broker,
            MemoryBusConfig {
                history_events: 100,
                history_bytes: 1 << 20,
                max_topics: 4,
                subscriber_buffer: 16,
            },
            SpoolLimits {
                events: 16,
                bytes: 1 << 16,
            },
            Arc::default(),
        )
    }

    #[tokio::test]
    async fn long_polls_on_a_followed_topic_wait_without_asking_where_the_log_ends() {
        let broker = Arc::new(InMemory::default());
        let bus = Arc::new(bus(broker.clone()));
        let topic = TopicName::parse("t").unwrap();
        assert_eq!(bus.publish(&topic, Bytes::from_static(b"a")).await, Ok(1));
        // The first read follows the topic (asking the broker where its log ends).
        assert_eq!(bus.read(&topic, 0, 10).await.unwrap().events.len(), 1);
        let asked = broker.ends.load(SeqCst);
        // Long polls held at the head of what this instance holds: no end query, however many.
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let (bus, topic) = (bus.clone(), topic.clone());
                tokio::spawn(
                    async move { bus.wait_for_event(&topic, 1, Duration::from_secs(10)).await },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "woke with no event"
        );
        // Another instance's publish: straight into the log, seen only through the follower.
        broker
            .append(
                &follow::topic_log(&topic),
                &[("elsewhere".into(), Bytes::from_static(b"b"))],
            )
            .await
            .unwrap();
        for waiter in waiters {
            let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(matches!(woke, Ok(Ok(Ok(())))), "{woke:?}");
        }
        assert_eq!(bus.read(&topic, 1, 10).await.unwrap().events.len(), 1);
        assert_eq!(
            broker.ends.load(SeqCst),
            asked,
            "a held long poll asked the broker"
        );
        // A cursor beyond what this instance holds still asks, and is refused as ahead.
        assert!(matches!(
            bus.wait_for_event(&topic, 9, Duration::from_millis(10))
                .await,
            Err(BusError::CursorAhead { .. })
        ));
        assert!(broker.ends.load(SeqCst) > asked);
    }
}
