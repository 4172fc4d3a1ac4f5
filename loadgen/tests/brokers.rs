//! `commbench run --instances 2 --bus rabbitmq|kafka`: the binary starts a private RabbitMQ node or
//! tansu broker, the instances share the feed and the message queue through it, every event and
//! every job arrives once, and the broker's own CPU and memory are measured. A broker that is not
//! installed is a clear error for `run` and a note for `compare`. (The brokers' behaviour itself is
//! tested in the servers crate's backend suites.)
#![allow(clippy::unwrap_used)]

mod common;

use commbench_servers::broker::{rabbitmq, tansu, INSTALL_SCRIPT};
use common::{commbench, succeed, summary_rows as rows, temp_dir};

/// Runs sse, ws and job-ws on two instances over `bus` and checks every row.
fn every_event_and_job_once_over(bus: &str) {
    let dir = temp_dir(bus);
    succeed(
        commbench()
            .args(["run", "--quiet", "--instances", "2", "--bus", bus])
            .args(["-p", "sse,ws,job-ws", "-c", "20", "-r", "20"])
            .args(["-d", "2s", "--warmup", "500ms"])
            .arg("--out")
            .arg(&dir),
    );
    let rows = rows(&dir);
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        let cell = &row.cell;
        assert_eq!((row.bus.as_str(), row.instances), (bus, 2), "{cell}");
        assert!(cell.ends_with(&format!("-{bus}-x2")), "{cell}");
        assert!(row.events_expected.unwrap() > 0, "{cell}");
        assert_eq!(row.events_delivered, row.events_expected, "{cell}: {row:?}");
        assert_eq!(row.events_lost, Some(0), "{cell}: {row:?}");
        assert_eq!(row.events_duplicated, Some(0), "{cell}: {row:?}");
        assert_eq!(row.errors, 0, "{cell}: {}", row.error_kinds);
        if row.pattern.is_job() {
            assert_eq!(row.jobs_duplicated, Some(0), "{cell}");
        } else {
            // Half the clients sit on the instance the events were not published through.
            assert!(row.cross_instance_p99_ms.is_some(), "{cell}");
        }
        // The broker process's own cost, read from /proc.
        assert!(
            row.broker_cpu_s.unwrap() > 0.0,
            "{cell}: broker CPU not read"
        );
        assert!(row.broker_cpu_us_per_event.unwrap() > 0.0, "{cell}");
        assert!(row.broker_peak_rss_bytes.unwrap() > 1 << 20, "{cell}");
        assert!(row.server_cpu_s.is_some(), "{cell}");
    }
    succeed(commbench().arg("report").arg(&dir));
    let report = std::fs::read_to_string(dir.join("REPORT.md")).unwrap();
    assert!(report.contains("## Brokers side by side"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_instances_on_rabbitmq_deliver_every_event_and_job_once() {
    if !rabbitmq::installed() {
        eprintln!("skipped: rabbitmq-server is not installed (run {INSTALL_SCRIPT})");
        return;
    }
    every_event_and_job_once_over("rabbitmq");
}

#[test]
fn two_instances_on_kafka_deliver_every_event_and_job_once() {
    if !tansu::installed() {
        eprintln!("skipped: tansu is not installed (run {INSTALL_SCRIPT})");
        return;
    }
    every_event_and_job_once_over("kafka");
}

/// A tansu that cannot run: what a machine without the broker looks like to commbench.
const NO_TANSU: (&str, &str) = ("COMMBENCH_TANSU", "/nonexistent/commbench-tansu");

#[test]
fn a_broker_that_is_not_installed_is_a_clear_error_for_run() {
    let out = commbench()
        .env(NO_TANSU.0, NO_TANSU.1)
        .args(["run", "--quiet", "--instances", "2", "--bus", "kafka"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--bus") && stderr.contains("tansu") && stderr.contains(INSTALL_SCRIPT),
        "{stderr}"
    );
}

#[test]
fn compare_leaves_a_broker_that_is_not_installed_out_with_a_note() {
    let dir = temp_dir("no-broker");
    let out = succeed(
        commbench()
            .env(NO_TANSU.0, NO_TANSU.1)
            .args(["compare", "--quick", "-p", "sse", "-c", "5", "-r", "10"])
            .args(["-d", "1s", "--warmup", "200ms", "--interval", "1s"])
            .args(["--bus-patterns", "none", "--job-patterns", "none"])
            .args(["--brokers", "kafka", "--broker-patterns", "sse"])
            .arg("--out")
            .arg(&dir),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("note: the cells on kafka were left out: tansu")
            && stderr.contains(INSTALL_SCRIPT),
        "{stderr}"
    );
    let rows = rows(&dir);
    assert!(rows.iter().all(|r| r.bus == "memory"), "{rows:?}");
    let report = std::fs::read_to_string(dir.join("REPORT.md")).unwrap();
    assert!(
        report.contains("the cells on kafka were left out"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
