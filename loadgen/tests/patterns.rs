//! Short runs of every pattern against an in-process server: correctness of counts, not speed.
#![allow(clippy::unwrap_used)]

mod common;

use commbench_loadgen::{output::events_in_window, record::Metric, result::CellResult};

fn assert_no_loss(cell: &CellResult) {
    let c = &cell.counters;
    assert!(cell.complete, "{:?}", cell.warnings);
    assert!(c.events_expected > 0, "nothing expected: {c:?}");
    assert_eq!(
        c.events_lost, 0,
        "lost events: {c:?} errors {:?}",
        cell.errors
    );
    assert_eq!(c.events_duplicated, 0, "duplicates: {c:?}");
    assert_eq!(c.events_delivered, c.events_expected, "{c:?}");
    assert_eq!(c.errors, 0, "{:?}", cell.errors);
    assert!(cell.histograms.contains_key(&Metric::Delivery));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_everything_once() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "sse"),
            ("clients", "20"),
            ("rate", "40"),
            ("duration", "2s"),
            ("topics", "2"),
        ],
        "sse",
    )
    .await;
    assert_no_loss(&cell);
    // 20 clients over 2 topics, each topic gets half of ~100 events: every client expects ~50.
    assert!(
        cell.counters.events_expected >= 20 * 40,
        "{:?}",
        cell.counters
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_delivers_everything_once() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "ws"),
            ("clients", "20"),
            ("rate", "40"),
            ("duration", "2s"),
        ],
        "ws",
    )
    .await;
    assert_no_loss(&cell);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_delivers_everything_once() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "long-poll"),
            ("clients", "20"),
            ("rate", "20"),
            ("duration", "2s"),
        ],
        "longpoll",
    )
    .await;
    assert_no_loss(&cell);
    // Every answer brings at least one event at this rate, save the odd timeout: about one request
    // per event per client.
    let per_event = cell.counters.requests as f64 / cell.counters.events_received as f64;
    assert!(
        (0.5..=1.5).contains(&per_event),
        "requests per event {per_event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_poll_request_count_follows_the_interval() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "short-poll"),
            ("clients", "20"),
            // Fewer events than polls, so some answers are empty.
            ("rate", "2"),
            ("duration", "3s"),
            ("interval", "250ms"),
        ],
        "shortpoll",
    )
    .await;
    assert_no_loss(&cell);
    // clients × window ÷ interval = 20 × 3 / 0.25 = 240 scheduled polls in the window.
    let expected = 20.0 * cell.measured_s / 0.25;
    let requests = cell.counters.requests as f64;
    assert!(
        (requests - expected).abs() <= expected * 0.1,
        "{requests} requests, expected about {expected}"
    );
    assert!(cell.counters.empty_responses > 0);
    assert!(cell.histograms.contains_key(&Metric::RoundTripUncorrected));
}

/// The framing every pattern adds around the payload, computed from the wire formats.
fn event_json_len(topic_len: usize, seq_digits: usize, payload: usize) -> usize {
    // {"topic":"…","seq":N,"data":"…"}
    29 + topic_len + seq_digits + payload
}

fn bytes_per_event(cell: &CellResult) -> f64 {
    (cell.counters.bytes_up + cell.counters.bytes_down) as f64 / events_in_window(cell) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_bytes_per_event_are_payload_plus_framing() {
    let server = common::server(|_| {}).await;
    let payload = 200;
    // Topic names are `cb` + 6 digits + `c0t0` = 12 characters; sequence numbers stay 2-3 digits.
    let json = event_json_len(12, 2, payload) as f64;
    let flags = |pattern| {
        [
            ("patterns", pattern),
            ("clients", "10"),
            ("rate", "30"),
            ("duration", "2s"),
            ("payload", "200"),
        ]
    };
    let sse = common::run_one(&server.url(), &flags("sse"), "sse-bytes").await;
    // SSE: `id: N\n` + `data: ` + json + `\n\n` inside one HTTP chunk (`{hex}\r\n` … `\r\n`).
    let sse_expected = json + 4.0 + 2.0 + 1.0 + 6.0 + 2.0 + 2.0 + 2.0 + 4.0;
    let measured = bytes_per_event(&sse);
    assert!(
        (measured - sse_expected).abs() <= 6.0,
        "SSE {measured} B/event, expected {sse_expected}"
    );

    let ws = common::run_one(&server.url(), &flags("ws"), "ws-bytes").await;
    // WebSocket: a 4-byte frame header (payload 126..65535 bytes) + json.
    let ws_expected = json + 4.0;
    let measured = bytes_per_event(&ws);
    assert!(
        (measured - ws_expected).abs() <= 6.0,
        "WS {measured} B/event, expected {ws_expected}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_poll_delivers_everything_once() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "graphql-poll"),
            ("clients", "10"),
            ("rate", "20"),
            ("duration", "2s"),
            ("topics", "2"),
            ("interval", "250ms"),
        ],
        "graphql-poll",
    )
    .await;
    assert_no_loss(&cell);
    // One query per interval per client, save the odd `more`: 10 × 2 s ÷ 0.25 s = 80 in the window.
    let expected = 10.0 * cell.measured_s / 0.25;
    let requests = cell.counters.requests as f64;
    assert!(
        (requests - expected).abs() <= expected * 0.15,
        "{requests} requests, expected about {expected}"
    );
    assert!(cell.histograms.contains_key(&Metric::RoundTrip));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_subscription_delivers_everything_once() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "graphql-sub"),
            ("clients", "10"),
            ("rate", "40"),
            ("duration", "2s"),
            ("topics", "2"),
        ],
        "graphql-sub",
    )
    .await;
    assert_no_loss(&cell);
    assert_eq!(cell.counters.reconnects, 0, "{:?}", cell.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_envelopes_cost_bytes_over_their_plain_twins() {
    let server = common::server(|_| {}).await;
    let flags = |pattern| {
        [
            ("patterns", pattern),
            ("clients", "10"),
            ("rate", "30"),
            ("duration", "2s"),
            ("payload", "200"),
            ("interval", "500ms"),
        ]
    };
    let mut measured = Vec::new();
    for pattern in ["ws", "graphql-sub", "short-poll", "graphql-poll"] {
        let cell = common::run_one(&server.url(), &flags(pattern), pattern).await;
        assert_no_loss(&cell);
        measured.push(bytes_per_event(&cell));
    }
    let [ws, sub, poll, graphql_poll] = measured[..] else {
        unreachable!()
    };
    // The same event content each time: the difference is GraphQL's framing (`next` message,
    // `data`/`events`/`event` nesting, `gap: null`) and, for polling, the POSTed query.
    assert!(sub > ws + 20.0, "graphql-sub {sub} B/event vs ws {ws}");
    assert!(
        graphql_poll > poll,
        "graphql-poll {graphql_poll} B/event vs short-poll {poll}"
    );
}
