//! The generic modes for other people's servers (poll-url, sse-url, ws-url), pointed at the
//! commbench server's plain endpoints as a stand-in for "anyone's server".
#![allow(clippy::unwrap_used)]

mod common;

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
    let server = common::server(|c| c.heartbeat = std::time::Duration::from_millis(200)).await;
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
