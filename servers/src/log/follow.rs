//! Following one log: a task reads it from an offset until stopped and hands every record on, in
//! order, to a [`Sink`]. A broker failure never ends it: it reopens its reader with backoff (each
//! retry counted) and resumes after the last record it handed on. The feed's topic followers
//! (`bus/log/follow.rs`) and the queue's job-log followers (`queue/log/`) are this loop.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{Entry, LogBroker, LogError};
use crate::{backoff::Backoff, metrics::RedisCounters};

/// How long one read waits on the broker before the follower looks at the stop token again.
const READ_WAIT: Duration = Duration::from_secs(1);

/// Where a follower hands records on.
pub trait Sink: Send + 'static {
    /// The next records of the log, in order.
    fn records(&mut self, entries: Vec<Entry>);

    /// The broker lost the log (restarted without its data, or the log was deleted); the follower
    /// goes on from offset 0 of whatever the log holds now.
    fn reset(&mut self, error: &LogError);
}

/// Reads `log` from `next` into `sink` until `stop`.
pub async fn follow(
    broker: Arc<dyn LogBroker>,
    log: String,
    mut next: u64,
    mut sink: impl Sink,
    counters: Arc<RedisCounters>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new();
    let mut failing = false;
    while !stop.is_cancelled() {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = broker.reader(&log, next) => opened,
        };
        let failure = match opened {
            Ok(mut reader) => loop {
                let read = tokio::select! {
                    () = stop.cancelled() => return,
                    read = reader.next(READ_WAIT) => read,
                };
                match read {
                    Ok(entries) => {
                        if failing {
                            tracing::info!(log, next, "log follower resumed");
                            failing = false;
                            backoff.reset();
                        }
                        if let Some(last) = entries.last() {
                            next = last.offset + 1;
                            sink.records(entries);
                        }
                    }
                    Err(error) => break Some(error),
                }
            },
            Err(error) => Some(error),
        };
        match failure {
            Some(error @ LogError::Reset { .. }) => {
                sink.reset(&error);
                next = 0;
            }
            Some(error @ LogError::Missing(_)) if next > 0 => {
                sink.reset(&error);
                next = 0;
            }
            // Not created yet: look again after a pause.
            Some(LogError::Missing(_)) | None => {}
            Some(error) => {
                if !failing {
                    tracing::warn!(log, %error, next, "log follower lost the broker; retrying with backoff, subscribers stay connected");
                }
                failing = true;
                counters.reconnect_attempts.fetch_add(1, Relaxed);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}
