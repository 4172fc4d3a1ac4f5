//! The Redis bus's own behaviour (the feed every backend shares is in `bus_backends.rs`): a killed
//! instance's clients resuming on another, limits across instances, Redis going away, and the bus's
//! waits and slow-subscriber cut-off.

#![allow(clippy::unwrap_used)]

mod common;

use std::{net::TcpListener, time::Duration};

use bytes::Bytes;
use commbench_servers::{
    bus::{Bus, Delivery, MemoryBusConfig, RedisBus},
    redis::server::RedisServer,
    topic::TopicName,
    ServerConfig, ServerHandle,
};
use common::{
    child::ChildServer, client, get, poll, post, publish, seqs, sse_subscribe, within,
    ws_connect_url, ws_event, ws_subscribe, STEP,
};
use futures_util::StreamExt;

async fn instance(redis: &RedisServer, tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    common::redis_instance(redis, tweak).await
}

#[tokio::test]
async fn unreachable_redis_is_a_clear_startup_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut config = common::test_config();
    config.bus = Some(format!("redis://127.0.0.1:{port}"));
    let err = within("a failed start", STEP, ServerHandle::spawn(config))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("cannot reach Redis at"), "{err}");
}

#[tokio::test]
async fn clients_of_a_killed_instance_resume_on_another_with_nothing_lost_or_repeated() {
    let redis = common::start_redis(false).await;
    let a = ChildServer::start(&["--bus", redis.url()]).await;
    let b = instance(&redis, |_| {}).await;
    let http = client();
    let (mut sse, _) = sse_subscribe(&http, &format!("{}/sse/t", a.url()), &[]).await;
    let ws_of = |http: &str| format!("{}/ws", http.replace("http://", "ws://"));
    let mut ws = ws_connect_url(&ws_of(&a.url())).await;
    ws_subscribe(&mut ws, "t", None).await;
    for i in 1..=5 {
        publish(&http, &a.url(), "t", format!("p{i}")).await;
    }
    for seq in 1..=3u64 {
        assert_eq!(sse.next_event().await["seq"], seq);
        assert_eq!(ws_event(&mut ws).await["seq"], seq);
    }
    // SIGKILL: no graceful shutdown, the clients just lose their connections.
    a.kill().await;
    for i in 6..=8 {
        assert_eq!(publish(&http, &b.url(), "t", format!("p{i}")).await, i);
    }
    let url = format!("{}/sse/t", b.url());
    let (mut sse, hello) = sse_subscribe(&http, &url, &[("last-event-id", "3")]).await;
    assert_eq!(hello["after"], 3);
    let mut ws = ws_connect_url(&ws_of(&b.url())).await;
    ws_subscribe(&mut ws, "t", Some(3)).await;
    for seq in 4..=8u64 {
        let event = sse.next_event().await;
        assert_eq!(
            (event["seq"].as_u64(), event["data"].as_str()),
            (Some(seq), Some(&*format!("p{seq}")))
        );
        assert_eq!(ws_event(&mut ws).await["seq"], seq);
    }
    let batch = poll(&http, &b.url(), "t", "after=3").await;
    assert_eq!(seqs(&batch), (4..=8).collect::<Vec<_>>());
}

#[tokio::test]
async fn topic_limit_holds_across_instances() {
    let redis = common::start_redis(false).await;
    let a = instance(&redis, |c| c.max_topics = 2).await;
    let b = instance(&redis, |c| c.max_topics = 2).await;
    let http = client();
    publish(&http, &a.url(), "one", "x").await;
    publish(&http, &b.url(), "two", "x").await;
    let refused = post(&http, &format!("{}/publish/three", a.url()), "x").await;
    refused.assert_error(429, "topic_limit");
    let refused = post(&http, &format!("{}/publish/three", b.url()), "x").await;
    refused.assert_error(429, "topic_limit");
    // Existing topics still work on either instance.
    assert_eq!(publish(&http, &b.url(), "one", "y").await, 2);
}

#[tokio::test]
async fn redis_going_away_spools_publishes_and_reads_are_a_503_not_a_hang() {
    let redis = common::start_redis(false).await;
    let a = instance(&redis, |_| {}).await;
    let http = client();
    publish(&http, &a.url(), "t", "x").await;
    drop(redis);
    let reply = post(&http, &format!("{}/publish/t", a.url()), "y").await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json()["spooled"], true);
    let reply = get(&http, &format!("{}/poll/t?after=0", a.url())).await;
    reply.assert_error(503, "unavailable");
    assert_eq!(reply.header("retry-after").as_deref(), Some("1"));
}

fn bus_config(subscriber_buffer: usize) -> MemoryBusConfig {
    MemoryBusConfig {
        history_events: 64,
        history_bytes: usize::MAX,
        max_topics: 4,
        subscriber_buffer,
    }
}

fn topic(name: &str) -> TopicName {
    TopicName::parse(name).unwrap()
}

#[tokio::test]
async fn waiting_never_claims_a_topic_and_wakes_on_a_publish_elsewhere() {
    let redis = common::start_redis(false).await;
    let waiting = RedisBus::connect(redis.url(), bus_config(8)).await.unwrap();
    let publishing = RedisBus::connect(redis.url(), bus_config(8)).await.unwrap();
    let quick = waiting
        .wait_for_event(&topic("none"), 0, Duration::from_millis(20))
        .await;
    assert_eq!(quick, Ok(()));
    let waiter = tokio::spawn(async move {
        waiting
            .wait_for_event(&topic("new"), 0, Duration::from_secs(20))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut connection = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let topics: u64 = redis::cmd("SCARD")
        .arg("cb:topics")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(topics, 0, "a waiter claimed a topic");
    assert!(!waiter.is_finished());
    publishing
        .publish(&topic("new"), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let woke = within("the waiter to wake", STEP, waiter).await.unwrap();
    assert_eq!(woke, Ok(()));
}

#[tokio::test]
async fn slow_subscriber_is_cut_off_with_lagged() {
    let redis = common::start_redis(false).await;
    let bus = RedisBus::connect(redis.url(), bus_config(4)).await.unwrap();
    let mut sub = bus.subscribe(&topic("t"), None).await.unwrap();
    assert_eq!((sub.after, sub.head), (0, 0));
    for i in 0..10 {
        bus.publish(&topic("t"), Bytes::from(format!("p{i}")))
            .await
            .unwrap();
    }
    // Let the follower hand every event on before the subscriber reads anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = within(
        "the subscription to end",
        STEP,
        sub.by_ref().collect::<Vec<_>>(),
    )
    .await;
    assert!(
        matches!(items.last(), Some(Delivery::Lagged { missed: 6 })),
        "{items:?}"
    );
}
