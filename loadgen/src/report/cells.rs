//! Views of `summary.csv` rows shared by charts and text: labels, flags, ordering, grouping.

use std::collections::BTreeSet;

use super::fmt;
use crate::output::SummaryRow;

/// True when the cell's numbers may not describe the pattern: the run was cut short, or the
/// load generator warned (saturated harness, late publishes, …).
pub fn is_flagged(row: &SummaryRow) -> bool {
    !row.complete || !row.warnings.trim().is_empty()
}

/// Why a cell is flagged, in words.
pub fn flag_reason(row: &SummaryRow) -> String {
    let mut reasons = Vec::new();
    if !row.complete {
        reasons.push("incomplete (interrupted or stopped on errors)".to_owned());
    }
    if !row.warnings.trim().is_empty() {
        reasons.push(row.warnings.trim().to_owned());
    }
    reasons.join("; ")
}

/// Sorts rows by pattern (its display rank), interval, then client count.
pub fn sort_rows(rows: &mut [&SummaryRow]) {
    rows.sort_by(|a, b| {
        a.pattern
            .rank()
            .cmp(&b.pattern.rank())
            .then(
                a.interval_s
                    .unwrap_or(0.0)
                    .total_cmp(&b.interval_s.unwrap_or(0.0)),
            )
            .then(a.rate_per_s.total_cmp(&b.rate_per_s))
            .then(a.payload_bytes.cmp(&b.payload_bytes))
            .then(a.topics.cmp(&b.topics))
            .then(a.clients.cmp(&b.clients))
    });
}

/// Distinct client counts, ascending.
pub fn client_counts(rows: &[SummaryRow]) -> Vec<u64> {
    rows.iter()
        .map(|r| r.clients)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Rows at `clients`, in display order.
pub fn at_clients(rows: &[SummaryRow], clients: u64) -> Vec<&SummaryRow> {
    let mut chosen: Vec<&SummaryRow> = rows.iter().filter(|r| r.clients == clients).collect();
    sort_rows(&mut chosen);
    chosen
}

/// True when two cells ran the same workload: pattern, clients, rate, payload, topics, interval
/// (they may differ in bus, instances or target).
pub fn same_workload(a: &SummaryRow, b: &SummaryRow) -> bool {
    a.pattern == b.pattern
        && a.clients == b.clients
        && a.rate_per_s == b.rate_per_s
        && a.payload_bytes == b.payload_bytes
        && a.topics == b.topics
        && a.interval_s == b.interval_s
}

/// Server CPU as a percentage of one core over the measured window.
pub fn cpu_percent(row: &SummaryRow) -> Option<f64> {
    let cpu = row.server_cpu_s?;
    (row.measured_s > 0.0).then(|| cpu / row.measured_s * 100.0)
}

/// Server CPU as a percentage of the servers' CPU set (of one core when they were not pinned).
pub fn cpu_percent_of_set(row: &SummaryRow) -> Option<f64> {
    let set = row
        .server_cpus
        .parse::<crate::pin::CpuList>()
        .map_or(1, |s| s.len().max(1));
    cpu_percent(row).map(|p| p / set as f64)
}

/// Events per second reaching each client's topic: the publish rate spread over the topics.
pub fn lambda_per_client(row: &SummaryRow) -> Option<f64> {
    (row.rate_per_s > 0.0 && row.topics > 0).then(|| row.rate_per_s / row.topics as f64)
}

/// Builds cell labels that show only what varies in the run: `short-poll 1s`, `sse`, and
/// ` r50`/` p128`/` t4` suffixes when rates, payloads or topic counts differ between cells.
#[derive(Debug, Clone, Default)]
pub struct Labeler {
    rate: bool,
    payload: bool,
    topics: bool,
}

impl Labeler {
    pub fn new(rows: &[SummaryRow]) -> Self {
        let distinct = |f: &dyn Fn(&SummaryRow) -> String| {
            rows.iter().map(f).collect::<BTreeSet<_>>().len() > 1
        };
        Self {
            rate: distinct(&|r| fmt::num(r.rate_per_s)),
            payload: distinct(&|r| r.payload_bytes.to_string()),
            topics: distinct(&|r| r.topics.to_string()),
        }
    }

    /// The label of a line of cells that differ only in client count.
    pub fn series(&self, row: &SummaryRow) -> String {
        let mut label = row.pattern.to_string();
        if let Some(interval) = row.interval_s {
            label.push(' ');
            label.push_str(&fmt::interval(interval));
        }
        if self.rate {
            label.push_str(&format!(" r{}", fmt::num(row.rate_per_s)));
        }
        if self.payload {
            label.push_str(&format!(" p{}", row.payload_bytes));
        }
        if self.topics {
            label.push_str(&format!(" t{}", row.topics));
        }
        label
    }

    /// The series label with `!` appended when the cell is flagged.
    pub fn cell(&self, row: &SummaryRow) -> String {
        let mut label = self.series(row);
        if is_flagged(row) {
            label.push_str(" !");
        }
        label
    }
}

/// Rows grouped into lines over client count (same pattern, interval, rate, payload, topics),
/// each line sorted by clients; lines in display order.
pub fn series<'a>(rows: &'a [SummaryRow], labeler: &Labeler) -> Vec<(String, Vec<&'a SummaryRow>)> {
    let mut sorted: Vec<&SummaryRow> = rows.iter().collect();
    sort_rows(&mut sorted);
    let mut lines: Vec<(String, Vec<&SummaryRow>)> = Vec::new();
    for row in sorted {
        let label = labeler.series(row);
        match lines.iter_mut().find(|(l, _)| *l == label) {
            Some((_, members)) => members.push(row),
            None => lines.push((label, vec![row])),
        }
    }
    lines
}

#[cfg(test)]
pub(crate) mod fixture {
    //! Summary rows for the report's tests.
    use crate::{
        output::SummaryRow,
        pattern::{Kind, Pattern},
    };

    /// [`row`] at 1000 clients on 2 instances over `bus`, with its p99 and its servers' and broker's
    /// CPU per event.
    pub fn on_broker(
        bus: &str,
        pattern: Pattern,
        p99: f64,
        servers: f64,
        broker: f64,
    ) -> SummaryRow {
        let mut r = row(pattern, 1000, None);
        r.cell.push_str(&format!("-{bus}-x2"));
        r.bus = bus.into();
        r.instances = 2;
        r.p99_ms = Some(p99);
        r.server_cpu_us_per_event = Some(servers);
        r.broker_cpu_us_per_event = Some(broker);
        r
    }

    /// A plausible complete row; adjust fields per test.
    pub fn row(pattern: Pattern, clients: u64, interval_s: Option<f64>) -> SummaryRow {
        let interval = interval_s.map_or(String::new(), |i| format!("-i{i}s"));
        SummaryRow {
            run_id: "20260101-000000".into(),
            cell: format!("{pattern}-c{clients}-r20-p128{interval}"),
            pattern,
            clients,
            rate_per_s: 20.0,
            payload_bytes: 128,
            interval_s,
            topics: 1,
            duration_s: 10.0,
            warmup_s: 2.0,
            measured_s: 10.0,
            complete: true,
            latency_metric: Some(
                if pattern.kind() == Kind::Request {
                    "round_trip"
                } else {
                    "delivery"
                }
                .into(),
            ),
            p50_ms: Some(3.0),
            p90_ms: Some(5.0),
            p99_ms: Some(7.0),
            p999_ms: Some(9.0),
            max_ms: Some(10.0),
            mean_ms: Some(3.5),
            rtt_p50_ms: None,
            rtt_p99_ms: None,
            rtt_uncorrected_p99_ms: None,
            connect_p99_ms: Some(2.0),
            events_published: 200,
            achieved_rate_per_s: 20.0,
            events_received: 200 * clients,
            events_expected: Some(200 * clients),
            events_delivered: Some(200 * clients),
            events_lost: Some(0),
            events_duplicated: Some(0),
            events_out_of_order: Some(0),
            gaps: Some(0),
            requests: 0,
            empty_responses: 0,
            bytes_up: 0,
            bytes_down: 190 * 200 * clients,
            bytes_per_event: Some(190.0),
            requests_per_event: Some(0.0),
            connections_opened: clients,
            connections_peak: clients,
            reconnects: 0,
            errors: 0,
            error_kinds: String::new(),
            late_sends: 0,
            dropped_sends: 0,
            clamped_samples: 0,
            server_cpu_s: Some(0.4),
            server_cpu_us_per_event: Some(40.0),
            server_peak_rss_bytes: Some(14_000_000 + 10_000 * clients),
            server_rss_per_connection_bytes: Some((14_000_000 + 10_000 * clients) / clients),
            loadgen_cpu_s: 1.0,
            loadgen_peak_rss_bytes: 100_000_000,
            loadgen_lag_p99_us: 1000,
            warnings: String::new(),
            bus: "memory".into(),
            instances: 1,
            cross_instance_p50_ms: None,
            cross_instance_p99_ms: None,
            broker_cpu_s: None,
            broker_cpu_us_per_event: None,
            broker_peak_rss_bytes: None,
            queue_wait_premium_p50_ms: None,
            queue_wait_premium_p99_ms: None,
            queue_wait_normal_p50_ms: None,
            queue_wait_normal_p99_ms: None,
            jobs_redelivered: None,
            jobs_duplicated: None,
            notes: String::new(),
            loadgen_procs: 1,
            server_cpus: String::new(),
            broker_cpus: String::new(),
            loadgen_cpus: String::new(),
            write_p50_ms: None,
            write_p99_ms: None,
            publish_lateness_p99_ms: None,
            loadgen_wait_s: 0.0,
            clock_error_ms: None,
            target: "commbench".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fixture::row, *};
    use crate::pattern::Pattern;

    #[test]
    fn labels_show_only_what_varies() {
        let mut rows = vec![
            row(Pattern::Sse, 100, None),
            row(Pattern::ShortPoll, 100, Some(1.0)),
        ];
        let labeler = Labeler::new(&rows);
        assert_eq!(labeler.series(&rows[0]), "sse");
        assert_eq!(labeler.series(&rows[1]), "short-poll 1s");
        rows[1].payload_bytes = 1024;
        rows[1].warnings = "harness saturated".into();
        let labeler = Labeler::new(&rows);
        assert_eq!(labeler.cell(&rows[1]), "short-poll 1s p1024 !");
        assert!(is_flagged(&rows[1]));
        assert_eq!(flag_reason(&rows[1]), "harness saturated");
    }

    #[test]
    fn server_cpu_is_a_share_of_its_set() {
        let mut r = row(Pattern::Sse, 100, None);
        r.server_cpu_s = Some(8.0);
        assert_eq!(cpu_percent_of_set(&r), Some(80.0), "unpinned: of one core");
        r.server_cpus = "2-3".into();
        assert_eq!(cpu_percent_of_set(&r), Some(40.0));
    }

    #[test]
    fn series_group_client_counts() {
        let rows = vec![
            row(Pattern::Sse, 1000, None),
            row(Pattern::ShortPoll, 100, Some(1.0)),
            row(Pattern::Sse, 100, None),
            row(Pattern::ShortPoll, 100, Some(0.5)),
        ];
        let lines = series(&rows, &Labeler::new(&rows));
        let labels: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, ["sse", "short-poll 500ms", "short-poll 1s"]);
        assert_eq!(lines[0].1[0].clients, 100);
        assert_eq!(lines[0].1[1].clients, 1000);
        assert_eq!(client_counts(&rows), [100, 1000]);
    }
}
