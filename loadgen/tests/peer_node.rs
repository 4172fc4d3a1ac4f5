//! The Node peer (`peers/node/`) end to end: its routes, the `ws` chat, the load generator's own
//! clients (Socket.IO, short and long polling, SSE) against it with every event accounted for,
//! every pattern through its target profile (started by the load generator, measured by stamp), the
//! real `socket.io-client` against commbench's server, the Redis adapter across two Node instances,
//! and a graceful SIGTERM. Skipped, saying so, only when `node` is not installed.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use commbench_loadgen::{
    http::{ClientError, HttpConn},
    record::Recorder,
    result::CellResult,
    target::Target,
};
use futures_util::{SinkExt, StreamExt};
use http::Method;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tokio_tungstenite::tungstenite::Message;

const INSTALL: &str = "scripts/install-peers.sh";

fn peer_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../peers/node")
}

/// True when `node` runs; otherwise the test says why it is skipped. With node present the
/// peer's packages must be installed: a missing `node_modules` fails with the command to run.
fn node_ready(test: &str) -> bool {
    common::node_ready(test, INSTALL, "peers/node", "socket.io")
}

/// One `node server.js` on a free loopback port; killed if the test ends early.
struct NodePeer {
    child: Child,
    url: String,
}

impl NodePeer {
    async fn start(env: &[(&str, &str)]) -> Self {
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(peer_dir())
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = tokio::time::timeout(Duration::from_secs(20), async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await
        .expect("the peer printed its address in time")
        .unwrap()
        .expect("the peer printed a line");
        let url = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected readiness line {line:?}"))
            .to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        Self { child, url }
    }

    /// SIGTERM, then the exit status (within `limit`).
    async fn stop(mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(killed.success());
        tokio::time::timeout(limit, self.child.wait())
            .await
            .expect("the peer stopped within the grace period")
            .unwrap()
    }
}

/// A run of one native pattern against the peer; every event once, none lost.
async fn run_against(peer: &NodePeer, pattern: &str) -> CellResult {
    let cell = common::run_one(
        &peer.url,
        &[
            ("patterns", pattern),
            ("clients", "20"),
            ("rate", "40"),
            ("duration", "2s"),
            ("topics", "2"),
            ("interval", "200ms"),
        ],
        &format!("peer-{pattern}"),
    )
    .await;
    common::every_event_once(&cell, 20 * 40);
    cell
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_clients_get_every_event_from_the_node_peer() {
    if !node_ready("native_clients_get_every_event_from_the_node_peer") {
        return;
    }
    let peer = NodePeer::start(&[]).await;
    // The load generator's Engine.IO / Socket.IO client against the real `socket.io` server.
    let cell = run_against(&peer, "socketio").await;
    assert!(cell
        .histograms
        .contains_key(&commbench_loadgen::record::Metric::Delivery));
    for pattern in ["sse", "long-poll", "short-poll"] {
        run_against(&peer, pattern).await;
    }
    assert!(peer.stop(Duration::from_secs(10)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pattern_reaches_the_node_peer_through_its_profile() {
    if !node_ready("every_pattern_reaches_the_node_peer_through_its_profile") {
        return;
    }
    // The load generator starts the peer from its profile for each cell (a child process: its
    // CPU and RSS are measured) and its profile-driven clients find every event by its stamp.
    let profile = peer_dir().join("profile.toml");
    let patterns = "short-poll,long-poll,sse,ws,socketio,request-response";
    let cells = common::run_cells(
        &[
            ("profile", profile.to_str().unwrap()),
            ("patterns", patterns),
            ("clients", "20"),
            ("rate", "40"),
            ("duration", "2s"),
            ("topics", "2"),
            ("interval", "200ms"),
        ],
        "peer-profile",
    )
    .await;
    assert_eq!(cells.len(), 6);
    for cell in &cells {
        let pattern = cell.spec.pattern;
        let c = &cell.counters;
        assert_eq!(cell.spec.target, "node", "{pattern}");
        assert_eq!(c.errors, 0, "{pattern}: {:?}", cell.errors);
        let server = cell.server.expect("the peer's CPU and RSS are measured");
        assert!(server.peak_rss_bytes > 10 << 20, "{pattern}: {server:?}");
        if pattern == commbench_loadgen::pattern::Pattern::RequestResponse {
            assert!(c.requests >= 40, "{c:?}");
            continue;
        }
        common::every_event_once(cell, 20 * 40);
        assert!(cell
            .histograms
            .contains_key(&commbench_loadgen::record::Metric::Delivery));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_socketio_client_works_against_commbench() {
    if !node_ready("the_node_socketio_client_works_against_commbench") {
        return;
    }
    let server = common::server(|_| {}).await;
    let out = Command::new("node")
        .args(["test/socketio-check.js", &server.url(), "100"])
        .current_dir(peer_dir())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(r#""ok":true,"live":100,"resumed":5"#),
        "{stdout}"
    );
    // 100 live + 5 resumed. The first listener leaves just before the 5 are published; the
    // server may still write the first of them to it before it sees the disconnect, so one more
    // delivery is possible (the client's own count above is exact).
    let metrics = server.state.metrics.render();
    let delivered = metrics
        .lines()
        .find_map(|l| l.strip_prefix("commbench_events_delivered_total{pattern=\"socketio\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(matches!(delivered, Some(105 | 106)), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_instances_share_socketio_rooms_through_the_redis_adapter() {
    if !node_ready("node_instances_share_socketio_rooms_through_the_redis_adapter") {
        return;
    }
    let redis = commbench_servers::redis::server::RedisServer::start(
        commbench_servers::redis::server::RedisOptions { durable: false },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let env = [("REDIS_URL", redis.url())];
    let a = NodePeer::start(&env).await;
    let b = NodePeer::start(&env).await;
    // Listening on B, publishing through A: the events cross Redis.
    let out = Command::new("node")
        .args(["test/socketio-check.js", &b.url, "50", &a.url])
        .current_dir(peer_dir())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#""live":50,"across""#), "{stdout}");
    assert!(a.stop(Duration::from_secs(10)).await.success());
    assert!(b.stop(Duration::from_secs(10)).await.success());
}

/// `GET`/`POST` on the peer; the status and body.
async fn fetch(conn: &mut HttpConn, method: Method, path: &str, body: &str) -> (u16, String) {
    let body = Bytes::copy_from_slice(body.as_bytes());
    match conn.fetch(method, path, body).await {
        Ok(body) => (200, String::from_utf8_lossy(&body).into_owned()),
        Err(ClientError::Status(status)) => (status.as_u16(), String::new()),
        Err(error) => panic!("{path}: {error}"),
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a chat message in time");
    match message {
        Some(Ok(Message::Text(text))) => text.to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_peer_routes_and_chat_answer_as_documented() {
    if !node_ready("the_node_peer_routes_and_chat_answer_as_documented") {
        return;
    }
    let peer = NodePeer::start(&[]).await;
    let target = Target::external(&peer.url).await.unwrap();
    let recorder = Arc::new(Recorder::new(1));
    let mut conn = HttpConn::open(&target, None, &recorder).await.unwrap();
    let get = Method::GET;
    let post = Method::POST;
    assert_eq!(fetch(&mut conn, get.clone(), "/hello", "").await.1, "world");
    assert_eq!(
        fetch(&mut conn, post.clone(), "/hello", "ping").await.1,
        "pong"
    );
    assert_eq!(
        fetch(&mut conn, post.clone(), "/hello", "pang").await.0,
        400
    );
    assert_eq!(fetch(&mut conn, get.clone(), "/nowhere", "").await.0, 404);
    assert_eq!(
        fetch(&mut conn, get.clone(), "/poll/bad%20topic", "")
            .await
            .0,
        400
    );
    assert_eq!(
        fetch(&mut conn, get.clone(), "/poll/t?after=9", "").await.0,
        400
    );

    // The chat: a room per topic; others hear joins and messages, published events are relayed.
    let chat = |query: &str| format!("{}/ws?{query}", peer.url.replace("http://", "ws://"));
    let (mut first, _) = tokio_tungstenite::connect_async(chat("topic=room"))
        .await
        .unwrap();
    let (mut quiet, _) = tokio_tungstenite::connect_async(chat("topic=room&joins=false"))
        .await
        .unwrap();
    let joined = next_text(&mut first).await;
    assert!(
        joined.starts_with("User") && joined.ends_with(" just connected"),
        "{joined}"
    );
    let quiet_user = joined.trim_end_matches(" just connected").to_owned();
    quiet.send(Message::text("hi all")).await.unwrap();
    assert_eq!(
        next_text(&mut first).await,
        format!("{quiet_user} says hi all")
    );
    let stamp = "cb:7:123456:padding";
    let (status, published) = fetch(&mut conn, post.clone(), "/publish/room", stamp).await;
    assert_eq!(status, 200, "{published}");
    assert_eq!(published, r#"{"topic":"room","seq":1}"#);
    let relayed = r#"{"topic":"room","seq":1,"data":"cb:7:123456:padding"}"#;
    // The quiet client heard no join and no echo of its own message: the event comes first.
    assert_eq!(next_text(&mut quiet).await, relayed);
    assert_eq!(next_text(&mut first).await, relayed);

    // Polls: the cursor page and the latest state (the `/bitcoin` example).
    let (_, page) = fetch(&mut conn, get.clone(), "/poll/room?after=0", "").await;
    assert_eq!(
        page,
        format!(r#"{{"topic":"room","head":1,"more":false,"gap":null,"events":[{relayed}]}}"#)
    );
    let (_, latest) = fetch(&mut conn, get.clone(), "/latest/room", "").await;
    assert!(latest.contains(stamp), "{latest}");
    fetch(&mut conn, post.clone(), "/publish/bitcoin", "97000.5").await;
    let (_, price) = fetch(&mut conn, get.clone(), "/bitcoin", "").await;
    assert_eq!(price, r#"{"price":"97000.5","seq":1}"#);

    // A long poll is held until a publish wakes it.
    let mut held = HttpConn::open(&target, None, &recorder).await.unwrap();
    let waiting = tokio::spawn(async move {
        fetch(
            &mut held,
            Method::GET,
            "/longpoll/room?after=1&timeout_ms=20000",
            "",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the long poll was not held");
    fetch(&mut conn, post, "/publish/room", "wake").await;
    let (status, woken) = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the publish woke the long poll")
        .unwrap();
    assert_eq!(status, 200);
    assert!(woken.contains(r#""seq":2,"data":"wake""#), "{woken}");

    // SIGTERM with a chat socket open: a clean exit, the socket closed with 1001. (A client that
    // never answers the close would hold the peer for its 5 s grace period.)
    drop(quiet);
    let stopping = tokio::spawn(peer.stop(Duration::from_secs(10)));
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), first.next())
            .await
            .expect("the chat socket closed in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1001));
    assert!(stopping.await.unwrap().success());
}
