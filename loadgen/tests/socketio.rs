//! The `socketio` pattern against commbench's own server: every event once, by sequence number,
//! with the Socket.IO framing visible in the bytes; and resuming after a cut-off without loss.
#![allow(clippy::unwrap_used)]

mod common;

use commbench_loadgen::record::Metric;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_delivers_everything_once() {
    let server = common::server(|_| {}).await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "socket.io"),
            ("clients", "20"),
            ("rate", "40"),
            ("duration", "2s"),
            ("topics", "2"),
        ],
        "socketio",
    )
    .await;
    let c = &cell.counters;
    assert!(cell.complete, "{:?}", cell.warnings);
    assert_eq!(c.errors, 0, "{:?}", cell.errors);
    // 20 clients over 2 topics, each topic gets half of ~100 events.
    assert!(c.events_expected >= 20 * 40, "{c:?}");
    assert_eq!(c.events_delivered, c.events_expected, "{c:?}");
    assert_eq!((c.events_lost, c.events_duplicated), (0, 0), "{c:?}");
    assert!(cell.histograms.contains_key(&Metric::Delivery));
    // Each event frame holds the event JSON plus `42["event",` and `]` (12 bytes) and a 2-byte
    // frame header: at least that much per event came down the socket.
    assert!(c.bytes_down >= c.events_received * (128 + 12), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_stopped_instance_resume_on_another_after_their_cursor_without_loss() {
    // Each client reconnects (to B, the only listener left) and resubscribes after its cursor.
    const CLIENTS: u64 = 10;
    let switched = common::run_across_a_switch(
        &[("patterns", "socketio"), ("rate", "50")],
        "socketio",
        CLIENTS,
        "socketio-resume",
    )
    .await;
    let cell = &switched.cell;
    let c = &cell.counters;
    assert!(c.events_expected > 0, "{c:?}");
    assert_eq!(c.events_lost, 0, "{c:?} {:?}", cell.errors);
    assert_eq!(c.events_duplicated, 0, "{c:?}");
    assert_eq!(c.events_delivered, c.events_expected, "{c:?}");
    assert_eq!(c.reconnects, CLIENTS, "{c:?} {:?}", cell.errors);
    assert_eq!(
        cell.errors.get("ws_close_1001").copied(),
        Some(CLIENTS),
        "{:?}",
        cell.errors
    );
    assert!(
        switched
            .metrics
            .contains("commbench_events_delivered_total{pattern=\"socketio\"}"),
        "B delivered nothing"
    );
}
