//! Polling by a profile's template: `GET` its URL with the client's topic and cursor, every
//! `--interval` (short polling) or again as soon as each answer arrives (long polling), reading
//! the next cursor where the profile says (a JSON pointer, a header, or none for a server that
//! answers with its latest state). Every stamp in an answer is an event.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use bytes::Bytes;

use super::{header_refs, no_section, values, ClientCtx};
use crate::{
    clients::{
        requests::{open, request_loop, Ask, Exchange},
        short_poll::on_interval,
        Accounting, FeedReceiver, Phase,
    },
    profile::{
        sections::{CursorRule, PollSpec},
        template::Values,
        PatternSpec,
    },
    target::Target,
};

struct TemplatePoll {
    spec: PollSpec,
    /// The URL is under the target's path; the values it is filled with.
    target: Arc<Target>,
    topic: String,
    timeout_ms: u64,
    cursor: String,
    receiver: FeedReceiver,
    /// Count answers, not stamps: nothing published reaches this route.
    answers_only: bool,
    more: bool,
}

impl Exchange for TemplatePoll {
    fn path(&self) -> String {
        let values = Values {
            topic: &self.topic,
            cursor: &self.cursor,
            timeout_ms: self.timeout_ms,
            port: 0,
        };
        self.target.join(&self.spec.url.render(&values))
    }

    fn request(&self) -> Ask<'_> {
        Ask {
            headers: header_refs(&self.spec.headers),
            ..Ask::get(self.path())
        }
    }

    fn headers(&mut self, headers: &http::HeaderMap) {
        if let CursorRule::Header(name) = &self.spec.cursor {
            if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
                self.cursor = value.to_owned();
            }
        }
    }

    fn answer(&mut self, ctx: &ClientCtx, body: &Bytes, now_ns: u64) {
        let counters = &ctx.recorder().counters;
        if self.answers_only {
            // Each answer is the unit of work of a poll that carries no published events.
            counters.events_received.fetch_add(1, Relaxed);
        } else if self.receiver.message(ctx, body, now_ns) == 0 {
            counters.empty_responses.fetch_add(1, Relaxed);
        }
        self.more = false;
        let pointer = match &self.spec.cursor {
            CursorRule::Json(pointer) => Some(pointer),
            CursorRule::None | CursorRule::Header(_) => None,
        };
        if pointer.is_none() && self.spec.more.is_none() {
            return;
        }
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            counters.error("bad_poll_answer");
            return;
        };
        if let Some(cursor) = pointer.and_then(|p| p.text(&json)) {
            self.cursor = cursor;
        }
        if let Some(more) = &self.spec.more {
            self.more = more.get(&json).and_then(serde_json::Value::as_bool) == Some(true);
        }
    }

    fn more(&self) -> bool {
        self.more
    }

    fn done(&self, ctx: &ClientCtx) -> bool {
        self.receiver.done(ctx)
    }
}

/// Opens the connection and starts the books; the client is subscribed from its first poll on.
async fn start(ctx: &ClientCtx) -> Option<(crate::http::HttpConn, TemplatePoll)> {
    let Some(PatternSpec::Poll(spec)) = ctx.shared.spec() else {
        no_section(ctx, "poll");
        return None;
    };
    let conn = open(ctx).await?;
    let accounting = match ctx.shared.accounting() {
        Accounting::Stamp { .. } => Accounting::Stamp {
            latest: spec.cursor == CursorRule::None,
        },
        other => other,
    };
    let values = values(ctx);
    let poll = TemplatePoll {
        target: ctx.target.clone(),
        topic: values.topic.to_owned(),
        timeout_ms: values.timeout_ms,
        cursor: spec.start_cursor.clone(),
        answers_only: accounting == Accounting::InterArrival,
        receiver: FeedReceiver::start(Some(ctx), accounting, 0),
        spec: spec.clone(),
        more: false,
    };
    ctx.mark_ready();
    Some((conn, poll))
}

/// Short polling: on the scenario's interval, a random phase per client.
pub async fn run_short(mut ctx: ClientCtx) {
    let Some((mut conn, mut poll)) = start(&ctx).await else {
        return;
    };
    on_interval(&mut ctx, &mut conn, &mut poll).await;
    poll.receiver.finish(&ctx);
}

/// Long polling: the next poll as soon as the answer arrives.
pub async fn run_long(ctx: ClientCtx) {
    let Some((mut conn, mut poll)) = start(&ctx).await else {
        return;
    };
    if ctx.wait_for(Phase::Run).await == Phase::Run {
        request_loop(&ctx, &mut conn, None, &mut poll).await;
    }
    poll.receiver.finish(&ctx);
}
