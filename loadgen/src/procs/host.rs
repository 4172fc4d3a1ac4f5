//! The worker side: hosts a share of each cell it is told to start, with the same clients, recorder
//! and collector as the runner's own process, and reports back through whatever link it was given
//! (a pipe to the local runner, or Redis to a coordinator elsewhere).

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc, OnceLock,
    },
    time::Duration,
};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::protocol::{Command, EncodedHistogram, Report, WorkerOutcome, WorkerSpec};
use crate::{
    clients::{Phase, RunShared},
    clock::RunClock,
    collector::{Collector, Interval},
    procstat::{cpu_seconds, wait_seconds, RssPeaks},
    progress::Progress,
    record::{new_histogram, CounterSnapshot, Metric, Recorder},
    runner::{scheduling_lag, shards, ClientGroup},
    target::Target,
};

/// How a worker process is set up (the same for every cell it hosts).
#[derive(Debug, Clone, Default)]
pub struct HostOptions {
    /// Interval logs of its own share are written here as well (an agent's own record).
    pub out: Option<PathBuf>,
    /// Every client connection from this address.
    pub source: Option<Ipv4Addr>,
}

/// Hosts cells as commanded until `Bye` or until the link closes.
pub async fn serve(
    options: HostOptions,
    mut down: mpsc::UnboundedReceiver<Command>,
    up: mpsc::UnboundedSender<Report>,
) {
    while let Some(command) = down.recv().await {
        match command {
            Command::Start(spec) => host_cell(&options, *spec, &mut down, &up).await,
            Command::Bye | Command::Refuse { .. } => return,
            // A command for a cell that is not running (e.g. after this worker failed it).
            Command::Run { .. } | Command::Drain { .. } => {}
        }
    }
}

/// Hosts one cell's share from `Start` to `Done`.
async fn host_cell(
    options: &HostOptions,
    spec: WorkerSpec,
    down: &mut mpsc::UnboundedReceiver<Command>,
    up: &mpsc::UnboundedSender<Report>,
) {
    let mut targets = Vec::new();
    for url in &spec.targets {
        match Target::external(url).await {
            Ok(target) => targets.push(Arc::new(target)),
            Err(error) => {
                let _ = up.send(Report::Failed {
                    error: error.to_string(),
                });
                return;
            }
        }
    }
    let mut scenario = spec.scenario.clone();
    if let Some(profile) = &spec.profile {
        match profile.load(&scenario) {
            Ok(profile) => scenario.profile = Some(Arc::new(profile)),
            Err(error) => {
                let _ = up.send(Report::Failed { error });
                return;
            }
        }
    }
    let clock = RunClock::from_monotonic(spec.origin_ns);
    let recorder = Arc::new(Recorder::new(shards()));
    let (phase_tx, phase) = watch::channel(Phase::Ramp);
    let shared = Arc::new(RunShared {
        issued: (0..spec.topics.len()).map(|_| AtomicU64::new(0)).collect(),
        unpublished: RunShared::no_unpublished(spec.topics.len()),
        scenario: Arc::new(scenario),
        pattern: spec.pattern,
        targets,
        recorder: recorder.clone(),
        clock,
        phase,
        window_start_ns: AtomicU64::new(u64::MAX),
        ready: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        final_heads: OnceLock::new(),
        topics: spec.topics.clone(),
        queue: spec.queue.clone(),
    });
    let watchers = Watchers::start(options, &spec, &shared, up);
    let stop = CancellationToken::new();
    let ramp_at = clock.instant_at(spec.ramp_at_ns);
    let ramp = async {
        let group = ClientGroup::ramp(
            &shared,
            spec.pattern,
            spec.share,
            options.source.or(spec.source),
            ramp_at,
            &stop,
        )
        .await;
        group.settle(&shared, &stop).await;
        group
    };
    let mut group = report_ramp(&shared, up, ramp).await;
    let counts = |s: &RunShared| (s.ready.load(Relaxed), s.failed.load(Relaxed));
    let (ready, failed) = counts(&shared);
    let _ = up.send(Report::Ready { ready, failed });
    // The window, as the runner schedules it; cut short when the drain comes first.
    let marks = Arc::new(std::sync::Mutex::new(WindowMarks::default()));
    let mut window = None;
    let final_heads = loop {
        match down.recv().await {
            Some(Command::Run {
                window_start_ns,
                window_end_ns,
            }) => {
                shared.window_start_ns.store(window_start_ns, Relaxed);
                let _ = phase_tx.send(Phase::Run);
                window = Some(tokio::spawn(measure_window(
                    shared.clone(),
                    marks.clone(),
                    window_start_ns,
                    window_end_ns,
                )));
            }
            Some(Command::Drain {
                final_heads,
                issued,
                unpublished,
            }) => {
                for (slot, n) in shared.issued.iter().zip(issued) {
                    slot.store(n, Relaxed);
                }
                shared.set_unpublished(unpublished);
                break final_heads;
            }
            Some(Command::Start(_)) => {}
            Some(Command::Bye | Command::Refuse { .. }) | None => {
                group.stop(&phase_tx).await;
                watchers.finish().await;
                return;
            }
        }
    };
    if let Some(task) = window {
        task.abort();
    }
    let marks = std::mem::take(&mut *marks.lock().unwrap_or_else(|p| p.into_inner()));
    let (start, end) = marks.resolve(mark(&shared));
    let _ = shared.final_heads.set(final_heads);
    group.drain(spec.scenario.drain, &phase_tx).await;
    let lag = watchers.finish().await;
    let (ready, failed) = counts(&shared);
    let outcome = WorkerOutcome {
        counters: CounterSnapshot::windowed(&start.0, &end.0, &recorder.counters.snapshot()),
        errors: recorder.counters.errors(),
        lag: EncodedHistogram::encode(Metric::Delivery, &lag.0).unwrap_or_else(|_| empty_lag()),
        cpu_s: (end.1 - start.1).max(0.0),
        wait_s: (end.2 - start.2).max(0.0),
        peak_rss_bytes: lag.1,
        ready,
        failed,
        clients: spec.share.len(spec.scenario.clients),
    };
    let _ = up.send(Report::Done(Box::new(outcome)));
}

fn empty_lag() -> EncodedHistogram {
    EncodedHistogram {
        metric: Metric::Delivery,
        v2: String::new(),
    }
}

/// Sends ramp progress every 250 ms while `ramp` runs; returns what it returns.
async fn report_ramp<T>(
    shared: &RunShared,
    up: &mpsc::UnboundedSender<Report>,
    ramp: impl std::future::Future<Output = T>,
) -> T {
    let mut ramp = std::pin::pin!(ramp);
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            result = &mut ramp => return result,
            _ = ticks.tick() => {
                let _ = up.send(Report::Ramp {
                    ready: shared.ready.load(Relaxed),
                    failed: shared.failed.load(Relaxed),
                });
            }
        }
    }
}

/// Counters and CPU at both ends of the window, taken at the agreed instants.
#[derive(Default)]
struct WindowMarks {
    start: Option<Mark>,
    end: Option<Mark>,
}

/// Counters, CPU seconds and seconds spent waiting for a CPU.
type Mark = (CounterSnapshot, f64, f64);

impl WindowMarks {
    /// The marks, with `now` (the drain's arrival) for any the window did not reach.
    fn resolve(self, now: Mark) -> (Mark, Mark) {
        (self.start.unwrap_or(now), self.end.unwrap_or(now))
    }
}

fn mark(shared: &RunShared) -> Mark {
    let pid = std::process::id();
    (
        shared.recorder.counters.snapshot(),
        cpu_seconds(pid).unwrap_or(0.0),
        wait_seconds(pid).unwrap_or(0.0),
    )
}

/// Takes the marks at `start_ns` and `end_ns` on the run clock into `marks`. Aborted when the
/// drain comes early, so it keeps what it has taken in the shared slot.
async fn measure_window(
    shared: Arc<RunShared>,
    marks: Arc<std::sync::Mutex<WindowMarks>>,
    start_ns: u64,
    end_ns: u64,
) {
    let clock = shared.clock;
    let slot = || marks.lock().unwrap_or_else(|p| p.into_inner());
    tokio::time::sleep_until(clock.instant_at(start_ns).into()).await;
    slot().start = Some(mark(&shared));
    tokio::time::sleep_until(clock.instant_at(end_ns).into()).await;
    slot().end = Some(mark(&shared));
}

/// The worker's collector (forwarding each interval up), timer-lag probe and memory sampler.
struct Watchers {
    stop: CancellationToken,
    collector: tokio::task::JoinHandle<BTreeMap<Metric, hdrhistogram::Histogram<u64>>>,
    forwarder: tokio::task::JoinHandle<()>,
    lag: tokio::task::JoinHandle<hdrhistogram::Histogram<u64>>,
    rss: (RssPeaks, tokio::task::JoinHandle<()>),
}

impl Watchers {
    fn start(
        options: &HostOptions,
        spec: &WorkerSpec,
        shared: &Arc<RunShared>,
        up: &mpsc::UnboundedSender<Report>,
    ) -> Self {
        let recorder = &shared.recorder;
        let stop = CancellationToken::new();
        let (forward, intervals) = mpsc::unbounded_channel();
        let collector = tokio::spawn(
            Collector {
                recorder: recorder.clone(),
                live: None,
                dir: options.out.clone(),
                cell: spec.cell.clone(),
                started_unix_s: crate::runner::unix_now_s(),
                interval: Duration::from_secs(1),
                progress: Progress::new(&spec.cell, Duration::from_secs(1), true),
                forward: Some(forward),
            }
            .run(stop.clone()),
        );
        let forwarder = tokio::spawn(forward_intervals(intervals, recorder.clone(), up.clone()));
        Self {
            lag: tokio::spawn(scheduling_lag(shared.clone(), stop.clone())),
            rss: RssPeaks::start(
                vec![std::process::id()],
                Vec::new(),
                Duration::from_millis(250),
            ),
            stop,
            collector,
            forwarder,
        }
    }

    /// Stops them after the last interval went up; the timer lag and the peak RSS.
    async fn finish(self) -> (hdrhistogram::Histogram<u64>, u64) {
        self.stop.cancel();
        let _ = self.collector.await;
        let _ = self.forwarder.await;
        let lag = self.lag.await.unwrap_or_else(|_| new_histogram());
        self.rss.1.abort();
        let peak = self.rss.0.peak(std::process::id()).await;
        (lag, peak)
    }
}

/// Sends each interval up with the live counters, until the collector stops.
async fn forward_intervals(
    mut intervals: mpsc::UnboundedReceiver<Interval>,
    recorder: Arc<Recorder>,
    up: mpsc::UnboundedSender<Report>,
) {
    while let Some(interval) = intervals.recv().await {
        let histograms = interval
            .iter()
            .filter_map(|(metric, h)| EncodedHistogram::encode(*metric, h).ok())
            .collect();
        let counters = &recorder.counters;
        let _ = up.send(Report::Interval {
            histograms,
            live: counters.snapshot(),
            connections_open: counters.connections_open.load(Relaxed),
        });
    }
}
