//! Long polling on a handle: `POST /jobs?work_ms=` → 202, `GET /jobs/{id}?wait_ms=`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use commbench_servers::metrics::RejectReason;
use common::{client, get, post, spawn_default, spawn_with, within, Reply, STEP};
use serde_json::Value;

async fn create(http: &reqwest::Client, base: &str, query: &str) -> Reply {
    post(http, &format!("{base}/jobs{query}"), Vec::new()).await
}

/// Creates a job, checks the 202 answer and returns its id.
async fn create_ok(http: &reqwest::Client, base: &str, work_ms: u64) -> u64 {
    let reply = create(http, base, &format!("?work_ms={work_ms}")).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["status"], "pending", "{body}");
    assert_eq!(body["work_ms"], work_ms, "{body}");
    let id = body["id"].as_u64().unwrap();
    assert_eq!(reply.header("location"), Some(format!("/jobs/{id}")));
    id
}

async fn status(http: &reqwest::Client, base: &str, id: u64, query: &str) -> Value {
    let reply = get(http, &format!("{base}/jobs/{id}{query}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["id"], id, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_is_pending_then_done_after_its_work() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let id = create_ok(&http, &base, 3000).await;
    let now = status(&http, &base, id, "").await;
    assert_eq!(now["status"], "pending");
    assert_eq!(now["work_ms"], 3000);

    // Without waiting, poll until done: it must finish, and not long after its work time.
    let started = Instant::now();
    within("the job to finish", Duration::from_secs(20), async {
        loop {
            if status(&http, &base, id, "?wait_ms=0").await["status"] == "done" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    // Done stays done.
    assert_eq!(status(&http, &base, id, "").await["status"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_distinct() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create_ok(&http, &base, 10).await);
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_work_comes_from_the_config() {
    let server = spawn_with(|c| c.job_work = Duration::from_millis(250)).await;
    let http = client();
    let reply = create(&http, &server.url(), "").await;
    assert_eq!(reply.status, 202);
    assert_eq!(reply.json()["work_ms"], 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ms_returns_done_as_soon_as_the_job_finishes() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let id = create_ok(&http, &base, 500).await;
    let started = Instant::now();
    let body = status(&http, &base, id, "?wait_ms=20000").await;
    let elapsed = started.elapsed();
    assert_eq!(body["status"], "done", "{body}");
    assert!(elapsed < Duration::from_secs(10), "waited {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_ms_ending_before_the_work_answers_pending() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let id = create_ok(&http, &base, 30_000).await;
    let started = Instant::now();
    let body = status(&http, &base, id, "?wait_ms=400").await;
    let elapsed = started.elapsed();
    assert_eq!(body["status"], "pending");
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2400), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_id_is_404_and_non_numeric_id_is_400() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    get(&http, &format!("{base}/jobs/999999"))
        .await
        .assert_error(404, "not_found");
    for id in ["abc", "-1", "1.5", "18446744073709551616"] {
        get(&http, &format!("{base}/jobs/{id}"))
            .await
            .assert_error(400, "bad_query");
    }
    get(&http, &format!("{base}/jobs/1?wait=5"))
        .await
        .assert_error(400, "bad_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_and_work_over_max_wait_are_400() {
    let server = spawn_with(|c| {
        c.max_wait = Duration::from_secs(2);
        c.default_wait = Duration::from_secs(1);
    })
    .await;
    let http = client();
    let base = server.url();
    create(&http, &base, "?work_ms=2001")
        .await
        .assert_error(400, "bad_query");
    create(&http, &base, "?work=5")
        .await
        .assert_error(400, "bad_query");
    let id = create_ok(&http, &base, 10).await;
    get(&http, &format!("{base}/jobs/{id}?wait_ms=2001"))
        .await
        .assert_error(400, "bad_query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_limit_refuses_when_every_remembered_job_is_pending() {
    let server = spawn_with(|c| c.max_jobs = 1).await;
    let http = client();
    let base = server.url();
    let long = create_ok(&http, &base, 60_000).await;
    let before = server.state.metrics.rejected_count(RejectReason::JobLimit);
    create(&http, &base, "?work_ms=10")
        .await
        .assert_error(429, "job_limit");
    assert_eq!(
        server.state.metrics.rejected_count(RejectReason::JobLimit),
        before + 1
    );
    assert_eq!(status(&http, &base, long, "").await["status"], "pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_forgotten_to_make_room() {
    let server = spawn_with(|c| c.max_jobs = 1).await;
    let http = client();
    let base = server.url();
    let first = create_ok(&http, &base, 0).await;
    assert_eq!(
        status(&http, &base, first, "?wait_ms=10000").await["status"],
        "done"
    );
    // The finished job is recorded as forgettable shortly after it is marked done.
    within("room for a second job", STEP, async {
        loop {
            let reply = create(&http, &base, "?work_ms=0").await;
            if reply.status == 202 {
                break;
            }
            reply.assert_error(429, "job_limit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    get(&http, &format!("{base}/jobs/{first}"))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_job_id_is_a_json_400() {
    let server = spawn_default().await;
    let http = client();
    let before = server.state.metrics.rejected_count(RejectReason::BadQuery);
    // Percent-decodes to invalid UTF-8: refused by the path extractor, must still be the JSON error.
    get(&http, &format!("{}/jobs/%FF", server.url()))
        .await
        .assert_error(400, "bad_query");
    assert_eq!(
        server.state.metrics.rejected_count(RejectReason::BadQuery),
        before + 1
    );
}
