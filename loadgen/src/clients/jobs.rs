//! Job submitters (the message-queue pattern): each simulated user submits a job to the cell's queue
//! on an open-loop schedule (`rate / clients` per user, random phase) and waits until it knows the
//! result — by short polling the job, long polling its handle, or from the completion event on the
//! user's own topic over SSE or WebSocket. Latency runs from the intended submit time, so a user
//! still waiting for a slow job submits its next one late and that shows.

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use bytes::Bytes;
use http::Method;
use serde::Deserialize;

use super::{job_notify::Listener, requests, ClientCtx, Phase};
use crate::{
    http::{ClientError, HttpConn},
    record::Metric,
    schedule::Schedule,
};

/// How a user learns that its job finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notify {
    ShortPoll,
    LongPoll,
    Sse,
    Ws,
}

/// `GET /queues/{q}/jobs/{id}` (and the payload of a completion event).
#[derive(Debug, Clone, Deserialize)]
pub struct JobView {
    pub id: String,
    pub lane: String,
    pub status: String,
    #[serde(default)]
    pub attempts: u64,
    #[serde(default)]
    pub completions: u64,
    #[serde(default)]
    pub queue_wait_us: Option<u64>,
}

impl JobView {
    pub fn is_done(&self) -> bool {
        self.status == "done"
    }
}

#[derive(Deserialize)]
struct Submitted {
    id: String,
}

/// User `id`'s notification topic (SSE and WebSocket users): one per user, so it hears only its
/// own jobs.
pub fn notify_topic(queue: &str, id: usize) -> String {
    format!("{queue}n{id}")
}

/// Whether this user's jobs go to the premium lane: an even spread of `premium` of the users.
fn is_premium(ctx: &ClientCtx) -> bool {
    let share = ctx.shared.scenario.premium;
    let id = ctx.id as f64;
    ((id + 1.0) * share).floor() > (id * share).floor()
}

pub async fn run(ctx: ClientCtx, notify: Notify) {
    let Some(mut conn) = requests::open(&ctx).await else {
        return;
    };
    let mut listener = match notify {
        Notify::Sse | Notify::Ws => match Listener::subscribe(&ctx, notify).await {
            Ok(listener) => Some(listener),
            Err(error) => return ctx.mark_failed(&error),
        },
        _ => None,
    };
    ctx.mark_ready();
    if ctx.wait_for(Phase::Run).await != Phase::Run {
        return;
    }
    let scenario = ctx.shared.scenario.clone();
    let per_user = Duration::from_secs_f64(scenario.clients as f64 / scenario.rate);
    let mut schedule = Schedule::fixed_spread(ctx.now_ns(), per_user, ctx.id, scenario.clients);
    let lane = if is_premium(&ctx) {
        "premium"
    } else {
        "normal"
    };
    let mut body = format!(
        "{{\"lane\":\"{lane}\",\"work_ms\":{}",
        scenario.work.as_millis()
    );
    if listener.is_some() {
        let topic = notify_topic(&ctx.shared.queue, ctx.id);
        body.push_str(&format!(",\"notify\":\"{topic}\""));
    }
    body.push('}');
    let body = Bytes::from(body);
    let submit_path = format!("/queues/{}/jobs", ctx.shared.queue);
    let counters = &ctx.shared.recorder.counters;
    let mut stop = std::pin::pin!(ctx.reached(Phase::Stop));
    // Submitting ends with the window; a user between jobs is then done at once.
    let mut drain = std::pin::pin!(ctx.reached(Phase::Drain));
    loop {
        let intended = schedule.next_send();
        tokio::select! {
            () = tokio::time::sleep_until(ctx.shared.clock.instant_at(intended).into()) => {}
            () = &mut drain => return,
        }
        if ctx.shared.phase() >= Phase::Drain {
            return;
        }
        let answer = conn
            .fetch_with(
                Method::POST,
                &submit_path,
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
        counters.requests.fetch_add(1, Relaxed);
        let id = match answer.map(|b| serde_json::from_slice::<Submitted>(&b)) {
            Ok(Ok(submitted)) => submitted.id,
            Ok(Err(error)) => {
                ctx.error(&ClientError::Protocol(format!("submit answer: {error}")));
                continue;
            }
            Err(error) => {
                counters.dropped_sends.fetch_add(1, Relaxed);
                if !requests::recover(&ctx, &mut conn, &error).await {
                    return;
                }
                continue;
            }
        };
        counters.published.fetch_add(1, Relaxed);
        counters.events_expected.fetch_add(1, Relaxed);
        let result = tokio::select! {
            result = wait_for_result(&ctx, &mut conn, listener.as_mut(), notify, &id) => result,
            () = &mut stop => {
                // Still waiting when the drain ran out: the job's result never reached the user.
                counters.events_lost.fetch_add(1, Relaxed);
                return;
            }
        };
        match result {
            Ok(view) => completed(&ctx, &view, intended),
            Err(error) => {
                counters.events_lost.fetch_add(1, Relaxed);
                if !requests::recover(&ctx, &mut conn, &error).await {
                    return;
                }
            }
        }
    }
}

/// The user now knows the job is done: latency from the intended submit time, the server's queue
/// wait for the lane, and what the job went through (redeliveries, duplicate processing).
fn completed(ctx: &ClientCtx, view: &JobView, intended: u64) {
    let counters = &ctx.recorder().counters;
    counters.events_delivered.fetch_add(1, Relaxed);
    counters.events_received.fetch_add(1, Relaxed);
    counters
        .jobs_redelivered
        .fetch_add(view.attempts.saturating_sub(1), Relaxed);
    counters
        .jobs_duplicated
        .fetch_add(view.completions.saturating_sub(1), Relaxed);
    if !ctx.shared.in_window(intended) {
        return;
    }
    let micros = ctx.now_ns().saturating_sub(intended) / 1_000;
    ctx.recorder().record(ctx.id, Metric::JobResult, micros);
    if let Some(wait) = view.queue_wait_us {
        // The lane the server filed the job under.
        let metric = if view.lane == "premium" {
            Metric::QueueWaitPremium
        } else {
            Metric::QueueWaitNormal
        };
        ctx.recorder().record(ctx.id, metric, wait);
    }
}

/// Waits until the job is done, the way the pattern learns it.
async fn wait_for_result(
    ctx: &ClientCtx,
    conn: &mut HttpConn,
    listener: Option<&mut Listener>,
    notify: Notify,
    id: &str,
) -> Result<JobView, ClientError> {
    if let Some(listener) = listener {
        return listener.result_of(ctx, id).await;
    }
    let scenario = &ctx.shared.scenario;
    let path = match notify {
        Notify::LongPoll => format!(
            "/queues/{}/jobs/{id}?wait_ms={}",
            ctx.shared.queue,
            scenario.long_poll_timeout.as_millis()
        ),
        _ => format!("/queues/{}/jobs/{id}", ctx.shared.queue),
    };
    loop {
        if notify == Notify::ShortPoll {
            tokio::time::sleep(scenario.interval).await;
        }
        let body = conn.fetch(Method::GET, &path, Bytes::new()).await?;
        ctx.recorder().counters.requests.fetch_add(1, Relaxed);
        let view: JobView = serde_json::from_slice(&body)
            .map_err(|e| ClientError::Protocol(format!("job status: {e}")))?;
        if view.is_done() {
            return Ok(view);
        }
        ctx.recorder()
            .counters
            .empty_responses
            .fetch_add(1, Relaxed);
    }
}
