//! `summary.csv`: one row per measured cell, units in the column names, read back by reports.

use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{
    csv_file::{read_rows, write_rows},
    OutputError,
};
use crate::{
    pattern::{Kind, Pattern},
    record::Metric,
    result::CellResult,
};

/// One row of `summary.csv`. Empty cells (`None`) mean "does not apply": no samples for a latency,
/// no sequence numbers for loss accounting, no process to measure for an external server, or a
/// ratio whose denominator is zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub run_id: String,
    /// `CellSpec::name()`: the prefix of this cell's `.hgrm` and `.hlog` files.
    pub cell: String,
    /// Read back strictly: a name this build does not know fails the read, naming file and value.
    pub pattern: Pattern,
    pub clients: u64,
    /// Target publish (request-response: request) rate; 0 = closed loop.
    pub rate_per_s: f64,
    pub payload_bytes: u64,
    /// Poll interval of the polling patterns.
    pub interval_s: Option<f64>,
    pub topics: u64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub measured_s: f64,
    pub complete: bool,
    /// Which histogram the headline latency columns describe: `delivery`, `round_trip`,
    /// `job_result`, or `inter_arrival` (a server that sends its own events, not the payloads).
    pub latency_metric: Option<String>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub rtt_p50_ms: Option<f64>,
    pub rtt_p99_ms: Option<f64>,
    pub rtt_uncorrected_p99_ms: Option<f64>,
    pub connect_p99_ms: Option<f64>,
    pub events_published: u64,
    pub achieved_rate_per_s: f64,
    /// Messages received in the measured window, duplicates included.
    pub events_received: u64,
    pub events_expected: Option<u64>,
    pub events_delivered: Option<u64>,
    pub events_lost: Option<u64>,
    pub events_duplicated: Option<u64>,
    pub events_out_of_order: Option<u64>,
    pub gaps: Option<u64>,
    pub requests: u64,
    pub empty_responses: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub bytes_per_event: Option<f64>,
    pub requests_per_event: Option<f64>,
    pub connections_opened: u64,
    pub connections_peak: u64,
    pub reconnects: u64,
    pub errors: u64,
    /// `kind=count` pairs joined with `; `.
    pub error_kinds: String,
    pub late_sends: u64,
    pub dropped_sends: u64,
    pub clamped_samples: u64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_per_event: Option<f64>,
    pub server_peak_rss_bytes: Option<u64>,
    pub server_rss_per_connection_bytes: Option<u64>,
    pub loadgen_cpu_s: f64,
    pub loadgen_peak_rss_bytes: u64,
    pub loadgen_lag_p99_us: u64,
    /// Joined with `; `.
    pub warnings: String,
    /// The bus between server instances: `memory` (in-process), `redis`, `rabbitmq` or `kafka`: which
    /// broker the `broker_*` columns measured. Missing in results
    /// written before scale-out existed, which were all in-process.
    #[serde(default = "memory_bus")]
    pub bus: String,
    /// Server instances the clients were balanced over; `server_*` columns add them up.
    #[serde(default = "one_instance")]
    pub instances: u64,
    /// Delivery latency of the clients on instances other than the publishing one.
    #[serde(default)]
    pub cross_instance_p50_ms: Option<f64>,
    #[serde(default)]
    pub cross_instance_p99_ms: Option<f64>,
    /// The private broker the load generator started (`bus`; empty for the in-process bus or
    /// --bus-url): the Redis, the RabbitMQ node's Erlang VM, or tansu.
    #[serde(default)]
    pub broker_cpu_s: Option<f64>,
    #[serde(default)]
    pub broker_cpu_us_per_event: Option<f64>,
    #[serde(default)]
    pub broker_peak_rss_bytes: Option<u64>,
    /// Job patterns: enqueue → first taken by a worker, per lane (the server's clock).
    #[serde(default)]
    pub queue_wait_premium_p50_ms: Option<f64>,
    #[serde(default)]
    pub queue_wait_premium_p99_ms: Option<f64>,
    #[serde(default)]
    pub queue_wait_normal_p50_ms: Option<f64>,
    #[serde(default)]
    pub queue_wait_normal_p99_ms: Option<f64>,
    /// Job patterns: redeliveries after a visibility timeout, and jobs processed more than once,
    /// among the jobs users saw done. (Submitted, completed and lost jobs are the events_expected,
    /// events_delivered and events_lost columns.)
    #[serde(default)]
    pub jobs_redelivered: Option<u64>,
    #[serde(default)]
    pub jobs_duplicated: Option<u64>,
    /// What a reader should know that does not flag the cell (`; `-separated).
    #[serde(default)]
    pub notes: String,
    /// Processes that hosted the clients (1: the runner's own; more: `--procs` or agents).
    #[serde(default = "one_instance")]
    pub loadgen_procs: u64,
    /// CPU sets (`0`, `2-3`); empty = not pinned.
    #[serde(default)]
    pub server_cpus: String,
    #[serde(default)]
    pub broker_cpus: String,
    #[serde(default)]
    pub loadgen_cpus: String,
    /// Delivery latency from the instant the publisher wrote the event (without its lateness).
    #[serde(default)]
    pub write_p50_ms: Option<f64>,
    #[serde(default)]
    pub write_p99_ms: Option<f64>,
    /// How late the publisher started writing, p99.
    #[serde(default)]
    pub publish_lateness_p99_ms: Option<f64>,
    /// Seconds the load generator's threads waited, runnable, for a CPU in the window.
    #[serde(default)]
    pub loadgen_wait_s: f64,
    /// Distributed runs: how far the agents' clocks may be from the coordinator's.
    #[serde(default)]
    pub clock_error_ms: Option<f64>,
    /// Which server the cell measured: `commbench`, a target profile's name (`node`), or
    /// `external`. Missing in results written before target profiles, which were all commbench's.
    #[serde(default = "commbench_target")]
    pub target: String,
}

fn memory_bus() -> String {
    "memory".to_owned()
}

fn commbench_target() -> String {
    crate::result::COMMBENCH.to_owned()
}

fn one_instance() -> u64 {
    1
}

impl SummaryRow {
    pub fn from_cell(run_id: &str, cell: &CellResult) -> Self {
        let spec = &cell.spec;
        let c = &cell.counters;
        let hist = |metric: Metric| cell.histograms.get(&metric).filter(|h| !h.is_empty());
        let headline = [
            Metric::Delivery,
            Metric::RoundTrip,
            Metric::JobResult,
            Metric::InterArrival,
        ]
        .into_iter()
        .find_map(|m| hist(m).map(|h| (m, h)));
        // A server sending its own events has no books to close: nothing it sent was published.
        let accounted =
            spec.pattern.counts_loss() && headline.is_none_or(|(m, _)| m != Metric::InterArrival);
        let at = |h: Option<(Metric, &Histogram<u64>)>, q: f64| h.map(|(_, h)| quantile_ms(h, q));
        let of = |metric: Metric, q: f64| hist(metric).map(|h| quantile_ms(h, q));
        let feed = |value: u64| accounted.then_some(value);
        let job = |value: u64| spec.pattern.is_job().then_some(value);
        let events = events_in_window(cell);
        let per_event = |value: f64| ratio(value, events as f64);
        let traffic = (c.bytes_up + c.bytes_down) as f64;
        Self {
            run_id: run_id.to_owned(),
            cell: spec.name(),
            pattern: spec.pattern,
            clients: spec.clients as u64,
            rate_per_s: spec.rate,
            payload_bytes: spec.payload as u64,
            interval_s: (spec.interval_s > 0.0).then_some(spec.interval_s),
            topics: spec.topics as u64,
            duration_s: spec.duration_s,
            warmup_s: spec.warmup_s,
            measured_s: round3(cell.measured_s),
            complete: cell.complete,
            latency_metric: headline.map(|(m, _)| m.name().to_owned()),
            p50_ms: at(headline, 0.5),
            p90_ms: at(headline, 0.9),
            p99_ms: at(headline, 0.99),
            p999_ms: at(headline, 0.999),
            max_ms: headline.map(|(_, h)| micros_to_ms(h.max())),
            mean_ms: headline.map(|(_, h)| h.mean().round() / 1000.0),
            rtt_p50_ms: of(Metric::RoundTrip, 0.5),
            rtt_p99_ms: of(Metric::RoundTrip, 0.99),
            rtt_uncorrected_p99_ms: of(Metric::RoundTripUncorrected, 0.99),
            connect_p99_ms: of(Metric::Connect, 0.99),
            events_published: c.published,
            achieved_rate_per_s: round3(cell.achieved_rate),
            events_received: c.events_received,
            events_expected: feed(c.events_expected),
            events_delivered: feed(c.events_delivered),
            events_lost: feed(c.events_lost),
            events_duplicated: feed(c.events_duplicated),
            events_out_of_order: feed(c.events_out_of_order),
            gaps: feed(c.gaps),
            requests: c.requests,
            empty_responses: c.empty_responses,
            bytes_up: c.bytes_up,
            bytes_down: c.bytes_down,
            bytes_per_event: per_event(traffic),
            requests_per_event: per_event(c.requests as f64),
            connections_opened: c.connections_opened,
            connections_peak: c.connections_peak,
            reconnects: c.reconnects,
            errors: c.errors,
            error_kinds: cell
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind}={n}"))
                .collect::<Vec<_>>()
                .join("; "),
            late_sends: c.late_sends,
            dropped_sends: c.dropped_sends,
            clamped_samples: c.clamped_samples,
            server_cpu_s: cell.server.map(|s| round3(s.cpu_s)),
            server_cpu_us_per_event: cell.server.and_then(|s| per_event(s.cpu_s * 1e6)),
            server_peak_rss_bytes: cell.server.map(|s| s.peak_rss_bytes),
            server_rss_per_connection_bytes: cell.server.and_then(|s| {
                (c.connections_peak > 0).then(|| s.peak_rss_bytes / c.connections_peak)
            }),
            loadgen_cpu_s: round3(cell.loadgen.cpu_s),
            loadgen_peak_rss_bytes: cell.loadgen.peak_rss_bytes,
            loadgen_lag_p99_us: cell.loadgen_lag_p99_us,
            warnings: cell.warnings.join("; "),
            bus: spec.bus.to_string(),
            instances: spec.instances as u64,
            cross_instance_p50_ms: of(Metric::CrossInstance, 0.5),
            cross_instance_p99_ms: of(Metric::CrossInstance, 0.99),
            broker_cpu_s: cell.broker.map(|b| round3(b.cpu_s)),
            broker_cpu_us_per_event: cell.broker.and_then(|b| per_event(b.cpu_s * 1e6)),
            broker_peak_rss_bytes: cell.broker.map(|b| b.peak_rss_bytes),
            queue_wait_premium_p50_ms: of(Metric::QueueWaitPremium, 0.5),
            queue_wait_premium_p99_ms: of(Metric::QueueWaitPremium, 0.99),
            queue_wait_normal_p50_ms: of(Metric::QueueWaitNormal, 0.5),
            queue_wait_normal_p99_ms: of(Metric::QueueWaitNormal, 0.99),
            jobs_redelivered: job(c.jobs_redelivered),
            jobs_duplicated: job(c.jobs_duplicated),
            notes: cell.notes.join("; "),
            loadgen_procs: cell.placement.procs.max(1) as u64,
            server_cpus: set(&cell.placement.server_cpus),
            broker_cpus: set(&cell.placement.broker_cpus),
            loadgen_cpus: set(&cell.placement.loadgen_cpus),
            write_p50_ms: of(Metric::DeliveryFromWrite, 0.5),
            write_p99_ms: of(Metric::DeliveryFromWrite, 0.99),
            publish_lateness_p99_ms: of(Metric::PublishLateness, 0.99),
            loadgen_wait_s: round3(cell.loadgen.wait_s),
            clock_error_ms: cell.placement.clock_error_us.map(|us| round3(us / 1_000.0)),
            target: spec.target.clone(),
        }
    }
}

fn set(cpus: &Option<crate::pin::CpuList>) -> String {
    cpus.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// The denominator of the per-event costs: messages received in the measured window (the same
/// window as the byte and CPU counts); for request-response each response is the event.
pub fn events_in_window(cell: &CellResult) -> u64 {
    match cell.spec.pattern.kind() {
        Kind::Request => cell.counters.requests,
        Kind::FeedPush | Kind::FeedPoll(_) | Kind::Job | Kind::External => {
            cell.counters.events_received
        }
    }
}

fn quantile_ms(h: &Histogram<u64>, quantile: f64) -> f64 {
    micros_to_ms(h.value_at_quantile(quantile))
}

fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// `value / per`, rounded to 3 decimals; `None` when `per` is zero or the result is not finite.
fn ratio(value: f64, per: f64) -> Option<f64> {
    let result = value / per;
    (per > 0.0 && result.is_finite()).then(|| round3(result))
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Writes `summary.csv` with a header and one row per cell.
pub fn write_summary(path: &Path, run_id: &str, cells: &[CellResult]) -> Result<(), OutputError> {
    write_rows(
        path,
        cells.iter().map(|cell| SummaryRow::from_cell(run_id, cell)),
    )
}

/// Reads a `summary.csv` back; the error names the file and the row or column at fault.
pub fn read_summary(path: &Path) -> Result<Vec<SummaryRow>, OutputError> {
    read_rows(path, "summary")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_util::{sample_cell, temp_path};

    #[test]
    fn csv_round_trips() {
        let path = temp_path("summary.csv");
        let mut external = sample_cell(Pattern::Sse, true);
        external.server = None;
        external.warnings = vec!["one, with comma".into(), "two \"quoted\"".into()];
        let cells = [
            sample_cell(Pattern::Ws, true),
            sample_cell(Pattern::RequestResponse, false),
            external,
        ];
        write_summary(&path, "run-1", &cells).unwrap();
        let back = read_summary(&path).unwrap();
        let expected: Vec<_> = cells
            .iter()
            .map(|c| SummaryRow::from_cell("run-1", c))
            .collect();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back, expected);
        assert_eq!(back[2].server_cpu_s, None);
        assert_eq!(back[2].warnings, "one, with comma; two \"quoted\"");
        assert_eq!(
            back[1].events_lost, None,
            "request-response has no loss accounting"
        );
        assert_eq!(back[0].latency_metric.as_deref(), Some("delivery"));
        assert_eq!(back[1].latency_metric.as_deref(), Some("round_trip"));
    }

    #[test]
    fn per_event_columns_follow_their_inputs() {
        let mut cell = sample_cell(Pattern::Sse, true);
        cell.counters.bytes_up = 1_000;
        cell.counters.bytes_down = 9_000;
        cell.counters.events_received = 100;
        assert_eq!(
            SummaryRow::from_cell("r", &cell).bytes_per_event,
            Some(100.0)
        );
        cell.counters.bytes_down = 19_000;
        assert_eq!(
            SummaryRow::from_cell("r", &cell).bytes_per_event,
            Some(200.0)
        );
        cell.counters.events_received = 0;
        let row = SummaryRow::from_cell("r", &cell);
        assert_eq!(row.bytes_per_event, None);
        assert_eq!(row.server_cpu_us_per_event, None);
    }

    #[test]
    fn latency_columns_are_milliseconds() {
        let row = SummaryRow::from_cell("r", &sample_cell(Pattern::Sse, true));
        // sample_cell records 1..=1000 ms into Delivery.
        let p50 = row.p50_ms.unwrap();
        assert!((499.0..=501.0).contains(&p50), "p50 = {p50}");
        assert!((999.0..=1001.0).contains(&row.max_ms.unwrap()));
    }

    #[test]
    fn reading_a_bad_file_names_it() {
        let path = temp_path("bad-summary.csv");
        std::fs::write(&path, "run_id,cell\nx,y\n").unwrap();
        let error = read_summary(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.contains("bad-summary.csv"), "{error}");
        assert!(error.contains("missing field"), "{error}");
    }

    #[test]
    fn results_written_before_the_target_column_still_load() {
        let path = temp_path("old-summary.csv");
        let mut peer = sample_cell(Pattern::Ws, true);
        peer.spec.target = "node".into();
        write_summary(&path, "r", &[sample_cell(Pattern::Sse, true), peer]).unwrap();
        let back = read_summary(&path).unwrap();
        assert_eq!(
            (back[0].target.as_str(), back[1].target.as_str()),
            ("commbench", "node")
        );
        assert_eq!(back[1].cell, "ws-c1000-r50-p128-node");
        // Drop the last column (`target`), as files from before target profiles lack it.
        let text = std::fs::read_to_string(&path).unwrap();
        let old: String = text
            .lines()
            .map(|line| format!("{}\n", &line[..line.rfind(',').unwrap()]))
            .collect();
        assert!(old.lines().next().unwrap().ends_with("clock_error_ms"));
        std::fs::write(&path, old).unwrap();
        let back = read_summary(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(back.iter().all(|r| r.target == "commbench"), "{back:?}");
    }

    #[test]
    fn a_server_sending_its_own_events_has_inter_arrival_and_no_books() {
        let mut cell = sample_cell(Pattern::SseUrl, true);
        let delivery = cell.histograms.remove(&Metric::Delivery).unwrap();
        cell.histograms.insert(Metric::InterArrival, delivery);
        let row = SummaryRow::from_cell("r", &cell);
        assert_eq!(row.latency_metric.as_deref(), Some("inter_arrival"));
        assert!(row.p99_ms.is_some());
        assert_eq!((row.events_expected, row.events_lost), (None, None));
        let mut cell = sample_cell(Pattern::Sse, true);
        let delivery = cell.histograms.remove(&Metric::Delivery).unwrap();
        cell.histograms.insert(Metric::InterArrival, delivery);
        let row = SummaryRow::from_cell("r", &cell);
        assert_eq!(
            (row.latency_metric.as_deref(), row.events_lost),
            (Some("inter_arrival"), None)
        );
    }

    #[test]
    fn an_unknown_pattern_names_the_file_and_the_value() {
        let path = temp_path("future-summary.csv");
        write_summary(&path, "r", &[sample_cell(Pattern::Sse, true)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace(",sse,", ",carrier-pigeon,")).unwrap();
        let error = read_summary(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.contains("future-summary.csv"), "{error}");
        assert!(
            error.contains("unknown pattern `carrier-pigeon`"),
            "{error}"
        );
    }
}
