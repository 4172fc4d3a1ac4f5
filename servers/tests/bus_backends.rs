//! The feed's behaviour on every backend — in-process, Redis, RabbitMQ, Kafka — from the same tests:
//! shared sequence numbers and cursor reads, long polls answered by a publish on another instance,
//! SSE and WebSocket delivery in order and once, resuming on another instance, explicit gaps.

#![allow(clippy::unwrap_used)]

mod backends;
mod common;

use std::time::Duration;

use backends::{instances, Backend};
use common::{
    client, get, poll, publish, seqs, sse_subscribe, wait_until, within, ws_connect_url, ws_event,
    ws_subscribe, STEP,
};

/// Polls from 0 until the answer's head is `head` (bounded).
async fn poll_until_head(
    http: &reqwest::Client,
    base: &str,
    topic: &str,
    head: u64,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let batch = poll(http, base, topic, "after=0").await;
        if batch["head"] == head || tokio::time::Instant::now() >= deadline {
            return batch;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ws_of(http: &str) -> String {
    format!("{}/ws", http.replace("http://", "ws://"))
}

async fn shared_sequence_numbers_and_polls_see_every_instance(backend: Backend) {
    let servers = instances(backend, 2, |_| {}).await;
    let http = client();
    let topic = "seq";
    let mut got = Vec::new();
    for i in 0..10 {
        got.push(publish(&http, &servers.url(i), topic, format!("p{i}")).await);
    }
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    for i in 0..2 {
        // An instance that already holds events after the cursor answers from them at once (as the
        // Redis bus's window does), so the newest publish made elsewhere may show a moment later.
        let batch = poll_until_head(&http, &servers.url(i), topic, 10).await;
        assert_eq!(seqs(&batch), (1..=10).collect::<Vec<_>>(), "{batch}");
        assert_eq!(batch["head"], 10);
        assert_eq!(batch["events"][3]["data"], "p3");
        let batch = poll(&http, &servers.url(i), topic, "after=4&limit=3").await;
        assert_eq!(
            (seqs(&batch), &batch["more"]),
            (vec![5, 6, 7], &true.into())
        );
    }
    let ahead = get(&http, &format!("{}/poll/{topic}?after=11", servers.url(1))).await;
    ahead.assert_error(400, "cursor_ahead");
    let empty = poll(&http, &servers.url(1), "never-published", "after=0").await;
    assert_eq!((seqs(&empty), &empty["head"]), (vec![], &0.into()));
}

async fn a_long_poll_on_one_instance_is_answered_by_a_publish_on_another(backend: Backend) {
    let servers = instances(backend, 2, |_| {}).await;
    let http = client();
    let topic = "lp";
    assert_eq!(publish(&http, &servers.url(0), topic, "old").await, 1);
    let waiter = {
        let http = http.clone();
        let url = format!(
            "{}/longpoll/{topic}?after=1&timeout_ms=20000",
            servers.url(1)
        );
        tokio::spawn(async move { get(&http, &url).await })
    };
    let metrics = servers.server(1).state.metrics.clone();
    wait_until("the long poll to be held", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"long_poll\"} 1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "answered before any event");
    assert_eq!(publish(&http, &servers.url(0), topic, "fresh").await, 2);
    let reply = within("the long poll answer", STEP, waiter).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(seqs(&reply.json()), vec![2]);
}

async fn sse_and_websocket_get_every_instance_s_events_in_order_once(backend: Backend) {
    let servers = instances(backend, 2, |_| {}).await;
    let http = client();
    let topic = "push";
    for i in 1..=3 {
        publish(&http, &servers.url(0), topic, format!("p{i}")).await;
    }
    let url = format!("{}/sse/{topic}?after=1", servers.url(1));
    let (mut sse, hello) = sse_subscribe(&http, &url, &[]).await;
    assert_eq!(
        (hello["after"].as_u64(), hello["head"].as_u64()),
        (Some(1), Some(3))
    );
    let mut ws = ws_connect_url(&ws_of(&servers.url(1))).await;
    ws_subscribe(&mut ws, topic, Some(1)).await;
    for i in 4..=40 {
        publish(&http, &servers.url(i % 3), topic, format!("p{i}")).await;
    }
    for seq in 2..=40u64 {
        let event = sse.next_event().await;
        assert_eq!(event["seq"], seq);
        assert_eq!(event["data"], format!("p{seq}"));
        assert_eq!(ws_event(&mut ws).await["seq"], seq);
    }
    // Nothing extra (no duplicate) follows: the next thing on each stream is the next publish.
    publish(&http, &servers.url(0), topic, "p41").await;
    assert_eq!(sse.next_event().await["seq"], 41);
    assert_eq!(ws_event(&mut ws).await["seq"], 41);
}

async fn a_client_resumes_from_its_cursor_on_another_instance(backend: Backend) {
    let servers = instances(backend, 2, |_| {}).await;
    let http = client();
    let topic = "resume";
    let (mut sse, _) = sse_subscribe(&http, &format!("{}/sse/{topic}", servers.url(0)), &[]).await;
    let mut ws = ws_connect_url(&ws_of(&servers.url(0))).await;
    ws_subscribe(&mut ws, topic, None).await;
    for i in 1..=5 {
        publish(&http, &servers.url(0), topic, format!("p{i}")).await;
    }
    for seq in 1..=2u64 {
        assert_eq!(sse.next_event().await["seq"], seq);
        assert_eq!(ws_event(&mut ws).await["seq"], seq);
    }
    drop((sse, ws));
    for i in 6..=8 {
        assert_eq!(
            publish(&http, &servers.url(1), topic, format!("p{i}")).await,
            i
        );
    }
    let url = format!("{}/sse/{topic}", servers.url(1));
    let (mut sse, hello) = sse_subscribe(&http, &url, &[("last-event-id", "2")]).await;
    assert_eq!(hello["after"], 2);
    let mut ws = ws_connect_url(&ws_of(&servers.url(1))).await;
    ws_subscribe(&mut ws, topic, Some(2)).await;
    for seq in 3..=8u64 {
        let event = sse.next_event().await;
        assert_eq!(
            (event["seq"].as_u64(), event["data"].as_str()),
            (Some(seq), Some(&*format!("p{seq}")))
        );
        assert_eq!(ws_event(&mut ws).await["seq"], seq);
    }
    let batch = poll(&http, &servers.url(1), topic, "after=2").await;
    assert_eq!(seqs(&batch), (3..=8).collect::<Vec<_>>());
}

async fn a_cursor_older_than_history_gets_an_explicit_gap(backend: Backend) {
    let servers = instances(backend, 2, |c| c.history = 3).await;
    let http = client();
    let topic = "gap";
    for i in 1..=10 {
        publish(&http, &servers.url(0), topic, format!("p{i}")).await;
    }
    let batch = poll(&http, &servers.url(1), topic, "after=2").await;
    assert_eq!(batch["gap"]["after"], 2, "{batch}");
    assert_eq!(batch["gap"]["oldest"], 8, "{batch}");
    assert_eq!(seqs(&batch), vec![8, 9, 10]);
    // SSE says so too, then goes on from the oldest held.
    let url = format!("{}/sse/{topic}?after=2", servers.url(1));
    let (mut sse, _) = sse_subscribe(&http, &url, &[]).await;
    let frame = sse.next_non_heartbeat().await.unwrap();
    assert_eq!(frame.event.as_deref(), Some("gap"), "{frame:?}");
    assert_eq!(sse.next_event().await["seq"], 8);
}

suite!(
    shared_sequence_numbers_and_polls_see_every_instance,
    a_long_poll_on_one_instance_is_answered_by_a_publish_on_another,
    sse_and_websocket_get_every_instance_s_events_in_order_once,
    a_client_resumes_from_its_cursor_on_another_instance,
    a_cursor_older_than_history_gets_an_explicit_gap,
);
