//! `commbench capacity` flags → a validated plan: the goal, the searches (one per pattern, and per
//! poll interval for pollers), their bounds, and how each step's cell is built. Everything is
//! checked here, before anything runs.

use std::sync::Arc;

use clap::{Args, ValueEnum};
use commbench_servers::units::parse_count;

use super::slo::{self, Slo};
use crate::{
    cli::RunArgs,
    output::CapacityRow,
    pattern::Pattern,
    scenario::{RawScenario, ScenarioError},
    session::CellPlan,
    threshold::{columns_of, ThresholdError, Thresholds},
};

/// `commbench capacity` flags. The run flags set every other parameter of the steps.
#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// The goal each step must meet: `p50|p90|p99|p999|max<DURATION`, several joined with `,`.
    /// Push patterns and long polling are held to publish → delivery latency; pollers on an
    /// interval and request-response to the round trip from the intended send time.
    #[arg(long, default_value = "p99<100ms")]
    pub slo: String,
    /// What to search: the most clients (at --rate) or the highest events/s (with --clients).
    #[arg(long, value_enum, default_value_t = Vary::Clients)]
    pub vary: Vary,
    /// The first step, in clients or events/s. [default: 100; --quick: 1000]
    #[arg(long)]
    pub start: Option<String>,
    /// The highest step. [default: 200k clients or 1M events/s; --quick: 16k clients or 20k events/s]
    #[arg(long)]
    pub max: Option<String>,
    /// Bisect until the capacity is known within this fraction, 0.01..=1. [default: 0.1;
    /// --quick: 0.25]
    #[arg(long)]
    pub precision: Option<String>,
    /// A step that failed while the load generator warned is inconclusive: measure it again (one
    /// lower, so its files keep their own name) up to this many times per search, 0..=5.
    #[arg(long, default_value_t = 1)]
    pub retries: u32,
    /// Short steps, a coarse precision and a small maximum: about 2 minutes for three patterns.
    #[arg(long)]
    pub quick: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// What a capacity search varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Vary {
    Clients,
    Rate,
}

impl Vary {
    pub fn as_str(self) -> &'static str {
        match self {
            Vary::Clients => "clients",
            Vary::Rate => "rate",
        }
    }

    /// The scenario field a step sets, and its range there.
    fn field(self) -> (&'static str, u64) {
        match self {
            Vary::Clients => ("clients", 200_000),
            Vary::Rate => ("rate", 1_000_000),
        }
    }

    /// The unit in sentences: `clients`, `events/s`.
    pub fn unit(self) -> &'static str {
        match self {
            Vary::Clients => "clients",
            Vary::Rate => "events/s",
        }
    }
}

/// Settings under the user's: the patterns of the question, the compare study's load per client
/// (5 events/s on each of 10 topics), short steps.
const DEFAULTS: [(&str, &str); 6] = [
    (
        "patterns",
        "short-poll,long-poll,sse,ws,graphql-sub,socketio",
    ),
    ("rate", "50"),
    ("topics", "10"),
    ("interval", "1s"),
    ("duration", "5s"),
    ("warmup", "2s"),
];

/// `--quick`: shorter steps and a faster ramp.
const QUICK: [(&str, &str); 3] = [("duration", "2s"), ("warmup", "1s"), ("ramp", "5000")];

/// The search bounds: (start, max for clients, max for rate, precision).
const BOUNDS: (u64, u64, u64, f64) = (100, 200_000, 1_000_000, 0.1);
const QUICK_BOUNDS: (u64, u64, u64, f64) = (1_000, 16_000, 20_000, 0.25);

/// A mistake in what was asked, found before anything ran.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Threshold(#[from] ThresholdError),
    #[error("{flag}: {detail}")]
    Flag { flag: &'static str, detail: String },
}

fn flag(flag: &'static str, detail: impl Into<String>) -> PlanError {
    PlanError::Flag {
        flag,
        detail: detail.into(),
    }
}

/// One search: a pattern, at one poll interval for a poller.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    pub pattern: Pattern,
    /// The interval as given (`1s`), pollers only.
    pub interval: Option<String>,
}

/// Everything a capacity run does, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub slo: Slo,
    pub vary: Vary,
    pub start: u64,
    pub max: u64,
    pub precision: f64,
    /// Inconclusive steps measured again, per search.
    pub retries: u32,
    pub searches: Vec<SearchPlan>,
    pub thresholds: Thresholds,
    /// The steps' settings: the user's over the defaults, without the varied field.
    base: RawScenario,
}

impl Plan {
    pub fn from_args(args: &CapacityArgs) -> Result<Self, PlanError> {
        let slo = Slo::parse(&args.slo).map_err(|e| flag("--slo", e))?;
        let given = args.run.raw_scenario()?;
        let thresholds = Thresholds::from_raw(&given, &columns_of::<CapacityRow>())?;
        for (field, name) in [
            ("target", "--target"),
            ("profile", "--profile"),
            ("target_pid", "--target-pid"),
        ] {
            if given.text_of(field).is_some() {
                return Err(flag(
                    name,
                    "capacity starts commbench's own server for every step (it reads the \
                     server's CPU, memory and open files); another server is not supported",
                ));
            }
        }
        let (field, range) = args.vary.field();
        if given.text_of(field).is_some() {
            return Err(flag(
                if field == "clients" {
                    "--clients"
                } else {
                    "--rate"
                },
                format!(
                    "capacity varies the {field}: give the steps with --start and --max instead"
                ),
            ));
        }
        let quick: &[_] = if args.quick { &QUICK } else { &[] };
        let base = given.over_defaults(&[&DEFAULTS, quick]);
        let (start, max_clients, max_rate, precision) =
            if args.quick { QUICK_BOUNDS } else { BOUNDS };
        let default_max = if args.vary == Vary::Clients {
            max_clients
        } else {
            max_rate
        };
        let count = |name: &'static str, text: &Option<String>, default: u64| match text {
            None => Ok(default),
            Some(text) => parse_count(text)
                .and_then(|v| commbench_servers::units::in_range(v, 1, range))
                .map_err(|e| flag(name, e)),
        };
        let start = count("--start", &args.start, start)?;
        let max = count("--max", &args.max, default_max.max(start))?;
        if start > max {
            return Err(flag("--start", format!("{start} is above --max {max}")));
        }
        let precision = match &args.precision {
            None => precision,
            Some(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.01..=1.0).contains(p))
                .ok_or_else(|| {
                    flag(
                        "--precision",
                        format!("`{text}` is not a fraction in 0.01..=1 (0.1 = within 10%)"),
                    )
                })?,
        };
        if args.retries > 5 {
            return Err(flag(
                "--retries",
                format!("{} is out of range (allowed 0..=5)", args.retries),
            ));
        }
        let mut plan = Plan {
            slo,
            vary: args.vary,
            start,
            max,
            precision,
            retries: args.retries,
            searches: Vec::new(),
            thresholds,
            base,
        };
        plan.searches = plan.list_searches()?;
        // Every step lies between start and max: both ends must make valid cells.
        for search in &plan.searches {
            plan.cell(search, start)?;
            plan.cell(search, max)?;
        }
        Ok(plan)
    }

    /// One search per pattern, and per interval for a poller.
    fn list_searches(&self) -> Result<Vec<SearchPlan>, PlanError> {
        let mut first = self.base.clone();
        first.set_flag(self.vary.field().0, self.start.to_string());
        let patterns = first.validate_first_except("patterns")?.patterns;
        let intervals = self.base.values_of("interval").unwrap_or_default();
        let mut searches = Vec::new();
        for pattern in patterns {
            if slo::metric(pattern).is_none() {
                return Err(flag(
                    "--pattern",
                    format!(
                        "capacity measures the feed and request patterns of commbench's own \
                         server, not {pattern}"
                    ),
                ));
            }
            if pattern.polls_on_interval() {
                searches.extend(intervals.iter().map(|interval| SearchPlan {
                    pattern,
                    interval: Some(interval.clone()),
                }));
            } else {
                searches.push(SearchPlan {
                    pattern,
                    interval: None,
                });
            }
        }
        Ok(searches)
    }

    /// The cell of `search` at `value` clients (or events/s).
    pub fn cell(&self, search: &SearchPlan, value: u64) -> Result<CellPlan, ScenarioError> {
        let mut raw = self.base.clone();
        raw.set_flag("patterns", search.pattern.as_str());
        if let Some(interval) = &search.interval {
            raw.set_flag("interval", interval.clone());
        } else if let Some(first) = self
            .base
            .values_of("interval")
            .and_then(|v| v.first().cloned())
        {
            // Not a poller: any one interval validates (the drain depends on it).
            raw.set_flag("interval", first);
        }
        raw.set_flag(self.vary.field().0, value.to_string());
        Ok(CellPlan {
            pattern: search.pattern,
            scenario: Arc::new(raw.validate()?),
        })
    }

    /// What `run.json` records: the steps' settings and the search's.
    pub fn description(&self) -> serde_json::Value {
        let mut json = self.base.to_json();
        if let serde_json::Value::Object(fields) = &mut json {
            fields.insert("slo".into(), self.slo.to_string().into());
            fields.insert("vary".into(), self.vary.as_str().into());
            fields.insert("start".into(), self.start.into());
            fields.insert("max".into(), self.max.into());
            fields.insert("precision".into(), self.precision.into());
            fields.insert("retries".into(), self.retries.into());
        }
        json
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: CapacityArgs,
    }

    fn plan(flags: &[&str]) -> Result<Plan, PlanError> {
        let args =
            Wrapper::try_parse_from(std::iter::once("capacity").chain(flags.iter().copied()))
                .unwrap()
                .args;
        Plan::from_args(&args)
    }

    fn refused(flags: &[&str]) -> String {
        plan(flags).unwrap_err().to_string()
    }

    #[test]
    fn pollers_get_one_search_per_interval() {
        let plan = plan(&["-p", "sse,short-poll", "--interval", "250ms,1s", "--quick"]).unwrap();
        let searches: Vec<(Pattern, Option<&str>)> = plan
            .searches
            .iter()
            .map(|s| (s.pattern, s.interval.as_deref()))
            .collect();
        assert_eq!(
            searches,
            [
                (Pattern::Sse, None),
                (Pattern::ShortPoll, Some("250ms")),
                (Pattern::ShortPoll, Some("1s")),
            ]
        );
        assert_eq!((plan.start, plan.max, plan.precision), QUICK_BOUNDS_CLIENTS);
        let cell = plan.cell(&plan.searches[2], 700).unwrap();
        assert_eq!(cell.scenario.clients, 700);
        assert_eq!(cell.scenario.interval, std::time::Duration::from_secs(1));
        assert_eq!(cell.scenario.topics, 10);
        assert_eq!(cell.scenario.duration, std::time::Duration::from_secs(2));
    }

    const QUICK_BOUNDS_CLIENTS: (u64, u64, f64) = (QUICK_BOUNDS.0, QUICK_BOUNDS.1, QUICK_BOUNDS.3);

    #[test]
    fn the_default_question_is_the_issues() {
        let plan = plan(&[]).unwrap();
        let patterns: Vec<Pattern> = plan.searches.iter().map(|s| s.pattern).collect();
        assert_eq!(
            patterns,
            [
                Pattern::ShortPoll,
                Pattern::LongPoll,
                Pattern::Sse,
                Pattern::Ws,
                Pattern::GraphqlSub,
                Pattern::SocketIo
            ]
        );
        assert_eq!(plan.slo.to_string(), "p99<100ms");
        assert_eq!(plan.max, 200_000);
    }

    #[test]
    fn varying_the_rate_keeps_the_clients() {
        let plan = plan(&["--vary", "rate", "-p", "ws", "-c", "300", "--start", "1k"]).unwrap();
        let cell = plan.cell(&plan.searches[0], 5_000).unwrap();
        assert_eq!((cell.scenario.clients, cell.scenario.rate), (300, 5_000.0));
        assert_eq!(plan.start, 1_000);
        assert_eq!(plan.description()["vary"], "rate");
    }

    #[test]
    fn mistakes_are_refused_with_the_flag() {
        assert!(refused(&["--slo", "p98<1s"]).starts_with("--slo: `p98<1s`: unknown point"));
        assert!(refused(&["-c", "500"]).starts_with("--clients: capacity varies the clients"));
        assert!(refused(&["--vary", "rate", "-r", "5"]).starts_with("--rate:"));
        assert!(refused(&["--start", "0"]).starts_with("--start:"));
        assert!(refused(&["--max", "300k"]).contains("1..=200000"));
        assert!(refused(&["--start", "5k", "--max", "1k"]).contains("above --max"));
        assert!(refused(&["--precision", "2"]).starts_with("--precision:"));
        assert!(refused(&["--retries", "9"]).starts_with("--retries:"));
        assert!(refused(&["-p", "job-sse"]).contains("not job-sse"));
        assert!(refused(&["-t", "http://127.0.0.1:1"]).starts_with("--target:"));
        assert!(refused(&["--profile", "targets/commbench.toml"]).starts_with("--profile:"));
        assert!(refused(&["--target-pid", "1"]).starts_with("--target-pid:"));
        assert!(refused(&["--duration", "0s"]).starts_with("--duration:"));
        let error = refused(&["--fail-if", "capacty>=10"]);
        assert!(
            error.contains("unknown column `capacty`") && error.contains("capacity_per_core"),
            "{error}"
        );
        assert!(plan(&["--fail-if", "sse:capacity>=1k,constraint!=harness"]).is_ok());
    }
}
