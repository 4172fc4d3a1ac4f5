//! The edges every WebSocket route shares: which close a read error deserves, and sending a close
//! frame (reason cut to the protocol's 123 bytes) without waiting long for a client that is gone.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt};
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
