//! The jobs this instance accepted (answered 202 and handed to Redis) and has not seen finish, so that
//! when Redis loses its data the unfinished ones it lost are counted (`commbench_jobs_lost_total`),
//! logged, and answered 410 `job_lost` by this instance instead of a silent 404. Bounded: the newest
//! `capacity` unfinished jobs are tracked (older ones are let go, counted in the loss log) and as many
//! lost ones remembered.

use std::{
    collections::{HashSet, VecDeque},
    sync::{Mutex, MutexGuard},
};

use super::{redis_wire as wire, QueueName};

/// A bounded set of job handles (`{queue} {id}`) that forgets the oldest first.
struct Bounded {
    set: HashSet<String>,
    /// Insertion order; may hold handles already removed from `set` (skipped when popped).
    order: VecDeque<String>,
    capacity: usize,
}

impl Bounded {
    fn new(capacity: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds `handle`; returns how many older handles were let go for room.
    fn insert(&mut self, handle: String) -> u64 {
        if !self.set.insert(handle.clone()) {
            return 0;
        }
        self.order.push_back(handle);
        let mut evicted = 0;
        while self.set.len() > self.capacity {
            match self.order.pop_front() {
                Some(oldest) => evicted += u64::from(self.set.remove(&oldest)),
                None => break,
            }
        }
        // Removed handles linger in `order`; compact before it outgrows the set by much.
        if self.order.len() > 2 * self.capacity {
            let set = &self.set;
            self.order.retain(|handle| set.contains(handle));
        }
        evicted
    }
}

struct Inner {
    unfinished: Bounded,
    lost: Bounded,
    /// Unfinished jobs let go for room since the last loss: their loss would go uncounted.
    untracked: u64,
}

/// This instance's accepted, unfinished jobs and the ones Redis lost.
pub struct Accepted {
    inner: Mutex<Inner>,
}

/// What one check after a data loss found.
#[derive(Debug, PartialEq, Eq)]
pub struct Losses {
    /// Unfinished jobs that are gone from Redis.
    pub lost: Vec<String>,
    /// Unfinished jobs that were no longer tracked (beyond the capacity), so not checked.
    pub untracked: u64,
}

impl Accepted {
    /// Tracks at most `capacity` unfinished jobs and remembers as many lost ones.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                unfinished: Bounded::new(capacity),
                lost: Bounded::new(capacity),
                untracked: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section is a few set operations, so a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Redis took the job (now, or from the outage spool).
    pub fn enqueued(&self, queue: &QueueName, id: &str) {
        let mut inner = self.lock();
        inner.untracked += inner.unfinished.insert(wire::handle(queue, id));
    }

    /// The job finished (`handle` as in the queue's `d {queue} {id}` notification).
    pub fn finished(&self, handle: &str) {
        self.lock().unfinished.set.remove(handle);
    }

    /// True when Redis lost this job, unfinished, with its data.
    pub fn is_lost(&self, queue: &QueueName, id: &str) -> bool {
        self.lock().lost.set.contains(&wire::handle(queue, id))
    }

    /// The handles of every tracked unfinished job, oldest first.
    pub fn unfinished(&self) -> Vec<String> {
        let inner = self.lock();
        let unfinished = &inner.unfinished;
        unfinished
            .order
            .iter()
            .filter(|handle| unfinished.set.contains(*handle))
            .cloned()
            .collect()
    }

    /// Records which of the checked jobs Redis no longer holds (`gone`): they move from unfinished to
    /// lost. Answers what to count and report.
    pub fn lost(&self, gone: Vec<String>) -> Losses {
        let mut inner = self.lock();
        let mut lost = Vec::with_capacity(gone.len());
        for handle in gone {
            // Finished while the check ran: not lost.
            if inner.unfinished.set.remove(&handle) {
                inner.lost.insert(handle.clone());
                lost.push(handle);
            }
        }
        Losses {
            lost,
            untracked: std::mem::take(&mut inner.untracked),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> QueueName {
        QueueName::parse("q").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn only_unfinished_jobs_are_lost_and_memory_stays_bounded() {
        let accepted = Accepted::new(3);
        for id in ["a", "b", "c", "d"] {
            accepted.enqueued(&queue(), id);
        }
        accepted.finished("q c");
        // Capacity 3: `a` was let go for `d`; `c` finished.
        assert_eq!(accepted.unfinished(), vec!["q b", "q d"]);
        let losses = accepted.lost(vec!["q b".into(), "q c".into(), "q d".into()]);
        assert_eq!(
            losses,
            Losses {
                lost: vec!["q b".into(), "q d".into()],
                untracked: 1
            }
        );
        assert!(accepted.is_lost(&queue(), "b"));
        assert!(!accepted.is_lost(&queue(), "c"));
        assert!(accepted.unfinished().is_empty());
        // Untracked jobs are reported once.
        assert_eq!(accepted.lost(Vec::new()).untracked, 0);
        // Lost jobs are remembered boundedly too.
        for id in ["e", "f", "g", "h"] {
            accepted.enqueued(&queue(), id);
        }
        let gone = accepted.unfinished();
        accepted.lost(gone);
        assert!(
            !accepted.is_lost(&queue(), "b"),
            "the oldest lost job was let go"
        );
        assert!(accepted.is_lost(&queue(), "h"));
    }
}
