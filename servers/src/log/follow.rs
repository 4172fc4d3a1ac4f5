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

/// How often an idle follower checks that its log was not made again (see [`LogBroker::identity`]).
const IDENTITY_EVERY: Duration = Duration::from_secs(1);
/// How long one read waits on the broker before the follower looks at the stop token again.
const READ_WAIT: Duration = Duration::from_secs(1);

/// Where a follower hands records on.
pub trait Sink: Send + 'static {
    /// The next records of the log, in order.
    fn records(&mut self, entries: Vec<Entry>);

    /// The broker lost the log (restarted without its data, or the log was deleted); the follower
    /// goes on from offset 0 of whatever the log holds now.
    fn reset(&mut self, error: &LogError);

    /// How long one read may wait on the broker for new records. A broker that answers a held read
    /// only when the wait ends (tansu) delivers a record up to twice this late.
    fn read_wait(&self) -> Duration {
        READ_WAIT
    }
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
    // The log's identity once it holds records; a different one after a failure means the broker
    // made the log again (a restart without its data), even if the new log is already long.
    let mut identity: Option<String> = None;
    while !stop.is_cancelled() {
        if next > 0 {
            match broker.identity(&log).await {
                Ok(Some(now)) if identity.as_ref().is_some_and(|known| *known != now) => {
                    let error = LogError::Reset {
                        log: log.clone(),
                        end: 0,
                    };
                    sink.reset(&error);
                    identity = Some(now);
                    next = 0;
                }
                Ok(now) => identity = identity.or(now),
                // Unsure whether this is still the log it was: read nothing until that is known.
                Err(_) if identity.is_some() => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                    continue;
                }
                Err(_) => {}
            }
        }
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            opened = broker.reader(&log, next) => opened,
        };
        let mut checked = tokio::time::Instant::now();
        let failure = match opened {
            Ok(mut reader) => loop {
                let read = tokio::select! {
                    () = stop.cancelled() => return,
                    read = reader.next(sink.read_wait()) => read,
                };
                match read {
                    // Idle: now and then make sure this is still the log it was (a broker that lost
                    // it may have reconnected under the reader and made it again, shorter).
                    Ok(entries)
                        if entries.is_empty()
                            && identity.is_some()
                            && checked.elapsed() >= IDENTITY_EVERY
                            && broker.remakes_under_readers() =>
                    {
                        checked = tokio::time::Instant::now();
                        let seen = broker.identity(&log).await;
                        tracing::debug!(log, ?seen, ?identity, "identity check");
                        if let Ok(Some(now)) = seen {
                            if identity.as_ref() != Some(&now) {
                                sink.reset(&LogError::Reset {
                                    log: log.clone(),
                                    end: 0,
                                });
                                (next, identity) = (0, None);
                                break None;
                            }
                        }
                    }
                    Ok(entries) => {
                        if failing {
                            tracing::info!(log, next, "log follower resumed");
                            failing = false;
                            backoff.reset();
                        }
                        if let Some(last) = entries.last() {
                            next = last.offset + 1;
                            if identity.is_none() {
                                // Read from the start: the first record is the identity (the same
                                // form `LogBroker::identity` answers); else ask the broker.
                                identity = match entries.first() {
                                    Some(first) if first.offset == 0 => {
                                        broker.identity_of_first(first)
                                    }
                                    _ => None,
                                };
                                if identity.is_none() {
                                    identity = broker.identity(&log).await.ok().flatten();
                                }
                                checked = tokio::time::Instant::now();
                            }
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
                (next, identity) = (0, None);
            }
            Some(error @ LogError::Missing(_)) if next > 0 => {
                sink.reset(&error);
                (next, identity) = (0, None);
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
