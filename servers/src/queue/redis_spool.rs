//! The Redis queue's enqueue path with an outage spool: a job that cannot reach Redis waits in a
//! bounded FIFO (its id is made locally, so it can be answered 202 at once) and is replayed in order
//! (by the generic [`Replayer`]) when the link is up again. While anything waits, new enqueues queue
//! behind it.

use std::sync::Arc;

use redis::{Script, ScriptInvocation};
use tokio_util::sync::CancellationToken;

use super::{
    redis_lost::Accepted, redis_wire as wire, JobState, JobView, NewJob, QueueConfig, QueueError,
    QueueName,
};
use crate::{
    metrics::Metrics,
    redis::link::Link,
    spool::{Failure, Outcome, Replay, Replayer, SpoolLimits},
};

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

/// The enqueue side of one Redis queue instance.
pub struct Enqueuer {
    link: Arc<Link>,
    script: Script,
    config: QueueConfig,
    metrics: Arc<Metrics>,
    replayer: Replayer<PendingJob>,
    /// Every job Redis takes is tracked until it finishes, so a loss of Redis's data is noticed.
    accepted: Arc<Accepted>,
}

impl Enqueuer {
    /// Creates the enqueuer and starts its replay task, which ends when `stop` is cancelled.
    pub fn start(
        link: Arc<Link>,
        config: QueueConfig,
        metrics: Arc<Metrics>,
        limits: SpoolLimits,
        accepted: Arc<Accepted>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let enqueuer = Arc::new(Self::new(link, config, metrics, limits, accepted));
        let replaying = enqueuer.clone();
        tokio::spawn(async move { replaying.replayer.run(&*replaying, stop).await });
        enqueuer
    }

    fn new(
        link: Arc<Link>,
        config: QueueConfig,
        metrics: Arc<Metrics>,
        limits: SpoolLimits,
        accepted: Arc<Accepted>,
    ) -> Self {
        let counters = metrics.redis.enqueue_spool.clone();
        Self {
            link,
            script: Script::new(wire::ENQUEUE),
            config,
            metrics,
            replayer: Replayer::new(limits, counters),
            accepted,
        }
    }

    /// Enqueues now, or, when Redis is unreachable or earlier enqueues still wait, spools the job for
    /// an in-order replay (`spooled` in the answer). Refused when the spool is full, the queue is
    /// full or at the queue limit, or Redis answers with an error.
    pub async fn submit(&self, pending: PendingJob) -> Result<JobView, QueueError> {
        if self.replayer.is_empty() {
            match self.link.invoke(&self.invocation(&pending)).await {
                Ok(code) => {
                    self.outcome(&pending, code)?;
                    self.applied(&pending);
                    return Ok(pending.view(false));
                }
                Err(Failure::Refused(detail)) => return Err(QueueError::Unavailable(detail)),
                // It may have been applied before the answer was lost: the replay finds out (the
                // script always looks for the job id first).
                Err(Failure::Outage { .. }) => {}
            }
        }
        let view = pending.view(true);
        let size = pending.size();
        self.replayer.spool(pending, size)?;
        Ok(view)
    }

    /// The status of a job still waiting in the spool (always `queued`).
    pub fn spooled(&self, queue: &QueueName, id: &str) -> Option<JobView> {
        self.replayer
            .find_map(|p| (p.id == id && p.queue == *queue).then(|| p.view(true)))
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
}

/// The enqueue script returns early for a job id it already holds, so every replay is idempotent and
/// needs no maybe-applied mark.
impl Replay for Enqueuer {
    type Item = PendingJob;
    const NOUN: &'static str = "enqueue";

    /// One pipeline, one script answer per job; queue full and queue limit are refusals for good.
    async fn apply_batch(&self, batch: &[PendingJob]) -> Result<Vec<Outcome>, Failure> {
        let invocations: Vec<_> = batch.iter().map(|p| self.invocation(p)).collect();
        let codes: Vec<i64> = self.link.invoke_batch(&self.script, &invocations).await?;
        Ok(batch
            .iter()
            .zip(codes)
            .map(|(pending, code)| match self.outcome(pending, code) {
                Ok(()) => Outcome::Applied,
                Err(error) => Outcome::Refused(error.to_string()),
            })
            .collect())
    }

    async fn wait_up(&self) {
        self.link.wait_up().await;
    }

    /// Counted and tracked where a direct enqueue is: when Redis takes it.
    fn applied(&self, pending: &PendingJob) {
        self.metrics.queue.submitted(pending.job.lane);
        self.accepted.enqueued(&pending.queue, &pending.id);
    }

    fn describe(pending: &PendingJob) -> String {
        format!("job {} in queue `{}`", pending.id, pending.queue.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{queue::Lane, redis::link::test_link};

    #[tokio::test]
    async fn a_replay_of_an_enqueue_that_was_applied_enqueues_nothing() {
        let metrics = Arc::new(Metrics::default());
        let (_redis, client, link) = test_link(metrics.redis.clone()).await;
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
        // No replay task: the test drains the spool itself.
        let enqueuer = Enqueuer::new(
            link.link(),
            config,
            metrics.clone(),
            limits,
            Arc::new(Accepted::new(10)),
        );
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
            enqueuer.replayer.spool(job, 1).unwrap();
        }
        assert!(enqueuer
            .spooled(&QueueName::parse("q").unwrap(), "c")
            .is_some());
        assert_eq!(enqueuer.replayer.drain(&enqueuer).await, 2);
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
    }
}
