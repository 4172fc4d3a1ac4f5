//! Faults of the broker seen from the server's own output: a Redis outage must be said once, not
//! once per retry per worker, and its end must be said too.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{child::ChildServer, start_redis};

/// WARN lines of the in-server workers (every worker log line names its worker).
fn worker_warnings(log: &str) -> usize {
    log.lines()
        .filter(|line| line.contains("WARN") && line.contains("worker="))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_server_workers_warn_once_per_redis_outage() {
    let mut redis = start_redis(false).await;
    let server = ChildServer::start(&["--bus", redis.url(), "--workers", "4"]).await;
    redis.kill();
    // Four workers retrying every 0.5 s for 3 s would be two dozen lines.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = server.log();
    assert_eq!(worker_warnings(&log), 1, "{log}");

    redis.restart().await.unwrap();
    let recovered = common::eventually(Duration::from_secs(30), || {
        server.log().contains("queue takes work again")
    })
    .await;
    assert!(recovered, "{}", server.log());
    assert_eq!(worker_warnings(&server.log()), 1);
    server.kill().await;
}
