//! Parsing what the commbench server sends: one event's JSON, a poll answer, and their GraphQL
//! forms. Borrowing parsers, so a client reads thousands of events per second without copying
//! payloads.

use std::borrow::Cow;

use serde::{de::IgnoredAny, Deserialize};
use serde_json::value::RawValue;

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

/// A GraphQL answer `{"data":{"events":…},"errors":[…]}`: the query and the subscription both have
/// one root field, `events` (a page, or a feed item).
#[derive(Debug, Deserialize)]
pub struct GraphqlEvents<T> {
    #[serde(default = "Option::default")]
    data: Option<EventsField<T>>,
    #[serde(default)]
    errors: Option<Vec<IgnoredAny>>,
}

#[derive(Debug, Deserialize)]
struct EventsField<T> {
    #[serde(default = "Option::default")]
    events: Option<T>,
}

impl<T> GraphqlEvents<T> {
    /// True when the server reported errors (with or without partial data).
    pub fn has_errors(&self) -> bool {
        self.errors.as_ref().is_some_and(|e| !e.is_empty())
    }

    /// The `events` field, when the answer carries one.
    pub fn events(self) -> Option<T> {
        self.data.and_then(|d| d.events)
    }
}

/// `events(…){head}`: the probe that learns a topic's head.
#[derive(Debug, Deserialize)]
pub struct PageHead {
    pub head: u64,
}

/// A subscription's `FeedItem`: exactly one of an event or a gap.
#[derive(Debug, Deserialize)]
pub struct FeedItem<'a> {
    #[serde(borrow, default)]
    pub event: Option<WireEvent<'a>>,
    #[serde(default)]
    pub gap: Option<WireGap>,
}

/// A `graphql-transport-ws` message; its payload is kept raw until its type says what it holds
/// (a result for `next`, an error list for `error`).
#[derive(Debug, Deserialize)]
pub struct GqlWsMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(default)]
    pub id: Option<&'a str>,
    #[serde(borrow, default)]
    pub payload: Option<&'a RawValue>,
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

/// A GraphQL answer over HTTP, or a subscription's `next` payload.
pub fn graphql<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<GraphqlEvents<T>> {
    serde_json::from_slice(bytes).ok()
}

pub fn gql_ws_message(text: &str) -> Option<GqlWsMessage<'_>> {
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

    #[test]
    fn parses_graphql_pages_and_errors() {
        let page = graphql::<PollAnswer>(
            br#"{"data":{"events":{"head":9,"more":true,"gap":{"oldest":5},"events":[{"topic":"t","seq":5,"data":"cb:1:2:x"}]}}}"#,
        )
        .unwrap();
        assert!(!page.has_errors());
        let page = page.events().unwrap();
        assert_eq!(
            (
                page.head,
                page.more,
                page.gap.map(|g| g.oldest),
                page.events[0].seq
            ),
            (9, true, Some(5), 5)
        );
        assert_eq!(page.events[0].data.as_deref(), Some("cb:1:2:x"));
        // `gap: null` and an empty page are the usual answer.
        let empty = graphql::<PollAnswer>(
            br#"{"data":{"events":{"head":0,"more":false,"gap":null,"events":[]}}}"#,
        )
        .unwrap()
        .events()
        .unwrap();
        assert!(empty.gap.is_none() && empty.events.is_empty());
        // A failed non-null field nulls `data`; the errors are what is left.
        let failed = graphql::<PollAnswer>(
            br#"{"data":null,"errors":[{"message":"cursor ahead","path":["events"]}]}"#,
        )
        .unwrap();
        assert!(failed.has_errors());
        assert!(failed.events().is_none());
        let no_data = graphql::<PageHead>(br#"{"errors":[{"message":"bad"}]}"#).unwrap();
        assert!(no_data.has_errors() && no_data.events().is_none());
        let head = graphql::<PageHead>(br#"{"data":{"events":{"head":42}}}"#).unwrap();
        assert_eq!(head.events().map(|h| h.head), Some(42));
        assert!(graphql::<PageHead>(b"not json").is_none());
    }

    #[test]
    fn parses_graphql_transport_ws_messages() {
        let next = gql_ws_message(
            r#"{"id":"1","type":"next","payload":{"data":{"events":{"event":{"topic":"t","seq":7,"data":"a\"b"},"gap":null}}}}"#,
        )
        .unwrap();
        assert_eq!((next.kind, next.id), ("next", Some("1")));
        let item = graphql::<FeedItem>(next.payload.unwrap().get().as_bytes())
            .unwrap()
            .events()
            .unwrap();
        let event = item.event.unwrap();
        assert_eq!((event.seq, event.data.as_deref()), (7, Some("a\"b")));
        assert!(item.gap.is_none());
        let gap = gql_ws_message(
            r#"{"type":"next","id":"1","payload":{"data":{"events":{"event":null,"gap":{"after":2,"oldest":9}}}}}"#,
        )
        .unwrap();
        let item = graphql::<FeedItem>(gap.payload.unwrap().get().as_bytes())
            .unwrap()
            .events()
            .unwrap();
        assert_eq!(
            (item.event.is_none(), item.gap.map(|g| g.oldest)),
            (true, Some(9))
        );
        let error = gql_ws_message(r#"{"id":"1","type":"error","payload":[{"message":"lagged"}]}"#)
            .unwrap();
        assert_eq!(error.kind, "error");
        assert!(error.payload.unwrap().get().starts_with('['));
        for (text, kind) in [
            (r#"{"type":"connection_ack"}"#, "connection_ack"),
            (r#"{"type":"ping","payload":null}"#, "ping"),
            (r#"{"id":"1","type":"complete"}"#, "complete"),
        ] {
            let message = gql_ws_message(text).unwrap();
            assert_eq!(message.kind, kind);
            assert!(message.payload.is_none());
        }
    }
}
