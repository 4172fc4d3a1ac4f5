//! Measurement honesty and error paths: coordinated omission, unreachable targets, bad scenarios.
#![allow(clippy::unwrap_used)]

mod common;

use std::{process::Command, time::Duration, time::Instant};

use commbench_loadgen::record::Metric;
use commbench_servers::config::Stall;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stall_shows_in_corrected_latency_only() {
    // Warm-up 500 ms + ramp; the stall starts 1.5 s after the server does and lasts 600 ms.
    let server = common::server(|c| {
        c.debug_stall = Some(Stall {
            at: Duration::from_millis(1_500),
            len: Duration::from_millis(600),
        })
    })
    .await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "request-response"),
            ("clients", "8"),
            ("rate", "400"),
            ("duration", "4s"),
        ],
        "stall",
    )
    .await;
    let corrected = &cell.histograms[&Metric::RoundTrip];
    let uncorrected = &cell.histograms[&Metric::RoundTripUncorrected];
    let (c99, u99) = (
        corrected.value_at_quantile(0.99),
        uncorrected.value_at_quantile(0.99),
    );
    // ~15% of the scheduled requests fall in the stall, so corrected p99 is hundreds of ms; only
    // the one in-flight request per connection saw it uncorrected (0.5% of samples).
    assert!(c99 >= 250_000, "corrected p99 {c99} µs");
    assert!(u99 < 100_000, "uncorrected p99 {u99} µs hides the stall");
    assert!(
        uncorrected.max() >= 400_000,
        "the stalled requests are still in the max"
    );
}

fn commbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_commbench"))
}

#[test]
fn unreachable_target_is_a_clear_error_within_seconds() {
    // Bind then drop a listener so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let out = commbench()
        .args([
            "run",
            "--pattern",
            "sse",
            "--quiet",
            "--target",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unreachable") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
}

#[test]
fn scenario_file_with_a_bad_field_names_it() {
    let path = std::env::temp_dir().join(format!("commbench-bad-{}.toml", std::process::id()));
    std::fs::write(&path, "patterns = [\"sse\"]\nclients = 0\n").unwrap();
    let out = commbench()
        .args(["run", "--quiet", "--scenario", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("field `clients`") && stderr.contains("1..=200000"),
        "{stderr}"
    );
    std::fs::write(&path, "patterns = [\"sse\"]\nclient_count = 5\n").unwrap();
    let out = commbench()
        .args(["run", "--quiet", "--scenario", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown field `client_count`"), "{stderr}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn bad_flag_values_name_the_flag_and_range() {
    let out = commbench()
        .args(["run", "--clients", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--clients") && stderr.contains("1..=200000"),
        "{stderr}"
    );
    let out = commbench()
        .args(["run", "--duration", "soon"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--duration") && stderr.contains("not a duration"),
        "{stderr}"
    );
}

#[test]
fn embedded_default_runs_without_setup_and_writes_results() {
    let dir = common::temp_dir("embedded");
    let out = commbench()
        .args([
            "run",
            "--quiet",
            "--pattern",
            "sse,short-poll",
            "--clients",
            "5",
            "--rate",
            "10",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--interval",
            "200ms",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows = commbench_loadgen::output::read_summary(&dir.join("summary.csv")).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows
        .iter()
        .all(|r| r.server_cpu_s.is_some() && r.events_lost == Some(0)));
    assert!(dir.join("run.json").exists());
    assert!(dir.join("sse-c5-r10-p128.delivery.hgrm").exists());
    assert!(dir.join("sse-c5-r10-p128.delivery.hlog").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_writes_what_was_measured_and_marks_the_run_incomplete() {
    let dir = common::temp_dir("interrupted");
    let mut child = commbench()
        .args([
            "run",
            "--quiet",
            "--pattern",
            "sse",
            "--clients",
            "5",
            "--rate",
            "20",
            "--duration",
            "60s",
            "--warmup",
            "500ms",
            "--out",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still running after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130));
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run["complete"], false);
    let rows = commbench_loadgen::output::read_summary(&dir.join("summary.csv")).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].complete);
    assert!(
        rows[0].measured_s > 1.0 && rows[0].measured_s < 30.0,
        "{}",
        rows[0].measured_s
    );
    assert!(rows[0].events_delivered.unwrap_or(0) > 0);
    assert_eq!(rows[0].events_lost, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_errors_stops_the_cell_and_says_so() {
    // The publisher's connections open first; beyond them only 5 are allowed, so most of the 20
    // clients are refused with 503.
    let publisher = commbench_loadgen::publisher::CONNECTIONS;
    let server = common::server(|c| c.max_connections = publisher + 5).await;
    let cell = common::run_one(
        &server.url(),
        &[
            ("patterns", "sse"),
            ("clients", "20"),
            ("duration", "30s"),
            ("max_errors", "3"),
        ],
        "max-errors",
    )
    .await;
    assert!(!cell.complete);
    assert!(cell.measured_s < 20.0, "{}", cell.measured_s);
    assert!(cell.counters.errors >= 3);
    assert!(cell.errors.contains_key("http_503"), "{:?}", cell.errors);
    assert!(
        cell.warnings.iter().any(|w| w.contains("--max-errors")),
        "{:?}",
        cell.warnings
    );
}
