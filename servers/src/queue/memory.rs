//! The in-process queue backend: per queue, one lock around two FIFO lanes, the job table and a FIFO
//! of lease deadlines (one visibility timeout for all, so deadlines arrive in order and expiry is a
//! pop from the front — no sweeper task). Takers wait on a `Notify`, handle waiters on a per-job watch.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{sync::watch, sync::Notify, time::Instant};

use super::{
    view::LaneCounts, AckOutcome, IdGen, JobQueue, JobState, JobView, Lane, LanePolicy, Lease,
    NewJob, QueueConfig, QueueError, QueueName, QueueStats, Taken,
};
use crate::lock::lock;
use crate::metrics::Metrics;

/// [`JobQueue`] in this process: bounded by `max_queues × max_queued_jobs` unfinished jobs plus as
/// many remembered finished ones.
pub struct MemoryQueue {
    config: QueueConfig,
    ids: IdGen,
    metrics: Arc<Metrics>,
    queues: Mutex<HashMap<QueueName, Arc<Slot>>>,
}

struct Slot {
    state: Mutex<QueueState>,
    /// Woken once per enqueued job; takers also wake at the next lease expiry.
    takers: Notify,
}

struct Record {
    lane: Lane,
    work_ms: u64,
    notify: Option<crate::topic::TopicName>,
    payload: Option<String>,
    state: JobState,
    attempts: u32,
    completions: u32,
    enqueued_us: u64,
    started_us: Option<u64>,
    completed_us: Option<u64>,
    secret: u64,
    done: watch::Sender<bool>,
}

struct QueueState {
    name: QueueName,
    /// Job ids per lane, oldest first. May hold ids of jobs completed while queued (skipped on take);
    /// `waiting` counts only the queued ones.
    lanes: [VecDeque<Arc<str>>; 2],
    waiting: [usize; 2],
    running: usize,
    /// (deadline, job, attempt) of every take, in deadline order.
    leases: VecDeque<(Instant, Arc<str>, u32)>,
    jobs: HashMap<Arc<str>, Record>,
    /// Finished jobs in completion order, forgotten by age or count.
    finished: VecDeque<(Instant, Arc<str>)>,
    policy: LanePolicy,
    stats: QueueStats,
}

impl MemoryQueue {
    pub fn new(config: QueueConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            config,
            ids: IdGen::new(),
            metrics,
            queues: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, queue: &QueueName, create: bool) -> Result<Option<Arc<Slot>>, QueueError> {
        let mut queues = lock(&self.queues);
        if let Some(slot) = queues.get(queue) {
            return Ok(Some(slot.clone()));
        }
        if !create {
            return Ok(None);
        }
        if queues.len() >= self.config.max_queues {
            return Err(QueueError::QueueLimit {
                limit: self.config.max_queues,
            });
        }
        let slot = Arc::new(Slot {
            state: Mutex::new(QueueState {
                name: queue.clone(),
                lanes: [VecDeque::new(), VecDeque::new()],
                waiting: [0, 0],
                running: 0,
                leases: VecDeque::new(),
                jobs: HashMap::new(),
                finished: VecDeque::new(),
                policy: LanePolicy::new(self.config.normal_every),
                stats: QueueStats {
                    queue: queue.as_str().to_owned(),
                    ..QueueStats::default()
                },
            }),
            takers: Notify::new(),
        });
        queues.insert(queue.clone(), slot.clone());
        Ok(Some(slot))
    }

    fn existing(&self, queue: &QueueName, id: &str) -> Result<Arc<Slot>, QueueError> {
        self.slot(queue, false)?.ok_or_else(|| unknown(queue, id))
    }
}

fn unknown(queue: &QueueName, id: &str) -> QueueError {
    QueueError::UnknownJob {
        queue: queue.as_str().to_owned(),
        id: id.to_owned(),
    }
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Premium => 0,
        Lane::Normal => 1,
    }
}

impl QueueState {
    fn view(&self, id: &str, record: &Record) -> JobView {
        JobView {
            id: id.to_owned(),
            queue: self.name.as_str().to_owned(),
            lane: record.lane,
            status: record.state,
            attempts: record.attempts,
            completions: record.completions,
            work_ms: record.work_ms,
            enqueued_at_us: record.enqueued_us,
            started_at_us: record.started_us,
            completed_at_us: record.completed_us,
            queue_wait_us: None,
            notify: record.notify.clone(),
            spooled: false,
        }
        .with_wait()
    }

    /// Puts every job whose lease expired by `now` back at the front of its lane.
    fn reclaim(&mut self, now: Instant, metrics: &Metrics) -> bool {
        let mut any = false;
        while self
            .leases
            .front()
            .is_some_and(|(deadline, ..)| *deadline <= now)
        {
            let Some((_, id, attempt)) = self.leases.pop_front() else {
                break;
            };
            let Some(record) = self.jobs.get_mut(&id) else {
                continue;
            };
            if record.state != JobState::Running || record.attempts != attempt {
                continue;
            }
            record.state = JobState::Queued;
            let lane = lane_index(record.lane);
            self.lanes[lane].push_front(id);
            self.waiting[lane] += 1;
            self.running -= 1;
            self.stats.redelivered += 1;
            metrics.queue.redelivered();
            any = true;
        }
        any
    }

    /// Drops finished jobs older than `retention`, and the oldest beyond `keep`.
    fn forget(&mut self, now: Instant, retention: Duration, keep: usize) {
        while let Some((finished_at, _)) = self.finished.front() {
            if self.finished.len() <= keep && *finished_at + retention > now {
                break;
            }
            if let Some((_, id)) = self.finished.pop_front() {
                self.jobs.remove(&id);
            }
        }
    }

    fn try_take(&mut self, now: Instant, visibility: Duration) -> Option<Taken> {
        let lane = self.policy.pick(self.waiting[0] > 0, self.waiting[1] > 0)?;
        let index = lane_index(lane);
        while let Some(id) = self.lanes[index].pop_front() {
            let Some(record) = self.jobs.get_mut(&id) else {
                continue;
            };
            if record.state != JobState::Queued {
                continue;
            }
            record.state = JobState::Running;
            record.attempts += 1;
            record.started_us.get_or_insert_with(super::now_us);
            let taken = Taken {
                id: id.to_string(),
                lane,
                work_ms: record.work_ms,
                payload: record.payload.clone(),
                attempt: record.attempts,
                lease: Lease {
                    attempt: record.attempts,
                    secret: record.secret,
                }
                .token(),
            };
            self.leases
                .push_back((now + visibility, id, record.attempts));
            self.waiting[index] -= 1;
            self.running += 1;
            self.compact_leases();
            return Some(taken);
        }
        None
    }

    /// Lease entries of acknowledged jobs linger until their deadline; when they outnumber the jobs
    /// the queue may hold, drop the ones that no longer matter so the FIFO stays bounded.
    fn compact_leases(&mut self) {
        if self.leases.len() <= 2 * self.jobs.len() + 64 {
            return;
        }
        let jobs = &self.jobs;
        self.leases.retain(|(_, id, attempt)| {
            jobs.get(id)
                .is_some_and(|r| r.state == JobState::Running && r.attempts == *attempt)
        });
    }
}

#[async_trait]
impl JobQueue for MemoryQueue {
    async fn enqueue(&self, queue: &QueueName, job: NewJob) -> Result<JobView, QueueError> {
        let slot = self.slot(queue, true)?.ok_or_else(|| unknown(queue, ""))?;
        let view = {
            let mut state = lock(&slot.state);
            let now = Instant::now();
            state.forget(now, self.config.retention, self.config.max_queued_jobs);
            let unfinished = state.waiting[0] + state.waiting[1] + state.running;
            if unfinished >= self.config.max_queued_jobs {
                return Err(QueueError::QueueFull {
                    queue: queue.as_str().to_owned(),
                    limit: self.config.max_queued_jobs,
                });
            }
            let (id, secret) = self.ids.next();
            let id: Arc<str> = Arc::from(id);
            let record = Record {
                lane: job.lane,
                work_ms: job.work_ms,
                notify: job.notify,
                payload: job.payload,
                state: JobState::Queued,
                attempts: 0,
                completions: 0,
                enqueued_us: super::now_us(),
                started_us: None,
                completed_us: None,
                secret,
                done: watch::channel(false).0,
            };
            let view = state.view(&id, &record);
            let lane = lane_index(job.lane);
            state.lanes[lane].push_back(id.clone());
            state.waiting[lane] += 1;
            state.jobs.insert(id, record);
            state.stats.submitted += 1;
            view
        };
        self.metrics.queue.submitted(job.lane);
        slot.takers.notify_one();
        Ok(view)
    }

    async fn status(&self, queue: &QueueName, id: &str) -> Result<JobView, QueueError> {
        let slot = self.existing(queue, id)?;
        let mut state = lock(&slot.state);
        state.reclaim(Instant::now(), &self.metrics);
        let record = state.jobs.get(id).ok_or_else(|| unknown(queue, id))?;
        Ok(state.view(id, record))
    }

    async fn wait_done(
        &self,
        queue: &QueueName,
        id: &str,
        wait: Duration,
    ) -> Result<JobView, QueueError> {
        let slot = self.existing(queue, id)?;
        let mut done = {
            let state = lock(&slot.state);
            let record = state.jobs.get(id).ok_or_else(|| unknown(queue, id))?;
            record.done.subscribe()
        };
        let _ = tokio::time::timeout(wait, done.wait_for(|done| *done)).await;
        self.status(queue, id).await
    }

    async fn take(
        &self,
        queue: &QueueName,
        _worker: &str,
        wait: Duration,
    ) -> Result<Option<Taken>, QueueError> {
        let slot = self.slot(queue, true)?.ok_or_else(|| unknown(queue, ""))?;
        let deadline = Instant::now() + wait;
        loop {
            let notified = slot.takers.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let next_expiry = {
                let mut state = lock(&slot.state);
                state.reclaim(now, &self.metrics);
                if let Some(taken) = state.try_take(now, self.config.visibility_timeout) {
                    return Ok(Some(taken));
                }
                state.leases.front().map(|(deadline, ..)| *deadline)
            };
            if now >= deadline {
                return Ok(None);
            }
            let wake = next_expiry.map_or(deadline, |expiry| expiry.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(wake) => {}
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
        let slot = self.existing(queue, id)?;
        let mut state = lock(&slot.state);
        let state = &mut *state;
        let key = state
            .jobs
            .get_key_value(id)
            .map(|(key, _)| key.clone())
            .ok_or_else(|| unknown(queue, id))?;
        let Some(record) = state.jobs.get_mut(id) else {
            return Err(unknown(queue, id));
        };
        if parsed.secret != record.secret || parsed.attempt > record.attempts {
            return Err(QueueError::LeaseMismatch {
                id: id.to_owned(),
                lease: lease.to_owned(),
            });
        }
        record.completions += 1;
        let duplicate = record.state == JobState::Done;
        if duplicate {
            state.stats.duplicates += 1;
            self.metrics.queue.duplicate();
        } else {
            let lane = lane_index(record.lane);
            match record.state {
                JobState::Running => state.running -= 1,
                JobState::Queued => state.waiting[lane] -= 1,
                JobState::Done => {}
            }
            record.state = JobState::Done;
            record.completed_us = Some(super::now_us());
            record.done.send_replace(true);
            state.stats.completed += 1;
            self.metrics.queue.completed(record.lane);
            state.finished.push_back((Instant::now(), key));
        }
        let job = state.view(id, &state.jobs[id]);
        if !duplicate {
            state.forget(
                Instant::now(),
                self.config.retention,
                self.config.max_queued_jobs,
            );
        }
        Ok(AckOutcome { duplicate, job })
    }

    async fn stats(&self, queue: &QueueName) -> Result<QueueStats, QueueError> {
        let Some(slot) = self.slot(queue, false)? else {
            return Ok(QueueStats {
                queue: queue.as_str().to_owned(),
                ..QueueStats::default()
            });
        };
        let mut state = lock(&slot.state);
        state.reclaim(Instant::now(), &self.metrics);
        let mut stats = state.stats.clone();
        stats.waiting = LaneCounts {
            premium: state.waiting[0] as u64,
            normal: state.waiting[1] as u64,
        };
        stats.running = state.running as u64;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_queued_jobs: usize) -> QueueConfig {
        QueueConfig {
            max_queues: 4,
            max_queued_jobs,
            visibility_timeout: Duration::from_secs(60),
            retention: Duration::from_secs(600),
            normal_every: 4,
        }
    }

    fn job() -> NewJob {
        NewJob {
            lane: Lane::Normal,
            work_ms: 0,
            notify: None,
            payload: None,
        }
    }

    #[tokio::test]
    async fn finished_jobs_are_forgotten_oldest_first_beyond_the_bound() {
        let queue = MemoryQueue::new(config(2), Arc::new(Metrics::default()));
        let name = QueueName::parse("q").unwrap_or_else(|e| panic!("{e}"));
        let mut ids = Vec::new();
        for _ in 0..4 {
            let id = queue.enqueue(&name, job()).await.map(|v| v.id);
            let id = id.unwrap_or_else(|e| panic!("{e}"));
            let taken = queue.take(&name, "w", Duration::ZERO).await;
            let taken = taken
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("nothing to take"));
            assert!(queue.ack(&name, &taken.id, &taken.lease).await.is_ok());
            ids.push(id);
        }
        // Two finished jobs are remembered; the two oldest are gone.
        for (i, id) in ids.iter().enumerate() {
            let known = queue.status(&name, id).await.is_ok();
            assert_eq!(known, i >= 2, "job {i}");
        }
        let stats = queue.stats(&name).await.unwrap_or_default();
        assert_eq!((stats.submitted, stats.completed), (4, 4));
    }

    #[tokio::test]
    async fn lease_entries_of_acknowledged_jobs_do_not_pile_up() {
        let queue = MemoryQueue::new(config(10), Arc::new(Metrics::default()));
        let name = QueueName::parse("q").unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..500 {
            assert!(queue.enqueue(&name, job()).await.is_ok());
            let taken = queue.take(&name, "w", Duration::ZERO).await;
            let taken = taken
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("nothing to take"));
            assert!(queue.ack(&name, &taken.id, &taken.lease).await.is_ok());
        }
        let slot = queue.slot(&name, false).ok().flatten();
        let leases = slot.map_or(usize::MAX, |s| lock(&s.state).leases.len());
        assert!(leases <= 2 * 10 + 64 + 1, "{leases} lease entries kept");
    }
}
