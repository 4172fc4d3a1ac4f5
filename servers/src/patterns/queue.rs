//! The message queue over HTTP: enqueue a job, read (or long-poll) its status, and the worker API
//! (take, ack) used by `commbench worker`; in-server workers call the queue directly.

use std::time::Duration;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::json;

use super::long_poll::wait_from;
use crate::{
    app::AppState,
    error::AppError,
    extract::{json_object, Body, ValidPath, ValidQuery},
    metrics::PatternKind,
    queue::{self, Lane, NewJob, QueueName},
    topic::TopicName,
};

pub fn routes(_: &AppState) -> Router<AppState> {
    Router::new()
        .route("/queues/{queue}/jobs", post(enqueue))
        .route("/queues/{queue}/jobs/{id}", get(status))
        .route("/queues/{queue}/jobs/{id}/ack", post(ack))
        .route("/queues/{queue}/take", post(take))
        .route("/queues/{queue}/stats", get(stats))
}

/// Longest job id accepted in a path (ours are ~30 characters); longer is a 404 without a lookup.
const MAX_ID_LEN: usize = 128;

fn queue_name(raw: &str) -> Result<QueueName, AppError> {
    Ok(TopicName::parse(raw)?)
}

fn job_path(raw: (String, String)) -> Result<(QueueName, String), AppError> {
    let queue = queue_name(&raw.0)?;
    if raw.1.len() > MAX_ID_LEN {
        return Err(queue::QueueError::UnknownJob {
            queue: raw.0,
            id: format!("<an id of {} bytes>", raw.1.len()),
        }
        .into());
    }
    Ok((queue, raw.1))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EnqueueBody {
    #[serde(default)]
    lane: Option<String>,
    #[serde(default)]
    work_ms: Option<u64>,
    #[serde(default)]
    notify: Option<String>,
    #[serde(default)]
    payload: Option<String>,
}

/// Parses and checks an enqueue body (an empty body means every default).
fn new_job(body: &[u8], max_work_ms: u64) -> Result<NewJob, AppError> {
    let parsed: EnqueueBody = if body.iter().all(u8::is_ascii_whitespace) {
        EnqueueBody::default()
    } else {
        json_object(body).map_err(|e| AppError::BadBody(format!("job body is not valid: {e}")))?
    };
    let lane = match parsed.lane.as_deref() {
        None => Lane::Normal,
        Some(text) => Lane::parse(text).ok_or_else(|| {
            AppError::BadBody(format!(
                "unknown lane `{text}` (expected \"premium\" or \"normal\")"
            ))
        })?,
    };
    let work_ms = parsed.work_ms.unwrap_or(0);
    if work_ms > max_work_ms {
        return Err(AppError::BadBody(format!(
            "work_ms={work_ms} is out of range (allowed 0..={max_work_ms})"
        )));
    }
    let notify = parsed.notify.as_deref().map(TopicName::parse).transpose()?;
    Ok(NewJob {
        lane,
        work_ms,
        notify,
        payload: parsed.payload,
    })
}

/// `POST /queues/{queue}/jobs` → 202 with `Location` and `{"id","queue","lane","status"}`, plus
/// `"spooled": true` when Redis is unreachable and the job waits in this instance's outage spool.
async fn enqueue(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    Body(body): Body,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::Queue);
    let queue = queue_name(&raw)?;
    let job = new_job(&body, state.config.max_work_ms)?;
    let view = state.queue.enqueue(&queue, job).await?;
    let location = format!("/queues/{}/jobs/{}", queue, view.id);
    let mut body = json!({
        "id": view.id,
        "queue": view.queue,
        "lane": view.lane,
        "status": view.status,
    });
    if view.spooled {
        body["spooled"] = true.into();
    }
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    wait_ms: Option<u64>,
}

/// `GET /queues/{queue}/jobs/{id}[?wait_ms=]`: the status, held until done or the wait ends.
async fn status(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<(String, String)>,
    ValidQuery(query): ValidQuery<StatusQuery>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::Queue);
    let (queue, id) = job_path(raw)?;
    let wait = wait_from(
        query.wait_ms,
        Duration::ZERO,
        state.config.max_wait,
        "wait_ms",
    )?;
    let mut view = state.queue.status(&queue, &id).await?;
    if view.status != queue::JobState::Done && !wait.is_zero() {
        let _held = state.metrics.active(PatternKind::Queue);
        tokio::select! {
            waited = state.queue.wait_done(&queue, &id, wait) => view = waited?,
            () = state.shutdown.cancelled() => view = state.queue.status(&queue, &id).await?,
        }
    }
    if view.status == queue::JobState::Done {
        state.metrics.delivered(PatternKind::Queue, 1);
    }
    Ok(Json(view).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TakeQuery {
    worker: Option<String>,
    wait_ms: Option<u64>,
}

/// `POST /queues/{queue}/take?worker=&wait_ms=` → 200 with the job and its lease, or 204.
async fn take(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
    ValidQuery(query): ValidQuery<TakeQuery>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::Queue);
    let queue = queue_name(&raw)?;
    let worker = match query.worker.as_deref() {
        None => "anonymous".to_owned(),
        Some(name) => TopicName::parse(name)
            .map_err(|e| AppError::BadQuery(format!("worker name: {e}")))?
            .to_string(),
    };
    let wait = wait_from(
        query.wait_ms,
        Duration::ZERO,
        state.config.max_wait,
        "wait_ms",
    )?;
    let _held = (!wait.is_zero()).then(|| state.metrics.active(PatternKind::Queue));
    let taken = tokio::select! {
        taken = state.queue.take(&queue, &worker, wait) => taken?,
        () = state.shutdown.cancelled() => None,
    };
    Ok(match taken {
        Some(taken) => Json(taken).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    lease: String,
}

/// `POST /queues/{queue}/jobs/{id}/ack` body `{"lease"}` → `{"id","status":"done","duplicate"}`.
async fn ack(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<(String, String)>,
    Body(body): Body,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::Queue);
    let (queue, id) = job_path(raw)?;
    let body: AckBody =
        json_object(&body).map_err(|e| AppError::BadBody(format!("ack body is not valid: {e}")))?;
    let outcome = queue::workers::complete(&state, &queue, &id, &body.lease).await?;
    Ok(Json(json!({
        "id": outcome.job.id,
        "status": outcome.job.status,
        "duplicate": outcome.duplicate,
    }))
    .into_response())
}

/// `GET /queues/{queue}/stats`.
async fn stats(
    State(state): State<AppState>,
    ValidPath(raw): ValidPath<String>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::Queue);
    let queue = queue_name(&raw)?;
    Ok(Json(state.queue.stats(&queue).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_bodies_are_checked_field_by_field() {
        let job = new_job(b"", 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((job.lane, job.work_ms), (Lane::Normal, 0));
        let job = new_job(
            br#"{"lane":"premium","work_ms":10,"notify":"t","payload":"x"}"#,
            10,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(job.lane, Lane::Premium);
        assert_eq!(job.notify.map(|t| t.to_string()).as_deref(), Some("t"));
        for bad in [
            &br#"{"lane":"gold"}"#[..],
            br#"{"work_ms":11}"#,
            br#"{"work_ms":-1}"#,
            br#"{"notify":"a b"}"#,
            br#"{"extra":1}"#,
            b"{",
            br#"["premium",5]"#,
            b"[]",
            b"null",
        ] {
            let err = new_job(bad, 10).err();
            assert!(
                err.as_ref()
                    .is_some_and(|e| e.status() == StatusCode::BAD_REQUEST),
                "{:?}: {err:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
