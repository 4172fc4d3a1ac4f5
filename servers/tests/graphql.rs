//! GraphQL on `POST /graphql` (queries, mutations) and `GET /graphql/ws` (subscriptions over
//! graphql-transport-ws): results, cursors and gaps, GraphQL errors, limits, lag and shutdown.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use commbench_servers::{
    metrics::{PatternKind, RejectReason},
    patterns::graphql,
    ServerHandle,
};
use common::{
    client, eventually, get,
    gql_ws::{self, init, next_in, next_json, send_json, In},
    poll, post, publish, seqs, spawn_default, spawn_with, wait_until, within, Reply, Ws, STEP,
};
use futures_util::StreamExt;
use serde_json::{json, Value};

const PAGE: &str = "query($topic: String!, $after: Int!, $limit: Int) {
    events(topic: $topic, after: $after, limit: $limit) {
        topic head more gap { after oldest } events { topic seq data dataB64 }
    }
}";

const FEED: &str = "subscription($topic: String!, $after: Int) {
    events(topic: $topic, after: $after) { event { topic seq data dataB64 } gap { after oldest } }
}";

/// `POST /graphql` with `{query, variables}`; returns the whole answer.
async fn gql(server: &ServerHandle, query: &str, variables: Value) -> Reply {
    let body = json!({ "query": query, "variables": variables }).to_string();
    post(&client(), &format!("{}/graphql", server.url()), body).await
}

/// A GraphQL answer without errors; returns its `data`.
async fn gql_data(server: &ServerHandle, query: &str, variables: Value) -> Value {
    let reply = gql(server, query, variables).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.contains("json"), "{content_type}");
    let body = reply.json();
    assert!(body.get("errors").is_none(), "unexpected errors: {body}");
    body["data"].clone()
}

/// A GraphQL answer with errors; returns the first error (message and extensions).
async fn gql_error(server: &ServerHandle, query: &str, variables: Value) -> Value {
    let reply = gql(server, query, variables).await;
    assert!(
        reply.status == 200 || reply.status == 400,
        "{} {}",
        reply.status,
        reply.text()
    );
    let body = reply.json();
    let errors = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array: {body}"));
    assert!(!errors.is_empty(), "{body}");
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "error without a message: {body}");
    errors[0].clone()
}

async fn page(server: &ServerHandle, topic: &str, after: u64, limit: Option<u64>) -> Value {
    let vars = json!({ "topic": topic, "after": after, "limit": limit });
    gql_data(server, PAGE, vars).await["events"].clone()
}

fn page_seqs(page: &Value) -> Vec<u64> {
    seqs(page)
}

fn rejected(server: &ServerHandle, reason: RejectReason) -> u64 {
    server.state.metrics.rejected_count(reason)
}

fn metric_line(server: &ServerHandle, line: &str) -> bool {
    server.state.metrics.render().lines().any(|l| l == line)
}

// ---------------------------------------------------------------------------------------------
// graphql-transport-ws client
// ---------------------------------------------------------------------------------------------

/// Opens `/graphql/ws` offering graphql-transport-ws.
async fn gql_ws_connect(server: &ServerHandle) -> Ws {
    connect_with_recv_buffer(server, None).await
}

async fn connect_with_recv_buffer(server: &ServerHandle, recv_buffer: Option<u32>) -> Ws {
    gql_ws::connect(server.addr, "graphql-transport-ws", recv_buffer).await
}

/// connection_init → connection_ack.
async fn gql_ws_open(server: &ServerHandle) -> Ws {
    init(gql_ws_connect(server).await).await
}

async fn subscribe(ws: &mut Ws, id: &str, topic: &str, after: Option<u64>) {
    let message = json!({
        "id": id,
        "type": "subscribe",
        "payload": { "query": FEED, "variables": { "topic": topic, "after": after } },
    });
    send_json(ws, message).await;
}

/// The next `next` message for `id`; returns its payload (`{data}` or `{errors}`).
async fn next_payload(ws: &mut Ws, id: &str) -> Value {
    let message = next_json(ws).await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], id, "{message}");
    message["payload"].clone()
}

/// The next FeedItem of subscription `id` (no errors allowed).
async fn next_item(ws: &mut Ws, id: &str) -> Value {
    let payload = next_payload(ws, id).await;
    assert!(payload.get("errors").is_none(), "{payload}");
    payload["data"]["events"].clone()
}

/// The next FeedItem, which must be an event; returns the event.
async fn next_event(ws: &mut Ws, id: &str) -> Value {
    let item = next_item(ws, id).await;
    assert!(item["gap"].is_null(), "{item}");
    assert!(item["event"].is_object(), "{item}");
    item["event"].clone()
}

/// Waits until the server counts `n` open GraphQL subscriptions, i.e. they are live on the bus.
async fn until_subscribed(server: &ServerHandle, n: usize) {
    let line = format!("commbench_active{{pattern=\"graphql\"}} {n}");
    wait_until("the subscription to be open", STEP, || {
        metric_line(server, &line)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Schema and queries
// ---------------------------------------------------------------------------------------------

#[test]
fn schema_sdl_matches_the_contract() {
    let sdl = graphql::sdl();
    println!("{sdl}");
    let squashed: String = sdl.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "type Query { events(topic: String!, after: Int! = 0, limit: Int): EventPage! }",
        "type Mutation { publish(topic: String!, payload: String!): Published! }",
        "type Subscription { events(topic: String!, after: Int): FeedItem! }",
        "type Event { topic: String! seq: Int! data: String dataB64: String }",
        "type Gap { after: Int! oldest: Int! }",
        "type EventPage { topic: String! head: Int! more: Boolean! gap: Gap events: [Event!]! }",
        "type Published { topic: String! seq: Int! }",
        "type FeedItem { event: Event gap: Gap }",
    ] {
        // The SDL carries doc strings; compare the declarations without them.
        let without_docs = squashed
            .split("\"\"\"")
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect::<Vec<_>>()
            .join(" ");
        let without_docs = without_docs
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            without_docs.contains(expected),
            "{expected:?} missing from the SDL:\n{sdl}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_returns_events_in_order_with_head_more_and_gap() {
    let server = spawn_default().await;
    let http = client();
    for i in 1..=5 {
        publish(&http, &server.url(), "news", format!("item {i}")).await;
    }
    let all = page(&server, "news", 0, None).await;
    assert_eq!(all["topic"], "news");
    assert_eq!(all["head"], 5);
    assert_eq!(all["more"], false);
    assert!(all["gap"].is_null(), "{all}");
    assert_eq!(page_seqs(&all), [1, 2, 3, 4, 5]);
    assert_eq!(all["events"][2]["data"], "item 3");
    assert!(all["events"][2]["dataB64"].is_null());
    assert_eq!(all["events"][2]["topic"], "news");

    let capped = page(&server, "news", 1, Some(2)).await;
    assert_eq!(page_seqs(&capped), [2, 3]);
    assert_eq!(
        (capped["head"].as_u64(), capped["more"].as_bool()),
        (Some(5), Some(true))
    );

    let caught_up = page(&server, "news", 5, None).await;
    assert_eq!(page_seqs(&caught_up), Vec::<u64>::new());
    assert_eq!(caught_up["more"], false);

    // A topic nobody published to reads as empty, like GET /poll.
    let empty = page(&server, "quiet", 0, None).await;
    assert_eq!(
        (empty["head"].as_u64(), page_seqs(&empty).len()),
        (Some(0), 0)
    );

    // `after` defaults to 0.
    let data = gql_data(
        &server,
        "{ events(topic: \"news\") { head events { seq } } }",
        json!({}),
    )
    .await;
    assert_eq!(data["events"]["events"].as_array().map(Vec::len), Some(5));
    assert!(metric_line(
        &server,
        "commbench_events_delivered_total{pattern=\"graphql\"} 12"
    ));
    assert!(metric_line(
        &server,
        "commbench_requests_total{pattern=\"graphql\"} 5"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_reports_a_gap_and_binary_payloads_as_base64() {
    let server = spawn_with(|c| c.history = 3).await;
    let http = client();
    for _ in 0..9 {
        publish(&http, &server.url(), "t", "x").await;
    }
    publish(&http, &server.url(), "t", vec![0xff, 0x00, 0x80]).await;
    let answer = page(&server, "t", 2, None).await;
    assert_eq!(answer["gap"], json!({ "after": 2, "oldest": 8 }));
    assert_eq!(page_seqs(&answer), [8, 9, 10]);
    let binary = &answer["events"][2];
    assert!(binary["data"].is_null(), "{binary}");
    assert_eq!(binary["dataB64"], "/wCA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_limit_defaults_to_and_is_capped_by_poll_max_events() {
    let server = spawn_with(|c| c.poll_max_events = 3).await;
    let http = client();
    for _ in 0..5 {
        publish(&http, &server.url(), "t", "x").await;
    }
    let answer = page(&server, "t", 0, None).await;
    assert_eq!(
        (page_seqs(&answer), answer["more"].as_bool()),
        (vec![1, 2, 3], Some(true))
    );
    for limit in [0, 4, i64::MAX as u64] {
        let vars = json!({ "topic": "t", "after": 0, "limit": limit });
        let error = gql_error(&server, PAGE, vars).await;
        assert_eq!(error["extensions"]["code"], "bad_query", "{error}");
        assert!(
            error["message"].as_str().unwrap().contains("allowed 1..=3"),
            "{error}"
        );
    }
    assert_eq!(rejected(&server, RejectReason::BadQuery), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutation_publishes_to_the_shared_feed() {
    let server = spawn_default().await;
    let http = client();
    publish(&http, &server.url(), "room", "by http").await;
    let mutation = "mutation($topic: String!, $payload: String!) {
        publish(topic: $topic, payload: $payload) { topic seq }
    }";
    let data = gql_data(
        &server,
        mutation,
        json!({ "topic": "room", "payload": "by graphql" }),
    )
    .await;
    assert_eq!(data["publish"], json!({ "topic": "room", "seq": 2 }));

    let polled = poll(&http, &server.url(), "room", "after=1").await;
    assert_eq!(seqs(&polled), [2]);
    assert_eq!(polled["events"][0]["data"], "by graphql");
    let queried = page(&server, "room", 1, None).await;
    assert_eq!(queried["events"][0]["data"], "by graphql");
    assert!(metric_line(&server, "commbench_events_published_total 2"));

    let error = gql_error(
        &server,
        mutation,
        json!({ "topic": "no spaces", "payload": "x" }),
    )
    .await;
    assert_eq!(error["extensions"]["code"], "bad_topic", "{error}");
}

// ---------------------------------------------------------------------------------------------
// Bad input and limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queries_get_graphql_errors_with_useful_messages() {
    let server = spawn_default().await;
    publish(&client(), &server.url(), "t", "x").await;

    let syntax = gql_error(&server, "{ events(topic: \"t\") { head ", json!({})).await;
    assert_eq!(syntax["extensions"]["code"], "bad_query", "{syntax}");
    assert!(
        syntax["message"].as_str().unwrap().contains("expected"),
        "{syntax}"
    );

    let unknown = gql_error(&server, "{ events(topic: \"t\") { nope } }", json!({})).await;
    assert_eq!(unknown["extensions"]["code"], "bad_query", "{unknown}");
    assert!(
        unknown["message"].as_str().unwrap().contains("nope"),
        "{unknown}"
    );

    let bad_topic = gql_error(&server, PAGE, json!({ "topic": "a/b", "after": 0 })).await;
    assert_eq!(bad_topic["extensions"]["code"], "bad_topic");
    assert!(
        bad_topic["message"].as_str().unwrap().contains("'/'"),
        "{bad_topic}"
    );

    let ahead = gql_error(&server, PAGE, json!({ "topic": "t", "after": 9 })).await;
    assert_eq!(ahead["extensions"]["code"], "cursor_ahead");
    assert!(
        ahead["message"].as_str().unwrap().contains("ahead"),
        "{ahead}"
    );

    // Cursors are u64 but GraphQL Ints here reach i64::MAX: the largest is just another cursor
    // ahead of the head, and anything larger is refused by validation (no panic either way).
    let huge = gql_error(&server, PAGE, json!({ "topic": "t", "after": i64::MAX })).await;
    assert_eq!(huge["extensions"]["code"], "cursor_ahead", "{huge}");
    let too_big = gql_error(&server, PAGE, json!({ "topic": "t", "after": u64::MAX })).await;
    assert_eq!(too_big["extensions"]["code"], "bad_query", "{too_big}");
    assert!(
        too_big["message"].as_str().unwrap().contains("Int"),
        "{too_big}"
    );
    let negative = gql_error(&server, PAGE, json!({ "topic": "t", "after": -1 })).await;
    assert_eq!(negative["extensions"]["code"], "bad_query", "{negative}");
    assert!(
        negative["message"].as_str().unwrap().contains("Int"),
        "{negative}"
    );

    let missing = gql_error(&server, "{ events { head } }", json!({})).await;
    assert_eq!(missing["extensions"]["code"], "bad_query", "{missing}");
    assert!(
        missing["message"].as_str().unwrap().contains("topic"),
        "{missing}"
    );

    // Subscriptions need the WebSocket.
    let over_http = gql_error(&server, FEED, json!({ "topic": "t" })).await;
    assert_eq!(over_http["extensions"]["code"], "bad_query", "{over_http}");
    assert!(
        over_http["message"]
            .as_str()
            .unwrap()
            .contains("not supported"),
        "{over_http}"
    );

    assert_eq!(rejected(&server, RejectReason::BadTopic), 1);
    assert_eq!(rejected(&server, RejectReason::CursorAhead), 2);
    assert_eq!(rejected(&server, RejectReason::BadQuery), 6);

    // A body that is no GraphQL request at all gets the server's usual JSON error.
    let url = format!("{}/graphql", server.url());
    post(&client(), &url, "not json")
        .await
        .assert_error(400, "bad_message");
    post(&client(), &url, "[{\"query\": \"{ __typename }\"}]")
        .await
        .assert_error(400, "bad_message");
    get(&client(), &url)
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_deep_and_too_complex_queries_are_refused() {
    let server = spawn_default().await;
    let depth = graphql::MAX_DEPTH;
    let complexity = graphql::MAX_COMPLEXITY;

    // Introspection nests freely, so it can go deeper than the schema's own types.
    let mut deep = String::from("__typename");
    for _ in 0..depth {
        deep = format!("ofType {{ {deep} }}");
    }
    let deep = format!("{{ __type(name: \"Event\") {{ {deep} }} }}");
    let error = gql_error(&server, &deep, json!({})).await;
    assert_eq!(error["extensions"]["code"], "too_complex", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("nested"),
        "{error}"
    );

    // Every alias is a separate bus read: the complexity budget caps how many one request makes.
    let aliases: String = (0..complexity)
        .map(|i| format!("a{i}: events(topic: \"t\") {{ head }} "))
        .collect();
    let error = gql_error(&server, &format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(error["extensions"]["code"], "too_complex", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("fields"),
        "{error}"
    );

    // Absurd nesting is refused by the parser's guard without harming the server.
    let nested = format!("{}{}", "{ a ".repeat(10_000), "}".repeat(10_000));
    let reply = gql(&server, &nested, json!({})).await;
    assert!(
        reply.status == 200 || reply.status == 400,
        "{}",
        reply.status
    );
    assert!(reply.json()["errors"].is_array(), "{}", reply.text());
    assert_eq!(
        reply.json()["errors"][0]["extensions"]["code"],
        "bad_query",
        "{}",
        reply.text()
    );

    assert_eq!(rejected(&server, RejectReason::TooComplex), 2);
    assert_eq!(rejected(&server, RejectReason::BadQuery), 1);
    let fine = page(&server, "t", 0, None).await;
    assert_eq!(fine["head"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_messages_are_refused() {
    let server = spawn_with(|c| c.max_body = 1024).await;
    let padding = "x".repeat(2048);
    let body = json!({ "query": "{ __typename }", "variables": { "pad": padding } }).to_string();
    post(&client(), &format!("{}/graphql", server.url()), body)
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(rejected(&server, RejectReason::PayloadTooLarge), 1);

    let mut ws = gql_ws_open(&server).await;
    send_json(
        &mut ws,
        json!({ "type": "ping", "payload": { "pad": padding } }),
    )
    .await;
    match next_in(&mut ws, STEP).await {
        In::Close(code, _) => assert_eq!(code, 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert_eq!(rejected(&server, RejectReason::MessageTooLarge), 1);

    // The server is unharmed.
    let data = gql_data(&server, "{ __typename }", json!({})).await;
    assert_eq!(data["__typename"], "Query");
    assert_eq!(
        get(&client(), &format!("{}/health", server.url()))
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_needs_the_graphql_subprotocol() {
    let server = spawn_default().await;
    let url = format!("ws://{}/graphql/ws", server.addr);
    let refused = within(
        "the refused handshake",
        STEP,
        tokio_tungstenite::connect_async(url),
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 400);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("graphql-transport-ws"), "{body}");
        }
        other => panic!("expected an HTTP 400, got {other:?}"),
    }
    // A plain GET is not an upgrade.
    get(&client(), &format!("{}/graphql/ws", server.url()))
        .await
        .assert_error(400, "bad_query");
}

// ---------------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_delivers_live_events_in_order_until_the_client_completes() {
    let server = spawn_default().await;
    let http = client();
    publish(&http, &server.url(), "news", "before").await;

    let mut ws = gql_ws_open(&server).await;
    subscribe(&mut ws, "1", "news", None).await;
    until_subscribed(&server, 1).await;
    for i in 0..20 {
        publish(&http, &server.url(), "news", format!("item {i}")).await;
    }
    for i in 0..20u64 {
        let event = next_event(&mut ws, "1").await;
        // Live from the head: the event published before subscribing is not replayed.
        assert_eq!(event["seq"], 2 + i, "{event}");
        assert_eq!(event["topic"], "news");
        assert_eq!(event["data"], format!("item {i}"));
    }
    assert!(metric_line(
        &server,
        "commbench_events_delivered_total{pattern=\"graphql\"} 20"
    ));

    send_json(&mut ws, json!({ "id": "1", "type": "complete" })).await;
    // The protocol confirms nothing: the server stops sending for this id.
    until_subscribed(&server, 0).await;
    publish(&http, &server.url(), "news", "after complete").await;
    match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        Err(_) => {}
        Ok(message) => panic!("the server kept sending after complete: {message:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_resumes_after_a_cursor_without_duplicates() {
    let server = spawn_default().await;
    let http = client();
    for i in 1..=5 {
        publish(&http, &server.url(), "t", format!("p{i}")).await;
    }
    let mut ws = gql_ws_open(&server).await;
    subscribe(&mut ws, "resume", "t", Some(2)).await;
    for seq in 3..=5 {
        let event = next_event(&mut ws, "resume").await;
        assert_eq!(
            (event["seq"].as_u64(), event["data"].as_str()),
            (Some(seq), Some(&*format!("p{seq}")))
        );
    }
    for seq in 6..=8 {
        publish(&http, &server.url(), "t", format!("p{seq}")).await;
        assert_eq!(next_event(&mut ws, "resume").await["seq"], seq);
    }
    // Two subscriptions on one socket, told apart by id.
    subscribe(&mut ws, "again", "t", Some(7)).await;
    assert_eq!(next_event(&mut ws, "again").await["seq"], 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_from_a_cursor_out_of_history_starts_with_a_gap() {
    let server = spawn_with(|c| c.history = 3).await;
    let http = client();
    for _ in 0..10 {
        publish(&http, &server.url(), "t", "x").await;
    }
    let mut ws = gql_ws_open(&server).await;
    subscribe(&mut ws, "g", "t", Some(2)).await;
    let gap = next_item(&mut ws, "g").await;
    assert!(gap["event"].is_null(), "{gap}");
    assert_eq!(gap["gap"], json!({ "after": 2, "oldest": 8 }));
    for seq in 8..=10 {
        assert_eq!(next_event(&mut ws, "g").await["seq"], seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_get_errors_then_complete() {
    let server = spawn_with(|c| c.ws_max_subscriptions = 1).await;
    publish(&client(), &server.url(), "t", "x").await;
    let mut ws = gql_ws_open(&server).await;

    subscribe(&mut ws, "bad", "no/slash", None).await;
    let payload = next_payload(&mut ws, "bad").await;
    assert_eq!(
        payload["errors"][0]["extensions"]["code"], "bad_topic",
        "{payload}"
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({ "type": "complete", "id": "bad" })
    );

    subscribe(&mut ws, "ahead", "t", Some(5)).await;
    let payload = next_payload(&mut ws, "ahead").await;
    assert_eq!(
        payload["errors"][0]["extensions"]["code"], "cursor_ahead",
        "{payload}"
    );
    assert_eq!(next_json(&mut ws).await["type"], "complete");

    // One subscription per socket here: the second is refused while the first is open.
    subscribe(&mut ws, "one", "t", None).await;
    until_subscribed(&server, 1).await;
    subscribe(&mut ws, "two", "t", None).await;
    let payload = next_payload(&mut ws, "two").await;
    assert_eq!(
        payload["errors"][0]["extensions"]["code"], "subscription_limit",
        "{payload}"
    );
    assert_eq!(next_json(&mut ws).await["type"], "complete");

    assert_eq!(rejected(&server, RejectReason::BadTopic), 1);
    assert_eq!(rejected(&server, RejectReason::CursorAhead), 1);
    assert_eq!(rejected(&server, RejectReason::SubscriptionLimit), 1);

    // A message outside the protocol closes the socket: 4400.
    send_json(&mut ws, json!({ "type": "shout" })).await;
    match next_in(&mut ws, STEP).await {
        In::Close(code, _) => assert_eq!(code, 4400),
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(rejected(&server, RejectReason::BadMessage), 1);
    until_subscribed(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_gets_lagged_and_its_stream_ends() {
    let server = spawn_with(|c| c.subscriber_buffer = 1).await;
    let mut ws = gql_ws_open(&server).await;
    subscribe(&mut ws, "l", "burst", None).await;
    until_subscribed(&server, 1).await;
    common::publish_burst(&server, "burst", 2_000).await;
    let mut last_seq = 0;
    let error = loop {
        let payload = next_payload(&mut ws, "l").await;
        if let Some(errors) = payload.get("errors") {
            break errors[0].clone();
        }
        let seq = payload["data"]["events"]["event"]["seq"].as_u64().unwrap();
        assert!(seq > last_seq, "out of order: {seq} after {last_seq}");
        last_seq = seq;
    };
    assert_eq!(error["message"], graphql::LAGGED, "{error}");
    assert_eq!(error["extensions"]["code"], "lagged");
    assert!(
        error["extensions"]["missed"].as_u64().unwrap() > 0,
        "{error}"
    );
    assert_eq!(
        next_json(&mut ws).await,
        json!({ "type": "complete", "id": "l" })
    );
    assert_eq!(server.state.metrics.lagged_count(PatternKind::GraphQl), 1);
    // A lag is not a refusal.
    assert_eq!(rejected(&server, RejectReason::BadMessage), 0);
    until_subscribed(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_once_and_others_are_unaffected() {
    let server = spawn_with(|c| {
        c.subscriber_buffer = 8;
        c.send_timeout = Duration::from_millis(500);
    })
    .await;
    let metrics = server.state.metrics.clone();
    let mut fast = gql_ws_open(&server).await;
    subscribe(&mut fast, "f", "firehose", None).await;
    let mut slow = init(connect_with_recv_buffer(&server, Some(4096)).await).await;
    subscribe(&mut slow, "s", "firehose", None).await;
    until_subscribed(&server, 2).await;
    // From here on `slow` is never read until the end.

    let topic = commbench_servers::topic::TopicName::parse("firehose").unwrap();
    let payload = Bytes::from("w".repeat(32 << 10));
    let mut published = 0;
    while metrics.lagged_count(PatternKind::GraphQl) == 0 && published < 640 {
        let seq = server.state.publish(&topic, payload.clone()).await.unwrap();
        published = seq;
        let event = next_event(&mut fast, "f").await;
        assert_eq!(event["seq"], seq);
    }
    let cut_off = eventually(STEP, || metrics.lagged_count(PatternKind::GraphQl) > 0).await;
    assert!(
        cut_off,
        "the stalled client was not cut off after {published} x 32 KiB events"
    );
    // The fast client keeps receiving.
    for _ in 0..5 {
        let seq = server
            .state
            .publish(&topic, Bytes::from_static(b"after"))
            .await
            .unwrap();
        assert_eq!(next_event(&mut fast, "f").await["seq"], seq);
    }
    until_subscribed(&server, 1).await;
    // Counted once, whether the lag or the stalled send noticed first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(metrics.lagged_count(PatternKind::GraphQl), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_end_when_the_server_shuts_down() {
    let server = spawn_with(|c| c.shutdown_grace = Duration::from_secs(2)).await;
    let metrics = server.state.metrics.clone();
    let mut ws = gql_ws_open(&server).await;
    subscribe(&mut ws, "s", "t", None).await;
    until_subscribed(&server, 1).await;

    let stopping = tokio::spawn(server.shutdown());
    assert_eq!(
        next_json(&mut ws).await,
        json!({ "type": "complete", "id": "s" })
    );
    match next_in(&mut ws, STEP).await {
        In::Close(code, _) => assert_eq!(code, 1001),
        other => panic!("expected close 1001, got {other:?}"),
    }
    within("the shutdown", STEP, stopping)
        .await
        .unwrap()
        .unwrap();
    let released = eventually(STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"graphql\"} 0")
    })
    .await;
    assert!(released, "the subscription was not released");
}
