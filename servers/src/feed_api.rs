//! The feed's own routes, shared by every pattern: publish, metrics and a health check.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::json;

use crate::{
    app::AppState,
    bus::Published,
    error::AppError,
    extract::{Body, Topic},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/publish/{topic}", post(publish))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
}

/// `POST /publish/{topic}`: the body is the payload; answers `{"topic","seq"}`, or, while the Redis bus
/// cannot reach Redis, 202 `{"topic","spooled":true,"spool_depth"}` (replayed in order later).
async fn publish(
    State(state): State<AppState>,
    Topic(topic): Topic,
    Body(payload): Body,
) -> Result<Response, AppError> {
    match state.publish_or_spool(&topic, payload).await? {
        Published::Appended(seq) => {
            Ok(Json(json!({ "topic": topic.as_str(), "seq": seq })).into_response())
        }
        Published::Spooled { depth } => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "topic": topic.as_str(), "spooled": true, "spool_depth": depth })),
        )
            .into_response()),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
