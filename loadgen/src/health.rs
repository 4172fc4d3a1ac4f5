//! Harness health: a cell is flagged only when a figure the report draws or quotes would
//! otherwise mislead — the load generator saturated, its timers or the publisher late by a
//! meaningful share of the latency it reports, the rate not reached, clients or a load worker
//! missing, errors beyond noise — and each flag names the figure. What a reader should know but
//! does not make a figure wrong (a few late publishes, a server at its CPU set's limit) is a note.

use hdrhistogram::Histogram;

use crate::{pattern::Kind, record::Metric, result::CellResult, scenario::Scenario};

/// The load generator is saturated above this share of its CPU set.
const SATURATED: f64 = 0.85;
/// … or when its set was busy this much of the window (other processes too) …
const SET_BUSY: f64 = 0.95;
/// … while its threads waited, runnable, this share of the window for a CPU of it.
const STARVED: f64 = 0.25;
/// Harness delay below this is noise on any figure the report draws (its axes are milliseconds).
const NOISE_US: u64 = 1_000;
/// A harness delay is meaningful above this share of the latency figure it sits in.
const MEANINGFUL_SHARE: f64 = 0.2;
/// Errors are noise below one in this many operations.
const ERRORS_PER: u64 = 1_000;

/// The start of each flag whose kind is read back from its text by [`kind_of`].
const SHARED_FLAG: &str = "latency and CPU figures: servers, broker and load generator shared";
const CLIENTS_FLAG: &str = "the client count:";
const STOPPED_FLAG: &str = "every figure: stopped early";
const ERRORS_FLAG: &str = "loss and latency:";

/// What a flag is about, read back from its text (every text is written in this file): `commbench
/// capacity` judges a step by who may have caused what it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// The harness: the load generator's CPU set, its timers, the publisher's lateness, the rate
    /// not reached, a lost load worker, clocks across machines. It may have caused the rest.
    Harness,
    /// Servers and load generator on the same CPUs (unpinned), which they saturated together.
    SharedCpus,
    /// Clients that did not start.
    MissingClients,
    /// Errors: many, or `--max-errors` reached.
    Errors,
}

/// The kind of a flag [`assess`] wrote.
pub fn kind_of(flag: &str) -> FlagKind {
    if flag.starts_with(SHARED_FLAG) {
        FlagKind::SharedCpus
    } else if flag.starts_with(CLIENTS_FLAG) {
        FlagKind::MissingClients
    } else if flag.starts_with(STOPPED_FLAG) || flag.starts_with(ERRORS_FLAG) {
        FlagKind::Errors
    } else {
        FlagKind::Harness
    }
}

/// What the harness's health says about a cell.
#[derive(Debug, Default, PartialEq)]
pub struct Health {
    /// Each names a figure that would mislead, and why: the cell is flagged.
    pub flags: Vec<String>,
    /// Worth knowing, not misleading.
    pub notes: Vec<String>,
}

/// Assesses a measured cell; `ready` is how many clients started.
pub fn assess(result: &CellResult, scenario: &Scenario, ready: usize) -> Health {
    let mut health = Health::default();
    let window = result.measured_s.max(1e-9);
    let place = &result.placement;
    let set = place.loadgen_cpu_count.max(1) as f64;
    let set_name = place.loadgen_cpus.as_ref().map_or_else(
        || format!("all {set} CPUs"),
        |s| format!("its CPU set ({s})"),
    );
    let ran = result.loadgen.cpu_s / window / set;
    let waited = result.loadgen.wait_s / window / set;
    let busy = place.loadgen_set_busy.unwrap_or(ran);
    if ran > SATURATED || (busy > SET_BUSY && waited > STARVED) {
        health.flags.push(format!(
            "every figure: the load generator was saturated: {set_name} was busy {:.0}% of the \
             window, the load generator ran {:.0}% of it and waited for a CPU {:.0}% more",
            busy.max(ran) * 100.0,
            ran * 100.0,
            waited * 100.0
        ));
    }
    if let (false, Some(server)) = (place.separated, result.server) {
        let broker = result.broker.map_or(0.0, |b| b.cpu_s);
        let cores = place.loadgen_cpu_count.max(1) as f64;
        let machine = (server.cpu_s + broker + result.loadgen.cpu_s) / window / cores;
        if machine > 0.9 {
            health.flags.push(format!(
                "{SHARED_FLAG} {cores} CPUs and used {:.0}% of them (unpinned), so each slowed \
                 the others",
                machine * 100.0
            ));
        }
    }
    let headline = headline(result);
    let lag_us = result.loadgen_lag_p99_us;
    if let Some((metric, p99)) = headline {
        // The load generator's own delay sits in the latency it measures from receipt; compare
        // it with the latency without the publisher's part when there is one.
        let reference = histogram_p99(result, Metric::DeliveryFromWrite)
            .filter(|_| metric == Metric::Delivery)
            .unwrap_or(p99)
            .max(1);
        if lag_us > NOISE_US && lag_us as f64 > MEANINGFUL_SHARE * reference as f64 {
            health.flags.push(format!(
                "p99 {} ({}): the load generator was up to {} late (p99) to run what woke it, {:.0}% of it",
                metric.name(),
                ms(p99),
                ms(lag_us),
                lag_us as f64 / reference as f64 * 100.0
            ));
        }
        if metric == Metric::Delivery {
            if let Some(from_write) = histogram_p99(result, Metric::DeliveryFromWrite) {
                let publisher = p99.saturating_sub(from_write);
                if publisher > NOISE_US.max((MEANINGFUL_SHARE * p99 as f64) as u64) {
                    let late = histogram_p99(result, Metric::PublishLateness).unwrap_or(0);
                    health.flags.push(format!(
                        "p99 delivery ({}): {} of it is the publisher's own lateness (from the \
                         write it is {}; publishes started up to {} late, p99)",
                        ms(p99),
                        ms(publisher),
                        ms(from_write),
                        ms(late)
                    ));
                }
            }
        }
        if let Some(error_us) = place.clock_error_us {
            let p50 = quantile(result, metric, 0.5).unwrap_or(p99);
            if error_us > 0.1 * p50 as f64 {
                health.flags.push(format!(
                    "latency figures: clocks across machines agree only within ±{} (p50 is {})",
                    ms(error_us as u64),
                    ms(p50)
                ));
            }
        }
    }
    let target = result.spec.rate;
    let open_loop = target > 0.0
        && (result.spec.pattern.counts_loss() || result.spec.pattern.kind() == Kind::Request);
    if open_loop && result.complete && result.achieved_rate < target * 0.95 {
        health.flags.push(format!(
            "the rate: achieved {:.1}/s of the {target}/s target, so every figure describes a \
             lighter load",
            result.achieved_rate
        ));
    }
    if ready < scenario.clients {
        health.flags.push(format!(
            "{CLIENTS_FLAG} only {ready} of {} clients started",
            scenario.clients
        ));
    }
    for lost in &place.lost {
        health.flags.push(format!(
            "loss and every count: {} ({} clients) was lost mid-run ({}); its clients' events \
             are counted lost",
            lost.name, lost.clients, lost.why
        ));
    }
    let c = &result.counters;
    let operations = scenario.clients as u64 + c.requests + c.events_received;
    if scenario.max_errors > 0 && c.errors >= scenario.max_errors {
        health.flags.push(format!(
            "{STOPPED_FLAG}, {} errors reached --max-errors",
            c.errors
        ));
    } else if c.errors * ERRORS_PER > operations {
        health.flags.push(format!(
            "{ERRORS_FLAG} {} errors, more than 1 in {ERRORS_PER} operations; they cover only \
             what got through",
            c.errors
        ));
    } else if c.errors > 0 {
        health.notes.push(format!("{} errors", c.errors));
    }
    if c.late_sends > 0 {
        health.notes.push(format!(
            "{} of {} publishes started more than 5 ms late",
            c.late_sends, c.published
        ));
    }
    if let (Some(server), Some(cpus)) = (result.server, &place.server_cpus) {
        let share = server.cpu_s / window / cpus.len().max(1) as f64;
        if share > 0.9 {
            health.notes.push(format!(
                "the servers used {:.0}% of their CPU set ({cpus}): their latency includes \
                 queueing for CPU",
                share * 100.0
            ));
        }
    }
    health
}

/// The headline metric (as `summary.csv` chooses it) and its p99 in µs.
fn headline(result: &CellResult) -> Option<(Metric, u64)> {
    [Metric::Delivery, Metric::RoundTrip, Metric::JobResult]
        .into_iter()
        .find_map(|m| histogram_p99(result, m).map(|p99| (m, p99)))
}

fn histogram(result: &CellResult, metric: Metric) -> Option<&Histogram<u64>> {
    result.histograms.get(&metric).filter(|h| !h.is_empty())
}

fn quantile(result: &CellResult, metric: Metric, q: f64) -> Option<u64> {
    histogram(result, metric).map(|h| h.value_at_quantile(q))
}

fn histogram_p99(result: &CellResult, metric: Metric) -> Option<u64> {
    quantile(result, metric, 0.99)
}

/// µs as `12.3 ms` / `850 µs`.
fn ms(micros: u64) -> String {
    if micros >= 1_000 {
        format!("{:.1} ms", micros as f64 / 1_000.0)
    } else {
        format!("{micros} µs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        output::test_util::sample_cell, pattern::Pattern, pin::CpuList, procs::pool::LostWorker,
        record::new_histogram, scenario::RawScenario,
    };

    fn scenario() -> Scenario {
        let mut raw = RawScenario::default();
        raw.set_flag("clients", "1000");
        raw.validate().unwrap()
    }

    /// A cell whose harness kept up: pinned, little CPU, no lag, the rate reached.
    fn healthy() -> CellResult {
        let mut cell = sample_cell(Pattern::Sse, true);
        cell.loadgen.cpu_s = 0.1;
        cell.server.as_mut().unwrap().cpu_s = 0.1;
        cell.counters.errors = 0;
        cell.placement.loadgen_cpus = Some("0".parse().unwrap());
        cell.placement.server_cpus = Some("1".parse().unwrap());
        cell.placement.loadgen_cpu_count = 1;
        cell.placement.separated = true;
        cell
    }

    fn flags(cell: &CellResult, ready: usize) -> Vec<String> {
        assess(cell, &scenario(), ready).flags
    }

    fn with_latency(cell: &mut CellResult, metric: Metric, ms: u64) {
        let mut h = new_histogram();
        for _ in 0..100 {
            h.record(ms * 1_000).unwrap();
        }
        cell.histograms.insert(metric, h);
    }

    #[test]
    fn a_healthy_cell_has_no_flag() {
        assert_eq!(flags(&healthy(), 1000), Vec::<String>::new());
    }

    #[test]
    fn a_saturated_load_generator_is_flagged_against_its_own_set() {
        let mut cell = healthy();
        cell.loadgen.cpu_s = 27.0; // of a 30 s window on one CPU
        let text = flags(&cell, 1000);
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].contains("saturated") && text[0].contains("its CPU set (0) was busy 90%"),
            "{text:?}"
        );
        // Starved by other processes on its set: ran little, waited long, the set never idle.
        let mut cell = healthy();
        cell.loadgen.cpu_s = 10.0;
        cell.loadgen.wait_s = 12.0;
        assert_eq!(
            flags(&cell, 1000),
            Vec::<String>::new(),
            "the set had idle time"
        );
        cell.placement.loadgen_set_busy = Some(0.99);
        assert!(flags(&cell, 1000)[0].contains("waited for a CPU 40% more"));
    }

    #[test]
    fn harness_delay_flags_only_when_it_is_a_meaningful_share_of_the_figure() {
        let mut cell = healthy();
        with_latency(&mut cell, Metric::Delivery, 1_000);
        cell.loadgen_lag_p99_us = 18_000;
        assert_eq!(flags(&cell, 1000), Vec::<String>::new(), "18 ms of 1 s");
        with_latency(&mut cell, Metric::Delivery, 20);
        with_latency(&mut cell, Metric::DeliveryFromWrite, 15);
        let text = flags(&cell, 1000);
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0]
                .starts_with("p99 delivery (20.0 ms): the load generator was up to 18.0 ms late"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with(
                "p99 delivery (20.0 ms): 5.0 ms of it is the publisher's own lateness"
            ),
            "{text:?}"
        );
        // Noise is not a flag, however small the latency.
        cell.loadgen_lag_p99_us = 900;
        with_latency(&mut cell, Metric::DeliveryFromWrite, 20);
        assert_eq!(flags(&cell, 1000), Vec::<String>::new());
    }

    #[test]
    fn each_other_sign_names_its_figure() {
        let mut cell = healthy();
        cell.achieved_rate = 40.0;
        cell.counters.late_sends = 20;
        cell.counters.errors = 2;
        cell.placement.lost.push(LostWorker {
            index: 1,
            name: "load worker 1 (pid 7)".into(),
            clients: 500,
            why: "it exited (signal: 9)".into(),
        });
        let health = assess(&cell, &scenario(), 900);
        assert_eq!(
            health.flags,
            [
                "the rate: achieved 40.0/s of the 50/s target, so every figure describes a lighter load",
                "the client count: only 900 of 1000 clients started",
                "loss and every count: load worker 1 (pid 7) (500 clients) was lost mid-run (it exited (signal: 9)); its clients' events are counted lost",
            ]
        );
        assert_eq!(
            health.notes,
            [
                "2 errors",
                "20 of 1500 publishes started more than 5 ms late"
            ]
        );
        // A run cut short is not blamed on the rate.
        cell.complete = false;
        assert!(!flags(&cell, 1000).iter().any(|w| w.contains("target")));
        cell.counters.errors = 5_000;
        assert!(flags(&cell, 1000).iter().any(|w| w.contains("5000 errors")));
    }

    #[test]
    fn each_flag_is_read_back_as_its_kind() {
        let mut cell = healthy();
        cell.achieved_rate = 40.0;
        cell.counters.errors = 5_000;
        cell.loadgen.cpu_s = 27.0;
        let kinds: Vec<FlagKind> = flags(&cell, 900).iter().map(|f| kind_of(f)).collect();
        assert_eq!(
            kinds,
            [
                FlagKind::Harness,
                FlagKind::Harness,
                FlagKind::MissingClients,
                FlagKind::Errors
            ]
        );
        let mut scenario = scenario();
        scenario.max_errors = 10;
        let stopped = assess(&cell, &scenario, 1000).flags;
        assert_eq!(
            kind_of(stopped.last().unwrap()),
            FlagKind::Errors,
            "{stopped:?}"
        );
        cell.placement.separated = false;
        cell.placement.loadgen_cpu_count = 2;
        cell.server.as_mut().unwrap().cpu_s = 40.0;
        let shared = flags(&cell, 1000);
        assert!(
            shared.iter().any(|f| kind_of(f) == FlagKind::SharedCpus),
            "{shared:?}"
        );
    }

    #[test]
    fn unpinned_runs_still_see_a_saturated_machine() {
        let mut cell = healthy();
        cell.placement.separated = false;
        cell.placement.loadgen_cpus = None::<CpuList>;
        cell.placement.loadgen_cpu_count = 2;
        cell.server.as_mut().unwrap().cpu_s = 30.0;
        cell.loadgen.cpu_s = 26.0;
        let text = flags(&cell, 1000);
        assert!(text.iter().any(|f| f.contains("shared 2 CPUs")), "{text:?}");
    }

    #[test]
    fn closed_loop_and_generic_cells_have_no_rate_to_miss() {
        let mut cell = healthy();
        cell.achieved_rate = 1.0;
        cell.spec.pattern = Pattern::SseUrl;
        assert_eq!(flags(&cell, 1000), Vec::<String>::new());
        cell.spec.pattern = Pattern::RequestResponse;
        cell.spec.rate = 0.0;
        assert_eq!(flags(&cell, 1000), Vec::<String>::new());
    }
}
