//! Malformed, misshapen and lying bodies on every route that reads one: JSON that is not the
//! documented object (arrays above all: serde would fill a struct from one), bodies that stall, and
//! `Content-Length`s far beyond `--max-body`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commbench_servers::metrics::RejectReason;
use common::{
    client, post,
    raw_http::{first_answer, until_closed},
    spawn_default, spawn_with, within, ws_connect, ws_send, ws_text, STEP,
};
use serde_json::json;

/// JSON that is not an object, or not JSON at all.
const NOT_OBJECTS: [&str; 8] = [
    r#"["premium",5]"#,
    "[]",
    r#"["1.x"]"#,
    "null",
    "5",
    r#""premium""#,
    "{",
    "\u{0}",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_route_takes_only_its_documented_object() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let routes = [
        format!("{base}/queues/q/jobs"),
        format!("{base}/queues/q/jobs/1.abc/ack"),
        format!("{base}/graphql"),
    ];
    for url in &routes {
        for body in NOT_OBJECTS {
            let reply = post(&http, url, body).await;
            let error = reply.assert_error(400, "bad_message");
            assert!(
                error["detail"].as_str().unwrap().contains("object")
                    || body == "{"
                    || body.starts_with('\u{0}'),
                "{url} {body:?}: {error}"
            );
        }
    }
    let refused = routes.len() * NOT_OBJECTS.len();
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::BadMessage),
        refused as u64
    );
    // Nothing was enqueued by any of them; the documented shapes still work.
    let stats = common::get(&http, &format!("{base}/queues/q/stats")).await;
    assert_eq!(stats.json()["submitted"], 0, "{}", stats.text());
    assert_eq!(post(&http, &routes[0], "").await.status, 202);
    let premium = post(&http, &routes[0], r#"{"lane":"premium","work_ms":5}"#).await;
    assert_eq!(premium.status, 202, "{}", premium.text());
    assert_eq!(premium.json()["lane"], "premium");

    // A WebSocket control message is a JSON object too: an array gets an error, not a subscription.
    let mut ws = ws_connect(&server).await;
    for body in [r#"["subscribe","t"]"#, "[]", "null"] {
        within(
            "a WebSocket send",
            STEP,
            futures_util::SinkExt::send(
                &mut ws,
                tokio_tungstenite::tungstenite::Message::text(body),
            ),
        )
        .await
        .unwrap();
        let error = ws_text(&mut ws).await;
        assert_eq!(error["type"], "error", "{body}: {error}");
        assert_eq!(error["error"], "bad_message", "{body}: {error}");
    }
    ws_send(&mut ws, json!({ "type": "subscribe", "topic": "t" })).await;
    assert_eq!(ws_text(&mut ws).await["type"], "subscribed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let server = spawn_with(|c| c.body_timeout = Duration::from_millis(500)).await;
    let stalled = b"POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
    let answer = until_closed(server.addr, stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("\"request_timeout\""), "{answer:?}");
    assert!(answer.contains("--body-timeout"), "{answer:?}");
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::RequestTimeout),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_arrives() {
    let server = spawn_default().await;
    // Each declares far more than --max-body and sends two bytes: refused at once, not after
    // waiting for --max-body + 1 bytes that never come.
    for declared in ["65537", "1000000000000", "18446744073709551613"] {
        for path in ["/queues/q/jobs", "/publish/t", "/graphql", "/rpc"] {
            let request = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n{{}}"
            );
            let answer =
                first_answer(server.addr, request.as_bytes(), Duration::from_secs(2)).await;
            assert!(
                answer.starts_with("HTTP/1.1 413"),
                "{path} {declared}: {answer:?}"
            );
            assert!(answer.contains("\"payload_too_large\""), "{answer:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_hyper_refuses_before_any_route_get_the_documented_status() {
    let server = spawn_default().await;
    // Above 2^64 − 3 hyper's parser answers before any route runs (the README's limits table):
    // 431 for the two largest u64 values, 400 beyond u64. Empty bodies, the connection closed, and
    // the server unharmed.
    for (declared, status) in [
        ("18446744073709551615", "431"),
        ("18446744073709551614", "431"),
        ("99999999999999999999", "400"),
    ] {
        let request =
            format!("POST /publish/t HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\nab");
        let answer = until_closed(server.addr, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{declared}: {answer:?}"
        );
    }
    // The same for a head over hyper's buffer (about 400 KiB) or with more than 100 headers: 431.
    let long = format!(
        "GET /hello HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(512 << 10)
    );
    let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET /hello HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    for request in [long, many] {
        let answer = until_closed(server.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    }
    let reply = common::get(&client(), &format!("{}/hello", server.url())).await;
    assert_eq!(reply.status, 200);
}
