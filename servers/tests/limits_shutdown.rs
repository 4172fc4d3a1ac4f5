//! Server-wide limits and lifecycle: the connection cap (a raw 503) and the graceful shutdown of open
//! streams, held requests and sockets.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use commbench_servers::metrics::{PatternKind, RejectReason};
use common::{
    client, get, publish, spawn_with, sse_subscribe, wait_until, within, ws_close_code, ws_connect,
    ws_subscribe, STEP,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Sends `GET /health` on an open keep-alive connection and reads the complete answer.
async fn health_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within("the health answer", STEP, async {
        let mut chunk = [0u8; 1024];
        // "ok" is the whole body; the answer is complete once it follows the header block.
        while !(answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"ok")) {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    String::from_utf8(answer).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_a_raw_503() {
    let server = spawn_with(|c| c.max_connections = 2).await;
    let metrics = server.state.metrics.clone();

    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert!(health_on(&mut first).await.starts_with("HTTP/1.1 200"));
    assert!(health_on(&mut second).await.starts_with("HTTP/1.1 200"));

    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    within(
        "the refused connection to be answered and closed",
        STEP,
        third.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "third connection got {answer:?}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "connection_limit", "{body}");
    assert_eq!(metrics.rejected_count(RejectReason::ConnectionLimit), 1);

    // The two admitted connections still work.
    assert!(health_on(&mut first).await.starts_with("HTTP/1.1 200"));

    // Closing one frees its slot for a new connection.
    drop(second);
    wait_until("the closed connection's slot to be freed", STEP, || {
        metrics
            .connections_open
            .load(std::sync::atomic::Ordering::Relaxed)
            < 2
    })
    .await;
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    assert!(health_on(&mut fourth).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_answers_held_requests_and_closes_sockets() {
    let server = spawn_with(|c| c.shutdown_grace = Duration::from_secs(3)).await;
    let http = client();
    let base = server.url();
    let metrics = server.state.metrics.clone();
    publish(&http, &base, "t", "before").await;

    let (mut sse, _) = sse_subscribe(&http, &format!("{base}/sse/t"), &[]).await;
    let long_poll = {
        let http = http.clone();
        let url = format!("{base}/longpoll/t?after=1&timeout_ms=60000");
        tokio::spawn(async move { get(&http, &url).await })
    };
    let job = {
        let http = http.clone();
        let base = base.clone();
        tokio::spawn(async move {
            let created =
                common::post(&http, &format!("{base}/jobs?work_ms=60000"), Vec::new()).await;
            assert_eq!(created.status, 202);
            let id = created.json()["id"].as_u64().unwrap();
            get(&http, &format!("{base}/jobs/{id}?wait_ms=60000")).await
        })
    };
    let mut ws = ws_connect(&server).await;
    ws_subscribe(&mut ws, "t", None).await;
    let render = metrics.clone();
    wait_until("the long poll and job wait to be held", STEP, || {
        let text = render.render();
        text.contains("commbench_active{pattern=\"long_poll\"} 1")
            && text.contains("commbench_active{pattern=\"jobs\"} 1")
    })
    .await;

    let started = Instant::now();
    let result = within(
        "ServerHandle::shutdown",
        Duration::from_secs(10),
        server.shutdown(),
    )
    .await;
    let took = started.elapsed();
    assert!(result.is_ok(), "shutdown failed: {result:?}");
    // Everything ended on the shutdown signal, not on the grace timeout.
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");

    let reply = within("the long poll answer", STEP, long_poll)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["events"], serde_json::json!([]));
    assert_eq!(body["head"], 1);

    let reply = within("the job wait answer", STEP, job).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["status"], "pending");

    let frames = sse.read_to_end(STEP).await;
    assert!(
        frames.iter().all(|f| f.is_heartbeat()),
        "unexpected frames at shutdown: {frames:?}"
    );

    assert_eq!(ws_close_code(&mut ws).await, 1001);

    wait_until("every stream to be released", STEP, || {
        let text = metrics.render();
        PatternKind::ALL
            .iter()
            .all(|p| text.contains(&format!("commbench_active{{pattern=\"{}\"}} 0", p.label())))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_of_an_idle_server_is_quick() {
    let server = spawn_with(|_| {}).await;
    let addr = server.addr;
    let started = Instant::now();
    within(
        "ServerHandle::shutdown",
        Duration::from_secs(10),
        server.shutdown(),
    )
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    // The listener is gone.
    let refused = tokio::time::timeout(STEP, TcpStream::connect(addr)).await;
    assert!(
        matches!(refused, Ok(Err(_))),
        "still accepting after shutdown: {refused:?}"
    );
}
