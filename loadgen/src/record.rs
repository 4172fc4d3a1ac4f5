//! What a run records: HDR histograms (sharded by client so recording never takes a global lock) and
//! lock-free counters. Clients only emit into these; the collector and the report read them.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
        Mutex,
    },
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::ordinals::Ranges;

/// Largest value a histogram holds: one hour in microseconds. Larger samples are clamped (and counted).
pub const MAX_MICROS: u64 = 3_600_000_000;

/// The latency distributions a run records, all in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Publish (intended send time) → the client has the event. For polling this is the staleness.
    Delivery,
    /// Request round trip measured from the intended send time (coordinated omission corrected).
    RoundTrip,
    /// Request round trip measured from the actual send time (what a naive tool reports).
    RoundTripUncorrected,
    /// TCP connect plus HTTP/WebSocket handshake, until the first byte of the answer.
    Connect,
    /// Time between consecutive messages on a stream (external SSE/WebSocket targets).
    InterArrival,
    /// Delivery latency of clients on an instance other than the publishing one: every such event
    /// crossed the bus (Redis) between instances.
    CrossInstance,
    /// Job patterns: intended submit time → the user knows the job is done.
    JobResult,
    /// Job patterns: enqueue → first taken by a worker (the server's clock), premium lane.
    QueueWaitPremium,
    /// The same for the normal lane.
    QueueWaitNormal,
    /// Publish (the instant the publisher started writing it) → the client has the event: the
    /// delivery latency without the publisher's own lateness.
    DeliveryFromWrite,
    /// How late the publisher started writing each publish after its intended time.
    PublishLateness,
}

impl Metric {
    pub const ALL: [Metric; 11] = [
        Metric::Delivery,
        Metric::RoundTrip,
        Metric::RoundTripUncorrected,
        Metric::Connect,
        Metric::InterArrival,
        Metric::CrossInstance,
        Metric::JobResult,
        Metric::QueueWaitPremium,
        Metric::QueueWaitNormal,
        Metric::DeliveryFromWrite,
        Metric::PublishLateness,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Delivery => "delivery",
            Metric::RoundTrip => "round_trip",
            Metric::RoundTripUncorrected => "round_trip_uncorrected",
            Metric::Connect => "connect",
            Metric::InterArrival => "inter_arrival",
            Metric::CrossInstance => "cross_instance",
            Metric::JobResult => "job_result",
            Metric::QueueWaitPremium => "queue_wait_premium",
            Metric::QueueWaitNormal => "queue_wait_normal",
            Metric::DeliveryFromWrite => "delivery_from_write",
            Metric::PublishLateness => "publish_lateness",
        }
    }
}

const METRICS: usize = Metric::ALL.len();

/// A fresh histogram with the range and precision every metric uses (1 µs .. 1 h, 3 digits).
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap_or_else(|_| unreachable!())
}

/// Counters for one run cell. Atomics: clients on any thread add without locking.
#[derive(Default)]
pub struct Counters {
    /// Events received, duplicates included, counted live (windowed: the cost denominator).
    pub events_received: AtomicU64,
    pub requests: AtomicU64,
    pub empty_responses: AtomicU64,
    pub events_delivered: AtomicU64,
    pub events_expected: AtomicU64,
    pub events_lost: AtomicU64,
    pub events_duplicated: AtomicU64,
    pub events_out_of_order: AtomicU64,
    pub gaps: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_open: AtomicI64,
    pub connections_peak: AtomicI64,
    pub reconnects: AtomicU64,
    pub published: AtomicU64,
    /// The publisher's successful publishes whose intended time fell in the measured window:
    /// exact, however late each answer comes.
    pub published_in_window: AtomicU64,
    pub late_sends: AtomicU64,
    pub dropped_sends: AtomicU64,
    pub clamped_samples: AtomicU64,
    /// Job patterns: redeliveries (attempts − 1) and extra completions of the jobs users saw done.
    pub jobs_redelivered: AtomicU64,
    pub jobs_duplicated: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    pub error_total: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts one error of `kind` (a short, stable label such as `connect_refused` or `http_503`).
    /// Errors are rare, so a mutex here is off the hot path.
    pub fn error(&self, kind: impl Into<String>) {
        self.error_total.fetch_add(1, Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(kind.into()).or_insert(0) += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Relaxed);
        let open = self.connections_open.fetch_add(1, Relaxed) + 1;
        self.connections_peak.fetch_max(open, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let l = |c: &AtomicU64| c.load(Relaxed);
        CounterSnapshot {
            events_received: l(&self.events_received),
            requests: l(&self.requests),
            empty_responses: l(&self.empty_responses),
            events_delivered: l(&self.events_delivered),
            events_expected: l(&self.events_expected),
            events_lost: l(&self.events_lost),
            events_duplicated: l(&self.events_duplicated),
            events_out_of_order: l(&self.events_out_of_order),
            gaps: l(&self.gaps),
            bytes_up: l(&self.bytes_up),
            bytes_down: l(&self.bytes_down),
            connections_opened: l(&self.connections_opened),
            connections_peak: self.connections_peak.load(Relaxed).max(0) as u64,
            reconnects: l(&self.reconnects),
            published: l(&self.published),
            late_sends: l(&self.late_sends),
            dropped_sends: l(&self.dropped_sends),
            clamped_samples: l(&self.clamped_samples),
            jobs_redelivered: l(&self.jobs_redelivered),
            jobs_duplicated: l(&self.jobs_duplicated),
            errors: l(&self.error_total),
        }
    }
}

/// Plain copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    /// Events received in the measured window (duplicates included): divide window costs by this.
    pub events_received: u64,
    /// Requests sent in the measured window.
    pub requests: u64,
    pub empty_responses: u64,
    /// Unique events delivered over each client's whole subscription (loss accounting: expected =
    /// delivered + lost).
    pub events_delivered: u64,
    pub events_expected: u64,
    pub events_lost: u64,
    pub events_duplicated: u64,
    pub events_out_of_order: u64,
    pub gaps: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub connections_opened: u64,
    pub connections_peak: u64,
    pub reconnects: u64,
    pub published: u64,
    pub late_sends: u64,
    pub dropped_sends: u64,
    pub clamped_samples: u64,
    pub jobs_redelivered: u64,
    pub jobs_duplicated: u64,
    pub errors: u64,
}

impl CounterSnapshot {
    /// Combines three snapshots: traffic (requests, bytes, events received, publishes, late sends)
    /// over the measured window `start..end`; loss accounting, connections and errors from `last`
    /// (taken after the drain, over the whole run).
    pub fn windowed(start: &Self, end: &Self, last: &Self) -> Self {
        let d = |f: fn(&Self) -> u64| f(end).saturating_sub(f(start));
        Self {
            events_received: d(|s| s.events_received),
            requests: d(|s| s.requests),
            empty_responses: d(|s| s.empty_responses),
            bytes_up: d(|s| s.bytes_up),
            bytes_down: d(|s| s.bytes_down),
            published: d(|s| s.published),
            late_sends: d(|s| s.late_sends),
            dropped_sends: d(|s| s.dropped_sends),
            ..*last
        }
    }

    /// The counts of two processes together (each worker's connection peak adds up: its clients
    /// are open at the same time as the others').
    pub fn add(&self, other: &Self) -> Self {
        Self {
            events_received: self.events_received + other.events_received,
            requests: self.requests + other.requests,
            empty_responses: self.empty_responses + other.empty_responses,
            events_delivered: self.events_delivered + other.events_delivered,
            events_expected: self.events_expected + other.events_expected,
            events_lost: self.events_lost + other.events_lost,
            events_duplicated: self.events_duplicated + other.events_duplicated,
            events_out_of_order: self.events_out_of_order + other.events_out_of_order,
            gaps: self.gaps + other.gaps,
            bytes_up: self.bytes_up + other.bytes_up,
            bytes_down: self.bytes_down + other.bytes_down,
            connections_opened: self.connections_opened + other.connections_opened,
            connections_peak: self.connections_peak + other.connections_peak,
            reconnects: self.reconnects + other.reconnects,
            published: self.published + other.published,
            late_sends: self.late_sends + other.late_sends,
            dropped_sends: self.dropped_sends + other.dropped_sends,
            clamped_samples: self.clamped_samples + other.clamped_samples,
            jobs_redelivered: self.jobs_redelivered + other.jobs_redelivered,
            jobs_duplicated: self.jobs_duplicated + other.jobs_duplicated,
            errors: self.errors + other.errors,
        }
    }
}

/// Shards of histograms; a client records into `shards[client % len]`, so two tasks rarely meet on
/// one lock and none is global. The collector swaps each shard out once per interval.
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    pub counters: Counters,
}

pub struct Shard {
    histograms: [Histogram<u64>; METRICS],
}

impl Shard {
    fn new() -> Self {
        Self {
            histograms: std::array::from_fn(|_| new_histogram()),
        }
    }
}

impl Recorder {
    pub fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Shard::new()))
                .collect(),
            counters: Counters::default(),
        }
    }

    /// Records one sample for client `client`, clamping to the histogram's range.
    pub fn record(&self, client: usize, metric: Metric, micros: u64) {
        let value = if micros > MAX_MICROS {
            self.counters.clamped_samples.fetch_add(1, Relaxed);
            MAX_MICROS
        } else {
            micros.max(1)
        };
        let mut shard = self.shards[client % self.shards.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // In range by construction, so recording cannot fail.
        let _ = shard.histograms[metric as usize].record(value);
    }

    /// Adds histograms recorded elsewhere (another process of the run) to what the next
    /// [`Recorder::take_interval`] returns: exact, bucket by bucket.
    pub fn absorb(&self, metric: Metric, histogram: &Histogram<u64>) {
        let mut shard = self.shards[0].lock().unwrap_or_else(|p| p.into_inner());
        // Same bounds everywhere, so adding cannot fail.
        let _ = shard.histograms[metric as usize].add(histogram);
    }

    /// Adds another process's live traffic (what the progress display and the error limit read).
    pub fn absorb_live(&self, delta: &CounterSnapshot, connections_open: i64) {
        let c = &self.counters;
        c.events_received.fetch_add(delta.events_received, Relaxed);
        c.requests.fetch_add(delta.requests, Relaxed);
        c.error_total.fetch_add(delta.errors, Relaxed);
        c.connections_open.fetch_add(connections_open, Relaxed);
    }

    /// Takes everything recorded since the last call, one histogram per metric.
    pub fn take_interval(&self) -> [Histogram<u64>; METRICS] {
        let mut total: [Histogram<u64>; METRICS] = std::array::from_fn(|_| new_histogram());
        for shard in 0..self.shards.len() {
            self.take_shard(shard, &mut total);
        }
        total
    }

    /// Number of shards (the collector takes them one at a time).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Moves what shard `shard` recorded into `into`, leaving it empty. Empty histograms are
    /// skipped and nothing is allocated, so the lock is held for microseconds.
    pub fn take_shard(&self, shard: usize, into: &mut [Histogram<u64>; METRICS]) {
        let Some(shard) = self.shards.get(shard) else {
            return;
        };
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        for (sum, part) in into.iter_mut().zip(shard.histograms.iter_mut()) {
            if !part.is_empty() {
                // Same bounds everywhere, so adding cannot fail.
                let _ = sum.add(&*part);
                part.reset();
            }
        }
    }
}

/// Per-client loss, duplicate and order tracking by sequence number, in bounded memory: a sliding
/// window of `WINDOW` sequence numbers past the lowest unresolved one.
pub struct SeqTracker {
    /// Every seq below `base` is resolved (seen, or counted lost when the window slid past it).
    base: u64,
    seen: Vec<u64>,
    highest: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub lost: u64,
    /// Which ones were lost, as far as [`LOST_RANGES`] ranges hold them.
    lost_at: Ranges,
}

const WINDOW: u64 = 4096;
/// Ranges of lost numbers a tracker remembers: a loss is rare, and a burst of them is one range.
const LOST_RANGES: usize = 64;

impl SeqTracker {
    /// Tracks a subscription that starts after `after` (the first expected seq is `after + 1`).
    pub fn new(after: u64) -> Self {
        Self {
            base: after + 1,
            seen: vec![0; (WINDOW / 64) as usize],
            highest: after,
            delivered: 0,
            duplicated: 0,
            out_of_order: 0,
            lost: 0,
            lost_at: Ranges::default(),
        }
    }

    fn bit(&self, seq: u64) -> (usize, u64) {
        let slot = seq % WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    /// Records `seq`; returns true when it is new (not a duplicate).
    pub fn see(&mut self, seq: u64) -> bool {
        if seq < self.base {
            // Already resolved: seen before, or given up as lost when the window moved on.
            self.duplicated += 1;
            return false;
        }
        if seq >= self.base + WINDOW {
            self.slide_to(seq + 1 - WINDOW);
        }
        let (word, mask) = self.bit(seq);
        if self.seen[word] & mask != 0 {
            self.duplicated += 1;
            return false;
        }
        self.seen[word] |= mask;
        self.delivered += 1;
        if seq < self.highest {
            self.out_of_order += 1;
        }
        self.highest = self.highest.max(seq);
        // Advance past the contiguous prefix so the window keeps moving in the common in-order case.
        while self.is_seen(self.base) {
            let (word, mask) = self.bit(self.base);
            self.seen[word] &= !mask;
            self.base += 1;
        }
        true
    }

    fn is_seen(&self, seq: u64) -> bool {
        let (word, mask) = self.bit(seq);
        self.seen[word] & mask != 0
    }

    /// Resolves every seq below `new_base`, counting the unseen ones as lost.
    fn slide_to(&mut self, new_base: u64) {
        while self.base < new_base {
            let (word, mask) = self.bit(self.base);
            if self.seen[word] & mask == 0 {
                self.lost += 1;
                self.lost_at.insert(self.base, self.base, LOST_RANGES);
            }
            self.seen[word] &= !mask;
            self.base += 1;
        }
    }

    /// The server announced that `after + 1 .. oldest` are gone; they are lost.
    pub fn gap(&mut self, oldest: u64) {
        if oldest > self.base {
            self.slide_to(oldest.min(self.base + WINDOW * 1024));
            // Anything further than the window allows is still counted, without walking it.
            if oldest > self.base {
                self.lost += oldest - self.base;
                self.lost_at.insert(self.base, oldest - 1, LOST_RANGES);
                self.seen.iter_mut().for_each(|w| *w = 0);
                self.base = oldest;
            }
        }
    }

    /// Closes the books at `final_head` (the last seq published on the topic in the window): returns
    /// how many events were expected since the start cursor, counting the unseen ones lost.
    pub fn finish(&mut self, start_after: u64, final_head: u64) -> u64 {
        if final_head + 1 > self.base {
            self.gap(final_head + 1);
        }
        final_head.saturating_sub(start_after)
    }

    /// Takes back the losses that are in `unpublished` (numbers that never existed, as far as is
    /// known); returns how many. Call after [`Self::finish`].
    pub fn excuse(&mut self, unpublished: &Ranges) -> u64 {
        let excused = self.lost_at.overlap(unpublished).min(self.lost);
        self.lost -= excused;
        excused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_that_were_never_published_are_excused() {
        let mut t = SeqTracker::new(0);
        // 3 and 12 were published and never arrived; 4, 7 and 8 failed, and 8 arrived anyway.
        for seq in (1..=11).filter(|s| ![3, 4, 7].contains(s)) {
            t.see(seq);
        }
        let expected = t.finish(0, 12);
        assert_eq!((expected, t.lost), (12, 4));
        let mut failed = Ranges::default();
        for n in [7, 8, 4] {
            failed.insert(n, n, 16);
        }
        assert_eq!(t.excuse(&failed), 2);
        assert_eq!(t.lost, 2);
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let mut t = SeqTracker::new(10);
        for seq in 11..=10_000 {
            assert!(t.see(seq));
        }
        assert_eq!(t.finish(10, 10_000), 9_990);
        assert_eq!(
            (t.delivered, t.lost, t.duplicated, t.out_of_order),
            (9_990, 0, 0, 0)
        );
    }

    #[test]
    fn counts_loss_duplicates_and_reordering() {
        let mut t = SeqTracker::new(0);
        for seq in [1, 2, 4, 3, 3, 6] {
            t.see(seq);
        }
        let expected = t.finish(0, 8);
        assert_eq!(expected, 8);
        assert_eq!(t.delivered, 5);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.lost, 3); // 5, 7, 8
    }

    #[test]
    fn far_jump_counts_everything_skipped() {
        let mut t = SeqTracker::new(0);
        t.see(1);
        t.see(100_000);
        t.finish(0, 100_000);
        assert_eq!(t.lost, 99_998);
        assert_eq!(t.delivered, 2);
        // A late arrival of something already given up is counted as a duplicate, never as new.
        assert!(!t.see(5));
    }

    #[test]
    fn gap_counts_missing_events() {
        let mut t = SeqTracker::new(0);
        t.see(1);
        t.gap(50);
        for seq in 50..=60 {
            t.see(seq);
        }
        t.finish(0, 60);
        assert_eq!(t.lost, 48);
        assert_eq!(t.delivered, 12);
    }

    #[test]
    fn windowed_takes_traffic_deltas_and_final_loss() {
        let start = CounterSnapshot {
            requests: 10,
            bytes_down: 100,
            ..Default::default()
        };
        let end = CounterSnapshot {
            requests: 30,
            bytes_down: 400,
            ..Default::default()
        };
        let last = CounterSnapshot {
            requests: 35,
            events_lost: 2,
            ..Default::default()
        };
        let w = CounterSnapshot::windowed(&start, &end, &last);
        assert_eq!((w.requests, w.bytes_down, w.events_lost), (20, 300, 2));
    }

    #[test]
    fn sharded_recorder_merges_intervals() {
        let r = Recorder::new(4);
        for client in 0..100 {
            r.record(client, Metric::Delivery, 1_000 + client as u64);
        }
        r.record(0, Metric::Delivery, u64::MAX);
        let taken = r.take_interval();
        assert_eq!(taken[Metric::Delivery as usize].len(), 101);
        assert_eq!(r.counters.clamped_samples.load(Relaxed), 1);
        assert_eq!(r.take_interval()[Metric::Delivery as usize].len(), 0);
    }
}
