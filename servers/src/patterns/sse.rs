//! Server-sent events: `GET /sse/{topic}` streams `id: {seq}` / `data: {event json}` frames, resumes
//! from `Last-Event-ID` or `?after=`, announces gaps, sends comment heartbeats, and ends the stream of
//! a subscriber that falls too far behind.

use std::convert::Infallible;

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::IntervalStream;

use crate::{
    app::AppState,
    bus::Delivery,
    error::AppError,
    extract::{Topic, ValidQuery},
    metrics::PatternKind,
};

pub fn routes(_: &AppState) -> Router<AppState> {
    Router::new().route("/sse/{topic}", get(sse))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SseQuery {
    after: Option<u64>,
}

/// `Last-Event-ID` wins over `?after=` because a reconnecting EventSource repeats its original URL.
fn resume_cursor(headers: &HeaderMap, after: Option<u64>) -> Result<Option<u64>, AppError> {
    match headers.get("last-event-id") {
        None => Ok(after),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| {
                AppError::BadQuery(format!("Last-Event-ID {value:?} is not a sequence number"))
            }),
    }
}

enum Frame {
    Delivery(Delivery),
    Heartbeat,
    /// The subscription ended (after a lag, or the bus closed): end the response.
    End,
}

async fn sse(
    State(state): State<AppState>,
    Topic(topic): Topic,
    ValidQuery(query): ValidQuery<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::Sse);
    let after = resume_cursor(&headers, query.after)?;
    let subscription = state.bus.subscribe(&topic, after).await?;
    let active = state.metrics.active(PatternKind::Sse);
    let hello = Bytes::from(format!(
        "retry: 1000\nevent: subscribed\ndata: {{\"topic\":\"{topic}\",\"after\":{},\"head\":{}}}\n\n",
        subscription.after, subscription.head
    ));

    let mut ticks = tokio::time::interval(state.config.heartbeat);
    ticks.reset(); // the first tick would otherwise fire at once
    let heartbeats = IntervalStream::new(ticks).map(|_| Frame::Heartbeat);
    let deliveries = subscription
        .map(Frame::Delivery)
        .chain(stream::once(async { Frame::End }));
    let metrics = state.metrics.clone();
    let frames = stream::select(deliveries, heartbeats)
        .take_until(state.shutdown.clone().cancelled_owned())
        .scan((), move |(), frame| {
            // Holding the guard here ties the active gauge to the stream's lifetime.
            let _ = &active;
            std::future::ready(Some(match frame {
                Frame::End => return std::future::ready(None),
                Frame::Heartbeat => Bytes::from_static(b": heartbeat\n\n"),
                Frame::Delivery(Delivery::Event(event)) => {
                    metrics.delivered(PatternKind::Sse, 1);
                    event.sse.clone()
                }
                Frame::Delivery(Delivery::Gap(gap)) => Bytes::from(format!(
                    "event: gap\ndata: {{\"after\":{},\"oldest\":{}}}\n\n",
                    gap.after, gap.oldest
                )),
                Frame::Delivery(Delivery::Lagged { missed }) => {
                    metrics.lagged_disconnect(PatternKind::Sse);
                    Bytes::from(format!(
                        "event: lagged\ndata: {{\"missed\":{missed},\"detail\":\"subscriber fell too far behind; reconnect with Last-Event-ID\"}}\n\n"
                    ))
                }
            }))
        });
    let body = stream::once(async move { hello })
        .chain(frames)
        .map(Ok::<_, Infallible>);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn last_event_id_wins_and_must_be_a_number() {
        let mut headers = HeaderMap::new();
        assert_eq!(resume_cursor(&headers, Some(3)).ok(), Some(Some(3)));
        headers.insert("last-event-id", HeaderValue::from_static("7"));
        assert_eq!(resume_cursor(&headers, Some(3)).ok(), Some(Some(7)));
        headers.insert("last-event-id", HeaderValue::from_static("seven"));
        assert!(resume_cursor(&headers, None).is_err());
    }
}
