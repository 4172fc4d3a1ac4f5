//! The graphql-transport-ws protocol's close codes and hostile message patterns on `/graphql/ws`
//! (enisdenjo/graphql-ws PROTOCOL.md), the legacy `graphql-ws` subprotocol, and a subscription
//! through the reference client (the npm package `graphql-ws`, run by node).

#![allow(clippy::unwrap_used)]

mod common;

use std::{process::Stdio, time::Duration};

use commbench_servers::{metrics::RejectReason, ServerHandle};
use common::{
    client,
    gql_ws::{close_code, connect, init, next_in, next_json, send_json, send_text, In},
    publish, spawn_with, wait_until, within, Ws, STEP,
};
use serde_json::json;

async fn open(server: &ServerHandle) -> Ws {
    connect(server.addr, "graphql-transport-ws", None).await
}

fn subscribe(id: &str, topic: &str) -> serde_json::Value {
    json!({
        "id": id,
        "type": "subscribe",
        "payload": {
            "query": "subscription($t: String!) { events(topic: $t) { event { seq data } } }",
            "variables": { "t": topic },
        },
    })
}

async fn until_subscribed(server: &ServerHandle, n: usize) {
    let line = format!("commbench_active{{pattern=\"graphql\"}} {n}");
    wait_until("the subscriptions to be open", STEP, || {
        server.state.metrics.render().contains(&line)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_the_specified_codes() {
    // Long enough that every other check sends its first message well within it even on a busy
    // machine (a late subscribe would be answered 4408 instead of 4401); the 4408 check waits it out.
    let server = spawn_with(|c| c.graphql_init_timeout = Duration::from_secs(2)).await;

    // Subscribe before connection_init: 4401 Unauthorized.
    let mut ws = open(&server).await;
    send_json(&mut ws, subscribe("1", "t")).await;
    assert_eq!(close_code(&mut ws).await.0, 4401);

    // Malformed or unknown messages: 4400.
    for bad in [
        "not json",
        "[]",
        r#"["subscribe","1"]"#,
        r#"{"type":"shout"}"#,
        r#"{"type":"subscribe","id":"1"}"#,
        r#"{"type":"next","id":"1","payload":{}}"#,
    ] {
        let mut ws = init(open(&server).await).await;
        send_text(&mut ws, bad.to_owned()).await;
        let (code, reason) = close_code(&mut ws).await;
        assert_eq!(code, 4400, "{bad}: {reason}");
        assert!(!reason.is_empty(), "{bad}");
    }

    // A second connection_init: 4429.
    let mut ws = init(open(&server).await).await;
    send_json(&mut ws, json!({ "type": "connection_init" })).await;
    assert_eq!(close_code(&mut ws).await.0, 4429);

    // A duplicate id while the first is active: 4409, naming the id.
    let mut ws = init(open(&server).await).await;
    send_json(&mut ws, subscribe("dup", "t")).await;
    until_subscribed(&server, 1).await;
    send_json(&mut ws, subscribe("dup", "t")).await;
    let (code, reason) = close_code(&mut ws).await;
    assert_eq!(
        (code, reason.as_str()),
        (4409, "Subscriber for dup already exists")
    );
    until_subscribed(&server, 0).await;

    // No connection_init within --graphql-init-timeout: 4408.
    let mut ws = open(&server).await;
    let (code, _) = close_code(&mut ws).await;
    assert_eq!(code, 4408);
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::RequestTimeout),
        1
    );
    // 4401 + six 4400 + 4429 + 4409.
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::BadMessage),
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_even_in_a_flood_and_ids_are_reusable_after_complete() {
    let server = spawn_with(|_| {}).await;
    let http = client();
    let mut ws = open(&server).await;
    // A ping may come before connection_init; the pong echoes its payload.
    send_json(&mut ws, json!({ "type": "ping", "payload": { "n": 0 } })).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({ "type": "pong", "payload": { "n": 0 } })
    );
    let mut ws = init(ws).await;

    // Two thousand pings sent without reading: every one is answered, in order.
    let (mut sink, mut stream) = futures_util::StreamExt::split(ws);
    let flood = tokio::spawn(async move {
        use futures_util::SinkExt;
        for n in 0..2_000 {
            let ping = json!({ "type": "ping", "payload": { "n": n } }).to_string();
            sink.send(tokio_tungstenite::tungstenite::Message::text(ping))
                .await
                .unwrap();
        }
        sink
    });
    for n in 0..2_000 {
        let pong = within("a pong", STEP, futures_util::StreamExt::next(&mut stream))
            .await
            .unwrap()
            .unwrap();
        let pong: serde_json::Value = serde_json::from_str(pong.to_text().unwrap()).unwrap();
        assert_eq!(pong, json!({ "type": "pong", "payload": { "n": n } }));
    }
    let sink = within("the flood", STEP, flood).await.unwrap();
    ws = sink.reunite(stream).unwrap();

    // The socket still works, and an id is free again once its operation completed.
    for _ in 0..2 {
        send_json(&mut ws, subscribe("again", "t")).await;
        until_subscribed(&server, 1).await;
        let seq = publish(&http, &server.url(), "t", "x").await;
        let next = next_json(&mut ws).await;
        assert_eq!(next["type"], "next", "{next}");
        assert_eq!(next["payload"]["data"]["events"]["event"]["seq"], seq);
        send_json(&mut ws, json!({ "type": "complete", "id": "again" })).await;
        until_subscribed(&server, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_then_a_bad_message_still_gets_its_close_frame() {
    let server = spawn_with(|_| {}).await;
    let mut ws = init(open(&server).await).await;
    // Written without reading anything back: 500 pings, then a message outside the protocol.
    for n in 0..500 {
        send_json(&mut ws, json!({ "type": "ping", "payload": { "n": n } })).await;
    }
    send_text(&mut ws, "{\"type\":\"shout\"}".to_owned()).await;
    let mut pongs = 0;
    loop {
        match next_in(&mut ws, STEP).await {
            In::Json(message) => {
                assert_eq!(message["type"], "pong", "{message}");
                pongs += 1;
            }
            In::Close(code, _) => {
                assert_eq!(code, 4400);
                break;
            }
            In::End => panic!("the connection ended without a close frame after {pongs} pongs"),
        }
    }
    assert_eq!(pongs, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_operation_gets_an_error_message_and_the_socket_stays_open() {
    let server = spawn_with(|_| {}).await;
    let mut ws = init(open(&server).await).await;
    let bad = json!({
        "id": "v",
        "type": "subscribe",
        "payload": { "query": "subscription { events(topic: \"t\") { nope } }" },
    });
    send_json(&mut ws, bad).await;
    let error = next_json(&mut ws).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "v");
    assert_eq!(
        error["payload"][0]["extensions"]["code"], "bad_query",
        "{error}"
    );
    // `error` ends the operation: no `complete` follows, and the id is free again.
    send_json(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(next_json(&mut ws).await, json!({ "type": "pong" }));
    send_json(&mut ws, subscribe("v", "t")).await;
    until_subscribed(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_graphql_ws_subprotocol_still_works() {
    let server = spawn_with(|_| {}).await;
    let mut ws = connect(server.addr, "graphql-ws", None).await;
    send_json(&mut ws, json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
    let mut start = subscribe("s", "legacy");
    start["type"] = "start".into();
    send_json(&mut ws, start).await;
    until_subscribed(&server, 1).await;
    let seq = publish(&client(), &server.url(), "legacy", "old").await;
    let data = next_json(&mut ws).await;
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(data["payload"]["data"]["events"]["event"]["seq"], seq);
    send_json(&mut ws, json!({ "type": "stop", "id": "s" })).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({ "type": "complete", "id": "s" })
    );
}

/// The reference client (npm `graphql-ws`, installed by scripts/install-test-deps.sh into
/// servers/tests/js) subscribes, receives events published meanwhile and completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_graphql_ws_client_subscribes_and_receives_events() {
    let Some(dir) = common::reference_clients("graphql-ws") else {
        return;
    };
    let server = spawn_with(|_| {}).await;
    let events = 20;
    let mut node = tokio::process::Command::new("node")
        .arg("subscribe.mjs")
        .arg(format!("ws://{}/graphql/ws", server.addr))
        .arg("ref")
        .arg(events.to_string())
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    until_subscribed(&server, 1).await;
    let http = client();
    for n in 0..events {
        publish(&http, &server.url(), "ref", format!("event {n}")).await;
    }
    let output = within("the node client", STEP, async {
        let status = node.wait().await.unwrap();
        let mut out = String::new();
        let mut err = String::new();
        use tokio::io::AsyncReadExt;
        node.stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        node.stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .await
            .unwrap();
        (status, out, err)
    })
    .await;
    let (status, out, err) = output;
    assert!(status.success(), "node failed: {err}\n{out}");
    let received: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let seqs: Vec<u64> = received["seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=events).collect::<Vec<u64>>(), "{out}");
    assert_eq!(received["data"][0], "event 0");
    until_subscribed(&server, 0).await;
}
