//! Generic SSE against anyone's server: hold a stream on the target URL and record the time between
//! consecutive events (inter-arrival), bytes and errors; reconnect when it drops.

use std::{sync::atomic::Ordering::Relaxed, time::Duration};

use commbench_servers::event_stream::Parser;

use super::{
    sse_stream::{self, read_chunk},
    ClientCtx, Phase,
};
use crate::record::Metric;

const MAX_FRAME: usize = 4 << 20;

pub async fn run(ctx: ClientCtx) {
    let path = ctx.target.path.clone();
    let mut stop = std::pin::pin!(ctx.reached(Phase::Drain));
    let mut ready = false;
    let mut last_event: Option<u64> = None;
    for attempt in 0u64..10 {
        let headers = [("accept", "text/event-stream")];
        let mut body = match sse_stream::open(&ctx, &path, &headers).await {
            Ok(body) => body,
            Err(error) if !ready => return ctx.mark_failed(&error),
            Err(error) => {
                ctx.error(&error);
                return;
            }
        };
        if !ready {
            ready = true;
            ctx.mark_ready();
        }
        let mut parser = Parser::new(MAX_FRAME);
        loop {
            let more = tokio::select! {
                more = read_chunk(&mut body, &mut parser, &ctx) => more,
                () = &mut stop => return,
            };
            if !more {
                break;
            }
            let now = ctx.now_ns();
            while let Some(frame) = parser.next_frame() {
                if frame.dispatched_type().is_none() {
                    continue; // a comment, a heartbeat, a frame without data
                }
                ctx.recorder()
                    .counters
                    .events_received
                    .fetch_add(1, Relaxed);
                if let Some(previous) = last_event {
                    if ctx.shared.in_window(previous) {
                        ctx.recorder().record(
                            ctx.id,
                            Metric::InterArrival,
                            (now - previous) / 1_000,
                        );
                    }
                }
                last_event = Some(now);
            }
        }
        if ctx.shared.phase() >= Phase::Drain {
            return;
        }
        ctx.recorder().counters.reconnects.fetch_add(1, Relaxed);
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
    }
}
