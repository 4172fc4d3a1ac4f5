//! The runner's side of its load workers, whatever the link: a command channel per worker and one
//! stream of their reports, pumped by a task into shared state as they arrive, so each interval's
//! histograms are merged into the runner's recorder (and so into the same `.hlog` files and totals)
//! while the cell runs. A worker that goes silent or whose link closes before it is done is lost.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use super::protocol::{Command, Report, WorkerOutcome};
use crate::record::{new_histogram, CounterSnapshot, Recorder};

/// A worker that has not reported for this long is given up (it reports every second; closing
/// tens of thousands of connections may hold it up for a while).
pub const SILENCE: Duration = Duration::from_secs(60);

/// What a link hands on from a worker.
#[derive(Debug)]
pub enum Up {
    Report(Report),
    /// The link closed or the worker exited, in words.
    Gone(String),
}

/// Channels to and from a set of workers, however they are connected.
pub struct Links {
    pub down: Vec<mpsc::UnboundedSender<Command>>,
    pub up: mpsc::UnboundedReceiver<(usize, Up)>,
    /// How each worker is named in messages (`load worker 2 (pid 4711)`, `agent 1/3 on node-a`).
    pub names: Vec<String>,
    /// Largest estimated clock error between a worker and the runner (ns; 0 on one machine).
    pub clock_error_ns: u64,
}

#[derive(Debug, Default)]
struct Worker {
    ready: usize,
    failed: usize,
    settled: bool,
    outcome: Option<WorkerOutcome>,
    lost: Option<String>,
    last_live: CounterSnapshot,
    last_open: i64,
    last_seen: Option<Instant>,
    lag: Option<Histogram<u64>>,
}

impl Worker {
    fn finished(&self) -> bool {
        self.outcome.is_some() || self.lost.is_some()
    }
}

/// The workers of one cell.
pub struct Pool {
    down: Vec<mpsc::UnboundedSender<Command>>,
    names: Vec<String>,
    clock_error_ns: u64,
    workers: Arc<Mutex<Vec<Worker>>>,
    changed: watch::Receiver<()>,
    pump: JoinHandle<()>,
}

/// What the workers of a cell measured together.
#[derive(Debug, Default)]
pub struct Merged {
    pub counters: CounterSnapshot,
    pub errors: BTreeMap<String, u64>,
    pub lag: Option<Histogram<u64>>,
    pub cpu_s: f64,
    pub peak_rss_bytes: u64,
    pub ready: usize,
    pub wait_s: f64,
    pub per_worker: Vec<WorkerUsage>,
    /// Workers that died or went silent.
    pub lost: Vec<LostWorker>,
    pub clock_error_ns: u64,
}

impl Merged {
    /// True when worker `index` was lost.
    pub fn lost_index(&self, index: usize) -> bool {
        self.lost.iter().any(|l| l.index == index)
    }
}

/// A worker that died or went silent before its result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LostWorker {
    pub index: usize,
    pub name: String,
    pub clients: usize,
    pub why: String,
}

/// One worker's share and cost, as `run.json` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerUsage {
    pub name: String,
    pub clients: usize,
    pub ready: usize,
    pub cpu_s: f64,
    pub peak_rss_bytes: u64,
    pub lag_p99_us: u64,
}

impl Pool {
    /// Starts pumping the workers' reports: histograms go into `recorder`, live traffic into
    /// `live` (what the progress line and the error limit read).
    pub fn start(links: Links, recorder: Arc<Recorder>, live: Arc<Recorder>) -> Self {
        let workers = Arc::new(Mutex::new(
            (0..links.down.len()).map(|_| Worker::default()).collect(),
        ));
        let (notify, changed) = watch::channel(());
        let pump = tokio::spawn(pump(links.up, workers.clone(), recorder, live, notify));
        Self {
            down: links.down,
            names: links.names,
            clock_error_ns: links.clock_error_ns,
            workers,
            changed,
            pump,
        }
    }

    pub fn len(&self) -> usize {
        self.down.len()
    }

    pub fn is_empty(&self) -> bool {
        self.down.is_empty()
    }

    /// Sends `command(i)` to worker `i`, for every worker not lost.
    pub fn send(&self, command: impl Fn(usize) -> Command) {
        let workers = self.lock();
        for (i, down) in self.down.iter().enumerate() {
            if workers[i].lost.is_none() {
                let _ = down.send(command(i));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Worker>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Clients subscribed and failed so far, over every worker.
    pub fn ready_failed(&self) -> (usize, usize) {
        let workers = self.lock();
        workers
            .iter()
            .fold((0, 0), |(r, f), w| (r + w.ready, f + w.failed))
    }

    /// Waits until every worker has settled its clients (or is lost), `deadline` passes or `stop`.
    pub async fn settled(&mut self, deadline: Instant, stop: &CancellationToken) {
        self.wait(|w| w.settled || w.finished(), deadline, stop)
            .await;
    }

    /// Waits until every worker reported `Done` or is lost, or `deadline` passes (the rest are
    /// then lost).
    pub async fn done(&mut self, deadline: Instant) {
        self.wait(Worker::finished, deadline, &CancellationToken::new())
            .await;
        for worker in self.lock().iter_mut() {
            if !worker.finished() {
                worker.lost = Some("no result before the deadline".into());
            }
        }
    }

    async fn wait(
        &mut self,
        condition: impl Fn(&Worker) -> bool,
        deadline: Instant,
        stop: &CancellationToken,
    ) {
        loop {
            if self.lock().iter().all(&condition) || stop.is_cancelled() {
                return;
            }
            tokio::select! {
                changed = self.changed.changed() => if changed.is_err() { return },
                () = tokio::time::sleep_until(deadline.into()) => return,
                () = stop.cancelled() => return,
            }
        }
    }

    /// Stops the pump and adds up what the workers measured; `shares[i]` is worker `i`'s
    /// number of clients.
    pub fn merge(self, shares: &[usize]) -> Merged {
        self.send(|_| Command::Bye);
        self.pump.abort();
        let mut merged = Merged {
            clock_error_ns: self.clock_error_ns,
            ..Merged::default()
        };
        let mut workers = self.lock();
        for (i, worker) in workers.iter_mut().enumerate() {
            let name = self.names.get(i).cloned().unwrap_or_default();
            let clients = shares.get(i).copied().unwrap_or(0);
            match (worker.outcome.take(), worker.lost.take()) {
                (Some(outcome), _) => {
                    merged.counters = merged.counters.add(&outcome.counters);
                    for (kind, n) in &outcome.errors {
                        *merged.errors.entry(kind.clone()).or_insert(0) += n;
                    }
                    let lag = worker.lag.take().unwrap_or_else(new_histogram);
                    merged.per_worker.push(WorkerUsage {
                        name,
                        clients,
                        ready: outcome.ready,
                        cpu_s: outcome.cpu_s,
                        peak_rss_bytes: outcome.peak_rss_bytes,
                        lag_p99_us: lag.value_at_quantile(0.99),
                    });
                    // Same bounds everywhere, so adding cannot fail.
                    let _ = merged.lag.get_or_insert_with(new_histogram).add(&lag);
                    merged.cpu_s += outcome.cpu_s;
                    merged.wait_s += outcome.wait_s;
                    merged.peak_rss_bytes += outcome.peak_rss_bytes;
                    merged.ready += outcome.ready;
                }
                (None, why) => merged.lost.push(LostWorker {
                    index: i,
                    name,
                    clients,
                    why: why.unwrap_or_else(|| "no result".into()),
                }),
            }
        }
        merged
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.pump.abort();
    }
}

/// Applies every report as it arrives, and gives up on workers that fall silent.
async fn pump(
    mut up: mpsc::UnboundedReceiver<(usize, Up)>,
    workers: Arc<Mutex<Vec<Worker>>>,
    recorder: Arc<Recorder>,
    live: Arc<Recorder>,
    notify: watch::Sender<()>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    loop {
        let message = tokio::select! {
            message = up.recv() => message,
            _ = ticks.tick() => {
                let now = Instant::now();
                let mut workers = workers.lock().unwrap_or_else(|p| p.into_inner());
                for worker in workers.iter_mut().filter(|w| !w.finished()) {
                    let seen = *worker.last_seen.get_or_insert(now);
                    if now.duration_since(seen) > SILENCE {
                        worker.lost = Some(format!("no report for {} s", SILENCE.as_secs()));
                    }
                }
                drop(workers);
                notify.send_replace(());
                continue;
            }
        };
        let Some((index, message)) = message else {
            return;
        };
        let mut all = workers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(worker) = all.get_mut(index) else {
            continue;
        };
        worker.last_seen = Some(Instant::now());
        match message {
            Up::Report(report) => apply(worker, report, &recorder, &live),
            Up::Gone(why) if !worker.finished() => worker.lost = Some(why),
            Up::Gone(_) => {}
        }
        drop(all);
        notify.send_replace(());
    }
}

fn apply(worker: &mut Worker, report: Report, recorder: &Recorder, live: &Recorder) {
    match report {
        Report::Ramp { ready, failed } => (worker.ready, worker.failed) = (ready, failed),
        Report::Ready { ready, failed } => {
            (worker.ready, worker.failed) = (ready, failed);
            worker.settled = true;
        }
        Report::Interval {
            histograms,
            live: counters,
            connections_open,
        } => {
            for encoded in &histograms {
                match encoded.decode() {
                    Ok(histogram) => recorder.absorb(encoded.metric, &histogram),
                    Err(_) => recorder.counters.error("worker_histogram_corrupt"),
                }
            }
            let last = &worker.last_live;
            let delta = CounterSnapshot {
                events_received: counters
                    .events_received
                    .saturating_sub(last.events_received),
                requests: counters.requests.saturating_sub(last.requests),
                errors: counters.errors.saturating_sub(last.errors),
                ..CounterSnapshot::default()
            };
            live.absorb_live(&delta, connections_open - worker.last_open);
            worker.last_live = counters;
            worker.last_open = connections_open;
        }
        Report::Done(outcome) => {
            worker.lag = outcome.lag.decode().ok();
            worker.outcome = Some(*outcome);
        }
        Report::Failed { error } => worker.lost = Some(error),
    }
}
