//! Following one Redis pub/sub channel until stopped: each UTF-8 message goes to a callback, and the
//! subscription (a connection of its own) is made again after any failure.

use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// Pause before subscribing again after the subscription failed.
const RESUBSCRIBE: Duration = Duration::from_millis(500);

/// Hands every text message on `channel` to `on_message` until `stop` is cancelled, reconnecting
/// after failures. Messages published while it reconnects are missed: callers keep a fallback poll.
pub async fn follow(
    client: redis::Client,
    channel: &'static str,
    on_message: impl Fn(&str),
    stop: CancellationToken,
) {
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                if let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) {
                    on_message(text);
                }
            }
            Ok::<(), redis::RedisError>(())
        };
        tokio::select! {
            result = session => {
                if let Err(error) = result {
                    tracing::debug!(%error, channel, "pub/sub interrupted; resubscribing");
                }
            }
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(RESUBSCRIBE) => {}
            () = stop.cancelled() => return,
        }
    }
}
