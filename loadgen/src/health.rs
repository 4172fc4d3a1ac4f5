//! Harness health: the warnings a cell's result carries when its numbers may describe the load
//! generator (saturated, late, short of clients) or a cut-short run rather than the server.

use crate::{pattern::Kind, result::CellResult, scenario::Scenario};

/// Flags the numbers that may describe the load generator rather than the server; `ready` is how
/// many clients started.
pub fn warnings(result: &CellResult, scenario: &Scenario, ready: usize) -> Vec<String> {
    let mut warnings = Vec::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let window = result.measured_s.max(1e-9);
    let loadgen_share = result.loadgen.cpu_s / window / cores;
    if loadgen_share > 0.85 {
        warnings.push(format!(
            "load generator saturated: it used {:.0}% of all {cores} cores",
            loadgen_share * 100.0
        ));
    }
    if let Some(server) = result.server {
        let broker = result.broker.map_or(0.0, |b| b.cpu_s);
        let machine = (server.cpu_s + broker + result.loadgen.cpu_s) / window / cores;
        if machine > 0.9 {
            warnings.push(format!(
                "machine saturated: servers, broker and load generator together used {:.0}% of \
                 {cores} cores",
                machine * 100.0
            ));
        }
    }
    if result.loadgen_lag_p99_us > 10_000 {
        warnings.push(format!(
            "load generator timers fired up to {} ms late (p99): latencies include its own delay",
            result.loadgen_lag_p99_us / 1_000
        ));
    }
    let target = result.spec.rate;
    let open_loop = target > 0.0
        && (result.spec.pattern.counts_loss() || result.spec.pattern.kind() == Kind::Request);
    if open_loop && result.complete && result.achieved_rate < target * 0.95 {
        warnings.push(format!(
            "achieved {:.1}/s of the {target}/s target: the target rate was not sustained",
            result.achieved_rate
        ));
    }
    let c = &result.counters;
    if c.published > 0 && c.late_sends * 100 > c.published {
        warnings.push(format!(
            "{} of {} publishes started more than 5 ms late",
            c.late_sends, c.published
        ));
    }
    if ready < scenario.clients {
        warnings.push(format!(
            "only {ready} of {} clients started",
            scenario.clients
        ));
    }
    if scenario.max_errors > 0 && c.errors >= scenario.max_errors {
        warnings.push(format!(
            "stopped early: {} errors reached --max-errors",
            c.errors
        ));
    } else if c.errors > 0 {
        warnings.push(format!("{} errors", c.errors));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{output::test_util::sample_cell, pattern::Pattern, scenario::RawScenario};

    fn scenario() -> Scenario {
        let mut raw = RawScenario::default();
        raw.set_flag("clients", "1000");
        raw.validate().unwrap()
    }

    /// A cell whose harness kept up on any machine: little CPU, no lag, the rate reached.
    fn healthy() -> CellResult {
        let mut cell = sample_cell(Pattern::Sse, true);
        cell.loadgen.cpu_s = 0.1;
        cell.server.as_mut().unwrap().cpu_s = 0.1;
        cell.counters.errors = 0;
        cell
    }

    #[test]
    fn a_healthy_cell_has_no_warning() {
        assert_eq!(
            warnings(&healthy(), &scenario(), 1000),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_sign_of_a_struggling_harness_is_named() {
        let mut cell = healthy();
        cell.achieved_rate = 40.0;
        cell.counters.late_sends = 20;
        cell.counters.errors = 2;
        cell.loadgen_lag_p99_us = 25_000;
        let text = warnings(&cell, &scenario(), 900);
        assert_eq!(
            text,
            [
                "load generator timers fired up to 25 ms late (p99): latencies include its own delay",
                "achieved 40.0/s of the 50/s target: the target rate was not sustained",
                "20 of 1500 publishes started more than 5 ms late",
                "only 900 of 1000 clients started",
                "2 errors",
            ]
        );
        // A run cut short is not blamed on the rate.
        cell.complete = false;
        assert!(!warnings(&cell, &scenario(), 1000)
            .iter()
            .any(|w| w.contains("not sustained")));
    }

    #[test]
    fn closed_loop_and_generic_cells_have_no_rate_to_miss() {
        let mut cell = healthy();
        cell.achieved_rate = 1.0;
        cell.spec.pattern = Pattern::SseUrl;
        assert_eq!(warnings(&cell, &scenario(), 1000), Vec::<String>::new());
        cell.spec.pattern = Pattern::RequestResponse;
        cell.spec.rate = 0.0;
        assert_eq!(warnings(&cell, &scenario(), 1000), Vec::<String>::new());
    }
}
