//! The Redis queue's enqueue path with an outage spool: a job that cannot reach Redis waits in a
//! bounded FIFO (its id is made locally, so it can be answered 202 at once) and one task replays it,
//! in order, when the link is up again. While anything waits, new enqueues queue behind it.

use std::sync::{Arc, Mutex, MutexGuard};

use redis::{RedisError, Script, ScriptInvocation};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{redis_wire as wire, JobState, JobView, NewJob, QueueConfig, QueueError, QueueName};
use crate::{
    bus::redis::link::{Backoff, Conn, Link},
    metrics::Metrics,
    spool::{Spool, SpoolLimits},
};

/// Most spooled enqueues replayed in one pipeline.
const REPLAY_BATCH: usize = 64;
/// Tries of one spooled job Redis keeps refusing with an error (not an answer) before it is dropped.
const MAX_REFUSALS: u32 = 5;
/// Unfinished jobs' hashes expire after this, so an abandoned queue cannot hold memory forever.
const UNFINISHED_TTL_S: u64 = 7 * 86_400;

/// A job on its way to Redis, with everything the enqueue script needs.
#[derive(Debug, Clone)]
pub struct PendingJob {
    pub queue: QueueName,
    pub id: String,
    pub secret: u64,
    pub enqueued_at_us: u64,
    pub job: NewJob,
}

impl PendingJob {
    /// Its status as answered before it reaches Redis (and after: nothing has happened to it yet).
    fn view(&self, spooled: bool) -> JobView {
        JobView {
            id: self.id.clone(),
            queue: self.queue.as_str().to_owned(),
            lane: self.job.lane,
            status: JobState::Queued,
            attempts: 0,
            completions: 0,
            work_ms: self.job.work_ms,
            enqueued_at_us: self.enqueued_at_us,
            started_at_us: None,
            completed_at_us: None,
            queue_wait_us: None,
            notify: self.job.notify.clone(),
            spooled,
        }
    }

    /// What it counts against the spool's byte budget.
    fn size(&self) -> usize {
        let notify = self.job.notify.as_ref().map_or(0, |t| t.as_str().len());
        self.id.len()
            + self.queue.as_str().len()
            + notify
            + self.job.payload.as_ref().map_or(0, String::len)
    }
}

/// Why an enqueue did not reach Redis.
enum Failure {
    /// Redis is unreachable (the link is retiring the connection): spool and replay.
    Outage,
    /// Redis answered with an error (not a refusal code): spooling would not help a direct enqueue.
    Refused(RedisError),
}

/// The enqueue side of one Redis queue instance.
pub struct Enqueuer {
    link: Arc<Link>,
    script: Script,
    config: QueueConfig,
    metrics: Arc<Metrics>,
    spool: Mutex<Spool<PendingJob>>,
    wake: Notify,
}

impl Enqueuer {
    /// Creates the enqueuer and starts its replay task, which ends when `stop` is cancelled.
    pub fn start(
        link: Arc<Link>,
        config: QueueConfig,
        metrics: Arc<Metrics>,
        limits: SpoolLimits,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let counters = metrics.redis.enqueue_spool.clone();
        let enqueuer = Arc::new(Self {
            link,
            script: Script::new(wire::ENQUEUE),
            config,
            metrics,
            spool: Mutex::new(Spool::new(limits, counters)),
            wake: Notify::new(),
        });
        tokio::spawn(replay(enqueuer.clone(), stop));
        enqueuer
    }

    /// Enqueues now, or, when Redis is unreachable or earlier enqueues still wait, spools the job for
    /// an in-order replay (`spooled` in the answer). Refused when the spool is full, the queue is
    /// full or at the queue limit, or Redis answers with an error.
    pub async fn submit(&self, pending: PendingJob) -> Result<JobView, QueueError> {
        if self.lock().is_empty() {
            match self.apply(&pending).await {
                Ok(code) => {
                    self.outcome(&pending, code)?;
                    self.metrics.queue.submitted(pending.job.lane);
                    return Ok(pending.view(false));
                }
                Err(Failure::Refused(error)) => return Err(unavailable(&error)),
                // It may have been applied before the answer was lost: the replay finds out.
                Err(Failure::Outage) => {}
            }
        }
        let view = pending.view(true);
        let size = pending.size();
        self.lock().push(pending, size)?;
        self.wake.notify_one();
        Ok(view)
    }

    /// The status of a job still waiting in the spool (always `queued`).
    pub fn spooled(&self, queue: &QueueName, id: &str) -> Option<JobView> {
        let spool = self.lock();
        if spool.is_empty() {
            return None;
        }
        // A linear scan, but only while the (bounded) spool holds anything.
        let found = spool
            .oldest(usize::MAX)
            .find(|p| p.id == id && p.queue == *queue)
            .map(|p| p.view(true));
        found
    }

    /// The script's answer as a result: 0 enqueued, 1 already there (an earlier attempt landed).
    fn outcome(&self, pending: &PendingJob, code: i64) -> Result<(), QueueError> {
        match code {
            0 | 1 => Ok(()),
            -1 => Err(QueueError::QueueLimit {
                limit: self.config.max_queues,
            }),
            -2 => Err(QueueError::QueueFull {
                queue: pending.queue.as_str().to_owned(),
                limit: self.config.max_queued_jobs,
            }),
            other => Err(QueueError::Unavailable(format!(
                "unexpected Redis reply to enqueue: {other}"
            ))),
        }
    }

    fn connection(&self) -> Result<Conn, Failure> {
        self.link.get().map_err(|_| Failure::Outage)
    }

    fn failure(&self, conn: &Conn, error: RedisError) -> Failure {
        if self.link.failed(conn, &error) {
            Failure::Outage
        } else {
            Failure::Refused(error)
        }
    }

    async fn apply(&self, pending: &PendingJob) -> Result<i64, Failure> {
        let conn = self.connection()?;
        self.invocation(pending)
            .invoke_async(&mut conn.inner.clone())
            .await
            .map_err(|error| self.failure(&conn, error))
    }

    /// Applies a batch in one pipeline, in order; one script answer per job.
    async fn apply_batch(&self, batch: &[PendingJob]) -> Result<Vec<i64>, Failure> {
        let conn = self.connection()?;
        let invocations: Vec<_> = batch.iter().map(|p| self.invocation(p)).collect();
        let mut pipe = redis::pipe();
        // A pipeline does not load scripts on demand, and a restarted Redis has forgotten them.
        pipe.load_script(&self.script).ignore();
        for invocation in &invocations {
            pipe.invoke_script(invocation);
        }
        pipe.query_async(&mut conn.inner.clone())
            .await
            .map_err(|error| self.failure(&conn, error))
    }

    fn invocation(&self, pending: &PendingJob) -> ScriptInvocation<'_> {
        let (queue, job) = (&pending.queue, &pending.job);
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(wire::NAMES_KEY)
            .key(wire::stream_key(queue, job.lane))
            .key(wire::stats_key(queue))
            .key(format!("{}{}", wire::job_prefix(queue), pending.id))
            .arg(queue.as_str())
            .arg(self.config.max_queues)
            .arg(self.config.max_queued_jobs)
            .arg(wire::GROUP)
            .arg(job.lane.label())
            .arg(&pending.id)
            .arg(job.work_ms)
            .arg(job.notify.as_ref().map_or("", |t| t.as_str()))
            .arg(job.payload.as_deref().unwrap_or(""))
            .arg(if job.payload.is_some() { "1" } else { "0" })
            .arg(pending.enqueued_at_us)
            .arg(format!("{:016x}", pending.secret))
            .arg(UNFINISHED_TTL_S);
        invocation
    }

    fn lock(&self) -> MutexGuard<'_, Spool<PendingJob>> {
        // Every critical section is one spool operation, so a poisoned spool is still consistent.
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replays the spool front to back, in batches, until it is empty; returns how many were replayed.
    /// Only this task removes items, so the spool's front is always the batch just applied.
    async fn drain(&self) -> u64 {
        let mut replayed = 0;
        let mut backoff = Backoff::new();
        // After a batch Redis refused with an error, go one at a time through it to find the culprit.
        let mut single = 0usize;
        let mut refusals = 0u32;
        loop {
            let size = if single > 0 { 1 } else { REPLAY_BATCH };
            let batch: Vec<PendingJob> = self.lock().oldest(size).cloned().collect();
            if batch.is_empty() {
                return replayed;
            }
            match self.apply_batch(&batch).await {
                Ok(codes) => {
                    backoff.reset();
                    refusals = 0;
                    single = single.saturating_sub(batch.len());
                    let mut spool = self.lock();
                    for (pending, code) in batch.iter().zip(codes) {
                        match self.outcome(pending, code) {
                            Ok(()) => {
                                spool.replayed();
                                self.metrics.queue.submitted(pending.job.lane);
                                replayed += 1;
                            }
                            Err(error) => {
                                tracing::warn!(
                                    queue = pending.queue.as_str(),
                                    job = pending.id,
                                    %error,
                                    "dropping a spooled job Redis refused"
                                );
                                spool.dropped();
                            }
                        }
                    }
                }
                Err(Failure::Outage) => {
                    self.link.wait_up().await;
                    // Paced, so a Redis that comes and goes is not hammered.
                    tokio::time::sleep(backoff.next_wait()).await;
                }
                // The script is idempotent per job id, so retrying the applied part is safe.
                Err(Failure::Refused(_)) if batch.len() > 1 => single = batch.len(),
                Err(Failure::Refused(error)) => {
                    refusals += 1;
                    if refusals < MAX_REFUSALS {
                        tokio::time::sleep(backoff.next_wait()).await;
                        continue;
                    }
                    tracing::warn!(
                        queue = batch[0].queue.as_str(),
                        job = batch[0].id,
                        %error,
                        "dropping a spooled job Redis keeps refusing"
                    );
                    self.lock().dropped();
                    refusals = 0;
                    single = single.saturating_sub(1);
                }
            }
        }
    }
}

fn unavailable(error: &RedisError) -> QueueError {
    QueueError::Unavailable(format!("redis: {error}"))
}

/// Drains the spool whenever something is spooled; logs each recovery with its count.
async fn replay(enqueuer: Arc<Enqueuer>, stop: CancellationToken) {
    loop {
        let replayed = tokio::select! {
            () = stop.cancelled() => break,
            () = enqueuer.wake.notified() => tokio::select! {
                () = stop.cancelled() => break,
                replayed = enqueuer.drain() => replayed,
            },
        };
        if replayed > 0 {
            tracing::info!(replayed, "replayed spooled enqueues to redis, in order");
        }
    }
    let left = enqueuer.lock().len();
    if left > 0 {
        tracing::warn!(
            left,
            "shutting down with enqueues still spooled; they are not enqueued"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bus::redis::link::test_link, queue::Lane};

    #[tokio::test]
    async fn a_replay_of_an_enqueue_that_was_applied_enqueues_nothing() {
        let metrics = Arc::new(Metrics::default());
        let (_redis, client, link, stop) = test_link(metrics.redis.clone()).await;
        let config = QueueConfig {
            max_queues: 1,
            max_queued_jobs: 10,
            visibility_timeout: std::time::Duration::from_secs(30),
            retention: std::time::Duration::from_secs(60),
            normal_every: 4,
        };
        let limits = SpoolLimits {
            events: 10,
            bytes: 1000,
        };
        let enqueuer = Enqueuer::start(link, config, metrics.clone(), limits, stop.clone());
        let pending = |id: &str, queue: &str| PendingJob {
            queue: QueueName::parse(queue).unwrap(),
            id: id.to_owned(),
            secret: 7,
            enqueued_at_us: 1,
            job: NewJob {
                lane: Lane::Normal,
                work_ms: 0,
                notify: None,
                payload: None,
            },
        };
        assert!(!enqueuer.submit(pending("a", "q")).await.unwrap().spooled);
        // Its answer was "lost": the spooled copy finds the job instead of adding it again. A job
        // for a second queue is beyond the queue limit: dropped and counted, not wedging the replay.
        for job in [pending("a", "q"), pending("b", "other"), pending("c", "q")] {
            enqueuer.lock().push(job, 1).unwrap();
        }
        assert!(enqueuer
            .spooled(&QueueName::parse("q").unwrap(), "c")
            .is_some());
        assert_eq!(enqueuer.drain().await, 2);
        assert!(enqueuer
            .spooled(&QueueName::parse("q").unwrap(), "c")
            .is_none());
        let spool = &metrics.redis.enqueue_spool;
        assert_eq!(spool.dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let queue = QueueName::parse("q").unwrap();
        let length: u64 = redis::cmd("XLEN")
            .arg(wire::stream_key(&queue, Lane::Normal))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(length, 2, "a replay enqueued a duplicate");
        stop.cancel();
    }
}
