//! The one WebSocket feed loop, shared by the plain WebSocket and GraphQL subscription clients:
//! subscribe, hand every message to the protocol, resubscribe after the cursor on a new socket when
//! the stream ends, and close the books.

use std::future::Future;

use tokio_tungstenite::tungstenite::Message;

use super::{
    after_stream_end,
    ws_conn::{self, Socket},
    AfterEnd, ClientCtx, FeedReceiver, Phase,
};
use crate::http::ClientError;

/// What the loop does after a message.
pub enum Step {
    Continue,
    /// The server confirmed the subscription after this cursor (the client's start, the first time).
    Subscribed(u64),
    /// Send this text back (a protocol-level pong).
    Reply(String),
    /// The server ended the subscription: resubscribe after the cursor.
    End,
}

/// How one WebSocket protocol subscribes and reads its messages.
pub trait FeedProtocol: Send {
    /// Opens a socket subscribed to the client's topic after `cursor` (`None`: the first time).
    /// Returns the cursor the subscription starts after when it is known without a server notice.
    fn subscribe(
        &mut self,
        ctx: &ClientCtx,
        cursor: Option<u64>,
    ) -> impl Future<Output = Result<(Socket, Option<u64>), ClientError>> + Send;

    /// Handles a data message (not a close); `receiver` is `None` until the subscription is
    /// confirmed.
    fn message(
        &mut self,
        ctx: &ClientCtx,
        message: Message,
        receiver: Option<&mut FeedReceiver>,
        now_ns: u64,
    ) -> Step;
}

/// Runs one feed client over `protocol` until the run stops or the client has everything.
pub async fn run(ctx: ClientCtx, mut protocol: impl FeedProtocol) {
    let mut receiver: Option<FeedReceiver> = None;
    let mut reconnects = 0;
    let mut stop = std::pin::pin!(ctx.reached(Phase::Stop));
    let mut drain = std::pin::pin!(ctx.reached(Phase::Drain));
    let mut draining = false;
    'connection: loop {
        let cursor = receiver.as_ref().map(FeedReceiver::cursor);
        let mut socket = match protocol.subscribe(&ctx, cursor).await {
            Ok((socket, confirmed)) => {
                if let Some(after) = confirmed {
                    subscribed(&ctx, &mut receiver, after);
                }
                socket
            }
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
                Some(Ok(Message::Close(frame))) => {
                    if let Some(frame) = frame {
                        ctx.recorder()
                            .counters
                            .error(format!("ws_close_{}", u16::from(frame.code)));
                    }
                    break;
                }
                Some(Ok(message)) => {
                    match protocol.message(&ctx, message, receiver.as_mut(), now) {
                        Step::Continue => {}
                        Step::Subscribed(after) => subscribed(&ctx, &mut receiver, after),
                        Step::Reply(text) => {
                            if let Err(error) = ws_conn::send_text(&mut socket, text).await {
                                ctx.error(&error);
                                break;
                            }
                        }
                        Step::End => break,
                    }
                }
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
                    "socket closed before the subscription was confirmed".into(),
                ))
            }
        }
    }
    if let Some(receiver) = receiver {
        receiver.finish(&ctx);
    }
}

/// The first confirmation starts the client's books and marks it ready; later ones (after a
/// reconnect) resume the same books.
fn subscribed(ctx: &ClientCtx, receiver: &mut Option<FeedReceiver>, after: u64) {
    if receiver.is_none() {
        *receiver = Some(FeedReceiver::new(after));
        ctx.mark_ready();
    }
}
