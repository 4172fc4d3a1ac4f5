//! Long polling: `GET /longpoll/{topic}?after=&timeout_ms=&limit=` holds until an event exists or the
//! wait ends.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use commbench_servers::metrics::RejectReason;
use common::{client, get, publish, seqs, spawn_default, spawn_with, wait_until, STEP};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_when_an_event_is_published() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    assert_eq!(publish(&http, &base, "t", "old").await, 1);

    let started = Instant::now();
    let waiter = {
        let http = http.clone();
        let url = format!("{base}/longpoll/t?after=1&timeout_ms=20000");
        tokio::spawn(async move { get(&http, &url).await })
    };
    // The request is held: wait until the server counts it as active, then publish.
    let metrics = server.state.metrics.clone();
    wait_until("the long poll to be held", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"long_poll\"} 1")
    })
    .await;
    assert!(
        !waiter.is_finished(),
        "the long poll answered before any event"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the long poll answered before any event"
    );
    assert_eq!(publish(&http, &base, "t", "fresh").await, 2);

    let reply = common::within("the long poll answer", STEP, waiter)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(seqs(&body), vec![2]);
    assert_eq!(body["events"][0]["data"], "fresh");
    assert_eq!(body["head"], 2);
    assert_eq!(body["more"], false);
    assert!(body["gap"].is_null());
    // Far below the 20 s timeout: it answered because of the publish.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_at_once_when_events_are_already_there() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    for _ in 0..5 {
        publish(&http, &base, "t", "x").await;
    }
    let started = Instant::now();
    let reply = get(
        &http,
        &format!("{base}/longpoll/t?after=2&timeout_ms=20000&limit=2"),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(seqs(&body), vec![3, 4]);
    assert_eq!(body["more"], true);
    assert_eq!(body["head"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_the_wait_is_returned_completely() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    // Never-published topic, cursor 0: held until something arrives.
    let waiter = {
        let http = http.clone();
        let url = format!("{base}/longpoll/fresh?timeout_ms=20000");
        tokio::spawn(async move { get(&http, &url).await })
    };
    let metrics = server.state.metrics.clone();
    wait_until("the long poll to be held", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"long_poll\"} 1")
    })
    .await;
    assert_eq!(publish(&http, &base, "fresh", "first").await, 1);
    let body = common::within("the long poll answer", STEP, waiter)
        .await
        .unwrap()
        .json();
    let got = seqs(&body);
    assert!(!got.is_empty() && got[0] == 1, "{body}");
    assert_eq!(body["events"][0]["data"], "first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_answers_200_with_no_events() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "t", "x").await;
    let timeout = Duration::from_millis(700);
    let started = Instant::now();
    let reply = get(
        &http,
        &format!(
            "{base}/longpoll/t?after=1&timeout_ms={}",
            timeout.as_millis()
        ),
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(seqs(&body), Vec::<u64>::new());
    assert_eq!(body["head"], 1);
    assert_eq!(body["more"], false);
    assert!(
        elapsed >= timeout,
        "answered after {elapsed:?}, before the timeout"
    );
    assert!(
        elapsed < timeout + Duration::from_secs(2),
        "answered after {elapsed:?}, far beyond the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_timeout_answers_at_once() {
    let server = spawn_default().await;
    let http = client();
    let started = Instant::now();
    let reply = get(
        &http,
        &format!("{}/longpoll/t?after=0&timeout_ms=0", server.url()),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(reply.status, 200);
    assert_eq!(seqs(&reply.json()), Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_wait_applies_when_no_timeout_is_given() {
    let server = spawn_with(|c| c.default_wait = Duration::from_millis(400)).await;
    let http = client();
    let started = Instant::now();
    let reply = get(&http, &format!("{}/longpoll/t", server.url())).await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200);
    assert_eq!(seqs(&reply.json()), Vec::<u64>::new());
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2400), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_over_max_wait_is_400() {
    let server = spawn_with(|c| {
        c.max_wait = Duration::from_secs(1);
        c.default_wait = Duration::from_millis(500);
    })
    .await;
    let http = client();
    let base = server.url();
    let before = server.state.metrics.rejected_count(RejectReason::BadQuery);
    let body = get(&http, &format!("{base}/longpoll/t?timeout_ms=1001"))
        .await
        .assert_error(400, "bad_query");
    assert!(
        body["detail"].as_str().unwrap().contains("timeout_ms"),
        "{body}"
    );
    for query in ["timeout_ms=abc", "wait=5", "limit=0"] {
        get(&http, &format!("{base}/longpoll/t?{query}"))
            .await
            .assert_error(400, "bad_query");
    }
    assert_eq!(
        server.state.metrics.rejected_count(RejectReason::BadQuery),
        before + 4
    );
    // Exactly the cap is fine.
    let reply = get(&http, &format!("{base}/longpoll/t?timeout_ms=1000")).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_checked_before_waiting() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "t", "x").await;
    let started = Instant::now();
    get(
        &http,
        &format!("{base}/longpoll/t?after=5&timeout_ms=20000"),
    )
    .await
    .assert_error(400, "cursor_ahead");
    get(&http, &format!("{base}/longpoll/a%20b?timeout_ms=20000"))
        .await
        .assert_error(400, "bad_topic");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_answers_at_once() {
    let server = spawn_with(|c| c.history = 2).await;
    let http = client();
    let base = server.url();
    for _ in 0..6 {
        publish(&http, &base, "t", "x").await;
    }
    let body = get(
        &http,
        &format!("{base}/longpoll/t?after=1&timeout_ms=20000"),
    )
    .await
    .json();
    assert_eq!(body["gap"]["after"], 1);
    assert_eq!(body["gap"]["oldest"], 5);
    assert_eq!(seqs(&body), vec![5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_an_unknown_topic_does_not_use_up_the_topic_limit() {
    // Reads never create topics (a short poll of an unknown topic answers head 0), so readers cannot
    // exhaust --max-topics; a long poll is a read and must behave the same.
    let server = spawn_with(|c| c.max_topics = 2).await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "real", "x").await;

    let reply = get(&http, &format!("{base}/longpoll/ghost?timeout_ms=100")).await;
    assert_eq!(
        reply.status,
        200,
        "long poll of an unknown topic: {}",
        reply.text()
    );
    let body = reply.json();
    assert_eq!(body["head"], 0);
    assert_eq!(seqs(&body), Vec::<u64>::new());

    // The second topic slot must still be free for a publisher.
    let reply = common::post(&http, &format!("{base}/publish/second"), "x").await;
    assert_eq!(
        reply.status,
        200,
        "a long poll of an unknown topic used up a topic slot: {}",
        reply.text()
    );

    // At the limit, long polls of unknown topics still answer like short polls do.
    let short = get(&http, &format!("{base}/poll/ghost2")).await;
    assert_eq!(short.status, 200, "{}", short.text());
    let long = get(&http, &format!("{base}/longpoll/ghost2?timeout_ms=100")).await;
    assert_eq!(long.status, 200, "{}", long.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_releases_its_held_request() {
    let server = spawn_default().await;
    let http = client();
    let url = format!("{}/longpoll/t?timeout_ms=60000", server.url());
    let waiter = tokio::spawn(async move { get(&http, &url).await });
    let metrics = server.state.metrics.clone();
    wait_until("the long poll to be held", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"long_poll\"} 1")
    })
    .await;
    // Dropping the in-flight request closes its connection.
    waiter.abort();
    let _ = waiter.await;
    wait_until("the held long poll to be released", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"long_poll\"} 0")
    })
    .await;
}
