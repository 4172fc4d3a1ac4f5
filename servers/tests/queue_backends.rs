//! The message queue's behaviour on every backend — in-process, Redis, RabbitMQ, Kafka — from the
//! same tests: a job's life and counts, lane order with the starvation guard, redelivery after the
//! visibility timeout with the late ack a duplicate, competing instances finishing each job once,
//! completions announced on the notify topic, (brokers only) a server holding a job killed
//! mid-job: the job is delivered again, and (log brokers) the workers' queue log made at start.

#![allow(clippy::unwrap_used)]

mod backends;
mod common;
mod queue_api;

use std::time::Duration;

use backends::{instances, shared, Backend};
use common::{child::ChildServer, client, get, poll, sse_subscribe, within, STEP};
use queue_api::{ack, drain, enqueue, lanes, stats, status, take};
use serde_json::json;

async fn a_job_goes_queued_running_done(backend: Backend) {
    let servers = instances(backend, 2, |c| c.workers = 0).await;
    let (http, base) = (client(), servers.url(0));
    let queue = "life";
    let id = enqueue(
        &http,
        &base,
        queue,
        json!({"lane": "premium", "work_ms": 5, "payload": "hi"}),
    )
    .await;
    let queued = status(&http, &servers.url(1), queue, &id, "").await;
    assert_eq!(
        (queued["status"].as_str(), queued["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );
    let job = take(&http, &base, queue, 5_000)
        .await
        .expect("a job to take");
    assert_eq!(
        (job["id"].as_str(), job["lane"].as_str()),
        (Some(id.as_str()), Some("premium"))
    );
    assert_eq!(
        (job["payload"].as_str(), job["attempt"].as_u64()),
        (Some("hi"), Some(1))
    );
    let running = status(&http, &base, queue, &id, "").await;
    assert_eq!(running["status"], "running");
    assert!(running["queue_wait_us"].is_u64(), "{running}");
    assert!(!ack(&http, &base, queue, &job).await);
    let done = status(&http, &servers.url(1), queue, &id, "?wait_ms=5000").await;
    assert_eq!(
        (done["status"].as_str(), done["completions"].as_u64()),
        (Some("done"), Some(1))
    );
    assert!(take(&http, &base, queue, 0).await.is_none());
    assert_eq!(
        stats(&http, &servers.url(1), queue).await,
        json!({"queue": queue, "waiting": {"premium": 0, "normal": 0}, "running": 0,
               "submitted": 1, "completed": 1, "redelivered": 0, "duplicates": 0})
    );
    get(&http, &format!("{base}/queues/{queue}/jobs/nope"))
        .await
        .assert_error(404, "not_found");
    let wrong = queue_api::ack_raw(&http, &base, queue, &id, "1.0000000000000001").await;
    wrong.assert_error(409, "lease_mismatch");
}

async fn premium_goes_first_but_one_take_in_three_serves_normal(backend: Backend) {
    let servers = instances(backend, 1, |c| {
        c.workers = 0;
        c.normal_every = 3;
    })
    .await;
    let (http, base) = (client(), servers.url(0));
    let queue = "lanes";
    // A first take makes the instance consume (RabbitMQ) before the jobs arrive.
    assert!(take(&http, &base, queue, 0).await.is_none());
    for _ in 0..4 {
        enqueue(&http, &base, queue, json!({"lane": "normal"})).await;
    }
    for _ in 0..6 {
        enqueue(&http, &base, queue, json!({"lane": "premium"})).await;
    }
    assert_eq!(
        stats(&http, &base, queue).await["waiting"],
        json!({"premium": 6, "normal": 4})
    );
    // RabbitMQ pushes jobs to the consumer (within its prefetch); give the deliveries a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs = drain(&http, &base, queue).await;
    assert_eq!(lanes(&jobs), "PPNPPNPPNN");
    for job in &jobs {
        assert!(!ack(&http, &base, queue, job).await);
    }
}

async fn an_expired_lease_is_redelivered_and_the_late_ack_is_a_duplicate(backend: Backend) {
    let servers = instances(backend, 2, |c| {
        c.workers = 0;
        c.visibility_timeout = Duration::from_millis(300);
    })
    .await;
    let http = client();
    let queue = "redeliver";
    let id = enqueue(&http, &servers.url(0), queue, json!({"work_ms": 1})).await;
    let first = take(&http, &servers.url(0), queue, 5_000).await.unwrap();
    // The first worker stalls; a waiting taker gets the job once the lease expires.
    let second = take(&http, &servers.url(0), queue, 10_000)
        .await
        .expect("a redelivery");
    assert_eq!(
        (second["id"].as_str(), second["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    assert_ne!(second["lease"], first["lease"]);
    assert!(!ack(&http, &servers.url(0), queue, &second).await);
    assert!(
        ack(&http, &servers.url(0), queue, &first).await,
        "the late ack must be a duplicate"
    );
    let done = status(&http, &servers.url(1), queue, &id, "").await;
    assert_eq!(
        (done["attempts"].as_u64(), done["completions"].as_u64()),
        (Some(2), Some(2))
    );
    let counts = stats(&http, &servers.url(1), queue).await;
    assert_eq!(
        (
            counts["completed"].as_u64(),
            counts["redelivered"].as_u64(),
            counts["duplicates"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{counts}"
    );
}

async fn competing_instances_finish_each_job_once(backend: Backend) {
    let servers = instances(backend, 2, |c| {
        c.workers = 2;
        c.worker_queue = commbench_servers::topic::TopicName::parse("compete").unwrap();
    })
    .await;
    let http = client();
    let queue = "compete";
    let mut ids = Vec::new();
    for i in 0..40 {
        let lane = if i % 3 == 0 { "premium" } else { "normal" };
        ids.push(
            enqueue(
                &http,
                &servers.url(i),
                queue,
                json!({"lane": lane, "work_ms": 20}),
            )
            .await,
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let done = status(&http, &servers.url(i + 1), queue, id, "?wait_ms=20000").await;
        assert_eq!(done["status"], "done", "{done}");
        assert_eq!(
            (done["attempts"].as_u64(), done["completions"].as_u64()),
            (Some(1), Some(1)),
            "{done}"
        );
    }
    let counts = stats(&http, &servers.url(0), queue).await;
    assert_eq!(
        (
            counts["submitted"].as_u64(),
            counts["completed"].as_u64(),
            counts["duplicates"].as_u64()
        ),
        (Some(40), Some(40), Some(0)),
        "{counts}"
    );
    if servers.servers().len() > 1 {
        let completed = |i: usize| -> u64 {
            let text = servers.server(i).state.metrics.render();
            text.lines()
                .filter(|l| l.starts_with("commbench_jobs_completed_total{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum()
        };
        assert_eq!(completed(0) + completed(1), 40);
        assert!(
            completed(0) > 0 && completed(1) > 0,
            "both instances' workers take part"
        );
    }
}

async fn a_completion_is_announced_on_the_notify_topic(backend: Backend) {
    let servers = instances(backend, 2, |c| {
        c.workers = 1;
        c.worker_queue = commbench_servers::topic::TopicName::parse("announce").unwrap();
    })
    .await;
    let http = client();
    let url = format!("{}/sse/my-jobs", servers.url(1));
    let (mut stream, _) = sse_subscribe(&http, &url, &[]).await;
    let id = enqueue(
        &http,
        &servers.url(0),
        "announce",
        json!({"work_ms": 20, "notify": "my-jobs"}),
    )
    .await;
    let event = stream.next_event().await;
    let job: serde_json::Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
    assert_eq!(
        (job["id"].as_str(), job["status"].as_str()),
        (Some(id.as_str()), Some("done"))
    );
    let batch = poll(&http, &servers.url(0), "my-jobs", "after=0").await;
    assert_eq!(batch["events"].as_array().map(Vec::len), Some(1), "{batch}");
}

async fn a_job_held_by_a_killed_server_is_delivered_again(backend: Backend) {
    let bus = shared(backend).await.unwrap().url();
    let servers = instances(backend, 1, |c| {
        c.workers = 0;
        c.visibility_timeout = Duration::from_secs(2);
    })
    .await;
    let doomed = ChildServer::start(&[
        "--bus",
        &bus,
        "--workers",
        "0",
        "--visibility-timeout",
        "2s",
    ])
    .await;
    let http = client();
    let queue = "killed";
    let id = enqueue(&http, &servers.url(0), queue, json!({"work_ms": 1})).await;
    let held = take(&http, &doomed.url(), queue, 10_000)
        .await
        .expect("the doomed server takes it");
    assert_eq!(held["id"], id.as_str());
    // SIGKILL: no ack, no goodbye. The broker (RabbitMQ: the dropped connection requeues it; Kafka and
    // Redis: the take expires) delivers the job again.
    doomed.kill().await;
    let again = within(
        "the job to come back",
        STEP * 3,
        take(&http, &servers.url(0), queue, 25_000),
    )
    .await
    .expect("a redelivery");
    assert_eq!(
        (again["id"].as_str(), again["attempt"].as_u64()),
        (Some(id.as_str()), Some(2))
    );
    assert!(!ack(&http, &servers.url(0), queue, &again).await);
    let counts = stats(&http, &servers.url(0), queue).await;
    assert_eq!(
        (counts["completed"].as_u64(), counts["redelivered"].as_u64()),
        (Some(1), Some(1)),
        "{counts}"
    );
}

/// With a log broker the in-server workers' queue gets its job log when the server starts, not
/// from the first enqueue: a log made under load held every worker's first take while it settled
/// (half a second on RabbitMQ), and the jobs meanwhile waited.
async fn the_worker_queue_log_is_made_before_any_job(backend: Backend) {
    use commbench_servers::log::LogBroker;
    let queue = format!("ready{}", backend.label());
    let topic = commbench_servers::topic::TopicName::parse(&queue).unwrap();
    let servers = instances(backend, 1, |c| {
        c.workers = 1;
        c.worker_queue = topic.clone();
    })
    .await;
    let url = shared(backend).await.unwrap().url();
    let counters = std::sync::Arc::default();
    let broker: Box<dyn LogBroker> = match backend {
        Backend::RabbitMq => Box::new(
            commbench_servers::log::rabbitmq::RabbitLog::connect(&url, counters)
                .await
                .unwrap(),
        ),
        _ => Box::new(
            commbench_servers::log::kafka::KafkaLog::connect(&url, counters)
                .await
                .unwrap(),
        ),
    };
    let log = commbench_servers::log::log_name("j", &queue);
    within("the worker queue's log to exist", STEP * 2, async {
        while broker.end(&log).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Made, not filled: nothing was submitted.
    let counts = stats(&client(), &servers.url(0), &queue).await;
    assert_eq!(counts["submitted"].as_u64(), Some(0), "{counts}");
}

mod log_brokers {
    crate::suite!(@backend rabbitmq, RabbitMq, the_worker_queue_log_is_made_before_any_job);
    crate::suite!(@backend kafka, Kafka, the_worker_queue_log_is_made_before_any_job);
    use super::*;
}

suite!(
    a_job_goes_queued_running_done,
    premium_goes_first_but_one_take_in_three_serves_normal,
    an_expired_lease_is_redelivered_and_the_late_ack_is_a_duplicate,
    competing_instances_finish_each_job_once,
    a_completion_is_announced_on_the_notify_topic,
);

suite!(brokers: a_job_held_by_a_killed_server_is_delivered_again);
