//! WebSocket by a profile's template: open the section's URL, send its subscribe message (and
//! wait for the confirming text when the section names one); the frames it says carry events are
//! searched for stamps. On a dropped socket the client reconnects and subscribes again: after the
//! target's cursor, through the section's resume form, when it has one and an event carried one.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use super::{no_section, resume_values, values, ClientCtx, Cursor};
use crate::{
    clients::{
        stream_feed::Arrival,
        ws_conn::{self, Socket},
        ws_feed::{self, FeedProtocol, Opened, Step},
        Accounting,
    },
    http::ClientError,
    profile::{
        sections::{Frames, WsResume},
        PatternSpec,
    },
};

/// How long a server may take to confirm the subscription.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

struct TemplateWs {
    path: String,
    subscribe: Option<String>,
    subscribed: Option<String>,
    frames: Frames,
    resume: Option<(WsResume, Cursor)>,
    accounting: Accounting,
}

impl TemplateWs {
    /// The URL and subscribe message to open with: the resume form once an event carried a cursor.
    fn opening(&self, ctx: &ClientCtx) -> (String, Option<String>) {
        let resumed = self.resume.as_ref().and_then(|(forms, cursor)| {
            let (in_url, in_json) = (cursor.for_url()?, cursor.for_json()?);
            let path = forms
                .url
                .as_ref()
                .map(|url| ctx.target.join(&url.render(&resume_values(ctx, &in_url))));
            let subscribe = forms
                .subscribe
                .as_ref()
                .map(|message| message.render(&resume_values(ctx, &in_json)));
            Some((path, subscribe))
        });
        match resumed {
            Some((path, subscribe)) => (
                path.unwrap_or_else(|| self.path.clone()),
                subscribe.or_else(|| self.subscribe.clone()),
            ),
            None => (self.path.clone(), self.subscribe.clone()),
        }
    }
}

impl FeedProtocol for TemplateWs {
    fn accounting(&self) -> Accounting {
        self.accounting
    }

    async fn subscribe(&mut self, ctx: &ClientCtx, _cursor: Option<u64>) -> Opened {
        let (path, subscribe) = self.opening(ctx);
        let mut socket = ws_conn::open(ctx, &path, None).await?;
        if let Some(subscribe) = subscribe {
            ws_conn::send_text(&mut socket, subscribe).await?;
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
        if let Some((_, cursor)) = &mut self.resume {
            cursor.note(bytes);
        }
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
        resume: spec
            .resume
            .as_ref()
            .map(|resume| (resume.with.clone(), Cursor::new(resume.cursor.clone()))),
        accounting: ctx.shared.accounting(),
    };
    ws_feed::run(ctx, protocol).await;
}
