//! Long polling: `GET /longpoll/{topic}?after={seq}&timeout_ms={t}` holds the request until an event
//! after the cursor exists or the wait ends, then answers 200 (an empty list on timeout).

use std::time::Duration;

use axum::{extract::State, response::Response, routing::get, Router};
use serde::Deserialize;

use super::{batch_response, poll_limit};
use crate::{
    app::AppState,
    error::AppError,
    extract::{Topic, ValidQuery},
    metrics::PatternKind,
};

pub fn routes(_: &AppState) -> Router<AppState> {
    Router::new().route("/longpoll/{topic}", get(long_poll))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LongPollQuery {
    #[serde(default)]
    after: u64,
    timeout_ms: Option<u64>,
    limit: Option<usize>,
}

/// Checks a client-chosen wait against the server's cap (shared with the jobs pattern).
pub(super) fn wait_from(
    millis: Option<u64>,
    default: Duration,
    cap: Duration,
    name: &str,
) -> Result<Duration, AppError> {
    let Some(millis) = millis else {
        return Ok(default);
    };
    let wait = Duration::from_millis(millis);
    if wait > cap {
        return Err(AppError::BadQuery(format!(
            "{name}={millis} is out of range (allowed 0..={})",
            cap.as_millis()
        )));
    }
    Ok(wait)
}

async fn long_poll(
    State(state): State<AppState>,
    Topic(topic): Topic,
    ValidQuery(query): ValidQuery<LongPollQuery>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::LongPoll);
    let config = &state.config;
    let limit = poll_limit(query.limit, config.poll_max_events)?;
    let wait = wait_from(
        query.timeout_ms,
        config.default_wait,
        config.max_wait,
        "timeout_ms",
    )?;
    // Waiting first: it returns at once when events after the cursor exist (or the cursor is older
    // than history), so one read afterwards answers every case — one head check plus one read per
    // poll, which on the Redis bus is one round trip plus, usually, none (the woken read is served
    // from the events the instance's follower just handed on).
    if !wait.is_zero() {
        let _held = state.metrics.active(PatternKind::LongPoll);
        tokio::select! {
            waited = state.bus.wait_for_event(&topic, query.after, wait) => waited?,
            () = state.shutdown.cancelled() => {}
        }
    }
    let batch = state.bus.read(&topic, query.after, limit).await?;
    state
        .metrics
        .delivered(PatternKind::LongPoll, batch.events.len() as u64);
    Ok(batch_response(&topic, &batch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_capped() {
        let cap = Duration::from_secs(60);
        let default = Duration::from_secs(30);
        assert_eq!(wait_from(None, default, cap, "t").ok(), Some(default));
        assert_eq!(
            wait_from(Some(0), default, cap, "t").ok(),
            Some(Duration::ZERO)
        );
        let err = wait_from(Some(60_001), default, cap, "timeout_ms").err();
        assert!(err.is_some_and(|e| e.to_string().contains("0..=60000")));
    }
}
