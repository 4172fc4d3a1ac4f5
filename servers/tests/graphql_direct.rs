//! Plain `events` subscriptions on graphql-transport-ws have their items written directly
//! (`patterns/graphql/direct.rs`). Each item must be the bytes async-graphql writes for it, which
//! the legacy graphql-ws protocol shows: it always runs the operation through async-graphql. Both
//! sockets subscribe to the same operation and every payload is compared byte for byte, for plain
//! shapes (written directly) and others (executed as before), items, gaps and a lag alike.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commbench_servers::ServerHandle;
use common::{
    client,
    gql_ws::{self, init, send_json},
    publish, spawn_with, within, Ws, STEP,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const TOPIC: &str = "direct";

/// Operations (query, operation name, variables) whose answers are compared: the load
/// generator's own subscription first.
fn operations() -> Vec<(&'static str, Option<&'static str>, Value)> {
    let cursor = json!({ "topic": TOPIC, "after": 1 });
    let none = json!({});
    let load_generator =
        "subscription($topic:String!,$after:Int){events(topic:$topic,after:$after)\
             {event{topic seq data} gap{oldest}}}";
    vec![
        (load_generator, None, cursor.clone()),
        // Again, so its items are the ones the first subscription encoded (shared per event).
        (load_generator, None, cursor.clone()),
        (
            r#"subscription { events(topic: "direct", after: 1) { event { topic seq data dataB64 } gap { after oldest } } }"#,
            None,
            none.clone(),
        ),
        (
            r#"subscription {
                 feed: events(topic: "direct", after: 1) {
                   __typename kind: __typename
                   g: gap { __typename oldest after }
                   e: event { dataB64 __typename s: seq data topic }
                 }
               }"#,
            None,
            none.clone(),
        ),
        (
            r#"subscription { events(topic: "direct", after: 1) { event { seq } } }"#,
            None,
            none.clone(),
        ),
        (
            r#"subscription A { events(topic: "direct", after: 1) { gap { after } } }
               subscription B($t: String!) { events(topic: $t, after: 1) { event { n: seq topic } } }"#,
            Some("B"),
            json!({ "t": TOPIC }),
        ),
        // Not plain: a fragment, a directive, a repeated key. async-graphql runs them as before.
        (
            r#"subscription { events(topic: "direct", after: 1) { ...F } }
               fragment F on FeedItem { event { seq data } }"#,
            None,
            none.clone(),
        ),
        (
            r#"subscription($on: Boolean!) { events(topic: "direct", after: 1) { event { seq data @include(if: $on) } } }"#,
            None,
            json!({ "on": false }),
        ),
        (
            r#"subscription { events(topic: "direct", after: 1) { event { seq } event { data } } }"#,
            None,
            none,
        ),
    ]
}

/// A server whose history keeps 4 events, so a cursor of 1 gets a gap first.
async fn server(subscriber_buffer: usize) -> ServerHandle {
    let server = spawn_with(|c| {
        c.history = 4;
        c.subscriber_buffer = subscriber_buffer;
        c.heartbeat = Duration::from_secs(3600);
    })
    .await;
    let http = client();
    let base = server.url();
    for n in 1..=3 {
        publish(&http, &base, TOPIC, format!("backlog {n}")).await;
    }
    publish(&http, &base, TOPIC, "he said \"hi\"\n\tü € \u{1F600} \\").await;
    publish(&http, &base, TOPIC, vec![0xff, 0x00, 0x80, b'x']).await;
    publish(&http, &base, TOPIC, "end").await;
    server
}

/// A socket speaking `protocol` with operation `s` subscribed.
async fn subscribed(
    server: &ServerHandle,
    protocol: &'static str,
    (query, name, variables): &(&str, Option<&str>, Value),
) -> Ws {
    let mut ws = init(gql_ws::connect(server.addr, protocol, None).await).await;
    let start = if protocol == "graphql-ws" {
        "start"
    } else {
        "subscribe"
    };
    let payload = json!({ "query": query, "operationName": name, "variables": variables });
    send_json(
        &mut ws,
        json!({ "type": start, "id": "s", "payload": payload }),
    )
    .await;
    ws
}

/// The next item's payload exactly as sent: the text after the message's `"payload":`.
async fn next_payload(ws: &mut Ws, kind: &str) -> String {
    let text = within("the next item", STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected an item, got {other:?}"),
            }
        }
    })
    .await;
    let prefix = format!(r#"{{"type":"{kind}","id":"s","payload":"#);
    let payload = text
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("not a {kind} message for s: {text}"));
    payload.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_items_are_the_bytes_async_graphql_writes() {
    let server = server(4096).await;
    for operation in operations() {
        let mut direct = subscribed(&server, "graphql-transport-ws", &operation).await;
        let mut executed = subscribed(&server, "graphql-ws", &operation).await;
        // The gap, then events 3 to 6.
        for item in 0..5 {
            let ours = next_payload(&mut direct, "next").await;
            let theirs = next_payload(&mut executed, "data").await;
            assert_eq!(ours, theirs, "item {item} of {}", operation.0);
            assert!(!ours.contains("errors"), "{ours}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_lag_is_the_error_async_graphql_writes() {
    let server = server(1).await;
    // An aliased root field on the second line: the error's location and path name it.
    let operation = (
        "subscription($topic: String!)\n  { feed: events(topic: $topic) { event { seq } } }",
        None,
        json!({ "topic": TOPIC }),
    );
    let mut direct = subscribed(&server, "graphql-transport-ws", &operation).await;
    let mut executed = subscribed(&server, "graphql-ws", &operation).await;
    common::wait_until("both subscriptions to be open", STEP, || {
        server
            .state
            .metrics
            .render()
            .contains("commbench_active{pattern=\"graphql\"} 2")
    })
    .await;
    common::publish_burst(&server, TOPIC, 2_000).await;
    let mut errors = Vec::new();
    for (ws, kind) in [(&mut direct, "next"), (&mut executed, "data")] {
        let error = loop {
            let payload: Value = serde_json::from_str(&next_payload(ws, kind).await).unwrap();
            if payload.get("errors").is_some() {
                break payload;
            }
        };
        errors.push(error);
    }
    // How many each missed depends on timing; everything else is the same answer.
    for error in &mut errors {
        let missed = &mut error["errors"][0]["extensions"]["missed"];
        assert!(missed.as_u64().unwrap() > 0, "{error}");
        *missed = json!("n");
    }
    assert_eq!(errors[0], errors[1]);
    assert_eq!(errors[0]["errors"][0]["path"], json!(["feed"]));
    assert_eq!(
        errors[0]["errors"][0]["locations"],
        json!([{ "line": 2, "column": 5 }])
    );
}
