//! `commbench worker` processes against `commbench serve`: two workers share a queue, one is killed
//! (SIGKILL) mid-run, and every job still completes — its jobs are redelivered after the visibility
//! timeout — with redeliveries and duplicates counted consistently; the survivor stops cleanly on
//! SIGTERM and reports what it processed. On Redis, a worker also rides out a Redis restart.
#![allow(clippy::unwrap_used)]

use std::{
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use commbench_loadgen::{
    http::{read_body, HttpConn},
    record::Recorder,
    target::Target,
};
use commbench_servers::redis::server::{RedisOptions, RedisServer};
use http::Method;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
};

const BIN: &str = env!("CARGO_BIN_EXE_commbench");
const JOBS: usize = 60;

/// Runs `fut`, failing the test with `what` after `limit`.
async fn within<F: std::future::Future>(what: &str, limit: Duration, fut: F) -> F::Output {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?} waiting for {what}"))
}

/// One request on a fresh connection; answers the status and the JSON body (Null when empty).
async fn call(target: &Target, method: Method, path: &str, body: Value) -> (u16, Value) {
    within(path, Duration::from_secs(40), async {
        let recorder = Arc::new(Recorder::new(1));
        let mut conn = HttpConn::open(target, None, &recorder).await.unwrap();
        let body = if body.is_null() {
            Bytes::new()
        } else {
            Bytes::from(body.to_string())
        };
        let response = conn
            .send(method, path, &[("content-type", "application/json")], body)
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = read_body(response.into_body()).await.unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    })
    .await
}

/// `commbench serve` on an ephemeral port; answers the child and its target.
async fn start_server(args: &[&str]) -> (Child, Target) {
    let mut child = Command::new(BIN)
        .args(["serve", "--bind", "127.0.0.1:0", "--exit-on-stdin-eof"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = within("the server's address", Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("server exited");
            if let Some(url) = line.strip_prefix("listening on ") {
                return url.trim().to_owned();
            }
        }
    })
    .await;
    (child, Target::external(&url).await.unwrap())
}

fn start_worker(target: &Target, name: &str) -> Child {
    Command::new(BIN)
        .args([
            "worker",
            "--server",
            &format!("http://{}", target.authority),
        ])
        .args([
            "--queue",
            "jobs",
            "--concurrency",
            "3",
            "--name",
            name,
            "--take-wait",
            "2s",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Held requests of the queue pattern (waiting takes) from `/metrics`.
async fn held_takes(target: &Target) -> i64 {
    within("/metrics", Duration::from_secs(40), async {
        let recorder = Arc::new(Recorder::new(1));
        let mut conn = HttpConn::open(target, None, &recorder).await.unwrap();
        let text = conn
            .fetch(Method::GET, "/metrics", Bytes::new())
            .await
            .unwrap();
        String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("commbench_active{pattern=\"queue\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
    .await
}

async fn stats(target: &Target) -> Value {
    let (status, body) = call(target, Method::GET, "/queues/jobs/stats", Value::Null).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_no_job() {
    killed_worker_scenario(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_no_job_on_the_redis_backend() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    killed_worker_scenario(&["--bus", redis.url()]).await;
}

/// Enqueues `count` jobs and answers their ids; each answer must be 202 (spooled or not).
async fn enqueue_jobs(target: &Target, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..count {
        let (status, body) = call(
            target,
            Method::POST,
            "/queues/jobs/jobs",
            json!({"work_ms": 10}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Long-polls until the job is done; fails after `deadline`.
async fn wait_done(target: &Target, id: &str, deadline: Instant) -> Value {
    loop {
        let path = format!("/queues/jobs/jobs/{id}?wait_ms=5000");
        let (status, job) = call(target, Method::GET, &path, Value::Null).await;
        assert_eq!(status, 200, "{job}");
        if job["status"] == "done" {
            return job;
        }
        assert!(Instant::now() < deadline, "job {id} never finished: {job}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_resumes_after_redis_restarts() {
    let mut redis = RedisServer::start(RedisOptions { durable: true })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let args = [
        "--workers",
        "0",
        "--visibility-timeout",
        "1s",
        "--bus",
        redis.url(),
    ];
    let (mut server, target) = start_server(&args).await;
    let mut worker = start_worker(&target, "w");
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in enqueue_jobs(&target, 5).await {
        wait_done(&target, &id, deadline).await;
    }

    redis.kill();
    // Enqueues are spooled while Redis is down; the worker's takes fail (503) and are retried.
    let mut ids = enqueue_jobs(&target, 10).await;
    within("redis to restart", Duration::from_secs(10), redis.restart())
        .await
        .unwrap();
    ids.extend(enqueue_jobs(&target, 5).await);
    // Only the worker process takes jobs: each one done proves it resumed.
    for id in &ids {
        wait_done(&target, id, deadline).await;
    }
    let counts = stats(&target).await;
    assert_eq!(
        (counts["submitted"].as_u64(), counts["completed"].as_u64()),
        (Some(20), Some(20)),
        "{counts}"
    );
    assert!(worker.try_wait().unwrap().is_none(), "the worker exited");
    let _ = worker.start_kill();
    drop(server.stdin.take());
    let _ = within("the server to exit", Duration::from_secs(20), server.wait()).await;
}

async fn killed_worker_scenario(extra: &[&str]) {
    let mut args = vec!["--workers", "0", "--visibility-timeout", "500ms"];
    args.extend_from_slice(extra);
    let (mut server, target) = start_server(&args).await;
    let mut survivor = start_worker(&target, "survivor");
    let mut victim = start_worker(&target, "victim");

    // Both workers hold their 3 takes before any job exists, so both compete from the start.
    within(
        "both workers to wait for jobs",
        Duration::from_secs(60),
        async {
            while held_takes(&target).await < 6 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        },
    )
    .await;

    let mut ids = Vec::new();
    for i in 0..JOBS {
        let lane = if i % 4 == 0 { "premium" } else { "normal" };
        let (status, body) = call(
            &target,
            Method::POST,
            "/queues/jobs/jobs",
            json!({"lane": lane, "work_ms": 100}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }

    // Kill one worker mid-run, while it surely holds a job: more jobs are running than the survivor
    // can hold (3), and plenty still wait, so it keeps taking until the kill.
    within("both workers to be busy", Duration::from_secs(60), async {
        loop {
            let counts = stats(&target).await;
            let waiting = counts["waiting"]["premium"].as_u64().unwrap()
                + counts["waiting"]["normal"].as_u64().unwrap();
            if counts["running"].as_u64().unwrap() >= 4 && waiting >= 12 {
                break;
            }
            assert!(
                waiting >= 12,
                "the queue drained before both workers ran: {counts}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    victim.start_kill().unwrap();
    let _ = within(
        "the killed worker to exit",
        Duration::from_secs(10),
        victim.wait(),
    )
    .await;

    // Every job reaches done (the killed worker's jobs after the visibility timeout).
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut completions = 0;
    let mut redelivered_jobs = 0;
    for id in &ids {
        let job = loop {
            let path = format!("/queues/jobs/jobs/{id}?wait_ms=30000");
            let (status, job) = call(&target, Method::GET, &path, Value::Null).await;
            assert_eq!(status, 200, "{job}");
            if job["status"] == "done" {
                break job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never finished (lost): {job}"
            );
        };
        let done = job["completions"].as_u64().unwrap();
        assert!(done >= 1, "{job}");
        completions += done;
        if job["attempts"].as_u64().unwrap() > 1 {
            redelivered_jobs += 1;
        }
    }
    let counts = stats(&target).await;
    assert_eq!(counts["submitted"], JOBS as u64, "{counts}");
    assert_eq!(counts["completed"], JOBS as u64, "none lost: {counts}");
    assert!(counts["redelivered"].as_u64().unwrap() >= 1, "{counts}");
    assert!(redelivered_jobs >= 1, "{counts}");
    // Processed more than once = acknowledgements beyond the first, per job and in total.
    assert_eq!(
        completions,
        JOBS as u64 + counts["duplicates"].as_u64().unwrap(),
        "{counts}"
    );
    assert_eq!(
        counts["waiting"],
        json!({"premium": 0, "normal": 0}),
        "{counts}"
    );

    // The survivor stops cleanly on SIGTERM and reports its work.
    let pid = survivor.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = within(
        "the worker to stop",
        Duration::from_secs(20),
        survivor.wait(),
    )
    .await
    .unwrap();
    assert!(status.success(), "{status}");
    let mut out = String::new();
    survivor
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let processed: u64 = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("processed="))
        .unwrap_or_else(|| panic!("no report in {out:?}"))
        .parse()
        .unwrap();
    assert!(processed >= 1 && processed <= completions, "{out}");
    assert!(out.contains("worker survivor:"), "{out}");

    drop(server.stdin.take());
    let _ = within("the server to exit", Duration::from_secs(20), server.wait()).await;
}
