//! The message queue: named queues of jobs with premium and normal lanes, competing consumers, leases
//! with a visibility timeout and redelivery. Routes and workers see only the [`JobQueue`] trait; the
//! in-process backend is the default, the Redis one (Streams + a consumer group) is used with `--bus`.

mod ids;
mod lane;
mod log;
mod memory;
mod redis;
mod redis_lost;
mod redis_spool;
mod redis_wake;
pub(crate) mod redis_wire;
mod view;
pub mod workers;

use std::time::Duration;

use async_trait::async_trait;

pub use ids::{IdGen, Lease};
pub use lane::{Lane, LanePolicy};
pub use log::{ClaimLanes, Lanes, LogQueue, RabbitLanes};
pub use memory::MemoryQueue;
pub use redis::RedisQueue;
pub use view::{now_us, AckOutcome, JobState, JobView, LaneCounts, NewJob, QueueStats, Taken};

/// A queue name: the same `[A-Za-z0-9_-]{1,64}` rules as topic names.
pub type QueueName = crate::topic::TopicName;

/// Limits and timings every backend applies.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Distinct queues at once; a new one beyond it is refused.
    pub max_queues: usize,
    /// Unfinished (waiting or running) jobs one queue may hold; an enqueue beyond it is refused.
    pub max_queued_jobs: usize,
    /// A taken job not acknowledged within this becomes takeable again.
    pub visibility_timeout: Duration,
    /// Finished jobs are remembered this long (in process: also at most `max_queued_jobs` per queue).
    pub retention: Duration,
    /// Lane policy: at least one of every `normal_every` contested takes goes to the normal lane.
    pub normal_every: u32,
}

/// Why a queue operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("the server already holds {limit} queues; no new queue can be created")]
    QueueLimit { limit: usize },
    #[error("queue `{queue}` already holds {limit} unfinished jobs; retry later")]
    QueueFull { queue: String, limit: usize },
    #[error("no job `{id}` in queue `{queue}` (never enqueued, or forgotten)")]
    UnknownJob { queue: String, id: String },
    /// Accepted by this instance, then lost unfinished when Redis lost its data.
    #[error(
        "job `{id}` in queue `{queue}` was accepted, but Redis lost its data before the job \
         finished; it will not run: submit it again"
    )]
    JobLost { queue: String, id: String },
    #[error("lease `{lease}` is malformed (expected `<attempt>.<token>` as returned by take)")]
    BadLease { lease: String },
    #[error("lease `{lease}` was not issued for job `{id}`")]
    LeaseMismatch { id: String, lease: String },
    #[error("the queue backend is unavailable: {0}")]
    Unavailable(String),
    /// Redis is unreachable and the enqueue outage spool is full.
    #[error("{0}")]
    SpoolFull(#[from] crate::spool::SpoolFull),
}

/// The job queue every route and worker shares. Async and fallible so a networked broker fits behind it.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Adds a job to its lane and answers its status (`queued`).
    async fn enqueue(&self, queue: &QueueName, job: NewJob) -> Result<JobView, QueueError>;

    /// The job's current status, or `UnknownJob`.
    async fn status(&self, queue: &QueueName, id: &str) -> Result<JobView, QueueError>;

    /// Waits until the job is done or `wait` passes, then answers its status either way.
    async fn wait_done(
        &self,
        queue: &QueueName,
        id: &str,
        wait: Duration,
    ) -> Result<JobView, QueueError>;

    /// Takes the next job by the lane policy (redeliveries of expired leases first), waiting up to
    /// `wait` for one to arrive; `None` when none did.
    async fn take(
        &self,
        queue: &QueueName,
        worker: &str,
        wait: Duration,
    ) -> Result<Option<Taken>, QueueError>;

    /// Acknowledges a job under a lease. The first acknowledgement completes it; any later one (a
    /// redelivered copy finished too) is a duplicate, counted.
    async fn ack(&self, queue: &QueueName, id: &str, lease: &str)
        -> Result<AckOutcome, QueueError>;

    /// The queue's counters (zeros for a queue never used).
    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError>;

    /// Readies a queue before its first job, where that takes time: on a log broker (RabbitMQ,
    /// Kafka) the queue's job log is made and this instance follows it, so the first takes do not
    /// wait for a new log to settle (half a second on RabbitMQ) while jobs pile up. Elsewhere
    /// nothing is needed.
    async fn prepare(&self, _queue: &QueueName) -> Result<(), QueueError> {
        Ok(())
    }
}
