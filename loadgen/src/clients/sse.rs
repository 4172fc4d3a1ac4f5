//! SSE: one held `GET /sse/{topic}` per client. The `subscribed` event gives the start cursor; on a
//! dropped stream the client reconnects with `Last-Event-ID`, so loss is only what the server lost.

use bytes::Bytes;
use http::Method;
use hyper::body::Incoming;

use super::{
    after_stream_end,
    sse_parse::{read_chunk, SseParser},
    AfterEnd, ClientCtx, FeedReceiver, Phase,
};
use crate::{
    http::{ClientError, HttpConn},
    record::Metric,
    wire,
};

/// Largest SSE frame accepted before the stream is treated as broken.
const MAX_FRAME: usize = 4 << 20;

/// Opens the stream (resuming after `cursor` when given) and returns its body.
pub(super) async fn open_stream(
    ctx: &ClientCtx,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Incoming, ClientError> {
    let started = ctx.now_ns();
    let mut conn = HttpConn::open(&ctx.target, ctx.source, &ctx.shared.recorder).await?;
    let response = conn.send(Method::GET, path, headers, Bytes::new()).await?;
    if !response.status().is_success() {
        return Err(ClientError::Status(response.status()));
    }
    let micros = ctx.now_ns().saturating_sub(started) / 1_000;
    ctx.recorder().record(ctx.id, Metric::Connect, micros);
    Ok(response.into_body())
}

pub async fn run(ctx: ClientCtx) {
    let path = format!("/sse/{}", ctx.topic());
    let mut receiver: Option<FeedReceiver> = None;
    let mut reconnects = 0;
    let mut stop = std::pin::pin!(ctx.reached(Phase::Stop));
    let mut drain = std::pin::pin!(ctx.reached(Phase::Drain));
    let mut draining = false;
    'connection: loop {
        let cursor = receiver.as_ref().map(|r| r.cursor().to_string());
        let mut headers = vec![("accept", "text/event-stream")];
        if let Some(cursor) = cursor.as_deref() {
            headers.push(("last-event-id", cursor));
        }
        let mut body = match open_stream(&ctx, &path, &headers).await {
            Ok(body) => body,
            Err(error) if receiver.is_none() => return ctx.mark_failed(&error),
            Err(error) => {
                ctx.error(&error);
                break 'connection;
            }
        };
        let mut parser = SseParser::new(MAX_FRAME);
        loop {
            let more = tokio::select! {
                more = read_chunk(&mut body, &mut parser, &ctx) => more,
                () = &mut stop => break 'connection,
                () = &mut drain, if !draining => {
                    draining = true;
                    if receiver.as_ref().is_some_and(|r| r.done(&ctx)) {
                        break 'connection;
                    }
                    continue;
                }
            };
            if !more {
                break;
            }
            let now = ctx.now_ns();
            while let Some(frame) = parser.next_frame() {
                match (frame.event.as_deref(), &mut receiver) {
                    (Some("subscribed"), None) => {
                        let after = wire::ws_notice(&frame.data)
                            .and_then(|n| n.after)
                            .unwrap_or(0);
                        receiver = Some(FeedReceiver::new(after));
                        ctx.mark_ready();
                    }
                    (Some("gap"), Some(receiver)) => {
                        if let Some(gap) = wire::ws_notice(&frame.data).and_then(|n| n.oldest) {
                            receiver.gap(gap);
                        }
                    }
                    (Some("lagged"), _) => ctx.recorder().counters.error("lagged_disconnect"),
                    (None, Some(receiver)) if frame.id.is_some() => {
                        match wire::event(frame.data.as_bytes()) {
                            Some(event) => {
                                receiver.event(&ctx, event.seq, event.data.as_deref(), now)
                            }
                            None => ctx.recorder().counters.error("bad_event"),
                        }
                    }
                    _ => {}
                }
            }
            if draining && receiver.as_ref().is_some_and(|r| r.done(&ctx)) {
                break 'connection;
            }
        }
        match after_stream_end(&ctx, receiver.as_ref(), &mut reconnects).await {
            AfterEnd::Reconnect => {}
            AfterEnd::Finish => break,
            AfterEnd::NeverSubscribed => {
                return ctx.mark_failed(&ClientError::Protocol(
                    "stream ended before `subscribed`".into(),
                ))
            }
        }
    }
    if let Some(receiver) = receiver {
        receiver.finish(&ctx);
    }
}
