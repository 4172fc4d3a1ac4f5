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
    #[error("the request body did not arrive within {0:?} (--body-timeout)")]
    BodyTimeout(std::time::Duration),
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
            AppError::BodyTimeout(_) => RejectReason::RequestTimeout,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadTopic(_)
            | AppError::BadQuery(_)
            | AppError::BadBody(_)
            | AppError::Bus(BusError::CursorAhead { .. }) => StatusCode::BAD_REQUEST,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
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
        if let AppError::BodyTimeout(_) = self {
            // The rest of the body may still come; the connection cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // The rejection-counting middleware reads this to count by reason without parsing bodies.
        response.extensions_mut().insert(reason);
        response
    }
}

/// The JSON error message `/ws` sends (`{"type":"error","error","detail"}`).
pub fn error_json(reason: RejectReason, detail: &str) -> String {
    serde_json::json!({ "type": "error", "error": reason.label(), "detail": detail }).to_string()
}

/// A complete HTTP/1.1 error answer with the JSON body that closes the connection, for the places
/// below the router that answer on the raw socket (the connection cap, the header timeout).
pub fn raw_error_response(status_line: &str, reason: RejectReason, detail: &str) -> String {
    let body = serde_json::json!({ "error": reason.label(), "detail": detail }).to_string();
    let retry = if status_line.starts_with("503") {
        "retry-after: 1\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{retry}\r\n{body}",
        body.len()
    )
}
