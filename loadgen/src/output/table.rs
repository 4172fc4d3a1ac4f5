//! The final results table printed to the terminal, followed by each cell's warnings.

use std::fmt::Write as _;

use super::summary::SummaryRow;
use crate::{pattern::Kind, result::CellResult, scenario::BusKind};

const HEADERS: [&str; 16] = [
    "pattern",
    "clients",
    "rate/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "delivered/expected",
    "lost",
    "dup",
    "req/ev",
    "B/ev",
    "srv µs/ev",
    "srv RSS MiB",
    "errors",
    "",
];

/// Renders `cells` as a fixed-width table (one line per cell, numbers right-aligned, `-` where a
/// value does not apply), then one `! cell: reason` line per warning or incomplete cell.
pub fn render_table(cells: &[CellResult]) -> String {
    let rows: Vec<SummaryRow> = cells.iter().map(|c| SummaryRow::from_cell("", c)).collect();
    let cells_text: Vec<[String; 16]> = rows.iter().map(row_cells).collect();
    let width = |column: usize| {
        cells_text
            .iter()
            .map(|r| r[column].chars().count())
            .chain([HEADERS[column].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..HEADERS.len()).map(width).collect();
    let mut out = String::new();
    let header = HEADERS.map(str::to_owned);
    for line in std::iter::once(&header).chain(&cells_text) {
        let mut text = String::new();
        for (column, (value, width)) in line.iter().zip(&widths).enumerate() {
            let pad = width.saturating_sub(value.chars().count());
            if column == 0 {
                text.push_str(value);
                text.push_str(&" ".repeat(pad + 2));
            } else {
                text.push_str(&" ".repeat(pad));
                text.push_str(value);
                text.push_str("  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    let metric = |name: &str| {
        rows.iter()
            .any(|r| r.latency_metric.as_deref() == Some(name))
    };
    if metric("round_trip") || metric("job_result") {
        out.push_str(
            "(latency: publish → delivery; request-response: round trip; job-*: submit → result \
             known)\n",
        );
    }
    if metric("inter_arrival") {
        out.push_str(
            "(inter_arrival: the server sends its own events, not the published payloads, so the \
             latency columns are the time between messages and there is no loss accounting)\n",
        );
    }
    for row in &rows {
        if let Some(line) = detail_line(row) {
            let _ = writeln!(out, "  {}: {line}", row.cell);
        }
    }
    for row in &rows {
        if !row.complete {
            let _ = writeln!(
                out,
                "! {}: INCOMPLETE: measured {:.1} of {} s",
                row.cell, row.measured_s, row.duration_s
            );
        }
        for warning in row.warnings.split("; ").filter(|w| !w.is_empty()) {
            let _ = writeln!(out, "! {}: {warning}", row.cell);
        }
    }
    out
}

/// What the table's columns leave out: the cross-instance hop and the broker's own cost for scale-out cells,
/// queue waits and redeliveries for job cells.
fn detail_line(row: &SummaryRow) -> Option<String> {
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"));
    let mut parts = Vec::new();
    if row.instances > 1 || row.bus != "memory" {
        parts.push(format!(
            "{} instances on {}, cross-instance p99 {}",
            row.instances,
            row.bus,
            ms(row.cross_instance_p99_ms)
        ));
        if let (Some(cpu), Some(rss)) = (row.broker_cpu_us_per_event, row.broker_peak_rss_bytes) {
            parts.push(format!(
                "{} {cpu:.1} µs/ev, {:.1} MiB",
                BusKind::title_of(&row.bus),
                rss as f64 / 1_048_576.0
            ));
        }
    }
    if row.pattern.is_job() {
        parts.push(format!(
            "queue wait p99 premium {} / normal {}, redelivered {}, duplicated {}",
            ms(row.queue_wait_premium_p99_ms),
            ms(row.queue_wait_normal_p99_ms),
            row.jobs_redelivered.unwrap_or(0),
            row.jobs_duplicated.unwrap_or(0)
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

fn row_cells(row: &SummaryRow) -> [String; 16] {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    let fixed =
        |value: Option<f64>, decimals: usize| or_dash(value.map(|v| format!("{v:.decimals$}")));
    let rate = if row.rate_per_s == 0.0 && row.pattern.kind() == Kind::Request {
        "closed".to_owned()
    } else {
        format!("{}", row.rate_per_s)
    };
    // Pollers are told apart by their interval: `short-poll@1s`; other servers by name.
    let mut pattern = match row.interval_s {
        Some(interval) => format!("{}@{interval}s", row.pattern),
        None => row.pattern.to_string(),
    };
    if row.target != crate::result::COMMBENCH && row.target != "external" {
        pattern.push_str(&format!(" ({})", row.target));
    }
    [
        pattern,
        row.clients.to_string(),
        rate,
        ms(row.p50_ms),
        ms(row.p99_ms),
        ms(row.p999_ms),
        ms(row.max_ms),
        or_dash(
            row.events_delivered
                .zip(row.events_expected)
                .map(|(d, e)| format!("{d}/{e}")),
        ),
        or_dash(row.events_lost.map(|n| n.to_string())),
        or_dash(row.events_duplicated.map(|n| n.to_string())),
        fixed(row.requests_per_event, 2),
        fixed(row.bytes_per_event, 0),
        fixed(row.server_cpu_us_per_event, 1),
        fixed(
            row.server_peak_rss_bytes
                .map(|b| b as f64 / (1024.0 * 1024.0)),
            1,
        ),
        row.errors.to_string(),
        if row.complete { "" } else { "INCOMPLETE" }.to_owned(),
    ]
}

/// Milliseconds with about three significant digits.
fn ms(value: Option<f64>) -> String {
    match value {
        None => "-".to_owned(),
        Some(v) if v < 10.0 => format!("{v:.3}"),
        Some(v) if v < 1000.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{output::test_util::sample_cell, pattern::Pattern};

    #[test]
    fn shows_every_cell_and_marks_incomplete_ones() {
        let cells = [
            sample_cell(Pattern::Sse, true),
            sample_cell(Pattern::RequestResponse, false),
        ];
        let table = render_table(&cells);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("pattern "), "{table}");
        assert!(lines[1].starts_with("sse "), "{table}");
        assert!(lines[2].starts_with("request-response "), "{table}");
        assert!(!lines[1].contains("INCOMPLETE"));
        assert!(lines[2].ends_with("INCOMPLETE"), "{table}");
        assert!(table.contains("! request-response-c1000-r50-p128: INCOMPLETE"));
        assert!(table.contains("! sse-c1000-r50-p128: load generator saturated"));
        // Columns line up: a complete cell's line ends where the header's `errors` ends.
        assert_eq!(
            lines[1].chars().count(),
            lines[0].chars().count(),
            "{table}"
        );
        assert!(lines[1].contains("1500000/1500010"));
        assert!(
            lines[1].contains(" 500.") || lines[1].contains(" 499."),
            "{table}"
        );
        assert!(lines[1].contains(" 64.0 "), "{table}");
    }

    #[test]
    fn scale_out_cells_show_the_hop_and_the_broker() {
        let mut cell = sample_cell(Pattern::Sse, true);
        cell.spec.bus = crate::scenario::BusKind::Redis;
        cell.spec.instances = 3;
        cell.broker = Some(crate::result::ProcessUsage {
            cpu_s: 1.5,
            peak_rss_bytes: 8 << 20,
            wait_s: 0.0,
        });
        let table = render_table(&[cell]);
        assert!(
            table.contains("3 instances on redis, cross-instance p99 -; Redis 1.0 µs/ev, 8.0 MiB"),
            "{table}"
        );
    }

    #[test]
    fn complete_cells_have_no_marker() {
        let table = render_table(&[sample_cell(Pattern::Ws, true)]);
        assert!(!table.contains("INCOMPLETE"));
        assert!(table.lines().nth(1).unwrap().starts_with("ws "));
    }
}
