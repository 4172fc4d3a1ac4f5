//! Where a topic's log ends, asked of the broker at most once at a time per topic. A read that needs
//! the end waits for a query that *started after it arrived*, so it still sees every event confirmed
//! before its request, and every read waiting meanwhile shares that one answer: a thousand pollers of
//! one topic cost the broker about one query per round trip, not a thousand (RabbitMQ answers each
//! with a channel and a consumer, and fails the connection when too many pile up).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::SeqCst},
        Arc, Mutex,
    },
};

use super::follow::topic_log;
use crate::{
    log::{LogBroker, LogError},
    topic::TopicName,
};

/// The end queries of one bus instance.
pub struct Ends {
    broker: Arc<dyn LogBroker>,
    /// Topics being asked about right now (a slot is dropped when its last reader is done, so hostile
    /// reads of made-up topics leave nothing behind).
    slots: Mutex<HashMap<TopicName, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    /// Queries started so far.
    started: AtomicU64,
    /// Held while a query runs; the last finished query's number and answer.
    last: tokio::sync::Mutex<Option<(u64, Result<u64, LogError>)>>,
}

impl Ends {
    pub fn new(broker: Arc<dyn LogBroker>) -> Self {
        Self {
            broker,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The log's end as of a moment after this call began.
    pub async fn end(&self, topic: &TopicName) -> Result<u64, LogError> {
        let slot = self.slots().entry(topic.clone()).or_default().clone();
        let arrived = slot.started.load(SeqCst);
        let answer = {
            let mut last = slot.last.lock().await;
            match &*last {
                Some((number, answer)) if *number > arrived => answer.clone(),
                _ => {
                    let number = slot.started.fetch_add(1, SeqCst) + 1;
                    let answer = self.broker.end(&topic_log(topic)).await;
                    *last = Some((number, answer.clone()));
                    answer
                }
            }
        };
        let mut slots = self.slots();
        // The map's reference and ours: nobody else is waiting.
        if Arc::strong_count(&slot) == 2 {
            slots.remove(topic);
        }
        answer
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<TopicName, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicUsize, time::Duration};

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::log::LogReader;

    /// A broker whose log grows by one record per end query, each query taking 20 ms.
    #[derive(Default)]
    struct Counting {
        queries: AtomicUsize,
    }

    #[async_trait]
    impl LogBroker for Counting {
        fn kind(&self) -> &'static str {
            "test"
        }
        async fn create(&self, _: &str) -> Result<(), LogError> {
            Ok(())
        }
        async fn append(&self, _: &str, _: &[(String, Bytes)]) -> Result<(), LogError> {
            Ok(())
        }
        async fn end(&self, _: &str) -> Result<u64, LogError> {
            let n = self.queries.fetch_add(1, SeqCst) as u64 + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(n)
        }
        async fn reader(&self, log: &str, _: u64) -> Result<Box<dyn LogReader>, LogError> {
            Err(LogError::Missing(log.to_owned()))
        }
        async fn wait_up(&self) {}
    }

    #[tokio::test]
    async fn concurrent_reads_share_a_query_that_started_after_they_arrived() {
        let broker = Arc::new(Counting::default());
        let ends = Arc::new(Ends::new(broker.clone()));
        let topic = TopicName::parse("t").unwrap();
        // One query in flight; a hundred readers arrive during it.
        let first = {
            let (ends, topic) = (ends.clone(), topic.clone());
            tokio::spawn(async move { ends.end(&topic).await })
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        let waiting: Vec<_> = (0..100)
            .map(|_| {
                let (ends, topic) = (ends.clone(), topic.clone());
                tokio::spawn(async move { ends.end(&topic).await })
            })
            .collect();
        assert_eq!(first.await.unwrap(), Ok(1));
        for reader in waiting {
            // Not the answer of the query already running when they arrived: the next one.
            assert_eq!(reader.await.unwrap(), Ok(2));
        }
        assert_eq!(broker.queries.load(SeqCst), 2);
        // Nothing is kept for a topic nobody reads.
        assert!(ends.slots().is_empty());
        assert_eq!(ends.end(&topic).await, Ok(3));
    }
}
