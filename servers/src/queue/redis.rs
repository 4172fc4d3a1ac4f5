//! The Redis queue backend: Streams with one consumer group (see `redis_wire.rs` for keys and the
//! scripts). Enqueue, take and ack are one Lua script each. Waiting takers and handle long polls wake
//! on a pub/sub notification from any instance, with a bounded fallback poll (also how idle takers
//! notice expired leases, which are reclaimed by the next take). Commands go over the self-recovering
//! [`Link`] the queue shares with the Redis bus: while Redis is down they answer 503 at once, except
//! enqueues, which are spooled and replayed in order (`redis_spool.rs`). When Redis comes back without
//! its data, the accepted jobs it lost unfinished are counted and answered as lost (`redis_lost.rs`).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use redis::{RedisError, Script, Value};
use tokio::time::Instant;
use tokio_util::sync::DropGuard;

use super::{
    redis_lost::Accepted,
    redis_spool::{Enqueuer, PendingJob},
    redis_wake::Wakers,
    redis_wire as wire,
    view::LaneCounts,
    AckOutcome, IdGen, JobQueue, JobView, Lane, LanePolicy, Lease, NewJob, QueueConfig, QueueError,
    QueueName, QueueStats, Taken,
};
use crate::lock::lock;
use crate::{
    metrics::Metrics,
    redis::{
        link::{Conn, Link, LinkDown, LinkShare},
        pubsub,
    },
    spool::{Failure, SpoolLimits},
};

/// Idle takers retry this often (expired leases are only reclaimed by a take).
const TAKE_POLL: Duration = Duration::from_millis(250);
/// XAUTOCLAIM calls (each scanning up to 10 pending entries) per lane per take.
const CLAIM_ROUNDS: usize = 4;
/// Handle long polls re-read the status this often in case a notification was missed.
const STATUS_POLL: Duration = Duration::from_secs(1);
/// Jobs one round trip of the check after a data loss looks for.
const CHECK_BATCH: usize = 512;
/// Lost job ids quoted in the warning after a data loss.
const QUOTED: usize = 5;

/// [`JobQueue`] over a Redis server shared by every instance. Stats are global (from Redis); the
/// lane policy's state and the Prometheus counters are per instance.
pub struct RedisQueue {
    /// Shared with the Redis bus (see `AppState::connect`).
    link: LinkShare,
    config: QueueConfig,
    ids: IdGen,
    metrics: Arc<Metrics>,
    enqueuer: Arc<Enqueuer>,
    take: Script,
    ack: Script,
    locals: Mutex<HashMap<QueueName, Local>>,
    wakers: Arc<Wakers>,
    accepted: Arc<Accepted>,
    /// Ends the notification listener and the enqueue replay when the queue is dropped.
    _tasks: DropGuard,
}

/// This instance's state of one queue: its lane policy and where each lane's PEL scan resumes.
struct Local {
    policy: LanePolicy,
    /// XAUTOCLAIM cursors, premium then normal.
    cursors: [String; 2],
}

impl From<LinkDown> for QueueError {
    fn from(down: LinkDown) -> Self {
        QueueError::Unavailable(down.to_string())
    }
}

fn unavailable(error: RedisError) -> QueueError {
    QueueError::Unavailable(format!("redis: {error}"))
}

fn malformed(what: &str, value: &Value) -> QueueError {
    QueueError::Unavailable(format!("unexpected Redis reply to {what}: {value:?}"))
}

impl RedisQueue {
    /// A queue over `link` (shared with the Redis bus, so one task reconnects both); starts following
    /// the notification channel and the enqueue spool's replay. `spool` bounds the enqueue spool.
    pub(crate) fn new(
        link: LinkShare,
        config: QueueConfig,
        metrics: Arc<Metrics>,
        spool: SpoolLimits,
    ) -> Self {
        let wakers = Arc::new(Wakers::new(config.max_queues));
        let stop = link.child_stop();
        // As many unfinished jobs as one queue may hold, over all queues this instance fed.
        let accepted = Arc::new(Accepted::new(config.max_queued_jobs));
        let (dispatch, finished) = (wakers.clone(), accepted.clone());
        tokio::spawn(pubsub::follow(
            link.client().clone(),
            wire::EVENTS,
            move |message| {
                if let Some(handle) = message.strip_prefix("d ") {
                    finished.finished(handle);
                }
                dispatch.dispatch(message);
            },
            stop.clone(),
        ));
        let enqueuer = Enqueuer::start(
            link.link(),
            config,
            metrics.clone(),
            spool,
            accepted.clone(),
            stop.clone(),
        );
        let checking = (link.link(), accepted.clone(), metrics.clone());
        link.link().on_data_loss(stop.clone(), move || {
            let (link, accepted, metrics) = checking.clone();
            async move { count_lost(&link, &accepted, &metrics).await }
        });
        Self {
            link,
            config,
            ids: IdGen::new(),
            metrics,
            enqueuer,
            take: Script::new(wire::TAKE),
            ack: Script::new(wire::ACK),
            locals: Mutex::new(HashMap::new()),
            wakers,
            accepted,
            _tasks: stop.drop_guard(),
        }
    }

    /// The link's connection, or 503 at once while Redis is down (the link is reconnecting).
    fn connection(&self) -> Result<Conn, QueueError> {
        Ok(self.link.get()?)
    }

    /// Reports a failed command to the link, which retires the connection on an outage.
    fn failed(&self, conn: &Conn, error: RedisError) -> QueueError {
        self.link.failed(conn, &error);
        unavailable(error)
    }

    /// The lane this instance's policy prefers and the lanes' scan cursors, in that lane order.
    fn plan(&self, queue: &QueueName) -> (Lane, [String; 2]) {
        let locals = lock(&self.locals);
        let Some(local) = locals.get(queue) else {
            return (Lane::Premium, ["0-0".to_owned(), "0-0".to_owned()]);
        };
        let first = local.policy.preferred();
        let cursors = &local.cursors;
        match first {
            Lane::Premium => (first, [cursors[0].clone(), cursors[1].clone()]),
            Lane::Normal => (first, [cursors[1].clone(), cursors[0].clone()]),
        }
    }

    /// Stores the cursors (in `first`'s order) and, for a new take, what the policy must count.
    fn update(
        &self,
        queue: &QueueName,
        first: Lane,
        cursors: [String; 2],
        took: Option<(Lane, bool)>,
    ) {
        let mut locals = lock(&self.locals);
        if locals.len() >= self.config.max_queues && !locals.contains_key(queue) {
            // Names beyond the limit are refused by enqueue; takes must not grow the map.
            return;
        }
        let local = locals.entry(queue.clone()).or_insert_with(|| Local {
            policy: LanePolicy::new(self.config.normal_every),
            cursors: ["0-0".to_owned(), "0-0".to_owned()],
        });
        let [a, b] = cursors;
        local.cursors = match first {
            Lane::Premium => [a, b],
            Lane::Normal => [b, a],
        };
        if let Some((lane, contested)) = took {
            local.policy.record(lane, contested);
        }
    }

    /// One take attempt (the script), without waiting.
    async fn try_take(&self, queue: &QueueName) -> Result<Option<Taken>, QueueError> {
        let (first, [cursor1, cursor2]) = self.plan(queue);
        let conn = self.connection()?;
        let reply: Value = self
            .take
            .key(wire::stream_key(queue, first))
            .key(wire::stream_key(queue, first.other()))
            .key(wire::stats_key(queue))
            .arg(wire::GROUP)
            .arg(format!("cb-{}", self.ids.instance()))
            .arg(self.config.visibility_timeout.as_millis() as u64)
            .arg(first.label())
            .arg(first.other().label())
            .arg(super::now_us())
            .arg(wire::job_prefix(queue))
            .arg(cursor1)
            .arg(cursor2)
            .arg(CLAIM_ROUNDS)
            .invoke_async(&mut conn.inner.clone())
            .await
            .map_err(|e| self.failed(&conn, e))?;
        let Value::Array(items) = &reply else {
            return Err(malformed("take", &reply));
        };
        let cursors = match (
            items.first().and_then(wire::text),
            items.get(1).and_then(wire::text),
        ) {
            (Some(a), Some(b)) => [a, b],
            _ => return Err(malformed("take", &reply)),
        };
        if items.len() == 2 {
            self.update(queue, first, cursors, None);
            return Ok(None);
        }
        let parsed = (|| {
            let lane = Lane::parse(&wire::text(items.get(3)?)?)?;
            let attempt = wire::int(items.get(6)?)? as u32;
            let secret = u64::from_str_radix(&wire::text(items.get(7)?)?, 16).ok()?;
            Some((
                Taken {
                    id: wire::text(items.get(2)?)?,
                    lane,
                    work_ms: wire::int(items.get(4)?)? as u64,
                    payload: items.get(5).and_then(wire::text),
                    attempt,
                    lease: Lease { attempt, secret }.token(),
                },
                wire::int(items.get(8)?)? == 1,
                wire::int(items.get(9)?)? == 1,
            ))
        })();
        let Some((taken, redelivered, contested)) = parsed else {
            return Err(malformed("take", &reply));
        };
        if redelivered {
            self.metrics.queue.redelivered();
            self.update(queue, first, cursors, None);
        } else {
            self.update(queue, first, cursors, Some((taken.lane, contested)));
        }
        Ok(Some(taken))
    }

    /// The job's status: from this instance's enqueue spool while it waits there, else from Redis.
    /// The spool is looked at first because a replay removes a job only after Redis holds it.
    async fn read_job(&self, queue: &QueueName, id: &str) -> Result<JobView, QueueError> {
        if let Some(view) = self.enqueuer.spooled(queue, id) {
            return Ok(view);
        }
        let conn = self.connection()?;
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{}{id}", wire::job_prefix(queue)))
            .query_async(&mut conn.inner.clone())
            .await
            .map_err(|e| self.failed(&conn, e))?;
        let view = wire::job_view(queue, id, &hash).ok_or_else(|| self.unknown(queue, id))?;
        if view.status == super::JobState::Done {
            self.accepted.finished(&wire::handle(queue, id));
        }
        Ok(view)
    }

    /// Why a job is not in Redis: lost with Redis's data (when this instance accepted it), or unknown.
    fn unknown(&self, queue: &QueueName, id: &str) -> QueueError {
        let (queue_name, id) = (queue.as_str().to_owned(), id.to_owned());
        if self.accepted.is_lost(queue, &id) {
            QueueError::JobLost {
                queue: queue_name,
                id,
            }
        } else {
            QueueError::UnknownJob {
                queue: queue_name,
                id,
            }
        }
    }
}

#[async_trait]
impl JobQueue for RedisQueue {
    async fn enqueue(&self, queue: &QueueName, job: NewJob) -> Result<JobView, QueueError> {
        // The id is made here, so the spool can accept (and answer for) the job while Redis is down.
        let (id, secret) = self.ids.next();
        let pending = PendingJob {
            queue: queue.clone(),
            id,
            secret,
            enqueued_at_us: super::now_us(),
            job,
        };
        self.enqueuer.submit(pending).await
    }

    async fn status(&self, queue: &QueueName, id: &str) -> Result<JobView, QueueError> {
        self.read_job(queue, id).await
    }

    async fn wait_done(
        &self,
        queue: &QueueName,
        id: &str,
        wait: Duration,
    ) -> Result<JobView, QueueError> {
        let deadline = Instant::now() + wait;
        let waiter = self.wakers.job(wire::handle(queue, id));
        loop {
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let view = self.read_job(queue, id).await?;
            let now = Instant::now();
            if view.status == super::JobState::Done || now >= deadline {
                return Ok(view);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.min(now + STATUS_POLL)) => {}
            }
        }
    }

    async fn take(
        &self,
        queue: &QueueName,
        _worker: &str,
        wait: Duration,
    ) -> Result<Option<Taken>, QueueError> {
        let deadline = Instant::now() + wait;
        let wake = self.wakers.taker(queue);
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(taken) = self.try_take(queue).await? {
                return Ok(Some(taken));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.min(now + TAKE_POLL)) => {}
            }
        }
    }

    async fn ack(
        &self,
        queue: &QueueName,
        id: &str,
        lease: &str,
    ) -> Result<AckOutcome, QueueError> {
        let parsed = Lease::of_ack(lease)?;
        let conn = self.connection()?;
        let reply: Value = self
            .ack
            .key(format!("{}{id}", wire::job_prefix(queue)))
            .key(wire::stream_key(queue, Lane::Premium))
            .key(wire::stream_key(queue, Lane::Normal))
            .key(wire::stats_key(queue))
            .arg(wire::GROUP)
            .arg(parsed.attempt)
            .arg(format!("{:016x}", parsed.secret))
            .arg(super::now_us())
            .arg(self.config.retention.as_secs().max(1))
            .arg(queue.as_str())
            .arg(id)
            .invoke_async(&mut conn.inner.clone())
            .await
            .map_err(|e| self.failed(&conn, e))?;
        let Value::Array(items) = &reply else {
            return Err(malformed("ack", &reply));
        };
        match items.first().and_then(wire::int) {
            Some(-1) => Err(self.unknown(queue, id)),
            Some(-2) => Err(QueueError::LeaseMismatch {
                id: id.to_owned(),
                lease: lease.to_owned(),
            }),
            Some(dup @ (0 | 1)) => {
                let hash = items.get(1).map(wire::fields).unwrap_or_default();
                let job =
                    wire::job_view(queue, id, &hash).ok_or_else(|| malformed("ack", &reply))?;
                let duplicate = dup == 1;
                self.accepted.finished(&wire::handle(queue, id));
                if duplicate {
                    self.metrics.queue.duplicate();
                } else {
                    self.metrics.queue.completed(job.lane);
                    // This instance's handle waiters need not wait for the pub/sub round trip.
                    self.wakers
                        .dispatch(&format!("d {}", wire::handle(queue, id)));
                }
                Ok(AckOutcome { duplicate, job })
            }
            _ => Err(malformed("ack", &reply)),
        }
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        let conn = self.connection()?;
        let hash: HashMap<String, i64> = redis::cmd("HGETALL")
            .arg(wire::stats_key(queue))
            .query_async(&mut conn.inner.clone())
            .await
            .map_err(|e| self.failed(&conn, e))?;
        let get = |name: &str| hash.get(name).copied().unwrap_or(0).max(0) as u64;
        Ok(QueueStats {
            queue: queue.as_str().to_owned(),
            waiting: LaneCounts {
                premium: get("wp"),
                normal: get("wn"),
            },
            running: get("running"),
            submitted: get("submitted"),
            completed: get("completed"),
            redelivered: get("redelivered"),
            duplicates: get("duplicates"),
        })
    }
}

/// The check after Redis lost its data: which of the jobs this instance accepted, unfinished, are
/// gone from Redis. They are counted, logged and from then on answered 410 `job_lost`. Jobs Redis
/// took after the loss (e.g. replayed from the outage spool) are still there and are not lost.
async fn count_lost(link: &Link, accepted: &Accepted, metrics: &Metrics) -> Result<(), Failure> {
    let unfinished = accepted.unfinished();
    let mut gone = Vec::new();
    for chunk in unfinished.chunks(CHECK_BATCH) {
        let mut pipe = redis::pipe();
        let mut asked = Vec::with_capacity(chunk.len());
        for handle in chunk {
            if let Some(key) = wire::job_key_of(handle) {
                pipe.cmd("EXISTS").arg(key);
                asked.push(handle);
            }
        }
        let exists: Vec<bool> = link.query(&pipe).await?;
        gone.extend(
            asked
                .into_iter()
                .zip(exists)
                .filter(|(_, exists)| !exists)
                .map(|(handle, _)| handle.clone()),
        );
    }
    let losses = accepted.lost(gone);
    let count = losses.lost.len();
    metrics.queue.lost(count as u64);
    if count > 0 || losses.untracked > 0 {
        let quoted: Vec<_> = losses.lost.iter().take(QUOTED).collect();
        tracing::warn!(
            lost = count,
            checked = unfinished.len(),
            untracked = losses.untracked,
            ?quoted,
            "redis lost queue jobs this instance had accepted and not seen finish; their status \
             answers 410 job_lost (untracked: beyond the tracking bound, not checked)"
        );
    }
    Ok(())
}
