//! Runs a scenario: for each pattern, a fresh embedded server (or the external target), clients
//! started at the ramp rate, publishing through warm-up and the measured window, a drain for late
//! deliveries, then the cell's result. Ctrl-C ends the window early and marks the run incomplete.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    clients::notify_topic,
    clients::{client_for, ClientCtx, Phase, RunShared},
    clock::RunClock,
    collector::Collector,
    fleet::{CellKeys, Fleet, FleetError},
    net::SourceAddrs,
    procstat::{cpu_seconds, RssPeaks},
    progress::Progress,
    publisher,
    record::{new_histogram, CounterSnapshot, Recorder},
    result::{CellResult, CellSpec, ProcessUsage},
    scenario::{PatternName, Scenario},
};

/// Histogram shards: enough that concurrent clients rarely share one.
const SHARDS: usize = 64;

/// How one cell is run.
pub struct CellOptions {
    pub scenario: Arc<Scenario>,
    pub pattern: PatternName,
    pub index: usize,
    pub run_id: String,
    pub dir: PathBuf,
    pub quiet: bool,
    /// Extra flags for the embedded server (e.g. a test-only stall).
    pub server_args: Vec<String>,
    pub interrupt: CancellationToken,
}

/// Why a cell could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("no client could start against {target}: {errors}")]
    NoClients { target: String, errors: String },
}

/// Runs one pattern cell and returns what it measured.
pub async fn run_cell(options: CellOptions) -> Result<CellResult, RunError> {
    let scenario = options.scenario.clone();
    let mut args = Vec::new();
    if scenario.target.is_none() {
        // Job users over SSE/WebSocket each follow a topic of their own.
        let notify_topics = if options.pattern.is_job() {
            scenario.clients
        } else {
            0
        };
        let mut defaults = vec![
            (
                "--max-connections",
                (scenario.clients * 2 + 1_000).to_string(),
            ),
            (
                "--max-topics",
                (scenario.topics + notify_topics + 16).to_string(),
            ),
            // Clients open their connections during the ramp and may poll once an hour: the
            // harness's own idle connections are not the hostile kind.
            ("--idle-timeout", "1h".to_owned()),
        ];
        if options.pattern.is_job() {
            defaults.push(("--workers", scenario.workers.to_string()));
            defaults.push(("--worker-queue", queue_name(&options)));
        } else {
            // Idle workers still ask their queue for work (on Redis, a script call every 250 ms):
            // none in cells that measure something else.
            defaults.push(("--workers", "0".to_owned()));
        }
        // A flag the user passes with --server-arg wins over the load generator's choice.
        let given = |flag: &str| {
            options
                .server_args
                .iter()
                .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
        };
        for (flag, value) in defaults {
            if !given(flag) {
                args.extend([flag.to_owned(), value]);
            }
        }
        args.extend(options.server_args.iter().cloned());
    }
    let fleet = Fleet::start(&scenario, &args).await?;
    let result = measure(&options, &fleet).await;
    fleet.stop(&cell_keys(&options)).await;
    result
}

/// Every topic and queue the cell may create on the server (what `--bus-url` runs remove again).
fn cell_keys(options: &CellOptions) -> CellKeys {
    let queue = queue_name(options);
    let mut topics = topic_names(options);
    if options.pattern.is_job() {
        topics.extend((0..options.scenario.clients).map(|id| notify_topic(&queue, id)));
    }
    CellKeys {
        topics,
        queues: options
            .pattern
            .is_job()
            .then_some(queue)
            .into_iter()
            .collect(),
    }
}

fn topic_names(options: &CellOptions) -> Vec<String> {
    let prefix = cell_prefix(options);
    (0..options.scenario.topics)
        .map(|i| format!("{prefix}t{i}"))
        .collect()
}

async fn measure(options: &CellOptions, fleet: &Fleet) -> Result<CellResult, RunError> {
    let scenario = options.scenario.clone();
    let spec = cell_spec(&scenario, options.pattern);
    let cell = spec.name();
    let recorder = Arc::new(Recorder::new(SHARDS));
    let clock = RunClock::start();
    let (phase_tx, phase) = watch::channel(Phase::Ramp);
    // Short (they are in every event's bytes) yet unique per run and cell on a shared server.
    let topics = topic_names(options);
    let shared = Arc::new(RunShared {
        scenario: scenario.clone(),
        targets: fleet.targets.clone(),
        recorder: recorder.clone(),
        clock,
        phase,
        window_start_ns: AtomicU64::new(u64::MAX),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        final_heads: OnceLock::new(),
        topics,
        queue: queue_name(options),
    });
    let total = scenario.warmup + scenario.duration + scenario.drain;
    let progress = Progress::new(&cell, total, options.quiet);
    let stop_collector = CancellationToken::new();
    let collector = tokio::spawn(
        Collector {
            recorder: recorder.clone(),
            dir: options.dir.clone(),
            cell: cell.clone(),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            interval: Duration::from_secs(1),
            progress: progress.clone(),
        }
        .run(stop_collector.clone()),
    );
    let lag_probe = tokio::spawn(scheduling_lag(stop_collector.clone()));
    // Ctrl-C, or too many errors (`--max-errors`), ends the cell early.
    let stop = options.interrupt.child_token();
    let error_watch = tokio::spawn(stop_on_errors(
        recorder.clone(),
        scenario.max_errors,
        stop.clone(),
    ));

    // Ramp: start clients at the configured rate and wait until each is subscribed or has failed.
    let sources: Vec<SourceAddrs> = fleet
        .targets
        .iter()
        .map(|target| SourceAddrs::for_target(target.addr))
        .collect();
    let instances = fleet.targets.len();
    let client = client_for(options.pattern);
    let mut clients = tokio::task::JoinSet::new();
    let ramp_started = Instant::now();
    for id in 0..scenario.clients {
        let due = ramp_started + Duration::from_secs_f64(id as f64 / scenario.ramp as f64);
        tokio::select! {
            () = tokio::time::sleep_until(due.into()) => {}
            () = stop.cancelled() => break,
        }
        // Round-robin over the instances, as a load balancer would; each instance's clients get
        // their own spread of source addresses.
        let instance = id % instances;
        clients.spawn(client(ClientCtx {
            id,
            shared: shared.clone(),
            target: fleet.targets[instance].clone(),
            remote: instance != 0,
            source: sources[instance].source(id / instances),
            rng: fastrand::Rng::with_seed(id as u64),
        }));
    }
    let settled = || shared.ready.load(Relaxed) + shared.failed.load(Relaxed);
    let ramp_deadline = Instant::now() + Duration::from_secs(30);
    while settled() < clients.len() && Instant::now() < ramp_deadline && !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if shared.ready.load(Relaxed) == 0 {
        let _ = phase_tx.send(Phase::Stop);
        clients.shutdown().await;
        stop_collector.cancel();
        let _ = collector.await;
        progress.finish();
        let errors = recorder.counters.errors();
        let errors = if errors.is_empty() {
            "none started in time".to_owned()
        } else {
            format!("{errors:?}")
        };
        let target = fleet.targets.iter().map(|t| t.authority.as_str());
        return Err(RunError::NoClients {
            target: target.collect::<Vec<_>>().join(", "),
            errors,
        });
    }

    // Warm-up and the measured window.
    let run_start = clock.now_ns();
    let window_start = run_start + scenario.warmup.as_nanos() as u64;
    let window_end = window_start + scenario.duration.as_nanos() as u64;
    shared.window_start_ns.store(window_start, Relaxed);
    let _ = phase_tx.send(Phase::Run);
    let stop_publishing = stop.child_token();
    let publisher = options.pattern.uses_feed().then(|| {
        tokio::spawn(publisher::publish(
            shared.clone(),
            run_start,
            window_end,
            stop_publishing.clone(),
        ))
    });
    let processes = Processes::of(fleet);
    let (rss, rss_task) = RssPeaks::start(processes.all(), Duration::from_millis(250));
    let interrupted = !sleep_until_ns(clock, window_start, &stop).await;
    let start_counters = recorder.counters.snapshot();
    let start_cpu = processes.cpu();
    let window_started = Instant::now();
    let interrupted = interrupted || !sleep_until_ns(clock, window_end, &stop).await;
    let measured_s = window_started.elapsed().as_secs_f64();
    let end_counters = recorder.counters.snapshot();
    let end_cpu = processes.cpu();
    rss_task.abort();

    // Drain: publishing stops; feed clients catch up to the final heads, then everyone stops.
    stop_publishing.cancel();
    let final_heads = match publisher {
        Some(task) => task.await.unwrap_or_default(),
        None => HashMap::new(),
    };
    let _ = shared.final_heads.set(final_heads);
    let _ = phase_tx.send(Phase::Drain);
    let drained = tokio::time::timeout(scenario.drain, async {
        while clients.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    let _ = phase_tx.send(Phase::Stop);
    if !drained {
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while clients.join_next().await.is_some() {}
        })
        .await;
        clients.shutdown().await;
    }
    stop_collector.cancel();
    error_watch.abort();
    let histograms = collector.await.unwrap_or_default();
    let lag = lag_probe.await.unwrap_or_else(|_| new_histogram());
    progress.finish();

    let counters = CounterSnapshot::windowed(
        &start_counters,
        &end_counters,
        &recorder.counters.snapshot(),
    );
    let window = measured_s.max(1e-9);
    let server_usage = match (start_cpu.servers, end_cpu.servers) {
        (Some(start), Some(end)) => {
            let mut peak_rss_bytes = 0;
            for pid in &processes.servers {
                peak_rss_bytes += rss.peak(*pid).await;
            }
            Some(ProcessUsage {
                cpu_s: end - start,
                peak_rss_bytes,
            })
        }
        _ => None,
    };
    let broker_usage = match (processes.broker, start_cpu.broker, end_cpu.broker) {
        (Some(pid), Some(start), Some(end)) => Some(ProcessUsage {
            cpu_s: end - start,
            peak_rss_bytes: rss.peak(pid).await,
        }),
        _ => None,
    };
    let loadgen = ProcessUsage {
        cpu_s: end_cpu.loadgen.unwrap_or(0.0) - start_cpu.loadgen.unwrap_or(0.0),
        peak_rss_bytes: rss.peak(std::process::id()).await,
    };
    let achieved_rate = match options.pattern {
        PatternName::RequestResponse | PatternName::PollUrl => counters.requests as f64 / window,
        _ => counters.published as f64 / window,
    };
    let mut result = CellResult {
        spec,
        complete: !interrupted,
        measured_s,
        counters,
        errors: recorder.counters.errors(),
        histograms,
        server: server_usage,
        broker: broker_usage,
        loadgen,
        achieved_rate,
        loadgen_lag_p99_us: lag.value_at_quantile(0.99),
        warnings: Vec::new(),
    };
    result.warnings = warnings(&result, &scenario, shared.ready.load(Relaxed));
    Ok(result)
}

/// Names unique per run and cell on a shared server, yet short: they are in every event's bytes.
fn cell_prefix(options: &CellOptions) -> String {
    let run_tag = options.run_id.rsplit('-').next().unwrap_or("0");
    format!("cb{run_tag}c{}", options.index)
}

/// The cell's job queue: its own on the embedded servers (whose workers are told to serve it), the
/// server's default worker queue `jobs` on an external target.
fn queue_name(options: &CellOptions) -> String {
    match options.scenario.target {
        Some(_) => "jobs".to_owned(),
        None => format!("{}q", cell_prefix(options)),
    }
}

/// Sleeps until run-clock `ns`; false if interrupted first.
async fn sleep_until_ns(clock: RunClock, ns: u64, interrupt: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(clock.instant_at(ns).into()) => true,
        () = interrupt.cancelled() => false,
    }
}

/// The processes whose CPU and memory a cell reports.
struct Processes {
    servers: Vec<u32>,
    broker: Option<u32>,
}

/// CPU seconds used so far: the load generator, every server instance together, the broker.
struct CpuReading {
    loadgen: Option<f64>,
    servers: Option<f64>,
    broker: Option<f64>,
}

impl Processes {
    fn of(fleet: &Fleet) -> Self {
        Self {
            servers: fleet.server_pids(),
            broker: fleet.broker_pid(),
        }
    }

    fn all(&self) -> Vec<u32> {
        let mut pids = vec![std::process::id()];
        pids.extend(&self.servers);
        pids.extend(self.broker);
        pids
    }

    fn cpu(&self) -> CpuReading {
        let servers = (!self.servers.is_empty())
            .then(|| self.servers.iter().map(|pid| cpu_seconds(*pid)).sum())
            .flatten();
        CpuReading {
            loadgen: cpu_seconds(std::process::id()),
            servers,
            broker: self.broker.and_then(cpu_seconds),
        }
    }
}

/// Cancels `stop` once `max_errors` (when non-zero) errors have been counted.
async fn stop_on_errors(recorder: Arc<Recorder>, max_errors: u64, stop: CancellationToken) {
    if max_errors == 0 {
        return;
    }
    while recorder.counters.error_total.load(Relaxed) < max_errors {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(max_errors, "stopping the cell: error limit reached");
    stop.cancel();
}

/// How late the load generator's own timers fire (µs): a busy load generator shows here first.
async fn scheduling_lag(stop: CancellationToken) -> Histogram<u64> {
    let mut lag = new_histogram();
    let period = Duration::from_millis(10);
    while !stop.is_cancelled() {
        let due = Instant::now() + period;
        tokio::time::sleep_until(due.into()).await;
        let late = Instant::now().saturating_duration_since(due).as_micros() as u64;
        let _ = lag.record(late.clamp(1, crate::record::MAX_MICROS));
    }
    lag
}

fn cell_spec(scenario: &Scenario, pattern: PatternName) -> CellSpec {
    let polls = pattern.polls_on_interval();
    CellSpec {
        pattern,
        clients: scenario.clients,
        rate: if pattern == PatternName::RequestResponse && scenario.closed_loop {
            0.0
        } else {
            scenario.rate
        },
        payload: scenario.payload,
        interval_s: if polls {
            scenario.interval.as_secs_f64()
        } else {
            0.0
        },
        topics: scenario.topics,
        duration_s: scenario.duration.as_secs_f64(),
        warmup_s: scenario.warmup.as_secs_f64(),
        bus: scenario.bus,
        instances: scenario.instances,
    }
}

/// Flags the numbers that may describe the load generator rather than the server.
fn warnings(result: &CellResult, scenario: &Scenario, ready: usize) -> Vec<String> {
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
        && (result.spec.pattern.counts_loss()
            || result.spec.pattern == PatternName::RequestResponse);
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
