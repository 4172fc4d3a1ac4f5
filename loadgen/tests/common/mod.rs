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
