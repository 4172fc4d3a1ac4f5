//! WebSocket push: one socket per client, `subscribe` to its topic, events arrive as binary frames;
//! on a dropped socket the client reconnects and resubscribes after its cursor.

use tokio_tungstenite::tungstenite::Message;

use super::{
    stream_feed::Arrival,
    ws_conn,
    ws_feed::{self, FeedProtocol, Opened, Step},
    ClientCtx,
};
use crate::wire;

/// commbench's own WebSocket protocol on `/ws`.
struct Plain;

impl FeedProtocol for Plain {
    async fn subscribe(&mut self, ctx: &ClientCtx, cursor: Option<u64>) -> Opened {
        let after = cursor.map_or(String::new(), |c| format!(",\"after\":{c}"));
        // Push subscribers opt out of chat join notices: the benchmark measures event delivery.
        let subscribe = format!(
            "{{\"type\":\"subscribe\",\"topic\":\"{}\",\"joins\":false{after}}}",
            ctx.topic()
        );
        let mut socket = ws_conn::open(ctx, "/ws", None).await?;
        ws_conn::send_text(&mut socket, subscribe).await?;
        // The start cursor comes with the server's `subscribed` notice.
        Ok((socket, None))
    }

    fn message(&mut self, message: Message, mut arrival: Arrival<'_>) -> Step {
        let ctx = arrival.ctx;
        match message {
            Message::Binary(bytes) => match (wire::event(&bytes), arrival.receiver.as_mut()) {
                (Some(event), Some(receiver)) => {
                    receiver.event(ctx, event.seq, event.data.as_deref(), arrival.now_ns)
                }
                _ => ctx.recorder().counters.error("bad_event"),
            },
            Message::Text(text) => {
                let Some(notice) = wire::ws_notice(&text) else {
                    ctx.recorder().counters.error("bad_notice");
                    return Step::Continue;
                };
                match (notice.kind, arrival.receiver.as_mut()) {
                    ("subscribed", _) => arrival.subscribed(notice.after.unwrap_or(0)),
                    ("gap", Some(receiver)) => receiver.gap(notice.oldest.unwrap_or(0)),
                    ("error", _) => ctx
                        .recorder()
                        .counters
                        .error(format!("ws_{}", notice.error.unwrap_or("error"))),
                    _ => {}
                }
            }
            _ => {}
        }
        Step::Continue
    }
}

pub async fn run(ctx: ClientCtx) {
    ws_feed::run(ctx, Plain).await;
}
