//! `--fail-if` and `commbench capacity` through the real binary on tiny cells: exit statuses 0, 1
//! and 2, what is printed, and what is written.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use commbench_loadgen::output::{read_capacity, read_summary, CAPACITY_FILE};

fn commbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_commbench"))
}

/// The smallest honest cell: 3 SSE clients, 10 events/s, a 1 s window.
const TINY: [&str; 10] = [
    "--quiet",
    "-p",
    "sse",
    "-c",
    "3",
    "-r",
    "10",
    "-d",
    "1s",
    "--warmup=0s",
];

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn run_exits_0_when_every_threshold_holds() {
    let dir = common::temp_dir("thresholds-held");
    let out = commbench()
        .arg("run")
        .args(TINY)
        .args([
            "--fail-if",
            "errors==0,events_lost==0",
            "--fail-if",
            "sse:p99_ms<1m",
        ])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("thresholds: 3 held, 0 failed, 0 skipped"),
        "{stdout}"
    );
    assert_eq!(read_summary(&dir.join("summary.csv")).unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_violated_threshold_from_a_scenario_file_exits_1_after_writing_everything() {
    let dir = common::temp_dir("thresholds-failed");
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("goal.toml");
    // No delivery is faster than a microsecond; the rate column is skipped for nothing.
    std::fs::write(
        &scenario,
        "fail_if = [\"p99_ms<1us\", \"ws:p99_ms<20\", \"rtt_p99_ms<1s\"]\n",
    )
    .unwrap();
    let out = commbench()
        .arg("run")
        .args(TINY)
        .arg("--scenario")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("threshold FAILED: p99_ms<1us: sse-c3-r10-p128 has p99_ms = "),
        "{stdout}"
    );
    assert!(
        stdout.contains("threshold skipped: ws:p99_ms<20: no ws row in this run"),
        "{stdout}"
    );
    assert!(
        stdout.contains("rtt_p99_ms is empty for sse-c3-r10-p128 (does not apply there)"),
        "{stdout}"
    );
    assert!(stdout.contains("0 held, 1 failed, 2 skipped"), "{stdout}");
    let rows = read_summary(&dir.join("run").join("summary.csv")).unwrap();
    assert_eq!(rows.len(), 1);
    assert!(dir.join("run").join("run.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_threshold_is_refused_before_anything_runs() {
    let dir = common::temp_dir("thresholds-refused");
    for (expression, expected) in [
        (
            "p98_ms<50",
            "unknown column `p98_ms` (columns: run_id, cell, pattern",
        ),
        ("p99_ms=50", "no comparison"),
        ("pattern<sse", "compare it with == or !="),
        ("pigeon:p99_ms<1", "unknown pattern `pigeon`"),
    ] {
        let out = commbench()
            .arg("run")
            .args(TINY)
            .args(["--fail-if", expression, "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{expression}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("--fail-if: `{expression}`")) && stderr.contains(expected),
            "{expression}: {stderr}"
        );
        assert!(!dir.exists(), "{expression}: something ran");
    }
    // The same for capacity, over capacity.csv's columns.
    let out = commbench()
        .args([
            "capacity",
            "--quiet",
            "--fail-if",
            "sse:p99_ms_at_capacity>1",
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("capacity_per_core"), "{stderr}");
    assert!(!dir.exists());
}

#[test]
fn capacity_usage_errors_name_the_flag() {
    for (flags, expected) in [
        (
            &["--slo", "p99<100ms,p98<1s"][..],
            "--slo: `p98<1s`: unknown point `p98`",
        ),
        (&["-c", "500"][..], "--clients: capacity varies the clients"),
        (&["--precision", "0"][..], "--precision:"),
        (&["-p", "job-ws"][..], "not job-ws"),
    ] {
        let out = commbench().arg("capacity").args(flags).output().unwrap();
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}

/// Two steps (2 and 4 clients) under a goal any machine meets: the ceiling is `--max`.
#[test]
fn capacity_writes_capacity_csv_the_chart_and_the_report_and_checks_thresholds() {
    let dir = common::temp_dir("capacity");
    let out = commbench()
        .args([
            "capacity",
            "--quiet",
            "-p",
            "sse",
            "--slo",
            "p99<30s",
            "--start",
            "2",
            "--max",
            "4",
            "-r",
            "100",
            "-d",
            "1s",
            "--warmup=500ms",
            "--topics",
            "1",
        ])
        .args(["--fail-if", "sse:capacity>=2,capacity_per_core>1G", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let rows = read_capacity(&dir.join(CAPACITY_FILE)).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!((row.capacity, row.steps_run), (4, 2), "{row:?}");
    assert_eq!(row.constraint.as_str(), "max", "{row:?}");
    // (A busy machine may add "(harness warned)": the goal held all the same.)
    assert!(
        row.steps.starts_with("2 ok") && row.steps.contains("; 4 ok"),
        "{row:?}"
    );
    assert!(
        row.p99_ms.is_some() && row.server_cores.is_some(),
        "{row:?}"
    );
    assert_eq!(row.cell.as_deref(), Some("sse-c4-r100-p128"));
    // Every step is a cell of the run, with its files.
    let cells = read_summary(&dir.join("summary.csv")).unwrap();
    let names: Vec<&str> = cells.iter().map(|c| c.cell.as_str()).collect();
    assert_eq!(names, ["sse-c2-r100-p128", "sse-c4-r100-p128"]);
    assert!(dir.join("sse-c2-r100-p128.delivery.hgrm").exists());
    assert!(dir.join("capacity.png").exists());
    assert!(
        stdout.contains("threshold FAILED: capacity_per_core>1G: sse has capacity_per_core = "),
        "{stdout}"
    );
    assert!(stdout.contains("1 held, 1 failed"), "{stdout}");
    assert!(
        stdout.contains("sse: 4 clients met p99 < 30 s"),
        "the sentences are printed: {stdout}"
    );
    // The report re-renders from the files alone.
    std::fs::remove_file(dir.join("REPORT.md")).unwrap();
    std::fs::remove_file(dir.join("capacity.png")).unwrap();
    let out = commbench().arg("report").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    let report = std::fs::read_to_string(dir.join("REPORT.md")).unwrap();
    assert!(report.contains("## Capacity"), "{report}");
    assert!(report.contains("| sse | 4 clients |"), "{report}");
    assert!(dir.join("capacity.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// With room for fewer clients than `--max`, the search stops at the open-file budget, found
/// before a step rather than by a ramp that fails half-way.
#[test]
fn capacity_stops_at_the_open_file_limit_before_a_step() {
    let dir = common::temp_dir("capacity-fd");
    let command = format!(
        "ulimit -n 400 && exec '{}' capacity --quiet -p sse --slo 'p99<30s' --start 64 \
         --max 1000 -r 50 -d 1s --warmup=500ms --topics 1 --out '{}'",
        env!("CARGO_BIN_EXE_commbench"),
        dir.display()
    );
    let out = Command::new("sh").args(["-c", &command]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let rows = read_capacity(&dir.join(CAPACITY_FILE)).unwrap();
    let row = &rows[0];
    assert_eq!(row.constraint.as_str(), "fd-limit", "{row:?}");
    assert!(row.constraint_detail.contains("ulimit -n"), "{row:?}");
    assert!(row.capacity >= 64 && row.capacity < 400, "{row:?}");
    assert!(row.steps.contains(" fd-limit (not run)"), "{row:?}");
    // No step ran with more clients than the capacity found.
    let cells = read_summary(&dir.join("summary.csv")).unwrap();
    assert!(cells.iter().all(|c| c.clients <= row.capacity), "{cells:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
