//! End-to-end benches of the message queue and of the broker buses (Redis, RabbitMQ, Kafka), over
//! loopback.
//!
//! - `queue/…`: one job (no simulated work) from `POST /queues/{q}/jobs` until a long poll on its
//!   handle answers `done`, through the in-server workers: in-process, and on each private broker
//!   (`enqueue_to_done_redis`, `…_rabbitmq`, `…_kafka`).
//! - `deliver_1_{broker}/…`: one `POST /publish` on instance A until a subscriber on instance B has
//!   the event, the two instances joined by a private broker — the cross-instance hop the
//!   in-process `deliver_1` group does not pay.
//!
//! A broker that is not installed is skipped with a note naming the install command.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use commbench_benches::{body_of, http_client, ws_next_event, ws_subscribe, Publisher, SseReader};
use commbench_servers::{
    broker::{rabbitmq::RabbitServer, tansu::TansuServer},
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

/// A private broker process, kept alive while its benches run.
enum Broker {
    Redis(RedisServer),
    Rabbit(RabbitServer),
    Kafka(TansuServer),
}

impl Broker {
    fn name(&self) -> &'static str {
        match self {
            Broker::Redis(_) => "redis",
            Broker::Rabbit(_) => "rabbitmq",
            Broker::Kafka(_) => "kafka",
        }
    }

    fn url(&self) -> &str {
        match self {
            Broker::Redis(server) => server.url(),
            Broker::Rabbit(server) => server.url(),
            Broker::Kafka(server) => server.url(),
        }
    }
}

/// Each installed broker, started privately on loopback, one at a time; a missing one is skipped
/// with a note.
fn each_broker(rt: &Runtime, mut bench: impl FnMut(&Broker)) {
    if redis_server::installed() {
        let redis = rt.block_on(RedisServer::start(RedisOptions::default()));
        bench(&Broker::Redis(redis.expect("starting redis-server")));
    } else {
        eprintln!("skipping the Redis benches: {}", redis_server::INSTALL_HINT);
    }
    match rt.block_on(RabbitServer::start()) {
        Ok(rabbit) => bench(&Broker::Rabbit(rabbit)),
        Err(error) => eprintln!("skipping the RabbitMQ benches: {error}"),
    }
    match rt.block_on(TansuServer::start()) {
        Ok(tansu) => bench(&Broker::Kafka(tansu)),
        Err(error) => eprintln!("skipping the Kafka benches: {error}"),
    }
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
    each_broker(&rt, |broker| {
        let shared = server(&rt, Some(broker.url()), 2);
        let base = shared.url();
        group.bench_function(format!("enqueue_to_done_{}", broker.name()), |b| {
            b.to_async(&rt).iter(|| job_round(&client, &base))
        });
        let _ = rt.block_on(shared.shutdown());
    });
    group.finish();
}

fn deliver_across_brokers(c: &mut Criterion) {
    let rt = runtime();
    each_broker(&rt, |broker| deliver_across(c, &rt, broker));
}

fn deliver_across(c: &mut Criterion, rt: &Runtime, broker: &Broker) {
    let client = http_client();
    let (a, b) = (
        server(rt, Some(broker.url()), 0),
        server(rt, Some(broker.url()), 0),
    );
    let publisher = Publisher::new(client.clone(), a.url());
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    let mut group = c.benchmark_group(format!("deliver_1_{}", broker.name()));
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
        bench.to_async(rt).iter_custom(|iters| {
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
        bench.to_async(rt).iter_custom(|iters| {
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
    targets = queue, deliver_across_brokers
}
criterion_main!(benches);
