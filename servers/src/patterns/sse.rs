//! Server-sent events: `GET /sse/{topic}` streams `id: {seq}` / `data: {event json}` frames, resumes
//! from `Last-Event-ID` or `?after=`, announces gaps, sends comment heartbeats, and ends the stream of
//! a subscriber that falls too far behind. hyper writes the response head; the stream itself is
//! written by its own task on the socket hyper hands over (`handover.rs`), framed as hyper would.

use std::{
    future::{poll_fn, Future},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, State},
    http::{header, HeaderMap, Version},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncWriteExt, ReadBuf},
    sync::oneshot,
};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::{
    app::AppState,
    bus::{Delivery, Subscription},
    error::AppError,
    extract::{Topic, ValidQuery},
    handover::{Detached, Framing, LAST_CHUNK},
    listener::{ConnInfo, CountedStream},
    metrics::{ActiveGuard, Metrics, PatternKind},
    vectored::write_all,
};

/// Frames written together at most: what one wake-up drains from the subscription.
const BATCH: usize = 64;

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
    ConnectInfo(conn): ConnectInfo<Arc<ConnInfo>>,
    version: Version,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    state.metrics.request(PatternKind::Sse);
    let after = resume_cursor(&headers, query.after)?;
    let subscription = state.bus.subscribe(&topic, after).await?;
    // Asked for after every refusal: an error answer keeps its connection.
    let (socket, body) = conn.handover.request();
    let framing = Framing::of(version);
    let hello = framing.frame(
        format!(
            "retry: 1000\nevent: subscribed\ndata: {{\"topic\":\"{topic}\",\"after\":{},\"head\":{}}}\n\n",
            subscription.after, subscription.head
        )
        .as_bytes(),
    );
    // A client that stops reading falls behind in its mailbox; a full one cuts the connection at
    // once, from the publishing side (there is no room left to say why).
    let metrics = state.metrics.clone();
    let closer = conn.closer.clone();
    let subscription = subscription.on_overflow(
        state.config.subscriber_buffer,
        Box::new(move || {
            metrics.lagged_disconnect(PatternKind::Sse);
            closer.close();
        }),
    );
    // Counted from here, so the gauge is up before the client sees `subscribed`.
    let active = state.metrics.active(PatternKind::Sse);
    let mut heartbeat = tokio::time::interval(state.config.heartbeat);
    heartbeat.reset(); // the first tick would otherwise fire at once
    let stream = Stream {
        queued: vec![hello],
        subscription,
        heartbeat,
        shutdown: Box::pin(state.shutdown.clone().cancelled_owned()),
        metrics: state.metrics.clone(),
        framing,
        _active: active,
    };
    tokio::spawn(stream.run(socket, conn, state.config.send_timeout));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::new(body),
    )
        .into_response())
}

/// One stream on its handed-over socket: the `subscribed` frame, then the subscription's frames
/// and heartbeats, until the subscription, the client or the server ends.
struct Stream {
    /// Frames to write next, framed for the connection.
    queued: Vec<Bytes>,
    subscription: Subscription,
    heartbeat: tokio::time::Interval,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    metrics: Arc<Metrics>,
    framing: Framing,
    _active: ActiveGuard,
}

/// What comes after writing what is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    More,
    /// The stream is over: end the body and close.
    End,
    /// The client is gone (or the connection was cut): nothing more to write.
    Gone,
}

impl Stream {
    async fn run(
        mut self,
        socket: oneshot::Receiver<Detached<CountedStream>>,
        conn: Arc<ConnInfo>,
        send_timeout: std::time::Duration,
    ) {
        // No socket: hyper dropped the answer (a HEAD request, or a client gone before its head).
        let Ok(Detached { mut io, tenure }) = socket.await else {
            return;
        };
        // The socket's idle and head deadlines stay away for good, as for a WebSocket.
        conn.activity.upgrade();
        loop {
            let then = poll_fn(|cx| self.poll_next_batch(cx, &mut io)).await;
            if write_all(&mut io, &self.queued).await.is_err() {
                return;
            }
            self.queued.clear();
            match then {
                Then::More => {}
                Then::End => break,
                Then::Gone => return,
            }
        }
        // The end of the body, as hyper writes it, then the close hyper would have made at
        // shutdown; a client that does not take them within the send timeout is left.
        let framing = self.framing;
        drop(self);
        let _ = tokio::time::timeout(send_timeout, async {
            if framing == Framing::Chunked {
                write_all(&mut io, &[Bytes::from_static(LAST_CHUNK)]).await?;
            }
            io.shutdown().await
        })
        .await;
        drop(tenure);
    }

    /// Queues what is ready (up to [`BATCH`] frames) and says what follows; pending while there is
    /// nothing to write.
    fn poll_next_batch(&mut self, cx: &mut Context<'_>, io: &mut CountedStream) -> Poll<Then> {
        while self.queued.len() < BATCH {
            match self.subscription.poll_next_unpin(cx) {
                Poll::Ready(Some(Delivery::Event(event))) => {
                    self.metrics.delivered(PatternKind::Sse, 1);
                    self.queued.push(match self.framing {
                        Framing::Chunked => event.sse_chunk().clone(),
                        Framing::ToClose => event.sse.clone(),
                    });
                }
                Poll::Ready(Some(Delivery::Gap(gap))) => {
                    let frame = format!(
                        "event: gap\ndata: {{\"after\":{},\"oldest\":{}}}\n\n",
                        gap.after, gap.oldest
                    );
                    self.queued.push(self.framing.frame(frame.as_bytes()));
                }
                Poll::Ready(Some(Delivery::Lagged { missed })) => {
                    self.metrics.lagged_disconnect(PatternKind::Sse);
                    self.queued
                        .push(self.framing.frame(lagged_frame(missed).as_bytes()));
                    return Poll::Ready(Then::End);
                }
                Poll::Ready(None) => return Poll::Ready(Then::End),
                Poll::Pending => break,
            }
        }
        if !self.queued.is_empty() {
            return Poll::Ready(Then::More);
        }
        // Looked at only when nothing is queued: once per wake-up, not once per event.
        if self.shutdown.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Then::End);
        }
        if self.heartbeat.poll_tick(cx).is_ready() {
            self.queued.push(self.framing.frame(b": heartbeat\n\n"));
            return Poll::Ready(Then::More);
        }
        // The client's side: its close (or the connection's cutting) ends the stream; anything it
        // sends meanwhile is read and dropped, as a stream takes no requests.
        let mut scratch = [0u8; 256];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Then::Gone),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(Then::Gone),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn lagged_frame(missed: u64) -> String {
    format!(
        "event: lagged\ndata: {{\"missed\":{missed},\"detail\":\"subscriber fell too far behind; reconnect with Last-Event-ID\"}}\n\n"
    )
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
