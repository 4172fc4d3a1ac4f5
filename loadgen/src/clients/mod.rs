//! Simulated clients, one module per pattern behind one signature: `run(ClientCtx)`. Each client owns
//! its connection(s), records into the shared recorder, and stops when the run tells it to. Each
//! pattern's entry point is named in its row in `crate::pattern`; the other modules are shared pieces.

mod feed;
pub(crate) mod graphql_poll;
pub(crate) mod graphql_sub;
mod job_notify;
pub(crate) mod jobs;
pub(crate) mod long_poll;
pub(crate) mod profiled;
pub(crate) mod request_response;
mod requests;
pub(crate) mod short_poll;
pub(crate) mod socketio;
pub(crate) mod sse;
mod sse_stream;
pub mod stamp;
mod stream_feed;
pub(crate) mod ws;
pub(crate) mod ws_conn;
mod ws_feed;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, OnceLock,
    },
};

use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub use feed::{Accounting, FeedReceiver};
pub use jobs::notify_topic;

use crate::{
    clock::RunClock, http::ClientError, ordinals::Ranges, pattern::Pattern, profile::PatternSpec,
    record::Recorder, scenario::Scenario, target::Target,
};

/// Failed publishes remembered per topic, in ranges of consecutive ordinals; beyond that, a failed
/// publish counts as lost wherever it did not arrive, as it did before they were remembered.
const UNPUBLISHED_RANGES: usize = 4096;

/// A topic's failed publishes; each critical section is one insert or copy, so a poisoned lock
/// still holds a consistent set.
fn lock_ranges(set: &std::sync::Mutex<Ranges>) -> std::sync::MutexGuard<'_, Ranges> {
    set.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the run is; clients watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Clients are connecting; nothing is published yet.
    Ramp,
    /// Publishing (warm-up, then the measured window).
    Run,
    /// Publishing stopped; feed clients catch up to the final heads, others stop.
    Drain,
    /// Stop now.
    Stop,
}

/// State shared by the runner and every client of one cell.
pub struct RunShared {
    pub scenario: Arc<Scenario>,
    /// The cell's pattern.
    pub pattern: Pattern,
    /// Every server instance; publishes go to the first.
    pub targets: Vec<Arc<Target>>,
    pub recorder: Arc<Recorder>,
    pub clock: RunClock,
    pub phase: watch::Receiver<Phase>,
    /// Run-clock ns when the measured window starts (u64::MAX until known); earlier samples are
    /// warm-up and not recorded in histograms.
    pub window_start_ns: AtomicU64,
    /// Clients connected and subscribed, and clients that gave up.
    pub ready: AtomicUsize,
    pub failed: AtomicUsize,
    /// The last sequence number published per topic, known once publishing stops.
    pub final_heads: OnceLock<HashMap<String, u64>>,
    /// Publishes issued so far per topic (index as `topics`): the last publish ordinal, what books
    /// kept by stamp start after and close at (`clients::stamp`).
    pub issued: Vec<AtomicU64>,
    /// Publishes that failed per topic (index as `topics`), by ordinal: refused, or no answer.
    /// Books kept by stamp expect such a publish only where it arrived.
    pub unpublished: Vec<std::sync::Mutex<Ranges>>,
    /// Topic names of this cell (client `i` follows `topics[i % len]`).
    pub topics: Vec<String>,
    /// The job queue of this cell (job patterns).
    pub queue: String,
}

impl RunShared {
    /// Empty sets of failed publishes, one per topic.
    pub fn no_unpublished(topics: usize) -> Vec<std::sync::Mutex<Ranges>> {
        (0..topics).map(|_| Default::default()).collect()
    }

    /// Remembers that the publish with `ordinal` on topic `index` failed.
    pub fn unpublished_at(&self, index: usize, ordinal: u64) {
        if let Some(set) = self.unpublished.get(index) {
            lock_ranges(set).insert(ordinal, ordinal, UNPUBLISHED_RANGES);
        }
    }

    /// Every topic's failed publishes (for load workers' books).
    pub fn unpublished_all(&self) -> Vec<Ranges> {
        self.unpublished
            .iter()
            .map(|set| lock_ranges(set).clone())
            .collect()
    }

    /// Takes the runner's failed publishes (a load worker, at the drain).
    pub fn set_unpublished(&self, sets: Vec<Ranges>) {
        for (slot, set) in self.unpublished.iter().zip(sets) {
            *lock_ranges(slot) = set;
        }
    }

    pub fn in_window(&self, intended_ns: u64) -> bool {
        intended_ns >= self.window_start_ns.load(Relaxed)
    }

    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// The target profile's section for this cell's pattern, when a profile describes the target.
    pub fn spec(&self) -> Option<&PatternSpec> {
        self.scenario.profile.as_ref()?.spec(self.pattern)
    }

    /// How this cell's clients keep their books: commbench's own by sequence number, the
    /// profile-driven ones as [`Self::accounting`] says.
    pub fn books(&self) -> Accounting {
        if self.scenario.profiled(self.pattern) {
            self.accounting()
        } else {
            Accounting::Seq
        }
    }

    /// The last sequence number (or publish ordinal) of topic `index` once publishing has
    /// stopped, for books kept by `accounting`; `None` before, or when nothing is accounted.
    pub fn final_head(&self, accounting: Accounting, index: usize) -> Option<u64> {
        let heads = self.final_heads.get()?;
        match accounting {
            Accounting::Seq => heads.get(self.topics.get(index)?).copied(),
            // The last publish that did not fail: nobody waits for one that never happened.
            Accounting::Stamp { .. } => {
                let issued = self.issued.get(index).map_or(0, |n| n.load(Relaxed));
                let failed = self.unpublished.get(index);
                Some(failed.map_or(issued, |set| lock_ranges(set).last_outside(issued)))
            }
            Accounting::InterArrival => None,
        }
    }

    /// How the profile-driven clients of this cell keep their books: by stamp when the profile
    /// publishes and the route relays the payloads, else by the messages themselves.
    pub fn accounting(&self) -> Accounting {
        let stamps = self
            .scenario
            .profile
            .as_ref()
            .is_some_and(|p| p.stamps(self.pattern));
        if stamps {
            Accounting::Stamp { latest: false }
        } else {
            Accounting::InterArrival
        }
    }
}

/// One client's view.
pub struct ClientCtx {
    pub id: usize,
    pub shared: Arc<RunShared>,
    /// The instance this client was balanced to.
    pub target: Arc<Target>,
    /// True when that instance is not the one events are published through, so every delivery
    /// crossed the bus between instances.
    pub remote: bool,
    pub source: Option<SocketAddr>,
    pub rng: fastrand::Rng,
}

impl ClientCtx {
    pub fn topic(&self) -> &str {
        &self.shared.topics[self.topic_index()]
    }

    /// The index of the client's topic in the cell's topics.
    pub fn topic_index(&self) -> usize {
        self.id % self.shared.topics.len()
    }

    /// The publishes to the client's topic that failed.
    pub fn unpublished(&self) -> Ranges {
        self.shared
            .unpublished
            .get(self.topic_index())
            .map(|set| lock_ranges(set).clone())
            .unwrap_or_default()
    }

    /// Publishes issued to the client's topic so far.
    pub fn issued(&self) -> u64 {
        self.shared
            .issued
            .get(self.topic_index())
            .map_or(0, |n| n.load(Relaxed))
    }

    pub fn recorder(&self) -> &Recorder {
        &self.shared.recorder
    }

    pub fn now_ns(&self) -> u64 {
        self.shared.clock.now_ns()
    }

    /// Counts an error under its kind.
    pub fn error(&self, error: &ClientError) {
        tracing::debug!(client = self.id, %error, "client error");
        self.shared.recorder.counters.error(error.kind());
    }

    pub fn mark_ready(&self) {
        self.shared.ready.fetch_add(1, Relaxed);
    }

    pub fn mark_failed(&self, error: &ClientError) {
        self.error(error);
        self.shared.failed.fetch_add(1, Relaxed);
    }

    /// Waits until the phase is at least `phase`; returns the phase reached.
    pub async fn wait_for(&self, phase: Phase) -> Phase {
        let mut watcher = self.shared.phase.clone();
        let reached = watcher.wait_for(|p| *p >= phase).await.map(|p| *p);
        reached.unwrap_or(Phase::Stop)
    }

    /// Resolves when the run reaches `phase` (for use in `select!`).
    pub fn reached(&self, phase: Phase) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut watcher = self.shared.phase.clone();
        async move {
            let _ = watcher.wait_for(|p| *p >= phase).await;
        }
    }
}

/// The signature every pattern's client implements (named in the pattern's row, `crate::pattern`).
pub type ClientFn = fn(ClientCtx) -> BoxFuture<'static, ()>;
