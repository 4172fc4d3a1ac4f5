//! Each broker killed (SIGKILL) mid-run and restarted, from the same tests: publishes and enqueues are
//! spooled (202) and replayed in order once it is back, open SSE and WebSocket streams see every event
//! once, reads that need the broker are a 503 meanwhile, a full spool is a 503, and it is all counted.
//! Redis (append-only, fsync always) and RabbitMQ (its streams on disk; the node settled first, see
//! `RabbitServer::settle`) come back with their data; tansu (memory storage) comes back empty, so its
//! logs are made again and numbering goes on after the last event the instances saw.

#![allow(clippy::unwrap_used)]

mod backends;
mod common;
mod queue_api;

use std::time::Duration;

use backends::{instances_on, Backend, Broker};
use common::{
    client, get, metric, poll, post, publish, seqs, sse_subscribe, wait_until, within,
    ws_connect_url, ws_event, ws_subscribe,
};
use queue_api::{enqueue, enqueue_answer, stats, status};
use serde_json::json;

/// Recovery waits on a broker restart (RabbitMQ takes seconds) and backoff: generous, still bounded.
const RECOVERY: Duration = Duration::from_secs(90);
/// Publishes made while the broker is down: more than one replay batch (64).
const OUTAGE: u64 = 100;

const SPOOLED: &str = "commbench_spool_spooled_total{spool=\"publish\"}";
const REPLAYED: &str = "commbench_spool_replayed_total{spool=\"publish\"}";
const REJECTED: &str = "commbench_spool_rejected_total{spool=\"publish\"}";
const DEPTH: &str = "commbench_spool_depth{spool=\"publish\"}";
const RECONNECTS: &str = "commbench_redis_reconnect_attempts_total";

fn ws_of(http: &str) -> String {
    format!("{}/ws", http.replace("http://", "ws://"))
}

async fn publish_spooled(http: &reqwest::Client, base: &str, payload: String) -> u64 {
    let reply = post(http, &format!("{base}/publish/t"), payload).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["spooled"], true, "{body}");
    body["spool_depth"].as_u64().unwrap()
}

async fn restart(broker: &mut Broker) {
    within("the broker to restart", RECOVERY, broker.restart()).await;
}

async fn the_broker_killed_and_restarted_mid_run_loses_no_event(backend: Backend) {
    let mut broker = Broker::start(backend).await.unwrap();
    let servers = instances_on(Some(broker.url()), 2, |_| {}).await;
    let (a, b) = (servers.url(0), servers.url(1));
    let http = client();
    let (mut sse, _) = sse_subscribe(&http, &format!("{b}/sse/t?after=0"), &[]).await;
    let mut ws = ws_connect_url(&ws_of(&b)).await;
    ws_subscribe(&mut ws, "t", Some(0)).await;
    for i in 1..=5 {
        assert_eq!(publish(&http, &a, "t", format!("p{i}")).await, i);
    }
    for seq in 1..=5u64 {
        assert_eq!(sse.next_event().await["seq"], seq);
        assert_eq!(ws_event(&mut ws).await["seq"], seq);
    }

    broker.kill();
    for i in 6..=(5 + OUTAGE) {
        assert_eq!(publish_spooled(&http, &a, format!("p{i}")).await, i - 5);
    }
    // A read the instance cannot answer from what it holds needs the broker: a clear 503.
    let read = get(&http, &format!("{b}/poll/t?after=5")).await;
    read.assert_error(503, "unavailable");
    assert_eq!(read.header("retry-after").as_deref(), Some("1"));

    restart(&mut broker).await;
    let a_server = servers.server(0);
    let replayed = common::eventually(RECOVERY, || {
        metric(a_server, REPLAYED) == OUTAGE as i64 && metric(a_server, DEPTH) == 0
    })
    .await;
    assert!(
        replayed,
        "the spool was not replayed: replayed {} depth {} dropped {}",
        metric(a_server, REPLAYED),
        metric(a_server, DEPTH),
        metric(a_server, "commbench_spool_dropped_total{spool=\"publish\"}")
    );
    let last = 10 + OUTAGE;
    for i in (6 + OUTAGE)..=last {
        assert_eq!(publish(&http, &a, "t", format!("p{i}")).await, i);
    }
    // The streams opened before the outage are still open and see every event once, in order.
    for seq in 6..=last {
        let event = within("an event after the outage", RECOVERY, sse.next_event()).await;
        assert_eq!(
            (event["seq"].as_u64(), &event["data"]),
            (Some(seq), &format!("p{seq}").into())
        );
        let event = ws_event(&mut ws).await;
        assert_eq!(event["seq"].as_u64(), Some(seq));
    }
    assert_eq!(publish(&http, &a, "t", "last").await, last + 1);
    assert_eq!(sse.next_event().await["seq"], last + 1);
    assert_eq!(ws_event(&mut ws).await["seq"], last + 1);
    let batch = poll(&http, &b, "t", "after=0").await;
    assert_eq!(seqs(&batch), (1..=last + 1).collect::<Vec<_>>());
    assert_eq!(
        (metric(a_server, SPOOLED), metric(a_server, REJECTED)),
        (OUTAGE as i64, 0)
    );
    for server in servers.servers() {
        assert!(metric(server, RECONNECTS) > 0, "no reconnect counted");
    }
}

async fn a_full_spool_is_a_503_and_what_it_held_is_replayed(backend: Backend) {
    let mut broker = Broker::start(backend).await.unwrap();
    let servers = instances_on(Some(broker.url()), 1, |c| c.spool_events = 3).await;
    let (server, a) = (servers.server(0), servers.url(0));
    let http = client();
    assert_eq!(publish(&http, &a, "t", "p1").await, 1);
    broker.kill();
    for i in 2..=4u64 {
        assert_eq!(publish_spooled(&http, &a, format!("p{i}")).await, i - 1);
    }
    let refused = post(&http, &format!("{a}/publish/t"), "p5").await;
    let body = refused.assert_error(503, "spool_full");
    assert!(
        body["detail"].as_str().unwrap().contains("3 of 3 events"),
        "{body}"
    );
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!((metric(server, REJECTED), metric(server, DEPTH)), (1, 3));
    restart(&mut broker).await;
    wait_until("the spool to be replayed", RECOVERY, || {
        metric(server, REPLAYED) == 3 && metric(server, DEPTH) == 0
    })
    .await;
    let batch = poll(&http, &a, "t", "after=0").await;
    assert_eq!(seqs(&batch), vec![1, 2, 3, 4]);
    assert_eq!(batch["events"][3]["data"], "p4");
    assert_eq!(publish(&http, &a, "t", "p6").await, 5);
}

/// Jobs enqueued on each instance while the broker is down.
const OUTAGE_JOBS: usize = 20;

async fn jobs_enqueued_while_the_broker_is_down_are_replayed_and_done_once(backend: Backend) {
    let mut broker = Broker::start(backend).await.unwrap();
    let servers = instances_on(Some(broker.url()), 2, |c| {
        c.workers = 2;
        c.visibility_timeout = Duration::from_secs(3);
    })
    .await;
    let http = client();
    let job = |i: usize| {
        let lane = if i % 3 == 0 { "premium" } else { "normal" };
        json!({"lane": lane, "work_ms": 5})
    };
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(enqueue(&http, &servers.url(i), "jobs", job(i)).await);
    }
    for id in &ids {
        let done = status(&http, &servers.url(0), "jobs", id, "?wait_ms=10000").await;
        assert_eq!(done["status"], "done", "{done}");
    }
    broker.kill();
    for i in 0..2 * OUTAGE_JOBS {
        let answer = enqueue_answer(&http, &servers.url(i), "jobs", job(i)).await;
        assert_eq!(answer["spooled"], true, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    restart(&mut broker).await;
    for server in servers.servers() {
        wait_until("the enqueue spool to be replayed", RECOVERY, || {
            metric(server, "commbench_spool_replayed_total{spool=\"enqueue\"}")
                == OUTAGE_JOBS as i64
                && metric(server, "commbench_spool_depth{spool=\"enqueue\"}") == 0
        })
        .await;
    }
    for (i, id) in ids.iter().enumerate() {
        let deadline = tokio::time::Instant::now() + RECOVERY;
        let done = loop {
            let view = status(&http, &servers.url(i + 1), "jobs", id, "?wait_ms=5000").await;
            if view["status"] == "done" || tokio::time::Instant::now() >= deadline {
                break view;
            }
        };
        assert_eq!(done["status"], "done", "{id}: {done}");
        let (attempts, completions) = (done["attempts"].as_u64(), done["completions"].as_u64());
        // Exactly once, unless a take expired in the outage (then it was done again, counted).
        assert!(completions == Some(1) || attempts > Some(1), "{id}: {done}");
    }
    let counts = stats(&http, &servers.url(0), "jobs").await;
    assert_eq!(
        (counts["running"].as_u64(), &counts["waiting"]),
        (Some(0), &json!({"premium": 0, "normal": 0})),
        "{counts}"
    );
}

suite!(
    restartable: the_broker_killed_and_restarted_mid_run_loses_no_event,
    a_full_spool_is_a_503_and_what_it_held_is_replayed,
    jobs_enqueued_while_the_broker_is_down_are_replayed_and_done_once,
);
