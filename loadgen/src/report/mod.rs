//! The report renderer: a run's result files (it never measures) → PNG charts and `REPORT.md`.

pub mod analysis;
pub mod bus;
pub mod cells;
pub mod charts;
mod error;
pub mod fmt;
pub mod jobs;
pub mod load;
pub mod markdown;
pub mod model;
pub mod model_table;

use std::{
    fmt::Display,
    path::{Path, PathBuf},
};

use plotters::{coord::Shift, prelude::*};

pub use error::ReportError;

use self::{
    cells::Labeler,
    charts::{cost, frontier, latency, memory, palette::SeriesColors, scaling},
    load::RunData,
    markdown::{ChartStatus, ReportParts},
};

/// The report's file name.
pub const REPORT_FILE: &str = "REPORT.md";

/// What [`render_report`] did.
#[derive(Debug, Clone)]
pub struct ReportOutcome {
    pub dir: PathBuf,
    /// Every file written: the charts, then `REPORT.md`.
    pub written: Vec<PathBuf>,
    /// Charts not drawn, as `(file, reason)` (e.g. `scaling.png` with one client count).
    pub skipped: Vec<(String, String)>,
    /// Cells flagged as saturated or unreliable (warnings, or incomplete).
    pub flagged: Vec<String>,
    /// Things left out along the way (a missing `.hgrm`, …); also listed in the report.
    pub notes: Vec<String>,
}

impl ReportOutcome {
    /// The path of `REPORT.md`.
    pub fn report(&self) -> PathBuf {
        self.dir.join(REPORT_FILE)
    }
}

impl Display for ReportOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .written
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
            })
            .collect();
        write!(
            f,
            "report: {} ({})",
            self.report().display(),
            names.join(", ")
        )?;
        for (file, reason) in &self.skipped {
            write!(f, "\n  {file} not drawn: {reason}")?;
        }
        if !self.flagged.is_empty() {
            write!(
                f,
                "\n  ! flagged (saturated or unreliable): {}",
                self.flagged.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Renders `dir`'s charts (`latency.png`, `cost.png`, `scaling.png`, `frontier.png`,
/// `memory.png`, `bus.png`) and `REPORT.md` from its result files. Fails with a message naming the file
/// when the directory, `summary.csv` or `run.json` is missing or corrupt; a chart without data
/// (e.g. scaling with one client count) is skipped and the report says why.
// The closures are needed: a generic `draw::<BitMapBackend<'_>>` is not general over the
// backend's lifetime.
#[allow(clippy::redundant_closure)]
pub fn render_report(dir: &Path) -> Result<ReportOutcome, ReportError> {
    let data = load::load_run(dir)?;
    charts::ensure_font()?;
    let labeler = Labeler::new(&data.rows);
    let colors = SeriesColors::new(&data.rows, &labeler);
    let mut notes = Vec::new();
    let mut renderer = Renderer {
        data: &data,
        statuses: Vec::new(),
        written: Vec::new(),
    };
    let clients = cells::client_counts(&data.rows)
        .last()
        .copied()
        .unwrap_or(0);

    let prepared = latency::prepare(&data, &labeler, &colors, &mut notes);
    renderer.chart(
        latency::FILE,
        "Latency percentiles",
        prepared,
        |_| latency::SIZE,
        |root, input| latency::draw(root, input),
        |_| {
            format!(
                "Percentile spectrum of every cell at {clients} clients, the run's largest client \
                 count (scaling.png covers the others), from the cells' `.hgrm` files: delivery \
                 latency (publish → client) for the feed patterns, round trip for \
                 request-response. x is 1/(1 − percentile) on a log scale, y is log scale; dashed \
                 lines are flagged cells."
            )
        },
    )?;
    let prepared = cost::prepare(&data, &labeler, &colors);
    renderer.chart(
        cost::FILE,
        "Cost per delivered event",
        prepared,
        cost::size,
        |root, input| cost::draw(root, input),
        |_| {
            format!(
                "Requests, bytes on the wire (both directions, headers and framing included) and \
                 server CPU per delivered event at {clients} clients; request-response counts each \
                 response as its event. Hollow bars are flagged cells."
            )
        },
    )?;
    let prepared = scaling::prepare(&data, &labeler, &colors);
    renderer.chart(
        scaling::FILE,
        "Scaling with clients",
        prepared,
        |_| scaling::SIZE,
        |root, input| scaling::draw(root, input),
        |input| {
            format!(
                "p99 latency (log scale) and server CPU (% of one core) against client count ({}), \
                 one line per pattern and per poll interval. Hollow markers are flagged cells.",
                join(&input.client_counts)
            )
        },
    )?;
    let prepared = frontier::prepare(&data, &labeler, &colors);
    renderer.chart(
        frontier::FILE,
        "Trade-off frontier",
        prepared,
        |_| frontier::SIZE,
        |root, input| frontier::draw(root, input),
        |input| {
            let fallback = if input.cost == frontier::Cost::BytesPerEvent {
                " (server CPU is missing for some cells, so bytes stand in for cost)"
            } else {
                ""
            };
            format!(
                "One point per feed cell at {} clients: x = {}{fallback}, y = p99 delivery \
                 latency; both log scale, lower left is better. A poller's intervals (short-poll, \
                 graphql-poll) are joined by a dashed line; request-response is left out (it does \
                 not carry the feed). Hollow points and `!` labels are flagged cells.",
                input.clients,
                input.cost.axis()
            )
        },
    )?;
    let prepared = memory::prepare(&data, &labeler, &colors);
    renderer.chart(
        memory::FILE,
        "Server memory per connection",
        prepared,
        memory::size,
        |root, input| memory::draw(root, input),
        |_| {
            "Peak server RSS divided by peak open connections, per cell. It includes the server's \
             baseline memory, so at small client counts it overstates what one connection costs; \
             with several client counts the findings give the marginal cost (the RSS slope)."
                .to_owned()
        },
    )?;

    let prepared = charts::bus::prepare(&data, &labeler);
    renderer.chart(
        charts::bus::FILE,
        "In-process vs Redis bus",
        prepared,
        charts::bus::size,
        |root, input| charts::bus::draw(root, input),
        |_| {
            "Each Redis cell (lighter bar) under its in-process twin: p99 delivery latency, and CPU \
             per delivered event of all server instances plus Redis itself."
                .to_owned()
        },
    )?;

    let table = model_table::model_table(&data, &labeler);
    let findings = analysis::findings(&data, &labeler, &table);
    let text = markdown::render(&ReportParts {
        data: &data,
        labeler: &labeler,
        table: &table,
        findings: &findings,
        charts: &renderer.statuses,
        notes: &notes,
    });
    let report = dir.join(REPORT_FILE);
    std::fs::write(&report, text).map_err(|source| ReportError::Write {
        path: report.clone(),
        source,
    })?;
    let Renderer {
        statuses, written, ..
    } = renderer;
    let mut written = written;
    written.push(report);
    Ok(ReportOutcome {
        dir: dir.to_owned(),
        written,
        skipped: statuses
            .into_iter()
            .filter(|s| !s.drawn)
            .map(|s| (s.file.to_owned(), s.text))
            .collect(),
        flagged: data
            .all_rows()
            .filter(|r| cells::is_flagged(r))
            .map(|r| r.cell.clone())
            .collect(),
        notes,
    })
}

fn join(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Draws charts into the results directory and remembers what became of each.
struct Renderer<'a> {
    data: &'a RunData,
    statuses: Vec<ChartStatus>,
    written: Vec<PathBuf>,
}

impl Renderer<'_> {
    fn chart<I>(
        &mut self,
        file: &'static str,
        title: &'static str,
        prepared: Result<I, String>,
        size: impl Fn(&I) -> (u32, u32),
        draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>, &I) -> Result<(), String>,
        caption: impl FnOnce(&I) -> String,
    ) -> Result<(), ReportError> {
        let input = match prepared {
            Ok(input) => input,
            Err(reason) => {
                self.statuses.push(ChartStatus {
                    file,
                    title,
                    text: reason,
                    drawn: false,
                });
                return Ok(());
            }
        };
        let path = self.data.dir.join(file);
        charts::render_png(&path, size(&input), |root| draw(root, &input))?;
        self.written.push(path);
        self.statuses.push(ChartStatus {
            file,
            title,
            text: caption(&input),
            drawn: true,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::SummaryRow;
    use crate::pattern::Pattern;
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
                poll.bytes_per_event =
                    Some((poll.bytes_up + poll.bytes_down) as f64 / events as f64);
                poll.server_cpu_us_per_event =
                    Some(30.0 + 200.0 * poll.requests_per_event.unwrap());
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
            let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
            let p50_us = row.p50_ms.unwrap() * 1000.0;
            let spread = row.p99_ms.unwrap() * 1000.0 - p50_us;
            for i in 0..2000_u64 {
                let x = i as f64 / 2000.0;
                hist.record((p50_us * 2.0 * x.min(0.5) + spread * x.powi(8)) as u64 + 1)
                    .unwrap();
            }
            let metric = row.latency_metric.as_deref().unwrap();
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

    #[test]
    fn renders_every_chart_and_the_report_from_a_fixture() {
        let dir = TempDir::new("full");
        let mut rows = cells(&[100, 1000]);
        for pattern in [Pattern::Sse, Pattern::LongPoll] {
            let mut redis = rows
                .iter()
                .find(|r| r.pattern == pattern && r.clients == 1000)
                .unwrap()
                .clone();
            redis.cell.push_str("-redis-x2");
            redis.bus = "redis".into();
            redis.instances = 2;
            redis.p99_ms = redis.p99_ms.map(|p| p + 2.0);
            redis.cross_instance_p99_ms = redis.p99_ms;
            redis.broker_cpu_us_per_event = Some(12.0);
            rows.push(redis);
        }
        write_fixture(&dir.0, &rows);
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
                "REPORT.md"
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
            "| sse | 1000 | redis, 2 servers |",
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
    }

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
            after.contains("short polling at 1s used 2× the server CPU per delivered event of SSE (80 vs 40 µs)"),
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
        assert_eq!(outcome.skipped.len(), 2);
        assert_eq!(outcome.skipped[0].0, scaling::FILE);
        assert_eq!(outcome.skipped[1].0, charts::bus::FILE);
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
}
