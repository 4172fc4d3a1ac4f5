//! How an SSE or WebSocket job user hears about its jobs: a stream subscribed to the user's own topic,
//! whose events carry the finished job's status. A dropped stream is resumed after the last event
//! seen (Last-Event-ID / `after`), so a completion published meanwhile is not missed.

use crate::http_stream::StreamResponse;
use std::sync::atomic::Ordering::Relaxed;

use commbench_servers::event_stream::Parser;
use tokio_tungstenite::tungstenite::Message;

use super::{
    jobs::{notify_topic, JobView, Notify},
    sse_stream::{self, read_chunk},
    ws_conn::{self, Socket},
    ClientCtx,
};
use crate::{http::ClientError, wire};

/// Largest SSE frame accepted before the stream is treated as broken.
const MAX_FRAME: usize = 1 << 20;
/// Times one user may resume its stream before giving up.
const MAX_RESUMES: u32 = 10;

enum Stream {
    Sse {
        body: StreamResponse,
        parser: Box<Parser>,
    },
    Ws(Box<Socket>),
}

/// One user's notification stream.
pub struct Listener {
    kind: Notify,
    stream: Stream,
    /// The highest sequence number seen on the user's topic (where a resumed stream starts).
    cursor: u64,
    resumes: u32,
}

/// What one message on the stream meant.
enum Heard {
    Subscribed(u64),
    Event(u64, JobView),
    Nothing,
}

impl Listener {
    /// Opens the stream and waits for the server to confirm the subscription.
    pub async fn subscribe(ctx: &ClientCtx, kind: Notify) -> Result<Self, ClientError> {
        let stream = open(ctx, kind, None).await?;
        let mut listener = Self {
            kind,
            stream,
            cursor: 0,
            resumes: 0,
        };
        loop {
            match listener.next(ctx).await? {
                Heard::Subscribed(after) => {
                    listener.cursor = after;
                    return Ok(listener);
                }
                Heard::Event(..) | Heard::Nothing => {}
            }
        }
    }

    /// Reads until the completion of job `id` arrives; completions of earlier jobs (a late
    /// duplicate) are skipped.
    pub async fn result_of(&mut self, ctx: &ClientCtx, id: &str) -> Result<JobView, ClientError> {
        loop {
            match self.next(ctx).await {
                Ok(Heard::Event(seq, view)) => {
                    self.cursor = self.cursor.max(seq);
                    if view.id == id && view.is_done() {
                        return Ok(view);
                    }
                }
                Ok(Heard::Subscribed(_) | Heard::Nothing) => {}
                Err(error) => {
                    ctx.error(&error);
                    self.resumes += 1;
                    if self.resumes > MAX_RESUMES {
                        return Err(ClientError::Protocol(
                            "notification stream kept failing".into(),
                        ));
                    }
                    ctx.recorder().counters.reconnects.fetch_add(1, Relaxed);
                    self.stream = open(ctx, self.kind, Some(self.cursor)).await?;
                }
            }
        }
    }

    /// The next meaningful message; an error when the stream ended or broke.
    async fn next(&mut self, ctx: &ClientCtx) -> Result<Heard, ClientError> {
        match &mut self.stream {
            Stream::Sse { body, parser } => loop {
                if let Some(frame) = parser.next_frame() {
                    return Ok(match frame.dispatched_type() {
                        Some("subscribed") => Heard::Subscribed(
                            wire::ws_notice(frame.data())
                                .and_then(|n| n.after)
                                .unwrap_or(0),
                        ),
                        Some("message") => parse_event(frame.data().as_bytes())?,
                        _ => Heard::Nothing,
                    });
                }
                if !read_chunk(body, parser, ctx).await {
                    return Err(ClientError::Protocol("notification stream ended".into()));
                }
            },
            Stream::Ws(socket) => match ws_conn::next(socket).await {
                Some(Ok(Message::Binary(bytes))) => parse_event(&bytes),
                Some(Ok(Message::Text(text))) => Ok(match wire::ws_notice(&text) {
                    Some(notice) if notice.kind == "subscribed" => {
                        Heard::Subscribed(notice.after.unwrap_or(0))
                    }
                    _ => Heard::Nothing,
                }),
                Some(Ok(Message::Close(_))) | None => {
                    Err(ClientError::WebSocket("notification socket closed".into()))
                }
                Some(Ok(_)) => Ok(Heard::Nothing),
                Some(Err(error)) => Err(error),
            },
        }
    }
}

/// An event on the user's topic: its sequence number and the job status it carries.
fn parse_event(bytes: &[u8]) -> Result<Heard, ClientError> {
    let bad = || ClientError::Protocol("completion event is not a job status".into());
    let event = wire::event(bytes).ok_or_else(bad)?;
    let view: JobView =
        serde_json::from_str(event.data.as_deref().ok_or_else(bad)?).map_err(|_| bad())?;
    Ok(Heard::Event(event.seq, view))
}

/// Opens the user's stream, resuming after `cursor` when given.
async fn open(ctx: &ClientCtx, kind: Notify, cursor: Option<u64>) -> Result<Stream, ClientError> {
    let topic = notify_topic(&ctx.shared.queue, ctx.id);
    if kind == Notify::Ws {
        let after = cursor.map_or(String::new(), |c| format!(",\"after\":{c}"));
        let subscribe =
            format!("{{\"type\":\"subscribe\",\"topic\":\"{topic}\",\"joins\":false{after}}}");
        let mut socket = ws_conn::open(ctx, "/ws", None).await?;
        ws_conn::send_text(&mut socket, subscribe).await?;
        return Ok(Stream::Ws(Box::new(socket)));
    }
    let resume = cursor.map(|c| c.to_string());
    let mut headers = vec![("accept", "text/event-stream")];
    if let Some(resume) = resume.as_deref() {
        headers.push(("last-event-id", resume));
    }
    let body = sse_stream::open(ctx, &format!("/sse/{topic}"), &headers).await?;
    Ok(Stream::Sse {
        body,
        parser: Box::new(Parser::new(MAX_FRAME)),
    })
}
