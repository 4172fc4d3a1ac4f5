//! Micro benches of the hot paths: event encoding, poll-body assembly, the in-process bus's
//! publish/read/subscribe, the feed ring at capacity, SSE and WebSocket framing, and latency
//! recording (a plain HDR histogram and the load generator's sharded recorder).

use std::{
    future::Future,
    hint::black_box,
    io::{self, Read, Write},
    time::{Duration, Instant},
};

use bytes::Bytes;
use commbench_loadgen::record::{new_histogram, Metric, Recorder};
use commbench_servers::{
    bus::{Bus, MemoryBus, MemoryBusConfig},
    event::Event,
    event_stream::Parser,
    topic::TopicName,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::{FutureExt, StreamExt};
use tokio_tungstenite::tungstenite::{
    self,
    protocol::{
        frame::coding::{Data, OpCode},
        frame::Frame,
        Role,
    },
    Message,
};

fn topic() -> TopicName {
    TopicName::parse("bench").expect("valid topic")
}

fn bus() -> MemoryBus {
    MemoryBus::new(MemoryBusConfig {
        history_events: 1024,
        history_bytes: 64 << 20,
        max_topics: 16,
        subscriber_buffer: 1024,
    })
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_encode");
    for size in [128usize, 4096] {
        let payload = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, payload| {
            b.iter(|| Event::new(topic(), black_box(42), payload.clone()))
        });
    }
    group.finish();
}

fn bus_paths(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bus = bus();
    let t = topic();
    let payload = Bytes::from(vec![b'x'; 128]);
    // Fill the history first, so the reads below always find 64 events (even in `--test` mode,
    // where the publish bench runs once) and every measured publish evicts.
    for _ in 0..1024 {
        runtime
            .block_on(bus.publish(&t, payload.clone()))
            .expect("publish");
    }
    c.bench_function("bus_publish_128B", |b| {
        b.iter(|| runtime.block_on(bus.publish(&t, payload.clone())))
    });
    let head = runtime.block_on(bus.read(&t, 0, 1)).expect("read").head;
    c.bench_function("bus_read_64_events", |b| {
        b.iter(|| {
            runtime
                .block_on(bus.read(&t, black_box(head - 64), 256))
                .expect("read")
        })
    });
    c.bench_function("poll_body_64_events", |b| {
        let batch = runtime
            .block_on(bus.read(&t, head - 64, 256))
            .expect("read");
        b.iter(|| black_box(batch.to_json(&t)))
    });
    c.bench_function("subscribe_publish_receive", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut sub = bus.subscribe(&t, None).await.expect("subscribe");
                bus.publish(&t, payload.clone()).await.expect("publish");
                black_box(sub.next().await)
            })
        })
    });
}

/// Payload sizes of the framing benches: a small event and a large one.
const SIZES: [usize; 2] = [128, 4096];

fn event(size: usize) -> commbench_servers::event::SharedEvent {
    Event::new(topic(), 123_456, Bytes::from(vec![b'x'; size]))
}

/// Runs a bus future that completes without waiting (the in-memory bus never waits on publish or
/// read) without runtime overhead; falls back to the runtime if it ever does wait.
fn ready<F: Future>(runtime: &tokio::runtime::Runtime, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().now_or_never() {
        Some(output) => output,
        None => runtime.block_on(future),
    }
}

/// SSE framing: building the frame (what `Event::new` does once per publish), handing the shared
/// frame to one subscriber (what each subscriber costs), and parsing it on the client.
fn sse_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("sse_frame");
    for size in SIZES {
        let event = event(size);
        group.throughput(Throughput::Bytes(event.sse.len() as u64));
        // The same steps as `Event::new` takes for `sse`, on the already-encoded JSON.
        group.bench_with_input(BenchmarkId::new("build", size), &event, |b, event| {
            b.iter(|| {
                let json = black_box(&event.json);
                let mut sse = bytes::BytesMut::with_capacity(json.len() + 32);
                sse.extend_from_slice(b"id: ");
                sse.extend_from_slice(black_box(event.seq).to_string().as_bytes());
                sse.extend_from_slice(b"\ndata: ");
                sse.extend_from_slice(json);
                sse.extend_from_slice(b"\n\n");
                sse.freeze()
            })
        });
        group.bench_with_input(BenchmarkId::new("share", size), &event, |b, event| {
            b.iter(|| black_box(&event.sse).clone())
        });
        group.bench_with_input(
            BenchmarkId::new("client_parse", size),
            &event,
            |b, event| {
                let mut parser = Parser::new(4 << 20);
                b.iter(|| {
                    parser.push(black_box(&event.sse)).expect("a bounded frame");
                    parser.next_frame().expect("one frame")
                })
            },
        );
    }
    group.finish();
}

/// A socket that discards writes and has nothing to read.
struct NullIo;

impl Read for NullIo {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Write for NullIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// WebSocket framing of an event (a binary message holding the event JSON): the bare frame encoding
/// as the server sends it (unmasked) and as a client would (masked, so the payload is XORed), and
/// tungstenite's whole send path (`WebSocket::send`: message → frame → buffer → socket).
fn ws_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_frame");
    for size in SIZES {
        let event = event(size);
        group.throughput(Throughput::Bytes(event.json.len() as u64));
        let mut buf = Vec::with_capacity(event.json.len() + 16);
        group.bench_with_input(BenchmarkId::new("server_unmasked", size), &event, |b, e| {
            b.iter(|| {
                buf.clear();
                let frame = Frame::message(e.json.clone(), OpCode::Data(Data::Binary), true);
                frame.format(&mut buf).expect("vec write");
                black_box(buf.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("client_masked", size), &event, |b, e| {
            b.iter(|| {
                buf.clear();
                let mut frame = Frame::message(e.json.clone(), OpCode::Data(Data::Binary), true);
                frame.header_mut().mask = Some(black_box([0x12, 0x34, 0x56, 0x78]));
                frame.format(&mut buf).expect("vec write");
                black_box(buf.len())
            })
        });
        let mut socket = tungstenite::WebSocket::from_raw_socket(NullIo, Role::Server, None);
        group.bench_with_input(BenchmarkId::new("socket_send", size), &event, |b, e| {
            b.iter(|| {
                socket
                    .send(Message::Binary(e.json.clone()))
                    .expect("send to a null socket")
            })
        });
    }
    group.finish();
}

/// Latency recording: one `Histogram<u64>` (1 µs..1 h, 3 digits, as the load generator uses) and
/// the load generator's `Recorder` (mutex-sharded histograms), alone and with two threads recording
/// at once into 64 shards (distinct clients) or into a single shard (every record contends).
fn histogram_record(c: &mut Criterion) {
    // Plausible latencies in µs, 20 µs .. ~50 ms, spread over many buckets.
    let samples: Vec<u64> = (0..4096u64)
        .map(|i| 20 + (i * 2_654_435_761 % 4096) * (1 + i % 12))
        .collect();
    let mut group = c.benchmark_group("histogram_record");
    group.throughput(Throughput::Elements(1));
    let mut histogram = new_histogram();
    let mut i = 0usize;
    group.bench_function("hdr_histogram", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            histogram.record(black_box(samples[i])).expect("in range")
        })
    });
    let recorder = Recorder::new(64);
    let mut i = 0usize;
    group.bench_function("recorder_1_thread", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            recorder.record(i & 63, Metric::Delivery, black_box(samples[i]))
        })
    });
    for (name, shards) in [
        ("recorder_2_threads_64_shards", 64),
        ("recorder_2_threads_1_shard", 1),
    ] {
        let recorder = Recorder::new(shards);
        let samples = &samples;
        // Time per record, with the records split between two threads running at once.
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|scope| {
                    for thread in 0..2u64 {
                        let recorder = &recorder;
                        let count = iters / 2 + (thread < iters % 2) as u64;
                        scope.spawn(move || {
                            for n in 0..count {
                                let client = (thread as usize) + 2 * (n as usize & 31);
                                let value = samples[(n as usize) & 4095];
                                recorder.record(client, Metric::Delivery, black_box(value));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

/// The feed ring at capacity: every publish evicts the oldest event (by count, or by bytes), and
/// reads of 64 events at the newest end, at the oldest end, and across a gap.
fn feed_ring(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t = topic();
    let mut group = c.benchmark_group("feed_ring");

    let payload = Bytes::from(vec![b'x'; 128]);
    let by_count = bus();
    for _ in 0..2048 {
        ready(&runtime, by_count.publish(&t, payload.clone())).expect("publish");
    }
    group.bench_function("publish_evict_by_count/128", |b| {
        b.iter(|| ready(&runtime, by_count.publish(&t, black_box(payload.clone()))))
    });

    let large = Bytes::from(vec![b'x'; 4096]);
    let by_bytes = MemoryBus::new(MemoryBusConfig {
        history_events: 1 << 20,
        history_bytes: 1 << 20,
        max_topics: 16,
        subscriber_buffer: 1024,
    });
    for _ in 0..512 {
        ready(&runtime, by_bytes.publish(&t, large.clone())).expect("publish");
    }
    group.bench_function("publish_evict_by_bytes/4096", |b| {
        b.iter(|| ready(&runtime, by_bytes.publish(&t, black_box(large.clone()))))
    });

    // `by_count` holds 1024 events: head-1023 ..= head.
    let head = ready(&runtime, by_count.read(&t, 0, 1)).expect("read").head;
    let oldest = head - 1023;
    for (name, after) in [
        ("read_64/newest", head - 64),
        ("read_64/oldest", oldest - 1),
        ("read_64/gap", oldest - 100),
    ] {
        let got = ready(&runtime, by_count.read(&t, after, 64)).expect("read");
        assert_eq!(got.events.len(), 64);
        assert_eq!(got.gap.is_some(), name.ends_with("gap"));
        group.bench_function(name, |b| {
            b.iter(|| ready(&runtime, by_count.read(&t, black_box(after), 64)))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    commbench_benches::register_report_font();
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = encoding, bus_paths, sse_frame, ws_frame, histogram_record, feed_ring
}
criterion_main!(benches);
