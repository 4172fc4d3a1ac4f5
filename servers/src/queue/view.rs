//! The queue's data as clients see it: a new job, a job's status, a taken job, an ack's outcome and
//! a queue's counters; serialized as the HTTP API's JSON (and the `notify` event's payload).

use serde::Serialize;

use super::Lane;
use crate::topic::TopicName;

/// Microseconds since the Unix epoch on this server's clock (0 if the clock is before 1970).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A job to enqueue, already validated.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub lane: Lane,
    pub work_ms: u64,
    pub notify: Option<TopicName>,
    pub payload: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Done,
}

impl JobState {
    pub fn label(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "queued" => Some(JobState::Queued),
            "running" => Some(JobState::Running),
            "done" => Some(JobState::Done),
            _ => None,
        }
    }
}

/// `GET /queues/{queue}/jobs/{id}`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub queue: String,
    pub lane: Lane,
    pub status: JobState,
    /// Times the job was taken (1 + redeliveries).
    pub attempts: u32,
    /// Acknowledgements received (more than 1: it was processed more than once).
    pub completions: u32,
    pub work_ms: u64,
    pub enqueued_at_us: u64,
    pub started_at_us: Option<u64>,
    pub completed_at_us: Option<u64>,
    /// First take − enqueue.
    pub queue_wait_us: Option<u64>,
    /// Where the completion is announced; not part of the JSON.
    #[serde(skip)]
    pub notify: Option<TopicName>,
    /// Held in the Redis queue's outage spool, not yet in Redis; only the enqueue answer says so.
    #[serde(skip)]
    pub spooled: bool,
}

impl JobView {
    pub fn with_wait(mut self) -> Self {
        self.queue_wait_us = self
            .started_at_us
            .map(|s| s.saturating_sub(self.enqueued_at_us));
        self
    }
}

/// A job handed to a worker: `POST /queues/{queue}/take`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct Taken {
    pub id: String,
    pub lane: Lane,
    pub work_ms: u64,
    pub payload: Option<String>,
    pub attempt: u32,
    pub lease: String,
}

/// What an acknowledgement did.
#[derive(Debug, Clone)]
pub struct AckOutcome {
    /// The job had already been completed under another lease.
    pub duplicate: bool,
    /// Its status after the ack.
    pub job: JobView,
}

/// `GET /queues/{queue}/stats`'s answer.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    pub waiting: LaneCounts,
    pub running: u64,
    pub submitted: u64,
    pub completed: u64,
    pub redelivered: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct LaneCounts {
    pub premium: u64,
    pub normal: u64,
}
