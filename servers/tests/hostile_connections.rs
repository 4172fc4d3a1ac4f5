//! Hostile connections: sockets that send a byte and go quiet, idle keep-alive connections, and a
//! server whose open-file limit is below its connection cap. None of them may
//! lock legitimate clients out; streams and held requests are never mistaken for idle.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use commbench_servers::metrics::RejectReason;
use common::{
    child::ChildServer,
    client, get, publish,
    raw_http::{read_until_closed, until_closed},
    spawn_with, sse_subscribe, wait_until, within, ws_connect, ws_subscribe, STEP,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// `GET /hello` until it answers 200; returns how many answers were 503 before.
async fn hello_until_ok(base: &str, limit: Duration) -> usize {
    let http = client();
    let deadline = Instant::now() + limit;
    let mut refused = 0;
    loop {
        let reply = get(&http, &format!("{base}/hello")).await;
        match reply.status {
            200 => return refused,
            503 => refused += 1,
            other => panic!("/hello answered {other}: {}", reply.text()),
        }
        assert!(
            Instant::now() < deadline,
            "/hello still refused after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_send_one_byte_and_go_quiet_do_not_lock_out_the_cap() {
    let server = spawn_with(|c| {
        c.max_connections = 200;
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    let metrics = server.state.metrics.clone();
    let mut quiet = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(b"G").await.unwrap();
        quiet.push(stream);
    }
    wait_until("the 200 quiet sockets to be admitted", STEP, || {
        metrics
            .connections_open
            .load(std::sync::atomic::Ordering::Relaxed)
            == 200
    })
    .await;
    // The cap is full: a legitimate client is refused for now, and let in once the header timeout
    // has cut the quiet sockets off.
    let refused = hello_until_ok(&server.url(), STEP).await;
    assert!(refused > 0, "the cap was never full");
    for stream in &mut quiet {
        let answer = read_until_closed(stream, STEP).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains("\"request_timeout\""), "{answer:?}");
    }
    assert_eq!(metrics.rejected_count(RejectReason::RequestTimeout), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_cut_off_even_while_it_keeps_trickling() {
    let server = spawn_with(|c| c.header_timeout = Duration::from_millis(800)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    // One byte every 200 ms: every read makes progress, but the head never completes in time.
    let mut closed = false;
    for byte in b"GET /hello HTTP/1.1\r\nX-Slow: ".iter().cycle().take(100) {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let answer = read_until_closed(&mut stream, STEP).await;
    assert!(
        closed || String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_but_streams_and_held_requests_do_not() {
    let server = spawn_with(|c| {
        c.idle_timeout = Duration::from_millis(500);
        c.header_timeout = Duration::from_millis(500);
        // No heartbeat traffic during the test: the streams below are silent but not idle.
        c.heartbeat = Duration::from_secs(60);
    })
    .await;
    // A pooled connection would race the server's idle close (the usual keep-alive race): none.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let base = server.url();
    publish(&http, &base, "t", "first").await;

    // An idle keep-alive connection: one request, then nothing; closed without an answer.
    let answer = until_closed(server.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("ok"), "idle close sent more: {answer:?}");
    assert!(common::metric(&server, "commbench_idle_closed_total") >= 1);

    // Silent for four idle timeouts each, yet in progress.
    let (mut sse, _) = sse_subscribe(&http, &format!("{base}/sse/t"), &[]).await;
    let mut ws = ws_connect(&server).await;
    let long_poll = {
        let http = http.clone();
        let url = format!("{base}/longpoll/t?after=1&timeout_ms=2000");
        tokio::spawn(async move { get(&http, &url).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = within("the long poll", STEP, long_poll).await.unwrap();
    assert_eq!(held.status, 200, "{}", held.text());
    assert_eq!(held.json()["events"], serde_json::json!([]));
    ws_subscribe(&mut ws, "t", None).await;
    publish(&http, &base, "t", "second").await;
    assert_eq!(sse.next_event().await["data"], "second");
    assert_eq!(common::ws_event(&mut ws).await["data"], "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_file_limit_below_the_cap_lowers_the_cap_instead_of_hanging_clients() {
    let server = ChildServer::start_with_open_files(256, &["--idle-timeout", "3s"]).await;
    let fitted = 256 - commbench_servers::fd_limit::RESERVED;
    let said = format!("serving at most {fitted} connections");
    let told = common::eventually(STEP, || server.log().contains(&said)).await;
    assert!(
        told,
        "no start-up line about the lowered cap: {}",
        server.log()
    );

    // More quiet sockets than the server has descriptors for.
    let mut quiet = Vec::new();
    for _ in 0..300 {
        quiet.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // A client arriving now (after the flood's own refusals are done) is answered: 503, the cap,
    // instead of hanging in the accept queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answer = until_closed(server.addr, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("\"connection_limit\""), "{answer:?}");

    // Once the idle timeout frees the cap, legitimate requests get through.
    hello_until_ok(&server.url(), STEP).await;
    drop(quiet);
    let log = server.log();
    let accept_failures = log.matches("accept failed").count();
    assert!(
        accept_failures <= 1,
        "{accept_failures} accept failures logged:\n{log}"
    );
    server.kill().await;
}
