//! In-server workers (`--workers N` on `--worker-queue`) and the one completion path shared with the
//! HTTP ack route: acknowledge, then announce the first completion on the job's `notify` topic (the
//! workers leave a bounded number of announcements running, in order per topic, while they take
//! the next job).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, MutexGuard,
    },
    time::Duration,
};

use tokio::sync::{watch, Semaphore};

use super::{AckOutcome, QueueError, QueueName};
use crate::{app::AppState, topic::TopicName};

/// How long one take waits before the worker looks at the shutdown token again (it also wakes on it).
const TAKE_WAIT: Duration = Duration::from_secs(5);
/// Announcements of finished jobs one server's workers leave running while they take the next job.
const ANNOUNCING: usize = 64;
/// Pause after a failed take (e.g. Redis down) so a broken backend is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Acknowledges a job under `lease`; the first completion publishes the job's status JSON on its
/// `notify` topic through [`AppState::publish`], so SSE, WebSocket and poll clients of the topic learn it.
pub async fn complete(
    state: &AppState,
    queue: &QueueName,
    id: &str,
    lease: &str,
) -> Result<AckOutcome, QueueError> {
    let outcome = state.queue.ack(queue, id, lease).await?;
    announce(state, &outcome).await;
    Ok(outcome)
}

/// The topic to announce this completion on: the job's `notify` topic, on its first completion only.
fn announced_on(outcome: &AckOutcome) -> Option<&TopicName> {
    outcome.job.notify.as_ref().filter(|_| !outcome.duplicate)
}

/// Publishes the job's status JSON on its `notify` topic after its first completion.
async fn announce(state: &AppState, outcome: &AckOutcome) {
    if let Some(topic) = announced_on(outcome) {
        let payload = serde_json::to_vec(&outcome.job).unwrap_or_default();
        // The job is done either way; a failed announcement is logged, not turned into an error.
        if let Err(error) = state.publish(topic, payload.into()).await {
            tracing::warn!(%topic, %error, job = outcome.job.id, "cannot announce a finished job");
        }
    }
}

/// The workers' announcements: up to [`ANNOUNCING`] run while their workers take the next job (a
/// publish can take a broker round trip or more: on RabbitMQ the first publish to a topic on an
/// instance waits 150 ms for the stream to settle), the rest inline; on each topic they publish in
/// the order the jobs finished here (a ticket per topic), as they did when every worker waited.
struct Announcer {
    running: Arc<Semaphore>,
    /// Per topic with announcements under way: tickets issued, and the next ticket to publish.
    turns: Mutex<HashMap<TopicName, (u64, watch::Sender<u64>)>>,
}

impl Announcer {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            running: Arc::new(Semaphore::new(ANNOUNCING)),
            turns: Mutex::new(HashMap::new()),
        })
    }

    fn turns(&self) -> MutexGuard<'_, HashMap<TopicName, (u64, watch::Sender<u64>)>> {
        // Every critical section is one map operation.
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Acknowledges like [`complete`], then announces in the background when a slot is free.
    async fn complete(
        self: &Arc<Self>,
        state: &AppState,
        queue: &QueueName,
        id: &str,
        lease: &str,
    ) -> Result<(), QueueError> {
        let outcome = state.queue.ack(queue, id, lease).await?;
        let Some(topic) = announced_on(&outcome).cloned() else {
            return Ok(());
        };
        let (ticket, mut turn) = {
            let mut turns = self.turns();
            let (issued, next) = turns
                .entry(topic.clone())
                .or_insert_with(|| (0, watch::Sender::new(0)));
            *issued += 1;
            (*issued - 1, next.subscribe())
        };
        let this = self.clone();
        let state = state.clone();
        let announced = async move {
            let _ = turn.wait_for(|next| *next >= ticket).await;
            announce(&state, &outcome).await;
            let mut turns = this.turns();
            if let Some((issued, next)) = turns.get(&topic) {
                next.send_replace(ticket + 1);
                if *issued == ticket + 1 {
                    turns.remove(&topic);
                }
            }
        };
        match self.running.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    announced.await;
                    drop(permit);
                });
            }
            Err(_) => announced.await,
        }
        Ok(())
    }
}

/// Starts `config.workers` worker tasks; they stop when the server shuts down. Their queue is
/// readied meanwhile (see `JobQueue::prepare`): with a log broker, a job log made by the first
/// enqueue would hold every worker's first take until it settled, during the load.
pub fn spawn(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let outage = Arc::new(Outage::default());
    let announcer = Announcer::new();
    if state.config.workers > 0 {
        let state = state.clone();
        tokio::spawn(async move {
            let queue = state.config.worker_queue.clone();
            if let Err(error) = state.queue.prepare(&queue).await {
                // The workers' own takes cope with the broker; this only costs the head start.
                tracing::warn!(%error, queue = queue.as_str(), "the worker queue was not readied ahead of its first job");
            }
        });
    }
    (0..state.config.workers)
        .map(|n| {
            let name = format!("server-{n}");
            tokio::spawn(work(state.clone(), name, outage.clone(), announcer.clone()))
        })
        .collect()
}

/// What the workers of one server say about failing takes: one warning when takes start failing
/// (e.g. Redis is down) and one line when they work again, however many workers retry meanwhile.
#[derive(Default)]
struct Outage {
    failing: AtomicBool,
    failures: AtomicU64,
}

impl Outage {
    fn failed(&self, error: &QueueError, worker: &str) {
        self.failures.fetch_add(1, Relaxed);
        if !self.failing.swap(true, Relaxed) {
            tracing::warn!(
                %error,
                worker,
                "queue takes failing; the workers retry every {RETRY_PAUSE:?} and say when they work again"
            );
        }
    }

    fn worked(&self) {
        if self.failing.swap(false, Relaxed) {
            let failures = self.failures.swap(0, Relaxed);
            tracing::info!(failures, "queue takes work again");
        }
    }
}

/// Take, sleep the job's `work_ms`, ack; until shutdown. A job interrupted by shutdown is not acked,
/// so (with Redis) another instance gets it after the visibility timeout.
async fn work(state: AppState, name: String, outage: Arc<Outage>, announcer: Arc<Announcer>) {
    let queue = state.config.worker_queue.clone();
    let shutdown = state.shutdown.clone();
    loop {
        let taken = tokio::select! {
            taken = state.queue.take(&queue, &name, TAKE_WAIT) => taken,
            () = shutdown.cancelled() => return,
        };
        if taken.is_ok() {
            outage.worked();
        }
        let job = match taken {
            Ok(Some(job)) => job,
            Ok(None) => continue,
            Err(error) => {
                outage.failed(&error, &name);
                tokio::select! {
                    () = tokio::time::sleep(RETRY_PAUSE) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        let busy = &state.metrics.queue.workers_busy;
        busy.fetch_add(1, Relaxed);
        let worked = tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(job.work_ms)) => true,
            () = shutdown.cancelled() => false,
        };
        if worked {
            let completed = announcer
                .complete(&state, &queue, &job.id, &job.lease)
                .await;
            if let Err(error) = completed {
                tracing::warn!(%error, worker = name, job = job.id, "ack failed");
            }
        }
        busy.fetch_sub(1, Relaxed);
        if !worked {
            return;
        }
    }
}
