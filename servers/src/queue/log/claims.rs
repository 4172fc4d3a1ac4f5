//! Taking jobs on Kafka: the job log is the queue. An instance picks the next job from its table —
//! an expired take first (its taker presumably died: the visibility timeout is the consumer's session
//! timeout), then the oldest queued job of the lane the policy prefers — and appends a take record for
//! its next attempt; the first take record of an attempt in the log wins, so competing instances never
//! both get one attempt. A done record is the commit.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use super::{choose, table::JobInfo, Lanes, LogQueue, Slot, POLL};
use crate::{
    log::LogError,
    queue::{Lane, QueueError, QueueName, Taken},
};

/// Claims lost in a row before a take waits for the table to move (another instance is faster).
const MAX_LOST: usize = 16;

/// [`Lanes`] by claims in the job log.
#[derive(Debug, Default)]
pub struct ClaimLanes;

impl ClaimLanes {
    /// The job a take should claim now, its attempt, and whether both lanes had jobs; the job is
    /// marked as being claimed here until the returned guard drops.
    fn candidate<'a>(
        queue: &LogQueue,
        slot: &'a Slot,
    ) -> Option<(JobInfo, u32, bool, Claiming<'a>)> {
        let visibility = queue.config().visibility_timeout.as_micros() as u64;
        let before = crate::queue::now_us().saturating_sub(visibility);
        let mut claiming = slot.claiming();
        let mut table = slot.table();
        let (job, attempt, contested) = match table.expired(before, &claiming) {
            Some((job, attempt)) => (job.clone(), attempt, false),
            None => {
                let premium = table.next_unclaimed(Lane::Premium, &claiming).is_some();
                let normal = table.next_unclaimed(Lane::Normal, &claiming).is_some();
                let (lane, contested) = choose(slot, premium, normal)?;
                let job = table.next_unclaimed(lane, &claiming)?.clone();
                let attempt = table.attempts(&job.id).unwrap_or(0) + 1;
                (job, attempt, contested)
            }
        };
        claiming.insert(job.id.clone());
        let guard = Claiming {
            slot,
            id: job.id.clone(),
        };
        Some((job, attempt, contested, guard))
    }
}

/// A job this instance is claiming: the other takes here pass over it until its claim came back
/// (they would only append losing claims for it), so an instance's takers claim different jobs at
/// once instead of queueing behind one job per claim round trip.
struct Claiming<'a> {
    slot: &'a Slot,
    id: String,
}

impl Drop for Claiming<'_> {
    fn drop(&mut self) {
        self.slot.claiming().remove(&self.id);
    }
}

#[async_trait]
impl Lanes for ClaimLanes {
    async fn enqueued(&self, _: &QueueName, _: &JobInfo) -> Result<(), LogError> {
        Ok(())
    }

    async fn take(
        &self,
        queue: &LogQueue,
        slot: &Arc<Slot>,
        wait: Duration,
    ) -> Result<Option<Taken>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut lost = 0;
        loop {
            let woken = slot.takers.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some((job, attempt, contested, _claiming)) = Self::candidate(queue, slot) {
                if let Some(taken) = queue.claim(slot, &job, attempt, contested).await? {
                    return Ok(Some(taken));
                }
                lost += 1;
                if lost < MAX_LOST {
                    continue;
                }
                lost = 0;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(deadline.min(now + POLL)) => {}
            }
        }
    }

    async fn done(&self, _: &QueueName, _: &str, _: u32) {}
}
