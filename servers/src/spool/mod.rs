//! A bounded FIFO that holds work while a broker is unreachable, and its in-order replay (`replay.rs`).
//!
//! Generic over the item so bus publishes and queue enqueues share it. Bounded by both a count and a
//! byte budget: a full spool refuses (the caller answers 503) rather than dropping anything silently.
//! Counting goes to [`SpoolCounters`] so `/metrics` shows spooled, replayed, rejected and the depth.

mod replay;

pub use replay::{Failure, Outcome, Replay, Replayer, MAX_REFUSALS, REPLAY_BATCH};

use std::{
    collections::VecDeque,
    sync::{atomic::Ordering::Relaxed, Arc},
};

use crate::metrics::SpoolCounters;

/// How much a spool may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Most items held at once.
    pub events: usize,
    /// Most bytes held at once (as sized by the caller, e.g. the payload length).
    pub bytes: usize,
}

/// The spool could not take one more item.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "the outage spool is full ({depth} of {max_events} events, {bytes} of {max_bytes} bytes held \
     until the broker returns); retry later"
)]
pub struct SpoolFull {
    pub depth: usize,
    pub bytes: usize,
    pub max_events: usize,
    pub max_bytes: usize,
}

/// A bounded FIFO of items, each with the size it counts against the byte budget.
pub struct Spool<T> {
    items: VecDeque<(T, usize)>,
    bytes: usize,
    limits: SpoolLimits,
    counters: Arc<SpoolCounters>,
}

impl<T> Spool<T> {
    pub fn new(limits: SpoolLimits, counters: Arc<SpoolCounters>) -> Self {
        Self {
            items: VecDeque::new(),
            bytes: 0,
            limits,
            counters,
        }
    }

    /// Appends `item` (counting `size` bytes) and returns the new depth, or refuses when either bound
    /// would be exceeded. An item larger than the whole byte budget is refused too.
    pub fn push(&mut self, item: T, size: usize) -> Result<usize, SpoolFull> {
        let fits_bytes = self
            .bytes
            .checked_add(size)
            .is_some_and(|total| total <= self.limits.bytes);
        if self.items.len() >= self.limits.events || !fits_bytes {
            self.counters.rejected.fetch_add(1, Relaxed);
            return Err(SpoolFull {
                depth: self.items.len(),
                bytes: self.bytes,
                max_events: self.limits.events,
                max_bytes: self.limits.bytes,
            });
        }
        self.items.push_back((item, size));
        self.bytes += size;
        self.counters.spooled.fetch_add(1, Relaxed);
        self.publish_depth();
        Ok(self.items.len())
    }

    /// The oldest item, which replay must deliver before any other.
    pub fn front(&self) -> Option<&T> {
        self.items.front().map(|(item, _)| item)
    }

    /// The oldest `n` items, to update them in place (e.g. to note a failed delivery attempt).
    pub fn oldest_mut(&mut self, n: usize) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut().take(n).map(|(item, _)| item)
    }

    /// The oldest `n` items, oldest first, for a replay batch.
    pub fn oldest(&self, n: usize) -> impl Iterator<Item = &T> {
        self.items.iter().take(n).map(|(item, _)| item)
    }

    /// Removes the oldest item after it was delivered; counted as replayed.
    pub fn replayed(&mut self) -> Option<T> {
        let item = self.pop()?;
        self.counters.replayed.fetch_add(1, Relaxed);
        Some(item)
    }

    /// Removes the oldest item because the broker refused it for good (not an outage); counted as
    /// dropped so replay never wedges on one bad item.
    pub fn dropped(&mut self) -> Option<T> {
        let item = self.pop()?;
        self.counters.dropped.fetch_add(1, Relaxed);
        Some(item)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn pop(&mut self) -> Option<T> {
        let (item, size) = self.items.pop_front()?;
        self.bytes -= size;
        self.publish_depth();
        Some(item)
    }

    fn publish_depth(&self) {
        self.counters.depth.store(self.items.len() as i64, Relaxed);
        self.counters.bytes.store(self.bytes as i64, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(events: usize, bytes: usize) -> (Spool<u32>, Arc<SpoolCounters>) {
        let counters = Arc::new(SpoolCounters::default());
        (
            Spool::new(SpoolLimits { events, bytes }, counters.clone()),
            counters,
        )
    }

    fn counts(c: &SpoolCounters) -> [i64; 6] {
        [
            c.spooled.load(Relaxed) as i64,
            c.replayed.load(Relaxed) as i64,
            c.rejected.load(Relaxed) as i64,
            c.dropped.load(Relaxed) as i64,
            c.depth.load(Relaxed),
            c.bytes.load(Relaxed),
        ]
    }

    #[test]
    fn bounded_by_count() {
        let (mut s, c) = spool(3, 1000);
        assert_eq!(s.push(1, 10), Ok(1));
        assert_eq!(s.push(2, 10), Ok(2));
        assert_eq!(s.push(3, 10), Ok(3));
        let full = s.push(4, 10).unwrap_err();
        assert_eq!((full.depth, full.max_events), (3, 3));
        assert_eq!(counts(&c), [3, 0, 1, 0, 3, 30]);
        // Room again once the oldest is replayed.
        assert_eq!(s.replayed(), Some(1));
        assert_eq!(s.push(4, 10), Ok(3));
    }

    #[test]
    fn bounded_by_bytes_and_oversized_items_are_refused() {
        let (mut s, c) = spool(100, 25);
        assert_eq!(s.push(1, 10), Ok(1));
        assert_eq!(s.push(2, 10), Ok(2));
        assert!(s.push(3, 10).is_err(), "30 bytes exceed 25");
        assert_eq!(s.push(4, 5), Ok(3), "exactly at the budget fits");
        assert!(s.push(5, usize::MAX).is_err(), "no overflow");
        assert_eq!(s.bytes(), 25);
        assert_eq!(counts(&c), [3, 0, 2, 0, 3, 25]);
    }

    #[test]
    fn first_in_first_out_with_counts() {
        let (mut s, c) = spool(10, 1000);
        for i in 0..5 {
            s.push(i, 1).unwrap();
        }
        assert_eq!(s.front(), Some(&0));
        assert_eq!(s.oldest(2).copied().collect::<Vec<_>>(), vec![0, 1]);
        s.oldest_mut(2).for_each(|i| *i += 10);
        assert_eq!(s.oldest(3).copied().collect::<Vec<_>>(), vec![10, 11, 2]);
        assert_eq!(s.replayed(), Some(10));
        assert_eq!(s.dropped(), Some(11));
        let rest: Vec<_> = std::iter::from_fn(|| s.replayed()).collect();
        assert_eq!(rest, vec![2, 3, 4]);
        assert!(s.is_empty());
        assert_eq!(s.replayed(), None);
        assert_eq!(counts(&c), [5, 4, 0, 1, 0, 0]);
    }
}
