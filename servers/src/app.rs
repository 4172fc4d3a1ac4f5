//! The server: shared state, the router every pattern registers into, and `run` with graceful,
//! bounded shutdown.

use std::{future::Future, io, sync::Arc};

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::{Method, Uri},
    middleware::{self, Next},
    response::Response,
    Router,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    bus::{Bus, LogBus, MemoryBus, RedisBus},
    config::{BrokerKind, ServerConfig},
    error::AppError,
    feed_api,
    listener::CountingListener,
    log::{kafka::KafkaLog, rabbitmq::RabbitLog, LogBroker},
    metrics::Metrics,
    patterns,
    queue::{ClaimLanes, JobQueue, Lanes, LogQueue, MemoryQueue, RabbitLanes, RedisQueue},
    redis::link::Link,
};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub bus: Arc<dyn Bus>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ServerConfig>,
    /// The message queue (in-process, or Redis when `--bus` names one).
    pub queue: Arc<dyn JobQueue>,
    /// Cancelled when the server begins shutting down; streams and held requests end on it.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// State with the default in-process bus.
    pub fn new(config: ServerConfig) -> Self {
        let bus = Arc::new(MemoryBus::new(config.bus_config()));
        Self::with_bus(config, bus)
    }

    /// State with the bus `config.bus` names: Redis, RabbitMQ or Kafka when set (connecting now),
    /// else in-process.
    pub async fn connect(config: ServerConfig) -> io::Result<Self> {
        let Some(url) = config.bus.clone() else {
            return Ok(Self::new(config));
        };
        match BrokerKind::of_url(&url) {
            Some(BrokerKind::RabbitMq) | Some(BrokerKind::Kafka) => {
                Self::connect_log(config, &url).await
            }
            _ => Self::connect_redis(config, &url).await,
        }
    }

    async fn connect_redis(config: ServerConfig, url: &str) -> io::Result<Self> {
        let unreachable = |e: redis::RedisError| {
            io::Error::other(format!("cannot reach Redis at {url}: redis: {e}"))
        };
        // The link counts reconnects and both spools into the server's metrics.
        let metrics = Arc::new(Metrics::default());
        let client = redis::Client::open(url).map_err(unreachable)?;
        let link = Link::connect(client, metrics.redis.clone())
            .await
            .map_err(unreachable)?;
        // The bus and the queue share the link: one connection, one reconnect loop.
        let bus = RedisBus::over(link.clone(), config.bus_config(), config.spool_limits());
        let queue = RedisQueue::new(
            link,
            config.queue_config(),
            metrics.clone(),
            config.spool_limits(),
        );
        let mut state = Self::with_bus(config, Arc::new(bus));
        state.metrics = metrics;
        state.queue = Arc::new(queue);
        Ok(state)
    }

    /// A log broker (RabbitMQ or Kafka) under the bus and the queue.
    async fn connect_log(config: ServerConfig, url: &str) -> io::Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let counters = metrics.redis.clone();
        let unreachable = |e: crate::log::LogError| {
            io::Error::other(format!("cannot reach the broker at {url}: {e}"))
        };
        let queue_config = config.queue_config();
        // The broker's own way of handing jobs to workers: RabbitMQ lane queues, or Kafka claims.
        let (broker, lanes): (Arc<dyn LogBroker>, Arc<dyn Lanes>) = match BrokerKind::of_url(url) {
            Some(BrokerKind::RabbitMq) => {
                let rabbit = RabbitLog::connect(url, counters.clone())
                    .await
                    .map_err(unreachable)?;
                let lanes = RabbitLanes::new(rabbit.link(), queue_config.visibility_timeout);
                (Arc::new(rabbit), Arc::new(lanes))
            }
            _ => {
                let kafka = KafkaLog::connect(url, counters.clone())
                    .await
                    .map_err(unreachable)?;
                (Arc::new(kafka), Arc::new(ClaimLanes))
            }
        };
        let bus = LogBus::new(
            broker.clone(),
            config.bus_config(),
            config.spool_limits(),
            counters,
        );
        let queue = LogQueue::new(
            broker,
            lanes,
            queue_config,
            metrics.clone(),
            config.spool_limits(),
        );
        let mut state = Self::with_bus(config, Arc::new(bus));
        state.metrics = metrics;
        state.queue = queue;
        Ok(state)
    }

    pub fn with_bus(config: ServerConfig, bus: Arc<dyn Bus>) -> Self {
        let metrics = Arc::new(Metrics::default());
        let queue = Arc::new(MemoryQueue::new(config.queue_config(), metrics.clone()));
        Self {
            bus,
            metrics,
            config: Arc::new(config),
            queue,
            shutdown: CancellationToken::new(),
        }
    }

    /// Publishes through the bus and counts it. Every publishing route goes through here or through
    /// [`publish_or_spool`](Self::publish_or_spool), so `commbench_events_published_total` counts each
    /// appended publish once, whichever pattern made it.
    pub async fn publish(
        &self,
        topic: &crate::topic::TopicName,
        payload: bytes::Bytes,
    ) -> Result<u64, crate::bus::BusError> {
        let seq = self.bus.publish(topic, payload).await?;
        self.count_published();
        Ok(seq)
    }

    /// Like [`publish`](Self::publish), but while the Redis bus cannot reach Redis the event may be
    /// spooled instead (`POST /publish`, the one route that can answer 202). A spooled event counts in
    /// the spool's metrics when it is replayed, not here.
    pub async fn publish_or_spool(
        &self,
        topic: &crate::topic::TopicName,
        payload: bytes::Bytes,
    ) -> Result<crate::bus::Published, crate::bus::PublishError> {
        let published = self.bus.publish_or_spool(topic, payload).await?;
        if let crate::bus::Published::Appended(_) = published {
            self.count_published();
        }
        Ok(published)
    }

    fn count_published(&self) {
        self.metrics
            .events_published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The complete router: the feed API, every registered pattern, JSON 404/405 and the body limit.
pub fn app(state: AppState) -> Router {
    let mut router = feed_api::routes();
    for routes in patterns::ALL {
        router = router.merge(routes(&state));
    }
    router = router
        // Must come after every route is registered: it applies to the routes present now.
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.max_body));
    if let Some(stall) = state.config.debug_stall {
        let started = tokio::time::Instant::now();
        router = router.layer(middleware::from_fn(move |request: Request, next: Next| {
            stall_request(started, stall, request, next)
        }));
    }
    router.with_state(state)
}

/// Test-only (`--debug-stall`): holds requests that arrive during the stall until it ends.
async fn stall_request(
    started: tokio::time::Instant,
    stall: crate::config::Stall,
    request: Request,
    next: Next,
) -> Response {
    let (from, until) = (started + stall.at, started + stall.at + stall.len);
    let now = tokio::time::Instant::now();
    if now >= from && now < until {
        tokio::time::sleep_until(until).await;
    }
    next.run(request).await
}

async fn not_found(uri: Uri) -> AppError {
    AppError::NotFound(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> AppError {
    AppError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Serves on an already-bound listener until `shutdown` resolves, then lets open streams and held
/// requests end cleanly, waiting at most `config.shutdown_grace` (plus a second) for them.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let token = state.shutdown.clone();
    let grace = state.config.shutdown_grace;
    // In-server queue workers end on the shutdown token.
    let _workers = crate::queue::workers::spawn(&state);
    let timeouts = crate::conn_timeouts::ConnTimeouts {
        header: state.config.header_timeout,
        idle: state.config.idle_timeout,
    };
    let listener = CountingListener::new(
        listener,
        state.metrics.clone(),
        crate::fd_limit::fit_connections(state.config.max_connections),
        timeouts,
    );
    let serve = crate::serve::serve(
        listener,
        app(state.clone()),
        state.metrics.clone(),
        token.clone(),
    );
    let mut serve = std::pin::pin!(serve);
    tokio::select! {
        () = &mut serve => return Ok(()),
        () = shutdown => token.cancel(),
        () = token.cancelled() => {}
    }
    tracing::info!(?grace, "shutting down: ending streams and held requests");
    if tokio::time::timeout(grace + std::time::Duration::from_secs(1), serve)
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing anyway");
    }
    Ok(())
}

/// A running server, for tests, benches and the embedded load-generator target.
pub struct ServerHandle {
    pub addr: std::net::SocketAddr,
    pub state: AppState,
    pub task: tokio::task::JoinHandle<io::Result<()>>,
}

impl ServerHandle {
    /// Binds `config.bind` (use port 0 for an ephemeral port) and serves in a background task.
    pub async fn spawn(config: ServerConfig) -> io::Result<Self> {
        let listener = crate::bind_listener(config.bind)?;
        let addr = listener.local_addr()?;
        let state = AppState::connect(config).await?;
        let task = tokio::spawn(run(listener, state.clone(), std::future::pending()));
        Ok(Self { addr, state, task })
    }

    /// `http://addr` with no trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the graceful shutdown and waits for it to finish.
    pub async fn shutdown(self) -> io::Result<()> {
        self.state.shutdown.cancel();
        self.task.await.unwrap_or_else(|e| Err(io::Error::other(e)))
    }
}
