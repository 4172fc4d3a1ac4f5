//! Replaying an outage spool into its broker: one task per spool sends it front to back, in pipelined
//! batches, paced by [`Backoff`] while the broker is away. Broker-agnostic: a backend implements
//! [`Replay`] (apply a batch, wait for the broker) and the loop here is the same for all of them.

use std::{
    future::Future,
    sync::{Mutex, MutexGuard},
};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Spool, SpoolFull, SpoolLimits};
use crate::{backoff::Backoff, metrics::SpoolCounters};

/// Most spooled items replayed in one batch (one round trip).
pub const REPLAY_BATCH: usize = 64;
/// Tries of one spooled item the broker keeps refusing as a whole request (an error, not an answer
/// about the item) before it is dropped, so replay never wedges on it.
pub const MAX_REFUSALS: u32 = 5;

/// What the broker answered about one item of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It holds the item now (applied now, or found applied by an earlier attempt).
    Applied,
    /// It refused the item for good (e.g. a limit); the reason is logged when it is dropped.
    Refused(String),
}

/// Why an attempt at the broker did not go through (a whole batch, or one direct call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The broker is unreachable; `attempted` when the request was sent, so it may have been applied.
    Outage { attempted: bool, detail: String },
    /// The broker answered the request with an error: spooling would not help a direct call, and a
    /// replay retries it only a few times.
    Refused(String),
}

/// A broker a spool replays into.
pub trait Replay: Send + Sync {
    /// One spooled item; carries its own id, so applying it twice has the effect of applying it once.
    type Item: Clone + Send + Sync;

    /// What an item is, for log lines ("publish", "enqueue").
    const NOUN: &'static str;

    /// Applies `batch` in order in one round trip and answers one [`Outcome`] per item, in order.
    /// Must be idempotent per item id: an item the broker already holds is `Applied`, not added again.
    fn apply_batch(
        &self,
        batch: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Outcome>, Failure>> + Send;

    /// Resolves once the broker is reachable again (at once when it is).
    fn wait_up(&self) -> impl Future<Output = ()> + Send;

    /// Notes that an attempt at `item` may have been applied without an answer, for backends that
    /// look for an earlier application only when told to (a cheaper apply otherwise).
    fn maybe_applied(_item: &mut Self::Item) {}

    /// Called once for each item replayed (e.g. to count it where direct calls are counted).
    fn applied(&self, _item: &Self::Item) {}

    /// The item, for a log line about dropping it.
    fn describe(item: &Self::Item) -> String;
}

/// A bounded outage spool and its in-order replay. While it holds anything, new items must queue
/// behind it (callers check [`is_empty`](Self::is_empty) before calling the broker directly), so one
/// sender's items keep their order. Only the replay removes items, so its front is always the batch
/// just applied.
pub struct Replayer<T> {
    spool: Mutex<Spool<T>>,
    wake: Notify,
}

impl<T: Clone + Send + Sync> Replayer<T> {
    pub fn new(limits: SpoolLimits, counters: std::sync::Arc<SpoolCounters>) -> Self {
        Self {
            spool: Mutex::new(Spool::new(limits, counters)),
            wake: Notify::new(),
        }
    }

    /// True when nothing waits, so a new item may go to the broker directly.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Spools `item` (counting `size` bytes) behind everything waiting and wakes the replay; the new
    /// depth, or [`SpoolFull`].
    pub fn spool(&self, item: T, size: usize) -> Result<usize, SpoolFull> {
        let depth = self.lock().push(item, size)?;
        self.wake.notify_one();
        Ok(depth)
    }

    /// The first waiting item `f` maps to something (a linear scan, but only while the bounded spool
    /// holds anything).
    pub fn find_map<R>(&self, f: impl FnMut(&T) -> Option<R>) -> Option<R> {
        let spool = self.lock();
        if spool.is_empty() {
            return None;
        }
        let found = spool.oldest(usize::MAX).find_map(f);
        found
    }

    /// Replays whenever something is spooled, until `stop`; logs each recovery with its count, and at
    /// the end what is left (it is lost: the spool is memory only).
    pub async fn run<R: Replay<Item = T>>(&self, sink: &R, stop: CancellationToken) {
        loop {
            let replayed = tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => tokio::select! {
                    () = stop.cancelled() => break,
                    replayed = self.drain(sink) => replayed,
                },
            };
            if replayed > 0 {
                tracing::info!(replayed, "replayed spooled {}s in order", R::NOUN);
            }
        }
        let left = self.len();
        if left > 0 {
            tracing::warn!(
                left,
                "shutting down with {}s still spooled; they are lost",
                R::NOUN
            );
        }
    }

    /// Replays the spool front to back until it is empty; returns how many were replayed. An outage
    /// waits for the broker, then retries the same batch after a backoff step; a batch the broker
    /// refuses as a whole is retried one item at a time, so only the culprit is dropped.
    pub async fn drain<R: Replay<Item = T>>(&self, sink: &R) -> u64 {
        let mut replayed = 0;
        let mut backoff = Backoff::new();
        // After a batch refused as a whole: items still to go one at a time.
        let mut single = 0usize;
        let mut refusals = 0u32;
        loop {
            let size = if single > 0 { 1 } else { REPLAY_BATCH };
            let batch: Vec<T> = self.lock().oldest(size).cloned().collect();
            if batch.is_empty() {
                return replayed;
            }
            match sink.apply_batch(&batch).await {
                Ok(outcomes) => {
                    backoff.reset();
                    refusals = 0;
                    single = single.saturating_sub(batch.len());
                    let mut spool = self.lock();
                    // A short answer leaves the unanswered rest at the front, to be sent again.
                    for (item, outcome) in batch.iter().zip(outcomes) {
                        match outcome {
                            Outcome::Applied => {
                                spool.replayed();
                                sink.applied(item);
                                replayed += 1;
                            }
                            Outcome::Refused(reason) => {
                                tracing::warn!(
                                    item = R::describe(item),
                                    %reason,
                                    "dropping a spooled {} the broker refused",
                                    R::NOUN
                                );
                                spool.dropped();
                            }
                        }
                    }
                }
                Err(Failure::Outage { attempted, .. }) => {
                    if attempted {
                        self.maybe_applied::<R>(batch.len());
                    }
                    sink.wait_up().await;
                    // Paced, so a broker that comes and goes is not hammered.
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                Err(Failure::Refused(_)) if batch.len() > 1 => {
                    // Part of it may be applied; replays are idempotent per id, so resending is safe.
                    self.maybe_applied::<R>(batch.len());
                    single = batch.len();
                }
                Err(Failure::Refused(detail)) => {
                    refusals += 1;
                    if refusals < MAX_REFUSALS {
                        self.maybe_applied::<R>(1);
                        tokio::time::sleep(backoff.next_wait()).await;
                        continue;
                    }
                    tracing::warn!(
                        item = R::describe(&batch[0]),
                        %detail,
                        refusals,
                        "dropping a spooled {} the broker keeps refusing",
                        R::NOUN
                    );
                    self.lock().dropped();
                    refusals = 0;
                    single = single.saturating_sub(1);
                }
            }
        }
    }

    /// Marks the oldest `n` items as possibly applied.
    fn maybe_applied<R: Replay<Item = T>>(&self, n: usize) {
        self.lock().oldest_mut(n).for_each(R::maybe_applied);
    }

    fn lock(&self) -> MutexGuard<'_, Spool<T>> {
        // Every critical section is one spool operation, so a poisoned spool is still consistent.
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{HashSet, VecDeque},
        sync::{
            atomic::{AtomicU64, Ordering::Relaxed},
            Arc,
        },
        time::Duration,
    };

    use tokio::sync::watch;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Item {
        id: u32,
        maybe_applied: bool,
    }

    /// A scripted failure of the fake broker's next call.
    enum Step {
        /// Applies the first `n` items of the batch, then the answer is lost (an outage after sending).
        LoseAnswerAfter(usize),
        /// Unreachable before anything was sent.
        Down,
    }

    /// An in-memory broker with the semantics the Redis scripts have: an item marked maybe-applied is
    /// looked for and not added twice; an unmarked one is added even if it is already there (so a
    /// replayer that forgets to mark shows up as a duplicate).
    #[derive(Default)]
    struct FakeBroker {
        /// Ids held, in the order they were added.
        held: Mutex<Vec<u32>>,
        /// Failures for the next calls, in order; then it answers normally.
        script: Mutex<VecDeque<Step>>,
        /// Ids it refuses for good (an answer about the item).
        refused: HashSet<u32>,
        /// Ids that make the whole request fail with an error (the rest of the batch is applied,
        /// as in a pipeline).
        poison: HashSet<u32>,
        /// Every batch it was sent.
        calls: Mutex<Vec<Vec<Item>>>,
        /// Whether it is reachable, for `wait_up`.
        up: Option<watch::Sender<bool>>,
        applied: AtomicU64,
    }

    impl FakeBroker {
        fn held(&self) -> Vec<u32> {
            self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        fn calls(&self) -> Vec<Vec<Item>> {
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        fn apply(&self, item: &Item) -> Outcome {
            if self.refused.contains(&item.id) {
                return Outcome::Refused(format!("item {} is over a limit", item.id));
            }
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if !(item.maybe_applied && held.contains(&item.id)) {
                held.push(item.id);
            }
            Outcome::Applied
        }
    }

    impl Replay for FakeBroker {
        type Item = Item;
        const NOUN: &'static str = "item";

        async fn apply_batch(&self, batch: &[Item]) -> Result<Vec<Outcome>, Failure> {
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(batch.to_vec());
            let step = self
                .script
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            match step {
                Some(Step::Down) => {
                    return Err(Failure::Outage {
                        attempted: false,
                        detail: "down".into(),
                    })
                }
                Some(Step::LoseAnswerAfter(n)) => {
                    batch.iter().take(n).for_each(|item| {
                        self.apply(item);
                    });
                    return Err(Failure::Outage {
                        attempted: true,
                        detail: "connection reset".into(),
                    });
                }
                None => {}
            }
            let outcomes: Vec<Outcome> = batch
                .iter()
                .filter(|item| !self.poison.contains(&item.id))
                .map(|item| self.apply(item))
                .collect();
            if batch.iter().any(|item| self.poison.contains(&item.id)) {
                return Err(Failure::Refused("script error".into()));
            }
            Ok(outcomes)
        }

        async fn wait_up(&self) {
            if let Some(up) = &self.up {
                let _ = up.subscribe().wait_for(|up| *up).await;
            }
        }

        fn maybe_applied(item: &mut Item) {
            item.maybe_applied = true;
        }

        fn applied(&self, _item: &Item) {
            self.applied.fetch_add(1, Relaxed);
        }

        fn describe(item: &Item) -> String {
            format!("item {}", item.id)
        }
    }

    fn replayer(ids: std::ops::Range<u32>) -> (Replayer<Item>, Arc<SpoolCounters>) {
        let counters = Arc::new(SpoolCounters::default());
        let limits = SpoolLimits {
            events: 1000,
            bytes: 1 << 20,
        };
        let replayer = Replayer::new(limits, counters.clone());
        for id in ids {
            let item = Item {
                id,
                maybe_applied: false,
            };
            replayer.spool(item, 1).unwrap_or_else(|e| panic!("{e}"));
        }
        (replayer, counters)
    }

    /// Replayed, dropped, depth.
    fn counts(counters: &SpoolCounters) -> (u64, u64, i64) {
        (
            counters.replayed.load(Relaxed),
            counters.dropped.load(Relaxed),
            counters.depth.load(Relaxed),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn replays_everything_in_order_in_bounded_batches() {
        let (replayer, counters) = replayer(0..150);
        let broker = FakeBroker::default();
        assert_eq!(replayer.drain(&broker).await, 150);
        assert_eq!(broker.held(), (0..150).collect::<Vec<_>>());
        let sizes: Vec<usize> = broker.calls().iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            vec![REPLAY_BATCH, REPLAY_BATCH, 150 - 2 * REPLAY_BATCH]
        );
        assert_eq!(counts(&counters), (150, 0, 0));
        assert_eq!(broker.applied.load(Relaxed), 150);
        assert!(replayer.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_lost_mid_batch_is_resent_marked_and_applied_once() {
        let (replayer, counters) = replayer(0..20);
        let broker = FakeBroker::default();
        broker
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Step::LoseAnswerAfter(10));
        assert_eq!(replayer.drain(&broker).await, 20);
        // Without the mark the first ten would be held twice.
        assert_eq!(broker.held(), (0..20).collect::<Vec<_>>());
        let calls = broker.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls[0].iter().all(|item| !item.maybe_applied));
        assert!(calls[1].iter().all(|item| item.maybe_applied));
        assert_eq!(counts(&counters), (20, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_before_sending_waits_for_the_broker_then_resends_unmarked() {
        let (up, _) = watch::channel(false);
        let broker = Arc::new(FakeBroker {
            up: Some(up),
            ..FakeBroker::default()
        });
        broker
            .script
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Step::Down);
        let (replayer, counters) = replayer(0..3);
        let replayer = Arc::new(replayer);
        let task = tokio::spawn({
            let (replayer, broker) = (replayer.clone(), broker.clone());
            async move { replayer.drain(&*broker).await }
        });
        // However long the broker stays down, nothing is resent or lost meanwhile.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(broker.calls().len(), 1);
        assert_eq!(replayer.len(), 3);
        if let Some(up) = &broker.up {
            up.send_replace(true);
        }
        assert_eq!(task.await.ok(), Some(3));
        assert_eq!(broker.held(), vec![0, 1, 2]);
        // Nothing was sent before, so there is nothing to look for.
        assert!(broker.calls()[1].iter().all(|item| !item.maybe_applied));
        assert_eq!(counts(&counters), (3, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn an_item_refused_for_good_is_dropped_and_counted_and_the_rest_goes_on() {
        let (replayer, counters) = replayer(0..6);
        let broker = FakeBroker {
            refused: HashSet::from([3]),
            ..FakeBroker::default()
        };
        assert_eq!(replayer.drain(&broker).await, 5);
        assert_eq!(broker.held(), vec![0, 1, 2, 4, 5]);
        assert_eq!(broker.calls().len(), 1, "an answer about one item is final");
        assert_eq!(counts(&counters), (5, 1, 0));
        assert_eq!(broker.applied.load(Relaxed), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_refused_as_a_whole_goes_item_by_item_and_drops_only_the_culprit() {
        // The culprit sits in the second batch, so the first batch boundary is crossed normally.
        let culprit = REPLAY_BATCH as u32 + 5;
        let total = REPLAY_BATCH as u32 + 10;
        let (replayer, counters) = replayer(0..total);
        let broker = FakeBroker {
            poison: HashSet::from([culprit]),
            ..FakeBroker::default()
        };
        assert_eq!(replayer.drain(&broker).await, u64::from(total) - 1);
        // The refused batch applied everything else once; the item-by-item resend added nothing.
        let expected: Vec<u32> = (0..total).filter(|id| *id != culprit).collect();
        assert_eq!(broker.held(), expected);
        let calls = broker.calls();
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        let mut want = vec![REPLAY_BATCH, 10];
        // Five before the culprit, the culprit's tries, four after it.
        want.extend(std::iter::repeat_n(1, 5 + MAX_REFUSALS as usize + 4));
        assert_eq!(sizes, want);
        assert!(calls[2..].iter().all(|batch| batch[0].maybe_applied));
        assert_eq!(counts(&counters), (u64::from(total) - 1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn run_replays_what_is_spooled_until_stopped() {
        let (replayer, counters) = replayer(0..0);
        let (replayer, broker) = (Arc::new(replayer), Arc::new(FakeBroker::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (replayer, broker, stop) = (replayer.clone(), broker.clone(), stop.clone());
            async move { replayer.run(&*broker, stop).await }
        });
        for id in 0..3 {
            let item = Item {
                id,
                maybe_applied: false,
            };
            replayer.spool(item, 1).unwrap_or_else(|e| panic!("{e}"));
        }
        while !replayer.is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(broker.held(), vec![0, 1, 2]);
        stop.cancel();
        assert!(task.await.is_ok());
        assert_eq!(counts(&counters), (3, 0, 0));
    }

    #[test]
    fn find_map_looks_through_waiting_items_oldest_first() {
        let (replayer, _) = replayer(0..5);
        assert_eq!(
            replayer.find_map(|item| (item.id >= 2).then_some(item.id)),
            Some(2)
        );
        assert_eq!(
            replayer.find_map(|item| (item.id > 9).then_some(item.id)),
            None
        );
    }
}
