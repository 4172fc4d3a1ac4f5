//! End-to-end benches of the message queue and of the Redis bus, over loopback.
//!
//! - `queue/…`: one job (no simulated work) from `POST /queues/{q}/jobs` until a long poll on its
//!   handle answers `done`, through the in-server workers: in-process, and on a private
//!   `redis-server` (Redis Streams consumer group).
//! - `deliver_1_redis/…`: one `POST /publish` on instance A until a subscriber on instance B has the
//!   event, the two instances joined by a private `redis-server` — the cross-instance hop the
//!   in-process `deliver_1` group does not pay.
//!
//! The Redis benches are skipped (with a note) when `redis-server` is not installed.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use commbench_benches::{body_of, http_client, ws_next_event, ws_subscribe, Publisher, SseReader};
use commbench_servers::{
    redis::server::{self as redis_server, RedisOptions, RedisServer},
    topic::TopicName,
    ServerConfig, ServerHandle,
};
use criterion::{criterion_group, criterion_main, Criterion};
use tokio::{runtime::Runtime, sync::Mutex};

/// Bytes of every published payload.
const PAYLOAD_BYTES: usize = 128;
/// Longest any single step may take before the bench fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(10);

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A server on loopback, on `bus` when given (no heartbeats during a measurement).
fn server(rt: &Runtime, bus: Option<&str>, workers: usize) -> ServerHandle {
    let config = ServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        heartbeat: Duration::from_secs(3600),
        shutdown_grace: Duration::from_millis(200),
        bus: bus.map(str::to_owned),
        workers,
        worker_queue: TopicName::parse("bench").expect("a valid queue name"),
        ..ServerConfig::default()
    };
    rt.block_on(ServerHandle::spawn(config))
        .expect("spawning the server")
}

/// A private `redis-server`, or `None` (with a note) when it is not installed.
fn redis(rt: &Runtime) -> Option<RedisServer> {
    if !redis_server::installed() {
        eprintln!("redis-server is not installed: skipping the Redis benches");
        return None;
    }
    Some(
        rt.block_on(RedisServer::start(RedisOptions::default()))
            .expect("starting redis-server"),
    )
}

/// Enqueues one job and long-polls its handle until it is done.
async fn job_round(client: &reqwest::Client, base: &str) {
    let submit = client
        .post(format!("{base}/queues/bench/jobs"))
        .header("content-type", "application/json")
        .body(r#"{"work_ms":0}"#);
    let body = body_of(submit).await.expect("enqueue");
    let answer: serde_json::Value = serde_json::from_slice(&body).expect("enqueue answer");
    let id = answer["id"].as_str().expect("job id").to_owned();
    let status = format!("{base}/queues/bench/jobs/{id}?wait_ms=10000");
    loop {
        let body = tokio::time::timeout(DEADLINE, body_of(client.get(&status)))
            .await
            .expect("the job did not finish in time")
            .expect("job status");
        let view: serde_json::Value = serde_json::from_slice(&body).expect("job status answer");
        if view["status"] == "done" {
            return;
        }
    }
}

fn queue(c: &mut Criterion) {
    let rt = runtime();
    let client = http_client();
    let mut group = c.benchmark_group("queue");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let local = server(&rt, None, 2);
    let base = local.url();
    group.bench_function("enqueue_to_done_in_process", |b| {
        b.to_async(&rt).iter(|| job_round(&client, &base))
    });
    let _ = rt.block_on(local.shutdown());
    if let Some(redis) = redis(&rt) {
        let shared = server(&rt, Some(redis.url()), 2);
        let base = shared.url();
        group.bench_function("enqueue_to_done_redis", |b| {
            b.to_async(&rt).iter(|| job_round(&client, &base))
        });
        let _ = rt.block_on(shared.shutdown());
    }
    group.finish();
}

fn deliver_across_redis(c: &mut Criterion) {
    let rt = runtime();
    let Some(redis) = redis(&rt) else {
        return;
    };
    let client = http_client();
    let (a, b) = (
        server(&rt, Some(redis.url()), 0),
        server(&rt, Some(redis.url()), 0),
    );
    let publisher = Publisher::new(client.clone(), a.url());
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let mut group = c.benchmark_group("deliver_1_redis");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // Locked per measurement: criterion's closure may not hand out the reader mutably.
    let sse = Mutex::new(
        rt.block_on(SseReader::subscribe(&client, &b.url(), "sse"))
            .expect("SSE subscribe on B"),
    );
    group.bench_function("sse", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let (publisher, payload, sse) = (&publisher, &payload, &sse);
            async move {
                let mut sse = sse.lock().await;
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let seq = publisher
                        .publish("sse", payload.clone())
                        .await
                        .expect("publish");
                    let got = tokio::time::timeout(DEADLINE, sse.next_event())
                        .await
                        .expect("the event did not cross in time")
                        .expect("SSE event");
                    assert_eq!(got, seq);
                    total += start.elapsed();
                }
                total
            }
        })
    });
    let ws = Mutex::new(
        rt.block_on(ws_subscribe(b.addr, "ws"))
            .expect("WebSocket subscribe on B"),
    );
    group.bench_function("websocket", |bench| {
        bench.to_async(&rt).iter_custom(|iters| {
            let (publisher, payload, ws) = (&publisher, &payload, &ws);
            async move {
                let mut ws = ws.lock().await;
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let seq = publisher
                        .publish("ws", payload.clone())
                        .await
                        .expect("publish");
                    let got = tokio::time::timeout(DEADLINE, ws_next_event(&mut ws))
                        .await
                        .expect("the event did not cross in time")
                        .expect("WebSocket event");
                    assert_eq!(got, seq);
                    total += start.elapsed();
                }
                total
            }
        })
    });
    group.finish();
    drop((sse, ws));
    let _ = rt.block_on(a.shutdown());
    let _ = rt.block_on(b.shutdown());
}

fn config() -> Criterion {
    commbench_benches::register_report_font();
    Criterion::default()
}

criterion_group! {
    name = benches;
    config = config();
    targets = queue, deliver_across_redis
}
criterion_main!(benches);
