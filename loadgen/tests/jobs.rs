//! The job patterns end to end: the binary starts its server with in-server workers on the cell's
//! queue, users submit jobs and learn every result by their pattern, and nothing is lost.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use commbench_loadgen::{output::SummaryRow, pattern::Pattern};

#[test]
fn every_notification_pattern_learns_every_job_result_once() {
    let dir = std::env::temp_dir().join(format!("commbench-jobs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_commbench"))
        .args(["run", "--quiet"])
        .args(["-p", "job-short-poll,job-long-poll,job-sse,job-ws"])
        .args(["-c", "20", "-r", "40", "--work", "5ms", "--workers", "2"])
        .args(["--premium", "0.5", "--interval", "100ms"])
        .args(["-d", "2s", "--warmup", "500ms"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = csv::Reader::from_path(dir.join("summary.csv")).unwrap();
    let rows: Vec<SummaryRow> = reader.deserialize().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let cell = &row.cell;
        assert_eq!(row.latency_metric.as_deref(), Some("job_result"), "{cell}");
        let submitted = row.events_expected.unwrap();
        // 40 jobs/s for 2.5 s, give or take the users' random phases.
        assert!(submitted >= 60, "{cell}: only {submitted} jobs submitted");
        assert_eq!(row.events_delivered, Some(submitted), "{cell}: {row:?}");
        assert_eq!(row.events_lost, Some(0), "{cell}");
        assert_eq!(row.jobs_duplicated, Some(0), "{cell}");
        assert_eq!(row.errors, 0, "{cell}: {}", row.error_kinds);
        assert!(row.queue_wait_premium_p99_ms.is_some(), "{cell}");
        assert!(row.queue_wait_normal_p99_ms.is_some(), "{cell}");
        // Push patterns need no request beyond the submit; pollers need at least one more.
        let per_job = row.requests_per_event.unwrap();
        if matches!(row.pattern, Pattern::JobShortPoll | Pattern::JobLongPoll) {
            assert!(per_job >= 1.9, "{cell}: {per_job} requests per job");
        } else {
            assert!(per_job <= 1.1, "{cell}: {per_job} requests per job");
        }
    }
    let report = Command::new(env!("CARGO_BIN_EXE_commbench"))
        .arg("report")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(report.status.success());
    let text = std::fs::read_to_string(dir.join("REPORT.md")).unwrap();
    assert!(text.contains("## Message queue"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
