//! The edges every WebSocket route shares: the upgrade's buffer sizes, which close a read error
//! deserves, carrying out a session's step (sends bounded by the send timeout, a close), and sending
//! a close frame (reason cut to the protocol's 123 bytes) without waiting long for a client that is
//! gone, then lingering for the client's own close so unread data does not reset the connection.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite;

use crate::metrics::{Metrics, PatternKind, RejectReason};

/// Read buffer per socket: control messages are small; larger messages still arrive whole.
const READ_BUFFER: usize = 8 << 10;

/// Sizes an upgrade for thousands of mostly idle sockets: tungstenite's defaults (128 KiB read
/// buffer and write batching per socket) suit a few fast ones, and every send is flushed at once
/// anyway. Messages and frames beyond `max_message` are refused (close 1009).
pub fn small_buffers(upgrade: WebSocketUpgrade, max_message: usize) -> WebSocketUpgrade {
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(max_message)
        .max_frame_size(max_message)
}

/// What a WebSocket session does after handling one input.
pub enum Step {
    Send(Vec<Message>),
    Close(u16, String),
    /// The client left: nothing more to send.
    Gone,
}

/// Carries out `step`; false when the session is over. Each send may take `send_timeout`: a client
/// that stops reading longer than that is counted as a lagging subscriber of `pattern` and dropped.
/// A close lingers on `incoming` for the client's answer (see [`close_gracefully`]).
pub async fn perform<S, R>(
    sink: &mut S,
    incoming: &mut R,
    step: Step,
    send_timeout: Duration,
    metrics: &Metrics,
    pattern: PatternKind,
) -> bool
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    match step {
        Step::Send(messages) => {
            for message in messages {
                match tokio::time::timeout(send_timeout, sink.send(message)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return false,
                    Err(_) => {
                        metrics.lagged_disconnect(pattern);
                        return false;
                    }
                }
            }
            true
        }
        Step::Close(code, reason) => {
            close_gracefully(sink, incoming, code, &reason).await;
            false
        }
        Step::Gone => false,
    }
}

/// Sorts a received frame: the text of a text message, or the step every session takes for the
/// rest — nothing for pings, the end when the client closed or left, 1003 for a binary message
/// (`binary` tells the client what to send instead; counted), the close a read error deserves.
pub fn text_or_step(
    message: Option<Result<Message, axum::Error>>,
    max_body: usize,
    metrics: &Metrics,
    binary: &str,
) -> Result<Utf8Bytes, Step> {
    match message {
        Some(Ok(Message::Text(text))) => Ok(text),
        None | Some(Ok(Message::Close(_))) => Err(Step::Gone),
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Err(Step::Send(Vec::new())),
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
    error: axum::Error,
    max_body: usize,
    metrics: &Metrics,
) -> Option<(u16, String)> {
    match error
        .into_inner()
        .downcast::<tungstenite::Error>()
        .map(|e| *e)
    {
        Ok(tungstenite::Error::Capacity(_)) => {
            metrics.rejected(RejectReason::MessageTooLarge);
            Some((1009, format!("message exceeds the {max_body}-byte limit")))
        }
        Ok(tungstenite::Error::Utf8(_)) => {
            metrics.rejected(RejectReason::BadMessage);
            Some((1007, "text message is not valid UTF-8".into()))
        }
        Ok(tungstenite::Error::Protocol(problem)) => {
            metrics.rejected(RejectReason::BadMessage);
            Some((1002, format!("protocol error: {problem}")))
        }
        _ => None,
    }
}

/// Sends a close frame, giving a slow or vanished client at most a second.
pub async fn send_close<S>(sink: &mut S, code: u16, reason: &str)
where
    S: Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: close_reason(reason).into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        sink.send(Message::Close(Some(frame))),
    )
    .await;
}

/// How long a closed socket keeps reading for the client's answering close frame.
const LINGER: Duration = Duration::from_secs(1);

/// Sends a close frame, then reads (and drops) what the client still sends until its own close
/// frame, for at most [`LINGER`]. Closing a socket with unread data in it resets the connection,
/// and a client that was still sending (a flood) would lose the close frame and its reason.
pub async fn close_gracefully<S, R>(sink: &mut S, incoming: &mut R, code: u16, reason: &str)
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    send_close(sink, code, reason).await;
    let _ = tokio::time::timeout(LINGER, async {
        while let Some(Ok(message)) = incoming.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Close reasons are limited to 123 bytes by the protocol; cut on a character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_the_protocol_limit() {
        assert_eq!(close_reason("short"), "short");
        assert!(close_reason(&"é".repeat(100)).len() <= 123);
    }
}
