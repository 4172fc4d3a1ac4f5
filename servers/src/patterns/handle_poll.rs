//! Long polling on a handle: `POST /jobs` → 202 with a job id; the job finishes after simulated work;
//! `GET /jobs/{id}?wait_ms={t}` answers once the job is done or the wait ends, status in the body.
//!
//! A self-contained demo of the pattern (its own bounded job table, `--job-work`, `--max-jobs`; no
//! workers, lanes or broker). The message queue, whose jobs workers take and acknowledge, is
//! `/queues` (`queue/` and `patterns/queue.rs`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::long_poll::wait_from;
use crate::{
    app::AppState,
    error::AppError,
    extract::{ValidPath, ValidQuery},
    metrics::PatternKind,
};

pub fn routes(state: &AppState) -> Router<AppState> {
    let store = Arc::new(JobStore::new(state.config.max_jobs));
    Router::new()
        .route("/jobs", post(create))
        .route("/jobs/{id}", get(status))
        .layer(Extension(store))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum JobStatus {
    Pending,
    Done,
}

#[derive(Serialize)]
struct JobView {
    id: u64,
    status: JobStatus,
    work_ms: u64,
}

struct Job {
    status: watch::Receiver<JobStatus>,
    work_ms: u64,
}

/// Every job the server remembers, bounded: finished jobs are forgotten oldest first, and creating a
/// job when all remembered jobs are still pending is refused.
struct JobStore {
    max_jobs: usize,
    inner: Mutex<JobTable>,
}

#[derive(Default)]
struct JobTable {
    next_id: u64,
    jobs: HashMap<u64, Job>,
    finished: VecDeque<u64>,
}

impl JobStore {
    fn new(max_jobs: usize) -> Self {
        Self {
            max_jobs,
            inner: Mutex::new(JobTable::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn insert(&self, work_ms: u64) -> Result<(u64, watch::Sender<JobStatus>), AppError> {
        let mut table = self.table();
        if table.jobs.len() >= self.max_jobs {
            let Some(oldest) = table.finished.pop_front() else {
                return Err(AppError::JobLimit(format!(
                    "all {} remembered jobs are still pending; retry later",
                    self.max_jobs
                )));
            };
            table.jobs.remove(&oldest);
        }
        table.next_id += 1;
        let id = table.next_id;
        let (sender, status) = watch::channel(JobStatus::Pending);
        table.jobs.insert(id, Job { status, work_ms });
        Ok((id, sender))
    }

    fn finished(&self, id: u64) {
        self.table().finished.push_back(id);
    }

    fn get(&self, id: u64) -> Option<(watch::Receiver<JobStatus>, u64)> {
        self.table()
            .jobs
            .get(&id)
            .map(|job| (job.status.clone(), job.work_ms))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQuery {
    /// Overrides the server's `--job-work` for this job.
    work_ms: Option<u64>,
}

async fn create(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<JobStore>>,
    ValidQuery(query): ValidQuery<CreateQuery>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::HandlePoll);
    let work = wait_from(
        query.work_ms,
        state.config.job_work,
        state.config.max_wait,
        "work_ms",
    )?;
    let work_ms = work.as_millis() as u64;
    let (id, sender) = store.insert(work_ms)?;
    let worker_store = store.clone();
    tokio::spawn(async move {
        tokio::time::sleep(work).await;
        let _ = sender.send(JobStatus::Done);
        worker_store.finished(id);
    });
    let view = JobView {
        id,
        status: JobStatus::Pending,
        work_ms,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/jobs/{id}"))],
        Json(view),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    wait_ms: Option<u64>,
}

async fn status(
    State(state): State<AppState>,
    Extension(store): Extension<Arc<JobStore>>,
    ValidPath(id): ValidPath<String>,
    ValidQuery(query): ValidQuery<StatusQuery>,
) -> Result<Json<JobView>, AppError> {
    state.metrics.request(PatternKind::HandlePoll);
    let id: u64 = id
        .parse()
        .map_err(|_| AppError::BadQuery(format!("job id `{id}` is not a number")))?;
    let wait = wait_from(
        query.wait_ms,
        Duration::ZERO,
        state.config.max_wait,
        "wait_ms",
    )?;
    let (mut status, work_ms) = store
        .get(id)
        .ok_or_else(|| AppError::NotFound(format!("no job {id} (never created, or forgotten)")))?;
    if *status.borrow() == JobStatus::Pending && !wait.is_zero() {
        let _held = state.metrics.active(PatternKind::HandlePoll);
        tokio::select! {
            _ = tokio::time::timeout(wait, status.wait_for(|s| *s == JobStatus::Done)) => {}
            () = state.shutdown.cancelled() => {}
        }
    }
    let current = *status.borrow();
    if current == JobStatus::Done {
        state.metrics.delivered(PatternKind::HandlePoll, 1);
    }
    Ok(Json(JobView {
        id,
        status: current,
        work_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_forgets_finished_jobs_first_and_refuses_when_all_pending() {
        let store = JobStore::new(2);
        let (a, _sa) = store.insert(1).unwrap_or_else(|e| panic!("{e}"));
        let (_b, _sb) = store.insert(1).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(store.insert(1), Err(AppError::JobLimit(_))));
        store.finished(a);
        assert!(store.insert(1).is_ok());
        assert!(store.get(a).is_none());
    }
}
