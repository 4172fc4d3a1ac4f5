//! WebSocket by a profile's template: open the section's URL, send its subscribe message (and
//! wait for the confirming text when the section names one); the frames it says carry events are
//! searched for stamps. On a dropped socket the client reconnects and subscribes again.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use super::{no_section, values, ClientCtx};
use crate::{
    clients::{
        stream_feed::Arrival,
        ws_conn::{self, Socket},
        ws_feed::{self, FeedProtocol, Opened, Step},
        Accounting,
    },
    http::ClientError,
    profile::{sections::Frames, PatternSpec},
};

/// How long a server may take to confirm the subscription.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

struct TemplateWs {
    path: String,
    subscribe: Option<String>,
    subscribed: Option<String>,
    frames: Frames,
    accounting: Accounting,
}

impl FeedProtocol for TemplateWs {
    fn accounting(&self) -> Accounting {
        self.accounting
    }

    async fn subscribe(&mut self, ctx: &ClientCtx, _cursor: Option<u64>) -> Opened {
        let mut socket = ws_conn::open(ctx, &self.path, None).await?;
        if let Some(subscribe) = &self.subscribe {
            ws_conn::send_text(&mut socket, subscribe.clone()).await?;
        }
        if let Some(text) = &self.subscribed {
            tokio::time::timeout(CONFIRM_TIMEOUT, confirmed(&mut socket, text))
                .await
                .map_err(|_| ClientError::Timeout(CONFIRM_TIMEOUT))??;
        }
        Ok((socket, Some(0)))
    }

    fn message(&mut self, message: Message, arrival: Arrival<'_>) -> Step {
        let bytes: &[u8] = match (&message, self.frames) {
            (Message::Text(text), Frames::Text | Frames::Any) => text.as_bytes(),
            (Message::Binary(bytes), Frames::Binary | Frames::Any) => bytes,
            _ => return Step::Continue,
        };
        if let Some(receiver) = arrival.receiver.as_mut() {
            receiver.message(arrival.ctx, bytes, arrival.now_ns);
        }
        Step::Continue
    }
}

/// Reads until a text message containing `text` arrives.
async fn confirmed(socket: &mut Socket, text: &str) -> Result<(), ClientError> {
    loop {
        match ws_conn::next(socket).await {
            Some(Ok(Message::Text(message))) if message.as_str().contains(text) => return Ok(()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(ClientError::Protocol(format!(
                    "socket closed before a message containing `{text}`"
                )))
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => return Err(error),
        }
    }
}

pub async fn run(ctx: ClientCtx) {
    let Some(PatternSpec::WebSocket(spec)) = ctx.shared.spec() else {
        return no_section(&ctx, "WebSocket");
    };
    let values = values(&ctx);
    let protocol = TemplateWs {
        path: ctx.target.join(&spec.url.render(&values)),
        subscribe: spec.subscribe.as_ref().map(|t| t.render(&values)),
        subscribed: spec.subscribed.clone(),
        frames: spec.frames,
        accounting: ctx.shared.accounting(),
    };
    ws_feed::run(ctx, protocol).await;
}
