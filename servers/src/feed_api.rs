//! The feed's own routes, shared by every pattern: publish, metrics and a health check.

use axum::{
    extract::State,
    http::header,
    response::IntoResponse,
    routing::{get, post},
    Json, Router,
};
use serde_json::json;

use crate::{
    app::AppState,
    error::AppError,
    extract::{Body, Topic},
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/publish/{topic}", post(publish))
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
}

/// `POST /publish/{topic}`: the body is the payload; answers `{"topic","seq"}`.
async fn publish(
    State(state): State<AppState>,
    Topic(topic): Topic,
    Body(payload): Body,
) -> Result<impl IntoResponse, AppError> {
    let seq = state.publish(&topic, payload).await?;
    Ok(Json(json!({ "topic": topic.as_str(), "seq": seq })))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
