//! SSE: one held `GET /sse/{topic}` per client. The `subscribed` event gives the start cursor; on a
//! dropped stream the client reconnects with `Last-Event-ID`, so loss is only what the server lost.

use commbench_servers::event_stream::Parser;

use super::{
    after_stream_end,
    sse_stream::{self, read_chunk},
    AfterEnd, ClientCtx, FeedReceiver, Phase,
};
use crate::{http::ClientError, wire};

/// Largest SSE frame accepted before the stream is treated as broken.
const MAX_FRAME: usize = 4 << 20;

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
        let mut body = match sse_stream::open(&ctx, &path, &headers).await {
            Ok(body) => body,
            Err(error) if receiver.is_none() => return ctx.mark_failed(&error),
            Err(error) => {
                ctx.error(&error);
                break 'connection;
            }
        };
        let mut parser = Parser::new(MAX_FRAME);
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
                match (frame.dispatched_type(), &mut receiver) {
                    (Some("subscribed"), None) => {
                        let after = wire::ws_notice(frame.data())
                            .and_then(|n| n.after)
                            .unwrap_or(0);
                        receiver = Some(FeedReceiver::new(after));
                        ctx.mark_ready();
                    }
                    (Some("gap"), Some(receiver)) => {
                        if let Some(gap) = wire::ws_notice(frame.data()).and_then(|n| n.oldest) {
                            receiver.gap(gap);
                        }
                    }
                    (Some("lagged"), _) => ctx.recorder().counters.error("lagged_disconnect"),
                    (Some("message"), Some(receiver)) => {
                        match wire::event(frame.data().as_bytes()) {
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
