//! `commbench`: the user-facing command. Errors become one clear message and a non-zero exit.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use commbench_loadgen::{
    agent::Coordinator,
    cli::{Cli, Command, CompareArgs, RunArgs, ServeArgs},
    output,
    pin::{self, CpuList, CpuPlan},
    priority,
    procs::{host::HostOptions, pipe, Placement},
    session::{run_session, CellPlan, SessionOptions, SessionOutcome},
    study,
};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    commbench_servers::init_tracing();
    // Thousands of clients need thousands of descriptors; raise the soft limit to the hard one.
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    // Pinned before the runtime starts, so its threads inherit the set and it sizes itself to it.
    let placed = match place_process(&cli.command) {
        Ok(placed) => placed,
        Err(error) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
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
            Command::Report(args) => report(&args.dir),
            Command::Serve(args) => serve(args).await,
            Command::Worker(args) => worker(args).await,
            Command::Agent(args) => agent(args).await,
            Command::LoadWorker(_) => {
                pipe::serve_stdio(HostOptions::default()).await;
                Ok(std::process::ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
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
        Command::Report(_) | Command::Worker(_) => return Ok((Arc::default(), None)),
    };
    let embedded = run.raw_scenario()?.text_of("target").is_none();
    let plan = CpuPlan::choose(&run.pin_request(), embedded)?;
    if let Some(set) = &plan.loadgen {
        pin::pin_self(set)?;
    }
    Ok((Arc::new(plan), Some(run.priority)))
}

async fn run(args: RunArgs, placed: Placement) -> anyhow::Result<std::process::ExitCode> {
    let scenario = args.raw_scenario()?.validate()?;
    let description = serde_json::to_value(&scenario)?;
    let plans = CellPlan::per_pattern(scenario);
    let outcome = measure(&args, plans, description, placed).await?;
    Ok(exit_code(&outcome))
}

async fn compare(args: CompareArgs, placed: Placement) -> anyhow::Result<std::process::ExitCode> {
    let mut study = study::with_defaults(args.raw_study()?, args.quick);
    if study::needs_private_redis(&study)? && !commbench_servers::redis_server::installed() {
        eprintln!(
            "note: redis-server is not installed, so the in-process vs Redis cells are left out; {}",
            commbench_servers::redis_server::INSTALL_HINT
        );
        study.set_flag("bus_patterns", "none");
    }
    let plans = study::plans(&study)?;
    eprintln!("comparing {} cells", plans.len());
    let outcome = measure(&args.run, plans, study.to_json(), placed).await?;
    let code = exit_code(&outcome);
    report(&outcome.dir)?;
    Ok(code)
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
    placed: Placement,
) -> anyhow::Result<SessionOutcome> {
    let agents = match (args.agents, &args.coordinator) {
        (Some(count), Some(url)) => {
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
            Some(Arc::new(coordinator))
        }
        _ => None,
    };
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
    let outcome = run_session(SessionOptions {
        plans,
        description,
        out: args.out.clone(),
        quiet: args.quiet,
        server_args: args.server_arg.clone(),
        interrupt,
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

fn exit_code(outcome: &SessionOutcome) -> std::process::ExitCode {
    if outcome.complete {
        return std::process::ExitCode::SUCCESS;
    }
    println!(
        "the run is INCOMPLETE (interrupted, or a load worker was lost); run.json and summary.csv say so too"
    );
    std::process::ExitCode::from(130)
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
