//! Whether one measured step passes: the goal met with no loss, no errors, the load generator not
//! the bottleneck and the server's CPU not saturated; otherwise what broke first.

use std::fmt;

use super::{limits, slo::Slo};
use crate::{
    health::{self, FlagKind},
    record::Metric,
    result::CellResult,
};

/// What ends a search, or fails a step; `capacity.csv` names it in kebab case (`server-cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Constraint {
    /// The latency goal broke.
    Slo,
    /// Events were lost.
    Loss,
    /// Clients or the publisher saw errors (or clients could not start).
    Errors,
    /// The load generator was the bottleneck: the step says nothing about the server.
    Harness,
    /// The server used all the CPU it could get.
    ServerCpu,
    /// The open-file limit leaves no room for more clients (checked before the step).
    FdLimit,
    /// The steps so far project more memory than the machine has (checked before the step).
    Memory,
    /// `--max` reached with every step passing.
    Max,
    /// Ctrl-C.
    Interrupted,
}

impl Constraint {
    pub fn as_str(self) -> &'static str {
        match self {
            Constraint::Slo => "slo",
            Constraint::Loss => "loss",
            Constraint::Errors => "errors",
            Constraint::Harness => "harness",
            Constraint::ServerCpu => "server-cpu",
            Constraint::FdLimit => "fd-limit",
            Constraint::Memory => "memory",
            Constraint::Max => "max",
            Constraint::Interrupted => "interrupted",
        }
    }

    /// The server was not what stopped the search: its capacity is at least the one found.
    pub fn is_lower_bound(self) -> bool {
        matches!(
            self,
            Constraint::Harness
                | Constraint::FdLimit
                | Constraint::Memory
                | Constraint::Max
                | Constraint::Interrupted
        )
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The goal was met under the load asked for, with no loss and no errors.
    Pass {
        /// The server's CPU was saturated: a resource limit is reached, the search goes no higher.
        server_saturated: Option<String>,
        /// The load generator warned, yet the goal held: its delay only adds to the latencies.
        harness: Option<String>,
    },
    /// The first constraint in order of precedence, and every reason in words.
    Fail(Constraint, String),
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Pass { .. })
    }
}

/// Judges a measured step against `slo` on `metric`.
///
/// A step passes when the goal held with no loss and no errors; a harness warning does not undo
/// that (see [`limits::loadgen_bottleneck`]) but is kept with the pass. A failing step names the
/// harness first when the load generator warned (it may have caused the rest), then a saturated
/// server CPU, then errors, loss and the goal.
pub fn judge(cell: &CellResult, slo: &Slo, metric: Metric) -> Verdict {
    if !cell.complete {
        return Verdict::Fail(Constraint::Interrupted, "interrupted".to_owned());
    }
    let bottleneck = limits::loadgen_bottleneck(cell);
    let saturated = limits::server_cpu_saturated(cell);
    let failures = failures(cell, slo, metric);
    if failures.is_empty() {
        return Verdict::Pass {
            server_saturated: saturated,
            harness: bottleneck,
        };
    }
    let mut reasons: Vec<(Constraint, String)> = Vec::new();
    if let Some(bottleneck) = bottleneck {
        reasons.push((Constraint::Harness, bottleneck));
    }
    if let Some(saturated) = saturated {
        reasons.push((Constraint::ServerCpu, saturated));
    }
    reasons.extend(failures);
    let first = reasons[0].0;
    let text: Vec<&str> = reasons.iter().map(|(_, text)| text.as_str()).collect();
    Verdict::Fail(first, text.join("; "))
}

/// What the cell shows against the goal itself: errors, loss, latency.
fn failures(cell: &CellResult, slo: &Slo, metric: Metric) -> Vec<(Constraint, String)> {
    let mut reasons = Vec::new();
    let c = &cell.counters;
    let missing = cell
        .warnings
        .iter()
        .find(|w| health::kind_of(w) == FlagKind::MissingClients);
    if c.errors > 0 || c.dropped_sends > 0 || missing.is_some() {
        let kinds: Vec<String> = cell
            .errors
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let mut text = format!("{} errors", c.errors);
        if !kinds.is_empty() {
            text.push_str(&format!(" ({})", kinds.join(", ")));
        }
        if c.dropped_sends > 0 {
            text.push_str(&format!(", {} publishes failed", c.dropped_sends));
        }
        if let Some(missing) = missing {
            text.push_str(&format!(", {missing}"));
        }
        reasons.push((Constraint::Errors, text));
    }
    if c.events_lost > 0 && cell.spec.pattern.counts_loss() {
        reasons.push((
            Constraint::Loss,
            format!("{} of {} events lost", c.events_lost, c.events_expected),
        ));
    }
    match cell.histograms.get(&metric).filter(|h| !h.is_empty()) {
        None => reasons.push((
            Constraint::Slo,
            format!("no {} sample to hold to {slo}", metric.name()),
        )),
        Some(histogram) => {
            for (clause, measured) in slo.broken(histogram) {
                reasons.push((
                    Constraint::Slo,
                    format!(
                        "{} {} {measured} ms ≥ {} ms",
                        metric.name(),
                        clause.point.name(),
                        clause.limit.as_secs_f64() * 1_000.0
                    ),
                ));
            }
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{output::test_util::sample_cell, pattern::Pattern, result::ProcessUsage};

    /// sample_cell's delivery histogram holds 1..=1000 ms; make it otherwise clean.
    fn clean() -> CellResult {
        let mut cell = sample_cell(Pattern::Sse, true);
        cell.counters.errors = 0;
        cell.errors.clear();
        cell.counters.events_lost = 0;
        cell.warnings.clear();
        cell.loadgen.cpu_s = 0.1;
        cell.server = Some(ProcessUsage {
            cpu_s: 0.1,
            peak_rss_bytes: 1 << 20,
            wait_s: 0.0,
        });
        cell
    }

    fn slo(text: &str) -> Slo {
        Slo::parse(text).unwrap()
    }

    const PASS: Verdict = Verdict::Pass {
        server_saturated: None,
        harness: None,
    };

    #[test]
    fn a_clean_cell_within_the_goal_passes() {
        assert_eq!(judge(&clean(), &slo("p99<2s"), Metric::Delivery), PASS);
    }

    #[test]
    fn a_struggling_load_generator_does_not_undo_a_met_goal() {
        let mut cell = clean();
        cell.warnings = vec![
            "p99 delivery (99.0 ms): the load generator was up to 40.0 ms late (p99) to run what \
             woke it, 40% of it"
                .into(),
            "the rate: achieved 40.0/s of the 50/s target, so every figure describes a lighter load"
                .into(),
        ];
        let verdict = judge(&cell, &slo("p99<2s"), Metric::Delivery);
        assert!(
            matches!(verdict, Verdict::Pass { harness: Some(ref w), .. } if w.contains("late (p99)")),
            "{verdict:?}"
        );
        let verdict = judge(&cell, &slo("p99<100ms"), Metric::Delivery);
        assert!(
            matches!(verdict, Verdict::Fail(Constraint::Harness, ref t) if t.contains("p99 99")),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_saturated_server_that_met_the_goal_passes_and_says_so() {
        let mut cell = clean();
        let cores = limits::server_core_budget(&cell);
        cell.server.as_mut().unwrap().cpu_s = cell.measured_s * cores;
        let verdict = judge(&cell, &slo("p99<2s"), Metric::Delivery);
        assert!(
            matches!(
                verdict,
                Verdict::Pass {
                    server_saturated: Some(_),
                    ..
                }
            ),
            "{verdict:?}"
        );
        let verdict = judge(&cell, &slo("p99<100ms"), Metric::Delivery);
        assert!(
            matches!(verdict, Verdict::Fail(Constraint::ServerCpu, _)),
            "{verdict:?}"
        );
    }

    #[test]
    fn the_goal_names_the_point_and_the_measured_value() {
        let Verdict::Fail(constraint, text) =
            judge(&clean(), &slo("p50<2s,p99<100ms"), Metric::Delivery)
        else {
            panic!("passed");
        };
        assert_eq!(constraint, Constraint::Slo);
        assert!(
            text.starts_with("delivery p99 99") && text.ends_with("≥ 100 ms"),
            "{text}"
        );
        let verdict = judge(&clean(), &slo("p99<2s"), Metric::RoundTrip);
        assert!(
            matches!(verdict, Verdict::Fail(Constraint::Slo, ref t) if t.contains("no round_trip sample"))
        );
    }

    #[test]
    fn loss_and_errors_fail_and_the_harness_comes_first() {
        let mut cell = clean();
        cell.counters.events_lost = 3;
        let verdict = judge(&cell, &slo("p99<2s"), Metric::Delivery);
        assert_eq!(
            verdict,
            Verdict::Fail(Constraint::Loss, "3 of 1500010 events lost".to_owned())
        );
        cell.counters.errors = 2;
        cell.errors.insert("connect_refused".into(), 2);
        let Verdict::Fail(constraint, text) = judge(&cell, &slo("p99<2s"), Metric::Delivery) else {
            panic!("passed");
        };
        assert_eq!(constraint, Constraint::Errors);
        assert!(
            text.starts_with("2 errors (connect_refused=2); 3 of"),
            "{text}"
        );
        cell.warnings = vec![
            "every figure: the load generator was saturated: its CPU set (0) was busy 99% of the \
             window, …"
                .into(),
        ];
        let verdict = judge(&cell, &slo("p99<2s"), Metric::Delivery);
        assert!(
            matches!(verdict, Verdict::Fail(Constraint::Harness, _)),
            "{verdict:?}"
        );
        cell.complete = false;
        let verdict = judge(&cell, &slo("p99<2s"), Metric::Delivery);
        assert!(matches!(verdict, Verdict::Fail(Constraint::Interrupted, _)));
    }

    #[test]
    fn lower_bounds_are_the_limits_outside_the_server() {
        assert!(Constraint::Harness.is_lower_bound());
        assert!(Constraint::FdLimit.is_lower_bound());
        assert!(!Constraint::Slo.is_lower_bound());
        assert!(!Constraint::ServerCpu.is_lower_bound());
    }
}
