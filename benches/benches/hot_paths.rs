//! Micro benches of the server's hot paths: event encoding, poll-body assembly, and the in-process
//! bus's publish/read/subscribe.

use std::hint::black_box;

use bytes::Bytes;
use commbench_servers::{
    bus::{Bus, MemoryBus, MemoryBusConfig},
    event::Event,
    topic::TopicName,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt;

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
    c.bench_function("bus_publish_128B", |b| {
        b.iter(|| runtime.block_on(bus.publish(&t, payload.clone())))
    });
    let head = runtime.block_on(bus.read(&t, 0, 1)).expect("read").head;
    c.bench_function("bus_read_64_events", |b| {
        b.iter(|| runtime.block_on(bus.read(&t, black_box(head - 64), 256)))
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

criterion_group!(benches, encoding, bus_paths);
criterion_main!(benches);
