//! When the broker is down: a real, durable `redis-server` is killed and restarted mid-run. Publishes
//! are spooled (202) and replayed in order, live subscribers stay connected and see every event once,
//! a full spool is a 503, and reconnects are counted.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commbench_servers::{redis::server::RedisServer, ServerConfig, ServerHandle};
use common::{
    client, get, metric, poll, post, publish, seqs, sse_open, wait_until, within, ws_event, STEP,
};

/// Recovery waits on backoff (capped near 2.5 s) on a loaded machine: be generous, still bounded.
const RECOVERY: Duration = Duration::from_secs(30);

async fn instance(redis: &RedisServer, tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    common::redis_instance(redis, tweak).await
}

const SPOOLED: &str = "commbench_spool_spooled_total{spool=\"publish\"}";
const REPLAYED: &str = "commbench_spool_replayed_total{spool=\"publish\"}";
const REJECTED: &str = "commbench_spool_rejected_total{spool=\"publish\"}";
const DEPTH: &str = "commbench_spool_depth{spool=\"publish\"}";
const RECONNECTS: &str = "commbench_redis_reconnect_attempts_total";

/// Publishes made while Redis is down in the main test.
const OUTAGE: u64 = 150;

/// Publishes expecting the spool: 202 with `{"topic","spooled":true,"spool_depth"}`.
async fn publish_spooled(http: &reqwest::Client, base: &str, payload: String) -> u64 {
    let reply = post(http, &format!("{base}/publish/t"), payload).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let body = reply.json();
    assert_eq!(
        (&body["topic"], &body["spooled"]),
        (&"t".into(), &true.into())
    );
    body["spool_depth"].as_u64().unwrap()
}

async fn wait_replayed(server: &ServerHandle, count: i64) {
    wait_until("the spool to be replayed", RECOVERY, || {
        metric(server, REPLAYED) == count && metric(server, DEPTH) == 0
    })
    .await;
}

#[tokio::test]
async fn redis_killed_and_restarted_mid_run_loses_nothing() {
    let mut redis = common::start_redis(true).await;
    let (a, b, mut sse, mut ws) = common::redis_pair_watching_t(&redis).await;
    let http = client();
    for i in 1..=5 {
        assert_eq!(publish(&http, &a.url(), "t", format!("p{i}")).await, i);
    }

    redis.kill();
    // More than one replay batch (64) waits in the spool.
    for i in 6..=(5 + OUTAGE) {
        assert_eq!(
            publish_spooled(&http, &a.url(), format!("p{i}")).await,
            i - 5
        );
    }
    // Reads have no spool: a read Redis must answer is a clear 503 that says when to retry. (A read
    // the instance's window of recent events covers is still answered; after=5 is past it.)
    let read = get(&http, &format!("{}/poll/t?after=5", b.url())).await;
    read.assert_error(503, "unavailable");
    assert_eq!(read.header("retry-after").as_deref(), Some("1"));

    within("redis to restart", STEP, redis.restart())
        .await
        .unwrap();
    wait_replayed(&a, OUTAGE as i64).await;
    for i in (6 + OUTAGE)..=(10 + OUTAGE) {
        assert_eq!(publish(&http, &a.url(), "t", format!("p{i}")).await, i);
    }

    // The streams opened before the outage are still open and see every event once, in order.
    let last = 10 + OUTAGE;
    for seq in 1..=last {
        let event = sse.next_event().await;
        assert_eq!(
            (event["seq"].as_u64(), &event["data"]),
            (Some(seq), &format!("p{seq}").into())
        );
        let event = ws_event(&mut ws).await;
        assert_eq!(
            (event["seq"].as_u64(), &event["data"]),
            (Some(seq), &format!("p{seq}").into())
        );
    }
    // No duplicate follows: the next thing on each stream is the next publish.
    assert_eq!(publish(&http, &a.url(), "t", "last").await, last + 1);
    assert_eq!(sse.next_event().await["seq"], last + 1);
    assert_eq!(ws_event(&mut ws).await["seq"], last + 1);

    let batch = poll(&http, &b.url(), "t", "after=0").await;
    assert_eq!(seqs(&batch), (1..=last + 1).collect::<Vec<_>>());
    assert_eq!(batch["events"][99]["data"], "p100");
    let outage = OUTAGE as i64;
    assert_eq!(
        (metric(&a, SPOOLED), metric(&a, REPLAYED)),
        (outage, outage)
    );
    assert_eq!(metric(&a, REJECTED), 0);
    for server in [&a, &b] {
        assert!(metric(server, RECONNECTS) > 0, "no reconnect counted");
    }
}

#[tokio::test]
async fn a_full_spool_is_a_503_and_what_it_held_is_replayed() {
    let mut redis = common::start_redis(true).await;
    let a = instance(&redis, |c| c.spool_events = 3).await;
    let http = client();
    assert_eq!(publish(&http, &a.url(), "t", "p1").await, 1);

    redis.kill();
    for i in 2..=4u64 {
        assert_eq!(
            publish_spooled(&http, &a.url(), format!("p{i}")).await,
            i - 1
        );
    }
    let refused = post(&http, &format!("{}/publish/t", a.url()), "p5").await;
    let body = refused.assert_error(503, "spool_full");
    assert!(
        body["detail"].as_str().unwrap().contains("3 of 3 events"),
        "{body}"
    );
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!(metric(&a, REJECTED), 1);
    assert_eq!(
        metric(&a, "commbench_rejected_total{reason=\"spool_full\"}"),
        1
    );
    assert_eq!((metric(&a, SPOOLED), metric(&a, DEPTH)), (3, 3));

    within("redis to restart", STEP, redis.restart())
        .await
        .unwrap();
    wait_replayed(&a, 3).await;
    let batch = poll(&http, &a.url(), "t", "after=0").await;
    assert_eq!(seqs(&batch), vec![1, 2, 3, 4]);
    assert_eq!(batch["events"][3]["data"], "p4");
    assert_eq!(publish(&http, &a.url(), "t", "p6").await, 5);
    assert!(metric(&a, RECONNECTS) > 0);
}

#[tokio::test]
async fn new_subscriptions_during_an_outage_are_a_clear_503() {
    let mut redis = common::start_redis(true).await;
    let a = instance(&redis, |_| {}).await;
    let http = client();
    publish(&http, &a.url(), "t", "p1").await;
    redis.kill();
    // Once the instance has noticed (a health check or a failed command), it says so at once.
    wait_until("the outage to be noticed", RECOVERY, || {
        metric(&a, RECONNECTS) > 0
    })
    .await;
    let refused = sse_open(&http, &format!("{}/sse/t", a.url()), &[])
        .await
        .err()
        .unwrap();
    refused.assert_error(503, "unavailable");
    let held = get(
        &http,
        &format!("{}/longpoll/t?after=1&timeout_ms=100", a.url()),
    )
    .await;
    held.assert_error(503, "unavailable");
    within("redis to restart", STEP, redis.restart())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + RECOVERY;
    let (mut sse, hello) = loop {
        match sse_open(&http, &format!("{}/sse/t?after=0", a.url()), &[]).await {
            Ok(mut stream) => {
                let hello = stream.expect_subscribed().await;
                break (stream, hello);
            }
            Err(reply) => {
                assert_eq!(reply.status, 503, "{}", reply.text());
                assert!(tokio::time::Instant::now() < deadline, "still refused");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(hello["head"], 1);
    assert_eq!(sse.next_event().await["data"], "p1");
}
