//! The servers under test for one cell: an external target (with its process when `--target-pid`
//! names it), a target profile's server started as a child, or embedded server instances (child
//! processes of this binary) with the bus between them — in-process for one instance, or a real
//! broker: Redis, RabbitMQ or a Kafka-protocol broker (a private `redis-server`, RabbitMQ node or
//! tansu started for the cell, or an existing one from `--bus-url`).

use std::{sync::Arc, time::Duration};

use commbench_servers::{
    broker::{rabbitmq::RabbitServer, tansu::TansuServer, BrokerError},
    redis::cleanup,
    redis::server::{self as redis_server, RedisOptions, RedisServer, RedisServerError},
    topic::TopicName,
};

use crate::{
    profile::ProfileServer,
    scenario::{BusKind, Scenario},
    target::{EmbeddedServer, Target, TargetError},
};

/// How long an existing broker (`--bus-url`) may take to answer (Redis: a PING; the others: a TCP
/// connection).
const BROKER_CHECK: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Redis(#[from] RedisServerError),
    #[error("{0}")]
    Broker(#[from] BrokerError),
    #[error("the {kind} broker at {url} does not answer: {detail}")]
    BrokerUnreachable {
        kind: BusKind,
        url: String,
        detail: String,
    },
}

/// The topics and queues one cell may have created, by name.
#[derive(Debug, Default)]
pub struct CellKeys {
    pub topics: Vec<String>,
    pub queues: Vec<String>,
}

/// The broker between the instances.
enum Broker {
    /// Started for this cell; its CPU and memory are measured.
    Private(PrivateBroker),
    /// Someone else's (`--bus-url`); not ours to measure.
    Existing { kind: BusKind, url: String },
}

/// Why a private broker of `kind` cannot be started here (what is missing and how to install it);
/// `None` when it can (or `kind` is the in-process bus).
pub fn missing_broker(kind: BusKind) -> Option<String> {
    use commbench_servers::broker;
    match kind {
        BusKind::Memory => None,
        BusKind::Redis => (!redis_server::installed()).then(|| {
            format!(
                "redis-server is not installed; {}",
                redis_server::INSTALL_HINT
            )
        }),
        BusKind::RabbitMq => (!broker::rabbitmq::installed()).then(|| {
            format!(
                "rabbitmq-server is not installed; {}",
                broker::rabbitmq::install_hint()
            )
        }),
        BusKind::Kafka => (!broker::tansu::installed()).then(|| {
            format!(
                "tansu (the Kafka-protocol broker) is not installed; {}",
                broker::tansu::install_hint()
            )
        }),
    }
}

/// A broker process this cell started; dropping it stops the process by PID.
enum PrivateBroker {
    Redis(RedisServer),
    RabbitMq(RabbitServer),
    Kafka(TansuServer),
}

impl PrivateBroker {
    async fn start(kind: BusKind) -> Result<Option<Self>, FleetError> {
        Ok(Some(match kind {
            BusKind::Memory => return Ok(None),
            BusKind::Redis => {
                PrivateBroker::Redis(RedisServer::start(RedisOptions::default()).await?)
            }
            BusKind::RabbitMq => PrivateBroker::RabbitMq(RabbitServer::start().await?),
            BusKind::Kafka => PrivateBroker::Kafka(TansuServer::start().await?),
        }))
    }

    fn url(&self) -> &str {
        match self {
            PrivateBroker::Redis(b) => b.url(),
            PrivateBroker::RabbitMq(b) => b.url(),
            PrivateBroker::Kafka(b) => b.url(),
        }
    }

    /// The process that does the broker's work (RabbitMQ: the Erlang VM, not its start script).
    fn pid(&self) -> Option<u32> {
        match self {
            PrivateBroker::Redis(b) => b.pid(),
            PrivateBroker::RabbitMq(b) => b.pid(),
            PrivateBroker::Kafka(b) => b.pid(),
        }
    }
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
            (kind, Some(url)) if kind.is_broker() => {
                check_broker(kind, url).await?;
                Some(Broker::Existing {
                    kind,
                    url: url.clone(),
                })
            }
            // Boxed: a RabbitMQ start is a deep future, and every cell's future holds it.
            (kind, _) => Box::pin(PrivateBroker::start(kind))
                .await?
                .map(Broker::Private),
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

    /// The private broker's process id, when the load generator started one.
    pub fn broker_pid(&self) -> Option<u32> {
        match &self.broker {
            Some(Broker::Private(broker)) => broker.pid(),
            _ => None,
        }
    }

    /// Stops every instance (gracefully, bounded), then the private broker; from an existing Redis
    /// it removes what the cell created (`keys`), so later runs start from the same limits. (An
    /// existing RabbitMQ or Kafka keeps the cell's logs: their limits are per instance, not global.)
    pub async fn stop(self, keys: &CellKeys) {
        let stops = self.servers.into_iter().map(EmbeddedServer::stop);
        futures_util::future::join_all(stops).await;
        if let Some(server) = self.profiled {
            server.stop().await;
        }
        if let Some(Broker::Existing {
            kind: BusKind::Redis,
            url,
        }) = &self.broker
        {
            let names = |list: &[String]| -> Vec<TopicName> {
                list.iter()
                    .filter_map(|n| TopicName::parse(n).ok())
                    .collect()
            };
            let (topics, queues) = (names(&keys.topics), names(&keys.queues));
            let forget = cleanup::forget(url, &topics, &queues);
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
            Broker::Private(broker) => broker.url(),
            Broker::Existing { url, .. } => url,
        }
    }
}

/// Fails fast, naming the URL, when the existing broker does not answer: Redis a PING, RabbitMQ and
/// Kafka a TCP connection (the servers then speak their protocol and fail with its error).
async fn check_broker(kind: BusKind, url: &str) -> Result<(), FleetError> {
    let unreachable = |detail: String| FleetError::BrokerUnreachable {
        kind,
        url: url.to_owned(),
        detail,
    };
    let answered = match kind {
        BusKind::Redis => {
            let client = redis::Client::open(url).map_err(|e| unreachable(e.to_string()))?;
            let ping = async {
                let mut connection = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING")
                    .query_async::<String>(&mut connection)
                    .await
                    .map(drop)
            };
            tokio::time::timeout(BROKER_CHECK, ping)
                .await
                .map(|r| r.map_err(|e| e.to_string()))
        }
        _ => {
            let address = host_port(kind, url).map_err(unreachable)?;
            let connect = tokio::net::TcpStream::connect(address);
            tokio::time::timeout(BROKER_CHECK, connect)
                .await
                .map(|r| r.map(drop).map_err(|e| e.to_string()))
        }
    };
    match answered {
        Ok(Ok(())) => Ok(()),
        Ok(Err(detail)) => Err(unreachable(detail)),
        Err(_) => Err(unreachable(format!("no answer within {BROKER_CHECK:?}"))),
    }
}

/// `host:port` of a broker URL (RabbitMQ's port 5672 and Kafka's 9092 when none is given).
fn host_port(kind: BusKind, url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?;
    let default = if kind == BusKind::Kafka { 9092 } else { 5672 };
    Ok(format!("{host}:{}", uri.port_u16().unwrap_or(default)))
}
