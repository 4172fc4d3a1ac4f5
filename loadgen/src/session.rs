//! A whole `commbench run`: names the run, runs each pattern cell in turn, writes the result files
//! and points `results/latest` at them.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use tokio_util::sync::CancellationToken;

use crate::{
    output,
    procs::Placement,
    result::{CellResult, RunInfo},
    runner::{run_cell, CellOptions, RunError},
    {pattern::Pattern, scenario::Scenario},
};

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot create the results directory {0}: {1}")]
    CreateDir(PathBuf, std::io::Error),
    // Not a `source`: the message already carries it, and anyhow would print it twice.
    #[error("{pattern}: {error}")]
    Cell { pattern: String, error: RunError },
    #[error("cannot write results to {0}: {1}")]
    Write(PathBuf, String),
}

/// One cell to run: a pattern under a scenario's parameters.
#[derive(Debug, Clone)]
pub struct CellPlan {
    pub pattern: Pattern,
    pub scenario: Arc<Scenario>,
}

impl CellPlan {
    /// One cell per pattern of `scenario` (what `commbench run` does).
    pub fn per_pattern(scenario: Scenario) -> Vec<CellPlan> {
        let scenario = Arc::new(scenario);
        scenario
            .patterns
            .iter()
            .map(|pattern| CellPlan {
                pattern: *pattern,
                scenario: scenario.clone(),
            })
            .collect()
    }
}

/// Where and how to run.
pub struct SessionOptions {
    pub plans: Vec<CellPlan>,
    /// What was asked for (scenario or study), recorded in `run.json`.
    pub description: serde_json::Value,
    /// Exact output directory; `None` = `results/<run-id>` plus the `results/latest` link.
    pub out: Option<PathBuf>,
    pub quiet: bool,
    pub server_args: Vec<String>,
    pub interrupt: CancellationToken,
    /// CPU sets and agents (the default: nothing pinned, clients on this machine).
    pub placement: Placement,
}

pub struct SessionOutcome {
    pub dir: PathBuf,
    pub cells: Vec<CellResult>,
    pub complete: bool,
}

/// Runs every pattern of the scenario and writes `summary.csv`, `run.json`, `.hgrm` and `.hlog` files.
pub async fn run_session(options: SessionOptions) -> Result<SessionOutcome, SessionError> {
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let run_id = run_id(started.as_secs());
    let (dir, link) = match &options.out {
        Some(dir) => (dir.clone(), false),
        None => (Path::new("results").join(&run_id), true),
    };
    std::fs::create_dir_all(&dir).map_err(|e| SessionError::CreateDir(dir.clone(), e))?;
    let mut cells = Vec::new();
    for (index, plan) in options.plans.iter().enumerate() {
        if options.interrupt.is_cancelled() {
            break;
        }
        let cell = run_cell(CellOptions {
            scenario: plan.scenario.clone(),
            pattern: plan.pattern,
            index,
            run_id: run_id.clone(),
            dir: dir.clone(),
            quiet: options.quiet,
            server_args: options.server_args.clone(),
            interrupt: options.interrupt.clone(),
            placement: options.placement.clone(),
        })
        .await
        .map_err(|error| SessionError::Cell {
            pattern: plan.pattern.to_string(),
            error,
        })?;
        if !options.quiet {
            eprintln!("{}", output::render_table(std::slice::from_ref(&cell)));
        }
        cells.push(cell);
    }
    let complete = cells.len() == options.plans.len() && cells.iter().all(|c| c.complete);
    let facts = output::machine_facts();
    let info = RunInfo {
        run_id: run_id.clone(),
        started_unix_s: started.as_secs(),
        complete,
        commbench_version: env!("CARGO_PKG_VERSION").to_owned(),
        git_commit: facts.git_commit,
        cpu_model: facts.cpu_model,
        cpus: facts.cpus,
        kernel: facts.kernel,
        rustc: facts.rustc,
        target: options
            .plans
            .first()
            .and_then(|plan| plan.scenario.target.clone())
            .unwrap_or_else(|| "embedded".to_owned()),
        scenario: options.description,
        cells: cells.iter().map(|c| c.spec.name()).collect(),
        cpu_sets: (*options.placement.cpus).clone(),
        scheduling: options.placement.scheduling.clone(),
        placement: cells
            .iter()
            .map(|c| (c.spec.name(), c.placement.clone()))
            .collect(),
    };
    output::write_run(&dir, &info, &cells)
        .map_err(|e| SessionError::Write(dir.clone(), e.to_string()))?;
    if link {
        if let Err(error) = output::link_latest(Path::new("results"), &dir) {
            tracing::warn!(%error, "results/latest not updated");
        }
    }
    Ok(SessionOutcome {
        dir,
        cells,
        complete,
    })
}

/// `YYYYMMDD-HHMMSS` in UTC.
fn run_id(unix_s: u64) -> String {
    let [year, month, day, hour, minute, second] = crate::clock::utc_fields(unix_s);
    format!("{year:04}{month:02}{day:02}-{hour:02}{minute:02}{second:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_timestamps() {
        assert_eq!(run_id(0), "19700101-000000");
        assert_eq!(run_id(1_795_437_045), "20261123-123045");
    }
}
