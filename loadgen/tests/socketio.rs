//! The `socketio` pattern against commbench's own server: every event once, by sequence number,
//! with the Socket.IO framing visible in the bytes; and resuming after a cut-off without loss.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commbench_loadgen::record::Metric;
use commbench_servers::{
    redis::server::{RedisOptions, RedisServer},
    AppState, ServerConfig,
};

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

/// A server instance on `redis` serving `listener` until its shutdown token is cancelled.
async fn instance(
    redis: &RedisServer,
    listener: tokio::net::TcpListener,
) -> (AppState, tokio::task::JoinHandle<std::io::Result<()>>) {
    let config = ServerConfig {
        bus: Some(redis.url().to_owned()),
        ..ServerConfig::default()
    };
    let state = AppState::connect(config).await.unwrap();
    let task = tokio::spawn(commbench_servers::run(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (state, task)
}

/// A listening socket on `port` (0: any) that another one may share (SO_REUSEPORT).
fn shared_listener(port: u16) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseport(true).unwrap();
    socket.bind(([127, 0, 0, 1], port).into()).unwrap();
    socket.listen(1024).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_stopped_instance_resume_on_another_after_their_cursor_without_loss() {
    // Two instances on one Redis behind one port: every client starts on A; B starts listening on
    // the same port (SO_REUSEPORT) and A shuts down mid-window, closing its sockets with 1001. Each
    // client reconnects (to B, the only listener left) and resubscribes after its cursor.
    let redis = RedisServer::start(RedisOptions { durable: false })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let a_listener = shared_listener(0);
    let addr = a_listener.local_addr().unwrap();
    let (a, a_task) = instance(&redis, a_listener).await;
    const CLIENTS: u64 = 10;
    let target = format!("http://{addr}");
    let clients = CLIENTS.to_string();
    let run = tokio::spawn(async move {
        let flags = [
            ("patterns", "socketio"),
            ("clients", clients.as_str()),
            ("rate", "50"),
            ("duration", "3s"),
        ];
        common::run_one(&target, &flags, "socketio-resume").await
    });
    let connected = |state: &AppState, n: i64| {
        let text = state.metrics.render();
        text.contains(&format!("commbench_active{{pattern=\"socketio\"}} {n}"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !connected(&a, CLIENTS as i64) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clients never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Into the measured window (warm-up 500 ms), then the switch.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (b, b_task) = instance(&redis, shared_listener(addr.port())).await;
    a.shutdown.cancel();
    a_task.await.unwrap().unwrap();
    let cell = run.await.unwrap();
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
        b.metrics
            .render()
            .contains("commbench_events_delivered_total{pattern=\"socketio\"}"),
        "B delivered nothing"
    );
    b.shutdown.cancel();
    b_task.await.unwrap().unwrap();
}
