//! What the report says, in order: run facts, capacity, computed findings, flagged cells, charts,
//! measured vs model, the Redis, broker, peer and job sections, the summary table, notes — as one
//! [`Document`] that both `REPORT.md` and `REPORT.html` are rendered from.

use super::{
    cells::{self, Labeler},
    document::{Align, Cell, Document, Figure, Table},
    fmt,
    load::{value_text, RunData},
    model_table::ModelTable,
};
use crate::output::SummaryRow;

use Align::{Left, Right};

/// Everything the report shows.
#[derive(Debug)]
pub struct ReportParts<'a> {
    pub data: &'a RunData,
    pub labeler: &'a Labeler,
    pub table: &'a ModelTable,
    pub findings: &'a [String],
    pub charts: &'a [Figure],
    pub notes: &'a [String],
}

/// Builds the whole report.
pub fn document(parts: &ReportParts<'_>) -> Document {
    let mut doc = Document::new(format!("commbench report: run {}", parts.data.meta.run_id));
    doc.paragraph(
        "Rendered from this directory's result files (`summary.csv`, `run.json`, `*.hgrm`) by \
         `commbench report`; re-rendering gives the same report. Every number and every sentence \
         below is computed from those files.",
    );
    run_section(&mut doc, parts);
    super::capacity::section(&mut doc, &parts.data.capacity);
    doc.section("Findings");
    doc.list(parts.findings.to_vec());
    let all: Vec<SummaryRow> = parts.data.all_rows().cloned().collect();
    flagged_section(&mut doc, &all);
    charts_section(&mut doc, parts.charts);
    model_section(&mut doc, parts.table);
    let pairs = super::bus::pairs(&parts.data.rows, &parts.data.scale_out_rows);
    super::bus::section(&mut doc, &pairs, parts.labeler);
    let brokers = super::brokers::groups(parts.data);
    super::brokers::section(&mut doc, &brokers, parts.labeler);
    super::peers::section(&mut doc, &parts.data.rows, &parts.data.peer_rows);
    let job_rows = super::brokers::job_rows(parts.data);
    super::jobs::section(&mut doc, &job_rows, parts.labeler);
    summary_section(&mut doc, parts);
    let notes: Vec<String> = parts
        .data
        .meta
        .notes
        .iter()
        .chain(parts.notes)
        .cloned()
        .collect();
    if !notes.is_empty() {
        doc.section("Notes");
        doc.list(notes);
    }
    doc
}

/// `delivered/expected`, sorted by the delivered count.
pub fn delivered(row: &SummaryRow) -> Cell {
    match (row.events_delivered, row.events_expected) {
        (Some(d), Some(e)) => Cell::sorted(format!("{d}/{e}"), Some(d as f64)),
        _ => Cell::text("-"),
    }
}

fn run_section(doc: &mut Document, parts: &ReportParts<'_>) {
    let meta = &parts.data.meta;
    doc.section("Run");
    let mut facts = Table::facts();
    facts.fact("run id", meta.run_id.clone());
    if let Some(started) = meta.started_unix_s {
        facts.fact("started", fmt::utc(started));
    }
    let complete = meta
        .complete
        .unwrap_or_else(|| parts.data.rows.iter().all(|r| r.complete));
    facts.fact(
        "complete",
        if complete {
            "yes"
        } else {
            "**no**: interrupted or stopped on errors"
        },
    );
    facts.fact(
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
    facts.fact("commbench", version);
    facts.fact(
        "CPU",
        format!(
            "{}, {} CPUs available",
            meta.cpu_model.as_deref().unwrap_or("unknown model"),
            meta.cpus.map_or_else(|| "?".to_owned(), |c| c.to_string())
        ),
    );
    if let Some(kernel) = &meta.kernel {
        facts.fact("kernel", kernel.clone());
    }
    if let Some(rustc) = &meta.rustc {
        facts.fact("rustc", rustc.clone());
    }
    facts.fact(
        "CPU sets",
        meta.cpu_sets.as_ref().map_or_else(
            || "not recorded (nothing pinned)".to_owned(),
            |s| s.note.clone(),
        ),
    );
    if let Some(scheduling) = meta.scheduling.as_ref().filter(|s| !s.class.is_empty()) {
        facts.fact(
            "scheduling",
            format!("{}: {}", scheduling.class, scheduling.note),
        );
    }
    facts.fact(
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
    doc.table(facts);
    if let serde_json::Value::Object(fields) = &meta.scenario {
        doc.subsection("Scenario");
        let mut settings = Table::new(&[("setting", Left), ("value", Left)]);
        settings.sortable = false;
        for (key, value) in fields {
            if let Some(text) = value_text(value) {
                settings.row(vec![Cell::text(key.clone()), Cell::text(text)]);
            }
        }
        doc.table(settings);
    }
}

fn flagged_section(doc: &mut Document, rows: &[SummaryRow]) {
    doc.section("Saturated or unreliable cells");
    let flagged: Vec<&SummaryRow> = rows.iter().filter(|r| cells::is_flagged(r)).collect();
    if flagged.is_empty() {
        doc.paragraph("None: every cell completed and none carries a warning.");
        return;
    }
    doc.paragraph(
        "These cells are marked `!` in the tables and drawn hollow or dashed in the charts: their \
         numbers may describe the load generator or an interrupted run rather than the pattern.",
    );
    let mut table = Table::new(&[("cell", Left), ("why", Left)]);
    for row in flagged {
        table.row(vec![
            Cell::text(row.cell.clone()),
            Cell::text(cells::flag_reason(row)),
        ]);
    }
    doc.table(table);
}

fn charts_section(doc: &mut Document, charts: &[Figure]) {
    doc.section("Charts");
    for chart in charts {
        doc.subsection(chart.title);
        doc.figure(chart.clone());
    }
}

fn model_section(doc: &mut Document, table: &ModelTable) {
    doc.section("Measured vs model (polling)");
    if table.rows.is_empty() {
        let mut names = super::model_table::modelled_patterns();
        let last = names.pop().unwrap_or_default();
        doc.paragraph(format!(
            "No {} or {last} cell in this run.",
            names.join(", ")
        ));
        return;
    }
    doc.paragraph(
        "The analytic model, per client: short polling with interval T and λ events per second on \
         the client's topic waits on average half an interval for the next poll, so staleness has \
         mean T/2 + RTT and p99 ≈ 0.99·T + RTT; it makes 1/(λT) polls per delivered event (the CSV's \
         requests_per_event divides requests by events received, so this is below 1 when one poll \
         carries several events); the fraction of empty polls is e^(−λT) for Poisson arrivals, \
         max(0, 1 − λT) for evenly spaced ones. Long polling returns as soon as an event arrives, so \
         requests per event ≈ 1/(1 − timeouts) → 1 when λ·timeout ≫ 1. GraphQL polling follows \
         the short-polling model (the same schedule in another envelope). Bytes per event = polls \
         per event × bytes per request + bytes per event of body.",
    );
    let mut method = table.method.clone();
    method.push(
        "⚠ marks a measurement more than 10% from the model (relative; for fractions: more than \
         10 percentage points)."
            .to_owned(),
    );
    doc.list(method);
    let mut out = Table::new(&[
        ("cell", Left),
        ("clients", Right),
        ("inputs", Left),
        ("quantity", Left),
        ("measured", Right),
        ("model", Right),
        ("deviation", Right),
        ("", Left),
    ]);
    for row in &table.rows {
        out.push(
            vec![
                Cell::text(row.label.clone()),
                Cell::count(Some(row.clients)),
                Cell::text(row.inputs.clone()),
                Cell::text(row.quantity),
                Cell::sorted(row.value_text(row.measured), Some(row.measured)),
                Cell::sorted(row.value_text(row.model), Some(row.model)),
                Cell::sorted(row.deviation_text(), row.deviation()),
                Cell::text(if row.deviates { "⚠" } else { "" }),
            ],
            row.label.ends_with('!'),
        );
    }
    doc.table(out);
}

fn summary_section(doc: &mut Document, parts: &ReportParts<'_>) {
    doc.section("Summary table");
    doc.paragraph(
        "Latency: publish → delivery for the feed patterns, round trip for request-response, the \
         time between messages for a server that sends its own events (`inter_arrival`). \
         Per-event costs divide by events received in the measured window (request-response: \
         responses). CPU % is server CPU seconds ÷ measured seconds, as a share of the servers' \
         CPU set when they were pinned (of one core otherwise).",
    );
    let mut table = Table::new(&[
        ("cell", Left),
        ("clients", Right),
        ("rate/s", Right),
        ("p50 ms", Right),
        ("p99 ms", Right),
        ("p99.9 ms", Right),
        ("max ms", Right),
        ("delivered/expected", Right),
        ("lost", Right),
        ("req/event", Right),
        ("B/event", Right),
        ("srv CPU µs/event", Right),
        ("srv CPU %", Right),
        ("RSS/conn KiB", Right),
        ("errors", Right),
    ]);
    let mut rows: Vec<&SummaryRow> = parts.data.rows.iter().collect();
    cells::sort_rows(&mut rows);
    for row in rows {
        table.push(
            vec![
                Cell::text(parts.labeler.cell(row)),
                Cell::count(Some(row.clients)),
                Cell::num(Some(row.rate_per_s)),
                Cell::num(row.p50_ms),
                Cell::num(row.p99_ms),
                Cell::num(row.p999_ms),
                Cell::num(row.max_ms),
                delivered(row),
                Cell::count(row.events_lost),
                Cell::num(row.requests_per_event),
                Cell::num(row.bytes_per_event),
                Cell::num(row.server_cpu_us_per_event),
                Cell::num(cells::cpu_percent_of_set(row)),
                Cell::num(
                    row.server_rss_per_connection_bytes
                        .map(|b| b as f64 / 1024.0),
                ),
                Cell::count(Some(row.errors)),
            ],
            cells::is_flagged(row),
        );
    }
    doc.table(table);
    doc.paragraph(format!(
        "Cell names (file prefixes): {}.",
        parts
            .data
            .rows
            .iter()
            .map(|r| format!("`{}`", r.cell))
            .collect::<Vec<_>>()
            .join(", ")
    ));
}
