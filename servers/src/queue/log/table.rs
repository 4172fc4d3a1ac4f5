//! A queue's jobs as every instance sees them: the state built by applying the queue's job records
//! (enqueued, taken, done) in the order the broker's logs hold them, so every instance that applied
//! the same records holds the same table. Pure: no I/O, unit-tested here.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    queue::{JobState, JobView, Lane, LaneCounts, QueueStats},
    topic::TopicName,
};

/// A job as enqueued: everything a worker and a status read need.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    pub lane: Lane,
    pub work_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    pub enqueued_at_us: u64,
    /// Lease secret (hex), so an ack under a lease of another job is refused.
    pub secret: String,
}

/// One record of a queue's job log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum JobRecord {
    Enqueued(JobInfo),
    /// A take: the first record of attempt `attempt` of a job wins it.
    Taken {
        id: String,
        attempt: u32,
        /// Which instance took it (claims are told apart by it).
        by: String,
        at_us: u64,
    },
    Done {
        id: String,
        attempt: u32,
        at_us: u64,
    },
}

/// What applying a record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Enqueued {
        new: bool,
    },
    /// `won`: this record is the job's current attempt.
    Taken {
        won: bool,
    },
    Done {
        duplicate: bool,
    },
    /// A record about a job this table does not hold (forgotten, or not seen yet).
    Unknown,
}

struct Job {
    info: JobInfo,
    state: JobState,
    attempts: u32,
    completions: u32,
    started_us: Option<u64>,
    completed_us: Option<u64>,
    /// The current attempt's taker and when it took the job.
    taken: Option<(String, u64)>,
    done: watch::Sender<bool>,
}

/// The table of one queue.
pub struct JobTable {
    name: String,
    jobs: HashMap<String, Job>,
    /// Queued job ids per lane (premium, normal), oldest first; may hold ids no longer queued.
    lanes: [VecDeque<String>; 2],
    /// Finished jobs in completion order (µs), forgotten beyond the retention or the bound.
    finished: VecDeque<(u64, String)>,
    stats: QueueStats,
}

fn index(lane: Lane) -> usize {
    match lane {
        Lane::Premium => 0,
        Lane::Normal => 1,
    }
}

impl JobTable {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            jobs: HashMap::new(),
            lanes: [VecDeque::new(), VecDeque::new()],
            finished: VecDeque::new(),
            stats: QueueStats {
                queue: name.to_owned(),
                ..QueueStats::default()
            },
        }
    }

    /// Applies one record (in log order).
    pub fn apply(&mut self, record: &JobRecord) -> Applied {
        match record {
            JobRecord::Enqueued(info) => {
                if self.jobs.contains_key(&info.id) {
                    return Applied::Enqueued { new: false };
                }
                let lane = index(info.lane);
                self.lanes[lane].push_back(info.id.clone());
                self.waiting_add(info.lane, 1);
                self.stats.submitted += 1;
                self.jobs.insert(
                    info.id.clone(),
                    Job {
                        info: info.clone(),
                        state: JobState::Queued,
                        attempts: 0,
                        completions: 0,
                        started_us: None,
                        completed_us: None,
                        taken: None,
                        done: watch::Sender::new(false),
                    },
                );
                Applied::Enqueued { new: true }
            }
            JobRecord::Taken {
                id,
                attempt,
                by,
                at_us,
            } => {
                let Some(job) = self.jobs.get_mut(id) else {
                    return Applied::Unknown;
                };
                if *attempt != job.attempts + 1 {
                    return Applied::Taken { won: false };
                }
                job.attempts = *attempt;
                job.taken = Some((by.clone(), *at_us));
                job.started_us.get_or_insert(*at_us);
                let (state, lane) = (job.state, job.info.lane);
                match state {
                    JobState::Queued => {
                        job.state = JobState::Running;
                        self.waiting_add(lane, -1);
                        self.stats.running += 1;
                    }
                    JobState::Running => self.stats.redelivered += 1,
                    JobState::Done => {}
                }
                Applied::Taken { won: true }
            }
            JobRecord::Done { id, at_us, .. } => {
                let Some(job) = self.jobs.get_mut(id) else {
                    return Applied::Unknown;
                };
                job.completions += 1;
                if job.state == JobState::Done {
                    self.stats.duplicates += 1;
                    return Applied::Done { duplicate: true };
                }
                let (state, lane) = (job.state, job.info.lane);
                job.state = JobState::Done;
                job.completed_us = Some(*at_us);
                job.done.send_replace(true);
                match state {
                    JobState::Queued => self.waiting_add(lane, -1),
                    JobState::Running => self.stats.running = self.stats.running.saturating_sub(1),
                    JobState::Done => {}
                }
                self.stats.completed += 1;
                self.finished.push_back((*at_us, id.clone()));
                Applied::Done { duplicate: false }
            }
        }
    }

    fn waiting_add(&mut self, lane: Lane, delta: i64) {
        let counts = &mut self.stats.waiting;
        let count = match lane {
            Lane::Premium => &mut counts.premium,
            Lane::Normal => &mut counts.normal,
        };
        *count = count.saturating_add_signed(delta);
    }

    /// Forgets finished jobs completed before `before_us`, and the oldest beyond `keep`.
    pub fn forget(&mut self, before_us: u64, keep: usize) {
        while let Some((at, id)) = self.finished.front() {
            if *at >= before_us && self.finished.len() <= keep {
                break;
            }
            self.jobs.remove(id);
            self.finished.pop_front();
        }
    }

    /// Jobs not finished (queued or running).
    pub fn unfinished(&self) -> u64 {
        self.stats.waiting.premium + self.stats.waiting.normal + self.stats.running
    }

    pub fn stats(&self) -> QueueStats {
        self.stats.clone()
    }

    pub fn waiting(&self) -> LaneCounts {
        self.stats.waiting
    }

    pub fn view(&self, id: &str) -> Option<JobView> {
        let job = self.jobs.get(id)?;
        Some(
            JobView {
                id: id.to_owned(),
                queue: self.name.clone(),
                lane: job.info.lane,
                status: job.state,
                attempts: job.attempts,
                completions: job.completions,
                work_ms: job.info.work_ms,
                enqueued_at_us: job.info.enqueued_at_us,
                started_at_us: job.started_us,
                completed_at_us: job.completed_us,
                queue_wait_us: None,
                notify: job
                    .info
                    .notify
                    .as_deref()
                    .and_then(|t| TopicName::parse(t).ok()),
                spooled: false,
            }
            .with_wait(),
        )
    }

    pub fn info(&self, id: &str) -> Option<&JobInfo> {
        self.jobs.get(id).map(|job| &job.info)
    }

    /// The job's attempts so far, when it is held.
    pub fn attempts(&self, id: &str) -> Option<u32> {
        self.jobs.get(id).map(|job| job.attempts)
    }

    pub fn state(&self, id: &str) -> Option<JobState> {
        self.jobs.get(id).map(|job| job.state)
    }

    /// Resolves when the job is done (for handle long polls).
    pub fn done_watch(&self, id: &str) -> Option<watch::Receiver<bool>> {
        self.jobs.get(id).map(|job| job.done.subscribe())
    }

    /// The oldest queued job of `lane` not in `claiming` (jobs whose claim is on its way to the
    /// log), dropping ids that are no longer queued from the front.
    pub fn next_unclaimed(&mut self, lane: Lane, claiming: &HashSet<String>) -> Option<&JobInfo> {
        let ids = &mut self.lanes[index(lane)];
        while let Some(id) = ids.front() {
            match self.jobs.get(id) {
                Some(job) if job.state == JobState::Queued => break,
                _ => {
                    ids.pop_front();
                }
            }
        }
        let jobs = &self.jobs;
        ids.iter()
            .filter(|id| !claiming.contains(*id))
            .filter_map(|id| jobs.get(id))
            .find(|job| job.state == JobState::Queued)
            .map(|job| &job.info)
    }

    /// A running job whose current attempt was taken before `before_us` (its taker is presumed
    /// dead) and that is not in `claiming`, with the attempt a new take would be.
    pub fn expired(&self, before_us: u64, claiming: &HashSet<String>) -> Option<(&JobInfo, u32)> {
        self.jobs
            .values()
            .find_map(|job| match (&job.state, &job.taken) {
                (JobState::Running, Some((_, at)))
                    if *at < before_us && !claiming.contains(&job.info.id) =>
                {
                    Some((&job.info, job.attempts + 1))
                }
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, lane: Lane) -> JobInfo {
        JobInfo {
            id: id.to_owned(),
            lane,
            work_ms: 1,
            notify: None,
            payload: None,
            enqueued_at_us: 100,
            secret: "00000000000000aa".to_owned(),
        }
    }

    fn taken(id: &str, attempt: u32, by: &str, at_us: u64) -> JobRecord {
        JobRecord::Taken {
            id: id.to_owned(),
            attempt,
            by: by.to_owned(),
            at_us,
        }
    }

    fn done(id: &str, attempt: u32) -> JobRecord {
        JobRecord::Done {
            id: id.to_owned(),
            attempt,
            at_us: 500,
        }
    }

    #[test]
    fn a_take_passes_over_jobs_whose_claim_is_on_its_way() {
        let mut table = JobTable::new("q");
        for id in ["a", "b", "c"] {
            table.apply(&JobRecord::Enqueued(info(id, Lane::Normal)));
        }
        let claiming = HashSet::from(["a".to_owned(), "b".to_owned()]);
        let next = |table: &mut JobTable, claiming| {
            table
                .next_unclaimed(Lane::Normal, claiming)
                .map(|i| i.id.clone())
        };
        assert_eq!(next(&mut table, &claiming).as_deref(), Some("c"));
        table.apply(&taken("c", 1, "x", 200));
        assert_eq!(next(&mut table, &claiming), None);
        assert_eq!(next(&mut table, &HashSet::new()).as_deref(), Some("a"));
    }

    #[test]
    fn records_drive_a_job_through_its_states_with_counts() {
        let mut table = JobTable::new("q");
        let record = JobRecord::Enqueued(info("a", Lane::Premium));
        assert_eq!(table.apply(&record), Applied::Enqueued { new: true });
        assert_eq!(table.apply(&record), Applied::Enqueued { new: false });
        assert_eq!(table.waiting().premium, 1);
        let none = HashSet::new();
        assert_eq!(
            table
                .next_unclaimed(Lane::Premium, &none)
                .map(|i| i.id.as_str()),
            Some("a")
        );
        // Two instances claim attempt 1: the first record wins, the second loses.
        assert_eq!(
            table.apply(&taken("a", 1, "x", 200)),
            Applied::Taken { won: true }
        );
        assert_eq!(
            table.apply(&taken("a", 1, "y", 201)),
            Applied::Taken { won: false }
        );
        assert_eq!(table.next_unclaimed(Lane::Premium, &none), None);
        assert_eq!(table.stats().running, 1);
        assert_eq!(table.expired(150, &none), None);
        let claiming = HashSet::from(["a".to_owned()]);
        assert_eq!(table.expired(300, &claiming), None, "a claim is on its way");
        let (expired, attempt) = table
            .expired(300, &none)
            .unwrap_or_else(|| panic!("expired"));
        assert_eq!((expired.id.as_str(), attempt), ("a", 2));
        assert_eq!(
            table.apply(&taken("a", 2, "y", 300)),
            Applied::Taken { won: true }
        );
        assert_eq!(
            table.apply(&done("a", 2)),
            Applied::Done { duplicate: false }
        );
        assert_eq!(
            table.apply(&done("a", 1)),
            Applied::Done { duplicate: true }
        );
        let view = table.view("a").unwrap_or_else(|| panic!("view"));
        assert_eq!(
            (view.status, view.attempts, view.completions),
            (JobState::Done, 2, 2)
        );
        assert_eq!(view.queue_wait_us, Some(100));
        let stats = table.stats();
        assert_eq!(
            (
                stats.submitted,
                stats.completed,
                stats.redelivered,
                stats.duplicates,
                stats.running
            ),
            (1, 1, 1, 1, 0)
        );
        assert_eq!(table.apply(&done("zz", 1)), Applied::Unknown);
        table.forget(1_000, 10);
        assert!(table.view("a").is_none());
    }
}
