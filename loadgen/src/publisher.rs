//! The open-loop publisher: events at `--rate` on a fixed or Poisson schedule, round-robin over the
//! cell's topics, each payload stamped with its intended send time, sent by the target's publish
//! route (commbench's `POST /publish/{topic}`, or a profile's template). Its own traffic is kept
//! out of the pattern's byte counts (it is the same for every pattern).

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

use crate::{
    clients::{stamp, RunShared},
    clock::encode_payload,
    profile::{publish, Publish},
    record::Recorder,
    scenario::Arrival,
    schedule::Schedule,
};

/// A publish that starts this much after its intended time counts as late. Tokio's timers have a 1 ms
/// resolution, so anything below a few ms is timer granularity, not a struggling publisher.
const LATE_NS: u64 = 5_000_000;

struct Job {
    id: u64,
    topic: usize,
    intended_ns: u64,
}

/// Publishes from `start_ns` until `end_ns` (or until `stop`), then returns each topic's last seq.
pub async fn publish(
    shared: Arc<RunShared>,
    start_ns: u64,
    end_ns: u64,
    stop: CancellationToken,
) -> HashMap<String, u64> {
    let scenario = shared.scenario.clone();
    let heads: Arc<Vec<AtomicU64>> =
        Arc::new(shared.topics.iter().map(|_| AtomicU64::new(0)).collect());
    let route = Arc::new(
        match scenario.profile.as_ref().and_then(|p| p.publish.clone()) {
            Some(publish) if scenario.profiled(shared.pattern) => publish,
            _ => Publish::commbench(),
        },
    );
    let (jobs, queue) = mpsc::channel::<Job>(route.connections * 4);
    let queue = Arc::new(Mutex::new(queue));
    // The publisher's own connections count into a recorder of their own, not the pattern's.
    let own = Arc::new(Recorder::new(1));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..route.connections {
        workers.spawn(worker(
            shared.clone(),
            route.clone(),
            own.clone(),
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
            () = tokio::time::sleep_until(clock.instant_at(intended_ns).into()) => {}
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

async fn worker(
    shared: Arc<RunShared>,
    route: Arc<Publish>,
    own: Arc<Recorder>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    heads: Arc<Vec<AtomicU64>>,
) {
    let counters = &shared.recorder.counters;
    let mut conn: Option<publish::Conn> = None;
    loop {
        let Some(job) = queue.lock().await.recv().await else {
            return;
        };
        let sent = shared.clock.now_ns();
        if sent.saturating_sub(job.intended_ns) > LATE_NS {
            counters.late_sends.fetch_add(1, Relaxed);
        }
        let topic = &shared.topics[job.topic];
        let payload = encode_payload(job.id, job.intended_ns, shared.scenario.payload);
        let target = &shared.targets[0];
        match route.send(&mut conn, target, &own, topic, payload).await {
            Ok(seq) => {
                counters.published.fetch_add(1, Relaxed);
                if let Some(seq) = seq {
                    heads[job.topic].fetch_max(seq, Relaxed);
                }
            }
            Err(error) => {
                counters.dropped_sends.fetch_add(1, Relaxed);
                counters.error(format!("publish_{}", error.kind()));
                conn = None;
            }
        }
    }
}
