//! What every WebSocket session (`/ws`, `/graphql/ws`, `/socket.io/`) does with the outcome of one
//! input ([`Step`]): queue a frame — together with every further one already waiting, written in one
//! go — or close with a code; which close a read error deserves; and the text of a client message.

use std::task::{Context, Poll};

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::{
    metrics::{Metrics, RejectReason},
    ws_conn::WsConn,
};

/// What a WebSocket session does after handling one input.
pub enum Step {
    /// Write this complete frame ([`crate::ws_conn::frame`], or an event's shared frame).
    Send(Bytes),
    Nothing,
    Close(u16, String),
    /// The client left: nothing more to send.
    Gone,
}

impl Step {
    /// A text message.
    pub fn text(text: impl AsRef<[u8]>) -> Self {
        Step::Send(crate::ws_conn::frame(crate::ws_conn::TEXT, text.as_ref()))
    }
}

/// Most steps written together.
const BATCH: usize = 64;

/// Carries out `step` and every step `ready` has without waiting (events already delivered to the
/// session's mailboxes), writing their frames together; false when the session is over. A client
/// that stops reading longer than `--send-timeout` is dropped (counted by the connection). A close
/// writes what came before it, then lingers for the client's answer (see [`WsConn::close`]).
pub async fn perform(
    conn: &mut WsConn,
    mut step: Step,
    mut ready: impl FnMut(&mut Context<'_>) -> Option<Step>,
) -> bool {
    let mut taken = 0;
    loop {
        match step {
            Step::Send(frame) => conn.queue(frame),
            Step::Nothing => {}
            Step::Close(code, reason) => {
                conn.close(code, &reason).await;
                return false;
            }
            Step::Gone => return false,
        }
        taken += 1;
        if taken == BATCH {
            break;
        }
        // Polled with the task's own waker, so nothing is missed when none is ready.
        match std::future::poll_fn(|cx| Poll::Ready(ready(cx))).await {
            Some(next) => step = next,
            None => break,
        }
    }
    conn.flush().await.is_ok()
}

/// No further steps without waiting.
pub fn none(_: &mut Context<'_>) -> Option<Step> {
    None
}

/// Sorts a received frame: the text of a text message, or the step every session takes for the
/// rest — nothing for pings, the end when the client closed or left, 1003 for a binary message
/// (`binary` tells the client what to send instead; counted), the close a read error deserves.
pub fn text_or_step(
    message: Option<Result<Message, tungstenite::Error>>,
    max_body: usize,
    metrics: &Metrics,
    binary: &str,
) -> Result<Utf8Bytes, Step> {
    match message {
        Some(Ok(Message::Text(text))) => Ok(text),
        None | Some(Ok(Message::Close(_))) => Err(Step::Gone),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Err(Step::Nothing),
        Some(Ok(Message::Binary(_))) => {
            metrics.rejected(RejectReason::BadMessage);
            Err(Step::Close(1003, binary.to_owned()))
        }
        Some(Err(error)) => Err(match close_for_read_error(error, max_body, metrics) {
            Some((code, reason)) => Step::Close(code, reason),
            None => Step::Gone,
        }),
    }
}

/// The close code and reason for a failed read (counted), or `None` when the client simply left.
pub fn close_for_read_error(
    error: tungstenite::Error,
    max_body: usize,
    metrics: &Metrics,
) -> Option<(u16, String)> {
    match error {
        tungstenite::Error::Capacity(_) => {
            metrics.rejected(RejectReason::MessageTooLarge);
            Some((1009, format!("message exceeds the {max_body}-byte limit")))
        }
        tungstenite::Error::Utf8(_) => {
            metrics.rejected(RejectReason::BadMessage);
            Some((1007, "text message is not valid UTF-8".into()))
        }
        tungstenite::Error::Protocol(problem) => {
            metrics.rejected(RejectReason::BadMessage);
            Some((1002, format!("protocol error: {problem}")))
        }
        _ => None,
    }
}
