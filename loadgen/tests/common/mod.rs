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

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("commbench-lg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `flags` (field, value) against `target` and returns the single cell's result.
pub async fn run_one(target: &str, flags: &[(&'static str, &str)], name: &str) -> CellResult {
    let mut raw = RawScenario::default();
    raw.set_flag("target", target);
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
            placement: Default::default(),
        }),
    )
    .await
    .expect("run finished in time")
    .unwrap();
    assert_eq!(outcome.cells.len(), 1);
    let _ = std::fs::remove_dir_all(&outcome.dir);
    outcome.cells.into_iter().next().unwrap()
}

/// The `commbench` binary under test.
pub fn commbench() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_commbench"))
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
    commbench_servers::redis_server::RedisServer,
)> {
    use commbench_servers::redis_server::{self, RedisOptions, RedisServer};
    if !redis_server::installed() {
        eprintln!("skipped: {}", redis_server::INSTALL_HINT);
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
