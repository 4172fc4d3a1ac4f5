//! `REPORT.md`: run facts, computed findings, flagged cells, charts, measured vs model, summary table.

use std::fmt::Write as _;

use super::{
    cells::{self, Labeler},
    fmt,
    load::{value_text, RunData},
    model_table::ModelTable,
};
use crate::output::SummaryRow;

/// A chart's place in the report: drawn (with a caption) or skipped (with the reason).
#[derive(Debug, Clone)]
pub struct ChartStatus {
    pub file: &'static str,
    pub title: &'static str,
    /// What the chart shows (drawn) or why it was not drawn (skipped).
    pub text: String,
    pub drawn: bool,
}

/// Everything the report shows.
#[derive(Debug)]
pub struct ReportParts<'a> {
    pub data: &'a RunData,
    pub labeler: &'a Labeler,
    pub table: &'a ModelTable,
    pub findings: &'a [String],
    pub charts: &'a [ChartStatus],
    pub notes: &'a [String],
}

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Renders the whole report.
pub fn render(parts: &ReportParts<'_>) -> String {
    let mut out = String::new();
    let meta = &parts.data.meta;
    let _ = writeln!(out, "# commbench report: run {}\n", meta.run_id);
    let _ = writeln!(
        out,
        "Rendered from this directory's result files (`summary.csv`, `run.json`, `*.hgrm`) by \
         `commbench report`; re-rendering gives the same report. Every number and every sentence \
         below is computed from those files.\n"
    );
    run_section(&mut out, parts);
    let _ = writeln!(out, "## Findings\n");
    for finding in parts.findings {
        let _ = writeln!(out, "- {finding}");
    }
    out.push('\n');
    let all: Vec<SummaryRow> = parts.data.all_rows().cloned().collect();
    flagged_section(&mut out, &all);
    charts_section(&mut out, parts.charts);
    model_section(&mut out, parts.table);
    let pairs = super::bus::pairs(&parts.data.rows, &parts.data.scale_out_rows);
    super::bus::section(&mut out, &pairs, parts.labeler);
    super::jobs::section(&mut out, &parts.data.job_rows, parts.labeler);
    summary_section(&mut out, parts);
    if !parts.notes.is_empty() {
        let _ = writeln!(out, "## Notes\n");
        for note in parts.notes {
            let _ = writeln!(out, "- {note}");
        }
        out.push('\n');
    }
    out
}

fn run_section(out: &mut String, parts: &ReportParts<'_>) {
    let meta = &parts.data.meta;
    let _ = writeln!(out, "## Run\n\n| | |\n|---|---|");
    let mut row = |key: &str, value: String| {
        let _ = writeln!(out, "| {key} | {} |", cell(&value));
    };
    row("run id", meta.run_id.clone());
    if let Some(started) = meta.started_unix_s {
        row("started", fmt::utc(started));
    }
    let complete = meta
        .complete
        .unwrap_or_else(|| parts.data.rows.iter().all(|r| r.complete));
    row(
        "complete",
        if complete {
            "yes".to_owned()
        } else {
            "**no**: interrupted or stopped on errors".to_owned()
        },
    );
    row(
        "target",
        meta.target.clone().unwrap_or_else(|| "unknown".to_owned()),
    );
    let mut version = meta
        .commbench_version
        .clone()
        .unwrap_or_else(|| "unknown".to_owned());
    if let Some(commit) = &meta.git_commit {
        version.push_str(&format!(" (commit {})", &commit[..commit.len().min(12)]));
    }
    row("commbench", version);
    row(
        "CPU",
        format!(
            "{}, {} CPUs available",
            meta.cpu_model.as_deref().unwrap_or("unknown model"),
            meta.cpus.map_or_else(|| "?".to_owned(), |c| c.to_string())
        ),
    );
    if let Some(kernel) = &meta.kernel {
        row("kernel", kernel.clone());
    }
    if let Some(rustc) = &meta.rustc {
        row("rustc", rustc.clone());
    }
    row(
        "CPU sets",
        meta.cpu_sets.as_ref().map_or_else(
            || "not recorded (nothing pinned)".to_owned(),
            |s| s.note.clone(),
        ),
    );
    if let Some(scheduling) = meta.scheduling.as_ref().filter(|s| !s.class.is_empty()) {
        row(
            "scheduling",
            format!("{}: {}", scheduling.class, scheduling.note),
        );
    }
    row(
        "cells",
        format!(
            "{} ({} flagged)",
            parts.data.all_rows().count(),
            parts
                .data
                .all_rows()
                .filter(|r| cells::is_flagged(r))
                .count()
        ),
    );
    out.push('\n');
    if let serde_json::Value::Object(fields) = &meta.scenario {
        let _ = writeln!(out, "### Scenario\n\n| setting | value |\n|---|---|");
        for (key, value) in fields {
            if let Some(text) = value_text(value) {
                let _ = writeln!(out, "| {} | {} |", cell(key), cell(&text));
            }
        }
        out.push('\n');
    }
}

fn flagged_section(out: &mut String, rows: &[SummaryRow]) {
    let _ = writeln!(out, "## Saturated or unreliable cells\n");
    let flagged: Vec<&SummaryRow> = rows.iter().filter(|r| cells::is_flagged(r)).collect();
    if flagged.is_empty() {
        let _ = writeln!(
            out,
            "None: every cell completed and none carries a warning.\n"
        );
        return;
    }
    let _ = writeln!(
        out,
        "These cells are marked `!` in the tables and drawn hollow or dashed in the charts: their \
         numbers may describe the load generator or an interrupted run rather than the pattern.\n\n\
         | cell | why |\n|---|---|"
    );
    for row in flagged {
        let _ = writeln!(
            out,
            "| {} | {} |",
            cell(&row.cell),
            cell(&cells::flag_reason(row))
        );
    }
    out.push('\n');
}

fn charts_section(out: &mut String, charts: &[ChartStatus]) {
    let _ = writeln!(out, "## Charts\n");
    for chart in charts {
        let _ = writeln!(out, "### {}\n", chart.title);
        if chart.drawn {
            let _ = writeln!(
                out,
                "![{}]({})\n\n{}\n",
                chart.title, chart.file, chart.text
            );
        } else {
            let _ = writeln!(out, "Not drawn ({}): {}.\n", chart.file, chart.text);
        }
    }
}

fn model_section(out: &mut String, table: &ModelTable) {
    let _ = writeln!(out, "## Measured vs model (polling)\n");
    if table.rows.is_empty() {
        let mut names = super::model_table::modelled_patterns();
        let last = names.pop().unwrap_or_default();
        let _ = writeln!(out, "No {} or {last} cell in this run.\n", names.join(", "));
        return;
    }
    let _ = writeln!(
        out,
        "The analytic model, per client: short polling with interval T and λ events per second on \
         the client's topic waits on average half an interval for the next poll, so staleness has \
         mean T/2 + RTT and p99 ≈ 0.99·T + RTT; it makes 1/(λT) polls per delivered event (the CSV's \
         requests_per_event divides requests by events received, so this is below 1 when one poll \
         carries several events); the fraction of empty polls is e^(−λT) for Poisson arrivals, \
         max(0, 1 − λT) for evenly spaced ones. Long polling returns as soon as an event arrives, so \
         requests per event ≈ 1/(1 − timeouts) → 1 when λ·timeout ≫ 1. GraphQL polling follows \
         the short-polling model (the same schedule in another envelope). Bytes per event = polls \
         per event × bytes per request + bytes per event of body.\n"
    );
    for line in &table.method {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(
        out,
        "- ⚠ marks a measurement more than 10% from the model (relative; for fractions: more than \
         10 percentage points).\n"
    );
    let _ = writeln!(
        out,
        "| cell | clients | inputs | quantity | measured | model | deviation | |\n|---|---:|---|---|---:|---:|---:|---|"
    );
    for row in &table.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&row.label),
            row.clients,
            cell(&row.inputs),
            cell(row.quantity),
            row.value_text(row.measured),
            row.value_text(row.model),
            row.deviation_text(),
            if row.deviates { "⚠" } else { "" }
        );
    }
    out.push('\n');
}

fn summary_section(out: &mut String, parts: &ReportParts<'_>) {
    let _ = writeln!(
        out,
        "## Summary table\n\nLatency: publish → delivery for the feed patterns, round trip for \
         request-response. Per-event costs divide by events received in the measured window \
         (request-response: responses). CPU % is server CPU seconds ÷ measured seconds, as a \
         share of the servers' CPU set when they were pinned (of one core otherwise).\n"
    );
    let _ = writeln!(
        out,
        "| cell | clients | rate/s | p50 ms | p99 ms | p99.9 ms | max ms | delivered/expected | lost | req/event | B/event | srv CPU µs/event | srv CPU % | RSS/conn KiB | errors |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut rows: Vec<&SummaryRow> = parts.data.rows.iter().collect();
    cells::sort_rows(&mut rows);
    for row in rows {
        let delivered = match (row.events_delivered, row.events_expected) {
            (Some(d), Some(e)) => format!("{d}/{e}"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&parts.labeler.cell(row)),
            row.clients,
            fmt::num(row.rate_per_s),
            fmt::opt(row.p50_ms),
            fmt::opt(row.p99_ms),
            fmt::opt(row.p999_ms),
            fmt::opt(row.max_ms),
            delivered,
            row.events_lost
                .map_or_else(|| "-".to_owned(), |l| l.to_string()),
            fmt::opt(row.requests_per_event),
            fmt::opt(row.bytes_per_event),
            fmt::opt(row.server_cpu_us_per_event),
            fmt::opt(cells::cpu_percent_of_set(row)),
            fmt::opt(
                row.server_rss_per_connection_bytes
                    .map(|b| b as f64 / 1024.0)
            ),
            row.errors
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "Cell names (file prefixes): {}.\n",
        parts
            .data
            .rows
            .iter()
            .map(|r| format!("`{}`", r.cell))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
