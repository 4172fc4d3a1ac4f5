//! Request-response: `GET /hello`, `POST /hello` and `POST /rpc`, plus the health check.

#![allow(clippy::unwrap_used)]

mod common;

use commbench_servers::metrics::RejectReason;
use common::{client, get, post, spawn_default, spawn_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_hello_answers_world() {
    let server = spawn_default().await;
    let reply = get(&client(), &format!("{}/hello", server.url())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "world");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_hello_ping_answers_pong() {
    let server = spawn_default().await;
    let reply = post(&client(), &format!("{}/hello", server.url()), "ping").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_hello_with_another_body_is_400() {
    let server = spawn_default().await;
    let http = client();
    let url = format!("{}/hello", server.url());
    let before = server
        .state
        .metrics
        .rejected_count(RejectReason::BadMessage);
    for body in ["pong", "ping ", "PING", ""] {
        post(&http, &url, body)
            .await
            .assert_error(400, "bad_message");
    }
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::BadMessage),
        before + 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_echoes_text_and_binary_bytes_exactly() {
    let server = spawn_default().await;
    let http = client();
    let url = format!("{}/rpc", server.url());

    let text = "héllo \"rpc\"\n\0 end".as_bytes().to_vec();
    let reply = post(&http, &url, text.clone()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.to_vec(), text);

    let binary: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let reply = post(&http, &url, binary.clone()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), binary.len());
    assert_eq!(reply.body.to_vec(), binary);

    let reply = post(&http, &url, Vec::new()).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());

    // The byte counters include at least the bodies moved.
    let metrics = &server.state.metrics;
    let received = metrics
        .bytes_received
        .load(std::sync::atomic::Ordering::Relaxed);
    let sent = metrics
        .bytes_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    let bodies = (text.len() + binary.len()) as u64;
    assert!(received >= bodies, "bytes_received {received} < {bodies}");
    assert!(sent >= bodies, "bytes_sent {sent} < {bodies}");
    assert!(server
        .state
        .metrics
        .render()
        .contains("commbench_requests_total{pattern=\"request_response\"} 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_body_over_max_body_is_413_and_at_the_limit_is_echoed() {
    let server = spawn_with(|c| c.max_body = 1024).await;
    let http = client();
    let url = format!("{}/rpc", server.url());

    let exact = vec![b'x'; 1024];
    let reply = post(&http, &url, exact.clone()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.to_vec(), exact);

    let before = server
        .state
        .metrics
        .rejected_count(RejectReason::PayloadTooLarge);
    post(&http, &url, vec![b'x'; 1025])
        .await
        .assert_error(413, "payload_too_large");
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::PayloadTooLarge),
        before + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_ok() {
    let server = spawn_default().await;
    let reply = get(&client(), &format!("{}/health", server.url())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok");
}
