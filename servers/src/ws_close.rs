//! The edges every WebSocket route shares: which close a read error deserves, and sending a close
//! frame (reason cut to the protocol's 123 bytes) without waiting long for a client that is gone,
//! then lingering for the client's own close so unread data does not reset the connection.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite;

use crate::metrics::{Metrics, RejectReason};

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
