//! Server-sent events: `GET /sse/{topic}` with `?after=` / `Last-Event-ID` resume, gaps, heartbeats
//! and the cut-off of a subscriber that stops reading.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commbench_servers::metrics::{PatternKind, RejectReason};
use common::{
    client, eventually, publish, spawn_default, spawn_with, sse_open, sse_subscribe, wait_until,
    within, STEP,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};

fn sse_url(base: &str, topic: &str, query: &str) -> String {
    format!("{base}/sse/{topic}{query}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_stream_starts_at_the_head_and_delivers_every_event_in_order() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    for _ in 0..3 {
        publish(&http, &base, "live", "before").await;
    }
    let (mut stream, hello) = sse_subscribe(&http, &sse_url(&base, "live", ""), &[]).await;
    assert_eq!(hello["topic"], "live");
    assert_eq!(hello["after"], 3);
    assert_eq!(hello["head"], 3);

    const N: u64 = 200;
    let publisher = {
        let http = http.clone();
        let base = base.clone();
        tokio::spawn(async move {
            for i in 0..N {
                publish(&http, &base, "live", format!("event {i}")).await;
            }
        })
    };
    for i in 0..N {
        let event = stream.next_event().await;
        assert_eq!(event["seq"], 4 + i, "{event}");
        assert_eq!(event["topic"], "live");
        assert_eq!(event["data"], format!("event {i}"));
    }
    within("the publisher", STEP, publisher).await.unwrap();
    // Nothing more than what was published.
    let extra = tokio::time::timeout(Duration::from_millis(300), stream.next_non_heartbeat()).await;
    assert!(extra.is_err(), "unexpected extra frame {extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_after_replays_then_follows_without_duplicates() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    for i in 1..=5 {
        publish(&http, &base, "t", format!("p{i}")).await;
    }
    let (mut stream, hello) = sse_subscribe(&http, &sse_url(&base, "t", "?after=2"), &[]).await;
    assert_eq!(hello["after"], 2);
    assert_eq!(hello["head"], 5);
    for seq in 3..=5 {
        let event = stream.next_event().await;
        assert_eq!(event["seq"], seq);
        assert_eq!(event["data"], format!("p{seq}"));
    }
    for seq in 6..=8 {
        assert_eq!(publish(&http, &base, "t", format!("p{seq}")).await, seq);
        assert_eq!(stream.next_event().await["seq"], seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_zero_replays_the_whole_history() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    for _ in 0..4 {
        publish(&http, &base, "t", "x").await;
    }
    let (mut stream, hello) = sse_subscribe(&http, &sse_url(&base, "t", "?after=0"), &[]).await;
    assert_eq!(hello["after"], 0);
    for seq in 1..=4 {
        assert_eq!(stream.next_event().await["seq"], seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_with_last_event_id_loses_nothing_and_repeats_nothing() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let url = sse_url(&base, "t", "?after=0");
    let (mut first, _) = sse_subscribe(&http, &url, &[]).await;
    for seq in 1..=5 {
        publish(&http, &base, "t", format!("p{seq}")).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(first.next_event().await["seq"].as_u64().unwrap());
    }
    drop(first);
    // Published while disconnected.
    for seq in 6..=7 {
        publish(&http, &base, "t", format!("p{seq}")).await;
    }
    // A reconnecting EventSource repeats its URL (?after=0) and adds Last-Event-ID: that wins.
    let last = seen.last().unwrap().to_string();
    let (mut second, hello) = sse_subscribe(&http, &url, &[("Last-Event-ID", &last)]).await;
    assert_eq!(hello["after"], 3, "{hello}");
    assert_eq!(hello["head"], 7);
    for _ in 0..4 {
        seen.push(second.next_event().await["seq"].as_u64().unwrap());
    }
    publish(&http, &base, "t", "p8").await;
    seen.push(second.next_event().await["seq"].as_u64().unwrap());
    assert_eq!(seen, (1..=8).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_wins_over_after() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    for _ in 0..6 {
        publish(&http, &base, "t", "x").await;
    }
    let (mut stream, hello) = sse_subscribe(
        &http,
        &sse_url(&base, "t", "?after=1"),
        &[("Last-Event-ID", "4")],
    )
    .await;
    assert_eq!(hello["after"], 4);
    assert_eq!(stream.next_event().await["seq"], 5);
    assert_eq!(stream.next_event().await["seq"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_frame_when_the_cursor_fell_out_of_history() {
    let server = spawn_with(|c| c.history = 3).await;
    let http = client();
    let base = server.url();
    for _ in 0..10 {
        publish(&http, &base, "t", "x").await;
    }
    let (mut stream, hello) = sse_subscribe(&http, &sse_url(&base, "t", "?after=2"), &[]).await;
    assert_eq!(hello["after"], 2);
    assert_eq!(hello["head"], 10);
    let gap = stream.next_non_heartbeat().await.unwrap();
    assert_eq!(gap.event.as_deref(), Some("gap"), "{gap:?}");
    assert!(
        gap.id.is_none(),
        "a gap frame must not move the cursor: {gap:?}"
    );
    let data = gap.json();
    assert_eq!(data["after"], 2);
    assert_eq!(data["oldest"], 8);
    for seq in 8..=10 {
        assert_eq!(stream.next_event().await["seq"], seq);
    }
    publish(&http, &base, "t", "x").await;
    assert_eq!(stream.next_event().await["seq"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_arrive_while_idle() {
    let server = spawn_with(|c| c.heartbeat = Duration::from_millis(100)).await;
    let http = client();
    let (mut stream, _) = sse_subscribe(&http, &sse_url(&server.url(), "quiet", ""), &[]).await;
    let mut heartbeats = 0;
    within("three heartbeats", STEP, async {
        while heartbeats < 3 {
            let frame = stream.next_frame().await.expect("stream ended");
            assert!(frame.is_heartbeat(), "unexpected frame {frame:?}");
            heartbeats += 1;
        }
    })
    .await;
    // Events still flow between heartbeats.
    publish(&http, &server.url(), "quiet", "x").await;
    assert_eq!(stream.next_event().await["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_before_streaming() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "t", "x").await;
    let refused = |result: Result<common::SseStream, common::Reply>| match result {
        Ok(_) => panic!("expected the SSE request to be refused"),
        Err(reply) => reply,
    };
    refused(sse_open(&http, &sse_url(&base, "t", "?after=2"), &[]).await)
        .assert_error(400, "cursor_ahead");
    refused(sse_open(&http, &sse_url(&base, "t", ""), &[("Last-Event-ID", "9")]).await)
        .assert_error(400, "cursor_ahead");
    refused(
        sse_open(
            &http,
            &sse_url(&base, "t", ""),
            &[("Last-Event-ID", "seven")],
        )
        .await,
    )
    .assert_error(400, "bad_query");
    refused(sse_open(&http, &sse_url(&base, "t", "?after=x"), &[]).await)
        .assert_error(400, "bad_query");
    refused(sse_open(&http, &sse_url(&base, "t", "?from=1"), &[]).await)
        .assert_error(400, "bad_query");
    refused(sse_open(&http, &sse_url(&base, "a%20b", ""), &[]).await)
        .assert_error(400, "bad_topic");
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::CursorAhead),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_stream_frees_the_subscriber() {
    let server = spawn_with(|c| c.heartbeat = Duration::from_millis(100)).await;
    let http = client();
    let metrics = server.state.metrics.clone();
    let (stream, _) = sse_subscribe(&http, &sse_url(&server.url(), "t", ""), &[]).await;
    assert!(metrics
        .render()
        .contains("commbench_active{pattern=\"sse\"} 1"));
    drop(stream);
    wait_until("the SSE stream to be released", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"sse\"} 0")
    })
    .await;
}

/// Opens `GET /sse/{topic}` on a raw socket with a small receive buffer, reads until the
/// `subscribed` frame and returns the socket, which the caller then stops reading.
async fn raw_sse_subscriber(addr: std::net::SocketAddr, topic: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = within("raw connect", STEP, socket.connect(addr))
        .await
        .unwrap();
    let request =
        format!("GET /sse/{topic} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    within("the raw subscriber's subscribed frame", STEP, async {
        let mut chunk = [0u8; 1024];
        while !contains(&head, b"event: subscribed") {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "connection closed: {:?}",
                String::from_utf8_lossy(&head)
            );
            head.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    stream
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// How draining a stalled subscriber's socket ended.
#[derive(Debug, Default)]
struct Drained {
    bytes: usize,
    saw_lagged: bool,
    /// EOF, a reset, or the end of the chunked body.
    ended: bool,
}

async fn drain(stream: &mut TcpStream, limit: Duration) -> Drained {
    let mut out = Drained::default();
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    out.ended = true;
                    return;
                }
                Ok(n) => {
                    out.bytes += n;
                    tail.extend_from_slice(&chunk[..n]);
                    if contains(&tail, b"event: lagged") {
                        out.saw_lagged = true;
                    }
                    // The last chunk of the chunked body: the server ended the stream.
                    if tail.ends_with(b"\r\n0\r\n\r\n") {
                        out.ended = true;
                        return;
                    }
                    // Keep only enough to find a marker split across reads.
                    if tail.len() > 256 {
                        tail.drain(..tail.len() - 256);
                    }
                }
            }
        }
    })
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_is_cut_off_while_a_fast_one_gets_everything() {
    let server = spawn_with(|c| {
        c.subscriber_buffer = 4;
        c.max_body = 64 << 10;
    })
    .await;
    let http = client();
    let base = server.url();
    let metrics = server.state.metrics.clone();

    // The fast subscriber forwards every event it reads; the publisher waits for each one, so the
    // fast subscriber is never more than one event behind.
    let (mut fast, _) = sse_subscribe(&http, &sse_url(&base, "firehose", ""), &[]).await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            match fast.next_non_heartbeat().await {
                Some(frame) => {
                    if seen_tx.send(frame).is_err() {
                        return;
                    }
                }
                None => return,
            }
        }
    });
    let mut slow = raw_sse_subscriber(server.addr, "firehose").await;

    // 32 KiB events: 640 of them (20 MiB) overflow the socket and server buffers many times over.
    const EVENTS: u64 = 640;
    let payload = "s".repeat(32 << 10);
    let mut cut_off_while_stalled = false;
    for seq in 1..=EVENTS {
        assert_eq!(
            publish(&http, &base, "firehose", payload.clone()).await,
            seq
        );
        let frame = within("the fast subscriber's event", STEP, seen_rx.recv())
            .await
            .unwrap_or_else(|| panic!("the fast subscriber's stream ended at seq {seq}"));
        assert!(frame.event.is_none(), "fast subscriber got {frame:?}");
        let event = frame.json();
        assert_eq!(event["seq"], seq);
        assert_eq!(event["data"].as_str().map(str::len), Some(payload.len()));
        if metrics.lagged_count(PatternKind::Sse) > 0 {
            cut_off_while_stalled = true;
        }
    }
    if !cut_off_while_stalled {
        cut_off_while_stalled = eventually(Duration::from_secs(5), || {
            metrics.lagged_count(PatternKind::Sse) > 0
        })
        .await;
    }
    // The fast subscriber is still connected and current.
    assert_eq!(publish(&http, &base, "firehose", "tail").await, EVENTS + 1);
    let frame = within("the fast subscriber's last event", STEP, seen_rx.recv())
        .await
        .unwrap();
    assert_eq!(frame.json()["seq"], EVENTS + 1);

    // Now read the stalled socket: whatever was queued, then the stream must end (lagged).
    let drained = drain(&mut slow, Duration::from_secs(30)).await;
    reader.abort();

    assert!(
        cut_off_while_stalled,
        "a subscriber that stopped reading was not cut off while stalled: lagged_count(Sse) \
         stayed {} after {EVENTS} x 32 KiB events with --subscriber-buffer 4 (after draining \
         its socket: {drained:?})",
        metrics.lagged_count(PatternKind::Sse)
    );
    assert!(
        drained.ended,
        "the stalled subscriber's stream did not end: {drained:?}"
    );
    assert_eq!(
        metrics.lagged_count(PatternKind::Sse),
        1,
        "only the stalled subscriber lags"
    );
}

/// A reference client (npm `eventsource` on Node's own HTTP client, installed by
/// scripts/install-test-deps.sh into servers/tests/js) reads the stream: the handed-over socket's
/// chunking, heartbeats between events, ids, escaped and binary payloads, a chunk over 255 bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_eventsource_client_reads_the_stream() {
    let Some(dir) = common::reference_clients("eventsource") else {
        return;
    };
    let server = spawn_with(|c| c.heartbeat = Duration::from_millis(100)).await;
    let http = client();
    publish(&http, &server.url(), "ref", "before").await;
    let node = tokio::process::Command::new("node")
        .arg("sse.mjs")
        .arg(sse_url(&server.url(), "ref", ""))
        .arg("4")
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let metrics = server.state.metrics.clone();
    wait_until("the reference client to subscribe", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"sse\"} 1")
    })
    .await;
    // Heartbeats go out between the events.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let payloads: [Vec<u8>; 4] = [
        "he said \"hi\"\n\tü".into(),
        vec![0xff, 0x00, 0x80],
        "l".repeat(300).into(),
        "end".into(),
    ];
    for payload in &payloads {
        publish(&http, &server.url(), "ref", payload.clone()).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let output = within("the node client", STEP, node.wait_with_output())
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed: {}\n{out}",
        String::from_utf8_lossy(&output.stderr)
    );
    let received: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(received["subscribed"]["head"], 1, "{out}");
    assert_eq!(received["ids"], serde_json::json!(["2", "3", "4", "5"]));
    let events = &received["events"];
    assert_eq!(events[0]["data"], "he said \"hi\"\n\tü");
    assert_eq!(events[1]["data_b64"], "/wCA");
    assert_eq!(events[2]["data"], "l".repeat(300));
    assert_eq!(events[3]["data"], "end");
    assert_eq!(events[3]["seq"], 5);
}
