//! The highest sequence number this instance has seen per topic (answered to a publish, handed on by a
//! follower, or read as a head). It survives Redis losing its data: the publish script never numbers
//! an event at or below it, the repair after a loss raises Redis's counters to it, and reads report it
//! as the head meanwhile — so no number already handed out names a second event.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering::Relaxed},
        Mutex, MutexGuard,
    },
};

use crate::topic::TopicName;

/// The floors of one instance; at most `capacity` topics.
pub struct Floors {
    map: Mutex<HashMap<TopicName, u64>>,
    capacity: usize,
    /// Set once a floor was forgotten for room, so that is logged once.
    forgot: AtomicBool,
}

impl Floors {
    /// Room for `capacity` topics: twice `--max-topics` covers the topics of the Redis that was lost
    /// and of the one that replaced it.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            forgot: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TopicName, u64>> {
        // Every critical section is one map operation, so a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The topic's floor (0 when unknown).
    pub fn get(&self, topic: &TopicName) -> u64 {
        self.lock().get(topic).copied().unwrap_or(0)
    }

    /// Raises the topic's floor to `seq` and returns the new floor. When the map is full, the lowest
    /// floor is forgotten to make room (it guards the fewest numbers).
    pub fn raise(&self, topic: &TopicName, seq: u64) -> u64 {
        let mut map = self.lock();
        if let Some(floor) = map.get_mut(topic) {
            *floor = (*floor).max(seq);
            return *floor;
        }
        if seq == 0 {
            return 0;
        }
        if map.len() >= self.capacity {
            let lowest = map.iter().min_by_key(|(_, floor)| **floor);
            if let Some(lowest) = lowest.map(|(topic, _)| topic.clone()) {
                map.remove(&lowest);
                if !self.forgot.swap(true, Relaxed) {
                    tracing::warn!(
                        capacity = self.capacity,
                        topic = lowest.as_str(),
                        "forgetting the sequence floor of a topic for room: if Redis loses its \
                         data, its numbers may be handed out again"
                    );
                }
            }
        }
        map.insert(topic.clone(), seq);
        seq
    }

    /// Every known floor, for the repair after a loss.
    pub fn all(&self) -> Vec<(TopicName, u64)> {
        self.lock().iter().map(|(t, f)| (t.clone(), *f)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> TopicName {
        TopicName::parse(name).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn floors_only_rise_and_stay_bounded() {
        let floors = Floors::new(2);
        assert_eq!(floors.raise(&topic("a"), 0), 0);
        assert_eq!(floors.get(&topic("a")), 0, "a zero floor is not stored");
        assert_eq!(floors.raise(&topic("a"), 5), 5);
        assert_eq!(floors.raise(&topic("a"), 3), 5);
        assert_eq!(floors.raise(&topic("b"), 9), 9);
        // Full: the lowest floor (a) makes room.
        assert_eq!(floors.raise(&topic("c"), 7), 7);
        assert_eq!(floors.get(&topic("a")), 0);
        let mut all = floors.all();
        all.sort_by_key(|(_, f)| *f);
        assert_eq!(all, vec![(topic("c"), 7), (topic("b"), 9)]);
    }
}
