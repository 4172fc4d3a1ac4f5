//! Runs a plan's searches through one session: each step a normal measured cell (its files kept
//! in the run directory), resources checked before it, judged after it; then `capacity.csv`.

use std::{collections::BTreeMap, path::PathBuf};

use super::{
    judge::{judge, Constraint, Verdict},
    limits::{self, MemoryPoint},
    plan::{Plan, SearchPlan},
    search::Search,
    slo,
};
use crate::{
    output::{write_capacity, CapacityRow, OutputError, SummaryRow, CAPACITY_FILE},
    record::Metric,
    result::CellResult,
    scenario::ScenarioError,
    session::{CellPlan, Session, SessionError, SessionOptions},
};

/// What a capacity run did.
pub struct CapacityOutcome {
    pub dir: PathBuf,
    pub rows: Vec<CapacityRow>,
    /// False when interrupted.
    pub complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

/// Runs every search of `plan`, writing `capacity.csv` after each one (so an interrupted run keeps
/// what it found), then the session's own files.
pub async fn run(plan: &Plan, options: SessionOptions) -> Result<CapacityOutcome, CapacityError> {
    let mut session = Session::open(&options)?;
    let path = session.dir().join(CAPACITY_FILE);
    let mut rows = Vec::new();
    for search in &plan.searches {
        if options.interrupt.is_cancelled() {
            break;
        }
        let row = search_one(&mut session, plan, search, &options).await?;
        rows.push(row);
        write_capacity(&path, &rows)?;
    }
    let all_ran = rows.len() == plan.searches.len()
        && rows.iter().all(|r| r.constraint != Constraint::Interrupted);
    let outcome = session.finish(plan.description(), all_ran)?;
    write_capacity(&path, &rows)?;
    Ok(CapacityOutcome {
        dir: outcome.dir,
        rows,
        complete: outcome.complete,
    })
}

/// A passing step: its summary row and the goal's latency (ms).
struct Passed {
    summary: SummaryRow,
    latency: [Option<f64>; 3],
}

impl Passed {
    fn of(run_id: &str, cell: &CellResult, metric: Metric) -> Self {
        let histogram = cell.histograms.get(&metric).filter(|h| !h.is_empty());
        let ms = |value: Option<u64>| value.map(|us| us as f64 / 1_000.0);
        Self {
            summary: SummaryRow::from_cell(run_id, cell),
            latency: [
                ms(histogram.map(|h| h.value_at_quantile(0.5))),
                ms(histogram.map(|h| h.value_at_quantile(0.99))),
                ms(histogram.map(|h| h.max())),
            ],
        }
    }
}

/// Everything one search saw.
struct Trail {
    /// `value verdict`, in the order tried.
    steps: Vec<String>,
    steps_run: u64,
    passed: BTreeMap<u64, Passed>,
    failed: BTreeMap<u64, (Constraint, String)>,
    memory: Vec<MemoryPoint>,
    interrupted: bool,
}

/// One search: steps until [`Search`] is done, each step's resources checked before it runs. A
/// step that failed while the load generator warned is inconclusive: it is measured again (up to
/// `--retries` times per search) one client (or event/s) lower, so its files keep a name of their own.
async fn search_one(
    session: &mut Session,
    plan: &Plan,
    search: &SearchPlan,
    options: &SessionOptions,
) -> Result<CapacityRow, CapacityError> {
    let metric = slo::metric(search.pattern).unwrap_or(Metric::Delivery);
    let ceiling = (
        Constraint::Max,
        format!("--max {} reached with every step passing", plan.max),
    );
    let mut state = Search::new(plan.start, plan.max, ceiling, plan.precision);
    let mut trail = Trail {
        steps: Vec::new(),
        steps_run: 0,
        passed: BTreeMap::new(),
        failed: BTreeMap::new(),
        memory: Vec::new(),
        interrupted: false,
    };
    let first = plan.cell(search, plan.start)?;
    let label = search_label(&first);
    let unit = plan.vary.unit();
    let run_id = session.run_id().to_owned();
    let mut retries = plan.retries;
    let mut next = state.next();
    while let Some(value) = next {
        if options.interrupt.is_cancelled() {
            trail.interrupted = true;
            break;
        }
        let cell = plan.cell(search, value)?;
        if let Some((allowed, constraint, detail)) = resource_ceiling(plan, value, &cell, &trail) {
            trail.steps.push(format!("{value} {constraint} (not run)"));
            note(options, &format!("{label}: {value} {unit} → {detail}"));
            state.cap(allowed, (constraint, detail));
            next = state.next();
            continue;
        }
        trail.steps_run += 1;
        let verdict = match session.run(&cell).await {
            Ok(result) => {
                trail.memory.push(MemoryPoint::of(value, result));
                let verdict = judge(result, &plan.slo, metric);
                if verdict.passed() {
                    let passed = Passed::of(&run_id, result, metric);
                    trail.passed.insert(value, passed);
                }
                verdict
            }
            // A cell that could not run at all (no client could connect) failed with errors.
            Err(SessionError::Cell { error, .. }) => {
                Verdict::Fail(Constraint::Errors, error.to_string())
            }
            Err(other) => return Err(other.into()),
        };
        let again = if retries > 0 {
            retry_at(&verdict, value, |v| trail.tried(v))
        } else {
            None
        };
        let (text, step) = match verdict {
            Verdict::Pass {
                server_saturated,
                harness,
            } => {
                let p99 = trail.passed[&value].latency[1];
                let mut text = format!(
                    "{value} {unit} ok ({} p99 {} ms)",
                    metric.name(),
                    p99.map_or_else(|| "-".to_owned(), |v| v.to_string())
                );
                let mut step = format!("{value} ok");
                if let Some(warning) = harness {
                    text.push_str(&format!(", though {warning}"));
                    step.push_str(" (harness warned)");
                }
                state.record(value, true);
                if let Some(saturated) = server_saturated {
                    // A resource limit reached: the search goes no higher than this step.
                    text.push_str(&format!("; {saturated}, so the search stops here"));
                    step.push_str(" (server-cpu)");
                    state.cap(value, (Constraint::ServerCpu, saturated));
                }
                next = state.next();
                (text, step)
            }
            Verdict::Fail(_, detail) if again.is_some() => {
                retries -= 1;
                next = again;
                (
                    format!(
                        "{value} {unit} inconclusive, harness: {detail}; measuring again at {}",
                        value - 1
                    ),
                    format!("{value} harness (again at {})", value - 1),
                )
            }
            Verdict::Fail(constraint, detail) => {
                let text = format!("{value} {unit} failed, {constraint}: {detail}");
                let step = format!("{value} {constraint}");
                if constraint == Constraint::Interrupted {
                    trail.interrupted = true;
                    next = None;
                } else {
                    trail.failed.insert(value, (constraint, detail));
                    state.record(value, false);
                    next = state.next();
                }
                (text, step)
            }
        };
        note(options, &format!("{label}: {text}"));
        trail.steps.push(step);
    }
    Ok(row(&run_id, plan, search, &first, metric, &state, trail))
}

/// Where an inconclusive step is measured again: one lower (so its files keep their own name),
/// unless that was measured already. Only a failure the harness may have caused is inconclusive.
fn retry_at(verdict: &Verdict, value: u64, tried: impl Fn(u64) -> bool) -> Option<u64> {
    let inconclusive = matches!(verdict, Verdict::Fail(Constraint::Harness, _));
    (inconclusive && value > 1 && !tried(value - 1)).then(|| value - 1)
}

impl Trail {
    /// Whether `value` was measured already.
    fn tried(&self, value: u64) -> bool {
        self.passed.contains_key(&value) || self.failed.contains_key(&value)
    }
}

/// `sse`, `short-poll 1s`.
fn search_label(cell: &CellPlan) -> String {
    let pattern = cell.pattern;
    let interval = pattern
        .polls_on_interval()
        .then(|| cell.scenario.interval.as_secs_f64());
    crate::report::fmt::pattern_at(pattern, interval)
}

/// A progress line on stderr (not with `--quiet`).
fn note(options: &SessionOptions, line: &str) {
    if !options.quiet {
        eprintln!("capacity {line}");
    }
}

/// The largest value a resource allows, when `value` is above it: descriptors for the step's
/// clients, memory projected from the steps so far.
fn resource_ceiling(
    plan: &Plan,
    value: u64,
    cell: &CellPlan,
    trail: &Trail,
) -> Option<(u64, Constraint, String)> {
    let clients = cell.scenario.clients as u64;
    if let Some(budget) = limits::fd_client_budget() {
        if clients > budget {
            // More clients than descriptors: at a fixed client count no rate fits.
            let allowed = match plan.vary {
                super::plan::Vary::Clients => budget,
                super::plan::Vary::Rate => 0,
            };
            return Some((
                allowed,
                Constraint::FdLimit,
                limits::fd_limit_detail(clients, budget),
            ));
        }
    }
    let available = limits::memory_available()?;
    let allowed = limits::memory_allowed(&trail.memory, available, limits::loadgen_rss())?;
    (value > allowed).then(|| {
        (
            allowed,
            Constraint::Memory,
            limits::memory_detail(value, allowed, available),
        )
    })
}

/// The search's row of `capacity.csv`.
fn row(
    run_id: &str,
    plan: &Plan,
    search: &SearchPlan,
    first: &CellPlan,
    metric: Metric,
    state: &Search<(Constraint, String)>,
    trail: Trail,
) -> CapacityRow {
    let capacity = state.capacity();
    let (constraint, detail) = if trail.interrupted {
        (Constraint::Interrupted, "interrupted (Ctrl-C)".to_owned())
    } else if let Some(bad) = state.first_failing() {
        trail
            .failed
            .get(&bad)
            .cloned()
            .unwrap_or((Constraint::Errors, format!("{bad} failed")))
    } else {
        state.ceiling_reason().clone()
    };
    let at = trail.passed.get(&capacity);
    let summary = at.map(|p| &p.summary);
    let server_cores = summary.and_then(|s| {
        s.server_cpu_s
            .filter(|_| s.measured_s > 0.0)
            .map(|cpu| round3(cpu / s.measured_s))
    });
    CapacityRow {
        run_id: run_id.to_owned(),
        pattern: search.pattern,
        interval_s: search
            .pattern
            .polls_on_interval()
            .then(|| first.scenario.interval.as_secs_f64()),
        vary: plan.vary.as_str().to_owned(),
        slo: plan.slo.to_string(),
        slo_metric: metric.name().to_owned(),
        capacity,
        constraint,
        constraint_detail: detail,
        first_failing: state.first_failing(),
        cell: summary.map(|s| s.cell.clone()),
        clients: summary.map(|s| s.clients),
        rate_per_s: summary.map(|s| s.rate_per_s),
        p50_ms: at.and_then(|p| p.latency[0]),
        p99_ms: at.and_then(|p| p.latency[1]),
        max_ms: at.and_then(|p| p.latency[2]),
        server_cores,
        capacity_per_core: server_cores
            .filter(|cores| *cores > 0.0)
            .map(|cores| round3(capacity as f64 / cores)),
        server_cpu_us_per_event: summary.and_then(|s| s.server_cpu_us_per_event),
        bytes_per_event: summary.and_then(|s| s.bytes_per_event),
        server_peak_rss_bytes: summary.and_then(|s| s.server_peak_rss_bytes),
        steps_run: trail.steps_run,
        steps: trail.steps.join("; "),
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_harness_failure_is_measured_again_one_lower() {
        let harness = Verdict::Fail(Constraint::Harness, "timers late".into());
        assert_eq!(retry_at(&harness, 1_000, |_| false), Some(999));
        assert_eq!(retry_at(&harness, 1_000, |v| v == 999), None);
        assert_eq!(retry_at(&harness, 1, |_| false), None);
        let slo = Verdict::Fail(Constraint::Slo, "p99 130 ms".into());
        assert_eq!(retry_at(&slo, 1_000, |_| false), None);
        let pass = Verdict::Pass {
            server_saturated: None,
            harness: Some("timers late".into()),
        };
        assert_eq!(retry_at(&pass, 1_000, |_| false), None);
    }
}
