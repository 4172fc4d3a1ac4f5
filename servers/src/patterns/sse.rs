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
use tokio::sync::mpsc;
use tokio_stream::wrappers::{IntervalStream, ReceiverStream};
use tokio_util::sync::CancellationToken;

use crate::{
    app::AppState,
    bus::{Delivery, Subscription},
    error::AppError,
    extract::{ConnCloser, Topic, ValidQuery},
    metrics::{ActiveGuard, PatternKind},
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
    // The queue between the subscription and the socket is the subscriber's buffer: a pump keeps
    // reading the subscription, so a client that stops reading fills the queue (not the shared
    // channel) and is cut off when it is full.
    let (queue, frames) = mpsc::channel::<Bytes>(state.config.subscriber_buffer);
    let _ = queue.try_send(hello);
    // Counted from here, so the gauge is up before the client sees `subscribed`.
    let active = state.metrics.active(PatternKind::Sse);
    tokio::spawn(pump(state, subscription, queue, closer, active));
    let body = ReceiverStream::new(frames).map(Ok::<_, Infallible>);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Moves frames from the subscription (and heartbeats) into the client's queue until the client
/// leaves, the server shuts down, or the client falls a full queue behind.
async fn pump(
    state: AppState,
    subscription: Subscription,
    queue: mpsc::Sender<Bytes>,
    closer: Option<CancellationToken>,
    _active: ActiveGuard,
) {
    let metrics = state.metrics.clone();
    let mut ticks = tokio::time::interval(state.config.heartbeat);
    ticks.reset(); // the first tick would otherwise fire at once
    let heartbeats = IntervalStream::new(ticks).map(|_| Frame::Heartbeat);
    let deliveries = subscription
        .map(Frame::Delivery)
        .chain(stream::once(async { Frame::End }));
    let mut frames =
        std::pin::pin!(stream::select(deliveries, heartbeats)
            .take_until(state.shutdown.clone().cancelled_owned()));
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            // The client left (the body was dropped): release the subscription now, not at the
            // next event or heartbeat.
            () = queue.closed() => return,
        };
        let Some(frame) = frame else {
            return;
        };
        let (bytes, sent) = match frame {
            Frame::End => return,
            Frame::Heartbeat => (Bytes::from_static(b": heartbeat\n\n"), Sent::Other),
            Frame::Delivery(Delivery::Event(event)) => (event.sse.clone(), Sent::Event),
            Frame::Delivery(Delivery::Gap(gap)) => (
                Bytes::from(format!(
                    "event: gap\ndata: {{\"after\":{},\"oldest\":{}}}\n\n",
                    gap.after, gap.oldest
                )),
                Sent::Other,
            ),
            Frame::Delivery(Delivery::Lagged { missed }) => (lagged_frame(missed), Sent::Last),
        };
        match (queue.try_send(bytes), sent) {
            (Ok(()), Sent::Event) => metrics.delivered(PatternKind::Sse, 1),
            (Ok(()), Sent::Other) => {}
            (Ok(()), Sent::Last) => {
                metrics.lagged_disconnect(PatternKind::Sse);
                return;
            }
            (Err(mpsc::error::TrySendError::Closed(_)), _) => return,
            (Err(mpsc::error::TrySendError::Full(_)), _) => {
                // The client is a whole buffer behind: hang up (there is no room left to say so).
                metrics.lagged_disconnect(PatternKind::Sse);
                if let Some(closer) = &closer {
                    closer.cancel();
                }
                return;
            }
        }
    }
}

/// What a queued frame means for the counters.
enum Sent {
    Event,
    Other,
    /// The `lagged` notice: the stream ends after it.
    Last,
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
