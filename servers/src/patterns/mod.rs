//! The communication patterns, one module each. A pattern contributes its routes; everything shared
//! (feed, bus, limits, errors, metrics, config) lives outside this folder.

pub mod graphql;
mod handle_poll;
mod long_poll;
mod queue;
mod request_response;
mod short_poll;
pub mod socketio;
mod sse;
mod ws;

use axum::Router;

use crate::app::AppState;

/// What a pattern module provides: its routes, built from the shared state (it may attach state of
/// its own, such as the WebSocket presence registry, as an extension).
pub type PatternRoutes = fn(&AppState) -> Router<AppState>;

/// Every hosted pattern. Adding a pattern = its module + one line here.
pub const ALL: &[PatternRoutes] = &[
    request_response::routes,
    short_poll::routes,
    long_poll::routes,
    handle_poll::routes,
    sse::routes,
    ws::routes,
    graphql::routes,
    queue::routes,
    socketio::routes,
];

/// Parses the optional `limit` query parameter shared by the polling patterns against the cap.
fn poll_limit(limit: Option<usize>, cap: usize) -> Result<usize, crate::error::AppError> {
    match limit {
        None => Ok(cap),
        Some(n) if (1..=cap).contains(&n) => Ok(n),
        Some(n) => Err(crate::error::AppError::BadQuery(format!(
            "limit={n} is out of range (allowed 1..={cap})"
        ))),
    }
}

/// A poll answer: the batch as JSON.
fn batch_response(
    topic: &crate::topic::TopicName,
    batch: &crate::bus::ReadBatch,
) -> axum::response::Response {
    use axum::{http::header, response::IntoResponse};
    (
        [(header::CONTENT_TYPE, "application/json")],
        batch.to_json(topic),
    )
        .into_response()
}
