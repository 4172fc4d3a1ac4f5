//! Redis restarted without its data: a real `redis-server` run without persistence is killed and
//! restarted empty under publishes and enqueues. No sequence number is handed out twice, readers and
//! subscribers get an explicit gap for exactly what Redis lost, spooled publishes are still replayed,
//! and queue jobs Redis lost are counted and answered as lost.

#![allow(clippy::unwrap_used)]

mod common;
mod queue_api;

use std::time::Duration;

use commbench_servers::{redis::server::RedisServer, ServerConfig, ServerHandle};
use common::{
    client, get, metric, poll, post, publish, seqs, sse_subscribe, wait_until, within, ws_connect,
    ws_event, ws_subscribe, ws_text, SseStream, Ws, STEP,
};
use queue_api::{ack, enqueue, enqueue_answer, status, take};
use serde_json::json;

/// Recovery waits on backoff (capped near 2.5 s) on a loaded machine: be generous, still bounded.
const RECOVERY: Duration = Duration::from_secs(30);

const LOSSES: &str = "commbench_redis_data_losses_total";
const JOBS_LOST: &str = "commbench_jobs_lost_total";
const PUBLISH_REPLAYED: &str = "commbench_spool_replayed_total{spool=\"publish\"}";
const PUBLISH_DEPTH: &str = "commbench_spool_depth{spool=\"publish\"}";
const ENQUEUE_REPLAYED: &str = "commbench_spool_replayed_total{spool=\"enqueue\"}";
const ENQUEUE_DEPTH: &str = "commbench_spool_depth{spool=\"enqueue\"}";

/// Events published before the loss, while Redis is down (spooled), and after it.
const BEFORE: u64 = 20;
const SPOOLED: u64 = 30;
const AFTER: u64 = 5;

async fn instance(redis: &RedisServer, tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    common::redis_instance(redis, tweak).await
}

/// Kills Redis and starts it again on the same port with nothing in it (no persistence).
async fn restart_empty(redis: &mut RedisServer) {
    redis.kill();
    within("redis to restart", STEP, redis.restart())
        .await
        .unwrap();
}

/// Waits until `server` reaches Redis again: a read of a topic nobody follows needs Redis.
async fn wait_reconnected(http: &reqwest::Client, server: &ServerHandle) {
    let deadline = tokio::time::Instant::now() + RECOVERY;
    loop {
        let reply = get(http, &format!("{}/poll/probe?after=0", server.url())).await;
        if reply.status == 200 {
            return;
        }
        reply.assert_error(503, "unavailable");
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish_spooled(http: &reqwest::Client, base: &str, payload: String) {
    let reply = post(http, &format!("{base}/publish/t"), payload).await;
    assert_eq!(reply.status, 202, "{}", reply.text());
    assert_eq!(reply.json()["spooled"], true);
}

/// The next SSE frame that is not a heartbeat must be `event: gap` with this body.
async fn expect_sse_gap(sse: &mut SseStream, after: u64, oldest: u64) {
    let frame = sse.next_non_heartbeat().await.expect("stream ended");
    assert_eq!(frame.event.as_deref(), Some("gap"), "{frame:?}");
    assert_eq!(frame.json(), json!({ "after": after, "oldest": oldest }));
}

async fn expect_ws_gap(ws: &mut Ws, after: u64, oldest: u64) {
    let gap = ws_text(ws).await;
    assert_eq!(
        gap,
        json!({ "type": "gap", "topic": "t", "after": after, "oldest": oldest })
    );
}

/// Reads events `seqs` from both live subscribers: each once, in order, with its own payload.
async fn expect_events(sse: &mut SseStream, ws: &mut Ws, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        let event = sse.next_event().await;
        assert_eq!(
            (event["seq"].as_u64(), &event["data"]),
            (Some(seq), &format!("p{seq}").into()),
            "SSE"
        );
        let event = ws_event(ws).await;
        assert_eq!(
            (event["seq"].as_u64(), &event["data"]),
            (Some(seq), &format!("p{seq}").into()),
            "WebSocket"
        );
    }
}

/// Two instances; `a` publishes `BEFORE` events, which live SSE and WebSocket subscribers on `b` have
/// all received: everything Redis is about to lose.
async fn watched_feed(redis: &RedisServer) -> (ServerHandle, ServerHandle, SseStream, Ws) {
    let (a, b, mut sse, mut ws) = common::redis_pair_watching_t(redis).await;
    let http = client();
    for seq in 1..=BEFORE {
        assert_eq!(publish(&http, &a.url(), "t", format!("p{seq}")).await, seq);
    }
    expect_events(&mut sse, &mut ws, 1..=BEFORE).await;
    (a, b, sse, ws)
}

#[tokio::test]
async fn restarted_empty_numbering_continues_and_readers_get_a_gap_for_what_was_lost() {
    let mut redis = common::start_redis(false).await;
    let (a, b, mut sse, mut ws) = watched_feed(&redis).await;
    let http = client();

    redis.kill();
    for seq in BEFORE + 1..=BEFORE + SPOOLED {
        publish_spooled(&http, &a.url(), format!("p{seq}")).await;
    }
    within("redis to restart", STEP, redis.restart())
        .await
        .unwrap();
    wait_until("the spool to be replayed", RECOVERY, || {
        metric(&a, PUBLISH_REPLAYED) == SPOOLED as i64 && metric(&a, PUBLISH_DEPTH) == 0
    })
    .await;
    // Redis starts from nothing, but no number already handed out is handed out again.
    let last = BEFORE + SPOOLED + AFTER;
    for seq in BEFORE + SPOOLED + 1..=last {
        assert_eq!(
            publish(&http, &a.url(), "t", format!("p{seq}")).await,
            seq,
            "a sequence number was reused after Redis lost its data"
        );
    }
    // The live subscribers had seen all Redis lost: they get the replayed spool and what follows,
    // once, in order, with no gap.
    expect_events(&mut sse, &mut ws, BEFORE + 1..=last).await;

    // Readers with an older cursor learn exactly what was lost: 11..=BEFORE. Instance `a` follows
    // nothing, so these reads and subscriptions go to Redis.
    let batch = poll(&http, &a.url(), "t", "after=10").await;
    assert_eq!(batch["gap"], json!({ "after": 10, "oldest": BEFORE + 1 }));
    assert_eq!(seqs(&batch), (BEFORE + 1..=last).collect::<Vec<_>>());
    assert_eq!(batch["head"], last);
    let held = get(
        &http,
        &format!("{}/longpoll/t?after=12&timeout_ms=5000", a.url()),
    )
    .await;
    assert_eq!(held.status, 200, "{}", held.text());
    assert_eq!(
        held.json()["gap"],
        json!({ "after": 12, "oldest": BEFORE + 1 })
    );
    let batch = poll(&http, &a.url(), "t", &format!("after={BEFORE}")).await;
    assert!(batch["gap"].is_null(), "{batch}");
    assert_eq!(seqs(&batch)[0], BEFORE + 1);
    let graphql = post(
        &http,
        &format!("{}/graphql", a.url()),
        json!({ "query": "{ events(topic: \"t\", after: 3) { head gap { after oldest } } }" })
            .to_string(),
    )
    .await;
    assert_eq!(
        graphql.json()["data"]["events"],
        json!({ "head": last, "gap": { "after": 3, "oldest": BEFORE + 1 } })
    );
    let (mut resumed, _) = sse_subscribe(
        &http,
        &format!("{}/sse/t", a.url()),
        &[("last-event-id", "15")],
    )
    .await;
    expect_sse_gap(&mut resumed, 15, BEFORE + 1).await;
    assert_eq!(resumed.next_event().await["seq"], BEFORE + 1);
    let mut ws_resumed = ws_connect(&a).await;
    ws_subscribe(&mut ws_resumed, "t", Some(5)).await;
    expect_ws_gap(&mut ws_resumed, 5, BEFORE + 1).await;
    assert_eq!(ws_event(&mut ws_resumed).await["seq"], BEFORE + 1);
    // A cursor at the head is still valid (not "ahead" of a counter that restarted from nothing).
    let held = get(
        &http,
        &format!("{}/longpoll/t?after={last}&timeout_ms=100", a.url()),
    )
    .await;
    assert_eq!(held.status, 200, "{}", held.text());

    for server in [&a, &b] {
        wait_until("the loss to be noticed", RECOVERY, || {
            metric(server, LOSSES) == 1
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_noticing_the_loss_at_once_never_assign_one_number_twice() {
    const EACH: u64 = 25;
    let mut redis = common::start_redis(false).await;
    let servers = [
        instance(&redis, |_| {}).await,
        instance(&redis, |_| {}).await,
    ];
    let http = client();
    let mut streams = Vec::new();
    for server in &servers {
        streams.push(
            sse_subscribe(&http, &format!("{}/sse/t?after=0", server.url()), &[])
                .await
                .0,
        );
    }
    for seq in 1..=BEFORE {
        let server = &servers[seq as usize % 2];
        assert_eq!(
            publish(&http, &server.url(), "t", format!("p{seq}")).await,
            seq
        );
    }
    for stream in &mut streams {
        for seq in 1..=BEFORE {
            assert_eq!(stream.next_event().await["seq"], seq);
        }
    }

    restart_empty(&mut redis).await;
    for server in &servers {
        wait_reconnected(&http, server).await;
    }
    // Both instances publish at once into the empty Redis.
    let publishes = (0..2 * EACH).map(|i| {
        let (http, base) = (http.clone(), servers[i as usize % 2].url());
        tokio::spawn(async move { publish(&http, &base, "t", format!("x{i}")).await })
    });
    let mut assigned = Vec::new();
    for publish in publishes {
        assigned.push(within("a publish", STEP, publish).await.unwrap());
    }
    assigned.sort_unstable();
    assert_eq!(
        assigned,
        (BEFORE + 1..=BEFORE + 2 * EACH).collect::<Vec<_>>(),
        "numbers were reused or handed out twice"
    );
    // Every subscriber sees them once, in strictly increasing order, with nothing missing.
    for stream in &mut streams {
        for seq in BEFORE + 1..=BEFORE + 2 * EACH {
            let frame = stream.next_non_heartbeat().await.expect("stream ended");
            assert!(frame.event.is_none(), "expected event {seq}, got {frame:?}");
            assert_eq!(frame.json()["seq"], seq);
        }
    }
}

#[tokio::test]
async fn a_live_subscriber_is_told_of_events_redis_lost_before_it_read_them() {
    let mut redis = common::start_redis(false).await;
    let (a, _b, mut sse, mut ws) = watched_feed(&redis).await;
    let http = client();

    restart_empty(&mut redis).await;
    // A third instance had appended BEFORE+1..=BEFORE+5, which Redis lost before `b`'s follower read
    // them; noticing the loss, it raised the counter to the highest number it had handed out, as
    // every instance does. (Played here by the test: which appends a dying Redis keeps is a race.)
    let raw = redis::Client::open(redis.url()).unwrap();
    let mut connection = raw.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("cb:seq:t")
        .arg(BEFORE + 5)
        .query_async(&mut connection)
        .await
        .unwrap();
    wait_reconnected(&http, &a).await;
    assert_eq!(publish(&http, &a.url(), "t", "next").await, BEFORE + 6);
    // Both live subscribers are told exactly which numbers they will never see.
    expect_sse_gap(&mut sse, BEFORE, BEFORE + 6).await;
    assert_eq!(sse.next_event().await["seq"], BEFORE + 6);
    expect_ws_gap(&mut ws, BEFORE, BEFORE + 6).await;
    assert_eq!(ws_event(&mut ws).await["seq"], BEFORE + 6);
}

#[tokio::test]
async fn restarted_empty_under_enqueues_lost_jobs_are_counted_and_answered() {
    let mut redis = common::start_redis(false).await;
    let no_workers = |c: &mut ServerConfig| c.workers = 0;
    let a = instance(&redis, no_workers).await;
    let b = instance(&redis, no_workers).await;
    let http = client();
    let mut on_a = Vec::new();
    for i in 0..12 {
        on_a.push(
            enqueue(
                &http,
                &a.url(),
                "jobs",
                json!({ "payload": format!("a{i}") }),
            )
            .await,
        );
    }
    for i in 0..5 {
        enqueue(
            &http,
            &b.url(),
            "jobs",
            json!({ "payload": format!("b{i}") }),
        )
        .await;
    }
    // Three of a's jobs finish before the loss: two acknowledged through a, one through b (a learns
    // of it from the notification, or when it reads the status).
    let mut done = Vec::new();
    for through in [&a, &a, &b] {
        let job = take(&http, &through.url(), "jobs", 0).await.unwrap();
        assert!(!ack(&http, &through.url(), "jobs", &job).await);
        done.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &done {
        assert!(on_a.contains(id), "jobs are taken in order: {id}");
        assert_eq!(
            status(&http, &a.url(), "jobs", id, "").await["status"],
            "done"
        );
    }

    redis.kill();
    let mut spooled = Vec::new();
    for i in 0..4 {
        let answer = enqueue_answer(
            &http,
            &a.url(),
            "jobs",
            json!({ "payload": format!("s{i}") }),
        )
        .await;
        assert_eq!(answer["spooled"], true, "{answer}");
        spooled.push(answer["id"].as_str().unwrap().to_owned());
    }
    within("redis to restart", STEP, redis.restart())
        .await
        .unwrap();
    wait_until("the enqueue spool to be replayed", RECOVERY, || {
        metric(&a, ENQUEUE_REPLAYED) == 4 && metric(&a, ENQUEUE_DEPTH) == 0
    })
    .await;

    // Acknowledged as enqueued, unfinished and gone: 9 of a's, all 5 of b's. The spooled jobs were
    // replayed into the new Redis and are not lost.
    wait_until("a's lost jobs to be counted", RECOVERY, || {
        metric(&a, JOBS_LOST) == 9
    })
    .await;
    wait_until("b's lost jobs to be counted", RECOVERY, || {
        metric(&b, JOBS_LOST) == 5
    })
    .await;
    let lost: Vec<_> = on_a.iter().filter(|id| !done.contains(id)).collect();
    for id in &lost {
        let reply = get(&http, &format!("{}/queues/jobs/jobs/{id}", a.url())).await;
        let body = reply.assert_error(410, "job_lost");
        assert!(
            body["detail"].as_str().unwrap().contains(id.as_str()),
            "{body}"
        );
    }
    // A long poll on a lost job answers at once instead of waiting for a completion that never comes.
    let held = get(
        &http,
        &format!("{}/queues/jobs/jobs/{}?wait_ms=20000", a.url(), lost[0]),
    )
    .await;
    held.assert_error(410, "job_lost");
    for id in &spooled {
        assert_eq!(
            status(&http, &a.url(), "jobs", id, "").await["status"],
            "queued"
        );
    }
    // Finished jobs are forgotten with the rest of Redis's data, as after --queue-retention.
    let forgotten = get(&http, &format!("{}/queues/jobs/jobs/{}", a.url(), done[0])).await;
    forgotten.assert_error(404, "not_found");
    assert_eq!(
        metric(&a, "commbench_rejected_total{reason=\"job_lost\"}"),
        10
    );
    for server in [&a, &b] {
        assert_eq!(metric(server, LOSSES), 1);
    }
    // The replayed jobs are the only ones left to take.
    let mut taken = Vec::new();
    while let Some(job) = take(&http, &a.url(), "jobs", 0).await {
        taken.push(job["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(taken, spooled);
}
