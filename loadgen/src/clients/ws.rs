//! WebSocket push: one socket per client, `subscribe` to its topic, events arrive as binary frames;
//! on a dropped socket the client reconnects and resubscribes after its cursor.

use tokio_tungstenite::tungstenite::Message;

use super::{after_stream_end, ws_conn, AfterEnd, ClientCtx, FeedReceiver, Phase};
use crate::{http::ClientError, wire};

pub async fn run(ctx: ClientCtx) {
    let mut receiver: Option<FeedReceiver> = None;
    let mut reconnects = 0;
    let mut stop = std::pin::pin!(ctx.reached(Phase::Stop));
    let mut drain = std::pin::pin!(ctx.reached(Phase::Drain));
    let mut draining = false;
    'connection: loop {
        let after = receiver
            .as_ref()
            .map_or(String::new(), |r| format!(",\"after\":{}", r.cursor()));
        // Push subscribers opt out of chat join notices: the benchmark measures event delivery.
        let subscribe = format!(
            "{{\"type\":\"subscribe\",\"topic\":\"{}\",\"joins\":false{after}}}",
            ctx.topic()
        );
        let opened = async {
            let mut socket = ws_conn::open(&ctx, "/ws").await?;
            ws_conn::send_text(&mut socket, subscribe).await?;
            Ok::<_, ClientError>(socket)
        };
        let mut socket = match opened.await {
            Ok(socket) => socket,
            Err(error) if receiver.is_none() => return ctx.mark_failed(&error),
            Err(error) => {
                ctx.error(&error);
                break;
            }
        };
        loop {
            let message = tokio::select! {
                message = ws_conn::next(&mut socket) => message,
                () = &mut stop => break 'connection,
                () = &mut drain, if !draining => {
                    draining = true;
                    if receiver.as_ref().is_some_and(|r| r.done(&ctx)) {
                        break 'connection;
                    }
                    continue;
                }
            };
            let now = ctx.now_ns();
            match message {
                Some(Ok(Message::Binary(bytes))) => match (wire::event(&bytes), &mut receiver) {
                    (Some(event), Some(receiver)) => {
                        receiver.event(&ctx, event.seq, event.data.as_deref(), now)
                    }
                    _ => ctx.recorder().counters.error("bad_event"),
                },
                Some(Ok(Message::Text(text))) => {
                    let Some(notice) = wire::ws_notice(&text) else {
                        ctx.recorder().counters.error("bad_notice");
                        continue;
                    };
                    match (notice.kind, &mut receiver) {
                        ("subscribed", None) => {
                            receiver = Some(FeedReceiver::new(notice.after.unwrap_or(0)));
                            ctx.mark_ready();
                        }
                        ("gap", Some(receiver)) => receiver.gap(notice.oldest.unwrap_or(0)),
                        ("error", _) => ctx
                            .recorder()
                            .counters
                            .error(format!("ws_{}", notice.error.unwrap_or("error"))),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        ctx.recorder()
                            .counters
                            .error(format!("ws_close_{}", u16::from(frame.code)));
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    ctx.error(&error);
                    break;
                }
                None => break,
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
                    "socket closed before `subscribed`".into(),
                ))
            }
        }
    }
    if let Some(receiver) = receiver {
        receiver.finish(&ctx);
    }
}
