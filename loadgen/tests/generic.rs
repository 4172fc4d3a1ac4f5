//! The generic modes for other people's servers (poll-url, sse-url, ws-url), pointed at the
//! commbench server's plain endpoints as a stand-in for "anyone's server".
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commbench_loadgen::record::Metric;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_url_polls_any_url_on_the_interval() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &format!("{}/hello", server.url()),
        &[
            ("patterns", "poll-url"),
            ("clients", "10"),
            ("duration", "2s"),
            ("interval", "100ms"),
        ],
        "poll-url",
    )
    .await;
    let expected = 10.0 * cell.measured_s / 0.1;
    let requests = cell.counters.requests as f64;
    assert!(
        (requests - expected).abs() <= expected * 0.1,
        "{requests} vs {expected}"
    );
    assert_eq!(cell.counters.errors, 0, "{:?}", cell.errors);
    assert!(cell.histograms.contains_key(&Metric::RoundTrip));
    assert!(cell.histograms.contains_key(&Metric::RoundTripUncorrected));
    // `GET /hello` costs its request and response headers plus `world`, every time.
    assert!(cell.counters.bytes_down > cell.counters.requests * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_url_counts_status_codes_as_errors() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &format!("{}/no-such-page", server.url()),
        &[
            ("patterns", "poll-url"),
            ("clients", "2"),
            ("duration", "1s"),
            ("interval", "100ms"),
        ],
        "poll-url-404",
    )
    .await;
    assert!(
        cell.errors.get("http_404").copied().unwrap_or(0) > 5,
        "{:?}",
        cell.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_url_holds_streams_and_counts_messages() {
    let server = common::server(|c| c.heartbeat = Duration::from_millis(200)).await;
    let cell = common::run_one(
        &format!("{}/sse/anything", server.url()),
        &[
            ("patterns", "sse-url"),
            ("clients", "5"),
            ("duration", "1s"),
        ],
        "sse-url",
    )
    .await;
    assert_eq!(cell.counters.errors, 0, "{:?}", cell.errors);
    assert_eq!(cell.counters.connections_peak, 5);
    // Heartbeat comments are not messages; the bytes still count.
    assert!(cell.counters.bytes_down > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_url_sends_its_message_and_records_what_comes_back() {
    let server = common::server(|_| {}).await;
    // Subscribe on connect: each client gets its ack, then join notices as the others arrive.
    let cell = common::run_one(
        &format!("{}/ws", server.url()),
        &[
            ("patterns", "ws-url"),
            ("clients", "5"),
            ("duration", "1s"),
            ("ws_message", r#"{"type":"subscribe","topic":"room"}"#),
        ],
        "ws-url",
    )
    .await;
    assert_eq!(cell.counters.errors, 0, "{:?}", cell.errors);
    assert_eq!(cell.counters.connections_peak, 5);
    assert_eq!(cell.counters.connections_opened, 5);
}

/// Events each connection of the CRLF server sends.
const CRLF_EVENTS: usize = 20;

/// A server that is not commbench: plain TCP, a close-delimited `text/event-stream` body starting
/// with a byte-order mark, every line ended by CRLF and the CR and LF of many line ends in separate
/// writes. Once `clients` streams are open (and the measured window has begun: the run has no
/// warm-up) each gets [`CRLF_EVENTS`] events, then the stream stays open until the client leaves.
async fn crlf_sse_server(clients: usize) -> std::net::SocketAddr {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let open = open.clone();
            tokio::spawn(async move {
                socket.set_nodelay(true).unwrap();
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                                cache-control: no-cache\r\nconnection: close\r\n\r\n\
                                \u{feff}: not commbench\r\nretry: 500\r\n\r\n";
                socket.write_all(response.as_bytes()).await.unwrap();
                open.fetch_add(1, Ordering::SeqCst);
                while open.load(Ordering::SeqCst) < clients {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                for n in 0..CRLF_EVENTS {
                    let frame =
                        format!("id: {n}\r\nevent: tick\r\ndata: {n}\r\ndata: more\r\n\r\n");
                    // Split after every CR: the LF arrives in the next write.
                    for part in frame.split_inclusive('\r') {
                        if socket.write_all(part.as_bytes()).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
                // Hold the stream open until the client hangs up.
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_url_reads_every_event_of_a_server_ending_lines_with_crlf() {
    let clients = 2;
    let addr = crlf_sse_server(clients).await;
    let cell = common::run_one(
        &format!("http://{addr}/events"),
        &[
            ("patterns", "sse-url"),
            ("clients", "2"),
            ("warmup", "0s"),
            ("duration", "4s"),
        ],
        "sse-url-crlf",
    )
    .await;
    assert_eq!(cell.counters.errors, 0, "{:?}", cell.errors);
    assert_eq!(cell.counters.reconnects, 0);
    // The comment-only opening frame is not an event; every `tick` is.
    assert_eq!(
        cell.counters.events_received,
        (clients * CRLF_EVENTS) as u64
    );
    let gaps = &cell.histograms[&Metric::InterArrival];
    assert_eq!(gaps.len(), (clients * (CRLF_EVENTS - 1)) as u64);
}
