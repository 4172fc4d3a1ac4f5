//! Socket.IO on `/socket.io/`: the Engine.IO handshake and heartbeat, the namespace connection,
//! subscribe / publish with and without acks, gaps, resume by cursor (also across instances through
//! Redis), the refusals of the HTTP face, hostile packets and their close codes, the cut-off of a
//! client that stops reading, and shutdown.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use commbench_servers::{
    metrics::{PatternKind, RejectReason},
    socketio_wire::{self as wire, EnginePacket, Handshake, PacketType},
    ServerHandle,
};
use common::{
    client, eventually, metric, publish, raw_text_frame, spawn_default, spawn_with, start_redis,
    within, ws_close_code, ws_connect_url, Ws, STEP,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

fn sio_url(server: &ServerHandle) -> String {
    format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr)
}

/// A Socket.IO test client on a raw WebSocket: every packet is checked, nothing is hidden.
struct Sio {
    ws: Ws,
    handshake: Handshake,
}

/// What the server sent, decoded.
#[derive(Debug)]
enum Got {
    /// An event: its name and arguments.
    Event(String, Vec<Value>),
    /// An ack: its id and arguments.
    Ack(u64, Vec<Value>),
    /// Any other Socket.IO packet, raw (shown when a test fails).
    Other(#[allow(dead_code)] String),
    Ping,
}

impl Sio {
    /// Opens the Engine.IO session (without connecting to a namespace).
    async fn open(server: &ServerHandle) -> Self {
        let mut ws = ws_connect_url(&sio_url(server)).await;
        let text = next_text(&mut ws).await;
        let Ok(EnginePacket::Open(data)) = wire::decode_engine(&text) else {
            panic!("expected the open packet, got {text}");
        };
        let handshake = Handshake::decode(data).unwrap();
        Self { ws, handshake }
    }

    /// Opens the session and connects to the main namespace.
    async fn connect(server: &ServerHandle) -> Self {
        let mut sio = Self::open(server).await;
        sio.send("40").await;
        let text = next_text(&mut sio.ws).await;
        assert!(text.starts_with("40{\"sid\":"), "CONNECT answer {text}");
        sio
    }

    async fn send(&mut self, text: &str) {
        within("a send", STEP, self.ws.send(Message::text(text)))
            .await
            .unwrap();
    }

    async fn emit(&mut self, id: Option<u64>, name: &str, arg: Value) {
        self.send(&wire::event("/", id, name, &[&arg.to_string()]))
            .await;
    }

    /// The next packet; pings are answered and returned only when `pings` is set.
    async fn next_inner(&mut self, pings: bool) -> Got {
        loop {
            let text = next_text(&mut self.ws).await;
            let data = match wire::decode_engine(&text).unwrap() {
                EnginePacket::Message(data) => data,
                EnginePacket::Ping(_) => {
                    self.send(wire::PONG).await;
                    if pings {
                        return Got::Ping;
                    }
                    continue;
                }
                other => panic!("unexpected Engine.IO packet {other:?}"),
            };
            let packet = wire::decode_packet(data).unwrap();
            let args = || {
                packet
                    .event_args()
                    .iter()
                    .map(|a| serde_json::from_str(a.get()).unwrap())
                    .collect()
            };
            return match packet.kind {
                PacketType::Event => Got::Event(packet.event_name().unwrap().into(), args()),
                PacketType::Ack => Got::Ack(packet.id.unwrap(), args()),
                _ => Got::Other(text.clone()),
            };
        }
    }

    async fn next(&mut self) -> Got {
        self.next_inner(false).await
    }

    /// The next event, which must be named `name`; returns its first argument.
    async fn event(&mut self, name: &str) -> Value {
        match self.next().await {
            Got::Event(got, mut args) if got == name => args.swap_remove(0),
            other => panic!("expected a {name:?} event, got {other:?}"),
        }
    }

    /// The ack with `id`; returns its first argument.
    async fn ack(&mut self, id: u64) -> Value {
        match self.next().await {
            Got::Ack(got, mut args) if got == id => args.swap_remove(0),
            other => panic!("expected ack {id}, got {other:?}"),
        }
    }

    /// Subscribes with an ack request and returns the ack (checked).
    async fn subscribe(&mut self, id: u64, topic: &str, after: Option<u64>) -> Value {
        let mut arg = json!({ "topic": topic });
        if let Some(after) = after {
            arg["after"] = after.into();
        }
        self.emit(Some(id), "subscribe", arg).await;
        let ack = self.ack(id).await;
        assert_eq!(ack["topic"], topic, "{ack}");
        ack
    }
}

/// The next text frame (WebSocket pings skipped); fails on anything else.
async fn next_text(ws: &mut Ws) -> String {
    within("the next frame", STEP, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => return text.to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_announces_the_limits_and_the_main_namespace_connects() {
    let server = spawn_with(|c| {
        c.heartbeat = Duration::from_secs(7);
        c.send_timeout = Duration::from_secs(3);
        c.max_body = 4096;
    })
    .await;
    let mut sio = Sio::open(&server).await;
    let h = sio.handshake.clone();
    assert_eq!(h.sid.len(), 20);
    assert!(h.upgrades.is_empty());
    assert_eq!(
        (h.ping_interval, h.ping_timeout, h.max_payload),
        (7000, 3000, 4096)
    );
    // The connect payload (auth) is accepted and ignored; the socket id differs from the session's.
    sio.send(r#"40{"token":"123"}"#).await;
    let text = next_text(&mut sio.ws).await;
    let sid: Value = serde_json::from_str(text.strip_prefix("40").unwrap()).unwrap();
    assert!(
        sid["sid"].is_string() && sid["sid"] != h.sid.as_str(),
        "{text}"
    );
    // Another namespace is refused the way the reference server refuses it; the socket stays.
    sio.send("40/random").await;
    assert_eq!(
        next_text(&mut sio.ws).await,
        r#"44/random,{"message":"Invalid namespace"}"#
    );
    assert_eq!(sio.subscribe(1, "t", None).await["head"], 0);
    assert_eq!(metric(&server, "commbench_active{pattern=\"socketio\"}"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_as_the_event_event_with_the_shared_json() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    publish(&http, &base, "news", "old 1").await;
    publish(&http, &base, "news", "old 2").await;
    let mut sio = Sio::connect(&server).await;
    let ack = sio.subscribe(1, "news", None).await;
    // Without a cursor the subscription starts live at the head.
    assert_eq!(
        (ack["after"].as_u64(), ack["head"].as_u64()),
        (Some(2), Some(2))
    );

    const N: u64 = 100;
    let publisher = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move {
            for i in 0..N {
                publish(&http, &base, "news", format!("item \"{i}\"")).await;
            }
        })
    };
    for i in 0..N {
        let event = sio.event("event").await;
        assert_eq!(
            event,
            json!({ "topic": "news", "seq": 3 + i, "data": format!("item \"{i}\"") })
        );
    }
    within("the publisher", STEP, publisher).await.unwrap();
    assert_eq!(
        metric(
            &server,
            "commbench_events_delivered_total{pattern=\"socketio\"}"
        ),
        100
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_after_a_cursor_replays_and_an_old_cursor_gets_a_gap() {
    let server = spawn_with(|c| c.history = 3).await;
    let http = client();
    let base = server.url();
    for i in 1..=10 {
        publish(&http, &base, "t", format!("p{i}")).await;
    }
    let mut sio = Sio::connect(&server).await;
    let ack = sio.subscribe(1, "t", Some(8)).await;
    assert_eq!(
        (ack["after"].as_u64(), ack["head"].as_u64()),
        (Some(8), Some(10))
    );
    for seq in 9..=10 {
        assert_eq!(sio.event("event").await["seq"], seq);
    }
    let mut old = Sio::connect(&server).await;
    old.subscribe(1, "t", Some(2)).await;
    let gap = old.event("gap").await;
    assert_eq!(gap, json!({ "topic": "t", "after": 2, "oldest": 8 }));
    for seq in 8..=10 {
        assert_eq!(old.event("event").await["seq"], seq);
    }
    publish(&http, &base, "t", "p11").await;
    assert_eq!(old.event("event").await["seq"], 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_over_the_socket_reaches_subscribers_and_the_shared_feed() {
    let server = spawn_default().await;
    let mut listener = Sio::connect(&server).await;
    listener.subscribe(1, "chat", None).await;
    let mut talker = Sio::connect(&server).await;
    talker
        .emit(
            Some(7),
            "publish",
            json!({ "topic": "chat", "payload": "hi" }),
        )
        .await;
    assert_eq!(talker.ack(7).await, json!({ "topic": "chat", "seq": 1 }));
    assert_eq!(
        listener.event("event").await,
        json!({ "topic": "chat", "seq": 1, "data": "hi" })
    );
    // Without an ack id the answers are events: `subscribed`, `published`, `unsubscribed`.
    talker
        .emit(None, "subscribe", json!({ "topic": "chat" }))
        .await;
    assert_eq!(talker.event("subscribed").await["after"], 1);
    talker
        .emit(
            None,
            "publish",
            json!({ "topic": "chat", "payload": "again" }),
        )
        .await;
    let mut published = false;
    let mut events = 0;
    while !published || events == 0 {
        match talker.next().await {
            Got::Event(name, args) if name == "published" => {
                assert_eq!(args[0]["seq"], 2);
                published = true;
            }
            Got::Event(name, args) if name == "event" => {
                assert_eq!(args[0]["data"], "again");
                events += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(listener.event("event").await["seq"], 2);
    talker
        .emit(None, "unsubscribe", json!({ "topic": "chat" }))
        .await;
    assert_eq!(talker.event("unsubscribed").await["topic"], "chat");
    // The HTTP feed sees the socket's publishes.
    let poll = common::poll(&client(), &server.url(), "chat", "after=0").await;
    assert_eq!(common::seqs(&poll), [1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_error_answers_and_the_socket_stays_usable() {
    let server = spawn_with(|c| c.ws_max_subscriptions = 2).await;
    let http = client();
    publish(&http, &server.url(), "t", "x").await;
    let mut sio = Sio::connect(&server).await;
    let error = |value: &Value, reason: &str| {
        assert_eq!(value["error"], reason, "{value}");
        assert!(
            value["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{value}"
        );
    };
    sio.emit(Some(1), "subscribe", json!({ "topic": "no spaces" }))
        .await;
    error(&sio.ack(1).await, "bad_topic");
    sio.emit(Some(2), "subscribe", json!({ "topic": "t", "after": 99 }))
        .await;
    error(&sio.ack(2).await, "cursor_ahead");
    sio.emit(Some(3), "subscribe", json!({ "topic": 5 })).await;
    error(&sio.ack(3).await, "bad_message");
    sio.emit(Some(4), "unsubscribe", json!({ "topic": "t" }))
        .await;
    error(&sio.ack(4).await, "bad_message");
    sio.emit(None, "shout", json!({})).await;
    error(&sio.event("error").await, "bad_message");
    sio.emit(None, "publish", json!({ "topic": "t" })).await;
    error(&sio.event("error").await, "bad_message");
    sio.subscribe(5, "a", None).await;
    sio.subscribe(6, "b", None).await;
    sio.emit(Some(7), "subscribe", json!({ "topic": "c" }))
        .await;
    error(&sio.ack(7).await, "subscription_limit");
    // Still usable.
    publish(&http, &server.url(), "a", "still here").await;
    assert_eq!(sio.event("event").await["data"], "still here");
    assert!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::SubscriptionLimit)
            >= 1
    );
}

/// Sends `frame` on a fresh session (connected to the namespace when `connected`) and returns the
/// close code and reason the server answers with.
async fn close_after(server: &ServerHandle, connected: bool, frame: Message) -> (u16, String) {
    let mut sio = if connected {
        Sio::connect(server).await
    } else {
        Sio::open(server).await
    };
    within("a send", STEP, sio.ws.send(frame)).await.unwrap();
    within("the close frame", STEP, async {
        loop {
            match sio.ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string())
                }
                Some(Ok(Message::Text(_) | Message::Ping(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_packets_close_with_a_precise_code_and_reason() {
    let server = spawn_with(|c| c.max_body = 1024).await;
    let cases: [(bool, Message, u16, &str); 11] = [
        // The test suite's invalid packets: unknown Engine.IO type, unknown Socket.IO type,
        // payload not an array, ack id not a number.
        (true, Message::text("abc"), 1002, "Engine.IO"),
        (true, Message::text("4abc"), 1002, "Socket.IO packet type"),
        (true, Message::text("42{}"), 1002, "EVENT"),
        (true, Message::text(r#"42abc["m",1]"#), 1002, "EVENT"),
        (
            false,
            Message::text(r#"42["subscribe",{"topic":"t"}]"#),
            1002,
            "before CONNECT",
        ),
        (
            true,
            Message::text(r#"42/admin,["x"]"#),
            1002,
            "not connected",
        ),
        (
            true,
            Message::text(r#"451-["x",{"_placeholder":true,"num":0}]"#),
            1003,
            "binary",
        ),
        (true, Message::binary(vec![1, 2, 3]), 1003, "binary"),
        (
            true,
            Message::text(format!("4{}", "x".repeat(2048))),
            1009,
            "1024",
        ),
        (true, raw_text_frame(b"42[\"\xff\"]"), 1007, "UTF-8"),
        (true, Message::text("0{}"), 1002, "open"),
    ];
    for (connected, frame, code, reason) in cases {
        let shown = format!("{frame:?}");
        let (got, why) = close_after(&server, connected, frame).await;
        assert_eq!(got, code, "{shown}: {why}");
        assert!(
            why.contains(reason),
            "{shown}: reason {why:?} lacks {reason:?}"
        );
    }
    // The client's own Engine.IO close is a normal closure.
    let (code, _) = close_after(&server, true, Message::text(wire::CLOSE)).await;
    assert_eq!(code, 1000);
    assert!(
        server
            .state
            .metrics
            .rejected_count(RejectReason::BadMessage)
            >= 9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_face_refuses_polling_and_bad_queries_with_400() {
    let server = spawn_default().await;
    let http = client();
    let base = server.url();
    let polling = common::get(&http, &format!("{base}/socket.io/?EIO=4&transport=polling")).await;
    let body = polling.assert_error(400, "bad_query");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("transports: [\"websocket\"]"),
        "{body}"
    );
    let post = common::post(
        &http,
        &format!("{base}/socket.io/?EIO=4&transport=polling"),
        "40",
    )
    .await;
    post.assert_error(400, "bad_query");
    for query in [
        "transport=websocket",
        "EIO=3&transport=websocket",
        "EIO=abc&transport=websocket",
        "EIO=4",
        "EIO=4&transport=abc",
        "EIO=4&transport=websocket&sid=abc",
    ] {
        let reply = common::get(&http, &format!("{base}/socket.io/?{query}")).await;
        reply.assert_error(400, "bad_query");
    }
    // A correct query without the upgrade headers.
    let reply = common::get(
        &http,
        &format!("{base}/socket.io/?EIO=4&transport=websocket"),
    )
    .await;
    reply.assert_error(400, "bad_query");
    // The WebSocket handshake itself is refused for a polling query.
    let refused = tokio_tungstenite::connect_async(format!(
        "ws://{}/socket.io/?EIO=4&transport=polling",
        server.addr
    ))
    .await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pings_and_closes_a_client_that_stops_answering() {
    let server = spawn_with(|c| {
        c.heartbeat = Duration::from_millis(200);
        c.send_timeout = Duration::from_millis(300);
    })
    .await;
    let mut sio = Sio::connect(&server).await;
    // Answered pings keep the session open well past interval + timeout.
    for _ in 0..4 {
        assert!(matches!(sio.next_inner(true).await, Got::Ping));
    }
    // Not answering: closed once pingTimeout has passed.
    let text = next_text(&mut sio.ws).await;
    assert_eq!(text, wire::PING);
    assert_eq!(ws_close_code(&mut sio.ws).await, 1008);
    // A session that never connects to a namespace is closed too (answering pings is not enough).
    let mut idle = Sio::open(&server).await;
    let closed = within("the idle session's close", STEP, async {
        loop {
            match idle.ws.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == wire::PING => {
                    idle.ws.send(Message::text(wire::PONG)).await.unwrap();
                }
                Some(Ok(Message::Close(Some(frame)))) => return frame,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(u16::from(closed.code), 1008);
    assert!(closed.reason.contains("CONNECT"), "{}", closed.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_from_the_namespace_ends_subscriptions_and_allows_a_new_connect() {
    let server = spawn_default().await;
    let http = client();
    let mut sio = Sio::connect(&server).await;
    sio.subscribe(1, "t", None).await;
    sio.send("41").await;
    // A client ping is answered in order, so once its pong is back the DISCONNECT was handled.
    sio.send("2").await;
    assert_eq!(next_text(&mut sio.ws).await, "3");
    // Events of the old subscription no longer arrive; after a new CONNECT the socket works again.
    publish(&http, &server.url(), "t", "unseen").await;
    sio.send("40").await;
    assert!(next_text(&mut sio.ws).await.starts_with("40{"));
    let ack = sio.subscribe(2, "t", None).await;
    assert_eq!(ack["after"], 1);
    publish(&http, &server.url(), "t", "seen").await;
    assert_eq!(sio.event("event").await["data"], "seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_counted() {
    let server = spawn_with(|c| {
        c.subscriber_buffer = 8;
        c.send_timeout = Duration::from_millis(500);
    })
    .await;
    let http = client();
    let metrics = server.state.metrics.clone();
    // A socket with a small receive buffer that is never read after subscribing.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(
        sio_url(&server),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    next_text(&mut slow).await;
    slow.send(Message::text("40")).await.unwrap();
    next_text(&mut slow).await;
    slow.send(Message::text(wire::event(
        "/",
        Some(1),
        "subscribe",
        &[r#"{"topic":"firehose"}"#],
    )))
    .await
    .unwrap();
    assert!(next_text(&mut slow).await.starts_with("431["));
    let payload = "w".repeat(32 << 10);
    let mut published = 0;
    while metrics.lagged_count(PatternKind::SocketIo) == 0 && published < 640 {
        publish(&http, &server.url(), "firehose", payload.clone()).await;
        published += 1;
    }
    let cut_off = eventually(Duration::from_secs(10), || {
        metrics.lagged_count(PatternKind::SocketIo) == 1
    })
    .await;
    assert!(cut_off, "not cut off after {published} x 32 KiB events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001() {
    let server = spawn_with(|c| c.shutdown_grace = Duration::from_secs(3)).await;
    let mut sio = Sio::connect(&server).await;
    sio.subscribe(1, "t", None).await;
    let shutdown = tokio::spawn(server.shutdown());
    assert_eq!(ws_close_code(&mut sio.ws).await, 1001);
    within("the shutdown", STEP, shutdown)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_redis_share_rooms_and_a_client_resumes_on_another_without_loss() {
    let redis = start_redis(false).await;
    let a = common::redis_instance(&redis, |_| {}).await;
    let b = common::redis_instance(&redis, |_| {}).await;
    let http = client();
    let mut on_b = Sio::connect(&b).await;
    let ack = on_b.subscribe(1, "room", None).await;
    assert_eq!(ack["after"], 0);
    // Published on A (over HTTP and over A's socket), delivered on B.
    publish(&http, &a.url(), "room", "one").await;
    let mut on_a = Sio::connect(&a).await;
    on_a.emit(
        Some(1),
        "publish",
        json!({ "topic": "room", "payload": "two" }),
    )
    .await;
    assert_eq!(on_a.ack(1).await["seq"], 2);
    assert_eq!(on_b.event("event").await["data"], "one");
    assert_eq!(on_b.event("event").await["data"], "two");
    // The client drops; meanwhile more is published; it resumes on A from its cursor.
    drop(on_b);
    for i in 3..=5 {
        publish(&http, &b.url(), "room", format!("p{i}")).await;
    }
    let mut resumed = Sio::connect(&a).await;
    let ack = resumed.subscribe(1, "room", Some(2)).await;
    assert_eq!(
        (ack["after"].as_u64(), ack["head"].as_u64()),
        (Some(2), Some(5))
    );
    for seq in 3..=5 {
        assert_eq!(resumed.event("event").await["seq"], seq);
    }
}
