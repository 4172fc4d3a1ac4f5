//! The profile-driven clients: one per kind of target-profile section (`crate::profile::Section`),
//! each following its section's templates against someone else's server on the same shared
//! pieces as commbench's own clients (the request loop, the streaming loop, the SSE parser, the
//! Socket.IO codec). Their books are kept by publish stamp, or by message when the server sends
//! its own events (`FeedReceiver`, `Accounting`).

pub(crate) mod graphql;
pub(crate) mod poll;
pub(crate) mod socketio;
pub(crate) mod sse;
pub(crate) mod ws;

use super::ClientCtx;
use crate::{http::ClientError, profile::template::Values};

/// The client cannot run: the profile has no section of `kind` for its pattern (the scenario
/// refuses such a profile, so only a hand-built scenario gets here).
fn no_section(ctx: &ClientCtx, kind: &str) {
    ctx.mark_failed(&ClientError::Protocol(format!(
        "the target profile has no {kind} section for this pattern"
    )));
}

/// The values a client's templates are filled with: its topic.
fn values(ctx: &ClientCtx) -> Values<'_> {
    Values {
        topic: ctx.topic(),
        timeout_ms: ctx.shared.scenario.long_poll_timeout.as_millis() as u64,
        ..Values::default()
    }
}

/// A profile section's headers as the HTTP client takes them.
fn header_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}
