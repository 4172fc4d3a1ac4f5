//! Runs a scenario: for each pattern, a fresh embedded server (or the external target), clients
//! started at the ramp rate, publishing through warm-up and the measured window, a drain for late
//! deliveries, then the cell's result. Ctrl-C ends the window early and marks the run incomplete.

mod monitors;
mod usage;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use tokio::{
    sync::watch,
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;

use self::{
    monitors::Monitors,
    usage::{CpuReading, Processes},
};
use crate::{
    clients::{notify_topic, ClientCtx, Phase, RunShared},
    clock::RunClock,
    fleet::{CellKeys, Fleet, FleetError},
    health,
    net::SourceAddrs,
    pattern::{Kind, Pattern, RateOf},
    procstat::RssPeaks,
    publisher,
    record::{CounterSnapshot, Recorder},
    result::{CellResult, CellSpec},
    scenario::Scenario,
};

/// Histogram shards: enough that concurrent clients rarely share one.
const SHARDS: usize = 64;

/// How one cell is run.
pub struct CellOptions {
    pub scenario: Arc<Scenario>,
    pub pattern: Pattern,
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
    let fleet = start_target(&options).await?;
    let result = measure(&options, &fleet).await;
    fleet.stop(&cell_keys(&options)).await;
    result
}

/// Starts the cell's embedded servers (or the profile's server, or connects to the external
/// target).
async fn start_target(options: &CellOptions) -> Result<Fleet, FleetError> {
    let scenario = &options.scenario;
    let args = if scenario.target.is_some() || scenario.profile.is_some() {
        Vec::new()
    } else {
        server_args(options)
    };
    Fleet::start(&options.scenario, &args).await
}

/// The embedded servers' flags: room for the cell's connections and topics, and workers only
/// where jobs are measured; a flag the user passes with `--server-arg` wins.
fn server_args(options: &CellOptions) -> Vec<String> {
    let scenario = &options.scenario;
    let is_job = options.pattern.is_job();
    // Job users over SSE/WebSocket each follow a topic of their own.
    let notify_topics = if is_job { scenario.clients } else { 0 };
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
    if is_job {
        defaults.push(("--workers", scenario.workers.to_string()));
        defaults.push(("--worker-queue", queue_name(options)));
    } else {
        // Idle workers still ask their queue for work (on Redis, a script call every 250 ms):
        // none in cells that measure something else.
        defaults.push(("--workers", "0".to_owned()));
    }
    let given = |flag: &str| {
        options
            .server_args
            .iter()
            .any(|arg| arg == flag || arg.starts_with(&format!("{flag}=")))
    };
    let mut args = Vec::new();
    for (flag, value) in defaults {
        if !given(flag) {
            args.extend([flag.to_owned(), value]);
        }
    }
    args.extend(options.server_args.iter().cloned());
    args
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

/// The steps of a cell on a started target: ramp, warm-up and window, drain, result.
async fn measure(options: &CellOptions, fleet: &Fleet) -> Result<CellResult, RunError> {
    let run = CellRun::start(options, fleet);
    let mut clients = match run.ramp().await {
        Ok(clients) => clients,
        Err(error) => {
            run.monitors.finish().await;
            return Err(error);
        }
    };
    let (window, publisher) = run.warm_up_and_window().await;
    run.drain(&mut clients, publisher).await;
    Ok(run.result(window).await)
}

/// A cell from its first client to its last: what the steps share.
struct CellRun<'a> {
    options: &'a CellOptions,
    fleet: &'a Fleet,
    shared: Arc<RunShared>,
    phase: watch::Sender<Phase>,
    /// Ctrl-C, or too many errors (`--max-errors`), ends the cell early.
    stop: CancellationToken,
    monitors: Monitors,
}

/// What the measured window saw.
struct Window {
    interrupted: bool,
    measured_s: f64,
    /// The counters at the start and the end of the window.
    counters: (CounterSnapshot, CounterSnapshot),
    /// CPU used so far at the start and the end of the window.
    cpu: (CpuReading, CpuReading),
    processes: Processes,
    /// Peak memory through the warm-up and the window.
    rss: RssPeaks,
}

/// The publisher task and how to stop it.
struct Publisher {
    task: JoinHandle<HashMap<String, u64>>,
    stop: CancellationToken,
}

impl<'a> CellRun<'a> {
    /// The shared state every client sees, and the tasks that watch the cell.
    fn start(options: &'a CellOptions, fleet: &'a Fleet) -> Self {
        let scenario = options.scenario.clone();
        let recorder = Arc::new(Recorder::new(SHARDS));
        let (phase_tx, phase) = watch::channel(Phase::Ramp);
        let shared = Arc::new(RunShared {
            scenario: scenario.clone(),
            pattern: options.pattern,
            targets: fleet.targets.clone(),
            recorder: recorder.clone(),
            clock: RunClock::start(),
            phase,
            window_start_ns: AtomicU64::new(u64::MAX),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            final_heads: OnceLock::new(),
            issued: (0..scenario.topics).map(|_| AtomicU64::new(0)).collect(),
            // Short (they are in every event's bytes) yet unique per run and cell on a shared server.
            topics: topic_names(options),
            queue: queue_name(options),
        });
        let stop = options.interrupt.child_token();
        let cell = cell_spec(&scenario, options.pattern).name();
        let monitors = Monitors::start(options, &cell, &recorder, &stop);
        Self {
            options,
            fleet,
            shared,
            phase: phase_tx,
            stop,
            monitors,
        }
    }

    /// Starts clients at the configured rate and waits until each is subscribed or has failed;
    /// an error when none started.
    async fn ramp(&self) -> Result<JoinSet<()>, RunError> {
        let scenario = &self.options.scenario;
        let targets = &self.fleet.targets;
        let sources: Vec<SourceAddrs> = targets
            .iter()
            .map(|target| SourceAddrs::for_target(target.addr))
            .collect();
        let instances = targets.len();
        let pattern = self.options.pattern;
        let client = pattern.client(scenario.profiled(pattern));
        let mut clients = JoinSet::new();
        let ramp_started = Instant::now();
        for id in 0..scenario.clients {
            let due = ramp_started + Duration::from_secs_f64(id as f64 / scenario.ramp as f64);
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = self.stop.cancelled() => break,
            }
            // Round-robin over the instances, as a load balancer would; each instance's clients
            // get their own spread of source addresses.
            let instance = id % instances;
            clients.spawn(client(ClientCtx {
                id,
                shared: self.shared.clone(),
                target: targets[instance].clone(),
                remote: instance != 0,
                source: sources[instance].source(id / instances),
                rng: fastrand::Rng::with_seed(id as u64),
            }));
        }
        let shared = &self.shared;
        let settled = || shared.ready.load(Relaxed) + shared.failed.load(Relaxed);
        let ramp_deadline = Instant::now() + Duration::from_secs(30);
        while settled() < clients.len()
            && Instant::now() < ramp_deadline
            && !self.stop.is_cancelled()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Someone else's server that refuses every client still gets its cell, marked, with the
        // errors counted by kind: the run goes on.
        if shared.ready.load(Relaxed) > 0 || scenario.profiled(pattern) {
            return Ok(clients);
        }
        let _ = self.phase.send(Phase::Stop);
        clients.shutdown().await;
        let errors = shared.recorder.counters.errors();
        let errors = if errors.is_empty() {
            "none started in time".to_owned()
        } else {
            format!("{errors:?}")
        };
        let target = targets.iter().map(|t| t.authority.as_str());
        Err(RunError::NoClients {
            target: target.collect::<Vec<_>>().join(", "),
            errors,
        })
    }

    /// Publishing starts; samples count from the end of the warm-up; counters, CPU and memory are
    /// read at both ends of the window. The publisher is still running.
    async fn warm_up_and_window(&self) -> (Window, Option<Publisher>) {
        let scenario = &self.options.scenario;
        let clock = self.shared.clock;
        let run_start = clock.now_ns();
        let window_start = run_start + scenario.warmup.as_nanos() as u64;
        let window_end = window_start + scenario.duration.as_nanos() as u64;
        self.shared.window_start_ns.store(window_start, Relaxed);
        let _ = self.phase.send(Phase::Run);
        let publisher = scenario.publishes(self.options.pattern).then(|| {
            let stop = self.stop.child_token();
            let task = tokio::spawn(publisher::publish(
                self.shared.clone(),
                run_start,
                window_end,
                stop.clone(),
            ));
            Publisher { task, stop }
        });
        let processes = Processes::of(self.fleet);
        let (rss, rss_task) = RssPeaks::start(processes.all(), Duration::from_millis(250));
        let counters = &self.shared.recorder.counters;
        let interrupted = !sleep_until_ns(clock, window_start, &self.stop).await;
        let start = (counters.snapshot(), processes.cpu());
        let window_started = Instant::now();
        let interrupted = interrupted || !sleep_until_ns(clock, window_end, &self.stop).await;
        let measured_s = window_started.elapsed().as_secs_f64();
        let end = (counters.snapshot(), processes.cpu());
        rss_task.abort();
        let window = Window {
            interrupted,
            measured_s,
            counters: (start.0, end.0),
            cpu: (start.1, end.1),
            processes,
            rss,
        };
        (window, publisher)
    }

    /// Publishing stops; feed clients catch up to the final heads, then everyone stops.
    async fn drain(&self, clients: &mut JoinSet<()>, publisher: Option<Publisher>) {
        let final_heads = match publisher {
            Some(Publisher { task, stop }) => {
                stop.cancel();
                task.await.unwrap_or_default()
            }
            None => HashMap::new(),
        };
        let _ = self.shared.final_heads.set(final_heads);
        let _ = self.phase.send(Phase::Drain);
        let drained = tokio::time::timeout(self.options.scenario.drain, async {
            while clients.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        let _ = self.phase.send(Phase::Stop);
        if !drained {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while clients.join_next().await.is_some() {}
            })
            .await;
            clients.shutdown().await;
        }
    }

    /// The cell's result: counters over the window (loss over each client's subscription), the
    /// processes' usage, the histograms, and what the harness's health says about them.
    async fn result(self, window: Window) -> CellResult {
        let ready = self.shared.ready.load(Relaxed);
        let recorder = self.shared.recorder.clone();
        let (histograms, lag) = self.monitors.finish().await;
        let (start_cpu, end_cpu) = &window.cpu;
        let usage = window
            .processes
            .usage(&window.rss, start_cpu, end_cpu)
            .await;
        let (start, end) = &window.counters;
        let counters = CounterSnapshot::windowed(start, end, &recorder.counters.snapshot());
        let seconds = window.measured_s.max(1e-9);
        let achieved_rate = match self.options.pattern.about().rate_of {
            RateOf::Requests => counters.requests as f64 / seconds,
            RateOf::Publishes => counters.published as f64 / seconds,
        };
        let mut result = CellResult {
            spec: cell_spec(&self.options.scenario, self.options.pattern),
            complete: !window.interrupted,
            measured_s: window.measured_s,
            counters,
            errors: recorder.counters.errors(),
            histograms,
            server: usage.servers,
            broker: usage.broker,
            loadgen: usage.loadgen,
            achieved_rate,
            loadgen_lag_p99_us: lag.value_at_quantile(0.99),
            warnings: Vec::new(),
        };
        result.warnings = health::warnings(&result, &self.options.scenario, ready);
        result
    }
}

/// Names unique per run and cell on a shared server, yet short: they are in every event's bytes.
fn cell_prefix(options: &CellOptions) -> String {
    let run_tag = options.run_id.rsplit('-').next().unwrap_or("0");
    format!("cb{run_tag}c{}", options.index)
}

/// The cell's job queue: its own on the embedded servers (whose workers are told to serve it), the
/// server's default worker queue `jobs` on an external target.
fn queue_name(options: &CellOptions) -> String {
    if options.scenario.target.is_some() || options.scenario.profile.is_some() {
        "jobs".to_owned()
    } else {
        format!("{}q", cell_prefix(options))
    }
}

/// Sleeps until run-clock `ns`; false if interrupted first.
async fn sleep_until_ns(clock: RunClock, ns: u64, interrupt: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(clock.instant_at(ns).into()) => true,
        () = interrupt.cancelled() => false,
    }
}

fn cell_spec(scenario: &Scenario, pattern: Pattern) -> CellSpec {
    let polls = pattern.polls_on_interval();
    CellSpec {
        pattern,
        clients: scenario.clients,
        rate: if pattern.kind() == Kind::Request && scenario.closed_loop {
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
        target: scenario.target_name(pattern),
    }
}
