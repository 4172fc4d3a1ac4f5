//! Measured vs model: each polling cell's numbers beside the analytic model's, deviations flagged.

use std::collections::BTreeMap;

use super::{
    cells::{self, Labeler},
    fmt,
    load::RunData,
    model::{self, Arrival, Compare, ResponseBytes, TrafficSample},
};
use crate::{
    output::SummaryRow,
    pattern::{Envelope, Kind, Pattern},
};

/// One measured quantity next to its model value.
#[derive(Debug, Clone)]
pub struct ModelRow {
    /// Cell label (`short-poll 1s`, with `!` when the cell is flagged).
    pub label: String,
    pub clients: u64,
    /// The model's inputs, in words: `λ=5/s, T=1s, RTT=2.3 ms`.
    pub inputs: String,
    pub quantity: &'static str,
    pub measured: f64,
    pub model: f64,
    pub compare: Compare,
    /// Measured further than the tolerance from the model.
    pub deviates: bool,
    /// Units appended to numbers: ` ms`, ` B`, `%` (fractions are shown as percentages).
    pub unit: &'static str,
}

impl ModelRow {
    /// The deviation in percent (relative) or percentage points (absolute); `None` when a
    /// relative deviation is undefined (a model value of 0).
    pub fn deviation(&self) -> Option<f64> {
        match self.compare {
            Compare::Absolute => Some((self.measured - self.model) * 100.0),
            Compare::Relative => {
                model::relative_deviation(self.measured, self.model).map(|d| d * 100.0)
            }
        }
    }

    /// The deviation as text: relative (`+12%`) or absolute in percentage points (`+12 pp`).
    pub fn deviation_text(&self) -> String {
        let unit = match self.compare {
            Compare::Absolute => " pp",
            Compare::Relative => "%",
        };
        self.deviation().map_or_else(
            || "-".to_owned(),
            |d| format!("{}{unit}", fmt::signed_one_decimal(d)),
        )
    }

    /// A value of this row formatted with its unit.
    pub fn value_text(&self, value: f64) -> String {
        match self.unit {
            "%" => fmt::percent(value),
            unit => format!("{}{unit}", fmt::num(value)),
        }
    }
}

/// The measured-vs-model comparison of a run.
#[derive(Debug, Clone, Default)]
pub struct ModelTable {
    pub rows: Vec<ModelRow>,
    /// How the inputs were chosen and how per-request bytes were derived.
    pub method: Vec<String>,
}

impl ModelTable {
    /// Rows whose measurement deviates from the model beyond the tolerance.
    pub fn deviating(&self) -> impl Iterator<Item = &ModelRow> {
        self.rows.iter().filter(|r| r.deviates)
    }
}

/// The scenario's arrival process and long-poll timeout, with where they came from.
fn inputs(data: &RunData) -> (Arrival, f64, Vec<String>) {
    let mut notes = Vec::new();
    let arrival = match data
        .meta
        .scenario_text("arrival")
        .and_then(|t| Arrival::parse(&t))
    {
        Some(a) => a,
        None => {
            notes.push(
                "run.json gives no arrival process; the model assumes the default, fixed."
                    .to_owned(),
            );
            Arrival::Fixed
        }
    };
    let timeout = match data.meta.scenario.get("long_poll_timeout") {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => commbench_servers::units::parse_duration(s)
            .ok()
            .map(|d| d.as_secs_f64()),
        _ => None,
    };
    let timeout = timeout.unwrap_or_else(|| {
        notes.push(
            "run.json gives no single long-poll timeout; the model assumes the default, 30 s."
                .to_owned(),
        );
        30.0
    });
    (arrival, timeout, notes)
}

/// The envelope a polling cell's answers come in, or `None` when the cell does not poll the feed
/// (short- and long-poll answer with the same JSON batch, GraphQL polling wraps it in its own).
fn envelope(row: &SummaryRow) -> Option<Envelope> {
    match row.pattern.kind() {
        Kind::FeedPoll(envelope) => Some(envelope),
        Kind::FeedPush | Kind::Request | Kind::Job | Kind::External => None,
    }
}

/// The patterns the model covers (those that poll the feed), in their listed order.
pub fn modelled_patterns() -> Vec<&'static str> {
    Pattern::ALL
        .into_iter()
        .filter(|p| matches!(p.kind(), Kind::FeedPoll(_)))
        .map(Pattern::as_str)
        .collect()
}

/// A fit's key: payload size and envelope.
type FitKey = (u64, Envelope);

/// Splits response bytes per payload size and envelope: `bytes_down = a·requests + b·events` over
/// the polling cells of that payload whose answers share an envelope.
fn byte_fits(rows: &[SummaryRow]) -> BTreeMap<FitKey, (usize, Option<ResponseBytes>)> {
    let mut samples: BTreeMap<FitKey, Vec<TrafficSample>> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| r.requests > 0 && r.events_received > 0)
    {
        let Some(envelope) = envelope(row) else {
            continue;
        };
        samples
            .entry((row.payload_bytes, envelope))
            .or_default()
            .push(TrafficSample {
                requests: row.requests as f64,
                events: row.events_received as f64,
                bytes_down: row.bytes_down as f64,
            });
    }
    samples
        .into_iter()
        .map(|(key, s)| (key, (s.len(), model::fit_response_bytes(&s))))
        .collect()
}

/// Builds the measured-vs-model table of every polling cell (short, long and GraphQL polling).
pub fn model_table(data: &RunData, labeler: &Labeler) -> ModelTable {
    let (arrival, timeout_s, mut method) = inputs(data);
    let arrival_text = match arrival {
        Arrival::Fixed => "fixed (evenly spaced) arrivals",
        Arrival::Poisson => "Poisson arrivals",
    };
    method.insert(
        0,
        format!(
            "Inputs per cell: λ = publish rate ÷ topics (events per second on one client's topic), \
             T = the cell's poll interval, RTT = the cell's median poll round trip (rtt_p50_ms), \
             long-poll timeout τ = {}, {arrival_text}.",
            fmt::interval(timeout_s)
        ),
    );
    let fits = byte_fits(&data.rows);
    for ((payload, envelope), (cells, fit)) in &fits {
        let Envelope {
            name: envelope,
            request,
        } = envelope;
        method.push(match fit {
            Some(fit) => format!(
                "Bytes, payload {payload} B, {envelope} cells: upload per request = bytes_up ÷ \
                 requests of each cell ({request}). Download is split by a least-squares fit of \
                 bytes_down = a·requests + b·events over the {cells} {envelope} cells: a = {} B \
                 per response (status line, headers, empty JSON envelope), b = {} B per event. An \
                 empty poll therefore costs upload + {} B, a non-empty one {} B more per event it \
                 carries.{}",
                fmt::num(fit.per_response),
                fmt::num(fit.per_event),
                fmt::num(fit.per_response),
                fmt::num(fit.per_event),
                if fit.cells == 2 {
                    " With exactly two cells the fit reproduces both cells' bytes, so their \
                     bytes rows only test the requests-per-event model."
                } else {
                    ""
                }
            ),
            None => format!(
                "Bytes, payload {payload} B, {envelope} cells: not modelled: separating \
                 per-response from per-event bytes needs at least two {envelope} cells with \
                 different requests per event (found {cells})."
            ),
        });
    }
    let mut polled: Vec<&SummaryRow> = data.rows.iter().filter(|r| envelope(r).is_some()).collect();
    cells::sort_rows(&mut polled);
    let mut rows = Vec::new();
    for row in polled {
        let fit = envelope(row)
            .and_then(|envelope| fits.get(&(row.payload_bytes, envelope)))
            .and_then(|(_, fit)| *fit);
        rows.extend(cell_rows(row, labeler, arrival, timeout_s, fit));
    }
    ModelTable { rows, method }
}

fn cell_rows(
    row: &SummaryRow,
    labeler: &Labeler,
    arrival: Arrival,
    timeout_s: f64,
    fit: Option<ResponseBytes>,
) -> Vec<ModelRow> {
    let Some(lambda) = cells::lambda_per_client(row) else {
        return Vec::new();
    };
    let label = labeler.cell(row);
    let mut out = Vec::new();
    let mut push = |inputs: &str,
                    quantity: &'static str,
                    unit: &'static str,
                    measured: Option<f64>,
                    model: Option<f64>,
                    compare: Compare| {
        if let (Some(measured), Some(model)) = (measured, model) {
            out.push(ModelRow {
                label: label.clone(),
                clients: row.clients,
                inputs: inputs.to_owned(),
                quantity,
                measured,
                model,
                compare,
                deviates: model::deviates(measured, model, compare),
                unit,
            });
        }
    };
    let empty_fraction =
        (row.requests > 0).then(|| row.empty_responses as f64 / row.requests as f64);
    let bytes_model = |requests_per_event: Option<f64>| {
        let fit = fit?;
        if row.requests == 0 {
            return None;
        }
        let up = row.bytes_up as f64 / row.requests as f64;
        requests_per_event
            .map(|rpe| model::polling_bytes_per_event(rpe, up + fit.per_response, fit.per_event))
    };
    let delivery = row.latency_metric.as_deref() == Some("delivery");
    // A feed poller on an interval follows short polling's model (GraphQL polling keeps its
    // schedule; only its envelope differs); one that waits for the next event, long polling's.
    let poller = envelope(row).map(|_| row.pattern.polls_on_interval());
    match (poller, row.interval_s) {
        (Some(true), Some(t)) => {
            let rtt = row.rtt_p50_ms;
            let inputs = format!(
                "λ={}/s, T={}, RTT={}",
                fmt::num(lambda),
                fmt::interval(t),
                rtt.map_or_else(|| "?".to_owned(), |r| format!("{} ms", fmt::num(r)))
            );
            let staleness = |f: &dyn Fn(f64) -> f64| rtt.filter(|_| delivery).map(f);
            push(
                &inputs,
                "mean staleness = T/2 + RTT",
                " ms",
                row.mean_ms,
                staleness(&|r| model::short_poll_mean_staleness_ms(t, r)),
                Compare::Relative,
            );
            push(
                &inputs,
                "p99 staleness ≈ 0.99·T + RTT",
                " ms",
                row.p99_ms,
                staleness(&|r| model::short_poll_staleness_quantile_ms(0.99, t, r)),
                Compare::Relative,
            );
            let rpe = model::short_poll_requests_per_event(lambda, t);
            push(
                &inputs,
                "polls per event = 1/(λT)",
                "",
                row.requests_per_event,
                rpe,
                Compare::Relative,
            );
            push(
                &inputs,
                "empty polls",
                "%",
                empty_fraction,
                Some(model::short_poll_empty_fraction(lambda, t, arrival)),
                Compare::Absolute,
            );
            push(
                &inputs,
                "bytes per event",
                " B",
                row.bytes_per_event,
                bytes_model(rpe),
                Compare::Relative,
            );
        }
        (Some(false), _) => {
            let inputs = format!("λ={}/s, τ={}", fmt::num(lambda), fmt::interval(timeout_s));
            let rpe = model::long_poll_requests_per_event(lambda, timeout_s, arrival);
            push(
                &inputs,
                "polls per event ≈ 1/(1 − timeouts)",
                "",
                row.requests_per_event,
                rpe,
                Compare::Relative,
            );
            push(
                &inputs,
                "timed-out polls",
                "%",
                empty_fraction,
                Some(model::long_poll_timeout_fraction(
                    lambda, timeout_s, arrival,
                )),
                Compare::Absolute,
            );
            push(
                &inputs,
                "bytes per event",
                " B",
                row.bytes_per_event,
                bytes_model(rpe),
                Compare::Relative,
            );
        }
        (Some(true), None) | (None, _) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;
    use crate::report::{cells::fixture::row, load::RunMeta};

    fn data(rows: Vec<SummaryRow>) -> RunData {
        RunData {
            dir: std::env::temp_dir(),
            meta: RunMeta {
                run_id: "r".into(),
                scenario: serde_json::json!({"arrival": "fixed", "long_poll_timeout": 30.0}),
                ..RunMeta::default()
            },
            rows,
            scale_out_rows: Vec::new(),
            job_rows: Vec::new(),
            peer_rows: Vec::new(),
            capacity: Vec::new(),
        }
    }

    fn short_poll(interval: f64, mean_ms: f64) -> SummaryRow {
        let mut r = row(Pattern::ShortPoll, 50, Some(interval));
        r.rtt_p50_ms = Some(2.0);
        r.mean_ms = Some(mean_ms);
        r.p99_ms = Some(0.99 * interval * 1000.0 + 2.0);
        // 20 events/s, 50 clients, 10 s.
        r.events_received = 10_000;
        r.requests = (50.0 * 10.0 / interval) as u64;
        r.requests_per_event = Some(r.requests as f64 / 10_000.0);
        r.bytes_up = 67 * r.requests;
        r.bytes_down = 180 * r.requests + 170 * 10_000;
        r.bytes_per_event = Some((r.bytes_up + r.bytes_down) as f64 / 10_000.0);
        r
    }

    #[test]
    fn matching_cells_are_not_flagged_and_deviating_ones_are() {
        let rows = vec![short_poll(0.5, 252.0), short_poll(1.0, 700.0)];
        let data = data(rows);
        let table = model_table(&data, &Labeler::new(&data.rows));
        let find = |label: &str, quantity: &str| {
            table
                .rows
                .iter()
                .find(|r| r.label == label && r.quantity.starts_with(quantity))
                .unwrap()
                .clone()
        };
        let fast_mean = find("short-poll 500ms", "mean staleness");
        assert_eq!(fast_mean.model, 252.0);
        assert!(!fast_mean.deviates);
        let slow_mean = find("short-poll 1s", "mean staleness");
        assert_eq!(slow_mean.model, 502.0);
        assert!(slow_mean.deviates, "700 vs 502 ms is beyond 10%");
        assert_eq!(slow_mean.deviation_text(), "+39.4%");
        let polls = find("short-poll 1s", "polls per event");
        assert!((polls.model - 0.05).abs() < 1e-12);
        assert!(!polls.deviates);
        let bytes = find("short-poll 1s", "bytes per event");
        assert!(!bytes.deviates, "{bytes:?}");
        assert!(table
            .method
            .iter()
            .any(|m| m.contains("a = 180 B per response")));
        assert_eq!(table.deviating().count(), 1);
    }

    #[test]
    fn graphql_polling_follows_the_short_poll_model_with_its_own_bytes() {
        let graphql = |interval: f64| {
            let mut r = short_poll(interval, interval * 500.0 + 2.0);
            r.pattern = Pattern::GraphqlPoll;
            r.bytes_up = 250 * r.requests;
            r.bytes_down = 300 * r.requests + 230 * 10_000;
            r.bytes_per_event = Some((r.bytes_up + r.bytes_down) as f64 / 10_000.0);
            r
        };
        let rows = vec![
            short_poll(0.5, 252.0),
            short_poll(1.0, 502.0),
            graphql(0.5),
            graphql(1.0),
        ];
        let data = data(rows);
        let table = model_table(&data, &Labeler::new(&data.rows));
        let graphql_rows: Vec<&ModelRow> = table
            .rows
            .iter()
            .filter(|r| r.label.starts_with("graphql-poll"))
            .collect();
        // Staleness (mean, p99), polls per event, empty polls and bytes, per interval.
        assert_eq!(graphql_rows.len(), 10);
        assert!(graphql_rows.iter().all(|r| !r.deviates), "{graphql_rows:?}");
        // Each envelope gets its own split of response bytes.
        let fitted = |text: &str| table.method.iter().any(|m| m.contains(text));
        assert!(fitted("short-/long-poll cells") && fitted("a = 180 B per response"));
        assert!(fitted("graphql-poll cells") && fitted("a = 300 B per response"));
        assert!(fitted("b = 230 B per event"));
    }

    #[test]
    fn long_poll_expects_one_poll_per_event() {
        let mut lp = row(Pattern::LongPoll, 50, None);
        lp.requests = 10_000;
        lp.events_received = 10_000;
        lp.requests_per_event = Some(1.0);
        let data = data(vec![lp]);
        let table = model_table(&data, &Labeler::new(&data.rows));
        let polls = &table.rows[0];
        assert_eq!(polls.model, 1.0);
        assert!(!polls.deviates);
        assert!(table.method.iter().any(|m| m.contains("not modelled")));
    }
}
