//! The message queue on the in-process backend: enqueue → status → take → ack, every refusal, long
//! polling on the handle, the notify topic, lane order with the starvation guard, and redelivery after
//! the visibility timeout with the late ack counted as a duplicate.

#![allow(clippy::unwrap_used)]

mod common;
mod queue_api;

use std::time::Duration;

use common::{client, get, poll, post, spawn_with, sse_subscribe, within, STEP};
use queue_api::{ack, ack_raw, drain, enqueue, enqueue_raw, lanes, stats, status, take};
use serde_json::json;

#[tokio::test]
async fn a_job_goes_queued_running_done() {
    let server = spawn_with(|c| c.workers = 0).await;
    let (http, base) = (client(), server.url());
    let id = enqueue(
        &http,
        &base,
        "q",
        json!({"lane": "premium", "work_ms": 5, "payload": "hi"}),
    )
    .await;
    let queued = status(&http, &base, "q", &id, "").await;
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["attempts"], 0);
    assert_eq!(queued["work_ms"], 5);
    assert!(queued["enqueued_at_us"].as_u64().unwrap() > 0);
    assert!(queued["started_at_us"].is_null() && queued["queue_wait_us"].is_null());

    let job = take(&http, &base, "q", 0).await.expect("a job to take");
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["lane"], "premium");
    assert_eq!(job["payload"], "hi");
    assert_eq!(job["attempt"], 1);
    let running = status(&http, &base, "q", &id, "").await;
    assert_eq!(running["status"], "running");
    assert_eq!(running["attempts"], 1);
    assert!(running["queue_wait_us"].is_u64(), "{running}");

    assert!(!ack(&http, &base, "q", &job).await);
    let done = status(&http, &base, "q", &id, "").await;
    assert_eq!(done["status"], "done");
    assert_eq!(done["completions"], 1);
    assert!(done["completed_at_us"].as_u64() >= done["started_at_us"].as_u64());
    assert!(take(&http, &base, "q", 0).await.is_none());

    let counts = stats(&http, &base, "q").await;
    assert_eq!(
        counts,
        json!({"queue": "q", "waiting": {"premium": 0, "normal": 0}, "running": 0,
               "submitted": 1, "completed": 1, "redelivered": 0, "duplicates": 0})
    );
    let metrics = get(&http, &format!("{base}/metrics")).await.text();
    assert!(
        metrics.contains("commbench_jobs_submitted_total{lane=\"premium\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("commbench_jobs_completed_total{lane=\"premium\"} 1"));
    assert!(metrics.contains("commbench_jobs_duplicate_completions_total 0"));
}

#[tokio::test]
async fn bad_requests_get_precise_json_errors() {
    let server = spawn_with(|c| {
        c.workers = 0;
        c.max_work_ms = 100;
        c.max_body = 256;
        c.max_queued_jobs = 2;
        c.max_queues = 2;
    })
    .await;
    let (http, base) = (client(), server.url());
    let url = format!("{base}/queues/q/jobs");
    post(&http, &url, "{not json")
        .await
        .assert_error(400, "bad_message");
    post(&http, &url, r#"{"lane":"gold"}"#)
        .await
        .assert_error(400, "bad_message");
    post(&http, &url, r#"{"work_ms":101}"#)
        .await
        .assert_error(400, "bad_message");
    post(&http, &url, r#"{"work_ms":-1}"#)
        .await
        .assert_error(400, "bad_message");
    post(&http, &url, r#"{"priority":1}"#)
        .await
        .assert_error(400, "bad_message");
    post(&http, &url, r#"{"notify":"no spaces"}"#)
        .await
        .assert_error(400, "bad_topic");
    let big = json!({ "payload": "x".repeat(300) }).to_string();
    post(&http, &url, big)
        .await
        .assert_error(413, "payload_too_large");
    post(&http, &format!("{base}/queues/a%20b/jobs"), "{}")
        .await
        .assert_error(400, "bad_topic");

    let id = enqueue(&http, &base, "q", json!({})).await;
    enqueue(&http, &base, "q", json!({"lane": "premium"})).await;
    enqueue_raw(&http, &base, "q", json!({}))
        .await
        .assert_error(503, "queue_full");
    enqueue(&http, &base, "other", json!({})).await;
    enqueue_raw(&http, &base, "third", json!({}))
        .await
        .assert_error(429, "queue_limit");

    get(&http, &format!("{base}/queues/q/jobs/nope"))
        .await
        .assert_error(404, "not_found");
    get(&http, &format!("{base}/queues/q/jobs/{id}?wait_ms=999999"))
        .await
        .assert_error(400, "bad_query");
    ack_raw(&http, &base, "q", "nope", "1.0000000000000001")
        .await
        .assert_error(404, "not_found");
    ack_raw(&http, &base, "q", &id, "garbage")
        .await
        .assert_error(400, "bad_message");
    // Nobody took the job: no lease was issued yet, whatever its shape.
    ack_raw(&http, &base, "q", &id, "1.0000000000000001")
        .await
        .assert_error(409, "lease_mismatch");
    post(&http, &format!("{base}/queues/q/jobs/{id}/ack"), "{}")
        .await
        .assert_error(400, "bad_message");
    post(&http, &format!("{base}/queues/q/take?wait_ms=x"), "")
        .await
        .assert_error(400, "bad_query");
    // A full queue drains and accepts again.
    let job = take(&http, &base, "q", 0).await.unwrap();
    assert!(!ack(&http, &base, "q", &job).await);
    enqueue(&http, &base, "q", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_on_the_handle_wakes_on_completion() {
    let server = spawn_with(|c| c.workers = 0).await;
    let (http, base) = (client(), server.url());
    let id = enqueue(&http, &base, "q", json!({})).await;
    let waiter = {
        let (http, base, id) = (http.clone(), base.clone(), id.clone());
        tokio::spawn(async move { status(&http, &base, "q", &id, "?wait_ms=60000").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the long poll answered before the job finished"
    );
    let job = take(&http, &base, "q", 0).await.unwrap();
    assert!(!ack(&http, &base, "q", &job).await);
    // Well before its 60 s wait: the completion woke it.
    let answer = within("the held status request", STEP, waiter)
        .await
        .unwrap();
    assert_eq!(answer["status"], "done");
    // A wait on a job that stays unfinished answers its current status when the wait ends.
    let id = enqueue(&http, &base, "q", json!({})).await;
    assert_eq!(
        status(&http, &base, "q", &id, "?wait_ms=100").await["status"],
        "queued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_server_workers_finish_jobs_and_announce_them_on_the_notify_topic() {
    let server = spawn_with(|c| c.workers = 2).await;
    let (http, base) = (client(), server.url());
    let mut ids = Vec::new();
    for i in 0..10 {
        let body = json!({"work_ms": 5, "notify": "finished", "payload": format!("j{i}")});
        ids.push(enqueue(&http, &base, "jobs", body).await);
    }
    for id in &ids {
        let done = status(&http, &base, "jobs", id, "?wait_ms=10000").await;
        assert_eq!(done["status"], "done", "{done}");
        assert_eq!(done["completions"], 1);
    }
    let batch = poll(&http, &base, "finished", "after=0").await;
    let events = batch["events"].as_array().unwrap();
    assert_eq!(events.len(), 10, "{batch}");
    let mut announced: Vec<String> = events
        .iter()
        .map(|e| {
            let job: serde_json::Value = serde_json::from_str(e["data"].as_str().unwrap()).unwrap();
            assert_eq!(job["status"], "done", "{job}");
            assert_eq!(job["queue"], "jobs", "{job}");
            job["id"].as_str().unwrap().to_owned()
        })
        .collect();
    announced.sort();
    ids.sort();
    assert_eq!(announced, ids);
    assert_eq!(stats(&http, &base, "jobs").await["completed"], 10);
}

#[tokio::test]
async fn premium_goes_first_but_one_take_in_four_serves_normal() {
    let server = spawn_with(|c| {
        c.workers = 0;
        c.normal_every = 4;
    })
    .await;
    let (http, base) = (client(), server.url());
    let mut normal = Vec::new();
    let mut premium = Vec::new();
    for _ in 0..6 {
        normal.push(enqueue(&http, &base, "q", json!({"lane": "normal"})).await);
    }
    for _ in 0..9 {
        premium.push(enqueue(&http, &base, "q", json!({"lane": "premium"})).await);
    }
    let waiting = stats(&http, &base, "q").await["waiting"].clone();
    assert_eq!(waiting, json!({"premium": 9, "normal": 6}));
    let jobs = drain(&http, &base, "q").await;
    assert_eq!(lanes(&jobs), "PPPNPPPNPPPNNNN");
    // Each lane is first-in, first-out.
    let in_lane = |lane: &str| -> Vec<String> {
        jobs.iter()
            .filter(|j| j["lane"] == lane)
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(in_lane("premium"), premium);
    assert_eq!(in_lane("normal"), normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_redelivered_and_the_late_ack_is_a_duplicate() {
    let server = spawn_with(|c| {
        c.workers = 0;
        c.visibility_timeout = Duration::from_millis(300);
    })
    .await;
    let (http, base) = (client(), server.url());
    let id = enqueue(&http, &base, "q", json!({"work_ms": 1})).await;
    let first = take(&http, &base, "q", 0).await.unwrap();
    // The first worker stalls; a waiting taker gets the job once the lease expires.
    let second = take(&http, &base, "q", 10_000).await.expect("a redelivery");
    assert_eq!(second["id"], id.as_str());
    assert_eq!(second["attempt"], 2);
    assert_ne!(second["lease"], first["lease"]);
    assert_eq!(stats(&http, &base, "q").await["redelivered"], 1);
    assert!(!ack(&http, &base, "q", &second).await);
    assert!(
        ack(&http, &base, "q", &first).await,
        "the late ack must be a duplicate"
    );
    let done = status(&http, &base, "q", &id, "").await;
    assert_eq!(
        (done["attempts"].as_u64(), done["completions"].as_u64()),
        (Some(2), Some(2))
    );
    let counts = stats(&http, &base, "q").await;
    assert_eq!(
        (counts["completed"].as_u64(), counts["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    let metrics = get(&http, &format!("{base}/metrics")).await.text();
    assert!(
        metrics.contains("commbench_jobs_redelivered_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("commbench_jobs_duplicate_completions_total 1"));

    // The other way round: the stalled worker finishes first, the redelivered copy is the duplicate.
    enqueue(&http, &base, "q", json!({})).await;
    let first = take(&http, &base, "q", 0).await.unwrap();
    let second = take(&http, &base, "q", 10_000).await.expect("a redelivery");
    assert!(!ack(&http, &base, "q", &first).await);
    assert!(ack(&http, &base, "q", &second).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_of_the_notify_topic_learns_the_completion() {
    let server = spawn_with(|c| c.workers = 1).await;
    let (http, base) = (client(), server.url());
    let (mut stream, _) = sse_subscribe(&http, &format!("{base}/sse/my-jobs"), &[]).await;
    let id = enqueue(
        &http,
        &base,
        "jobs",
        json!({"work_ms": 20, "notify": "my-jobs"}),
    )
    .await;
    let event = stream.next_event().await;
    let job: serde_json::Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["status"], "done");
    assert_eq!(job["work_ms"], 20);
}
