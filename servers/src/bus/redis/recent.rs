//! The newest events a stream follower handed on: a bounded, contiguous window per followed topic that
//! answers reads which it covers without a round trip to Redis (what a long poll re-reads after it
//! was woken, for instance).

use std::collections::VecDeque;

use crate::{bus::ReadBatch, event::SharedEvent};

pub struct Recent {
    /// Every event after this sequence number, up to [`last`](Self::last), is in `events`.
    after: u64,
    events: VecDeque<SharedEvent>,
    capacity: usize,
}

impl Recent {
    /// An empty window starting after `after` (the follower's start).
    pub fn new(after: u64, capacity: usize) -> Self {
        Self {
            after,
            events: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The newest sequence number covered.
    pub fn last(&self) -> u64 {
        self.after + self.events.len() as u64
    }

    /// Appends the follower's next event. A jump in sequence (history trimmed under a lagging
    /// follower) restarts the window at that event, so it never covers a hole.
    pub fn push(&mut self, event: SharedEvent) {
        if event.seq != self.last() + 1 {
            self.events.clear();
            self.after = event.seq.saturating_sub(1);
        }
        self.events.push_back(event);
        if self.events.len() > self.capacity {
            if let Some(oldest) = self.events.pop_front() {
                self.after = oldest.seq;
            }
        }
    }

    /// At most `limit` events after `after`, when the window holds at least one and nothing between
    /// `after` and it is missing; `None` sends the reader to Redis. An empty answer is never given
    /// from here: Redis may already hold events the follower has not handed on yet.
    pub fn read(&self, after: u64, limit: usize) -> Option<ReadBatch> {
        if after < self.after || after >= self.last() || limit == 0 {
            return None;
        }
        let skip = (after - self.after) as usize;
        let available = self.events.len() - skip;
        Some(ReadBatch {
            events: self.events.iter().skip(skip).take(limit).cloned().collect(),
            head: self.last(),
            gap: None,
            more: available > limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{event::Event, topic::TopicName};

    fn event(seq: u64) -> SharedEvent {
        let topic = TopicName::parse("t").unwrap_or_else(|e| panic!("{e}"));
        Event::new(topic, seq, Bytes::from_static(b"x"))
    }

    fn seqs(batch: &ReadBatch) -> Vec<u64> {
        batch.events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn answers_only_what_it_covers_without_holes() {
        let mut recent = Recent::new(10, 3);
        assert!(recent.read(10, 5).is_none(), "nothing after 10 yet");
        for seq in 11..=14 {
            recent.push(event(seq));
        }
        // Capacity 3: 12..=14 are held.
        assert!(recent.read(10, 5).is_none(), "11 fell out: Redis answers");
        let batch = recent.read(11, 5).unwrap_or_else(|| panic!("covered"));
        assert_eq!(
            (seqs(&batch), batch.head, batch.more),
            (vec![12, 13, 14], 14, false)
        );
        let batch = recent.read(12, 1).unwrap_or_else(|| panic!("covered"));
        assert_eq!((seqs(&batch), batch.more), (vec![13], true));
        assert!(
            recent.read(14, 5).is_none(),
            "caught up: maybe Redis has more"
        );
        assert!(recent.read(20, 5).is_none(), "ahead of the follower");
        // A jump restarts the window.
        recent.push(event(30));
        assert!(recent.read(13, 5).is_none());
        let batch = recent.read(29, 5).unwrap_or_else(|| panic!("covered"));
        assert_eq!(seqs(&batch), vec![30]);
    }
}
