//! Helpers for the message-queue tests, shared by the in-process and Redis suites: enqueue, status,
//! take and ack over HTTP, each checking the documented answer shape.

#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{json, Value};

use super::common::{get, post, Reply};

pub async fn enqueue_raw(http: &reqwest::Client, base: &str, queue: &str, body: Value) -> Reply {
    post(
        http,
        &format!("{base}/queues/{queue}/jobs"),
        body.to_string(),
    )
    .await
}

/// Enqueues and checks the 202 answer; returns the job id.
pub async fn enqueue(http: &reqwest::Client, base: &str, queue: &str, body: Value) -> String {
    enqueue_answer(http, base, queue, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Enqueues and checks the 202 answer; returns the answer (`spooled` tells an outage-spooled job).
pub async fn enqueue_answer(http: &reqwest::Client, base: &str, queue: &str, body: Value) -> Value {
    let reply = enqueue_raw(http, base, queue, body.clone()).await;
    assert_eq!(reply.status, 202, "enqueue {body}: {}", reply.text());
    let answer = reply.json();
    let id = answer["id"].as_str().unwrap().to_owned();
    assert_eq!(answer["queue"], queue, "{answer}");
    assert_eq!(answer["status"], "queued", "{answer}");
    let lane = body["lane"].as_str().unwrap_or("normal");
    assert_eq!(answer["lane"], lane, "{answer}");
    assert_eq!(
        reply.header("location"),
        Some(format!("/queues/{queue}/jobs/{id}"))
    );
    answer
}

pub async fn status(
    http: &reqwest::Client,
    base: &str,
    queue: &str,
    id: &str,
    query: &str,
) -> Value {
    let reply = get(http, &format!("{base}/queues/{queue}/jobs/{id}{query}")).await;
    assert_eq!(reply.status, 200, "status of {id}: {}", reply.text());
    let body = reply.json();
    assert_eq!(body["id"], id, "{body}");
    body
}

/// `POST take`; `None` on 204.
pub async fn take(http: &reqwest::Client, base: &str, queue: &str, wait_ms: u64) -> Option<Value> {
    let reply = post(
        http,
        &format!("{base}/queues/{queue}/take?worker=t&wait_ms={wait_ms}"),
        Vec::new(),
    )
    .await;
    match reply.status {
        204 => {
            assert!(reply.body.is_empty(), "204 with a body: {}", reply.text());
            None
        }
        200 => {
            let job = reply.json();
            assert!(job["lease"].is_string() && job["attempt"].is_u64(), "{job}");
            Some(job)
        }
        other => panic!("take answered {other}: {}", reply.text()),
    }
}

pub async fn ack_raw(
    http: &reqwest::Client,
    base: &str,
    queue: &str,
    id: &str,
    lease: &str,
) -> Reply {
    post(
        http,
        &format!("{base}/queues/{queue}/jobs/{id}/ack"),
        json!({ "lease": lease }).to_string(),
    )
    .await
}

/// Acks and checks the 200 answer; returns its `duplicate` flag.
pub async fn ack(http: &reqwest::Client, base: &str, queue: &str, job: &Value) -> bool {
    let id = job["id"].as_str().unwrap();
    let reply = ack_raw(http, base, queue, id, job["lease"].as_str().unwrap()).await;
    assert_eq!(reply.status, 200, "ack of {id}: {}", reply.text());
    let body = reply.json();
    assert_eq!(body["id"], id, "{body}");
    assert_eq!(body["status"], "done", "{body}");
    body["duplicate"].as_bool().unwrap()
}

pub async fn stats(http: &reqwest::Client, base: &str, queue: &str) -> Value {
    let reply = get(http, &format!("{base}/queues/{queue}/stats")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Takes until the queue answers 204; returns the jobs in the order taken.
pub async fn drain(http: &reqwest::Client, base: &str, queue: &str) -> Vec<Value> {
    let mut jobs = Vec::new();
    while let Some(job) = take(http, base, queue, 0).await {
        jobs.push(job);
        assert!(jobs.len() <= 10_000, "the queue never ran dry");
    }
    jobs
}

/// The lane letters (P/N) of jobs in order.
pub fn lanes(jobs: &[Value]) -> String {
    jobs.iter()
        .map(|j| if j["lane"] == "premium" { 'P' } else { 'N' })
        .collect()
}
