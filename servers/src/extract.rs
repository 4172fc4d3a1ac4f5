//! Request extractors whose rejections become [`AppError`]s, so malformed input always gets the
//! documented JSON error instead of axum's plain-text defaults.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;

use crate::{app::AppState, error::AppError, topic::TopicName};

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

/// The raw request body, bounded by the server's body limit (413 beyond it, at once when the
/// declared `Content-Length` already says so) and by `--body-timeout` (408 when it stalls).
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, AppError> {
        let limit = state.config.max_body;
        // Without this a declared 1 TB body with a few bytes sent would wait for limit + 1 bytes.
        if declared_length(&request).is_some_and(|length| length > limit as u64) {
            return Err(AppError::PayloadTooLarge { limit });
        }
        let timeout = state.config.body_timeout;
        match tokio::time::timeout(timeout, Bytes::from_request(request, state)).await {
            Err(_) => Err(AppError::BodyTimeout(timeout)),
            Ok(read) => read.map(Body).map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit },
                _ => AppError::BadBody(e.body_text()),
            }),
        }
    }
}

/// The `Content-Length` a request declares (hyper has already refused malformed ones).
fn declared_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Parses a JSON body or message that must be one object into `T`. serde's derived structs and
/// tagged enums also accept a JSON array, filling fields by position (`["premium", 5]` would be a
/// job in the premium lane); no route documents that, so anything but an object is refused first.
pub fn json_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.trim_ascii_start().first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
        Some(_) => Err(format!(
            "expected a JSON object, got {}",
            json_kind(bytes.trim_ascii_start())
        )),
        None => Err("expected a JSON object, got an empty body".into()),
    }
}

/// What a JSON text starts as, for error messages.
fn json_kind(text: &[u8]) -> &'static str {
    match text.first() {
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "something that is not JSON",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Pair {
        lane: String,
        work_ms: u64,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(tag = "type")]
    #[allow(dead_code)]
    enum Tagged {
        #[serde(rename = "a")]
        A { x: u64 },
    }

    #[test]
    fn only_objects_are_accepted() {
        // What serde alone would take: positional arrays for structs and tagged enums.
        assert!(serde_json::from_str::<Pair>(r#"["premium", 5]"#).is_ok());
        assert!(serde_json::from_str::<Tagged>(r#"["a", 5]"#).is_ok());

        assert!(json_object::<Pair>(br#" {"lane":"premium","work_ms":5}"#).is_ok());
        for (bad, kind) in [
            (&br#"["premium", 5]"#[..], "an array"),
            (b"[]", "an array"),
            (b" \"x\"", "a string"),
            (b"5", "a number"),
            (b"null", "null"),
            (b"", "an empty body"),
        ] {
            let error = json_object::<Pair>(bad).err().unwrap_or_default();
            assert!(error.contains(kind), "{bad:?}: {error}");
        }
        assert!(json_object::<Tagged>(br#"["a", 5]"#).is_err());
    }
}
