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
    /// What was left out before the run (e.g. a peer that cannot start here), for `run.json`.
    pub notes: Vec<String>,
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
    let mut session = Session::open(&options)?;
    let mut skipped = 0;
    for plan in &options.plans {
        if options.interrupt.is_cancelled() {
            break;
        }
        match session.run(plan).await {
            Ok(_) => {}
            // Someone else's server that cannot be started or reached costs its cell, not the
            // run: the note says why. commbench's own server failing is a bug, and stops it.
            Err(SessionError::Cell { error, .. }) if plan.scenario.profiled(plan.pattern) => {
                session.note(format!(
                    "{} against {}: not measured: {error}",
                    plan.pattern,
                    plan.scenario.target_name(plan.pattern)
                ));
                skipped += 1;
            }
            Err(error) => return Err(error),
        }
    }
    let all_ran = session.cells.len() + skipped == options.plans.len();
    session.finish(options.description, all_ran)
}

/// A run in progress: its id and directory, and the cells measured so far. `run_session` runs a
/// fixed list of cells through it; `commbench capacity` chooses each next cell from the last.
pub struct Session {
    run_id: String,
    started_unix_s: u64,
    dir: PathBuf,
    /// Point `results/latest` at `dir` when finished (the default directory only).
    link: bool,
    quiet: bool,
    server_args: Vec<String>,
    interrupt: CancellationToken,
    /// What run.json names as the target: the first plan's, or the embedded server.
    target: Option<String>,
    /// Cells started so far, measured or not: each one's names on a shared server are its own.
    started_cells: usize,
    cells: Vec<CellResult>,
    /// What was left out (e.g. a peer that cannot start here), for `run.json`.
    notes: Vec<String>,
    /// CPU sets and agents, the same for every cell.
    placement: Placement,
}

impl Session {
    /// Names the run and creates its directory.
    pub fn open(options: &SessionOptions) -> Result<Self, SessionError> {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let run_id = run_id(started);
        let (dir, link) = match &options.out {
            Some(dir) => (dir.clone(), false),
            None => (Path::new("results").join(&run_id), true),
        };
        std::fs::create_dir_all(&dir).map_err(|e| SessionError::CreateDir(dir.clone(), e))?;
        Ok(Self {
            run_id,
            started_unix_s: started,
            dir,
            link,
            quiet: options.quiet,
            server_args: options.server_args.clone(),
            interrupt: options.interrupt.clone(),
            target: options
                .plans
                .first()
                .and_then(|plan| target_of(&plan.scenario)),
            started_cells: 0,
            cells: Vec::new(),
            notes: options.notes.clone(),
            placement: options.placement.clone(),
        })
    }

    /// The run's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The run's identifier (`summary.csv`'s `run_id`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Records (and prints) what the run left out, for `run.json`'s notes.
    pub fn note(&mut self, note: String) {
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    /// Measures one cell (its `.hlog` files land in the run directory) and keeps its result.
    pub async fn run(&mut self, plan: &CellPlan) -> Result<&CellResult, SessionError> {
        if self.target.is_none() {
            self.target = target_of(&plan.scenario);
        }
        let index = self.started_cells;
        self.started_cells += 1;
        let cell = run_cell(CellOptions {
            scenario: plan.scenario.clone(),
            pattern: plan.pattern,
            index,
            run_id: self.run_id.clone(),
            dir: self.dir.clone(),
            quiet: self.quiet,
            server_args: self.server_args.clone(),
            interrupt: self.interrupt.clone(),
            placement: self.placement.clone(),
        })
        .await
        .map_err(|error| SessionError::Cell {
            pattern: plan.pattern.to_string(),
            error,
        })?;
        if !self.quiet {
            eprintln!("{}", output::render_table(std::slice::from_ref(&cell)));
        }
        self.cells.push(cell);
        Ok(&self.cells[self.cells.len() - 1])
    }

    /// Writes `summary.csv`, `run.json` and the `.hgrm` files of every cell measured, and points
    /// `results/latest` at them. The run is complete when `all_ran` and no cell was cut short.
    pub fn finish(
        self,
        description: serde_json::Value,
        all_ran: bool,
    ) -> Result<SessionOutcome, SessionError> {
        let Session {
            run_id,
            started_unix_s,
            dir,
            link,
            target,
            cells,
            notes,
            placement,
            ..
        } = self;
        let complete = all_ran && cells.iter().all(|c| c.complete);
        let facts = output::machine_facts();
        let info = RunInfo {
            run_id,
            started_unix_s,
            complete,
            commbench_version: env!("CARGO_PKG_VERSION").to_owned(),
            git_commit: facts.git_commit,
            cpu_model: facts.cpu_model,
            cpus: facts.cpus,
            kernel: facts.kernel,
            rustc: facts.rustc,
            target: target.unwrap_or_else(|| "embedded".to_owned()),
            scenario: description,
            cells: cells.iter().map(|c| c.spec.name()).collect(),
            notes,
            cpu_sets: (*placement.cpus).clone(),
            scheduling: placement.scheduling.clone(),
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
}

/// What run.json names as a scenario's target: its `--target` URL, else its profile's file.
fn target_of(scenario: &Scenario) -> Option<String> {
    let profile = scenario
        .profile
        .as_ref()
        .map(|p| format!("profile {}", p.source));
    scenario.target.clone().or(profile)
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
