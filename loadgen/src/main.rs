//! `commbench`: the user-facing command. Errors become one clear message and a non-zero exit.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use commbench_loadgen::{
    agent::Coordinator,
    capacity::{self, CapacityArgs},
    cli::{Cli, Command, CompareArgs, RunArgs, ServeArgs},
    fleet,
    output::{self, SummaryRow},
    pin::{self, CpuList, CpuPlan},
    priority,
    procs::{host::HostOptions, pipe, Placement},
    profile::{guard, Profile},
    scenario::ScenarioError,
    session::{run_session, CellPlan, SessionOptions, SessionOutcome},
    study,
    threshold::{self, columns_of, ThresholdError, Thresholds},
};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Before the runtime: the guard stays one thread, so the stop signals it holds off stay off.
    if let Command::Guard(args) = &cli.command {
        return guard::run(&args.command);
    }
    commbench_servers::init_tracing();
    // Thousands of clients need thousands of descriptors; raise the soft limit to the hard one.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    // Pinned before the runtime starts, so its threads inherit the set and it sizes itself to it.
    let placed = match place_process(&cli.command) {
        Ok(placed) => placed,
        Err(error) => return error_exit(&error),
    };
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
            Command::Run(args) => run(args, placed).await,
            Command::Compare(args) => compare(args, placed).await,
            Command::Capacity(args) => capacity(args, placed).await,
            Command::Report(args) => report(&args.dir),
            Command::Serve(args) => serve(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Agent(args) => agent(args).await,
            Command::Floor(args) => floor(args).await,
            Command::LoadWorker(_) => {
                pipe::serve_stdio(HostOptions::default()).await;
                Ok(std::process::ExitCode::SUCCESS)
            }
            // Handled before the runtime started.
            Command::Guard(args) => Ok(guard::run(&args.command)),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => error_exit(&error),
    }
}

/// Prints the error; status 2 for a usage error, else 1.
fn error_exit(error: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {error:#}");
    if is_usage_error(error) {
        std::process::ExitCode::from(2)
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// Chooses the run's CPU sets (or the set a server, worker or agent was given), pins this process
/// to its own and sets its scheduling class; every thread and child started later inherits both.
fn place_process(command: &Command) -> anyhow::Result<Placement> {
    let (cpus, priority) = pin_process(command)?;
    let scheduling = match priority {
        Some(request) => priority::apply(request)?,
        None => priority::Scheduling::default(),
    };
    Ok(Placement {
        cpus,
        scheduling,
        agents: None,
    })
}

fn pin_process(
    command: &Command,
) -> anyhow::Result<(Arc<CpuPlan>, Option<priority::PriorityRequest>)> {
    let pin_to = |flag: &'static str, text: &Option<String>| -> anyhow::Result<()> {
        if let Some(text) = text {
            pin::pin_self(&CpuList::parse_flag(flag, text)?)?;
        }
        Ok(())
    };
    let run = match command {
        Command::Run(args) => args,
        Command::Compare(args) => &args.run,
        Command::Capacity(args) => &args.run,
        // Servers and load workers started by `run` inherit its class; only their CPUs differ.
        Command::Serve(args) => {
            pin_to("--cpus", &args.cpus)?;
            return Ok((Arc::default(), None));
        }
        Command::LoadWorker(args) => {
            pin_to("--cpus", &args.cpus)?;
            return Ok((Arc::default(), None));
        }
        Command::Agent(args) => {
            pin_to("--cpus", &args.cpus)?;
            return Ok((Arc::default(), Some(args.priority)));
        }
        // The floor pins its own threads, each to its own set.
        Command::Report(_) | Command::Worker(_) | Command::Floor(_) | Command::Guard(_) => {
            return Ok((Arc::default(), None))
        }
    };
    let raw = run.raw_scenario()?;
    // Servers this run starts itself (embedded, or a profile's `[start]`) get a set of their own.
    let embedded = raw.text_of("target").is_none()
        && raw
            .text_of("profile")
            .is_none_or(|path| Profile::load(path.as_ref()).is_ok_and(|p| p.start.is_some()));
    let plan = CpuPlan::choose(&run.pin_request(), embedded)?;
    if let Some(set) = &plan.loadgen {
        pin::pin_self(set)?;
    }
    Ok((Arc::new(plan), Some(run.priority)))
}

/// A mistake in what was asked — a flag, a scenario field, a threshold, a goal — found before
/// anything ran: status 2, like the command line's own usage errors, so that 1 means a run failed.
fn is_usage_error(error: &anyhow::Error) -> bool {
    error.downcast_ref::<ScenarioError>().is_some()
        || error.downcast_ref::<ThresholdError>().is_some()
        || error.downcast_ref::<capacity::PlanError>().is_some()
        || error
            .downcast_ref::<pin::PinError>()
            .is_some_and(pin::PinError::is_usage)
}

async fn run(args: RunArgs, placed: Placement) -> anyhow::Result<std::process::ExitCode> {
    let raw = args.raw_scenario()?;
    let thresholds = Thresholds::from_raw(&raw, &columns_of::<SummaryRow>())?;
    let scenario = raw.validate()?;
    if scenario.bus_url.is_none() {
        if let Some(missing) = fleet::missing_broker(scenario.bus) {
            return Err(ScenarioError::Invalid {
                origin: raw.origin_of("bus"),
                detail: missing,
            }
            .into());
        }
    }
    let description = serde_json::to_value(&scenario)?;
    let plans = CellPlan::per_pattern(scenario);
    let outcome = measure(&args, plans, description, Vec::new(), placed).await?;
    let checked = check_summary(&thresholds, &outcome.dir)?;
    Ok(exit_code(outcome.complete, checked))
}

async fn compare(args: CompareArgs, placed: Placement) -> anyhow::Result<std::process::ExitCode> {
    let raw = args.raw_study()?;
    let thresholds = Thresholds::from_raw(&raw, &columns_of::<SummaryRow>())?;
    let mut study = study::with_defaults(raw, args.quick);
    let mut left_out = Vec::new();
    for broker in study::private_brokers(&study)? {
        if let Some(missing) = fleet::missing_broker(broker) {
            left_out.push(format!("the cells on {broker} were left out: {missing}"));
            study::leave_out(&mut study, broker);
        }
    }
    let (plans, mut notes) = study::with_peers(&study, study::plans(&study)?)?;
    notes.splice(0..0, left_out);
    for note in &notes {
        eprintln!("note: {note}");
    }
    eprintln!("comparing {} cells", plans.len());
    let outcome = measure(&args.run, plans, study.to_json(), notes, placed).await?;
    report(&outcome.dir)?;
    let checked = check_summary(&thresholds, &outcome.dir)?;
    Ok(exit_code(outcome.complete, checked))
}

/// `commbench capacity`: the searches, `capacity.csv`, the report, the thresholds.
async fn capacity(args: CapacityArgs, placed: Placement) -> anyhow::Result<std::process::ExitCode> {
    let plan = capacity::Plan::from_args(&args)?;
    eprintln!(
        "capacity: {} searches for {} under {}",
        plan.searches.len(),
        plan.vary.unit(),
        plan.slo
    );
    let agents = connect_agents(&args.run).await?;
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
            placement: Placement {
                agents: agents.clone(),
                ..placed
            },
        },
    )
    .await;
    if let Some(agents) = &agents {
        agents.finish().await;
    }
    let outcome = outcome?;
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
    placed: Placement,
) -> anyhow::Result<SessionOutcome> {
    let agents = connect_agents(args).await?;
    let outcome = run_session(SessionOptions {
        plans,
        description,
        out: args.out.clone(),
        quiet: args.quiet,
        server_args: args.server_arg.clone(),
        interrupt: interrupt_on_ctrl_c(),
        notes,
        placement: Placement {
            agents: agents.clone(),
            ..placed
        },
    })
    .await;
    if let Some(agents) = &agents {
        agents.finish().await;
    }
    let outcome = outcome?;
    println!("{}", output::render_table(&outcome.cells));
    println!("results: {}", outcome.dir.display());
    Ok(outcome)
}

/// A distributed run (`--agents N --coordinator URL`): waits until every agent has registered.
async fn connect_agents(args: &RunArgs) -> anyhow::Result<Option<Arc<Coordinator>>> {
    let (Some(count), Some(url)) = (args.agents, &args.coordinator) else {
        return Ok(None);
    };
    let wait = commbench_servers::units::parse_duration(&args.agent_wait)
        .map_err(|e| anyhow::anyhow!("--agent-wait: {e}"))?;
    eprintln!(
        "waiting up to {wait:?} for {count} agents at {url} (run `{}`)",
        args.run_name
    );
    let coordinator = Coordinator::connect(url, &args.run_name, count, wait).await?;
    eprintln!(
        "{count} agents registered; clocks agree within ±{:.0} µs",
        coordinator.clock_error_ns() as f64 / 1_000.0
    );
    Ok(Some(Arc::new(coordinator)))
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

/// 130 for an incomplete run (interrupted, or a load worker lost), 1 when a threshold failed,
/// else 0.
fn exit_code(complete: bool, thresholds_held: bool) -> std::process::ExitCode {
    if !complete {
        println!(
            "the run is INCOMPLETE (interrupted, or a load worker was lost); run.json and summary.csv say so too"
        );
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

/// `commbench agent`: hosts its shares until the coordinator is done.
async fn agent(
    args: commbench_loadgen::agent::AgentArgs,
) -> anyhow::Result<std::process::ExitCode> {
    commbench_loadgen::agent::run_agent(args).await?;
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

async fn floor(
    args: commbench_loadgen::floor::FloorArgs,
) -> anyhow::Result<std::process::ExitCode> {
    use commbench_loadgen::floor::{self, FloorError};
    let json = args.json;
    let measured = tokio::task::spawn_blocking(move || floor::run(&args))
        .await
        .context("the floor measurement panicked")?;
    let floor = match measured {
        Ok(floor) => floor,
        // A bad CPU list is a usage error (status 2), like `run`'s.
        Err(FloorError::Pin(error)) => return Err(error.into()),
        Err(error) => return Err(anyhow::Error::new(error).context("floor failed")),
    };
    if json {
        println!("{}", serde_json::to_string(&floor)?);
    } else {
        println!("{floor}");
    }
    Ok(std::process::ExitCode::SUCCESS)
}
