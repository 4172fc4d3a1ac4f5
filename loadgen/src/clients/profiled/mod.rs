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
use crate::{
    http::ClientError,
    profile::{pointer::Pointer, template::Values},
};

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

/// The values of a resume form: the client's topic and the target's cursor (already escaped for
/// where the form puts it).
fn resume_values<'a>(ctx: &'a ClientCtx, cursor: &'a str) -> Values<'a> {
    Values {
        cursor,
        ..values(ctx)
    }
}

/// A cursor longer than this is not kept: the profile points at the wrong field, or the server
/// is hostile, and either way it would not fit a subscribe message.
const MAX_CURSOR: usize = 1024;

/// The target's cursor as the newest event message carried it (a section's `cursor`), for its
/// resume form (`crate::profile::sections::Resume`).
struct Cursor {
    pointer: Pointer,
    last: Option<String>,
}

impl Cursor {
    fn new(pointer: Pointer) -> Self {
        Self {
            pointer,
            last: None,
        }
    }

    /// Keeps the cursor `message` (JSON) holds; a message without one keeps the last.
    fn note(&mut self, message: &[u8]) {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(message) else {
            return;
        };
        if let Some(cursor) = self.pointer.text(&json).filter(|c| c.len() <= MAX_CURSOR) {
            self.last = Some(cursor);
        }
    }

    /// The cursor escaped to sit in a JSON template (inside a string, or bare as a number).
    fn for_json(&self) -> Option<String> {
        let quoted = serde_json::Value::from(self.last.as_deref()?).to_string();
        Some(quoted[1..quoted.len() - 1].to_owned())
    }

    /// The cursor percent-encoded for a URL (unreserved characters as they are).
    fn for_url(&self) -> Option<String> {
        let mut out = String::new();
        for byte in self.last.as_deref()?.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                out.push(char::from(byte));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        Some(out)
    }
}

/// A profile section's headers as the HTTP client takes them.
fn header_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor_of(pointer: &str, messages: &[&str]) -> Cursor {
        let mut cursor = Cursor::new(Pointer::parse(pointer).unwrap());
        for message in messages {
            cursor.note(message.as_bytes());
        }
        cursor
    }

    #[test]
    fn the_newest_message_that_holds_a_cursor_gives_it() {
        let cursor = cursor_of("/seq", &[r#"{"seq":4}"#, r#"{"seq":5}"#, "not json", "{}"]);
        assert_eq!(cursor.last.as_deref(), Some("5"));
        assert_eq!(cursor.for_json().as_deref(), Some("5"));
        assert!(cursor_of("/seq", &["{}"]).for_json().is_none());
        let long = format!(r#"{{"seq":"{}"}}"#, "x".repeat(MAX_CURSOR + 1));
        assert_eq!(
            cursor_of("/seq", &[r#"{"seq":1}"#, &long]).last.as_deref(),
            Some("1")
        );
    }

    #[test]
    fn a_cursor_is_escaped_for_where_it_goes() {
        let cursor = cursor_of("/0/id", &[r#"[{"id":"a \"b\"/c"}]"#]);
        assert_eq!(cursor.for_json().as_deref(), Some(r#"a \"b\"/c"#));
        assert_eq!(cursor.for_url().as_deref(), Some("a%20%22b%22%2Fc"));
    }
}
