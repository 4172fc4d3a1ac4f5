//! SSE by a profile's template: one held stream per client on the section's URL; every dispatched
//! frame's `data` is searched for stamps. On a dropped stream the client reconnects, sending the
//! last `id:` it saw as `Last-Event-ID` (unless the section says not to).

use crate::http_stream::StreamResponse;
use commbench_servers::event_stream::Parser;

use super::{header_refs, no_section, values, ClientCtx};
use crate::{
    clients::{
        sse_stream::{self, read_chunk},
        stream_feed::{self, Arrival, Flow, StreamProtocol},
        Accounting,
    },
    http::ClientError,
    profile::PatternSpec,
};

/// Largest SSE frame accepted before the stream is treated as broken.
const MAX_FRAME: usize = 4 << 20;

struct TemplateSse {
    path: String,
    headers: Vec<(String, String)>,
    last_event_id: bool,
    /// The last `id:` the server sent (a browser's last event ID).
    last_id: Option<String>,
    accounting: Accounting,
}

struct Stream {
    body: StreamResponse,
    parser: Parser,
}

impl StreamProtocol for TemplateSse {
    type Stream = Stream;
    type Item = ();
    const UNCONFIRMED: &'static str = "stream ended before it opened";

    fn accounting(&self) -> Accounting {
        self.accounting
    }

    async fn open(
        &mut self,
        ctx: &ClientCtx,
        _cursor: Option<u64>,
    ) -> Result<(Stream, Option<u64>), ClientError> {
        let mut headers = vec![("accept", "text/event-stream")];
        headers.extend(header_refs(&self.headers));
        if let Some(id) = self.last_id.as_deref().filter(|_| self.last_event_id) {
            headers.push(("last-event-id", id));
        }
        let body = sse_stream::open(ctx, &self.path, &headers).await?;
        // Subscribed once the response has begun.
        Ok((
            Stream {
                body,
                parser: Parser::new(MAX_FRAME),
            },
            Some(0),
        ))
    }

    async fn read(stream: &mut Stream, ctx: &ClientCtx) -> Option<()> {
        read_chunk(&mut stream.body, &mut stream.parser, ctx)
            .await
            .then_some(())
    }

    async fn handle(&mut self, stream: &mut Stream, (): (), arrival: Arrival<'_>) -> Flow {
        while let Some(frame) = stream.parser.next_frame() {
            if let Some(id) = &frame.id {
                self.last_id = Some(id.clone());
            }
            // A comment, a heartbeat or a frame without data dispatches nothing.
            if frame.dispatched_type().is_none() {
                continue;
            }
            if let Some(receiver) = arrival.receiver.as_mut() {
                receiver.message(arrival.ctx, frame.data().as_bytes(), arrival.now_ns);
            }
        }
        Flow::Continue
    }
}

pub async fn run(ctx: ClientCtx) {
    let Some(PatternSpec::Sse(spec)) = ctx.shared.spec() else {
        return no_section(&ctx, "SSE");
    };
    let protocol = TemplateSse {
        path: ctx.target.join(&spec.url.render(&values(&ctx))),
        headers: spec.headers.clone(),
        last_event_id: spec.last_event_id,
        last_id: None,
        accounting: ctx.shared.accounting(),
    };
    stream_feed::run(ctx, protocol).await;
}
