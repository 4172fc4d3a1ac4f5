//! Plain `events` subscriptions on `graphql-transport-ws`, delivered without async-graphql's
//! per-item execution: the selection is compiled once into a plan, and each item is written
//! straight as the `next` message async-graphql's answer would make. async-graphql still parses,
//! validates, limits and starts the operation, so every refusal keeps its exact answer; only the
//! items of an operation it started take this path (the resolver hands them over, `HandOver`).
//!
//! A plan exists only for the shape whose answer is plain data: one operation (no fragments, no
//! directives anywhere) selecting the root field `events` once, and under it only `__typename`,
//! `event { … }` and `gap { … }` with their scalar fields, each response key once. Anything else
//! runs through async-graphql as before.

use std::io::Write as _;

use async_graphql::{
    parser::types::{DocumentOperations, Field, OperationType, Selection, SelectionSet},
    PathSegment, Pos, Request, Response,
};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::schema::{lagged, Live, LiveItem};
use crate::{
    bus,
    event::SharedEvent,
    ws_conn::{frame, frame_of, TEXT},
};

/// A field of the subscription's item, `FeedItem`.
#[derive(Debug, PartialEq)]
enum ItemField {
    Typename,
    Event(Vec<(Key, EventField)>),
    Gap(Vec<(Key, GapField)>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum EventField {
    Typename,
    Topic,
    Seq,
    Data,
    DataB64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum GapField {
    Typename,
    After,
    Oldest,
}

/// A response key, JSON-encoded with its colon: `"seq":`.
type Key = Box<[u8]>;

/// How to write one operation's items.
#[derive(Debug)]
pub struct Plan {
    /// `{"type":"next","id":<id>,"payload":{"data":{<root key>:` — everything before the item.
    prefix: Vec<u8>,
    /// `{"type":"next","id":<id>,"payload":` — before an answer with errors.
    next: Vec<u8>,
    /// The root field's response key and position, for a lag's error.
    root_key: String,
    root_pos: Pos,
    item: Vec<(Key, ItemField)>,
    /// The item selection as bytes, which name it among other plans' (`Event::graphql_item`).
    signature: Bytes,
}

impl Plan {
    /// The plan of operation `id`'s request, if it has the plain shape. Parses the query once for
    /// async-graphql too: the parsed document stays in the request.
    pub fn of(request: &mut Request, id: &str) -> Option<Self> {
        let operation_name = request.operation_name.clone();
        let document = request.parsed_query().ok()?;
        if !document.fragments.is_empty() {
            return None;
        }
        // The operation async-graphql will run; when it would refuse, it never starts one.
        let operation = match (&document.operations, operation_name.as_deref()) {
            (DocumentOperations::Single(operation), None) => operation,
            (DocumentOperations::Multiple(operations), Some(name)) => {
                operations.iter().find(|(n, _)| n.as_str() == name)?.1
            }
            (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
                operations.values().next()?
            }
            _ => return None,
        };
        let operation = &operation.node;
        if operation.ty != OperationType::Subscription || !operation.directives.is_empty() {
            return None;
        }
        let [root] = operation.selection_set.node.items.as_slice() else {
            return None;
        };
        let Selection::Field(root) = &root.node else {
            return None;
        };
        let root_pos = root.pos;
        let root = &root.node;
        if root.name.node != "events" || !root.directives.is_empty() {
            return None;
        }
        let item = selection(&root.selection_set.node, |field| {
            Some(match field.name.node.as_str() {
                "__typename" => scalar(field, ItemField::Typename)?,
                "event" => ItemField::Event(selection(&field.selection_set.node, event_field)?),
                "gap" => ItemField::Gap(selection(&field.selection_set.node, gap_field)?),
                _ => return None,
            })
        })?;
        let signature = signature(&item);
        let root_key = root.response_key().node.to_string();
        let mut next = br#"{"type":"next","id":"#.to_vec();
        json_string(&mut next, id);
        next.extend_from_slice(br#","payload":"#);
        let mut prefix = next.clone();
        prefix.extend_from_slice(br#"{"data":{"#);
        prefix.extend_from_slice(&key(&root_key));
        Some(Self {
            prefix,
            next,
            root_key,
            root_pos,
            item,
            signature,
        })
    }

    /// The operation's `next` messages as WebSocket frames, one per item of the subscription it
    /// started.
    pub fn messages(self, live: Live) -> impl Stream<Item = Bytes> + Send + 'static {
        live.items().map(move |item| self.message(&item))
    }

    fn message(&self, item: &LiveItem) -> Bytes {
        let item = match item {
            // Shared by every subscriber of the same selection: only the id differs.
            LiveItem::Event(event) => event.graphql_item(&self.signature, || {
                Bytes::from(self.item_json(Some(event), None))
            }),
            LiveItem::Gap(gap) => Bytes::from(self.item_json(None, Some(gap))),
            LiveItem::Lagged { missed } => return frame(TEXT, &self.lagged(*missed)),
        };
        frame_of(TEXT, &[&self.prefix, &item, b"}}}"])
    }

    /// The item's JSON: `{"event":…,"gap":…}` as the selection asks.
    fn item_json(&self, event: Option<&SharedEvent>, gap: Option<&bus::Gap>) -> Vec<u8> {
        let mut out = Vec::with_capacity(96 + event.map_or(0, |e| e.json.len()));
        out.push(b'{');
        for (n, (key, field)) in self.item.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            match field {
                ItemField::Typename => out.extend_from_slice(br#""FeedItem""#),
                ItemField::Event(fields) => match event {
                    Some(event) => {
                        let text = std::str::from_utf8(&event.payload);
                        object(&mut out, fields, |out, field| {
                            event_value(out, event, text, field)
                        });
                    }
                    None => out.extend_from_slice(b"null"),
                },
                ItemField::Gap(fields) => match gap {
                    Some(gap) => object(&mut out, fields, |out, field| gap_value(out, gap, field)),
                    None => out.extend_from_slice(b"null"),
                },
            }
        }
        out.push(b'}');
        out
    }

    /// The answer the resolver's `lagged` error gets from async-graphql: no data, the error at the
    /// root field. A lag is not a refusal, so there is nothing to count (see `Counted::finish`).
    fn lagged(&self, missed: u64) -> Vec<u8> {
        let error = lagged(missed)
            .into_server_error(self.root_pos)
            .with_path(vec![PathSegment::Field(self.root_key.clone())]);
        let mut out = self.next.clone();
        // Plain strings and numbers: encoding cannot fail.
        serde_json::to_writer(&mut out, &Response::from_errors(vec![error])).unwrap_or_default();
        out.push(b'}');
        out
    }
}

/// The item selection in bytes: each JSON-encoded key with its colon, then its field's code (an
/// object's fields between braces). Keys are JSON strings, so codes and braces cannot be mistaken
/// for part of one: equal bytes, equal selection.
fn signature(item: &[(Key, ItemField)]) -> Bytes {
    let mut out = Vec::new();
    for (key, field) in item {
        out.extend_from_slice(key);
        match field {
            ItemField::Typename => out.push(b'T'),
            ItemField::Event(fields) => {
                signed_object(&mut out, b'E', fields, |field| match field {
                    EventField::Typename => b'T',
                    EventField::Topic => b't',
                    EventField::Seq => b's',
                    EventField::Data => b'd',
                    EventField::DataB64 => b'b',
                })
            }
            ItemField::Gap(fields) => signed_object(&mut out, b'G', fields, |field| match field {
                GapField::Typename => b'T',
                GapField::After => b'a',
                GapField::Oldest => b'o',
            }),
        }
    }
    Bytes::from(out)
}

/// An object field's part of a [`signature`]: its tag, then each key with its field's code,
/// between braces.
fn signed_object<F>(out: &mut Vec<u8>, tag: u8, fields: &[(Key, F)], code: impl Fn(&F) -> u8) {
    out.extend_from_slice(&[tag, b'{']);
    for (key, field) in fields {
        out.extend_from_slice(key);
        out.push(code(field));
    }
    out.push(b'}');
}

/// The fields of a selection with no fragments, directives, arguments or repeated response keys,
/// each known to `field`.
fn selection<F>(set: &SelectionSet, field: impl Fn(&Field) -> Option<F>) -> Option<Vec<(Key, F)>> {
    let mut fields: Vec<(Key, F)> = Vec::with_capacity(set.items.len());
    for selected in &set.items {
        let Selection::Field(selected) = &selected.node else {
            return None;
        };
        let selected = &selected.node;
        if !selected.directives.is_empty() || !selected.arguments.is_empty() {
            return None;
        }
        let key = key(selected.response_key().node.as_str());
        // Repeated keys merge their selections; async-graphql keeps that case.
        if fields.iter().any(|(seen, _)| *seen == key) {
            return None;
        }
        fields.push((key, field(selected)?));
    }
    Some(fields)
}

/// `value` when `field` selects nothing below it, as a scalar field must.
fn scalar<F>(field: &Field, value: F) -> Option<F> {
    field.selection_set.node.items.is_empty().then_some(value)
}

fn event_field(field: &Field) -> Option<EventField> {
    let value = match field.name.node.as_str() {
        "__typename" => EventField::Typename,
        "topic" => EventField::Topic,
        "seq" => EventField::Seq,
        "data" => EventField::Data,
        "dataB64" => EventField::DataB64,
        _ => return None,
    };
    scalar(field, value)
}

fn gap_field(field: &Field) -> Option<GapField> {
    let value = match field.name.node.as_str() {
        "__typename" => GapField::Typename,
        "after" => GapField::After,
        "oldest" => GapField::Oldest,
        _ => return None,
    };
    scalar(field, value)
}

fn key(name: &str) -> Key {
    let mut out = Vec::with_capacity(name.len() + 3);
    json_string(&mut out, name);
    out.push(b':');
    out.into()
}

fn object<F: Copy>(out: &mut Vec<u8>, fields: &[(Key, F)], value: impl Fn(&mut Vec<u8>, F)) {
    out.push(b'{');
    for (n, (key, field)) in fields.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(key);
        value(out, *field);
    }
    out.push(b'}');
}

/// The field values `schema::Event` resolves, encoded as async-graphql's answer encodes them;
/// `text` is the payload read as UTF-8.
fn event_value(
    out: &mut Vec<u8>,
    event: &SharedEvent,
    text: Result<&str, std::str::Utf8Error>,
    field: EventField,
) {
    match (field, text) {
        (EventField::Typename, _) => out.extend_from_slice(br#""Event""#),
        (EventField::Topic, _) => json_string(out, event.topic.as_str()),
        (EventField::Seq, _) => number(out, event.seq),
        (EventField::Data, Ok(text)) => json_string(out, text),
        (EventField::DataB64, Err(_)) => {
            json_string(
                out,
                &base64::engine::general_purpose::STANDARD.encode(&event.payload),
            );
        }
        (EventField::Data, Err(_)) | (EventField::DataB64, Ok(_)) => {
            out.extend_from_slice(b"null");
        }
    }
}

fn gap_value(out: &mut Vec<u8>, gap: &bus::Gap, field: GapField) {
    match field {
        GapField::Typename => out.extend_from_slice(br#""Gap""#),
        GapField::After => number(out, gap.after),
        GapField::Oldest => number(out, gap.oldest),
    }
}

fn number(out: &mut Vec<u8>, n: u64) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{n}");
}

fn json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(query: &str, operation: Option<&str>) -> Option<Plan> {
        let mut request = Request::new(query);
        request.operation_name = operation.map(str::to_owned);
        Plan::of(&mut request, "1")
    }

    #[test]
    fn plain_events_subscriptions_get_a_plan() {
        let client = plan(
            "subscription($topic:String!,$after:Int){events(topic:$topic,after:$after)\
             {event{topic seq data} gap{oldest}}}",
            None,
        )
        .expect("the load generator's subscription");
        assert_eq!(
            client.prefix,
            br#"{"type":"next","id":"1","payload":{"data":{"events":"#
        );
        let aliased = plan(
            r#"subscription { f: events(topic: "t") { __typename e: event { __typename s: seq } } }"#,
            None,
        )
        .expect("aliases and __typename");
        assert_eq!(aliased.root_key, "f");
        assert_eq!(
            aliased.item,
            vec![
                (key("__typename"), ItemField::Typename),
                (
                    key("e"),
                    ItemField::Event(vec![
                        (key("__typename"), EventField::Typename),
                        (key("s"), EventField::Seq),
                    ])
                ),
            ]
        );
        let named = "subscription A { events(topic: \"t\") { gap { after } } } \
                     subscription B { events(topic: \"t\") { event { seq } } }";
        assert!(matches!(
            plan(named, Some("B")).map(|p| p.item),
            Some(item) if matches!(item.as_slice(), [(_, ItemField::Event(_))])
        ));
        assert!(plan(
            "subscription A { events(topic: \"t\") { gap { after } } }",
            None
        )
        .is_some());
    }

    #[test]
    fn every_other_operation_is_left_to_async_graphql() {
        for query in [
            "subscription { events(topic: \"t\") { ...F } } fragment F on FeedItem { gap { after } }",
            "subscription { events(topic: \"t\") { ... on FeedItem { gap { after } } } }",
            "subscription { events(topic: \"t\") { event { seq @skip(if: true) } } }",
            "subscription @x { events(topic: \"t\") { event { seq } } }",
            "subscription { events(topic: \"t\") @include(if: true) { event { seq } } }",
            "subscription { events(topic: \"t\") { event { seq } event { data } } }",
            "subscription { events(topic: \"t\") { event { seq seq } } }",
            "subscription { a: events(topic: \"t\") { gap { after } } b: events(topic: \"t\") { gap { after } } }",
            "subscription { events(topic: \"t\") { event { nope } } }",
            "subscription { events(topic: \"t\") { event { seq { x } } } }",
            "subscription { events(topic: \"t\") { event { seq(x: 1) } } }",
            "subscription { other(topic: \"t\") { gap { after } } }",
            "query { events(topic: \"t\") { head } }",
            "subscription { events(topic: ",
        ] {
            assert!(plan(query, None).is_none(), "{query}");
        }
        let two = "subscription A { events(topic: \"t\") { gap { after } } } \
                   subscription B { events(topic: \"t\") { event { seq } } }";
        assert!(plan(two, None).is_none(), "no operation chosen");
        assert!(plan(two, Some("C")).is_none(), "an unknown operation");
        assert!(
            plan(
                "subscription { events(topic: \"t\") { gap { after } } }",
                Some("A")
            )
            .is_none(),
            "a name for an anonymous operation"
        );
    }

    #[test]
    fn an_operation_id_is_encoded_as_a_json_string() {
        let plan = {
            let mut request =
                Request::new("subscription { events(topic: \"t\") { gap { after } } }");
            Plan::of(&mut request, "a\"b").unwrap_or_else(|| unreachable!())
        };
        assert_eq!(plan.next, br#"{"type":"next","id":"a\"b","payload":"#);
    }
}
