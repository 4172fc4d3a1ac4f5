//! Runs a scenario: for each pattern, a fresh embedded server (or the external target), the
//! descriptor budget checked, the publisher's connections opened, clients started at the ramp rate
//! (in this process, in load-worker processes, or on agents), publishing through warm-up and the
//! measured window, a drain for late deliveries, then the cell's result with everything merged.
//! Ctrl-C ends the window early and marks the run incomplete.

mod follow;
mod group;
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

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use self::{
    group::ClientGroup,
    monitors::{scheduling_lag, unix_now_s},
};
use self::{
    group::SETTLE_DEADLINE,
    monitors::Monitors,
    usage::{CpuReading, Processes},
};
use crate::{
    clients::{notify_topic, Phase, RunShared},
    clock::RunClock,
    fleet::{CellKeys, Fleet, FleetError},
    health,
    http::ClientError,
    pattern::{Kind, Pattern, RateOf},
    pin,
    procs::{
        budget::{self, BudgetError, Limits, ProcCount},
        pipe::{self, Children},
        pool::{Merged, Pool},
        protocol::{Command, WorkerProfile, WorkerSpec},
        Placement, Share,
    },
    procstat::RssPeaks,
    publisher::PublisherThread,
    record::{new_histogram, CounterSnapshot, Recorder},
    result::{CellPlacement, CellResult, CellSpec},
    scenario::Scenario,
};

/// Histogram shards: enough that clients on different threads rarely share one, few enough that
/// a process pinned to one CPU does not hold 64 copies of every histogram (each about 190 KB).
pub fn shards() -> usize {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    (threads * 4).clamp(2, 64)
}

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
    /// CPU sets, and agents when the run is distributed.
    pub placement: Placement,
}

/// Why a cell could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("not enough open files: {0}")]
    Budget(#[from] BudgetError),
    #[error("the publisher cannot connect to {target}: {error}")]
    Publisher { target: String, error: ClientError },
    #[error(transparent)]
    Workers(#[from] pipe::PipeError),
    #[error("no client could start against {target}: {errors}")]
    NoClients { target: String, errors: String },
}

/// Runs one pattern cell and returns what it measured.
pub async fn run_cell(options: CellOptions) -> Result<CellResult, RunError> {
    let agents = options.placement.agents.as_ref().map(|a| a.count());
    let limits = Limits::of_this_machine();
    let procs = budget::check(&options.scenario, options.pattern, limits, agents)?;
    let fleet = start_target(&options).await?;
    let result = measure(&options, &fleet, procs).await;
    fleet.stop(&cell_keys(&options)).await;
    result
}

/// Starts the cell's embedded servers (or the profile's server, or connects to the external
/// target), each server this run starts pinned to the servers' CPU set and the private broker to
/// its own.
async fn start_target(options: &CellOptions) -> Result<Fleet, FleetError> {
    let cpus = &options.placement.cpus;
    let scenario = &options.scenario;
    let args = if scenario.target.is_some() || scenario.profile.is_some() {
        Vec::new()
    } else {
        let mut args = server_args(options);
        if let Some(set) = &cpus.server {
            args.extend(["--cpus".to_owned(), set.to_string()]);
        }
        args
    };
    let fleet = Fleet::start(&options.scenario, &args).await?;
    if let (Some(pid), Some(set)) = (fleet.broker_pid(), &cpus.broker) {
        if let Err(error) = pin::pin_process(pid, set) {
            tracing::warn!(%error, "the broker runs unpinned");
        }
    }
    if let (Some(pid), Some(set)) = (fleet.profile_server_pid(), &cpus.server) {
        if let Err(error) = pin::pin_tree(pid, set) {
            tracing::warn!(%error, "the profile's server runs unpinned");
        }
    }
    Ok(fleet)
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

/// The steps of a cell on a started target: publisher, ramp, warm-up and window, drain, result.
async fn measure(
    options: &CellOptions,
    fleet: &Fleet,
    procs: ProcCount,
) -> Result<CellResult, RunError> {
    let run = CellRun::start(options, fleet);
    let publisher = match run.open_publisher().await {
        Ok(publisher) => publisher,
        Err(error) => {
            run.monitors.finish().await;
            return Err(error);
        }
    };
    // Log brokers: every instance follows every topic before publishing starts (`follow.rs`).
    let scenario = &options.scenario;
    let embedded = scenario.target.is_none() && scenario.profile.is_none();
    if embedded
        && matches!(
            scenario.bus,
            crate::scenario::BusKind::RabbitMq | crate::scenario::BusKind::Kafka
        )
    {
        follow::follow_topics(&fleet.targets, &run.shared.topics).await;
    }
    let mut hosts = match run.ramp(procs).await {
        Ok(hosts) => hosts,
        Err(error) => {
            run.monitors.finish().await;
            return Err(error);
        }
    };
    let (window, publisher) = run.warm_up_and_window(&hosts, publisher).await;
    run.drain(&mut hosts, publisher).await;
    Ok(run.result(window, hosts).await)
}

/// A cell from its first client to its last: what the steps share.
struct CellRun<'a> {
    options: &'a CellOptions,
    fleet: &'a Fleet,
    shared: Arc<RunShared>,
    phase: watch::Sender<Phase>,
    /// Live traffic of the load workers (for the progress line and the error limit).
    live: Arc<Recorder>,
    /// Ctrl-C, or too many errors (`--max-errors`), ends the cell early.
    stop: CancellationToken,
    monitors: Monitors,
}

/// Who hosts the cell's clients.
enum Hosts {
    /// The runner's own process.
    Local(ClientGroup),
    /// Load workers: local child processes or agents.
    Workers {
        pool: Pool,
        children: Option<Children>,
        shares: Vec<Share>,
    },
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

impl<'a> CellRun<'a> {
    /// The shared state every client sees, and the tasks that watch the cell.
    fn start(options: &'a CellOptions, fleet: &'a Fleet) -> Self {
        let scenario = options.scenario.clone();
        let recorder = Arc::new(Recorder::new(shards()));
        let live = Arc::new(Recorder::new(1));
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
            unpublished: RunShared::no_unpublished(scenario.topics),
            // Short (they are in every event's bytes) yet unique per run and cell on a shared server.
            topics: topic_names(options),
            queue: queue_name(options),
        });
        let stop = options.interrupt.child_token();
        let cell = cell_spec(&scenario, options.pattern).name();
        let monitors = Monitors::start(options, &cell, &shared, &live, &stop);
        Self {
            options,
            fleet,
            shared,
            phase: phase_tx,
            live,
            stop,
            monitors,
        }
    }

    /// Opens the publisher's connections before any client connects, so clients that run out of
    /// descriptors or ports never starve it.
    async fn open_publisher(&self) -> Result<Option<PublisherThread>, RunError> {
        if !self.options.scenario.publishes(self.options.pattern) {
            return Ok(None);
        }
        PublisherThread::start(self.shared.clone())
            .await
            .map(Some)
            .map_err(|error| RunError::Publisher {
                target: self.fleet.targets[0].authority.clone(),
                error,
            })
    }

    /// Starts the clients — here, or in load workers — and waits until each is subscribed or has
    /// failed; an error when none started.
    async fn ramp(&self, procs: ProcCount) -> Result<Hosts, RunError> {
        let agents = self.options.placement.agents.as_ref();
        let hosts = if procs.procs == 1 && agents.is_none() {
            let shared = &self.shared;
            let pattern = self.options.pattern;
            let (started, stop) = (Instant::now(), &self.stop);
            let group = ClientGroup::ramp(shared, pattern, Share::WHOLE, None, started, stop).await;
            group.settle(shared, stop).await;
            Hosts::Local(group)
        } else {
            self.ramp_workers(procs.procs).await?
        };
        let (ready, _) = self.ready_failed(&hosts);
        // Someone else's server that refuses every client still gets its cell, marked, with the
        // errors counted by kind: the run goes on.
        let pattern = self.options.pattern;
        if ready > 0 || self.options.scenario.profiled(pattern) {
            return Ok(hosts);
        }
        self.stop_hosts(hosts).await;
        let errors = self.shared.recorder.counters.errors();
        let errors = if errors.is_empty() {
            "none started in time".to_owned()
        } else {
            format!("{errors:?}")
        };
        let target = self.fleet.targets.iter().map(|t| t.authority.as_str());
        Err(RunError::NoClients {
            target: target.collect::<Vec<_>>().join(", "),
            errors,
        })
    }

    /// Hands each worker its share (all ramping from one agreed instant) and waits until every
    /// worker has settled its clients or is lost.
    async fn ramp_workers(&self, count: usize) -> Result<Hosts, RunError> {
        let options = self.options;
        let (links, children) = match &options.placement.agents {
            Some(agents) => (agents.links(), None),
            None => {
                let cpus = match &options.placement.cpus.loadgen {
                    Some(set) => set.split(count).into_iter().map(Some).collect(),
                    None => vec![None; count],
                };
                let (links, children) = pipe::spawn(&cpus)?;
                (links, Some(children))
            }
        };
        let cpus = options.placement.cpus.loadgen.clone();
        let pool = Pool::start(links, self.shared.recorder.clone(), self.live.clone());
        let shares: Vec<Share> = (0..pool.len())
            .map(|index| Share {
                index,
                of: pool.len(),
            })
            .collect();
        let scenario = &options.scenario;
        let clock = self.shared.clock;
        // Time for every worker to hear about the cell before the agreed start.
        let lead = if options.placement.agents.is_some() {
            Duration::from_secs(1)
        } else {
            Duration::from_millis(300)
        };
        let ramp_at_ns = clock.now_ns() + lead.as_nanos() as u64;
        let spec = WorkerSpec {
            cell: cell_spec(scenario, options.pattern).name(),
            scenario: (**scenario).clone(),
            pattern: options.pattern,
            targets: self
                .fleet
                .targets
                .iter()
                .map(|t| format!("http://{}{}", t.authority, t.path))
                .collect(),
            topics: self.shared.topics.clone(),
            queue: self.shared.queue.clone(),
            share: Share::WHOLE,
            origin_ns: clock.monotonic_origin_ns(),
            ramp_at_ns,
            source: None,
            cpus,
            profile: scenario
                .profiled(options.pattern)
                .then(|| scenario.profile.as_deref().map(WorkerProfile::of))
                .flatten(),
        };
        pool.send(|index| {
            let mut spec = spec.clone();
            spec.share = shares[index];
            Command::Start(Box::new(spec))
        });
        let ramp_s = scenario.clients as f64 / scenario.ramp as f64;
        let deadline = Instant::now() + lead + Duration::from_secs_f64(ramp_s) + SETTLE_DEADLINE;
        let mut pool = pool;
        pool.settled(deadline, &self.stop).await;
        Ok(Hosts::Workers {
            pool,
            children,
            shares,
        })
    }

    fn ready_failed(&self, hosts: &Hosts) -> (usize, usize) {
        let shared = &self.shared;
        let own = (shared.ready.load(Relaxed), shared.failed.load(Relaxed));
        match hosts {
            Hosts::Local(_) => own,
            Hosts::Workers { pool, .. } => {
                let (ready, failed) = pool.ready_failed();
                (own.0 + ready, own.1 + failed)
            }
        }
    }

    async fn stop_hosts(&self, hosts: Hosts) {
        match hosts {
            Hosts::Local(group) => group.stop(&self.phase).await,
            Hosts::Workers { pool, children, .. } => {
                drop(pool.merge(&[]));
                if let Some(children) = children {
                    children.reap().await;
                }
            }
        }
    }

    /// Publishing starts; samples count from the end of the warm-up; counters, CPU and memory are
    /// read at both ends of the window. The publisher is still running.
    async fn warm_up_and_window(
        &self,
        hosts: &Hosts,
        mut publisher: Option<PublisherThread>,
    ) -> (Window, Option<PublisherThread>) {
        let scenario = &self.options.scenario;
        let clock = self.shared.clock;
        let run_start = clock.now_ns();
        let window_start = run_start + scenario.warmup.as_nanos() as u64;
        let window_end = window_start + scenario.duration.as_nanos() as u64;
        self.shared.window_start_ns.store(window_start, Relaxed);
        let _ = self.phase.send(Phase::Run);
        if let Hosts::Workers { pool, .. } = hosts {
            pool.send(|_| Command::Run {
                window_start_ns: window_start,
                window_end_ns: window_end,
            });
        }
        if let Some(publisher) = &mut publisher {
            publisher.go(run_start, window_end, self.stop.child_token());
        }
        let processes = Processes::of(self.fleet, self.options.placement.cpus.loadgen.as_ref());
        let (rss, rss_task) = RssPeaks::start(
            processes.alone(),
            processes.trees(),
            Duration::from_millis(250),
        );
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
    async fn drain(&self, hosts: &mut Hosts, publisher: Option<PublisherThread>) {
        let final_heads = match publisher {
            Some(publisher) => {
                self.stop.cancel();
                publisher.heads().await
            }
            None => HashMap::new(),
        };
        let drain = self.options.scenario.drain;
        match hosts {
            Hosts::Local(group) => {
                let _ = self.shared.final_heads.set(final_heads);
                group.drain(drain, &self.phase).await;
            }
            Hosts::Workers { pool, .. } => {
                let issued: Vec<u64> = self.shared.issued.iter().map(|n| n.load(Relaxed)).collect();
                let unpublished = self.shared.unpublished_all();
                pool.send(|_| Command::Drain {
                    final_heads: final_heads.clone(),
                    issued: issued.clone(),
                    unpublished: unpublished.clone(),
                });
                let _ = self.shared.final_heads.set(final_heads);
                let _ = self.phase.send(Phase::Stop);
                // The workers' own drain, their last interval and the way back; a worker still
                // silent after that is lost.
                let deadline = Instant::now() + drain + crate::procs::pool::SILENCE;
                pool.done(deadline).await;
            }
        }
    }

    /// The cell's result: counters over the window (loss over each client's subscription), the
    /// processes' usage, the histograms (the workers' merged in), and what the harness's health
    /// says about them.
    async fn result(self, window: Window, hosts: Hosts) -> CellResult {
        let merged = match hosts {
            Hosts::Local(_) => None,
            Hosts::Workers {
                pool,
                children,
                shares,
            } => {
                let clients = self.options.scenario.clients;
                let sizes: Vec<usize> = shares.iter().map(|s| s.len(clients)).collect();
                let merged = pool.merge(&sizes);
                if let Some(children) = children {
                    children.reap().await;
                }
                Some((merged, shares))
            }
        };
        let recorder = self.shared.recorder.clone();
        let (histograms, mut lag) = self.monitors.finish().await;
        let (start_cpu, end_cpu) = &window.cpu;
        let mut usage = window
            .processes
            .usage(&window.rss, start_cpu, end_cpu)
            .await;
        let (start, end) = &window.counters;
        let mut counters = CounterSnapshot::windowed(start, end, &recorder.counters.snapshot());
        if self.options.pattern.uses_feed() {
            // Counted by intended time, so the count does not depend on when answers arrive.
            counters.published = recorder.counters.published_in_window.load(Relaxed);
        }
        let mut errors = recorder.counters.errors();
        let mut ready = self.shared.ready.load(Relaxed);
        let cpus = &self.options.placement.cpus;
        let mut placement = CellPlacement {
            procs: 1,
            server_cpus: cpus.server.clone(),
            broker_cpus: cpus.broker.clone(),
            loadgen_cpus: cpus.loadgen.clone(),
            loadgen_cpu_count: cpus.loadgen_cpus(),
            separated: cpus.separated(),
            loadgen_set_busy: usage.loadgen_set_busy,
            ..CellPlacement::default()
        };
        if let Some((merged, shares)) = merged {
            placement.procs = shares.len();
            counters = counters.add(&merged.counters);
            for (kind, n) in &merged.errors {
                *errors.entry(kind.clone()).or_insert(0) += n;
            }
            if let Some(worker_lag) = &merged.lag {
                // Same bounds everywhere, so adding cannot fail.
                let _ = lag.add(worker_lag);
            }
            usage.loadgen.cpu_s += merged.cpu_s;
            usage.loadgen.peak_rss_bytes += merged.peak_rss_bytes;
            usage.loadgen.wait_s += merged.wait_s;
            ready += merged.ready;
            if self.options.placement.agents.is_some() {
                placement.clock_error_us = Some(merged.clock_error_ns as f64 / 1_000.0);
            }
            if self.options.pattern.uses_feed() {
                count_lost_shares(&self.shared, &merged, &shares, &mut counters);
            }
            placement.workers = merged.per_worker;
            placement.lost = merged.lost;
        }
        let seconds = window.measured_s.max(1e-9);
        let achieved_rate = match self.options.pattern.about().rate_of {
            RateOf::Requests => counters.requests as f64 / seconds,
            RateOf::Publishes => counters.published as f64 / seconds,
        };
        let lag = if lag.is_empty() { new_histogram() } else { lag };
        let mut result = CellResult {
            spec: cell_spec(&self.options.scenario, self.options.pattern),
            complete: !window.interrupted && placement.lost.is_empty(),
            measured_s: window.measured_s,
            counters,
            errors,
            histograms,
            server: usage.servers,
            broker: usage.broker,
            loadgen: usage.loadgen,
            achieved_rate,
            loadgen_lag_p99_us: lag.value_at_quantile(0.99),
            warnings: Vec::new(),
            notes: Vec::new(),
            placement,
        };
        let health = health::assess(&result, &self.options.scenario, ready);
        (result.warnings, result.notes) = (health.flags, health.notes);
        result
    }
}

/// A lost worker's clients never closed their books: every event published on their topics
/// counts as expected and lost for them.
fn count_lost_shares(
    shared: &RunShared,
    merged: &Merged,
    shares: &[Share],
    counters: &mut CounterSnapshot,
) {
    let books = shared.books();
    let topics = shared.topics.len();
    let clients = shared.scenario.clients;
    for share in shares.iter().filter(|s| merged.lost_index(s.index)) {
        for id in share.ids(clients) {
            let head = shared.final_head(books, id % topics).unwrap_or(0);
            counters.events_expected += head;
            counters.events_lost += head;
        }
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
