//! The message queue on the Redis backend (a real private `redis-server`): the core scenarios of
//! `queue.rs`, two instances as competing consumers of one queue, and 503 (or a spooled enqueue)
//! when Redis is gone. Kill-and-restart recovery is in `queue_outage.rs`.

#![allow(clippy::unwrap_used)]

mod common;
mod queue_api;

use std::time::Duration;

use commbench_servers::{redis::server::RedisServer, ServerConfig, ServerHandle};
use common::{client, get, poll, post, within, STEP};
use queue_api::{
    ack, ack_raw, drain, enqueue, enqueue_answer, enqueue_raw, lanes, stats, status, take,
};
use serde_json::json;

/// A server on `redis` without in-server workers (the tests take and ack themselves).
async fn instance(redis: &RedisServer, tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    common::redis_instance(redis, |config| {
        config.workers = 0;
        tweak(config);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_take_ack_and_refusals_on_redis() {
    let redis = common::start_redis(false).await;
    let server = instance(&redis, |c| c.max_queued_jobs = 2).await;
    let (http, base) = (client(), server.url());
    let id = enqueue(
        &http,
        &base,
        "q",
        json!({"lane": "premium", "work_ms": 3, "payload": "hi", "notify": "done-t"}),
    )
    .await;
    assert_eq!(status(&http, &base, "q", &id, "").await["status"], "queued");
    enqueue(&http, &base, "q", json!({})).await;
    enqueue_raw(&http, &base, "q", json!({}))
        .await
        .assert_error(503, "queue_full");

    let job = take(&http, &base, "q", 0).await.unwrap();
    assert_eq!(
        (job["id"].as_str(), job["payload"].as_str()),
        (Some(id.as_str()), Some("hi"))
    );
    assert_eq!(job["work_ms"], 3);
    let running = status(&http, &base, "q", &id, "").await;
    assert_eq!(running["status"], "running");
    assert!(running["queue_wait_us"].is_u64(), "{running}");
    let forged = format!("{}.{:016x}", 1, 7);
    ack_raw(&http, &base, "q", &id, &forged)
        .await
        .assert_error(409, "lease_mismatch");
    ack_raw(&http, &base, "q", "nope", &forged)
        .await
        .assert_error(404, "not_found");
    assert!(!ack(&http, &base, "q", &job).await);
    let done = status(&http, &base, "q", &id, "").await;
    assert_eq!(
        (done["status"].as_str(), done["completions"].as_u64()),
        (Some("done"), Some(1))
    );
    // The completion was announced once on the notify topic, with the job status as payload.
    let batch = poll(&http, &base, "done-t", "after=0").await;
    assert_eq!(batch["events"].as_array().map(Vec::len), Some(1), "{batch}");
    let announced: serde_json::Value =
        serde_json::from_str(batch["events"][0]["data"].as_str().unwrap()).unwrap();
    assert_eq!(announced["id"], id.as_str());
    assert_eq!(announced["status"], "done");
    let other = take(&http, &base, "q", 0).await.unwrap();
    assert!(other["payload"].is_null(), "{other}");
    assert!(!ack(&http, &base, "q", &other).await);
    assert!(take(&http, &base, "q", 0).await.is_none());
    assert_eq!(
        stats(&http, &base, "q").await,
        json!({"queue": "q", "waiting": {"premium": 0, "normal": 0}, "running": 0,
               "submitted": 2, "completed": 2, "redelivered": 0, "duplicates": 0})
    );
    get(&http, &format!("{base}/queues/q/jobs/nope"))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premium_order_with_the_starvation_guard_on_redis() {
    let redis = common::start_redis(false).await;
    let server = instance(&redis, |c| c.normal_every = 3).await;
    let (http, base) = (client(), server.url());
    for _ in 0..4 {
        enqueue(&http, &base, "q", json!({"lane": "normal"})).await;
    }
    for _ in 0..6 {
        enqueue(&http, &base, "q", json!({"lane": "premium"})).await;
    }
    let jobs = drain(&http, &base, "q").await;
    assert_eq!(lanes(&jobs), "PPNPPNPPNN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_redelivered_across_instances_and_counted_on_redis() {
    let redis = common::start_redis(false).await;
    let tweak = |c: &mut ServerConfig| c.visibility_timeout = Duration::from_millis(300);
    let (a, b) = (instance(&redis, tweak).await, instance(&redis, tweak).await);
    let http = client();
    let id = enqueue(&http, &a.url(), "q", json!({})).await;
    let first = take(&http, &a.url(), "q", 0).await.unwrap();
    // Instance A's worker stalls; B's waiting taker gets the job when the lease expires.
    let second = take(&http, &b.url(), "q", 10_000)
        .await
        .expect("a redelivery");
    assert_eq!(
        (second["id"].as_str(), second["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    let waiter = {
        let (http, base, id) = (http.clone(), a.url(), id.clone());
        tokio::spawn(async move { status(&http, &base, "q", &id, "?wait_ms=30000").await })
    };
    assert!(!ack(&http, &b.url(), "q", &second).await);
    // The handle long poll on A wakes on B's completion.
    let answer = within("the held status request", STEP, waiter)
        .await
        .unwrap();
    assert_eq!(answer["status"], "done");
    assert!(
        ack(&http, &a.url(), "q", &first).await,
        "the late ack must be a duplicate"
    );
    let done = status(&http, &b.url(), "q", &id, "").await;
    assert_eq!(
        (done["attempts"].as_u64(), done["completions"].as_u64()),
        (Some(2), Some(2))
    );
    let counts = stats(&http, &a.url(), "q").await;
    assert_eq!(
        (
            counts["completed"].as_u64(),
            counts["redelivered"].as_u64(),
            counts["duplicates"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert!(take(&http, &a.url(), "q", 0).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_compete_for_one_queue_and_finish_each_job_once() {
    let redis = common::start_redis(false).await;
    let tweak = |c: &mut ServerConfig| c.workers = 2;
    let (a, b) = (instance(&redis, tweak).await, instance(&redis, tweak).await);
    let http = client();
    let mut ids = Vec::new();
    for i in 0..40 {
        let base = if i % 2 == 0 { a.url() } else { b.url() };
        let lane = if i % 3 == 0 { "premium" } else { "normal" };
        ids.push(enqueue(&http, &base, "jobs", json!({"lane": lane, "work_ms": 20})).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let base = if i % 2 == 0 { b.url() } else { a.url() };
        let done = status(&http, &base, "jobs", id, "?wait_ms=20000").await;
        assert_eq!(done["status"], "done", "{done}");
        assert_eq!(
            (done["attempts"].as_u64(), done["completions"].as_u64()),
            (Some(1), Some(1))
        );
    }
    let counts = stats(&http, &a.url(), "jobs").await;
    assert_eq!(
        counts,
        json!({"queue": "jobs", "waiting": {"premium": 0, "normal": 0}, "running": 0,
               "submitted": 40, "completed": 40, "redelivered": 0, "duplicates": 0})
    );
    // Competing consumers: both instances' workers took part.
    let completed = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("commbench_jobs_completed_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    let on_a = completed(&get(&http, &format!("{}/metrics", a.url())).await.text());
    let on_b = completed(&get(&http, &format!("{}/metrics", b.url())).await.text());
    assert_eq!(on_a + on_b, 40);
    assert!(on_a > 0 && on_b > 0, "a: {on_a}, b: {on_b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_unavailable_except_enqueue_which_spools() {
    let mut redis = common::start_redis(false).await;
    let server = instance(&redis, |_| {}).await;
    let (http, base) = (client(), server.url());
    let id = enqueue(&http, &base, "q", json!({})).await;
    redis.kill();
    let answer = enqueue_answer(&http, &base, "q", json!({"lane": "premium"})).await;
    assert_eq!(answer["spooled"], true, "{answer}");
    let spooled = answer["id"].as_str().unwrap();
    // The spooled job answers for itself; everything that needs Redis is a 503 at once.
    assert_eq!(
        status(&http, &base, "q", spooled, "").await["status"],
        "queued"
    );
    get(&http, &format!("{base}/queues/q/jobs/{id}"))
        .await
        .assert_error(503, "unavailable");
    post(
        &http,
        &format!("{base}/queues/q/take?wait_ms=0"),
        Vec::new(),
    )
    .await
    .assert_error(503, "unavailable");
    get(&http, &format!("{base}/queues/q/stats"))
        .await
        .assert_error(503, "unavailable");
}
