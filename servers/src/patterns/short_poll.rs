//! Short polling: `GET /poll/{topic}?after={seq}&limit={n}` answers at once with the events after the
//! cursor (possibly none), the head, a `more` marker when capped, and a gap when the cursor is too old.

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
    Router::new().route("/poll/{topic}", get(poll))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

async fn poll(
    State(state): State<AppState>,
    Topic(topic): Topic,
    ValidQuery(query): ValidQuery<PollQuery>,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::ShortPoll);
    let limit = poll_limit(query.limit, state.config.poll_max_events)?;
    let batch = state.bus.read(&topic, query.after, limit).await?;
    state
        .metrics
        .delivered(PatternKind::ShortPoll, batch.events.len() as u64);
    Ok(batch_response(&topic, &batch))
}
