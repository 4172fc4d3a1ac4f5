//! Generic WebSocket against anyone's server: connect to the target URL, optionally send
//! `--ws-message` once, and record the time between messages (inter-arrival), bytes and errors.

use std::sync::atomic::Ordering::Relaxed;

use tokio_tungstenite::tungstenite::Message;

use super::{ws_conn, ClientCtx, Phase};
use crate::record::Metric;

pub async fn run(ctx: ClientCtx) {
    let path = ctx.target.path.clone();
    let mut socket = match ws_conn::open(&ctx, &path, None).await {
        Ok(socket) => socket,
        Err(error) => return ctx.mark_failed(&error),
    };
    if let Some(message) = ctx.shared.scenario.ws_message.clone() {
        if let Err(error) = ws_conn::send_text(&mut socket, message).await {
            return ctx.mark_failed(&error);
        }
    }
    ctx.mark_ready();
    let mut stop = std::pin::pin!(ctx.reached(Phase::Drain));
    let mut last: Option<u64> = None;
    loop {
        let message = tokio::select! {
            message = ws_conn::next(&mut socket) => message,
            () = &mut stop => return,
        };
        let now = ctx.now_ns();
        match message {
            Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                ctx.recorder()
                    .counters
                    .events_received
                    .fetch_add(1, Relaxed);
                if let Some(previous) = last.filter(|p| ctx.shared.in_window(*p)) {
                    ctx.recorder()
                        .record(ctx.id, Metric::InterArrival, (now - previous) / 1_000);
                }
                last = Some(now);
            }
            Some(Ok(Message::Close(_))) | None => return,
            Some(Ok(_)) => {}
            Some(Err(error)) => return ctx.error(&error),
        }
    }
}
