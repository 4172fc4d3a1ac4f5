//! SSE: one held `GET /sse/{topic}` per client. The `subscribed` event gives the start cursor; on a
//! dropped stream the client reconnects with `Last-Event-ID`, so loss is only what the server lost.

use crate::http_stream::StreamResponse;
use commbench_servers::event_stream::{Frame, Parser};

use super::{
    sse_stream::{self, read_chunk},
    stream_feed::{self, Arrival, Flow, StreamProtocol},
    ClientCtx,
};
use crate::{http::ClientError, wire};

/// Largest SSE frame accepted before the stream is treated as broken.
const MAX_FRAME: usize = 4 << 20;

/// commbench's event stream on `/sse/{topic}`.
struct Sse {
    path: String,
}

/// An open stream: its body and what has been read of it.
struct Stream {
    body: StreamResponse,
    parser: Parser,
}

impl StreamProtocol for Sse {
    type Stream = Stream;
    /// A body chunk, already in the stream's parser.
    type Item = ();
    const UNCONFIRMED: &'static str = "stream ended before `subscribed`";

    async fn open(
        &mut self,
        ctx: &ClientCtx,
        cursor: Option<u64>,
    ) -> Result<(Stream, Option<u64>), ClientError> {
        let cursor = cursor.map(|c| c.to_string());
        let mut headers = vec![("accept", "text/event-stream")];
        if let Some(cursor) = cursor.as_deref() {
            headers.push(("last-event-id", cursor));
        }
        let body = sse_stream::open(ctx, &self.path, &headers).await?;
        let parser = Parser::new(MAX_FRAME);
        // The start cursor comes with the server's `subscribed` event.
        Ok((Stream { body, parser }, None))
    }

    async fn read(stream: &mut Stream, ctx: &ClientCtx) -> Option<()> {
        read_chunk(&mut stream.body, &mut stream.parser, ctx)
            .await
            .then_some(())
    }

    async fn handle(&mut self, stream: &mut Stream, (): (), mut arrival: Arrival<'_>) -> Flow {
        while let Some(frame) = stream.parser.next_frame() {
            take(&frame, &mut arrival);
        }
        Flow::Continue
    }
}

/// One frame: the subscription notice, a gap, the lagged notice or an event.
fn take(frame: &Frame, arrival: &mut Arrival<'_>) {
    let ctx = arrival.ctx;
    match (frame.dispatched_type(), arrival.receiver.as_mut()) {
        (Some("subscribed"), _) => {
            let after = wire::ws_notice(frame.data()).and_then(|n| n.after);
            arrival.subscribed(after.unwrap_or(0));
        }
        (Some("gap"), Some(receiver)) => {
            if let Some(gap) = wire::ws_notice(frame.data()).and_then(|n| n.oldest) {
                receiver.gap(gap);
            }
        }
        (Some("lagged"), _) => ctx.recorder().counters.error("lagged_disconnect"),
        (Some("message"), Some(receiver)) => match wire::event(frame.data().as_bytes()) {
            Some(event) => receiver.event(ctx, event.seq, event.data.as_deref(), arrival.now_ns),
            None => ctx.recorder().counters.error("bad_event"),
        },
        _ => {}
    }
}

pub async fn run(ctx: ClientCtx) {
    let path = format!("/sse/{}", ctx.topic());
    stream_feed::run(ctx, Sse { path }).await;
}
