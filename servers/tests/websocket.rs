//! WebSocket push and chat on `GET /ws`: JSON text control messages, binary event frames, join
//! notices, errors, close codes and the cut-off of a client that stops reading.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commbench_servers::metrics::{PatternKind, RejectReason};
use common::{
    client, eventually, poll, publish, raw_text_frame, seqs, spawn_default, spawn_with,
    sse_subscribe, wait_until, within, ws_close_code, ws_connect, ws_event, ws_next, ws_send,
    ws_subscribe, ws_text, ws_text_inner, ws_url, Ws, STEP,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_acknowledged_then_events_arrive_as_binary_frames_in_order() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "news", "old 1").await;
    publish(&http, &base, "news", "old 2").await;

    let mut ws = ws_connect(&server).await;
    let ack = ws_subscribe(&mut ws, "news", None).await;
    // Without a cursor the subscription starts live at the head.
    assert_eq!(ack["after"], 2, "{ack}");
    assert_eq!(ack["head"], 2, "{ack}");

    const N: u64 = 100;
    let publisher = {
        let http = http.clone();
        let base = base.clone();
        tokio::spawn(async move {
            for i in 0..N {
                publish(&http, &base, "news", format!("item {i}")).await;
            }
        })
    };
    for i in 0..N {
        match ws_next(&mut ws).await {
            Some(Message::Binary(bytes)) => {
                let event: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(event["topic"], "news");
                assert_eq!(event["seq"], 3 + i);
                assert_eq!(event["data"], format!("item {i}"));
            }
            other => panic!("expected a binary event, got {other:?}"),
        }
    }
    within("the publisher", STEP, publisher).await.unwrap();
    assert!(
        server
            .state
            .metrics
            .render()
            .contains("commbench_events_delivered_total{pattern=\"websocket\"} 100"),
        "delivered counter"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_after_replays_then_follows() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    for i in 1..=5 {
        publish(&http, &base, "t", format!("p{i}")).await;
    }
    let mut ws = ws_connect(&server).await;
    let ack = ws_subscribe(&mut ws, "t", Some(2)).await;
    assert_eq!(ack["after"], 2);
    assert_eq!(ack["head"], 5);
    for seq in 3..=5 {
        let event = ws_event(&mut ws).await;
        assert_eq!(event["seq"], seq);
        assert_eq!(event["data"], format!("p{seq}"));
    }
    for seq in 6..=7 {
        publish(&http, &base, "t", format!("p{seq}")).await;
        assert_eq!(ws_event(&mut ws).await["seq"], seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_an_old_cursor_gets_a_gap_notice() {
    let server = spawn_with(|c| c.history = 3).await;
    let http = client();
    let base = server.url();
    for _ in 0..10 {
        publish(&http, &base, "t", "x").await;
    }
    let mut ws = ws_connect(&server).await;
    ws_subscribe(&mut ws, "t", Some(2)).await;
    let gap = ws_text(&mut ws).await;
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["topic"], "t");
    assert_eq!(gap["after"], 2);
    assert_eq!(gap["oldest"], 8);
    for seq in 8..=10 {
        assert_eq!(ws_event(&mut ws).await["seq"], seq);
    }
}

/// Reads the publisher's own `published` ack and its copy of the event, in whatever order.
async fn ack_and_event(ws: &mut Ws) -> (Value, Value) {
    let mut ack = None;
    let mut event = None;
    while ack.is_none() || event.is_none() {
        match ws_next(ws).await {
            Some(Message::Binary(bytes)) => {
                assert!(event.is_none(), "a second event arrived");
                event = Some(serde_json::from_slice(&bytes).unwrap());
            }
            Some(Message::Text(text)) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                match value["type"].as_str() {
                    Some("join") => {}
                    Some("published") => ack = Some(value),
                    _ => panic!("unexpected message {value}"),
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (ack.unwrap(), event.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_the_socket_reaches_every_subscriber_and_the_shared_feed() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut ws = ws_connect(&server).await;
        ws_subscribe(&mut ws, "room", None).await;
        clients.push(ws);
    }
    let (mut sse, _) = sse_subscribe(&http, &format!("{base}/sse/room"), &[]).await;

    ws_send(
        &mut clients[0],
        json!({ "type": "publish", "topic": "room", "payload": "hello \"all\"" }),
    )
    .await;
    let (ack, own) = ack_and_event(&mut clients[0]).await;
    assert_eq!(
        ack,
        json!({ "type": "published", "topic": "room", "seq": 1 })
    );
    assert_eq!(
        own,
        json!({ "topic": "room", "seq": 1, "data": "hello \"all\"" })
    );
    for ws in &mut clients[1..] {
        assert_eq!(ws_event(ws).await, own);
    }
    assert_eq!(sse.next_event().await, own);
    let batch = poll(&http, &base, "room", "after=0").await;
    assert_eq!(batch["events"], json!([own]));

    // An HTTP publish reaches the WebSocket subscribers too, and seqs continue on the same feed.
    assert_eq!(publish(&http, &base, "room", "from http").await, 2);
    for ws in &mut clients {
        let event = ws_event(ws).await;
        assert_eq!(event["seq"], 2);
        assert_eq!(event["data"], "from http");
    }

    // Publishing to a topic the socket is not subscribed to is acknowledged, nothing else.
    ws_send(
        &mut clients[1],
        json!({ "type": "publish", "topic": "elsewhere", "payload": "p" }),
    )
    .await;
    assert_eq!(
        ws_text(&mut clients[1]).await,
        json!({ "type": "published", "topic": "elsewhere", "seq": 1 })
    );
    assert_eq!(
        seqs(&poll(&http, &base, "elsewhere", "after=0").await),
        vec![1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_topic_is_announced_to_the_existing_subscribers_only() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut a = ws_connect(&server).await;
    ws_subscribe(&mut a, "lobby", None).await;
    let mut b = ws_connect(&server).await;
    ws_subscribe(&mut b, "lobby", None).await;

    let join = ws_text_inner(&mut a, false).await;
    assert_eq!(
        join,
        json!({ "type": "join", "topic": "lobby", "subscribers": 2 })
    );

    let mut c = ws_connect(&server).await;
    ws_subscribe(&mut c, "lobby", None).await;
    for ws in [&mut a, &mut b] {
        let join = ws_text_inner(ws, false).await;
        assert_eq!(
            join,
            json!({ "type": "join", "topic": "lobby", "subscribers": 3 })
        );
    }

    // Nobody hears about their own join: the next thing each gets is the event.
    publish(&http, &base, "lobby", "x").await;
    for ws in [&mut a, &mut b, &mut c] {
        match ws_next(ws).await {
            Some(Message::Binary(bytes)) => {
                let event: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(event["seq"], 1);
            }
            other => panic!("expected the event, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_subscriber_can_opt_out_of_join_notices() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut quiet = ws_connect(&server).await;
    ws_send(
        &mut quiet,
        json!({ "type": "subscribe", "topic": "feed", "joins": false }),
    )
    .await;
    assert_eq!(ws_text(&mut quiet).await["type"], "subscribed");
    let mut chatty = ws_connect(&server).await;
    ws_subscribe(&mut chatty, "feed", None).await;
    let mut late = ws_connect(&server).await;
    ws_subscribe(&mut late, "feed", None).await;
    // The listening member hears the later join, and counts every member, the quiet one included.
    let join = ws_text_inner(&mut chatty, false).await;
    assert_eq!(
        join,
        json!({ "type": "join", "topic": "feed", "subscribers": 3 })
    );
    // The opted-out member's next message is the event, not a join notice.
    publish(&http, &base, "feed", "x").await;
    match ws_next(&mut quiet).await {
        Some(Message::Binary(bytes)) => {
            let event: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(event["seq"], 1);
        }
        other => panic!("expected the event, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_does_not_inflate_the_subscriber_count() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut a = ws_connect(&server).await;
    ws_subscribe(&mut a, "lobby", None).await;
    let mut b = ws_connect(&server).await;
    ws_subscribe(&mut b, "lobby", None).await;
    assert_eq!(ws_text_inner(&mut a, false).await["subscribers"], 2);

    // B subscribes again (e.g. to move its cursor): still two sockets in the room.
    ws_subscribe(&mut b, "lobby", None).await;
    publish(&http, &base, "lobby", "x").await;
    let mut counts = Vec::new();
    loop {
        match ws_next(&mut a).await {
            Some(Message::Binary(_)) => break,
            Some(Message::Text(text)) => {
                let notice: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(notice["type"], "join", "{notice}");
                counts.push(notice["subscribers"].as_u64().unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        counts.iter().all(|&n| n == 2),
        "join notices after B re-subscribed report {counts:?} subscribers; the room has 2"
    );
    // B gets exactly one copy of the event.
    assert_eq!(ws_event(&mut b).await["seq"], 1);
    publish(&http, &base, "lobby", "y").await;
    assert_eq!(ws_event(&mut b).await["seq"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_an_error_and_the_socket_stays_usable() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut ws = ws_connect(&server).await;
    let before = server
        .state
        .metrics
        .rejected_count(RejectReason::BadMessage);
    for bad in [
        "{not json",
        "[]",
        r#"{"type":"shout","topic":"t"}"#,
        r#"{"type":"subscribe"}"#,
        r#"{"type":"publish","topic":"t","payload":5}"#,
    ] {
        within("send", STEP, ws.send(Message::text(bad)))
            .await
            .unwrap();
        let error = ws_text(&mut ws).await;
        assert_eq!(error["type"], "error", "{bad}: {error}");
        assert_eq!(error["error"], "bad_message", "{bad}: {error}");
        assert!(!error["detail"].as_str().unwrap().is_empty());
    }
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::BadMessage),
        before + 5
    );
    // Still usable.
    ws_subscribe(&mut ws, "t", None).await;
    publish(&http, &base, "t", "x").await;
    assert_eq!(ws_event(&mut ws).await["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topics_cursors_and_unsubscribes_get_errors() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "t", "x").await;
    let mut ws = ws_connect(&server).await;
    let long = "x".repeat(65);
    for topic in ["a b", "", long.as_str(), "é"] {
        ws_send(&mut ws, json!({ "type": "subscribe", "topic": topic })).await;
        let error = ws_text(&mut ws).await;
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"], "bad_topic", "{topic:?}: {error}");
        ws_send(
            &mut ws,
            json!({ "type": "publish", "topic": topic, "payload": "x" }),
        )
        .await;
        assert_eq!(ws_text(&mut ws).await["error"], "bad_topic");
    }
    ws_send(
        &mut ws,
        json!({ "type": "subscribe", "topic": "t", "after": 9 }),
    )
    .await;
    assert_eq!(ws_text(&mut ws).await["error"], "cursor_ahead");
    ws_send(&mut ws, json!({ "type": "unsubscribe", "topic": "t" })).await;
    assert_eq!(ws_text(&mut ws).await["error"], "bad_message");
    assert_eq!(
        server.state.metrics.rejected_count(RejectReason::BadTopic),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_the_events_of_that_topic_only() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let mut ws = ws_connect(&server).await;
    ws_subscribe(&mut ws, "one", None).await;
    ws_subscribe(&mut ws, "two", None).await;
    publish(&http, &base, "one", "a").await;
    assert_eq!(ws_event(&mut ws).await["topic"], "one");
    ws_send(&mut ws, json!({ "type": "unsubscribe", "topic": "one" })).await;
    assert_eq!(
        ws_text(&mut ws).await,
        json!({ "type": "unsubscribed", "topic": "one" })
    );
    publish(&http, &base, "one", "b").await;
    publish(&http, &base, "two", "c").await;
    let event = ws_event(&mut ws).await;
    assert_eq!(
        event["topic"], "two",
        "an event of an unsubscribed topic: {event}"
    );
    assert_eq!(event["data"], "c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limit_is_enforced_per_socket() {
    let server = spawn_with(|c| c.ws_max_subscriptions = 2).await;
    let mut ws = ws_connect(&server).await;
    ws_subscribe(&mut ws, "a", None).await;
    ws_subscribe(&mut ws, "b", None).await;
    // Re-subscribing to a held topic is not a new subscription.
    ws_subscribe(&mut ws, "a", None).await;
    ws_send(&mut ws, json!({ "type": "subscribe", "topic": "c" })).await;
    let error = ws_text(&mut ws).await;
    assert_eq!(error["error"], "subscription_limit", "{error}");
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::SubscriptionLimit),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_max_body_closes_with_1009() {
    let server = spawn_with(|c| c.max_body = 1024).await;
    let mut ws = ws_connect(&server).await;
    // At the limit is fine.
    let fits = json!({ "type": "publish", "topic": "t", "payload": "" }).to_string();
    let payload = "p".repeat(1024 - fits.len());
    ws_send(
        &mut ws,
        json!({ "type": "publish", "topic": "t", "payload": payload }),
    )
    .await;
    assert_eq!(ws_text(&mut ws).await["type"], "published");

    let big = json!({ "type": "publish", "topic": "t", "payload": "p".repeat(4096) });
    ws_send(&mut ws, big).await;
    assert_eq!(ws_close_code(&mut ws).await, 1009);
    assert_eq!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::MessageTooLarge),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_message_from_the_client_closes_with_1003() {
    let server = spawn_default().await;
    let mut ws = ws_connect(&server).await;
    within(
        "send",
        STEP,
        ws.send(Message::binary(b"{\"type\":\"subscribe\"}".to_vec())),
    )
    .await
    .unwrap();
    assert_eq!(ws_close_code(&mut ws).await, 1003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_text_closes_with_1007() {
    let server = spawn_default().await;
    let mut ws = ws_connect(&server).await;
    within(
        "send",
        STEP,
        ws.send(raw_text_frame(&[b'{', 0xff, 0xfe, b'}'])),
    )
    .await
    .unwrap();
    assert_eq!(ws_close_code(&mut ws).await, 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_at_the_heartbeat_interval() {
    let server = spawn_with(|c| c.heartbeat = Duration::from_millis(100)).await;
    let mut ws = ws_connect(&server).await;
    let mut pings = 0;
    within("three pings", STEP, async {
        while pings < 3 {
            match ws.next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
}

/// A WebSocket client whose socket has a small receive buffer (it will stop reading).
async fn small_buffer_ws(server: &commbench_servers::ServerHandle) -> Ws {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within("raw connect", STEP, socket.connect(server.addr))
        .await
        .unwrap();
    let (ws, _) = within(
        "the WebSocket handshake",
        STEP,
        tokio_tungstenite::client_async(
            ws_url(server),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        ),
    )
    .await
    .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_is_disconnected_and_counted_while_a_fast_one_gets_everything() {
    let server = spawn_with(|c| {
        c.subscriber_buffer = 8;
        c.send_timeout = Duration::from_millis(500);
    })
    .await;
    let http = client();
    let base = server.url();
    let metrics = server.state.metrics.clone();

    let mut fast = ws_connect(&server).await;
    ws_subscribe(&mut fast, "firehose", None).await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let reader = tokio::spawn(async move {
        loop {
            let event = ws_event(&mut fast).await;
            if seen_tx.send(event).is_err() {
                return;
            }
        }
    });
    let mut slow = small_buffer_ws(&server).await;
    ws_subscribe(&mut slow, "firehose", None).await;
    // From here on `slow` is never read until the end.

    const MAX_EVENTS: u64 = 640;
    let payload = "w".repeat(32 << 10);
    let mut published = 0;
    for seq in 1..=MAX_EVENTS {
        assert_eq!(
            publish(&http, &base, "firehose", payload.clone()).await,
            seq
        );
        published = seq;
        let event = within("the fast client's event", STEP, seen_rx.recv())
            .await
            .unwrap_or_else(|| panic!("the fast client stopped at seq {seq}"));
        assert_eq!(event["seq"], seq);
        assert_eq!(event["data"].as_str().map(str::len), Some(payload.len()));
        if metrics.lagged_count(PatternKind::WebSocket) > 0 {
            break;
        }
    }
    let cut_off = eventually(Duration::from_secs(10), || {
        metrics.lagged_count(PatternKind::WebSocket) > 0
    })
    .await;
    assert!(
        cut_off,
        "the stalled WebSocket client was not disconnected after {published} x 32 KiB events"
    );
    // The fast client is unaffected and keeps receiving.
    for seq in published + 1..=published + 5 {
        assert_eq!(
            publish(&http, &base, "firehose", "after the cut").await,
            seq
        );
        let event = within("the fast client's event", STEP, seen_rx.recv())
            .await
            .unwrap();
        assert_eq!(event["seq"], seq);
        assert_eq!(event["data"], "after the cut");
    }
    assert_eq!(metrics.lagged_count(PatternKind::WebSocket), 1);
    wait_until("only the fast socket to remain active", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"websocket\"} 1")
    })
    .await;

    // The stalled client finds its connection ended once it reads again.
    within(
        "the stalled client's connection to end",
        Duration::from_secs(30),
        async {
            loop {
                match slow.next().await {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                }
            }
        },
    )
    .await;
    reader.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_get_without_upgrade_is_a_json_error() {
    let server = spawn_default().await;
    let http = client();
    let total = |m: &commbench_servers::metrics::Metrics| -> u64 {
        RejectReason::ALL.iter().map(|r| m.rejected_count(*r)).sum()
    };
    let before = total(&server.state.metrics);
    let reply = common::get(&http, &ws_url(&server).replace("ws://", "http://")).await;
    assert!(
        (400..500).contains(&reply.status),
        "GET /ws without upgrade answered {}",
        reply.status
    );
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "GET /ws without upgrade answered {} {content_type:?} {:?}; errors must be JSON",
        reply.status,
        reply.text()
    );
    let body = reply.json();
    assert!(
        body["error"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    assert_eq!(
        total(&server.state.metrics),
        before + 1,
        "the refused upgrade is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_the_socket_releases_the_session() {
    let server = spawn_default().await;
    let metrics = server.state.metrics.clone();
    let mut ws = ws_connect(&server).await;
    ws_subscribe(&mut ws, "t", None).await;
    assert!(metrics
        .render()
        .contains("commbench_active{pattern=\"websocket\"} 1"));
    close_and_see_the_session_released(&mut ws, &metrics).await;
    let open = metrics
        .connections_open
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(open <= 1, "{open} connections still open");
}

/// The session reads its client only when the client's side woke it (`wake_flag.rs`): while events
/// keep waking it, a ping, a control message and a close from the client must still be seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_messages_are_read_while_events_keep_the_session_busy() {
    let server = spawn_default().await;
    let metrics = server.state.metrics.clone();
    let mut ws = ws_connect(&server).await;
    ws_subscribe(&mut ws, "busy", None).await;
    let publisher = {
        let state = server.state.clone();
        let topic = commbench_servers::topic::TopicName::parse("busy").unwrap();
        tokio::spawn(async move {
            for _ in 0..2000 {
                state
                    .publish(&topic, bytes::Bytes::from_static(b"x"))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    // Events are flowing before the client speaks.
    assert_eq!(ws_event(&mut ws).await["topic"], "busy");

    within(
        "the ping",
        STEP,
        ws.send(Message::Ping(b"p".to_vec().into())),
    )
    .await
    .unwrap();
    let pong = first_among_events(&mut ws, "the pong", |message| match message {
        Message::Pong(payload) => Some(payload.to_vec()),
        _ => None,
    })
    .await;
    assert_eq!(pong, b"p");

    ws_send(&mut ws, json!({ "type": "unsubscribe", "topic": "busy" })).await;
    let reply = first_among_events(&mut ws, "the unsubscribe answer", |message| match message {
        Message::Text(text) => Some(serde_json::from_str::<Value>(text.as_str()).unwrap()),
        _ => None,
    })
    .await;
    assert_eq!(reply, json!({ "type": "unsubscribed", "topic": "busy" }));
    // Resubscribed, events flow again; then the client's close ends the session mid-stream.
    ws_subscribe(&mut ws, "busy", None).await;
    assert_eq!(ws_event(&mut ws).await["topic"], "busy");
    close_and_see_the_session_released(&mut ws, &metrics).await;
    publisher.abort();
}

/// The first message `pick` takes, skipping the events (binary frames) and anything else around it;
/// the socket must not end first.
async fn first_among_events<T>(ws: &mut Ws, what: &str, pick: impl Fn(Message) -> Option<T>) -> T {
    within(&format!("{what} among the events"), STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(message)) => {
                    if let Some(found) = pick(message) {
                        return found;
                    }
                }
                other => panic!("the socket ended before {what}: {other:?}"),
            }
        }
    })
    .await
}

/// Closes the socket from the client's side and waits until the server has let its session go.
async fn close_and_see_the_session_released(
    ws: &mut Ws,
    metrics: &commbench_servers::metrics::Metrics,
) {
    within("the client close", STEP, ws.close(None))
        .await
        .unwrap();
    wait_until("the session to be released", STEP, || {
        metrics
            .render()
            .contains("commbench_active{pattern=\"websocket\"} 0")
    })
    .await;
}
