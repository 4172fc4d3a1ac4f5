//! `commbench`: the user-facing command. Errors become one clear message and a non-zero exit.

use anyhow::Context as _;
use clap::Parser;
use commbench_loadgen::{
    capacity::{self, CapacityArgs},
    cli::{Cli, Command, CompareArgs, RunArgs, ServeArgs},
    output::{self, SummaryRow},
    scenario::ScenarioError,
    session::{run_session, CellPlan, SessionOptions, SessionOutcome},
    study,
    threshold::{self, columns_of, ThresholdError, Thresholds},
};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    commbench_servers::init_tracing();
    // Thousands of clients need thousands of descriptors; raise the soft limit to the hard one.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Compare(args) => compare(args).await,
            Command::Capacity(args) => capacity(args).await,
            Command::Report(args) => report(&args.dir),
            Command::Serve(args) => serve(args).await,
            Command::Worker(args) => worker(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if is_usage_error(&error) {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// A mistake in what was asked — a flag, a scenario field, a threshold, a goal — found before
/// anything ran: status 2, like the command line's own usage errors, so that 1 means a run failed.
fn is_usage_error(error: &anyhow::Error) -> bool {
    error.downcast_ref::<ScenarioError>().is_some()
        || error.downcast_ref::<ThresholdError>().is_some()
        || error.downcast_ref::<capacity::PlanError>().is_some()
}

async fn run(args: RunArgs) -> anyhow::Result<std::process::ExitCode> {
    let raw = args.raw_scenario()?;
    let thresholds = Thresholds::from_raw(&raw, &columns_of::<SummaryRow>())?;
    let scenario = raw.validate()?;
    let description = serde_json::to_value(&scenario)?;
    let plans = CellPlan::per_pattern(scenario);
    let outcome = measure(&args, plans, description, Vec::new()).await?;
    let checked = check_summary(&thresholds, &outcome.dir)?;
    Ok(exit_code(outcome.complete, checked))
}

async fn compare(args: CompareArgs) -> anyhow::Result<std::process::ExitCode> {
    let raw = args.raw_study()?;
    let thresholds = Thresholds::from_raw(&raw, &columns_of::<SummaryRow>())?;
    let mut study = study::with_defaults(raw, args.quick);
    if study::needs_private_redis(&study)? && !commbench_servers::redis_server::installed() {
        eprintln!(
            "note: redis-server is not installed, so the in-process vs Redis cells are left out; {}",
            commbench_servers::redis_server::INSTALL_HINT
        );
        study.set_flag("bus_patterns", "none");
    }
    let (plans, notes) = study::with_peers(&study, study::plans(&study)?)?;
    for note in &notes {
        eprintln!("note: {note}");
    }
    eprintln!("comparing {} cells", plans.len());
    let outcome = measure(&args.run, plans, study.to_json(), notes).await?;
    report(&outcome.dir)?;
    let checked = check_summary(&thresholds, &outcome.dir)?;
    Ok(exit_code(outcome.complete, checked))
}

/// `commbench capacity`: the searches, `capacity.csv`, the report, the thresholds.
async fn capacity(args: CapacityArgs) -> anyhow::Result<std::process::ExitCode> {
    let plan = capacity::Plan::from_args(&args)?;
    eprintln!(
        "capacity: {} searches for {} under {}",
        plan.searches.len(),
        plan.vary.unit(),
        plan.slo
    );
    let outcome = capacity::run(
        &plan,
        SessionOptions {
            plans: Vec::new(),
            description: plan.description(),
            out: args.run.out.clone(),
            quiet: args.run.quiet,
            server_args: args.run.server_arg.clone(),
            interrupt: interrupt_on_ctrl_c(),
            notes: Vec::new(),
        },
    )
    .await?;
    for line in commbench_loadgen::report::capacity::sentences(&outcome.rows) {
        println!("{line}");
    }
    println!("results: {}", outcome.dir.display());
    report(&outcome.dir)?;
    let rows = output::read_capacity(&outcome.dir.join(output::CAPACITY_FILE))?;
    let checked = check_rows(&plan.thresholds, &rows);
    Ok(exit_code(outcome.complete, checked))
}

/// Checks the thresholds against the run's `summary.csv`; true when all held.
fn check_summary(thresholds: &Thresholds, dir: &std::path::Path) -> anyhow::Result<bool> {
    if thresholds.list.is_empty() {
        return Ok(true);
    }
    let rows = output::read_summary(&dir.join("summary.csv"))?;
    Ok(check_rows(thresholds, &rows))
}

/// Prints what checking `rows` found; true when every threshold held.
fn check_rows<R: threshold::Checked>(thresholds: &Thresholds, rows: &[R]) -> bool {
    if thresholds.list.is_empty() {
        return true;
    }
    let report = threshold::check(thresholds, rows);
    println!("{report}");
    report.passed()
}

fn report(dir: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    let outcome = commbench_loadgen::report::render_report(dir)?;
    println!("{outcome}");
    Ok(std::process::ExitCode::SUCCESS)
}

/// Runs the cells (Ctrl-C ends the current one early), writes the results, prints the final table.
async fn measure(
    args: &RunArgs,
    plans: Vec<CellPlan>,
    description: serde_json::Value,
    notes: Vec<String>,
) -> anyhow::Result<SessionOutcome> {
    let outcome = run_session(SessionOptions {
        plans,
        description,
        out: args.out.clone(),
        quiet: args.quiet,
        server_args: args.server_arg.clone(),
        interrupt: interrupt_on_ctrl_c(),
        notes,
    })
    .await?;
    println!("{}", output::render_table(&outcome.cells));
    println!("results: {}", outcome.dir.display());
    Ok(outcome)
}

/// Cancelled on Ctrl-C: the current measurement ends early and what was measured is written.
fn interrupt_on_ctrl_c() -> CancellationToken {
    let interrupt = CancellationToken::new();
    let on_signal = interrupt.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\ninterrupted: finishing the current measurement and writing what was measured"
            );
            on_signal.cancel();
        }
    });
    interrupt
}

/// 130 for an interrupted run, 1 when a threshold failed, else 0.
fn exit_code(complete: bool, thresholds_held: bool) -> std::process::ExitCode {
    if !complete {
        println!("the run is INCOMPLETE (interrupted); run.json and summary.csv say so too");
        return std::process::ExitCode::from(130);
    }
    if !thresholds_held {
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

async fn serve(args: ServeArgs) -> anyhow::Result<std::process::ExitCode> {
    let config = args.config;
    let stop = CancellationToken::new();
    if args.exit_on_stdin_eof {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut sink = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
            stop.cancel();
        });
    }
    commbench_servers::serve_until(config, async move {
        tokio::select! {
            () = commbench_servers::shutdown_signal() => {}
            () = stop.cancelled() => {}
        }
    })
    .await
    .context("server failed")?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `commbench worker`: runs until Ctrl-C/SIGTERM (or its own limits), then prints its report.
async fn worker(
    args: commbench_loadgen::worker::WorkerArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        commbench_servers::shutdown_signal().await;
        on_signal.cancel();
    });
    let report = commbench_loadgen::worker::run(args, stop)
        .await
        .context("worker failed")?;
    println!("{report}");
    Ok(std::process::ExitCode::SUCCESS)
}
