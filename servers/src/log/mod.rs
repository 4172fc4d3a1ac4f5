//! Append-only logs on a broker, the primitive both RabbitMQ (a stream queue per log) and Kafka (a
//! single-partition topic per log) offer: records appended in order and confirmed, each with an
//! offset from 0 that every reader sees the same, read from any offset the broker still holds. The
//! log bus (`bus/log/`) and the log queue's job records (`queue/log/`) are written once against
//! [`LogBroker`]; `rabbitmq.rs` and `kafka.rs` adapt the two brokers.

pub mod follow;
pub mod kafka;
pub mod rabbitmq;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// One record as read back: its offset, the id it was appended with and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    pub id: String,
    pub payload: Bytes,
}

/// Why a log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// The broker is unreachable or stalled; `attempted` when a write was sent and so may have been
    /// applied before its answer was lost.
    #[error("{detail}")]
    Unavailable { attempted: bool, detail: String },
    /// The log does not exist (nothing was ever appended to it).
    #[error("no log `{0}` on the broker")]
    Missing(String),
    /// The broker answered the request with an error.
    #[error("{0}")]
    Refused(String),
    /// The log ends before an offset it had confirmed: the broker lost records (restarted without its
    /// data); `end` is where it ends now.
    #[error("log `{log}` was reset by the broker (it now ends at offset {end}): records it had confirmed are gone")]
    Reset { log: String, end: u64 },
}

impl LogError {
    pub fn down(detail: impl Into<String>) -> Self {
        LogError::Unavailable {
            attempted: false,
            detail: detail.into(),
        }
    }
}

/// How a log failure counts for the outage spool's replay.
impl From<LogError> for crate::spool::Failure {
    fn from(error: LogError) -> Self {
        use crate::spool::Failure;
        match error {
            LogError::Unavailable { attempted, detail } => Failure::Outage { attempted, detail },
            LogError::Reset { .. } => Failure::Outage {
                attempted: false,
                detail: error.to_string(),
            },
            LogError::Missing(_) | LogError::Refused(_) => Failure::Refused(error.to_string()),
        }
    }
}

/// A broker holding named append-only logs.
#[async_trait]
pub trait LogBroker: Send + Sync + 'static {
    /// The broker kind, for messages (`rabbitmq`, `kafka`).
    fn kind(&self) -> &'static str;

    /// Creates the log unless it exists (idempotent, safe to race from several instances).
    async fn create(&self, log: &str) -> Result<(), LogError>;

    /// Appends `records` (id, payload) in order and returns once the broker has confirmed them all.
    async fn append(&self, log: &str, records: &[(String, Bytes)]) -> Result<(), LogError>;

    /// The log's end: one past the newest record's offset (0 when empty), or [`LogError::Missing`].
    async fn end(&self, log: &str) -> Result<u64, LogError>;

    /// A reader of the log from `offset` on (from the oldest record held, if that is later).
    async fn reader(&self, log: &str, offset: u64) -> Result<Box<dyn LogReader>, LogError>;

    /// Resolves once the broker is reachable again (at once when it is).
    async fn wait_up(&self);

    /// What tells this incarnation of the log from a later one: for a broker that can lose a log
    /// and make it again (Kafka on memory storage), its oldest record's offset and id; `None` when the
    /// log is empty or the broker keeps what it confirmed.
    async fn identity(&self, _log: &str) -> Result<Option<String>, LogError> {
        Ok(None)
    }

    /// Whether a log can be made again under a reader that stays connected (tansu on memory storage,
    /// restarted between two of its fetches), so an idle follower must check its identity now and
    /// then; `false` where only a failure can hide that (RabbitMQ: a stream is only made again
    /// after the node restarted, which ends every consumer), sparing a query per idle log per second.
    fn remakes_under_readers(&self) -> bool {
        true
    }

    /// The identity of a log whose first record (offset 0) is `first`, when the broker's identity
    /// is that record (Kafka); `None` when only [`identity`](Self::identity) can tell.
    fn identity_of_first(&self, first: &Entry) -> Option<String> {
        Some(format!("{}:{}", first.offset, first.id))
    }
}

/// Reads one log in order.
#[async_trait]
pub trait LogReader: Send {
    /// The next records, waiting up to `wait` for at least one; empty when none came in time.
    async fn next(&mut self, wait: Duration) -> Result<Vec<Entry>, LogError>;
}

/// Looks for a record appended with `id` among the newest `window` records of `log`, asking the
/// broker (not a follower, which may not have seen the log's latest incarnation yet); its offset.
pub async fn find_id(
    broker: &dyn LogBroker,
    log: &str,
    id: &str,
    window: u64,
) -> Result<Option<u64>, LogError> {
    let end = match broker.end(log).await {
        Ok(end) => end,
        Err(LogError::Missing(_)) => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut next = end.saturating_sub(window);
    if next >= end {
        return Ok(None);
    }
    let mut reader = broker.reader(log, next).await?;
    while next < end {
        let entries = reader.next(Duration::from_secs(2)).await?;
        if entries.is_empty() {
            return Err(LogError::down(format!(
                "the broker did not hand out records {next}..{end} of `{log}`"
            )));
        }
        for entry in entries {
            if entry.id == id {
                return Ok(Some(entry.offset));
            }
            next = entry.offset + 1;
        }
    }
    Ok(None)
}

/// A log name for a commbench topic or queue: `cb.{kind}.{name}` (names are `[A-Za-z0-9_-]`, valid in
/// both brokers' naming rules).
pub fn log_name(kind: &str, name: &str) -> String {
    format!("cb.{kind}.{name}")
}
