//! The servers under test for one cell: an external target (with its process when `--target-pid`
//! names it), a target profile's server started as a child, or embedded server instances (child
//! processes of this binary) with the bus between them — in-process for one instance, or a real Redis
//! (a private `redis-server` started for the cell, or an existing one from `--bus-url`).

use std::{sync::Arc, time::Duration};

use commbench_servers::{
    redis_cleanup,
    redis_server::{RedisOptions, RedisServer, RedisServerError},
    topic::TopicName,
};

use crate::{
    profile::ProfileServer,
    scenario::{BusKind, Scenario},
    target::{EmbeddedServer, Target, TargetError},
};

/// How long an existing Redis (`--bus-url`) may take to answer the first PING.
const BROKER_CHECK: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Broker(#[from] RedisServerError),
    #[error("the Redis at {url} does not answer: {detail}")]
    BrokerUnreachable { url: String, detail: String },
}

/// The topics and queues one cell may have created, by name.
#[derive(Debug, Default)]
pub struct CellKeys {
    pub topics: Vec<String>,
    pub queues: Vec<String>,
}

/// The Redis between the instances.
enum Broker {
    /// Started for this cell; its CPU and memory are measured.
    Private(RedisServer),
    /// Someone else's (`--bus-url`); not ours to measure.
    Existing(String),
}

/// What clients connect to, and the processes behind it.
pub struct Fleet {
    /// One per instance; client `i` uses `targets[i % len]`, publishes go to `targets[0]`.
    pub targets: Vec<Arc<Target>>,
    servers: Vec<EmbeddedServer>,
    /// A target profile's server, started for the cell.
    profiled: Option<ProfileServer>,
    /// An external target's process (`--target-pid`).
    external_pid: Option<u32>,
    broker: Option<Broker>,
}

impl Fleet {
    /// Reaches the external target, or starts the broker (when the bus is Redis) and then every
    /// instance with `server_args`.
    pub async fn start(scenario: &Scenario, server_args: &[String]) -> Result<Self, FleetError> {
        let external = |target: Target, profiled: Option<ProfileServer>| Self {
            targets: vec![Arc::new(target)],
            servers: Vec::new(),
            external_pid: scenario.target_pid,
            profiled,
            broker: None,
        };
        let profile = scenario.profile.as_ref();
        let base_url = profile.and_then(|p| p.base_url.as_ref());
        match (&scenario.target, profile.and_then(|p| p.start.as_ref())) {
            (Some(url), _) => {
                let target = Target::external(url).await?;
                target.check_reachable(Duration::from_secs(3)).await?;
                return Ok(external(target, None));
            }
            (None, Some(start)) => {
                let server = ProfileServer::start(start, base_url).await?;
                return Ok(external(server.target.clone(), Some(server)));
            }
            (None, None) => {
                if let Some(url) = base_url {
                    let target = Target::external(&url.render(&Default::default())).await?;
                    target.check_reachable(Duration::from_secs(3)).await?;
                    return Ok(external(target, None));
                }
            }
        }
        let broker = match (scenario.bus, &scenario.bus_url) {
            (BusKind::Memory, _) => None,
            (BusKind::Redis, Some(url)) => {
                check_broker(url).await?;
                Some(Broker::Existing(url.clone()))
            }
            (BusKind::Redis, None) => Some(Broker::Private(
                RedisServer::start(RedisOptions::default()).await?,
            )),
        };
        let mut args = server_args.to_vec();
        if let Some(broker) = &broker {
            args.extend(["--bus".to_owned(), broker.url().to_owned()]);
        }
        let mut fleet = Self {
            targets: Vec::new(),
            servers: Vec::new(),
            profiled: None,
            external_pid: None,
            broker,
        };
        for _ in 0..scenario.instances {
            match EmbeddedServer::start(&args).await {
                Ok(server) => {
                    fleet.targets.push(Arc::new(server.target.clone()));
                    fleet.servers.push(server);
                }
                Err(error) => {
                    fleet.stop(&CellKeys::default()).await;
                    return Err(error.into());
                }
            }
        }
        Ok(fleet)
    }

    /// The server processes measured: the embedded instances, a profile's server or the
    /// `--target-pid` process (empty for an external target without one).
    pub fn server_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.servers.iter().map(|s| s.pid).collect();
        pids.extend(self.profiled.as_ref().map(|s| s.pid));
        pids.extend(self.external_pid);
        pids
    }

    /// The process of a target profile's server, when the load generator started it.
    pub fn profile_server_pid(&self) -> Option<u32> {
        self.profiled.as_ref().map(|s| s.pid)
    }

    /// The private Redis's process id, when the load generator started one.
    pub fn broker_pid(&self) -> Option<u32> {
        match &self.broker {
            Some(Broker::Private(redis)) => redis.pid(),
            _ => None,
        }
    }

    /// Stops every instance (gracefully, bounded), then the private Redis; from an existing Redis
    /// it removes what the cell created (`keys`), so later runs start from the same limits.
    pub async fn stop(self, keys: &CellKeys) {
        let stops = self.servers.into_iter().map(EmbeddedServer::stop);
        futures_util::future::join_all(stops).await;
        if let Some(server) = self.profiled {
            server.stop().await;
        }
        if let Some(Broker::Existing(url)) = &self.broker {
            let names = |list: &[String]| -> Vec<TopicName> {
                list.iter()
                    .filter_map(|n| TopicName::parse(n).ok())
                    .collect()
            };
            let (topics, queues) = (names(&keys.topics), names(&keys.queues));
            let forget = redis_cleanup::forget(url, &topics, &queues);
            match tokio::time::timeout(BROKER_CHECK, forget).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%url, %error, "could not tidy the Redis"),
                Err(_) => tracing::warn!(%url, "tidying the Redis timed out"),
            }
        }
        drop(self.broker);
    }
}

impl Broker {
    fn url(&self) -> &str {
        match self {
            Broker::Private(redis) => redis.url(),
            Broker::Existing(url) => url,
        }
    }
}

/// Fails fast, naming the URL, when the existing Redis does not answer PING.
async fn check_broker(url: &str) -> Result<(), FleetError> {
    let unreachable = |detail: String| FleetError::BrokerUnreachable {
        url: url.to_owned(),
        detail,
    };
    let client = redis::Client::open(url).map_err(|e| unreachable(e.to_string()))?;
    let ping = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
    };
    match tokio::time::timeout(BROKER_CHECK, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {BROKER_CHECK:?}"))),
    }
}
