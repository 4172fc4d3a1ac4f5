//! Server-sent events: `GET /sse/{topic}` streams `id: {seq}` / `data: {event json}` frames, resumes
//! from `Last-Event-ID` or `?after=`, announces gaps, sends comment heartbeats, and ends the stream of
//! a subscriber that falls too far behind.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::State,
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::{
    app::AppState,
    bus::{Delivery, Subscription},
    error::AppError,
    extract::{ConnCloser, Topic, ValidQuery},
    metrics::{ActiveGuard, Metrics, PatternKind},
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

async fn sse(
    State(state): State<AppState>,
    Topic(topic): Topic,
    ValidQuery(query): ValidQuery<SseQuery>,
    ConnCloser(closer): ConnCloser,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::Sse);
    let after = resume_cursor(&headers, query.after)?;
    let subscription = state.bus.subscribe(&topic, after).await?;
    let hello = Bytes::from(format!(
        "retry: 1000\nevent: subscribed\ndata: {{\"topic\":\"{topic}\",\"after\":{},\"head\":{}}}\n\n",
        subscription.after, subscription.head
    ));
    // A client that stops reading falls behind in its mailbox; a full one cuts the connection at
    // once, from the publishing side (there is no room left to say why).
    let metrics = state.metrics.clone();
    let subscription = subscription.on_overflow(
        state.config.subscriber_buffer,
        Box::new(move || {
            metrics.lagged_disconnect(PatternKind::Sse);
            if let Some(closer) = closer {
                closer.close();
            }
        }),
    );
    // Counted from here, so the gauge is up before the client sees `subscribed`.
    let active = state.metrics.active(PatternKind::Sse);
    let mut heartbeat = tokio::time::interval(state.config.heartbeat);
    heartbeat.reset(); // the first tick would otherwise fire at once
    let body = Stream {
        hello: Some(hello),
        subscription,
        heartbeat,
        shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
        metrics: state.metrics.clone(),
        _active: active,
        ended: false,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::new(body),
    )
        .into_response())
}

/// The response body: the `subscribed` frame, then the subscription's frames and heartbeats, read
/// by the connection's own task as it writes (one wake-up per burst of events), until the
/// subscription or the server ends.
struct Stream {
    hello: Option<Bytes>,
    subscription: Subscription,
    heartbeat: tokio::time::Interval,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    metrics: Arc<Metrics>,
    _active: ActiveGuard,
    ended: bool,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(hello) = this.hello.take() {
            return data(hello);
        }
        match this.subscription.poll_next_unpin(cx) {
            Poll::Ready(Some(Delivery::Event(event))) => {
                this.metrics.delivered(PatternKind::Sse, 1);
                return data(event.sse.clone());
            }
            Poll::Ready(Some(Delivery::Gap(gap))) => {
                return data(Bytes::from(format!(
                    "event: gap\ndata: {{\"after\":{},\"oldest\":{}}}\n\n",
                    gap.after, gap.oldest
                )));
            }
            Poll::Ready(Some(Delivery::Lagged { missed })) => {
                this.metrics.lagged_disconnect(PatternKind::Sse);
                this.ended = true;
                return data(lagged_frame(missed));
            }
            Poll::Ready(None) => {
                this.ended = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        // Looked at only when nothing is queued: once per wake-up, not once per event.
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.ended = true;
            return Poll::Ready(None);
        }
        if this.heartbeat.poll_tick(cx).is_ready() {
            return data(Bytes::from_static(b": heartbeat\n\n"));
        }
        Poll::Pending
    }
}

fn data(bytes: Bytes) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
    Poll::Ready(Some(Ok(http_body::Frame::data(bytes))))
}

fn lagged_frame(missed: u64) -> Bytes {
    Bytes::from(format!(
        "event: lagged\ndata: {{\"missed\":{missed},\"detail\":\"subscriber fell too far behind; reconnect with Last-Event-ID\"}}\n\n"
    ))
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
