//! The shared feed (`POST /publish/{topic}`) read by short polling (`GET /poll/{topic}`), plus the
//! JSON errors every route shares (bad topics and queries, 404, 405, 413) and the rejection counters.

#![allow(clippy::unwrap_used)]

mod common;

use commbench_servers::metrics::RejectReason;
use common::{client, get, poll, post, publish, request, seqs, spawn_default, spawn_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_start_at_one_per_topic_and_increase() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..10 {
        a.push(publish(&http, &base, "topic-a", format!("a{i}")).await);
        if i % 2 == 0 {
            b.push(publish(&http, &base, "topic_B", format!("b{i}")).await);
        }
    }
    assert_eq!(a, (1..=10).collect::<Vec<u64>>());
    assert_eq!(b, (1..=5).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_returns_every_event_in_order_with_its_payload() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();

    let empty = poll(&http, &base, "t", "after=0").await;
    assert_eq!(empty["topic"], "t");
    assert_eq!(empty["head"], 0);
    assert_eq!(empty["more"], false);
    assert!(empty["gap"].is_null());
    assert_eq!(seqs(&empty), Vec::<u64>::new());

    for i in 1..=20 {
        assert_eq!(
            publish(&http, &base, "t", format!("payload {i} \"q\"")).await,
            i
        );
    }
    let batch = poll(&http, &base, "t", "after=0").await;
    assert_eq!(batch["head"], 20);
    assert_eq!(batch["more"], false);
    assert!(batch["gap"].is_null());
    assert_eq!(seqs(&batch), (1..=20).collect::<Vec<u64>>());
    for (i, event) in batch["events"].as_array().unwrap().iter().enumerate() {
        assert_eq!(event["topic"], "t");
        assert_eq!(event["data"], format!("payload {} \"q\"", i + 1));
    }

    // `after` defaults to 0; a cursor in the middle returns only what follows it.
    assert_eq!(seqs(&poll(&http, &base, "t", "").await).len(), 20);
    assert_eq!(
        seqs(&poll(&http, &base, "t", "after=17").await),
        vec![18, 19, 20]
    );
    let at_head = poll(&http, &base, "t", "after=20").await;
    assert_eq!(seqs(&at_head), Vec::<u64>::new());
    assert_eq!(at_head["head"], 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_get_distinct_contiguous_seqs() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut tasks = Vec::new();
    for writer in 0..4 {
        let http = http.clone();
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..25 {
                got.push(publish(&http, &base, "shared", format!("w{writer}-{i}")).await);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let got = task.await.unwrap();
        // Each writer's own publishes are ordered.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<u64>>());
    let batch = poll(&http, &base, "shared", "after=0").await;
    assert_eq!(seqs(&batch), (1..=100).collect::<Vec<u64>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_payloads_are_sent_as_base64() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "bin", vec![0xff, 0x00, 0x80]).await;
    let batch = poll(&http, &base, "bin", "after=0").await;
    let event = &batch["events"][0];
    assert_eq!(event["data_b64"], "/wCA");
    assert!(event.get("data").is_none(), "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_cuts_the_answer_and_sets_more() {
    let server = spawn_with(|c| c.poll_max_events = 5).await;
    let http = client();
    let base = server.url();
    for _ in 0..10 {
        publish(&http, &base, "t", "x").await;
    }
    let first = poll(&http, &base, "t", "after=0&limit=4").await;
    assert_eq!(seqs(&first), vec![1, 2, 3, 4]);
    assert_eq!(first["more"], true);
    assert_eq!(first["head"], 10);
    let second = poll(&http, &base, "t", "after=4&limit=4").await;
    assert_eq!(seqs(&second), vec![5, 6, 7, 8]);
    assert_eq!(second["more"], true);
    let last = poll(&http, &base, "t", "after=8&limit=4").await;
    assert_eq!(seqs(&last), vec![9, 10]);
    assert_eq!(last["more"], false);

    // Without a limit the server's --poll-max-events caps the answer.
    let capped = poll(&http, &base, "t", "after=0").await;
    assert_eq!(seqs(&capped), vec![1, 2, 3, 4, 5]);
    assert_eq!(capped["more"], true);

    // Limits outside 1..=poll_max_events are refused.
    for query in ["limit=0", "limit=6", "limit=-1", "limit=many"] {
        get(&http, &format!("{base}/poll/t?{query}"))
            .await
            .assert_error(400, "bad_query");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_older_than_history_gets_a_gap_naming_the_oldest() {
    let server = spawn_with(|c| c.history = 3).await;
    let http = client();
    let base = server.url();
    for _ in 0..10 {
        publish(&http, &base, "t", "x").await;
    }
    let batch = poll(&http, &base, "t", "after=2").await;
    assert_eq!(batch["gap"]["after"], 2);
    assert_eq!(batch["gap"]["oldest"], 8);
    assert_eq!(seqs(&batch), vec![8, 9, 10]);
    assert_eq!(batch["head"], 10);

    let from_start = poll(&http, &base, "t", "after=0").await;
    assert_eq!(from_start["gap"]["after"], 0);
    assert_eq!(from_start["gap"]["oldest"], 8);

    // A cursor still inside history has no gap.
    let inside = poll(&http, &base, "t", "after=7").await;
    assert!(inside["gap"].is_null(), "{inside}");
    assert_eq!(seqs(&inside), vec![8, 9, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_ahead_of_the_head_is_400() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "t", "x").await;
    let before = server
        .state
        .metrics
        .rejected_count(RejectReason::CursorAhead);
    get(&http, &format!("{base}/poll/t?after=2"))
        .await
        .assert_error(400, "cursor_ahead");
    // A topic nobody published to has head 0.
    get(&http, &format!("{base}/poll/never?after=1"))
        .await
        .assert_error(400, "cursor_ahead");
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::CursorAhead),
        before + 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topic_names_are_400_json_and_counted() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let too_long = "x".repeat(65);
    let bad = [
        "a%20b",
        too_long.as_str(),
        "%C3%A9t%C3%A9",
        "a.b",
        "a%2Fb",
        "%E2%9C%93",
    ];
    let before = server.state.metrics.rejected_count(RejectReason::BadTopic);
    for topic in bad {
        get(&http, &format!("{base}/poll/{topic}"))
            .await
            .assert_error(400, "bad_topic");
        post(&http, &format!("{base}/publish/{topic}"), "x")
            .await
            .assert_error(400, "bad_topic");
    }
    assert_eq!(
        server.state.metrics.rejected_count(RejectReason::BadTopic),
        before + 2 * bad.len() as u64
    );
    // The longest allowed name works.
    let longest = "y".repeat(64);
    assert_eq!(publish(&http, &base, &longest, "x").await, 1);
    // Nothing was published by the refused requests.
    assert_eq!(
        server
            .state
            .metrics
            .events_published
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_malformed_query_parameters_are_400() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let before = server.state.metrics.rejected_count(RejectReason::BadQuery);
    for query in ["cursor=1", "after=1&extra=2", "after=abc", "after=-1"] {
        let body = get(&http, &format!("{base}/poll/t?{query}"))
            .await
            .assert_error(400, "bad_query");
        assert!(body["detail"].as_str().unwrap().len() > 3, "{body}");
    }
    assert_eq!(
        server.state.metrics.rejected_count(RejectReason::BadQuery),
        before + 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_body_over_max_body_is_413_and_nothing_is_published() {
    let server = spawn_with(|c| c.max_body = 1024).await;
    let http = client();
    let base = server.url();
    let before = server
        .state
        .metrics
        .rejected_count(RejectReason::PayloadTooLarge);
    let body = post(&http, &format!("{base}/publish/t"), vec![b'z'; 4096])
        .await
        .assert_error(413, "payload_too_large");
    assert!(body["detail"].as_str().unwrap().contains("1024"), "{body}");
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::PayloadTooLarge),
        before + 1
    );
    assert_eq!(
        seqs(&poll(&http, &base, "t", "after=0").await),
        Vec::<u64>::new()
    );
    // Exactly the limit is accepted.
    assert_eq!(publish(&http, &base, "t", vec![b'z'; 1024]).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_publish_body_over_max_body_is_413() {
    let server = spawn_with(|c| c.max_body = 1024).await;
    let http = client();
    let base = server.url();
    // No content-length: the limit must hold while the body streams in.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b'c'; 512])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let reply = common::within("the chunked publish", common::STEP, async {
        let response = http
            .post(format!("{base}/publish/t"))
            .body(body)
            .send()
            .await
            .unwrap();
        common::Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap(),
        }
    })
    .await;
    reply.assert_error(413, "payload_too_large");
    assert_eq!(
        seqs(&poll(&http, &base, "t", "after=0").await),
        Vec::<u64>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_json() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let before = server.state.metrics.rejected_count(RejectReason::NotFound);
    for path in [
        "/nope",
        "/poll",
        "/poll/",
        "/publish/a/b",
        "/hello/world",
        "/sse",
    ] {
        let body = get(&http, &format!("{base}{path}"))
            .await
            .assert_error(404, "not_found");
        assert!(
            body["detail"].as_str().unwrap().contains(path),
            "detail should name {path}: {body}"
        );
    }
    assert_eq!(
        server.state.metrics.rejected_count(RejectReason::NotFound),
        before + 6
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_are_405_json_on_every_route() {
    use reqwest::Method;
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let cases = [
        (Method::GET, "/publish/t"),
        (Method::DELETE, "/hello"),
        (Method::GET, "/rpc"),
        (Method::POST, "/poll/t"),
        (Method::PUT, "/longpoll/t"),
        (Method::POST, "/sse/t"),
        (Method::GET, "/jobs"),
        (Method::DELETE, "/jobs/1"),
        (Method::POST, "/ws"),
        (Method::POST, "/metrics"),
    ];
    let before = server
        .state
        .metrics
        .rejected_count(RejectReason::MethodNotAllowed);
    let mut failures = Vec::new();
    for (method, path) in &cases {
        let reply = request(&http, method.clone(), &format!("{base}{path}"), None).await;
        let ok = reply.status == 405
            && reply
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/json"))
            && serde_json::from_slice::<serde_json::Value>(&reply.body)
                .is_ok_and(|b| b["error"] == "method_not_allowed");
        if !ok {
            failures.push(format!(
                "{method} {path}: {} {:?} {:?}",
                reply.status,
                reply.header("content-type"),
                reply.text()
            ));
        }
    }
    assert!(failures.is_empty(), "not a JSON 405: {failures:#?}");
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::MethodNotAllowed),
        before + cases.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_published_events_and_rejections() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "m", "x").await;
    publish(&http, &base, "m", "y").await;
    poll(&http, &base, "m", "after=0").await;
    get(&http, &format!("{base}/poll/a%20b")).await;
    get(&http, &format!("{base}/nope")).await;
    get(&http, &format!("{base}/nope")).await;

    let reply = get(&http, &format!("{base}/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/plain"));
    let text = reply.text();
    for line in [
        "commbench_events_published_total 2",
        "commbench_rejected_total{reason=\"bad_topic\"} 1",
        "commbench_rejected_total{reason=\"not_found\"} 2",
        "commbench_requests_total{pattern=\"short_poll\"} 1",
        "commbench_events_delivered_total{pattern=\"short_poll\"} 2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "metrics lack {line:?}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_limit_refuses_new_topics_with_429() {
    let server = spawn_with(|c| c.max_topics = 2).await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "one", "x").await;
    publish(&http, &base, "two", "x").await;
    let before = server
        .state
        .metrics
        .rejected_count(RejectReason::TopicLimit);
    post(&http, &format!("{base}/publish/three"), "x")
        .await
        .assert_error(429, "topic_limit");
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::TopicLimit),
        before + 1
    );
    // Existing topics keep working, and reading an unknown topic does not create it.
    assert_eq!(publish(&http, &base, "one", "y").await, 2);
    let unknown = poll(&http, &base, "three", "after=0").await;
    assert_eq!(unknown["head"], 0);
}
