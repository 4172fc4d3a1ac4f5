//! Request-response, the baseline: `GET /hello` → `world`, `POST /hello` `ping` → `pong`, and
//! `POST /rpc` echoing its body.

use axum::{extract::State, routing::get, routing::post, Router};
use bytes::Bytes;

use crate::{app::AppState, error::AppError, extract::Body, metrics::PatternKind};

pub fn routes(_: &AppState) -> Router<AppState> {
    Router::new()
        .route("/hello", get(hello).post(ping))
        .route("/rpc", post(rpc))
}

async fn hello(State(state): State<AppState>) -> &'static str {
    state.metrics.request(PatternKind::RequestResponse);
    "world"
}

async fn ping(State(state): State<AppState>, Body(body): Body) -> Result<&'static str, AppError> {
    state.metrics.request(PatternKind::RequestResponse);
    match &body[..] {
        b"ping" => Ok("pong"),
        _ => Err(AppError::BadBody(format!(
            "POST /hello expects the body `ping`; got {} bytes",
            body.len()
        ))),
    }
}

async fn rpc(State(state): State<AppState>, Body(body): Body) -> Bytes {
    state.metrics.request(PatternKind::RequestResponse);
    body
}
