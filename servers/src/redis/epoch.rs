//! Noticing that Redis lost its data: a random epoch id lives in Redis beside the data (`cb:epoch`),
//! written by the first instance that finds it missing. An instance that finds a different one (or
//! none) than it saw last knows the Redis it reconnected to is not the one it left — restarted without
//! persistence, flushed, or the key evicted — and the Redis bus and queue repair what they can
//! ([`Link::on_data_loss`](super::link::Link::on_data_loss)). `run_id` from `INFO server` would not do:
//! it changes on every restart, also one that kept everything.

use std::sync::{atomic::Ordering::Relaxed, Mutex};

use redis::Script;
use tokio::sync::watch;

use crate::metrics::RedisCounters;

/// Where the epoch id lives.
pub const EPOCH_KEY: &str = "cb:epoch";

/// Sets the epoch when it is missing (ARGV[1], a fresh random id) and returns the one Redis holds, so
/// instances that race after a loss all adopt the winner's. KEYS: the epoch key.
const EPOCH: &str = "redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])";

/// The epoch this instance last saw, and how many data losses it has noticed.
pub struct Epoch {
    script: Script,
    seen: Mutex<Option<String>>,
    losses: watch::Sender<u64>,
}

impl Default for Epoch {
    fn default() -> Self {
        Self {
            script: Script::new(EPOCH),
            seen: Mutex::new(None),
            losses: watch::Sender::new(0),
        }
    }
}

impl Epoch {
    /// Reads (or starts) the epoch on `connection`; doubles as the check that Redis answers.
    pub async fn read(
        &self,
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> redis::RedisResult<String> {
        self.script
            .key(EPOCH_KEY)
            .arg(format!("{:016x}", fastrand::u64(..)))
            .invoke_async(connection)
            .await
    }

    /// Compares `epoch` with the one seen last: a change after the first sight is a data loss, which
    /// is counted, logged and announced to [`losses`](Self::losses) before the caller goes on.
    pub fn observe(&self, epoch: String, counters: &RedisCounters) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.as_deref() == Some(epoch.as_str()) {
            return;
        }
        let previous = seen.replace(epoch);
        drop(seen);
        if let Some(previous) = previous {
            counters.data_losses.fetch_add(1, Relaxed);
            tracing::warn!(
                previous,
                "redis lost its data (its epoch key is gone: restarted without persistence, \
                 flushed or evicted): sequence numbers continue above the highest this instance has \
                 seen, readers get a gap for what was lost, lost queue jobs are counted"
            );
            self.losses.send_modify(|n| *n += 1);
        }
    }

    /// Changes once per data loss noticed.
    pub fn losses(&self) -> watch::Receiver<u64> {
        self.losses.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_changed_epoch_is_a_loss() {
        let (epoch, counters) = (Epoch::default(), RedisCounters::default());
        let mut losses = epoch.losses();
        epoch.observe("a".into(), &counters);
        epoch.observe("a".into(), &counters);
        assert!(!losses.has_changed().unwrap(), "the first sight is no loss");
        epoch.observe("b".into(), &counters);
        assert!(losses.has_changed().unwrap());
        assert_eq!(*losses.borrow_and_update(), 1);
        assert_eq!(counters.data_losses.load(Relaxed), 1);
    }
}
