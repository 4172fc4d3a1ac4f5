//! The clients of one process: a share of the cell's client ids started at that share's part of
//! the ramp rate, waited for until each has subscribed or failed, drained when publishing stops.
//! The runner uses it for the clients it hosts itself, a load worker for its share.

use std::{
    net::Ipv4Addr,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    clients::{ClientCtx, Phase, RunShared},
    net::SourceAddrs,
    pattern::Pattern,
    procs::Share,
};

/// How long clients may take to settle after the last one started.
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

/// Running clients of one process.
pub struct ClientGroup {
    clients: JoinSet<()>,
}

impl ClientGroup {
    /// Starts the clients of `share` from `started` on, at `share.of`-th of the ramp rate (so the
    /// shares together ramp at the configured rate); stops starting more on `stop`.
    pub async fn ramp(
        shared: &Arc<RunShared>,
        pattern: Pattern,
        share: Share,
        source: Option<Ipv4Addr>,
        started: Instant,
        stop: &CancellationToken,
    ) -> Self {
        let scenario = &shared.scenario;
        let targets = &shared.targets;
        let sources: Vec<SourceAddrs> = targets
            .iter()
            .map(|target| match source {
                Some(ip) => SourceAddrs::fixed(ip),
                None => SourceAddrs::for_target(target.addr),
            })
            .collect();
        let instances = targets.len();
        let client = pattern.client(scenario.profiled(pattern));
        let per_second = scenario.ramp as f64 / share.of.max(1) as f64;
        let mut clients = JoinSet::new();
        for (nth, id) in share.ids(scenario.clients).enumerate() {
            let due = started + Duration::from_secs_f64(nth as f64 / per_second);
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = stop.cancelled() => break,
            }
            // Round-robin over the instances, as a load balancer would; each instance's clients
            // get their own spread of source addresses.
            let instance = id % instances;
            clients.spawn(client(ClientCtx {
                id,
                shared: shared.clone(),
                target: targets[instance].clone(),
                remote: instance != 0,
                source: sources[instance].source(id / instances),
                rng: fastrand::Rng::with_seed(id as u64),
            }));
        }
        Self { clients }
    }

    /// Clients started.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Waits until every started client is subscribed or has failed, for at most
    /// [`SETTLE_DEADLINE`], or until `stop`.
    pub async fn settle(&self, shared: &RunShared, stop: &CancellationToken) {
        let settled = || shared.ready.load(Relaxed) + shared.failed.load(Relaxed);
        let deadline = Instant::now() + SETTLE_DEADLINE;
        while settled() < self.len() && Instant::now() < deadline && !stop.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishing has stopped and the final heads are known: feed clients catch up for at most
    /// `drain`, then everyone stops.
    pub async fn drain(&mut self, drain: Duration, phase: &watch::Sender<Phase>) {
        let _ = phase.send(Phase::Drain);
        let drained = tokio::time::timeout(drain, async {
            while self.clients.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        let _ = phase.send(Phase::Stop);
        if !drained {
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while self.clients.join_next().await.is_some() {}
            })
            .await;
            self.clients.shutdown().await;
        }
    }

    /// Stops every client now.
    pub async fn stop(mut self, phase: &watch::Sender<Phase>) {
        let _ = phase.send(Phase::Stop);
        self.clients.shutdown().await;
    }
}
