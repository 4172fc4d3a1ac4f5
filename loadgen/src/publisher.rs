//! The open-loop publisher: events at `--rate` on a fixed or Poisson schedule, round-robin over the
//! cell's topics, each payload stamped with its intended send time and the instant its write began
//! (the gap between the two is recorded as the publisher's lateness), sent by the target's publish
//! route (commbench's `POST /publish/{topic}`, or a profile's template). Its connections are opened
//! before any client's, so a cell that runs out of descriptors starves clients, never the publisher.
//! It runs on a thread and runtime of its own, so clients busy on the runner's runtime (a fan-out to
//! thousands of them) do not make it late. Its own traffic is kept out of the pattern's byte counts
//! (it is the same for every pattern).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use tokio::sync::{mpsc, Mutex};
use tokio_util::sync::CancellationToken;

pub use crate::profile::publish::CONNECTIONS;
use crate::{
    clients::{stamp, RunShared},
    clock::encode_payload,
    http::ClientError,
    pattern::Pattern,
    profile::{publish, Publish},
    record::{Metric, Recorder},
    scenario::{Arrival, Scenario},
    schedule::Schedule,
    target::Target,
};

/// A publish that starts this much after its intended time counts as late. Tokio's timers have a 1 ms
/// resolution, so anything below a few ms is timer granularity, not a struggling publisher.
const LATE_NS: u64 = 5_000_000;

struct Job {
    id: u64,
    topic: usize,
    intended_ns: u64,
}

/// How `pattern`'s cells publish: the profile's route when its clients follow a profile that has
/// one, else commbench's own.
pub fn route(scenario: &Scenario, pattern: Pattern) -> Publish {
    match scenario.profile.as_ref().and_then(|p| p.publish.clone()) {
        Some(publish) if scenario.profiled(pattern) => publish,
        _ => Publish::commbench(),
    }
}

/// The publisher's connections, opened before the clients'.
pub struct Connections {
    route: Arc<Publish>,
    /// Their traffic counts into a recorder of its own, not the pattern's.
    own: Arc<Recorder>,
    /// One per publishing task; `None` for a route that can only open its connection with its
    /// first publish (a WebSocket URL naming the topic).
    open: Vec<Option<publish::Conn>>,
}

impl Connections {
    /// Opens the route's keep-alive connections to `target` (the instance events go to).
    pub async fn open(route: Publish, target: &Target) -> Result<Self, ClientError> {
        let own = Arc::new(Recorder::new(1));
        let mut open = Vec::with_capacity(route.connections);
        for _ in 0..route.connections {
            open.push(route.open(target, &own).await?);
        }
        Ok(Self {
            route: Arc::new(route),
            own,
            open,
        })
    }
}

/// The publisher's thread: connections opened at once, publishing when told to.
pub struct PublisherThread {
    go: Option<tokio::sync::oneshot::Sender<(u64, u64, CancellationToken)>>,
    heads: tokio::sync::oneshot::Receiver<HashMap<String, u64>>,
}

impl PublisherThread {
    /// Starts the thread and opens its connections; an error when they cannot be opened.
    pub async fn start(shared: Arc<RunShared>) -> Result<Self, ClientError> {
        let (opened_tx, opened) = tokio::sync::oneshot::channel();
        let (go, go_rx) = tokio::sync::oneshot::channel::<(u64, u64, CancellationToken)>();
        let (heads_tx, heads) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("publisher".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = opened_tx.send(Err(ClientError::Connect(error)));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let route = route(&shared.scenario, shared.pattern);
                    let connections = match Connections::open(route, &shared.targets[0]).await {
                        Ok(connections) => connections,
                        Err(error) => {
                            let _ = opened_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = opened_tx.send(Ok(()));
                    let Ok((start_ns, end_ns, stop)) = go_rx.await else {
                        return;
                    };
                    let heads = publish(shared, connections, start_ns, end_ns, stop).await;
                    let _ = heads_tx.send(heads);
                });
            });
        if let Err(error) = spawned {
            return Err(ClientError::Connect(error));
        }
        match opened.await {
            Ok(Ok(())) => Ok(Self {
                go: Some(go),
                heads,
            }),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ClientError::Protocol("the publisher thread ended".into())),
        }
    }

    /// Publishes from `start_ns` until `end_ns` (run clock) or `stop`.
    pub fn go(&mut self, start_ns: u64, end_ns: u64, stop: CancellationToken) {
        if let Some(go) = self.go.take() {
            let _ = go.send((start_ns, end_ns, stop));
        }
    }

    /// Each topic's last seq once publishing has ended (empty if it never started).
    pub async fn heads(self) -> HashMap<String, u64> {
        drop(self.go);
        self.heads.await.unwrap_or_default()
    }
}

/// Publishes from `start_ns` until `end_ns` (or until `stop`) over `connections`, then returns
/// each topic's last seq.
pub async fn publish(
    shared: Arc<RunShared>,
    connections: Connections,
    start_ns: u64,
    end_ns: u64,
    stop: CancellationToken,
) -> HashMap<String, u64> {
    let scenario = shared.scenario.clone();
    let heads: Arc<Vec<AtomicU64>> =
        Arc::new(shared.topics.iter().map(|_| AtomicU64::new(0)).collect());
    let Connections { route, own, open } = connections;
    let (jobs, queue) = mpsc::channel::<Job>(open.len().max(1) * 4);
    let queue = Arc::new(Mutex::new(queue));
    let mut workers = tokio::task::JoinSet::new();
    for conn in open {
        workers.spawn(worker(
            shared.clone(),
            route.clone(),
            own.clone(),
            conn,
            queue.clone(),
            heads.clone(),
        ));
    }
    let gap = Duration::from_secs_f64(1.0 / scenario.rate);
    let mut schedule = match scenario.arrival {
        Arrival::Fixed => Schedule::fixed(start_ns, gap),
        Arrival::Poisson => Schedule::poisson(start_ns, gap, fastrand::u64(..)),
    };
    let clock = shared.clock;
    for id in 0.. {
        let intended_ns = schedule.next_send();
        if intended_ns >= end_ns {
            break;
        }
        // A publish already due when the window ends (the stop) is still sent: every cell
        // publishes exactly the events its schedule puts before the end.
        tokio::select! {
            biased;
            () = sleep_until_precisely(clock.instant_at(intended_ns)) => {}
            () = stop.cancelled() => break,
        }
        let topic = stamp::topic_of(id, shared.topics.len());
        shared.issued[topic].store(stamp::ordinal_of(id, shared.topics.len()), Relaxed);
        let job = Job {
            id,
            topic,
            intended_ns,
        };
        if jobs.send(job).await.is_err() {
            break;
        }
    }
    drop(jobs);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    shared
        .topics
        .iter()
        .zip(heads.iter())
        .map(|(topic, head)| (topic.clone(), head.load(Relaxed)))
        .collect()
}

/// Sleeps until `due` within tens of microseconds: the runtime's timer (millisecond ticks, rounded
/// up) for all but the last two milliseconds, then the thread's own precise sleep. Blocking is
/// fine here: this runtime serves only the publisher, and nothing it does is due before `due`.
async fn sleep_until_precisely(due: std::time::Instant) {
    let coarse = due.checked_sub(Duration::from_millis(2)).unwrap_or(due);
    tokio::time::sleep_until(coarse.into()).await;
    let rest = due.saturating_duration_since(std::time::Instant::now());
    if !rest.is_zero() {
        std::thread::sleep(rest);
    }
}

async fn worker(
    shared: Arc<RunShared>,
    route: Arc<Publish>,
    own: Arc<Recorder>,
    mut conn: Option<publish::Conn>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    heads: Arc<Vec<AtomicU64>>,
) {
    let counters = &shared.recorder.counters;
    loop {
        let Some(job) = queue.lock().await.recv().await else {
            return;
        };
        let topic = &shared.topics[job.topic];
        let target = &shared.targets[0];
        let payload = || stamped(&shared, &job);
        match route.send(&mut conn, target, &own, topic, payload).await {
            Ok(seq) => {
                counters.published.fetch_add(1, Relaxed);
                if shared.in_window(job.intended_ns) {
                    counters.published_in_window.fetch_add(1, Relaxed);
                }
                if let Some(seq) = seq {
                    heads[job.topic].fetch_max(seq, Relaxed);
                }
            }
            Err(error) => {
                counters.dropped_sends.fetch_add(1, Relaxed);
                let ordinal = stamp::ordinal_of(job.id, shared.topics.len());
                shared.unpublished_at(job.topic, ordinal);
                counters.error(format!("publish_{}", error.kind()));
                conn = None;
            }
        }
    }
}

/// The payload of `job`, stamped with the instant its write begins (the route calls this once a
/// connection is in hand, right before the request or message is written); its lateness is
/// counted and recorded.
fn stamped(shared: &RunShared, job: &Job) -> bytes::Bytes {
    let written_ns = shared.clock.now_ns();
    let late_ns = written_ns.saturating_sub(job.intended_ns);
    if late_ns > LATE_NS {
        shared.recorder.counters.late_sends.fetch_add(1, Relaxed);
    }
    if shared.in_window(job.intended_ns) {
        let recorder = &shared.recorder;
        recorder.record(job.id as usize, Metric::PublishLateness, late_ns / 1_000);
    }
    encode_payload(job.id, job.intended_ns, written_ns, shared.scenario.payload)
}
