//! The report end to end: result files written as a run writes them, rendered, read back.

use super::*;
use crate::output::SummaryRow;
use crate::pattern::{Kind, Pattern};
use cells::fixture::row;
use charts::test_util::png_size;
use hdrhistogram::Histogram;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "commbench-report-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const RUN_JSON: &str = r#"{
  "run_id": "20260101-000000",
  "started_unix_s": 1767225600,
  "complete": true,
  "commbench_version": "0.1.0",
  "git_commit": "d863bb5f9a4a038f318f7a00726897003c07ecff",
  "cpu_model": "Test CPU",
  "cpus": 2,
  "kernel": "6.1.0",
  "rustc": "rustc 1.95.0",
  "target": "embedded",
  "scenario": {"arrival": "fixed", "long_poll_timeout": 30.0, "rate": 20.0, "topics": 1, "patterns": ["sse", "ws", "long-poll", "short-poll", "request-response"]},
  "cells": []
}
"#;

/// A cell whose numbers are consistent with the analytic model (20 events/s, 1 topic).
fn cells(client_counts: &[u64]) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for &clients in client_counts {
        let scale = clients as f64 / 100.0;
        let events = 200 * clients;
        let mut sse = row(Pattern::Sse, clients, None);
        sse.p99_ms = Some(5.0 + scale);
        let mut ws = row(Pattern::Ws, clients, None);
        ws.server_cpu_us_per_event = Some(55.0);
        ws.bytes_per_event = Some(175.0);
        ws.p99_ms = Some(6.0 + scale);
        let mut long = row(Pattern::LongPoll, clients, None);
        long.requests = events;
        long.requests_per_event = Some(1.0);
        long.bytes_up = 88 * events;
        long.bytes_down = 350 * events;
        long.bytes_per_event = Some(438.0);
        long.server_cpu_us_per_event = Some(170.0);
        long.p99_ms = Some(12.0 + scale);
        rows.extend([sse, ws, long]);
        for interval in [0.5, 1.0] {
            let mut poll = row(Pattern::ShortPoll, clients, Some(interval));
            poll.requests = (clients as f64 * 10.0 / interval) as u64;
            poll.requests_per_event = Some(poll.requests as f64 / events as f64);
            poll.bytes_up = 67 * poll.requests;
            poll.bytes_down = 178 * poll.requests + 172 * events;
            poll.bytes_per_event = Some((poll.bytes_up + poll.bytes_down) as f64 / events as f64);
            poll.server_cpu_us_per_event = Some(30.0 + 200.0 * poll.requests_per_event.unwrap());
            poll.rtt_p50_ms = Some(2.0);
            poll.mean_ms = Some(interval * 500.0 + 2.0);
            poll.p99_ms = Some(interval * 990.0 + 2.0);
            rows.push(poll);
        }
        let mut rr = row(Pattern::RequestResponse, clients, None);
        rr.requests = 200 * clients;
        rr.requests_per_event = Some(1.0);
        rr.bytes_per_event = Some(167.0);
        rr.server_cpu_us_per_event = Some(300.0);
        rr.events_expected = None;
        rr.events_delivered = None;
        rr.events_lost = None;
        rows.push(rr);
    }
    // The fastest poll at the largest count saturated the harness.
    if let Some(last) = rows
        .iter_mut()
        .rev()
        .find(|r| r.pattern == Pattern::ShortPoll && r.interval_s == Some(0.5))
    {
        last.warnings = "5 of 60 publishes started more than 5 ms late".into();
    }
    rows
}

fn write_fixture(dir: &Path, rows: &[SummaryRow]) {
    let mut writer = csv::Writer::from_path(dir.join("summary.csv")).unwrap();
    for row in rows {
        writer.serialize(row).unwrap();
    }
    writer.flush().unwrap();
    std::fs::write(dir.join("run.json"), RUN_JSON).unwrap();
    for row in rows {
        // A cell without a headline latency (e.g. sse-url) has no `.hgrm` to write.
        let (Some(metric), Some(p50), Some(p99)) =
            (row.latency_metric.as_deref(), row.p50_ms, row.p99_ms)
        else {
            continue;
        };
        let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let p50_us = p50 * 1000.0;
        let spread = p99 * 1000.0 - p50_us;
        for i in 0..2000_u64 {
            let x = i as f64 / 2000.0;
            hist.record((p50_us * 2.0 * x.min(0.5) + spread * x.powi(8)) as u64 + 1)
                .unwrap();
        }
        std::fs::write(
            load::hgrm_path(dir, &row.cell, metric),
            crate::output::percentile_distribution(&hist, 1000.0),
        )
        .unwrap();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// One plausible cell of `pattern`, shaped by what the pattern measures.
fn cell_of(pattern: Pattern, clients: u64) -> SummaryRow {
    let interval = pattern.polls_on_interval().then_some(1.0);
    let mut cell = row(pattern, clients, interval);
    match pattern.kind() {
        Kind::FeedPush | Kind::FeedPoll(_) | Kind::Request => {}
        Kind::Job => {
            cell.latency_metric = Some("job_result".into());
            cell.queue_wait_premium_p99_ms = Some(4.0);
            cell.queue_wait_normal_p99_ms = Some(9.0);
            cell.jobs_redelivered = Some(0);
            cell.jobs_duplicated = Some(0);
        }
        Kind::External => {
            cell.server_cpu_s = None;
            cell.server_cpu_us_per_event = None;
            cell.server_peak_rss_bytes = None;
            cell.server_rss_per_connection_bytes = None;
            cell.events_expected = None;
            cell.events_delivered = None;
            cell.events_lost = None;
            if !pattern.polls_on_interval() {
                // Streams from someone else's server: inter-arrival times, no headline latency.
                cell.latency_metric = None;
                cell.p50_ms = None;
                cell.p90_ms = None;
                cell.p99_ms = None;
                cell.p999_ms = None;
                cell.max_ms = None;
                cell.mean_ms = None;
            }
        }
    }
    cell
}

#[test]
fn every_pattern_has_its_place_in_the_report() {
    let dir = TempDir::new("every-pattern");
    let rows: Vec<SummaryRow> = [100, 1000]
        .into_iter()
        .flat_map(|clients| Pattern::ALL.map(|p| cell_of(p, clients)))
        .collect();
    write_fixture(&dir.0, &rows);
    let outcome = render_report(&dir.0).unwrap();
    let report = read(&outcome.report());
    let data = load::load_run(&dir.0).unwrap();
    let labeler = Labeler::new(&data.rows);
    let colors = SeriesColors::new(&data.rows, &labeler);
    // Every pattern's cells are where its kind belongs, in display order, in its own colour.
    let ranked = |jobs: bool| {
        let mut patterns: Vec<Pattern> = Pattern::ALL
            .into_iter()
            .filter(|p| p.is_job() == jobs)
            .collect();
        patterns.sort_by_key(|p| p.rank());
        patterns
    };
    let by_rank = [ranked(false), ranked(true)].concat();
    let mut in_order: Vec<&SummaryRow> = data.rows.iter().filter(|r| r.clients == 1000).collect();
    cells::sort_rows(&mut in_order);
    let mut jobs: Vec<&SummaryRow> = data.job_rows.iter().filter(|r| r.clients == 1000).collect();
    cells::sort_rows(&mut jobs);
    in_order.extend(jobs);
    let order: Vec<Pattern> = in_order.iter().map(|r| r.pattern).collect();
    assert_eq!(order, by_rank);
    let mut seen_colours = Vec::new();
    for pattern in Pattern::ALL {
        let cells: Vec<&SummaryRow> = data.all_rows().filter(|r| r.pattern == pattern).collect();
        assert_eq!(cells.len(), 2, "{pattern}: {} cells", cells.len());
        assert_eq!(
            data.job_rows.iter().any(|r| r.pattern == pattern),
            pattern.is_job(),
            "{pattern} in the wrong section"
        );
        let label = labeler.series(cells[0]);
        assert!(
            report.contains(&format!("| {label} |")),
            "{pattern}: no `{label}` row in\n{report}"
        );
        let colour = colors.of(cells[0], &labeler);
        assert!(!seen_colours.contains(&colour), "{pattern} shares a colour");
        seen_colours.push(colour);
    }
    // The findings name the feed patterns in prose.
    for pattern in Pattern::ALL.into_iter().filter(|p| p.uses_feed()) {
        assert!(
            report.contains(pattern.prose()),
            "{pattern}: no `{}` in\n{report}",
            pattern.prose()
        );
    }
    assert!(
        report.contains("GraphQL on top of WebSocket")
            && report.contains("GraphQL on top of short polling at 1s"),
        "{report}"
    );
}

/// `rows` plus a twin of the SSE and long-poll cells at 1000 clients on 2 instances over each
/// broker, as `compare` writes them (RabbitMQ and Kafka a little slower and dearer than Redis).
fn with_brokers(mut rows: Vec<SummaryRow>) -> Vec<SummaryRow> {
    for pattern in [Pattern::Sse, Pattern::LongPoll] {
        for (bus, slower_ms, broker_us) in [
            ("redis", 2.0, 12.0),
            ("rabbitmq", 5.0, 30.0),
            ("kafka", 8.0, 25.0),
        ] {
            let mut twin = rows
                .iter()
                .find(|r| r.pattern == pattern && r.clients == 1000 && r.bus == "memory")
                .unwrap()
                .clone();
            twin.cell.push_str(&format!("-{bus}-x2"));
            twin.bus = bus.into();
            twin.instances = 2;
            twin.p99_ms = twin.p99_ms.map(|p| p + slower_ms);
            twin.cross_instance_p99_ms = twin.p99_ms;
            twin.broker_cpu_us_per_event = Some(broker_us);
            rows.push(twin);
        }
    }
    rows
}

/// `rows` plus the Node peer beside commbench's WebSocket and SSE cells at 1000 clients, as
/// `compare --peers node` writes them.
fn with_peers(mut rows: Vec<SummaryRow>) -> Vec<SummaryRow> {
    for pattern in [Pattern::Ws, Pattern::Sse] {
        let mut node = rows
            .iter()
            .find(|r| r.pattern == pattern && r.clients == 1000 && r.bus == "memory")
            .unwrap()
            .clone();
        node.cell.push_str("-node");
        node.target = "node".into();
        node.server_cpu_us_per_event = node.server_cpu_us_per_event.map(|c| c * 2.5);
        rows.push(node);
    }
    rows
}

#[test]
fn renders_every_chart_and_the_report_from_a_fixture() {
    let dir = TempDir::new("full");
    write_fixture(&dir.0, &with_peers(with_brokers(cells(&[100, 1000]))));
    // A capacity run's answer: re-rendered from capacity.csv like everything else.
    let mut sse = crate::output::test_util::capacity_row(Pattern::Sse, None, 8_200, 0.2);
    sse.run_id = "20260101-000000".into();
    crate::output::write_capacity(&dir.0.join(crate::output::CAPACITY_FILE), &[sse]).unwrap();
    let outcome = render_report(&dir.0).unwrap();
    let names: Vec<String> = outcome
        .written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "latency.png",
            "cost.png",
            "scaling.png",
            "frontier.png",
            "memory.png",
            "bus.png",
            "brokers.png",
            "peers.png",
            "capacity.png",
            "REPORT.md",
            "REPORT.html"
        ]
    );
    assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
    assert_eq!(outcome.flagged, ["short-poll-c1000-r20-p128-i0.5s"]);
    for (file, size) in [
        (latency::FILE, latency::SIZE),
        (scaling::FILE, scaling::SIZE),
        (frontier::FILE, frontier::SIZE),
        (memory::FILE, memory::SIZE),
    ] {
        let path = dir.0.join(file);
        assert_eq!(png_size(&path), size, "{file}");
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert!(bytes > 20_000, "{file} is only {bytes} bytes");
    }
    assert_eq!(png_size(&dir.0.join(cost::FILE)).0, 1800);
    let report = read(&outcome.report());
    for expected in [
        "# commbench report: run 20260101-000000",
        "| CPU | Test CPU, 2 CPUs available |",
        "![Latency percentiles](latency.png)",
        "![Trade-off frontier](frontier.png)",
        "![Server memory per connection](memory.png)",
        "![In-process vs Redis bus](bus.png)",
        "![Capacity per server core at the goal](capacity.png)",
        "## Capacity",
        "- With p99 < 100 ms, one core of server CPU carried 41k SSE clients.",
        "| sse | 1000 | redis, 2 servers |",
        "![Brokers side by side](brokers.png)",
        "## Brokers side by side",
        "| sse | 1000 | 2 | RabbitMQ |",
        "sse at 1000 clients on 2 servers: through RabbitMQ a delivery cost",
        "![commbench beside its peers](peers.png)",
        "## commbench beside its peers",
        "| ws | 1000 | node |",
        "At 1000 clients Node `ws` used 2.5× the server CPU per delivered event of commbench's \
         WebSocket (138 vs 55 µs)",
        "## Saturated or unreliable cells",
        "| short-poll-c1000-r20-p128-i0.5s | 5 of 60 publishes started more than 5 ms late |",
        "| short-poll 500ms ! | 1000 |",
        "## Measured vs model (polling)",
        "a = 178 B per response",
        "b = 172 B per event",
        "Scaling, sse: p99 6 ms at 100 clients → 15 ms at 1000",
        "Marginal server memory per added connection",
        "All 26 measured-vs-model comparisons",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in\n{report}"
        );
    }
    assert!(!report.contains("| ⚠ |"), "{report}");
    // Rendering again gives the same report.
    render_report(&dir.0).unwrap();
    assert_eq!(read(&outcome.report()), report);
    let html = read(&outcome.html());
    render_report(&dir.0).unwrap();
    assert_eq!(read(&outcome.html()), html);
    // The capacity section and chart are in the HTML report too.
    for expected in [
        "<h2>Capacity</h2>",
        "<figure class=\"chart\" id=\"chart-capacity\">",
        "<li>With p99 &lt; 100 ms, one core of server CPU carried 41k SSE clients.</li>",
    ] {
        assert!(html.contains(expected), "missing `{expected}` in\n{html}");
    }
}

#[test]
fn the_html_report_says_what_the_markdown_says() {
    let dir = TempDir::new("html");
    let mut rows = with_brokers(cells(&[100, 1000]));
    rows[0].warnings = "<script>alert('x')</script> & \"late\"".into();
    write_fixture(&dir.0, &rows);
    let outcome = render_report(&dir.0).unwrap();
    let report = read(&outcome.report());
    let page = read(&outcome.html());
    // Every finding, in the same words.
    let findings: Vec<&str> = report
        .split("## Findings\n\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("- "))
        .map(|l| &l[2..])
        .collect();
    assert!(findings.len() > 5, "{report}");
    for finding in findings {
        let item = format!("<li>{}</li>", html::inline(finding));
        assert!(page.contains(&item), "missing {item}");
    }
    // Every section and every chart, drawn inline with hover titles.
    for heading in report.lines().filter_map(|l| l.strip_prefix("## ")) {
        assert!(
            page.contains(&format!("<h2>{}</h2>", html::inline(heading))),
            "{heading}"
        );
    }
    for chart in CHARTS_FILES {
        let stem = chart.trim_end_matches(".png");
        let figure = page
            .split(&format!("<figure class=\"chart\" id=\"chart-{stem}\">"))
            .nth(1)
            .unwrap_or_else(|| panic!("no figure for {chart}"));
        let figure = figure.split("</figure>").next().unwrap();
        assert!(figure.contains("<svg role=\"img\""), "{chart}");
        assert!(
            figure.contains("<g class=\"tips\""),
            "{chart} has no hover titles"
        );
        assert!(figure.contains("font-family=\"sans-serif\""), "{chart}");
    }
    // The flagged cells, the model, the Redis pairs, the brokers and the summary sort; the run facts
    // do not.
    assert_eq!(page.matches("<table class=\"sortable\">").count(), 5);
    assert_eq!(page.matches("<table>").count(), 2);
    // Text from the result files is text.
    assert_eq!(
        page.matches("<script").count(),
        1,
        "only the sorting script"
    );
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;late&quot;"));
    // Self-contained: nothing is fetched from anywhere.
    for fetch in ["http://", "https://", "src=", "href=\"/", "url("] {
        let outside = page.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        assert!(!outside.contains(fetch), "{fetch}");
    }
}

/// The chart files of a run with every chart.
const CHARTS_FILES: [&str; 7] = [
    latency::FILE,
    cost::FILE,
    scaling::FILE,
    frontier::FILE,
    memory::FILE,
    charts::bus::FILE,
    charts::brokers::FILE,
];

#[test]
fn statements_follow_the_numbers() {
    let dir = TempDir::new("numbers");
    let mut rows = cells(&[500]);
    write_fixture(&dir.0, &rows);
    let before = read(&render_report(&dir.0).unwrap().report());
    // 1 s polls: 500×10 requests for 100000 events = 0.05 polls per event → 40 µs, as SSE.
    let sentence =
        "short polling at 1s used 1× the server CPU per delivered event of SSE (40 vs 40 µs)";
    assert!(before.contains(sentence), "{before}");
    for row in rows.iter_mut().filter(|r| r.pattern == Pattern::ShortPoll) {
        row.server_cpu_us_per_event = row.server_cpu_us_per_event.map(|v| v * 2.0);
        row.mean_ms = row.mean_ms.map(|v| v * 1.5);
    }
    write_fixture(&dir.0, &rows);
    let after = read(&render_report(&dir.0).unwrap().report());
    assert!(!after.contains(sentence), "{after}");
    assert!(
        after.contains(
            "short polling at 1s used 2× the server CPU per delivered event of SSE (80 vs 40 µs)"
        ),
        "{after}"
    );
    assert!(
        after.contains("| ⚠ |"),
        "mean staleness 1.5× the model is flagged"
    );
    assert!(after.contains("deviate by more than 10%"), "{after}");
}

#[test]
fn one_client_count_skips_the_scaling_chart() {
    let dir = TempDir::new("single");
    write_fixture(&dir.0, &cells(&[50]));
    let outcome = render_report(&dir.0).unwrap();
    assert!(!dir.0.join(scaling::FILE).exists());
    assert_eq!(outcome.skipped.len(), 5);
    assert_eq!(outcome.skipped[0].0, scaling::FILE);
    assert_eq!(outcome.skipped[1].0, charts::bus::FILE);
    assert_eq!(outcome.skipped[2].0, charts::brokers::FILE);
    assert_eq!(outcome.skipped[3].0, charts::peers::FILE);
    assert_eq!(outcome.skipped[4].0, charts::capacity::FILE);
    let report = read(&outcome.report());
    assert!(
        report.contains("Not drawn (scaling.png): the run has one client count (50)"),
        "{report}"
    );
    assert!(outcome.to_string().contains("scaling.png not drawn"));
}

#[test]
fn missing_histograms_are_noted_not_fatal() {
    let dir = TempDir::new("no-hgrm");
    let rows = cells(&[50]);
    write_fixture(&dir.0, &rows);
    std::fs::remove_file(load::hgrm_path(&dir.0, &rows[0].cell, "delivery")).unwrap();
    std::fs::write(
        load::hgrm_path(&dir.0, &rows[1].cell, "delivery"),
        "Value Percentile\n\n1.0 0.5 oops 2.0\n",
    )
    .unwrap();
    let outcome = render_report(&dir.0).unwrap();
    assert!(dir.0.join(latency::FILE).exists());
    let notes = outcome.notes.join("\n");
    assert!(
        notes.contains("sse-c50-r20-p128.delivery.hgrm is missing"),
        "{notes}"
    );
    assert!(
        notes.contains("ws-c50-r20-p128.delivery.hgrm is corrupt at line 3"),
        "{notes}"
    );
}

#[test]
fn errors_name_the_file() {
    let dir = TempDir::new("errors");
    let missing = dir.0.join("nope");
    let error = render_report(&missing).unwrap_err().to_string();
    assert!(
        error.contains("nope") && error.contains("does not exist"),
        "{error}"
    );

    let error = render_report(&dir.0).unwrap_err().to_string();
    assert!(error.contains("summary.csv is missing"), "{error}");

    std::fs::write(dir.0.join("summary.csv"), "run_id,cell\nx,y\n").unwrap();
    let error = render_report(&dir.0).unwrap_err().to_string();
    assert!(error.contains("summary.csv is corrupt"), "{error}");
    assert!(error.contains("missing field"), "{error}");

    write_fixture(&dir.0, &cells(&[50]));
    std::fs::write(dir.0.join("capacity.csv"), "run_id,pattern\nr,pigeon\n").unwrap();
    let error = render_report(&dir.0).unwrap_err().to_string();
    assert!(
        error.contains("capacity.csv is corrupt") && error.contains("not a valid capacity file"),
        "{error}"
    );
    std::fs::remove_file(dir.0.join("capacity.csv")).unwrap();

    std::fs::write(dir.0.join("run.json"), "{\"cells\": []}").unwrap();
    let error = render_report(&dir.0).unwrap_err().to_string();
    assert!(error.contains("run.json is corrupt"), "{error}");
    assert!(error.contains("run_id"), "{error}");

    std::fs::remove_file(dir.0.join("run.json")).unwrap();
    let error = render_report(&dir.0).unwrap_err().to_string();
    assert!(error.contains("run.json is missing"), "{error}");

    std::fs::write(dir.0.join("summary.csv"), "").unwrap();
    let error = render_report(&dir.0).unwrap_err().to_string();
    assert!(error.contains("summary.csv has no rows"), "{error}");
}
