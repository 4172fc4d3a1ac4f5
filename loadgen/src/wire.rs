//! Parsing what the commbench server sends: one event's JSON, and a poll answer. Borrowing parsers,
//! so a client reads thousands of events per second without copying payloads.

use std::borrow::Cow;

use serde::Deserialize;

/// `{"topic","seq","data"}` as sent by every pattern.
#[derive(Debug, Deserialize)]
pub struct WireEvent<'a> {
    pub seq: u64,
    #[serde(borrow, default)]
    pub data: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
pub struct WireGap {
    pub oldest: u64,
}

/// A short- or long-poll answer.
#[derive(Debug, Deserialize)]
pub struct PollAnswer<'a> {
    pub head: u64,
    #[serde(default)]
    pub more: bool,
    #[serde(default)]
    pub gap: Option<WireGap>,
    #[serde(borrow)]
    pub events: Vec<WireEvent<'a>>,
}

/// A WebSocket text message from the server (acks, notices, errors).
#[derive(Debug, Deserialize)]
pub struct WsNotice<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(default)]
    pub after: Option<u64>,
    #[serde(default)]
    pub oldest: Option<u64>,
    #[serde(default, borrow)]
    pub error: Option<&'a str>,
}

pub fn event(bytes: &[u8]) -> Option<WireEvent<'_>> {
    serde_json::from_slice(bytes).ok()
}

pub fn poll_answer(bytes: &[u8]) -> Option<PollAnswer<'_>> {
    serde_json::from_slice(bytes).ok()
}

pub fn ws_notice(text: &str) -> Option<WsNotice<'_>> {
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_server_shapes() {
        let e = event(br#"{"topic":"t","seq":3,"data":"cb:1:2:xx"}"#).unwrap();
        assert_eq!((e.seq, e.data.as_deref()), (3, Some("cb:1:2:xx")));
        let p = poll_answer(
            br#"{"topic":"t","head":9,"more":true,"gap":{"after":1,"oldest":5},"events":[{"topic":"t","seq":5,"data":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(
            (p.head, p.more, p.gap.map(|g| g.oldest), p.events.len()),
            (9, true, Some(5), 1)
        );
        let n = ws_notice(r#"{"type":"subscribed","topic":"t","after":4,"head":4}"#).unwrap();
        assert_eq!((n.kind, n.after), ("subscribed", Some(4)));
    }
}
