//! The tasks that watch a cell while it runs: the collector (histograms, `.hlog` each second), the
//! load generator's timer lag, the error limit, and the progress line.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::CellOptions;
use crate::{
    clients::{Phase, RunShared},
    collector::Collector,
    progress::Progress,
    record::{new_histogram, Metric, Recorder},
};

/// The running watchers of one cell.
pub struct Monitors {
    stop: CancellationToken,
    collector: JoinHandle<BTreeMap<Metric, Histogram<u64>>>,
    lag_probe: JoinHandle<Histogram<u64>>,
    error_watch: JoinHandle<()>,
    progress: Progress,
}

impl Monitors {
    /// Starts them; `cell_stop` is cancelled when the error limit is reached. `live` holds the
    /// load workers' traffic, which the progress line and the error limit count too.
    pub fn start(
        options: &CellOptions,
        cell: &str,
        shared: &Arc<RunShared>,
        live: &Arc<Recorder>,
        cell_stop: &CancellationToken,
    ) -> Self {
        let recorder = &shared.recorder;
        let scenario = &options.scenario;
        let total = scenario.warmup + scenario.duration + scenario.drain;
        let progress = Progress::new(cell, total, options.quiet);
        let stop = CancellationToken::new();
        let collector = tokio::spawn(
            Collector {
                recorder: recorder.clone(),
                live: Some(live.clone()),
                dir: Some(options.dir.clone()),
                cell: cell.to_owned(),
                started_unix_s: unix_now_s(),
                interval: Duration::from_secs(1),
                progress: progress.clone(),
                forward: None,
            }
            .run(stop.clone()),
        );
        Self {
            lag_probe: tokio::spawn(scheduling_lag(shared.clone(), stop.clone())),
            error_watch: tokio::spawn(stop_on_errors(
                [recorder.clone(), live.clone()],
                scenario.max_errors,
                cell_stop.clone(),
            )),
            stop,
            collector,
            progress,
        }
    }

    /// Stops them; the whole-run histograms and the timer lag.
    pub async fn finish(self) -> (BTreeMap<Metric, Histogram<u64>>, Histogram<u64>) {
        self.stop.cancel();
        self.error_watch.abort();
        let histograms = self.collector.await.unwrap_or_default();
        let lag = self.lag_probe.await.unwrap_or_else(|_| new_histogram());
        self.progress.finish();
        (histograms, lag)
    }
}

/// The wall clock in seconds since the Unix epoch (an interval log's base time).
pub fn unix_now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Cancels `stop` once `max_errors` (when non-zero) errors have been counted in `recorders`.
async fn stop_on_errors(recorders: [Arc<Recorder>; 2], max_errors: u64, stop: CancellationToken) {
    if max_errors == 0 {
        return;
    }
    let errors = || -> u64 {
        recorders
            .iter()
            .map(|r| r.counters.error_total.load(Relaxed))
            .sum()
    };
    while errors() < max_errors {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(max_errors, "stopping the cell: error limit reached");
    stop.cancel();
}

/// How late the load generator gets to run a task that was due (µs): a probe thread sleeps
/// precisely (no millisecond timer ticks) until each 10 ms mark and wakes a task, which records how
/// long after the mark it ran. That is the delay a client's receive timestamp carries (a socket
/// wakes a task the same way), plus any time the load generator's CPUs were taken from it. A busy
/// or starved load generator shows here first.
/// Only marks inside the measured window count (from its start until publishing stops): the ramp,
/// the warm-up and the drain (closing thousands of connections) are busy by design and their
/// delays touch no recorded sample.
pub async fn scheduling_lag(shared: Arc<RunShared>, stop: CancellationToken) -> Histogram<u64> {
    let mut lag = new_histogram();
    let (wakes, mut woken) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let probe_stop = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("lag-probe".into())
        .spawn(move || {
            let mut due = Instant::now();
            while !probe_stop.is_cancelled() {
                due += Duration::from_millis(10);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if wakes.send(due).is_err() {
                    return;
                }
            }
        });
    if spawned.is_err() {
        return lag;
    }
    loop {
        tokio::select! {
            due = woken.recv() => {
                let Some(due) = due else { break };
                if shared.phase() != Phase::Run || !shared.in_window(shared.clock.now_ns()) {
                    continue;
                }
                let late = due.elapsed().as_micros() as u64;
                let _ = lag.record(late.clamp(1, crate::record::MAX_MICROS));
            }
            () = stop.cancelled() => break,
        }
    }
    lag
}
