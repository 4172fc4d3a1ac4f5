//! The message queue on a log broker (RabbitMQ, Kafka). Every state change of a job is a record in
//! the queue's job log (`cb.j.{queue}`: enqueued, taken, done; `table.rs`), and every instance follows
//! that log and applies the records in the broker's order, so all instances hold the same job table:
//! status reads, handle long polls, stats and the ack's duplicate check are answered from it. How a
//! job reaches a worker is the broker's own (`Lanes`): on RabbitMQ the job is also published to its
//! lane's quorum queue and taken with consumer prefetch and manual acks (`rabbit.rs`); on Kafka an
//! instance claims the next job by appending a take record to the log, and the first claim of an
//! attempt in log order wins (`claims.rs`). Enqueues spool during an outage and are replayed by the
//! shared replayer.

mod claims;
mod rabbit;
mod table;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::CancellationToken;

use self::table::{Applied, JobInfo, JobRecord, JobTable};
pub use self::{claims::ClaimLanes, rabbit::RabbitLanes};
use super::{
    AckOutcome, IdGen, JobQueue, JobState, JobView, Lane, LanePolicy, Lease, NewJob, QueueConfig,
    QueueError, QueueName, QueueStats, Taken,
};
use crate::lock::lock;
use crate::{
    log::{
        follow::{follow, Sink},
        log_name, Entry, LogBroker, LogError,
    },
    metrics::Metrics,
    spool::{Failure, Outcome, Replay, Replayer, SpoolLimits},
};

/// How long a record may take to come back through this instance's follower.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// Syncs before a job unknown here is answered 404 (see `known_slot`).
const UNKNOWN_TRIES: usize = 4;
/// Handle long polls and idle takers look again this often (expired takes are noticed so).
const POLL: Duration = Duration::from_millis(250);
/// How long the job-log follower's reads wait on the broker. Every take and ack waits for its record
/// to come back through the follower, and tansu answers a held fetch only when its wait ends, after
/// records that arrived meanwhile: with the feed's 50 ms a take took 100 ms and an ack 80 ms, which
/// held 8 workers below 50 jobs/s of 20 ms work. 10 ms costs 100 fetches a second per instance and
/// queue on Kafka and nothing on RabbitMQ, whose stream consumer is pushed to.
const JOB_READ_WAIT: Duration = Duration::from_millis(10);

fn unavailable(error: LogError) -> QueueError {
    QueueError::Unavailable(error.to_string())
}

/// How jobs reach workers on one broker.
#[async_trait]
pub trait Lanes: Send + Sync + 'static {
    /// The job's enqueue record is durable: hand the job to the broker's work path, if it has one
    /// apart from the job log.
    async fn enqueued(&self, queue: &QueueName, job: &JobInfo) -> Result<(), LogError>;

    /// The next job for a worker by the lane policy, waiting up to `wait`.
    async fn take(
        &self,
        queue: &LogQueue,
        slot: &Arc<Slot>,
        wait: Duration,
    ) -> Result<Option<Taken>, QueueError>;

    /// The job's attempt was acknowledged and its done record applied.
    async fn done(&self, queue: &QueueName, id: &str, attempt: u32);
}

/// One queue as this instance holds it: the job table its follower keeps current.
pub struct Slot {
    pub name: QueueName,
    log: String,
    table: Mutex<JobTable>,
    /// One past the newest job-log offset applied.
    progress: watch::Sender<u64>,
    /// Appends of this instance waiting for what their record did, by record id.
    waiters: Mutex<HashMap<String, oneshot::Sender<Applied>>>,
    /// Woken when a job is enqueued (takers).
    pub takers: Notify,
    /// Jobs whose claim this instance is appending (Kafka's takes; see `claims.rs`).
    claiming: Mutex<HashSet<String>>,
    pub policy: Mutex<LanePolicy>,
}

impl Slot {
    pub fn table(&self) -> MutexGuard<'_, JobTable> {
        lock(&self.table)
    }

    /// Jobs whose claim this instance is appending (taken before the table, never inside it).
    pub fn claiming(&self) -> MutexGuard<'_, HashSet<String>> {
        lock(&self.claiming)
    }
}

/// Applies a queue's job records to its table, in log order.
struct TableSink {
    slot: Arc<Slot>,
    retention: Duration,
    keep: usize,
}

impl Sink for TableSink {
    fn records(&mut self, entries: Vec<Entry>) {
        let mut woke = false;
        let mut table = lock(&self.slot.table);
        for entry in &entries {
            let applied = match serde_json::from_slice::<JobRecord>(&entry.payload) {
                Ok(record) => table.apply(&record),
                Err(error) => {
                    tracing::warn!(log = self.slot.log, %error, "skipping a job record that does not parse");
                    continue;
                }
            };
            woke |= matches!(applied, Applied::Enqueued { new: true });
            if let Some(waiter) = lock(&self.slot.waiters).remove(&entry.id) {
                let _ = waiter.send(applied);
            }
        }
        let now = super::now_us();
        table.forget(
            now.saturating_sub(self.retention.as_micros() as u64),
            self.keep,
        );
        drop(table);
        if let Some(last) = entries.last() {
            self.slot.progress.send_replace(last.offset + 1);
        }
        if woke {
            self.slot.takers.notify_waiters();
        }
    }

    fn read_wait(&self) -> Duration {
        JOB_READ_WAIT
    }

    fn reset(&mut self, error: &LogError) {
        // The table keeps what it learnt; records appended from now on apply on top of it.
        tracing::warn!(log = self.slot.log, %error, "job log reset by the broker");
        self.slot.progress.send_replace(0);
    }
}

/// A job on its way to the broker (held in the outage spool while it is away).
#[derive(Debug, Clone)]
pub struct PendingJob {
    queue: QueueName,
    info: JobInfo,
}

/// [`JobQueue`] over a log broker shared by every instance.
pub struct LogQueue {
    broker: Arc<dyn LogBroker>,
    config: QueueConfig,
    ids: IdGen,
    pub(crate) metrics: Arc<Metrics>,
    slots: Mutex<HashMap<QueueName, Arc<Slot>>>,
    lanes: Arc<dyn Lanes>,
    replayer: Arc<Replayer<PendingJob>>,
    next_record: AtomicU64,
    stop: CancellationToken,
}

impl Drop for LogQueue {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl LogQueue {
    /// A queue over `broker` whose jobs reach workers through `lanes`; starts the enqueue replay.
    pub fn new(
        broker: Arc<dyn LogBroker>,
        lanes: Arc<dyn Lanes>,
        config: QueueConfig,
        metrics: Arc<Metrics>,
        spool: SpoolLimits,
    ) -> Arc<Self> {
        let counters = metrics.redis.enqueue_spool.clone();
        let queue = Arc::new(Self {
            broker,
            config,
            ids: IdGen::new(),
            metrics,
            slots: Mutex::new(HashMap::new()),
            lanes,
            replayer: Arc::new(Replayer::new(spool, counters)),
            next_record: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        let replaying = Arc::downgrade(&queue);
        let (replayer, stop) = (queue.replayer.clone(), queue.stop.clone());
        tokio::spawn(async move {
            let sink = EnqueueReplay(replaying);
            replayer.run(&sink, stop).await;
        });
        queue
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// This instance's name in take records.
    pub fn instance(&self) -> String {
        self.ids.instance()
    }

    /// The queue's slot, following its job log from the start when it is new here; refused beyond
    /// `--max-queues`.
    fn slot(&self, queue: &QueueName) -> Result<Arc<Slot>, QueueError> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(queue) {
            return Ok(slot.clone());
        }
        if slots.len() >= self.config.max_queues {
            return Err(QueueError::QueueLimit {
                limit: self.config.max_queues,
            });
        }
        let slot = Arc::new(Slot {
            name: queue.clone(),
            log: log_name("j", queue.as_str()),
            table: Mutex::new(JobTable::new(queue.as_str())),
            progress: watch::Sender::new(0),
            waiters: Mutex::new(HashMap::new()),
            takers: Notify::new(),
            claiming: Mutex::new(HashSet::new()),
            policy: Mutex::new(LanePolicy::new(self.config.normal_every)),
        });
        slots.insert(queue.clone(), slot.clone());
        let sink = TableSink {
            slot: slot.clone(),
            retention: self.config.retention,
            keep: self.config.max_queued_jobs,
        };
        tokio::spawn(follow(
            self.broker.clone(),
            slot.log.clone(),
            0,
            sink,
            self.metrics.redis.clone(),
            self.stop.clone(),
        ));
        Ok(slot)
    }

    /// Brings the slot's table up to the job log's end as of now.
    pub(crate) async fn sync(&self, slot: &Slot) -> Result<(), QueueError> {
        let end = match self.broker.end(&slot.log).await {
            Ok(end) => end,
            Err(LogError::Missing(_)) => return Ok(()),
            Err(error) => return Err(unavailable(error)),
        };
        let mut progress = slot.progress.subscribe();
        let caught_up = tokio::time::timeout(APPLY_WAIT, progress.wait_for(|done| *done >= end))
            .await
            .is_ok_and(|r| r.is_ok());
        match caught_up {
            true => Ok(()),
            false => Err(QueueError::Unavailable(format!(
                "this instance did not catch up with queue `{}` within {APPLY_WAIT:?}",
                slot.name.as_str()
            ))),
        }
    }

    /// Appends `record` to the slot's job log (making the log when it is missing); its record id.
    async fn append(&self, slot: &Slot, record: &JobRecord, id: String) -> Result<(), LogError> {
        let payload = Bytes::from(serde_json::to_vec(record).unwrap_or_default());
        let records = [(id, payload)];
        match self.broker.append(&slot.log, &records).await {
            Err(LogError::Missing(_)) => {
                self.broker.create(&slot.log).await?;
                self.broker.append(&slot.log, &records).await
            }
            other => other,
        }
    }

    fn record_id(&self) -> String {
        format!(
            "{}-r{}",
            self.ids.instance(),
            self.next_record.fetch_add(1, Relaxed)
        )
    }

    /// Appends `record` to the slot's job log and waits until this instance applied it; what it did.
    pub async fn record(&self, slot: &Slot, record: &JobRecord) -> Result<Applied, LogError> {
        let id = self.record_id();
        let (sender, applied) = oneshot::channel();
        lock(&slot.waiters).insert(id.clone(), sender);
        if let Err(error) = self.append(slot, record, id.clone()).await {
            lock(&slot.waiters).remove(&id);
            return Err(error);
        }
        match tokio::time::timeout(APPLY_WAIT, applied).await {
            Ok(Ok(applied)) => Ok(applied),
            _ => {
                lock(&slot.waiters).remove(&id);
                Err(LogError::Unavailable {
                    attempted: true,
                    detail: format!(
                        "a record of queue `{}` did not come back from the {} broker within {APPLY_WAIT:?}",
                        slot.name.as_str(),
                        self.broker.kind()
                    ),
                })
            }
        }
    }

    /// Records attempt `attempt` of `job` as taken by this instance; the lease when it won.
    pub async fn claim(
        &self,
        slot: &Slot,
        job: &JobInfo,
        attempt: u32,
        contested: bool,
    ) -> Result<Option<Taken>, QueueError> {
        let record = JobRecord::Taken {
            id: job.id.clone(),
            attempt,
            by: self.ids.instance(),
            at_us: super::now_us(),
        };
        let applied = self.record(slot, &record).await.map_err(unavailable)?;
        if applied != (Applied::Taken { won: true }) {
            return Ok(None);
        }
        if attempt > 1 {
            self.metrics.queue.redelivered();
        } else {
            lock(&slot.policy).record(job.lane, contested);
        }
        let secret = u64::from_str_radix(&job.secret, 16).unwrap_or_default();
        Ok(Some(Taken {
            id: job.id.clone(),
            lane: job.lane,
            work_ms: job.work_ms,
            payload: job.payload.clone(),
            attempt,
            lease: Lease { attempt, secret }.token(),
        }))
    }

    /// Puts an enqueue through: the job record, then the broker's work path.
    async fn submit(&self, pending: &PendingJob, check: bool) -> Result<(), Failure> {
        let slot = self
            .slot(&pending.queue)
            .map_err(|e| Failure::Refused(e.to_string()))?;
        let known = |slot: &Slot| slot.table().info(&pending.info.id).is_some();
        if check {
            // A replay of an enqueue whose answer was lost: the table tells whether it landed.
            self.sync(&slot).await.map_err(|e| Failure::Outage {
                attempted: false,
                detail: e.to_string(),
            })?;
        }
        if !(check && known(&slot)) {
            // Confirmed is enough: the table learns it through the follower (a status read that
            // finds nothing here catches up first).
            let record = JobRecord::Enqueued(pending.info.clone());
            self.append(&slot, &record, self.record_id())
                .await
                .map_err(Failure::from)?;
        }
        self.lanes
            .enqueued(&pending.queue, &pending.info)
            .await
            .map_err(Failure::from)
    }

    async fn known_slot(&self, queue: &QueueName, id: &str) -> Result<Arc<Slot>, QueueError> {
        let unknown = || QueueError::UnknownJob {
            queue: queue.as_str().to_owned(),
            id: id.to_owned(),
        };
        let slot = self.slot(queue)?;
        // RabbitMQ's end is read from the stream's newest chunk, which can come short of a record
        // confirmed a moment ago: a job unknown here is looked for a few times before it is a 404.
        // A job this instance named exists (its enqueue was confirmed, or it is spooled), so it is
        // looked for until the follower has had `APPLY_WAIT` to bring it: under a burst of
        // enqueues the follower lagged the few tries, and a user's first poll got a 404 for a
        // job that was then done (seen on RabbitMQ, 1 job in 200).
        let issued_here = self.ids.issued(id);
        let deadline = tokio::time::Instant::now() + APPLY_WAIT;
        let mut tries = 0;
        while slot.table().info(id).is_none() {
            let patient = issued_here && tokio::time::Instant::now() < deadline;
            if tries >= UNKNOWN_TRIES && !patient {
                break;
            }
            tries += 1;
            self.sync(&slot).await?;
            if slot.table().info(id).is_none() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if slot.table().info(id).is_none() {
            if let Some(view) = self.spooled(queue, id) {
                let _ = view;
                return Ok(slot);
            }
            return Err(unknown());
        }
        Ok(slot)
    }

    fn spooled(&self, queue: &QueueName, id: &str) -> Option<JobView> {
        self.replayer
            .find_map(|p| (p.info.id == id && p.queue == *queue).then(|| spooled_view(p)))
    }
}

fn spooled_view(pending: &PendingJob) -> JobView {
    let info = &pending.info;
    JobView {
        id: info.id.clone(),
        queue: pending.queue.as_str().to_owned(),
        lane: info.lane,
        status: JobState::Queued,
        attempts: 0,
        completions: 0,
        work_ms: info.work_ms,
        enqueued_at_us: info.enqueued_at_us,
        started_at_us: None,
        completed_at_us: None,
        queue_wait_us: None,
        notify: info
            .notify
            .as_deref()
            .and_then(|t| crate::topic::TopicName::parse(t).ok()),
        spooled: true,
    }
}

/// The enqueue spool's replay into the broker (weak, so the queue's drop ends it).
struct EnqueueReplay(std::sync::Weak<LogQueue>);

impl Replay for EnqueueReplay {
    type Item = PendingJob;
    const NOUN: &'static str = "enqueue";

    async fn apply_batch(&self, batch: &[PendingJob]) -> Result<Vec<Outcome>, Failure> {
        let Some(queue) = self.0.upgrade() else {
            return Err(Failure::Outage {
                attempted: false,
                detail: "the queue is shutting down".into(),
            });
        };
        let mut outcomes = Vec::with_capacity(batch.len());
        for pending in batch {
            match queue.submit(pending, true).await {
                Ok(()) => outcomes.push(Outcome::Applied),
                Err(Failure::Refused(reason)) => outcomes.push(Outcome::Refused(reason)),
                Err(failure) if outcomes.is_empty() => return Err(failure),
                Err(_) => break,
            }
        }
        Ok(outcomes)
    }

    async fn wait_up(&self) {
        let broker = self.0.upgrade().map(|q| q.broker.clone());
        if let Some(broker) = broker {
            broker.wait_up().await;
        }
    }

    fn applied(&self, pending: &PendingJob) {
        if let Some(queue) = self.0.upgrade() {
            queue.metrics.queue.submitted(pending.info.lane);
        }
    }

    fn describe(pending: &PendingJob) -> String {
        format!(
            "job {} in queue `{}`",
            pending.info.id,
            pending.queue.as_str()
        )
    }
}

#[async_trait]
impl JobQueue for LogQueue {
    async fn enqueue(&self, queue: &QueueName, job: NewJob) -> Result<JobView, QueueError> {
        let slot = self.slot(queue)?;
        let unfinished = slot.table().unfinished() + self.replayer.len() as u64;
        if unfinished >= self.config.max_queued_jobs as u64 {
            return Err(QueueError::QueueFull {
                queue: queue.as_str().to_owned(),
                limit: self.config.max_queued_jobs,
            });
        }
        let (id, secret) = self.ids.next();
        let pending = PendingJob {
            queue: queue.clone(),
            info: JobInfo {
                id,
                lane: job.lane,
                work_ms: job.work_ms,
                notify: job.notify.as_ref().map(|t| t.as_str().to_owned()),
                payload: job.payload,
                enqueued_at_us: super::now_us(),
                secret: format!("{secret:016x}"),
            },
        };
        if self.replayer.is_empty() {
            match self.submit(&pending, false).await {
                Ok(()) => {
                    self.metrics.queue.submitted(pending.info.lane);
                    let mut view = spooled_view(&pending);
                    view.spooled = false;
                    return Ok(view);
                }
                Err(Failure::Refused(detail)) => return Err(QueueError::Unavailable(detail)),
                Err(Failure::Outage { .. }) => {}
            }
        }
        let view = spooled_view(&pending);
        let size = pending.info.id.len()
            + queue.as_str().len()
            + pending.info.payload.as_ref().map_or(0, String::len);
        self.replayer.spool(pending, size)?;
        Ok(view)
    }

    async fn status(&self, queue: &QueueName, id: &str) -> Result<JobView, QueueError> {
        if let Some(view) = self.spooled(queue, id) {
            return Ok(view);
        }
        let slot = self.known_slot(queue, id).await?;
        let view = slot.table().view(id);
        view.or_else(|| self.spooled(queue, id))
            .ok_or_else(|| QueueError::UnknownJob {
                queue: queue.as_str().to_owned(),
                id: id.to_owned(),
            })
    }

    async fn wait_done(
        &self,
        queue: &QueueName,
        id: &str,
        wait: Duration,
    ) -> Result<JobView, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let view = self.status(queue, id).await?;
            let now = tokio::time::Instant::now();
            if view.status == JobState::Done || now >= deadline {
                return Ok(view);
            }
            let watch = self.slot(queue)?.table().done_watch(id);
            let next = deadline.min(now + POLL * 4);
            match watch {
                Some(mut done) => {
                    let _ = tokio::time::timeout_at(next, done.wait_for(|d| *d)).await;
                }
                // Still in the spool: look again soon.
                None => tokio::time::sleep_until(deadline.min(now + POLL)).await,
            }
        }
    }

    async fn take(
        &self,
        queue: &QueueName,
        _worker: &str,
        wait: Duration,
    ) -> Result<Option<Taken>, QueueError> {
        let slot = self.slot(queue)?;
        self.lanes.take(self, &slot, wait).await
    }

    async fn ack(
        &self,
        queue: &QueueName,
        id: &str,
        lease: &str,
    ) -> Result<AckOutcome, QueueError> {
        let parsed = Lease::of_ack(lease)?;
        let slot = self.known_slot(queue, id).await?;
        let mismatch = || QueueError::LeaseMismatch {
            id: id.to_owned(),
            lease: lease.to_owned(),
        };
        {
            let table = slot.table();
            let info = table.info(id).ok_or_else(mismatch)?;
            let secret = u64::from_str_radix(&info.secret, 16).unwrap_or_default();
            let attempts = table.attempts(id).unwrap_or(0);
            if secret != parsed.secret || parsed.attempt > attempts {
                return Err(mismatch());
            }
        }
        let record = JobRecord::Done {
            id: id.to_owned(),
            attempt: parsed.attempt,
            at_us: super::now_us(),
        };
        let applied = self.record(&slot, &record).await.map_err(unavailable)?;
        let duplicate = match applied {
            Applied::Done { duplicate } => duplicate,
            _ => {
                return Err(QueueError::UnknownJob {
                    queue: queue.as_str().to_owned(),
                    id: id.to_owned(),
                })
            }
        };
        self.lanes.done(queue, id, parsed.attempt).await;
        let job = slot
            .table()
            .view(id)
            .ok_or_else(|| QueueError::UnknownJob {
                queue: queue.as_str().to_owned(),
                id: id.to_owned(),
            })?;
        if duplicate {
            self.metrics.queue.duplicate();
        } else {
            self.metrics.queue.completed(job.lane);
        }
        Ok(AckOutcome { duplicate, job })
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        let slot = self.slot(queue)?;
        self.sync(&slot).await?;
        let stats = slot.table().stats();
        Ok(stats)
    }

    async fn prepare(&self, queue: &QueueName) -> Result<(), QueueError> {
        let slot = self.slot(queue)?;
        self.broker.create(&slot.log).await.map_err(unavailable)?;
        self.sync(&slot).await
    }
}

/// Which lane a take serves first, given what waits: the lane policy's choice while both lanes have
/// jobs (`contested`), else the lane that has any.
pub fn choose(slot: &Slot, premium: bool, normal: bool) -> Option<(Lane, bool)> {
    let contested = premium && normal;
    let lane = match (premium, normal) {
        (false, false) => return None,
        (true, false) => Lane::Premium,
        (false, true) => Lane::Normal,
        (true, true) => lock(&slot.policy).preferred(),
    };
    Some((lane, contested))
}
