//! Request extractors whose rejections become [`AppError`]s, so malformed input always gets the
//! documented JSON error instead of axum's plain-text defaults.

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request},
    http::{request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;

use tokio_util::sync::CancellationToken;

use crate::{app::AppState, error::AppError, listener::ConnInfo, topic::TopicName};

/// The `{topic}` path segment, validated.
pub struct Topic(pub TopicName);

impl<S: Send + Sync> FromRequestParts<S> for Topic {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let ValidPath(raw) = ValidPath::<String>::from_request_parts(parts, state).await?;
        Ok(Topic(TopicName::parse(&raw)?))
    }
}

/// A path parameter that must deserialize into `T` (undecodable or mistyped → JSON 400).
pub struct ValidPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ValidPath<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::BadQuery(e.body_text()))?;
        Ok(ValidPath(value))
    }
}

/// The switch that aborts this request's connection, when the server was started through `run`.
pub struct ConnCloser(pub Option<CancellationToken>);

impl<S: Send + Sync> FromRequestParts<S> for ConnCloser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let info = parts.extensions.get::<ConnectInfo<ConnInfo>>();
        Ok(ConnCloser(info.map(|i| i.0.closer.clone())))
    }
}

/// A query string that must deserialize into `T`; the error names the offending parameter.
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| AppError::BadQuery(e.body_text()))?;
        Ok(ValidQuery(value))
    }
}

/// The raw request body, bounded by the server's body limit (413 beyond it).
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, AppError> {
        let limit = state.config.max_body;
        Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit },
                _ => AppError::BadBody(e.body_text()),
            })
    }
}
