//! Helpers for load-generator tests: an in-process server as the target and a quiet session.
#![allow(dead_code, clippy::unwrap_used)]

use std::{path::PathBuf, time::Duration};

use commbench_loadgen::{
    result::CellResult,
    scenario::RawScenario,
    session::{run_session, CellPlan, SessionOptions},
};
use commbench_servers::{ServerConfig, ServerHandle};
use tokio_util::sync::CancellationToken;

pub async fn server(tweak: impl FnOnce(&mut ServerConfig)) -> ServerHandle {
    let mut config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    ServerHandle::spawn(config).await.unwrap()
}

/// True when `node` runs; otherwise says why `test` is skipped and what installs it. With node
/// present the npm packages of `dir` (from the repository root) must be installed: a missing
/// `node_modules/<package>` fails with the command to run.
pub fn node_ready(test: &str, install: &str, dir: &str, package: &str) -> bool {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        eprintln!("{test}: skipped, `node` is not installed (run {install})");
        return false;
    }
    let modules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir)
        .join("node_modules");
    assert!(
        modules.join(package).is_dir(),
        "{dir}/node_modules is missing: run {install}"
    );
    true
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("commbench-lg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `flags` (field, value) against `target` and returns the single cell's result.
pub async fn run_one(target: &str, flags: &[(&'static str, &str)], name: &str) -> CellResult {
    let mut with_target = vec![("target", target)];
    with_target.extend_from_slice(flags);
    let cells = run_cells(&with_target, name).await;
    assert_eq!(cells.len(), 1);
    cells.into_iter().next().unwrap()
}

/// Runs `flags` (field, value; a 500 ms warm-up unless given) and returns every cell's result.
pub async fn run_cells(flags: &[(&'static str, &str)], name: &str) -> Vec<CellResult> {
    let mut raw = RawScenario::default();
    raw.set_flag("warmup", "500ms");
    for (field, value) in flags {
        raw.set_flag(field, *value);
    }
    let scenario = raw.validate().unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(120),
        run_session(SessionOptions {
            description: serde_json::to_value(&scenario).unwrap(),
            plans: CellPlan::per_pattern(scenario),
            out: Some(temp_dir(name)),
            quiet: true,
            server_args: Vec::new(),
            interrupt: CancellationToken::new(),
            notes: Vec::new(),
            placement: Default::default(),
        }),
    )
    .await
    .expect("run finished in time")
    .unwrap();
    let _ = std::fs::remove_dir_all(&outcome.dir);
    outcome.cells
}

/// Every event published to each client's topic reached it once: at least `at_least` expected,
/// all delivered, none lost or duplicated, no error.
pub fn every_event_once(cell: &CellResult, at_least: u64) {
    let c = &cell.counters;
    let what = cell.spec.name();
    assert!(c.events_expected >= at_least, "{what}: {c:?}");
    assert_eq!(c.events_delivered, c.events_expected, "{what}: {c:?}");
    assert_eq!(
        (c.events_lost, c.events_duplicated),
        (0, 0),
        "{what}: {c:?}"
    );
    assert_eq!(c.errors, 0, "{what}: {:?}", cell.errors);
}

/// The `commbench` binary under test.
pub fn commbench() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_commbench"))
}

/// The rows of `dir/summary.csv`.
pub fn summary_rows(dir: &std::path::Path) -> Vec<commbench_loadgen::output::SummaryRow> {
    commbench_loadgen::output::read_summary(&dir.join("summary.csv")).unwrap()
}

/// A small WebSocket workload that every way of hosting the clients must measure alike: 30
/// clients on 3 topics, 20 events/s, a 2 s window after 500 ms (40 events in it, 50 in all).
pub const SMALL_WS: [&str; 12] = [
    "--pattern",
    "ws",
    "--clients",
    "30",
    "--topics",
    "3",
    "--rate",
    "20",
    "--duration",
    "2s",
    "--warmup",
    "500ms",
];

/// A private redis-server (and the runtime that started it), or `None` with a note when
/// redis-server is not installed.
pub fn private_redis() -> Option<(
    tokio::runtime::Runtime,
    commbench_servers::redis::server::RedisServer,
)> {
    use commbench_servers::redis::server::{self, RedisOptions, RedisServer};
    if !server::installed() {
        eprintln!("skipped: {}", server::INSTALL_HINT);
        return None;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime
        .block_on(RedisServer::start(RedisOptions::default()))
        .unwrap();
    Some((runtime, redis))
}

/// Runs `command` and returns its output; fails the test with its stderr when it fails.
pub fn succeed(command: &mut std::process::Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits until `child` exits, for at most `limit` from `since`; fails the test otherwise.
pub fn exit_within(
    child: &mut std::process::Child,
    since: std::time::Instant,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(since.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// `R`, `S`, … `Z` for a zombie.
    pub state: char,
    /// Clock ticks after boot: with the PID, it names the process (a later one may reuse the PID).
    pub start: u64,
    /// Its arguments, joined by spaces.
    pub cmdline: String,
}

impl Process {
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The name may hold spaces and parentheses: the fields start after the last `)`.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        Some(Self {
            pid,
            state: fields.first()?.chars().next()?,
            ppid: fields.get(1)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
            cmdline: String::from_utf8_lossy(&cmdline)
                .split('\0')
                .filter(|arg| !arg.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    /// Still there: the same process (not a later one with its PID), and not a zombie.
    pub fn running(&self) -> bool {
        Self::read(self.pid).is_some_and(|now| now.start == self.start && now.state != 'Z')
    }

    /// One of its arguments is `word` or a path ending in `/word` (`redis-server`, `beam.smp`,
    /// `load-worker`).
    pub fn runs(&self, word: &str) -> bool {
        let path = format!("/{word}");
        self.cmdline
            .split_whitespace()
            .any(|arg| arg == word || arg.ends_with(&path))
    }
}

/// Every process now.
pub fn processes() -> Vec<Process> {
    let pids = std::fs::read_dir("/proc").unwrap().flatten();
    pids.filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter_map(Process::read)
        .collect()
}

/// `root`'s children, their children, and so on, now.
pub fn descendants(root: u32) -> Vec<Process> {
    let all = processes();
    let mut found: Vec<Process> = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for process in all.iter().filter(|p| p.ppid == parent) {
            parents.push(process.pid);
            found.push(process.clone());
        }
    }
    found
}

/// A listening socket on `port` (0: any) that another one may share (SO_REUSEPORT).
fn shared_listener(port: u16) -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseport(true).unwrap();
    socket.bind(([127, 0, 0, 1], port).into()).unwrap();
    socket.listen(1024).unwrap()
}

/// A server instance on `redis` serving `listener` until its shutdown token is cancelled.
async fn instance(
    redis: &commbench_servers::redis::server::RedisServer,
    listener: tokio::net::TcpListener,
) -> (
    commbench_servers::AppState,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let config = ServerConfig {
        bus: Some(redis.url().to_owned()),
        ..ServerConfig::default()
    };
    let state = commbench_servers::AppState::connect(config).await.unwrap();
    let task = tokio::spawn(commbench_servers::run(
        listener,
        state.clone(),
        std::future::pending(),
    ));
    (state, task)
}

/// What a run across an instance switch measured, and what the second instance counted.
pub struct Switched {
    pub cell: CellResult,
    /// The second instance's `/metrics` text at the end.
    pub metrics: String,
}

/// Runs `flags` (a 3 s window; `clients` clients counted as `active` by the server under
/// `label`) against two instances on one Redis behind one port. Every client starts on A; a
/// second into the window B starts listening on the same port (SO_REUSEPORT) and A shuts down,
/// closing its sockets, so each client reconnects to B, the only listener left.
pub async fn run_across_a_switch(
    flags: &[(&'static str, &str)],
    label: &str,
    clients: u64,
    name: &str,
) -> Switched {
    use commbench_servers::redis::server::{RedisOptions, RedisServer};
    let redis = RedisServer::start(RedisOptions { durable: false })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let a_listener = shared_listener(0);
    let addr = a_listener.local_addr().unwrap();
    let (a, a_task) = instance(&redis, a_listener).await;
    let target = format!("http://{addr}");
    let count = clients.to_string();
    let mut all = vec![("clients", count.as_str()), ("duration", "3s")];
    all.extend_from_slice(flags);
    let all: Vec<(&'static str, String)> =
        all.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
    let name = name.to_owned();
    let run = tokio::spawn(async move {
        let flags: Vec<(&'static str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_one(&target, &flags, &name).await
    });
    let active = format!("commbench_active{{pattern=\"{label}\"}} {clients}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !a.metrics.render().contains(&active) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "clients never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Into the measured window (warm-up 500 ms), then the switch.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (b, b_task) = instance(&redis, shared_listener(addr.port())).await;
    a.shutdown.cancel();
    a_task.await.unwrap().unwrap();
    let cell = run.await.unwrap();
    let metrics = b.metrics.render();
    b.shutdown.cancel();
    b_task.await.unwrap().unwrap();
    Switched { cell, metrics }
}

/// A TCP proxy on loopback in front of `upstream` that can cut, at once, every connection open
/// through it except publishes (connections whose first request is a `POST`): their clients see
/// the socket close while publishing goes on.
pub struct CuttingProxy {
    pub addr: std::net::SocketAddr,
    held: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttingProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let holding = held.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let holding = holding.clone();
                tokio::spawn(async move {
                    // The first bytes say what the connection is for.
                    let mut first = [0u8; 5];
                    if client.read_exact(&mut first).await.is_err() {
                        return;
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    if server.write_all(&first).await.is_err() {
                        return;
                    }
                    let relay = tokio::spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
                    if &first != b"POST " {
                        holding.lock().unwrap().push(relay.abort_handle());
                    }
                });
            }
        });
        Self { addr, held }
    }

    /// Cuts every connection held open through the proxy so far; returns how many.
    pub fn cut(&self) -> usize {
        let held = std::mem::take(&mut *self.held.lock().unwrap());
        let open = held.iter().filter(|relay| !relay.is_finished()).count();
        held.iter().for_each(tokio::task::AbortHandle::abort);
        open
    }
}
