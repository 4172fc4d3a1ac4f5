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
