//! In-server workers (`--workers N` on `--worker-queue`) and the one completion path shared with the
//! HTTP ack route: acknowledge, then announce the first completion on the job's `notify` topic.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use super::{AckOutcome, QueueError, QueueName};
use crate::app::AppState;

/// How long one take waits before the worker looks at the shutdown token again (it also wakes on it).
const TAKE_WAIT: Duration = Duration::from_secs(5);
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
    if !outcome.duplicate {
        if let Some(topic) = &outcome.job.notify {
            let payload = serde_json::to_vec(&outcome.job).unwrap_or_default();
            // The job is done either way; a failed announcement is logged, not turned into an error.
            if let Err(error) = state.publish(topic, payload.into()).await {
                tracing::warn!(%topic, %error, job = id, "cannot announce a finished job");
            }
        }
    }
    Ok(outcome)
}

/// Starts `config.workers` worker tasks; they stop when the server shuts down.
pub fn spawn(state: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let outage = Arc::new(Outage::default());
    (0..state.config.workers)
        .map(|n| tokio::spawn(work(state.clone(), format!("server-{n}"), outage.clone())))
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
async fn work(state: AppState, name: String, outage: Arc<Outage>) {
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
            if let Err(error) = complete(&state, &queue, &job.id, &job.lease).await {
                tracing::warn!(%error, worker = name, job = job.id, "ack failed");
            }
        }
        busy.fetch_sub(1, Relaxed);
        if !worked {
            return;
        }
    }
}
