//! `REPORT.html` in a real browser: `commbench report` renders the committed reference run (with a
//! hostile cell name and warning added), and headless Chromium, driven by `playwright-core`
//! (`tests/browser/check-report.js`), loads it from a file URL: no console errors, nothing fetched,
//! every chart drawn with a size and hover titles, the summary table sorted by a click and by the
//! keyboard, no sideways page scroll at phone width, a printed PDF. Skipped, saying so, only when
//! `chromium` or `node` is not installed.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use commbench_loadgen::output::{read_summary, SummaryRow};
use serde_json::Value;

const INSTALL: &str = "scripts/install-test-deps.sh";
const CHROMIUM: &str = "/usr/bin/chromium";
const REFERENCE_RUN: &str = "../results/2026-11-29-vm-2core";

/// Text a result file could carry that must stay text in the page.
const HOSTILE_WARNING: &str =
    "<script>window.__injected = 1</script><img src=x onerror=\"window.__injected = 2\"> & 'late'";
const HOSTILE_CELL: &str = "sse-c5000 <b>\"&amp;\"</b>";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// True when Chromium and node run; otherwise says why the test is skipped. With both present the
/// driver's packages must be installed: a missing `node_modules` fails with the command to run.
fn browser_ready(test: &str) -> bool {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    if !Path::new(&chromium).exists() {
        eprintln!("{test}: skipped, {chromium} is not installed (run {INSTALL})");
        return false;
    }
    common::node_ready(test, INSTALL, "loadgen/tests/browser", "playwright-core")
}

/// The reference run's result files (not its charts or reports) in a fresh directory, with one
/// cell renamed and one warning replaced by markup.
fn hostile_copy(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE_RUN);
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "run.json" || name.ends_with(".hgrm") {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    let mut rows: Vec<SummaryRow> = read_summary(&source.join("summary.csv")).unwrap();
    let renamed = rows
        .iter_mut()
        .find(|r| r.cell == "sse-c5000-r50-p128")
        .unwrap();
    renamed.cell = HOSTILE_CELL.to_owned();
    // A flagged cell whose warning holds markup, so the page must escape it.
    let warned = rows
        .iter_mut()
        .find(|r| r.cell == "ws-c1000-r50-p128")
        .unwrap();
    warned.warnings = HOSTILE_WARNING.to_owned();
    let mut writer = csv::Writer::from_path(dir.join("summary.csv")).unwrap();
    for row in &rows {
        writer.serialize(row).unwrap();
    }
    writer.flush().unwrap();
}

/// Runs `command` to its end, killing it after `limit`.
fn run_bounded(mut command: Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{command:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

fn is_sorted(values: &[f64], ascending: bool) -> bool {
    values.windows(2).all(|w| {
        if ascending {
            w[0] <= w[1]
        } else {
            w[0] >= w[1]
        }
    })
}

#[test]
fn the_html_report_renders_sorts_and_escapes_in_chromium() {
    let test = "the_html_report_renders_sorts_and_escapes_in_chromium";
    let dir = common::temp_dir("report-html");
    hostile_copy(&dir);
    let mut report = Command::new(env!("CARGO_BIN_EXE_commbench"));
    report.arg("report").arg(&dir);
    let out = run_bounded(report, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "commbench report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(dir.join("REPORT.html")).unwrap();
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the sorting script"
    );
    assert!(page.contains(
        "&lt;script&gt;window.__injected = 1&lt;/script&gt;&lt;img src=x \
         onerror=&quot;window.__injected = 2&quot;&gt; &amp; &#39;late&#39;"
    ));
    assert!(page.contains("sse-c5000 &lt;b&gt;&quot;&amp;amp;&quot;&lt;/b&gt;"));
    if !browser_ready(test) {
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }

    let url = format!("file://{}", dir.join("REPORT.html").display());
    let mut check = Command::new("node");
    check
        .arg("check-report.js")
        .arg(&url)
        .args(["--expect", HOSTILE_WARNING])
        .current_dir(browser_dir());
    let out = run_bounded(check, Duration::from_secs(180));
    assert!(
        out.status.success(),
        "check-report.js failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The reference run's own id (the run is redone now and then).
    let run: Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(REFERENCE_RUN)
                .join("run.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let run_id = run["run_id"].as_str().unwrap();
    assert_eq!(found["title"], format!("commbench report: run {run_id}"));
    assert_eq!(found["consoleErrors"], Value::Array(Vec::new()), "{found}");
    assert_eq!(
        found["requests"],
        serde_json::json!([url]),
        "the page loads nothing but itself"
    );
    // Rendered as text, and never run.
    assert_eq!(found["injected"], Value::Null);
    assert_eq!(found["found"], true, "the warning shows as text");

    let charts = found["charts"].as_array().unwrap();
    let ids: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "chart-latency",
            "chart-cost",
            "chart-scaling",
            "chart-frontier",
            "chart-memory",
            "chart-bus",
            "chart-brokers"
        ]
    );
    for chart in charts {
        assert!(chart["width"].as_f64().unwrap() > 300.0, "{chart}");
        assert!(chart["height"].as_f64().unwrap() > 150.0, "{chart}");
        assert!(chart["texts"].as_u64().unwrap() > 10, "{chart}: no labels");
        assert!(
            chart["tips"].as_u64().unwrap() > 0,
            "{chart}: no hover titles"
        );
    }
    let hoverable = found["hoverable"].as_array().unwrap();
    assert!(
        hoverable.len() == charts.len() && hoverable.iter().all(|h| h == true),
        "the hover layer lies over every chart: {hoverable:?}"
    );

    // Clicking "p99 ms" sorts the summary table by it, clicking again the other way.
    let sort = &found["sort"];
    let before = numbers(&sort["before"]);
    let ascending = numbers(&sort["ascending"]);
    let descending = numbers(&sort["descending"]);
    assert!(before.len() > 20, "{sort}");
    assert!(
        !is_sorted(&before, true),
        "the report's order is not by p99"
    );
    assert!(is_sorted(&ascending, true), "{sort}");
    assert!(is_sorted(&descending, false), "{sort}");
    let mut expected = before.clone();
    expected.sort_by(f64::total_cmp);
    assert_eq!(ascending, expected, "the same rows, reordered");
    assert_eq!(sort["ariaAscending"], "ascending");
    assert_eq!(sort["ariaDescending"], "descending");
    let by_clients = numbers(&found["keyboardSort"]);
    assert_eq!(by_clients.len(), before.len());
    assert!(
        is_sorted(&by_clients, true),
        "Enter sorts too: {by_clients:?}"
    );

    // At phone width the page does not scroll sideways (wide tables and charts scroll inside
    // their frames), and a printed copy has pages.
    let phone = &found["phone"];
    assert_eq!(phone["pageWidth"], phone["viewportWidth"], "{phone}");
    assert!(
        numbers(&phone["chartBoxes"]).iter().all(|w| *w > 300.0),
        "{phone}"
    );
    assert!(found["pdfPages"].as_u64().unwrap() >= 3, "{found}");
    let _ = std::fs::remove_dir_all(&dir);
}
