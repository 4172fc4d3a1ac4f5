//! The message-queue section of `REPORT.md`: per notification pattern, how long until the user knows
//! its job is done, what that costs in requests, bytes and CPU per job, the queue wait per lane, and
//! whether every job was completed exactly once.

use super::{
    cells::{is_flagged, Labeler},
    document::{
        Align::{Left, Right},
        Cell, Document, Table,
    },
    fmt,
};
use crate::output::SummaryRow;

/// True for the job-submitter cells.
pub fn is_job(row: &SummaryRow) -> bool {
    row.pattern.is_job()
}

fn per_job(row: &SummaryRow, value: f64) -> Option<f64> {
    (row.events_received > 0).then(|| value / row.events_received as f64)
}

/// `p50 / p99`, sorted by the p99.
fn wait(p50: Option<f64>, p99: Option<f64>) -> Cell {
    match (p50, p99) {
        (Some(p50), Some(p99)) => {
            Cell::sorted(format!("{} / {}", fmt::num(p50), fmt::num(p99)), Some(p99))
        }
        _ => Cell::text("-"),
    }
}

/// Findings: the fastest and the cheapest way to learn a result, lanes, and any lost job.
pub fn findings(rows: &[SummaryRow], labeler: &Labeler) -> Vec<String> {
    let mut out = Vec::new();
    let timed: Vec<(&SummaryRow, f64)> = rows
        .iter()
        .filter_map(|r| r.p99_ms.map(|p| (r, p)))
        .collect();
    if timed.len() > 1 {
        let ranked = {
            let mut ranked = timed.clone();
            ranked.sort_by(|a, b| a.1.total_cmp(&b.1));
            ranked
                .iter()
                .map(|(r, p)| format!("{} {} ms", labeler.series(r), fmt::num(*p)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!(
            "Jobs: p99 from submit to the user knowing the result, fastest first: {ranked}."
        ));
    }
    for row in rows {
        if let (Some(premium), Some(normal)) =
            (row.queue_wait_premium_p99_ms, row.queue_wait_normal_p99_ms)
        {
            if normal > 0.0 && premium < normal {
                out.push(format!(
                    "{}: premium jobs waited {} ms in the queue at p99, normal ones {} ms.",
                    labeler.series(row),
                    fmt::num(premium),
                    fmt::num(normal)
                ));
            }
        }
        let lost = row.events_lost.unwrap_or(0);
        if lost > 0 {
            out.push(format!(
                "**{}: {lost} of {} submitted jobs never reached their user as done.**",
                labeler.series(row),
                row.events_expected.unwrap_or(0)
            ));
        }
    }
    out
}

/// The section's table, one row per job cell.
pub fn section(doc: &mut Document, rows: &[SummaryRow], labeler: &Labeler) {
    if rows.is_empty() {
        return;
    }
    doc.section("Message queue: learning that a job finished");
    doc.paragraph(
        "Each user submits jobs to a queue on an \
         open-loop schedule and waits for each result, learning it by short polling the job, long \
         polling its handle, or from a completion event on its own topic over SSE or WebSocket. \
         Latency is from the intended submit time to the user knowing the result; requests, bytes \
         and server CPU are per completed job (submits included). Queue wait is the server's \
         enqueue → first take, per lane. Redelivered and duplicated count the jobs users saw done.",
    );
    let mut table = Table::new(&[
        ("cell", Left),
        ("clients", Right),
        ("jobs/s", Right),
        ("p50 ms", Right),
        ("p99 ms", Right),
        ("req/job", Right),
        ("B/job", Right),
        ("srv CPU µs/job", Right),
        ("premium wait p50/p99 ms", Right),
        ("normal wait p50/p99 ms", Right),
        ("submitted", Right),
        ("completed", Right),
        ("lost", Right),
        ("redelivered", Right),
        ("duplicated", Right),
    ]);
    for row in rows {
        let bytes = (row.bytes_up + row.bytes_down) as f64;
        table.push(
            vec![
                Cell::text(labeler.cell(row)),
                Cell::count(Some(row.clients)),
                Cell::num(Some(row.achieved_rate_per_s)),
                Cell::num(row.p50_ms),
                Cell::num(row.p99_ms),
                Cell::num(per_job(row, row.requests as f64)),
                Cell::num(per_job(row, bytes)),
                Cell::num(row.server_cpu_us_per_event),
                wait(row.queue_wait_premium_p50_ms, row.queue_wait_premium_p99_ms),
                wait(row.queue_wait_normal_p50_ms, row.queue_wait_normal_p99_ms),
                Cell::count(row.events_expected),
                Cell::count(row.events_delivered),
                Cell::count(row.events_lost),
                Cell::count(row.jobs_redelivered),
                Cell::count(row.jobs_duplicated),
            ],
            is_flagged(row),
        );
    }
    doc.table(table);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;
    use crate::report::cells::fixture::row;

    fn job(pattern: Pattern, p99: f64) -> SummaryRow {
        let mut r = row(pattern, 100, None);
        r.p99_ms = Some(p99);
        r.queue_wait_premium_p50_ms = Some(1.0);
        r.queue_wait_premium_p99_ms = Some(2.0);
        r.queue_wait_normal_p50_ms = Some(4.0);
        r.queue_wait_normal_p99_ms = Some(9.0);
        r.jobs_redelivered = Some(0);
        r.jobs_duplicated = Some(0);
        r
    }

    #[test]
    fn findings_rank_patterns_and_name_lost_jobs() {
        let mut rows = vec![
            job(Pattern::JobShortPoll, 600.0),
            job(Pattern::JobSse, 30.0),
        ];
        rows[0].events_lost = Some(3);
        rows[0].events_expected = Some(100);
        let labeler = Labeler::new(&rows);
        let text = findings(&rows, &labeler).join("\n");
        assert!(
            text.contains("fastest first: job-sse 30 ms, job-short-poll 600 ms"),
            "{text}"
        );
        assert!(text.contains("premium jobs waited 2 ms"), "{text}");
        assert!(text.contains("3 of 100 submitted jobs"), "{text}");
        let mut doc = Document::default();
        section(&mut doc, &rows, &labeler);
        let out = crate::report::markdown::render(&doc);
        assert_eq!(out.matches("\n| job-").count(), 2, "{out}");
        assert!(out.contains("| 1 / 2 | 4 / 9 |"), "{out}");
    }
}
