//! The one error type for HTTP handlers and its single mapping to responses: a status code and a JSON
//! body `{"error": "<reason>", "detail": "<what exactly was wrong>"}`.

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;

use crate::{
    bus::{BusError, PublishError},
    metrics::RejectReason,
    queue::QueueError,
    spool::SpoolFull,
    topic::TopicError,
};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadTopic(#[from] TopicError),
    #[error("{0}")]
    BadQuery(String),
    #[error("{0}")]
    Bus(#[from] BusError),
    #[error("body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    BadBody(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// `POST /jobs` (long polling on a handle) while every remembered job is still pending.
    #[error("{0}")]
    JobLimit(String),
    #[error("{0}")]
    Queue(#[from] QueueError),
    #[error("{0}")]
    SpoolFull(#[from] SpoolFull),
}

impl From<PublishError> for AppError {
    fn from(error: PublishError) -> Self {
        match error {
            PublishError::Bus(error) => AppError::Bus(error),
            PublishError::SpoolFull(full) => AppError::SpoolFull(full),
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: &'a str,
    pub detail: String,
}

impl AppError {
    pub fn reason(&self) -> RejectReason {
        match self {
            AppError::BadTopic(_) => RejectReason::BadTopic,
            AppError::BadQuery(_) => RejectReason::BadQuery,
            AppError::Bus(BusError::CursorAhead { .. }) => RejectReason::CursorAhead,
            AppError::Bus(BusError::TopicLimit { .. }) => RejectReason::TopicLimit,
            AppError::Bus(BusError::Unavailable(_)) => RejectReason::Unavailable,
            AppError::PayloadTooLarge { .. } => RejectReason::PayloadTooLarge,
            AppError::BadBody(_) => RejectReason::BadMessage,
            AppError::NotFound(_) => RejectReason::NotFound,
            AppError::MethodNotAllowed { .. } => RejectReason::MethodNotAllowed,
            AppError::JobLimit(_) => RejectReason::JobLimit,
            AppError::Queue(e) => match e {
                QueueError::QueueLimit { .. } => RejectReason::QueueLimit,
                QueueError::QueueFull { .. } => RejectReason::QueueFull,
                QueueError::UnknownJob { .. } => RejectReason::NotFound,
                QueueError::JobLost { .. } => RejectReason::JobLost,
                QueueError::BadLease { .. } => RejectReason::BadMessage,
                QueueError::LeaseMismatch { .. } => RejectReason::LeaseMismatch,
                QueueError::Unavailable(_) => RejectReason::Unavailable,
                QueueError::SpoolFull(_) => RejectReason::SpoolFull,
            },
            AppError::SpoolFull(_) => RejectReason::SpoolFull,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadTopic(_)
            | AppError::BadQuery(_)
            | AppError::BadBody(_)
            | AppError::Bus(BusError::CursorAhead { .. }) => StatusCode::BAD_REQUEST,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AppError::Bus(BusError::TopicLimit { .. }) | AppError::JobLimit(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            AppError::Bus(BusError::Unavailable(_)) | AppError::SpoolFull(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AppError::Queue(e) => match e {
                QueueError::QueueLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
                QueueError::QueueFull { .. }
                | QueueError::Unavailable(_)
                | QueueError::SpoolFull(_) => StatusCode::SERVICE_UNAVAILABLE,
                QueueError::UnknownJob { .. } => StatusCode::NOT_FOUND,
                QueueError::JobLost { .. } => StatusCode::GONE,
                QueueError::BadLease { .. } => StatusCode::BAD_REQUEST,
                QueueError::LeaseMismatch { .. } => StatusCode::CONFLICT,
            },
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let reason = self.reason();
        let body = ErrorBody {
            error: reason.label(),
            detail: self.to_string(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            // A broker outage or a full spool passes; tell clients when to try again.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // The rejection-counting middleware reads this to count by reason without parsing bodies.
        response.extensions_mut().insert(reason);
        response
    }
}

/// The JSON error body as bytes, for places that write raw responses or WebSocket messages.
pub fn error_json(reason: RejectReason, detail: &str) -> String {
    serde_json::json!({ "type": "error", "error": reason.label(), "detail": detail }).to_string()
}
