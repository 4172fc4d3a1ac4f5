//! The message queue when Redis goes away: a real, durable `redis-server` is killed and restarted
//! mid-run. Enqueues are spooled (202) and replayed in order, spooled jobs answer `queued`, workers
//! resume, every job finishes once, a full spool is a 503, and it is all counted.

#![allow(clippy::unwrap_used)]

mod common;
mod queue_api;

use std::time::Duration;

use commbench_servers::{redis::server::RedisServer, ServerConfig, ServerHandle};
use common::{client, get, metric, post, wait_until, within, STEP};
use queue_api::{ack, drain, enqueue, enqueue_answer, stats, status};
use serde_json::{json, Value};

/// Recovery waits on backoff (capped near 2.5 s) on a loaded machine: be generous, still bounded.
const RECOVERY: Duration = Duration::from_secs(30);

const SPOOLED: &str = "commbench_spool_spooled_total{spool=\"enqueue\"}";
const REPLAYED: &str = "commbench_spool_replayed_total{spool=\"enqueue\"}";
const REJECTED: &str = "commbench_spool_rejected_total{spool=\"enqueue\"}";
const DROPPED: &str = "commbench_spool_dropped_total{spool=\"enqueue\"}";
const DEPTH: &str = "commbench_spool_depth{spool=\"enqueue\"}";
const RECONNECTS: &str = "commbench_redis_reconnect_attempts_total";

async fn instance(redis: &RedisServer, tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    common::redis_instance(redis, tweak).await
}

/// Enqueues expecting the outage spool: 202, `queued`, `"spooled": true`; returns the id.
async fn enqueue_spooled(http: &reqwest::Client, base: &str, queue: &str, body: Value) -> String {
    let answer = enqueue_answer(http, base, queue, body).await;
    assert_eq!(answer["spooled"], true, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

async fn wait_replayed(server: &ServerHandle, count: i64) {
    wait_until("the enqueue spool to be replayed", RECOVERY, || {
        metric(server, REPLAYED) == count && metric(server, DEPTH) == 0
    })
    .await;
}

/// Long-polls the job until it is done (several polls, so a slow recovery is no failure).
async fn wait_done(http: &reqwest::Client, base: &str, queue: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    loop {
        let view = status(http, base, queue, id, "?wait_ms=5000").await;
        if view["status"] == "done" {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} not done: {view}"
        );
    }
}

/// Jobs enqueued on each instance while Redis is down in the main test.
const OUTAGE_EACH: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_loses_no_job() {
    let mut redis = common::start_redis(true).await;
    // A short visibility timeout so a job whose ack was lost in the outage comes back soon.
    let tweak = |c: &mut ServerConfig| {
        c.workers = 2;
        c.visibility_timeout = Duration::from_secs(2);
    };
    let (a, b) = (instance(&redis, tweak).await, instance(&redis, tweak).await);
    let servers = [a.url(), b.url()];
    let http = client();
    let job = |i: usize| {
        let lane = if i % 3 == 0 { "premium" } else { "normal" };
        json!({"lane": lane, "work_ms": 5})
    };
    let mut ids = Vec::new();
    for i in 0..10 {
        let base = &servers[i % 2];
        ids.push((i % 2, enqueue(&http, base, "jobs", job(i)).await));
    }

    redis.kill();
    let mut spooled = Vec::new();
    for i in 0..2 * OUTAGE_EACH {
        let base = &servers[i % 2];
        spooled.push((i % 2, enqueue_spooled(&http, base, "jobs", job(i)).await));
    }
    // A spooled job is known to the instance that holds it, and a long poll on it keeps waiting
    // (across the restart) until a worker has done it.
    let (owner, first) = spooled[0].clone();
    let view = status(&http, &servers[owner], "jobs", &first, "").await;
    assert_eq!(
        (view["status"].as_str(), view["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );
    let held = {
        let (http, base, id) = (http.clone(), servers[owner].clone(), first.clone());
        tokio::spawn(async move { status(&http, &base, "jobs", &id, "?wait_ms=60000").await })
    };

    within("redis to restart", STEP, redis.restart())
        .await
        .unwrap();
    for server in [&a, &b] {
        wait_replayed(server, OUTAGE_EACH as i64).await;
    }
    for i in 0..10 {
        let base = &servers[i % 2];
        let answer = enqueue_answer(&http, base, "jobs", job(i)).await;
        assert!(
            answer["spooled"].is_null(),
            "spooled after recovery: {answer}"
        );
        ids.push((i % 2, answer["id"].as_str().unwrap().to_owned()));
    }
    ids.extend(spooled);

    let answer = within("the held status request", RECOVERY, held)
        .await
        .unwrap();
    assert_eq!(answer["status"], "done", "{answer}");
    for (owner, id) in &ids {
        // Read through the other instance: replayed jobs are in Redis for everyone.
        let done = wait_done(&http, &servers[1 - owner], "jobs", id).await;
        let (attempts, completions) = (done["attempts"].as_u64(), done["completions"].as_u64());
        // Exactly once, unless a lease expired (an ack lost in the outage): then it was redone.
        assert!(completions == Some(1) || attempts > Some(1), "{id}: {done}");
    }
    let total = ids.len() as u64;
    let counts = stats(&http, &servers[0], "jobs").await;
    assert_eq!(
        (
            counts["submitted"].as_u64(),
            counts["completed"].as_u64(),
            counts["running"].as_u64(),
            &counts["waiting"]
        ),
        (
            Some(total),
            Some(total),
            Some(0),
            &json!({"premium": 0, "normal": 0})
        ),
        "{counts}"
    );
    for server in [&a, &b] {
        let each = OUTAGE_EACH as i64;
        assert_eq!(
            (metric(server, SPOOLED), metric(server, REPLAYED)),
            (each, each)
        );
        assert_eq!((metric(server, REJECTED), metric(server, DROPPED)), (0, 0));
        assert!(metric(server, RECONNECTS) > 0, "no reconnect counted");
    }
    // The rendered /metrics carries the enqueue spool next to the publish spool.
    let text = get(&http, &format!("{}/metrics", a.url())).await.text();
    assert!(text.contains(&format!("{SPOOLED} {OUTAGE_EACH}")), "{text}");
    assert!(
        text.contains("commbench_spool_spooled_total{spool=\"publish\"} 0"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_enqueue_spool_is_a_503_and_what_it_held_is_replayed_in_order() {
    let mut redis = common::start_redis(true).await;
    let a = instance(&redis, |c| {
        c.workers = 0;
        c.spool_events = 3;
    })
    .await;
    let (http, base) = (client(), a.url());
    let mut ids = vec![enqueue(&http, &base, "q", json!({})).await];

    redis.kill();
    for _ in 0..3 {
        ids.push(enqueue_spooled(&http, &base, "q", json!({"work_ms": 1})).await);
    }
    let refused = post(&http, &format!("{base}/queues/q/jobs"), "{}").await;
    let body = refused.assert_error(503, "spool_full");
    assert!(
        body["detail"].as_str().unwrap().contains("3 of 3 events"),
        "{body}"
    );
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    assert_eq!((metric(&a, REJECTED), metric(&a, DEPTH)), (1, 3));
    assert_eq!(
        metric(&a, "commbench_rejected_total{reason=\"spool_full\"}"),
        1
    );
    assert_eq!(
        metric(&a, "commbench_spool_rejected_total{spool=\"publish\"}"),
        0
    );

    within("redis to restart", STEP, redis.restart())
        .await
        .unwrap();
    wait_replayed(&a, 3).await;
    // The spooled jobs follow the one enqueued before the outage, in the order they were accepted.
    let jobs = drain(&http, &base, "q").await;
    let taken: Vec<&str> = jobs.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(taken, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for job in &jobs {
        assert!(!ack(&http, &base, "q", job).await);
    }
    let counts = stats(&http, &base, "q").await;
    assert_eq!(
        (counts["submitted"].as_u64(), counts["completed"].as_u64()),
        (Some(4), Some(4)),
        "{counts}"
    );
    assert_eq!(metric(&a, DROPPED), 0);
    assert!(metric(&a, RECONNECTS) > 0);
}
