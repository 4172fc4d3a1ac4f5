//! Target profiles end to end: a tiny server that is not commbench (CRLF SSE, a latest-state poll
//! without cursors, text-frame WebSocket) measured by stamp; a refusing route counted, not fatal;
//! bad profiles named; and commbench's own server through `targets/commbench.toml` agreeing with
//! the native clients on every count.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use commbench_loadgen::{
    output::{read_summary, SummaryRow},
    record::Metric,
    result::CellResult,
};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::broadcast,
};
use tokio_tungstenite::tungstenite::Message;

/// What the tiny server knows: each publish, and the newest payload per topic.
struct Feed {
    events: broadcast::Sender<(String, String)>,
    latest: Mutex<HashMap<String, String>>,
}

/// A server that knows nothing of commbench: `POST /publish/{topic}` (any body) is relayed,
/// wrapped in its own JSON, by `GET /sse/{topic}` (CRLF line ends, a byte-order mark, its own
/// `id:`s, CR and LF in separate writes), `GET /latest/{topic}` (the newest payload only, no
/// cursor) and a WebSocket on `/ws/{topic}` (text frames). Anything else is 404.
async fn tiny_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let feed = Arc::new(Feed {
        events: broadcast::channel(4096).0,
        latest: Mutex::new(HashMap::new()),
    });
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket, feed.clone()));
        }
    });
    addr
}

async fn serve(socket: TcpStream, feed: Arc<Feed>) {
    socket.set_nodelay(true).unwrap();
    // A WebSocket upgrade is handed to tungstenite whole: look at the head without taking it.
    let mut peeked = vec![0u8; 4096];
    let head = loop {
        let Ok(n) = socket.peek(&mut peeked).await else {
            return;
        };
        let text = String::from_utf8_lossy(&peeked[..n]).to_ascii_lowercase();
        if text.contains("\r\n\r\n") || n == 0 || n == peeked.len() {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    if head.contains("upgrade: websocket") {
        let topic = head
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.strip_prefix("/ws/"))
            .unwrap_or("")
            .to_owned();
        let mut events = feed.events.subscribe();
        let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
            return;
        };
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok((t, payload)) if t == topic => {
                        let text = format!(r#"{{"type":"tick","body":"{payload}"}}"#);
                        if ws.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    http(socket, feed).await;
}

/// Keep-alive HTTP/1.1, one request after another (the publisher reuses its connections).
async fn http(socket: TcpStream, feed: Arc<Feed>) {
    let mut reader = BufReader::new(socket);
    loop {
        let mut request = String::new();
        if reader.read_line(&mut request).await.unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let reply = |status: &str, body: &str| {
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let answer = match (method, path.split('/').nth(1), path.split('/').nth(2)) {
            ("POST", Some("publish"), Some(topic)) => {
                let payload = String::from_utf8_lossy(&body).into_owned();
                feed.latest
                    .lock()
                    .unwrap()
                    .insert(topic.to_owned(), payload.clone());
                let _ = feed.events.send((topic.to_owned(), payload));
                reply("200 OK", "{}")
            }
            ("GET", Some("latest"), Some(topic)) => {
                let latest = feed.latest.lock().unwrap().get(topic).cloned();
                reply(
                    "200 OK",
                    &format!(r#"{{"price":"{}"}}"#, latest.unwrap_or_default()),
                )
            }
            ("GET", Some("sse"), Some(topic)) => {
                let topic = topic.to_owned();
                let events = feed.events.subscribe();
                return sse(reader.into_inner(), topic, events).await;
            }
            _ => reply("404 Not Found", "{}"),
        };
        if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A close-delimited event stream with CRLF line ends.
async fn sse(
    mut socket: TcpStream,
    topic: String,
    mut events: broadcast::Receiver<(String, String)>,
) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n\
                \u{feff}: not commbench\r\nretry: 500\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut id = 0;
    while let Ok((t, payload)) = events.recv().await {
        if t != topic {
            continue;
        }
        id += 1;
        let frame = format!(
            "id: {id}\r\nevent: tick\r\ndata: {{\"tick\":\r\ndata: \"{payload}\"}}\r\n\r\n"
        );
        // Split after every CR: the LF arrives in the next write.
        for part in frame.split_inclusive('\r') {
            if socket.write_all(part.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

fn tiny_profile(addr: SocketAddr, sse_path: &str) -> PathBuf {
    let text = format!(
        r#"name = "tiny"
base_url = "http://{addr}"

[publish]
url = "/publish/{{topic}}"
body = "{{payload}}"
# One connection keeps each topic's publishes in order: with two, a later publish can overtake an
# earlier one, and a latest-state poll would then see an older state come back (a "duplicate").
connections = 1

[patterns.sse]
url = "{sse_path}"

[patterns.short-poll]
url = "/latest/{{topic}}"
cursor = "none"

[patterns.ws]
url = "/ws/{{topic}}"
frames = "text"
"#
    );
    let path = std::env::temp_dir().join(format!(
        "commbench-tiny-{}-{}.toml",
        std::process::id(),
        addr.port()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// One pattern against the tiny server through its profile.
async fn tiny_cell(pattern: &str, extra: &[(&'static str, &str)]) -> CellResult {
    let addr = tiny_server().await;
    let profile = tiny_profile(addr, "/sse/{topic}");
    let mut flags = vec![
        ("profile", profile.to_str().unwrap()),
        ("patterns", pattern),
        ("clients", "6"),
        ("topics", "2"),
        ("rate", "20"),
        ("duration", "2s"),
    ];
    flags.extend_from_slice(extra);
    let cells = common::run_cells(&flags, &format!("tiny-{pattern}")).await;
    let _ = std::fs::remove_file(&profile);
    let cell = cells.into_iter().next().unwrap();
    assert_eq!(cell.spec.target, "tiny");
    assert_eq!(cell.counters.errors, 0, "{pattern}: {:?}", cell.errors);
    cell
}

/// Every published event reached every client, by stamp, none twice.
fn every_event_once(cell: &CellResult) {
    common::every_event_once(cell, 6 * 20);
    assert!(cell.histograms.contains_key(&Metric::Delivery));
    assert!(!cell.histograms.contains_key(&Metric::InterArrival));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crlf_sse_server_is_measured_by_stamp() {
    let cell = tiny_cell("sse", &[]).await;
    every_event_once(&cell);
    assert_eq!(cell.counters.reconnects, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_websocket_server_is_measured_by_stamp() {
    let cell = tiny_cell("ws", &[]).await;
    every_event_once(&cell);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_state_poll_counts_what_it_saw_and_what_was_replaced() {
    let cell = tiny_cell("short-poll", &[("interval", "25ms")]).await;
    let c = &cell.counters;
    // Each poll sees only the newest payload: a repeat of it is an empty answer, not a
    // duplicate; an event replaced before any poll saw it is lost.
    assert!(c.events_delivered > 0, "{c:?}");
    assert_eq!(
        c.events_delivered + c.events_lost,
        c.events_expected,
        "{c:?}"
    );
    assert_eq!(c.events_duplicated, 0, "{c:?}");
    assert!(c.empty_responses > c.events_delivered, "{c:?}");
    assert!(c.requests > c.events_delivered, "{c:?}");
    assert!(cell.histograms.contains_key(&Metric::Delivery));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_refuses_is_counted_and_the_run_goes_on() {
    let addr = tiny_server().await;
    let profile = tiny_profile(addr, "/nowhere/{topic}");
    let cells = common::run_cells(
        &[
            ("profile", profile.to_str().unwrap()),
            ("patterns", "sse,ws"),
            ("clients", "3"),
            ("rate", "10"),
            ("duration", "1s"),
        ],
        "tiny-refused",
    )
    .await;
    let _ = std::fs::remove_file(&profile);
    assert_eq!(cells.len(), 2);
    let refused = &cells[0];
    assert_eq!(
        refused.errors.get("http_404"),
        Some(&3),
        "{:?}",
        refused.errors
    );
    assert!(
        refused
            .warnings
            .iter()
            .any(|w| w.ends_with("only 0 of 3 clients started")),
        "{:?}",
        refused.warnings
    );
    every_event_once_of(&cells[1], 3 * 10);
}

fn every_event_once_of(cell: &CellResult, at_least: u64) {
    let c = &cell.counters;
    assert!(c.events_expected >= at_least, "{c:?}");
    assert_eq!(c.events_delivered, c.events_expected, "{c:?}");
    assert_eq!(
        (c.events_lost, c.events_duplicated, c.errors),
        (0, 0, 0),
        "{c:?}"
    );
}

/// A profile named `name` whose server `command` (TOML array) starts on `{port}`, ready when
/// `/health` answers, with an SSE route; its path.
fn started_profile(name: &str, command: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("commbench-{name}-{}.toml", std::process::id()));
    let toml = format!(
        r#"name = "{name}"
base_url = "http://127.0.0.1:{{port}}"
[start]
command = {command}
ready_url = "/health"
[publish]
url = "/publish/{{topic}}"
[patterns.sse]
url = "/sse/{{topic}}"
"#
    );
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn a_server_started_on_a_chosen_port_is_ready_when_its_url_answers() {
    // commbench's server started by a profile of its own making: `{port}` in the command and the
    // base URL, readiness by polling `/health` rather than reading a line.
    let path = started_profile(
        "chosen-port",
        r#"["{commbench}", "serve", "--bind", "127.0.0.1:{port}"]"#,
    );
    let rows = run(&["-p", "sse", "--profile", path.to_str().unwrap()], "port");
    let _ = std::fs::remove_file(&path);
    let row = &rows["sse"];
    assert_eq!(row.target, "chosen-port");
    assert!(row.cell.ends_with("-chosen-port"), "{}", row.cell);
    assert_eq!(row.events_delivered, row.events_expected);
    assert_eq!(
        (row.events_lost, row.errors),
        (Some(0), 0),
        "{}",
        row.error_kinds
    );
    assert!(row.server_cpu_s.is_some());
}

#[test]
fn a_server_behind_a_launcher_that_forks_it_is_measured_whole() {
    // The start command is a shell that runs the server in the background and waits (as `npm
    // start` does): the process commbench started is the shell, which uses no CPU of its own.
    let path = started_profile(
        "forked",
        r#"["sh", "-c", "\"$0\" serve --bind 127.0.0.1:$1 & trap 'kill $!' TERM; wait", "{commbench}", "{port}"]"#,
    );
    let rows = run(&["-p", "sse", "--profile", path.to_str().unwrap()], "fork");
    let _ = std::fs::remove_file(&path);
    let row = &rows["sse"];
    assert_eq!(row.events_delivered, row.events_expected);
    // The server's work and memory, not just the shell's (a shell waiting uses no CPU at all and
    // about a megabyte).
    assert!(row.server_cpu_s > Some(0.0), "{:?}", row.server_cpu_s);
    assert!(
        row.server_peak_rss_bytes > Some(4 << 20),
        "{:?}",
        row.server_peak_rss_bytes
    );
}

#[test]
fn what_a_profiles_launcher_started_beside_its_server_stops_with_it() {
    // The shell starts a process in the background, then becomes the server: signalling only the
    // server at the stop used to leave the background process running. `sleep 1000.<pid>` names it.
    let marker = format!("1000.{}", std::process::id());
    let path = started_profile(
        "launcher",
        &format!(
            r#"["sh", "-c", "sleep $2 >/dev/null 2>&1 & exec \"$0\" serve --bind 127.0.0.1:$1", "{{commbench}}", "{{port}}", "{marker}"]"#
        ),
    );
    let leftovers = || -> Vec<common::Process> {
        common::processes()
            .into_iter()
            .filter(|p| p.state != 'Z' && p.cmdline == format!("sleep {marker}"))
            .collect()
    };
    let rows = run(
        &["-p", "sse", "--profile", path.to_str().unwrap()],
        "launcher",
    );
    let _ = std::fs::remove_file(&path);
    let row = &rows["sse"];
    assert_eq!(row.events_delivered, row.events_expected);
    // The group is gone before the run ends; a moment's slack all the same.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !leftovers().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left = leftovers();
    for process in &left {
        let _ = Command::new("kill")
            .args(["-9", &process.pid.to_string()])
            .status();
    }
    assert!(left.is_empty(), "outlived the run: {left:#?}");
}

#[test]
fn a_running_server_is_measured_through_its_pid() {
    let mut server = commbench()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();
    let pid = server.id().to_string();
    let rows = run(
        &["-p", "sse", "--target", &url, "--target-pid", &pid],
        "pid",
    );
    let _ = server.kill();
    let _ = server.wait();
    let row = &rows["sse"];
    assert_eq!(row.target, "external");
    assert_eq!(row.events_delivered, row.events_expected);
    assert!(row.server_cpu_s.is_some() && row.server_peak_rss_bytes > Some(1 << 20));
}

fn commbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_commbench"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn a_bad_profile_is_refused_naming_the_file_and_field() {
    let path =
        std::env::temp_dir().join(format!("commbench-badprofile-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "name = \"x\"\nbase_url = \"http://127.0.0.1:9\"\n[patterns.ws]\nurl = \"/ws\"\nframes = \"words\"\n",
    )
    .unwrap();
    let out = commbench()
        .args(["run", "-q", "-p", "ws", "--profile", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--profile")
            && stderr.contains(path.to_str().unwrap())
            && stderr.contains("`patterns.ws.frames`: `words`: expected text, binary or any"),
        "{stderr}"
    );
    let out = commbench()
        .args(["run", "-q", "-p", "graphql-poll", "--profile"])
        .arg(repo("targets/commbench.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("graphql-poll is not described by the target profile"),
        "{stderr}"
    );
    let out = commbench()
        .args(["run", "-q", "-p", "sse", "--target-pid", "1", "--profile"])
        .arg(repo("targets/commbench.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--target-pid"), "{stderr}");
}

/// `commbench run` with `args` into a fresh directory; its summary rows by pattern.
fn run(args: &[&str], name: &str) -> HashMap<String, SummaryRow> {
    let dir = std::env::temp_dir().join(format!("commbench-agree-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = commbench()
        .args([
            "run",
            "-q",
            "-c",
            "12",
            "-r",
            "40",
            "--topics",
            "3",
            "-d",
            "1500ms",
            "--warmup",
            "500ms",
            "--interval",
            "200ms",
            "-o",
        ])
        .arg(&dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_summary(&dir.join("summary.csv")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    rows.into_iter()
        .map(|r| (r.pattern.to_string(), r))
        .collect()
}

#[test]
fn commbench_through_its_profile_agrees_with_the_native_clients() {
    let patterns = "sse,ws,short-poll,long-poll,socketio,graphql-sub";
    let native = run(&["-p", patterns], "native");
    let profile = repo("targets/commbench.toml");
    let profiled = run(
        &["-p", patterns, "--profile", profile.to_str().unwrap()],
        "profiled",
    );
    for pattern in patterns.split(',') {
        let (n, p) = (&native[pattern], &profiled[pattern]);
        // Same workload, same server: the same events expected (the fixed schedule publishes
        // the same events per topic), every one delivered once on both paths. Latency is not
        // compared: it is timing, not a count; nor are the window's publishes, whose edges are.
        assert_eq!(n.events_expected, p.events_expected, "{pattern}");
        assert!(n.events_expected >= Some(12 * 26), "{pattern}");
        assert_eq!(n.events_delivered, n.events_expected, "{pattern} native");
        assert_eq!(p.events_delivered, p.events_expected, "{pattern} profiled");
        for row in [n, p] {
            assert_eq!(
                (row.events_lost, row.events_duplicated, row.errors),
                (Some(0), Some(0), 0),
                "{pattern}: {}",
                row.error_kinds
            );
            assert_eq!(row.latency_metric.as_deref(), Some("delivery"), "{pattern}");
            // The profile's server is started as a child, its CPU and memory read from /proc.
            assert!(row.server_cpu_s.is_some() && row.server_peak_rss_bytes.is_some());
        }
        assert_eq!(p.target, "commbench");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profiles_clients_run_in_load_workers_too() {
    // Only clients that follow the profile can talk to the tiny server: load workers must be
    // handed it, and the publishes issued per topic, which their books by stamp close at.
    let addr = tiny_server().await;
    let profile = tiny_profile(addr, "/sse/{topic}");
    let dir = common::temp_dir("tiny-procs");
    let mut command = commbench();
    command
        .args([
            "run", "-q", "-p", "sse,ws", "-c", "6", "--topics", "2", "-r", "20",
        ])
        .args(["-d", "2s", "--warmup", "500ms", "--procs", "2", "--profile"])
        .arg(&profile)
        .arg("-o")
        .arg(&dir);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let _ = std::fs::remove_file(&profile);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_summary(&dir.join("summary.csv")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let pattern = &row.pattern;
        assert_eq!(
            (row.target.as_str(), row.loadgen_procs),
            ("tiny", 2),
            "{pattern}"
        );
        assert!(row.events_expected >= Some(6 * 20), "{pattern}");
        assert_eq!(row.events_delivered, row.events_expected, "{pattern}");
        assert_eq!(
            (row.events_lost, row.events_duplicated, row.errors),
            (Some(0), Some(0), 0),
            "{pattern}: {}",
            row.error_kinds
        );
        // The publisher's write stamp is found by stamp too: delivery from the write is measured.
        assert!(row.write_p99_ms.is_some(), "{pattern}");
    }
}

/// Runs `pattern` through `targets/commbench.toml` with 10 clients, 50 events/s and a 3 s window,
/// against `target`; `during` runs beside it.
async fn profiled_cell(
    target: &str,
    pattern: &str,
    during: impl std::future::Future<Output = ()>,
) -> CellResult {
    let profile = repo("targets/commbench.toml").display().to_string();
    let flags = [
        ("profile", profile.as_str()),
        ("patterns", pattern),
        ("clients", "10"),
        ("rate", "50"),
        ("duration", "3s"),
    ];
    let name = format!("profile-resume-{pattern}");
    let (cell, ()) = tokio::join!(common::run_one(target, &flags, &name), during);
    cell
}

/// Waits until `server` counts `n` open connections of `label`.
async fn until_active(server: &commbench_servers::ServerHandle, label: &str, n: usize) {
    let active = format!("commbench_active{{pattern=\"{label}\"}} {n}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !server.state.metrics.render().contains(&active) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clients never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A profile's clients, their sockets cut mid-window while publishing goes on, resume after the
/// target's cursor (the section's `cursor` and resume form): what was published while they were
/// away still reaches them.
async fn profiled_clients_resume_after_a_cut(pattern: &str, label: &str) {
    let server = common::server(|_| {}).await;
    let proxy = common::CuttingProxy::start(server.addr).await;
    let cut = async {
        until_active(&server, label, 10).await;
        // Into the measured window (warm-up 500 ms), then the cut.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(proxy.cut(), 10, "{pattern}: not every client was cut");
    };
    let cell = profiled_cell(&format!("http://{}", proxy.addr), pattern, cut).await;
    let c = &cell.counters;
    assert_eq!(c.reconnects, 10, "{pattern}: {c:?} {:?}", cell.errors);
    assert_eq!(c.dropped_sends, 0, "{pattern}: {c:?}");
    // Each client was away for at least its 100 ms back-off (5 events or more) and resumed.
    assert!(c.events_expected >= 10 * 150, "{pattern}: {c:?}");
    assert_eq!(
        (c.events_lost, c.events_duplicated),
        (0, 0),
        "{pattern}: {c:?} {:?}",
        cell.errors
    );
    assert_eq!(c.events_delivered, c.events_expected, "{pattern}: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiled_websocket_clients_resume_after_the_targets_cursor() {
    profiled_clients_resume_after_a_cut("ws", "websocket").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiled_socketio_clients_resume_after_the_targets_cursor() {
    profiled_clients_resume_after_a_cut("socketio", "socketio").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiled_graphql_subscriptions_resume_after_the_targets_cursor() {
    profiled_clients_resume_after_a_cut("graphql-sub", "graphql").await;
}

/// Books kept by stamp count a publish that failed (here: its connection closed by an instance
/// switch) as a failed publish, not as an event every subscriber lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_publishes_are_not_counted_as_lost_events_by_stamp() {
    if !commbench_servers::redis::server::installed() {
        eprintln!(
            "skipped: {}",
            commbench_servers::redis::server::INSTALL_HINT
        );
        return;
    }
    let profile = repo("targets/commbench.toml").display().to_string();
    let switched = common::run_across_a_switch(
        &[
            ("profile", profile.as_str()),
            ("patterns", "ws"),
            ("rate", "50"),
        ],
        "websocket",
        10,
        "profile-switch",
    )
    .await;
    let cell = &switched.cell;
    let c = &cell.counters;
    assert!(c.dropped_sends > 0, "no publish failed: {c:?}");
    assert_eq!(
        cell.errors.get("publish_connection_closed").copied(),
        Some(c.dropped_sends),
        "{:?}",
        cell.errors
    );
    assert_eq!(c.reconnects, 10, "{c:?} {:?}", cell.errors);
    assert_eq!((c.events_lost, c.events_duplicated), (0, 0), "{c:?}");
    assert_eq!(c.events_delivered, c.events_expected, "{c:?}");
    // The failed publishes are expected nowhere: each client expects the others.
    assert!(c.events_expected > 10 * 100, "{c:?}");
}
