//! The backends every behaviour test runs against — in-process, Redis, RabbitMQ, Kafka (tansu) — and
//! their brokers: one private broker per backend per test binary, shared by its tests (each test uses
//! topic and queue names of its own), or a private one a test may kill and restart. A test whose
//! broker is not installed is skipped with a message naming the install script.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use commbench_servers::{
    broker::{rabbitmq::RabbitServer, tansu::TansuServer, INSTALL_SCRIPT},
    redis::server::{RedisOptions, RedisServer},
    ServerConfig, ServerHandle,
};
use tokio::sync::OnceCell;

use super::common::{test_config, within, STEP};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    RabbitMq,
    Kafka,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Redis => "redis",
            Backend::RabbitMq => "rabbitmq",
            Backend::Kafka => "kafka",
        }
    }

    fn installed(self) -> bool {
        match self {
            Backend::Memory => true,
            Backend::Redis => commbench_servers::redis::server::installed(),
            Backend::RabbitMq => commbench_servers::broker::rabbitmq::installed(),
            Backend::Kafka => commbench_servers::broker::tansu::installed(),
        }
    }

    /// True when the backend can run here; otherwise says why the test is skipped.
    pub fn available(self, test: &str) -> bool {
        if self.installed() {
            return true;
        }
        eprintln!(
            "skipping {test} on {}: the broker is not installed; run {INSTALL_SCRIPT}",
            self.label()
        );
        false
    }
}

/// A private broker process of any kind.
pub enum Broker {
    Redis(RedisServer),
    RabbitMq(RabbitServer),
    Kafka(TansuServer),
}

impl Broker {
    /// Starts a private broker; `None` for the in-process backend. Redis is durable (append-only,
    /// fsync always) so a kill and restart loses nothing it acknowledged, like the RabbitMQ node.
    pub async fn start(backend: Backend) -> Option<Self> {
        let started = match backend {
            Backend::Memory => return None,
            Backend::Redis => RedisServer::start(RedisOptions { durable: true })
                .await
                .map(Broker::Redis)
                .map_err(|e| e.to_string()),
            // Settled, so that it survives the SIGKILL these tests give it (see `settle`).
            Backend::RabbitMq => match RabbitServer::start().await {
                Ok(mut node) => node.settle().await.map(|()| Broker::RabbitMq(node)),
                Err(error) => Err(error),
            }
            .map_err(|e| e.to_string()),
            Backend::Kafka => TansuServer::start()
                .await
                .map(Broker::Kafka)
                .map_err(|e| e.to_string()),
        };
        Some(started.unwrap_or_else(|e| panic!("{e}")))
    }

    pub fn url(&self) -> String {
        match self {
            Broker::Redis(b) => b.url().to_owned(),
            Broker::RabbitMq(b) => b.url().to_owned(),
            Broker::Kafka(b) => b.url().to_owned(),
        }
    }

    /// Kills the broker process (SIGKILL).
    pub fn kill(&mut self) {
        match self {
            Broker::Redis(b) => b.kill(),
            Broker::RabbitMq(b) => b.kill(),
            Broker::Kafka(b) => b.kill(),
        }
    }

    /// Starts it again on the same port (Redis and RabbitMQ with their data; tansu, whose storage
    /// is memory, empty).
    pub async fn restart(&mut self) {
        let restarted = match self {
            Broker::Redis(b) => b.restart().await.map_err(|e| e.to_string()),
            Broker::RabbitMq(b) => b.restart().await.map_err(|e| e.to_string()),
            Broker::Kafka(b) => b.restart().await.map_err(|e| e.to_string()),
        };
        restarted.unwrap_or_else(|e| panic!("restarting the broker: {e}"));
    }

    /// Processes and directory, for the watchdog of a shared broker.
    fn remains(&self) -> (Vec<u32>, std::path::PathBuf) {
        match self {
            Broker::Redis(b) => (b.pid().into_iter().collect(), b.dir().to_owned()),
            Broker::RabbitMq(b) => (b.pids(), b.dir().to_owned()),
            Broker::Kafka(b) => (b.pid().into_iter().collect(), b.dir().to_owned()),
        }
    }
}

/// A shared broker lives in a static and is never dropped: a watchdog shell kills it (and removes
/// its directory) once this test process has exited.
fn reap_after_exit(broker: &Broker) {
    let (pids, dir) = broker.remains();
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 0.5; done; kill -9 {} 2>/dev/null; rm -rf '{}'",
        std::process::id(),
        pids.join(" "),
        dir.display()
    );
    let _ = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

static REDIS: OnceCell<Arc<Broker>> = OnceCell::const_new();
static RABBITMQ: OnceCell<Arc<Broker>> = OnceCell::const_new();
static KAFKA: OnceCell<Arc<Broker>> = OnceCell::const_new();

/// The backend's broker shared by this test binary (started by the first test that needs it).
pub async fn shared(backend: Backend) -> Option<Arc<Broker>> {
    let cell = match backend {
        Backend::Memory => return None,
        Backend::Redis => &REDIS,
        Backend::RabbitMq => &RABBITMQ,
        Backend::Kafka => &KAFKA,
    };
    let broker = cell
        .get_or_init(|| async {
            let broker = Broker::start(backend).await.unwrap();
            reap_after_exit(&broker);
            Arc::new(broker)
        })
        .await;
    Some(broker.clone())
}

/// Server instances on one backend: two sharing the broker, or for the in-process backend the same
/// single server twice (it has no second instance to ask).
pub struct Instances {
    servers: Vec<ServerHandle>,
}

impl Instances {
    pub fn url(&self, i: usize) -> String {
        self.servers[i % self.servers.len()].url()
    }

    pub fn server(&self, i: usize) -> &ServerHandle {
        &self.servers[i % self.servers.len()]
    }

    pub fn servers(&self) -> &[ServerHandle] {
        &self.servers
    }
}

/// Starts `count` instances with `tweak` applied, on `url` (`None`: in-process).
pub async fn instances_on(
    url: Option<String>,
    count: usize,
    tweak: impl Fn(&mut ServerConfig),
) -> Instances {
    let count = if url.is_some() { count } else { 1 };
    let mut servers = Vec::with_capacity(count);
    for _ in 0..count {
        let mut config = test_config();
        config.bus = url.clone();
        tweak(&mut config);
        config.validate().unwrap();
        servers.push(
            within("a server to start", STEP * 3, ServerHandle::spawn(config))
                .await
                .unwrap(),
        );
    }
    Instances { servers }
}

/// `count` instances on the backend's shared broker.
pub async fn instances(
    backend: Backend,
    count: usize,
    tweak: impl Fn(&mut ServerConfig),
) -> Instances {
    let url = shared(backend).await.map(|b| b.url());
    instances_on(url, count, tweak).await
}

/// Expands behaviour tests, each an `async fn(Backend)` in the including file, into one test per
/// backend: `suite!(name, name, …)` makes `memory::name`, `redis::name`, `rabbitmq::name`,
/// `kafka::name`.
/// `suite!(brokers: name, …)` does the same for the three broker backends only (behaviours that
/// need a second process, which the in-process backend does not have); `suite!(restartable: …)`
/// the same in a module of its own, for the tests that kill and restart a broker of their own
/// (RabbitMQ's node settled first, see [`Broker::start`]).
#[macro_export]
macro_rules! suite {
    (brokers: $($test:ident),+ $(,)?) => {
        mod brokers {
            $crate::suite!(@backend redis, Redis, $($test),+);
            $crate::suite!(@backend rabbitmq, RabbitMq, $($test),+);
            $crate::suite!(@backend kafka, Kafka, $($test),+);
            use super::*;
        }
    };
    (restartable: $($test:ident),+ $(,)?) => {
        mod restartable {
            $crate::suite!(@backend redis, Redis, $($test),+);
            $crate::suite!(@backend rabbitmq, RabbitMq, $($test),+);
            $crate::suite!(@backend kafka, Kafka, $($test),+);
            use super::*;
        }
    };
    ($($test:ident),+ $(,)?) => {
        $crate::suite!(@backend memory, Memory, $($test),+);
        $crate::suite!(@backend redis, Redis, $($test),+);
        $crate::suite!(@backend rabbitmq, RabbitMq, $($test),+);
        $crate::suite!(@backend kafka, Kafka, $($test),+);
    };
    (@backend $module:ident, $variant:ident, $($test:ident),+) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let backend = $crate::backends::Backend::$variant;
                    if backend.available(stringify!($test)) {
                        super::$test(backend).await;
                    }
                }
            )+
        }
    };
}
