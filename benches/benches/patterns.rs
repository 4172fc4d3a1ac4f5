//! End-to-end benches per communication pattern, over loopback, with the server in-process.
//!
//! Each group spawns one server (ephemeral port) on a multi-thread tokio runtime that also runs the
//! clients, and criterion drives the iterations on that runtime (`to_async`). Subscribers connect
//! once per bench and stay connected across iterations; publishes go over a kept-alive HTTP
//! connection. One iteration of a delivery bench = one `POST /publish` of a 128 B payload, timed
//! from just before the request is sent until the **last** subscriber has the event parsed (each
//! subscriber takes its own timestamp the moment it has it). Waiting for the publish answer is part
//! of the iteration but only counts while the event is not yet everywhere.
//!
//! Client and server share the machine's cores, as in any loopback measurement: the numbers compare
//! patterns with each other, they are not what a remote client would see.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use bytes::Bytes;
use commbench_benches::{
    body_of, graphql_data, graphql_next_event, graphql_subscribe, http_client, poll_seqs,
    socketio_next_event, socketio_subscribe, ws_next_event, ws_subscribe, Publisher, SseReader,
};
use commbench_servers::{AppState, ServerConfig, ServerHandle};
use criterion::{criterion_group, criterion_main, measurement::WallTime, BenchmarkGroup};
use criterion::{Criterion, Throughput};
use tokio::{runtime::Runtime, sync::mpsc, sync::Mutex, task::JoinHandle};

/// Bytes of every published payload and of the `POST /rpc` body.
const PAYLOAD_BYTES: usize = 128;
/// Subscribers of the fan-out benches.
const FANOUT: usize = 100;
/// Longest any single step may take before the bench fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(10);
/// Long polls wait at most this long on the server (far longer than any iteration).
const LONG_POLL_TIMEOUT_MS: u64 = 10_000;

/// One server, its runtime and a client, for one bench group.
struct Fixture {
    rt: Runtime,
    server: ServerHandle,
    client: reqwest::Client,
    publisher: Publisher,
    payload: Bytes,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            // No heartbeat or ping frame during a measurement.
            heartbeat: Duration::from_secs(3600),
            shutdown_grace: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        let server = rt
            .block_on(ServerHandle::spawn(config))
            .expect("spawning the in-process server");
        let client = http_client();
        let publisher = Publisher::new(client.clone(), server.url());
        Self {
            rt,
            server,
            client,
            publisher,
            payload: Bytes::from(vec![b'x'; PAYLOAD_BYTES]),
        }
    }

    fn base(&self) -> String {
        self.server.url()
    }

    /// Publishes once (creating the topic) and returns the new head.
    fn seed(&self, topic: &str) -> u64 {
        self.rt
            .block_on(self.publisher.publish(topic, self.payload.clone()))
            .expect("seeding the topic")
    }

    fn finish(self) {
        let Fixture { rt, server, .. } = self;
        // Bounded by the configured grace; open streams are ended by the server.
        let _ = rt.block_on(server.shutdown());
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, samples: usize, measure_secs: u64) {
    group
        .sample_size(samples)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(measure_secs));
}

/// The protocol on a WebSocket subscriber.
#[derive(Debug, Clone, Copy)]
enum Socket {
    Ws,
    SocketIo,
}

/// Open push subscribers (SSE responses or WebSockets), each in its own task, reporting every event
/// they receive as `(seq, when it was parsed)`.
struct Subscribers {
    receipts: mpsc::UnboundedReceiver<(u64, Instant)>,
    tasks: Vec<JoinHandle<()>>,
}

impl Subscribers {
    async fn sse(client: &reqwest::Client, base: &str, topic: &str, n: usize) -> Self {
        let (tx, receipts) = mpsc::unbounded_channel();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut reader = SseReader::subscribe(client, base, topic)
                .await
                .expect("SSE subscribe");
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match reader.next_event().await {
                        Ok(seq) if tx.send((seq, Instant::now())).is_ok() => {}
                        Ok(_) => return, // the bench is over
                        Err(e) => return eprintln!("SSE subscriber stopped: {e}"),
                    }
                }
            }));
        }
        Self { receipts, tasks }
    }

    /// Sockets speaking commbench's WebSocket protocol on `/ws`, or Socket.IO on `/socket.io/`.
    async fn ws(addr: SocketAddr, topic: &str, n: usize, socket: Socket) -> Self {
        let (tx, receipts) = mpsc::unbounded_channel();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut ws = match socket {
                Socket::Ws => ws_subscribe(addr, topic).await,
                Socket::SocketIo => socketio_subscribe(addr, topic).await,
            }
            .expect("WebSocket subscribe");
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let next = match socket {
                        Socket::Ws => ws_next_event(&mut ws).await,
                        Socket::SocketIo => socketio_next_event(&mut ws).await,
                    };
                    match next {
                        Ok(seq) if tx.send((seq, Instant::now())).is_ok() => {}
                        Ok(_) => return, // the bench is over
                        Err(e) => return eprintln!("WebSocket subscriber stopped: {e}"),
                    }
                }
            }));
        }
        Self { receipts, tasks }
    }

    /// GraphQL subscriptions over graphql-transport-ws, each from the cursor `after` (the protocol
    /// has no subscribe acknowledgement; the cursor makes every later publish arrive regardless).
    async fn graphql(addr: SocketAddr, topic: &str, after: u64, n: usize) -> Self {
        let (tx, receipts) = mpsc::unbounded_channel();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut ws = graphql_subscribe(addr, topic, after)
                .await
                .expect("GraphQL subscribe");
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match graphql_next_event(&mut ws).await {
                        Ok(seq) if tx.send((seq, Instant::now())).is_ok() => {}
                        Ok(_) => return, // the bench is over
                        Err(e) => return eprintln!("GraphQL subscriber stopped: {e}"),
                    }
                }
            }));
        }
        Self { receipts, tasks }
    }

    /// One publish, timed until every subscriber has it.
    async fn round(&mut self, publisher: &Publisher, topic: &str, payload: Bytes) -> Duration {
        let start = Instant::now();
        let seq = publisher.publish(topic, payload).await.expect("publish");
        let mut last = start;
        for _ in 0..self.tasks.len() {
            let receipt = tokio::time::timeout(DEADLINE, self.receipts.recv()).await;
            let (got, at) = receipt
                .expect("a subscriber did not get the event in time")
                .expect("every subscriber stopped");
            assert_eq!(got, seq, "a subscriber got an unexpected event");
            last = last.max(at);
        }
        last - start
    }

    fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Waits (untimed) until the server holds `n` long polls, read from its `commbench_active` gauge.
async fn until_long_polls_held(state: &AppState, n: i64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = state.metrics.render();
        let held = text
            .lines()
            .find_map(|l| l.strip_prefix("commbench_active{pattern=\"long_poll\"} "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .expect("the long_poll gauge in /metrics");
        if held >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {held} of {n} long polls arrived"
        );
        tokio::task::yield_now().await;
    }
}

/// `n` long polls after `after` are already waiting when the publish is sent; timed from the
/// publish until the last long-poll answer is read (each waiter stamps its own answer).
async fn long_poll_round(fx: &Fixture, topic: &str, after: u64, n: usize) -> (u64, Duration) {
    let url = format!(
        "{}/longpoll/{topic}?after={after}&timeout_ms={LONG_POLL_TIMEOUT_MS}",
        fx.base()
    );
    let waiters: Vec<JoinHandle<(Vec<u64>, Instant)>> = (0..n)
        .map(|_| {
            let request = fx.client.get(&url);
            tokio::spawn(async move {
                let body = body_of(request).await.expect("long poll");
                (poll_seqs(&body).expect("long-poll body"), Instant::now())
            })
        })
        .collect();
    until_long_polls_held(&fx.server.state, n as i64).await;
    let start = Instant::now();
    let seq = fx
        .publisher
        .publish(topic, fx.payload.clone())
        .await
        .expect("publish");
    let mut last = start;
    for waiter in waiters {
        let (seqs, at) = waiter.await.expect("long-poll task");
        assert_eq!(seqs, [seq], "a long poll answered with other events");
        last = last.max(at);
    }
    (seq, last - start)
}

/// One publish → one subscriber, per pattern.
fn deliver_one(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut group = c.benchmark_group("deliver_1");
    configure(&mut group, 50, 3);

    // Short polling: a tight loop of `GET /poll?after=cursor`, started together with the publish,
    // until an answer holds the event.
    {
        let topic = "short-poll";
        let cursor = AtomicU64::new(fx.seed(topic));
        let (fx, cursor) = (&fx, &cursor);
        group.bench_function("short_poll", |b| {
            b.to_async(&fx.rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let url = format!("{}/poll/{topic}?after={}", fx.base(), cursor.load(Relaxed));
                    let start = Instant::now();
                    let poll = async {
                        loop {
                            let body = body_of(fx.client.get(&url)).await.expect("poll");
                            let seqs = poll_seqs(&body).expect("poll body");
                            if let Some(&last) = seqs.last() {
                                return (last, Instant::now());
                            }
                        }
                    };
                    let publish = fx.publisher.publish(topic, fx.payload.clone());
                    let (published, (seen, at)) = tokio::join!(publish, poll);
                    assert_eq!(published.expect("publish"), seen);
                    cursor.store(seen, Relaxed);
                    total += at - start;
                }
                total
            })
        });
    }

    // Long polling: the request is already held by the server when the publish is sent.
    {
        let topic = "long-poll";
        let cursor = AtomicU64::new(fx.seed(topic));
        let (fx, cursor) = (&fx, &cursor);
        group.bench_function("long_poll", |b| {
            b.to_async(&fx.rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (seq, took) = long_poll_round(fx, topic, cursor.load(Relaxed), 1).await;
                    cursor.store(seq, Relaxed);
                    total += took;
                }
                total
            })
        });
    }

    // SSE: one open event stream.
    let sse = fx
        .rt
        .block_on(Subscribers::sse(&fx.client, &fx.base(), "sse", 1));
    bench_rounds(&mut group, &fx, "sse", "sse", sse);

    // WebSocket: one open socket.
    let ws = fx
        .rt
        .block_on(Subscribers::ws(fx.server.addr, "ws", 1, Socket::Ws));
    bench_rounds(&mut group, &fx, "websocket", "ws", ws);

    // Socket.IO: one open socket on /socket.io/.
    let sio = fx.rt.block_on(Subscribers::ws(
        fx.server.addr,
        "socketio",
        1,
        Socket::SocketIo,
    ));
    bench_rounds(&mut group, &fx, "socketio", "socketio", sio);

    // GraphQL: one open graphql-transport-ws subscription.
    let head = fx.seed("graphql");
    let graphql = fx
        .rt
        .block_on(Subscribers::graphql(fx.server.addr, "graphql", head, 1));
    bench_rounds(&mut group, &fx, "graphql_subscription", "graphql", graphql);

    group.finish();
    fx.finish();
}

/// Times publish → delivered to every one of `subs` (kept open across iterations), then closes them.
fn bench_rounds(
    group: &mut BenchmarkGroup<'_, WallTime>,
    fx: &Fixture,
    name: &str,
    topic: &'static str,
    subs: Subscribers,
) {
    let open = Mutex::new(subs);
    let subs = &open;
    group.bench_function(name, |b| {
        b.to_async(&fx.rt).iter_custom(|iters| async move {
            let mut subs = subs.lock().await;
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += subs.round(&fx.publisher, topic, fx.payload.clone()).await;
            }
            total
        })
    });
    open.into_inner().stop();
}

/// The request-response baseline: one round trip on a kept-alive connection.
fn request_response(c: &mut Criterion) {
    let owned = Fixture::new();
    let fx = &owned;
    let mut group = c.benchmark_group("request_response");
    configure(&mut group, 50, 2);
    let hello = &format!("{}/hello", fx.base());
    group.bench_function("get_hello", |b| {
        b.to_async(&fx.rt).iter(|| async move {
            let body = body_of(fx.client.get(hello)).await.expect("GET /hello");
            assert_eq!(&body[..], b"world");
        })
    });
    let rpc = &format!("{}/rpc", fx.base());
    group.throughput(Throughput::Bytes(PAYLOAD_BYTES as u64));
    group.bench_function("post_rpc_128B", |b| {
        b.to_async(&fx.rt).iter(|| async move {
            let body = body_of(fx.client.post(rpc).body(fx.payload.clone()))
                .await
                .expect("POST /rpc");
            assert_eq!(body.len(), PAYLOAD_BYTES);
        })
    });
    // GraphQL short polling: `events(topic, after)` answering with the one 128 B event published.
    let graphql = &format!("{}/graphql", fx.base());
    let after = fx.seed("graphql-query") - 1;
    let query = &serde_json::json!({
        "query": "query($topic: String!, $after: Int!) { \
            events(topic: $topic, after: $after) { head more events { topic seq data } } }",
        "variables": { "topic": "graphql-query", "after": after },
    })
    .to_string();
    group.bench_function("graphql_query", |b| {
        b.to_async(&fx.rt).iter(|| async move {
            let request = fx
                .client
                .post(graphql)
                .header("content-type", "application/json")
                .body(query.clone());
            let body = body_of(request).await.expect("POST /graphql");
            let data = graphql_data(&body).expect("GraphQL answer");
            assert_eq!(data["events"]["events"][0]["seq"], after + 1);
        })
    });
    group.finish();
    owned.finish();
}

/// One publish → 100 subscribers; throughput is reported in deliveries.
fn fan_out(c: &mut Criterion) {
    let fx = Fixture::new();
    let mut group = c.benchmark_group("fanout_100");
    configure(&mut group, 20, 3);
    group.throughput(Throughput::Elements(FANOUT as u64));

    for pattern in ["sse", "websocket", "socketio"] {
        let topic = pattern;
        let subs = fx.rt.block_on(async {
            let addr = fx.server.addr;
            match pattern {
                "sse" => Subscribers::sse(&fx.client, &fx.base(), topic, FANOUT).await,
                "socketio" => Subscribers::ws(addr, topic, FANOUT, Socket::SocketIo).await,
                _ => Subscribers::ws(addr, topic, FANOUT, Socket::Ws).await,
            }
        });
        bench_rounds(&mut group, &fx, pattern, topic, subs);
    }

    {
        let topic = "long-poll";
        let cursor = AtomicU64::new(fx.seed(topic));
        let (fx, cursor) = (&fx, &cursor);
        group.bench_function("long_poll", |b| {
            b.to_async(&fx.rt).iter_custom(|iters| async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (seq, took) =
                        long_poll_round(fx, topic, cursor.load(Relaxed), FANOUT).await;
                    cursor.store(seq, Relaxed);
                    total += took;
                }
                total
            })
        });
    }

    group.finish();
    fx.finish();
}

fn config() -> Criterion {
    commbench_benches::register_report_font();
    Criterion::default()
}

criterion_group! {
    name = benches;
    config = config();
    targets = deliver_one, request_response, fan_out
}
criterion_main!(benches);
