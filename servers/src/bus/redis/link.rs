//! The shared Redis connection and its recovery: handed out while Redis answers; once a command fails
//! because Redis is unreachable, one background task reconnects with jittered exponential backoff, so
//! a restarted Redis is picked up again (a `MultiplexedConnection` never reconnects by itself).

use std::{
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Duration,
};

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, RedisError};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::{bus::BusError, metrics::RedisCounters};

/// Bound on connecting and on every ordinary command, so a stalled Redis becomes a 503 (or a spooled
/// publish), never a hang.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle healthy link checks that Redis still answers, so an outage is noticed (and
/// logged) and a restart picked up even when no request happens to fail.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// Exponential backoff with jitter: 50 ms doubling to a 2 s cap, each wait ±25 %, so instances that
/// lost Redis together do not reconnect in lockstep.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);
    const CAP: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        Self { delay: Self::FIRST }
    }

    pub fn reset(&mut self) {
        self.delay = Self::FIRST;
    }

    /// The next wait; the delay after it doubles.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.delay.mul_f64(0.75 + fastrand::f64() * 0.5);
        self.delay = (self.delay * 2).min(Self::CAP);
        wait
    }
}

/// True for failures that mean "Redis is not reachable right now" (refused, dropped, timed out,
/// still loading its data after a restart), as opposed to a command Redis refused.
pub fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
        || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
}

/// A handed-out connection and the generation it belongs to, so a failure only retires the
/// connection it happened on.
#[derive(Clone)]
pub struct Conn {
    generation: u64,
    pub inner: MultiplexedConnection,
}

/// The shared connection of one server instance (its Redis bus and queue).
pub struct Link {
    client: redis::Client,
    current: Mutex<Option<Conn>>,
    generation: std::sync::atomic::AtomicU64,
    up: watch::Sender<bool>,
    broken: Notify,
    counters: Arc<RedisCounters>,
    stop: CancellationToken,
}

impl Link {
    /// Connects now (an unreachable Redis at startup is an error) and starts the recovery task, which
    /// ends when `stop` is cancelled.
    pub async fn connect(
        client: redis::Client,
        counters: Arc<RedisCounters>,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, RedisError> {
        let first = open_checked(&client).await?;
        let link = Arc::new(Self {
            client,
            current: Mutex::new(Some(Conn {
                generation: 0,
                inner: first,
            })),
            generation: std::sync::atomic::AtomicU64::new(0),
            up: watch::Sender::new(true),
            broken: Notify::new(),
            counters,
            stop,
        });
        tokio::spawn(recover(link.clone()));
        Ok(link)
    }

    /// The current connection, or `Unavailable` at once while Redis is down (the recovery task is
    /// already reconnecting, so a request never waits for it).
    pub fn get(&self) -> Result<Conn, BusError> {
        self.lock().clone().ok_or_else(|| {
            BusError::Unavailable("redis is unreachable; reconnecting with backoff".into())
        })
    }

    /// Reports a failed command on `conn`. Returns whether it was an outage; if so the connection is
    /// retired (once, with a warning) and the recovery task starts reconnecting.
    pub fn failed(&self, conn: &Conn, error: &RedisError) -> bool {
        if !is_outage(error) {
            return false;
        }
        let mut current = self.lock();
        if current
            .as_ref()
            .is_some_and(|c| c.generation == conn.generation)
        {
            *current = None;
            self.up.send_replace(false);
            tracing::warn!(
                %error,
                "redis is unreachable: spooling publishes and enqueues, reconnecting"
            );
            self.broken.notify_one();
        }
        true
    }

    /// Resolves once Redis answers again (at once when it does), or when the bus stops.
    pub async fn wait_up(&self) {
        let mut up = self.up.subscribe();
        tokio::select! {
            _ = up.wait_for(|up| *up) => {}
            () = self.stop.cancelled() => {}
        }
    }

    pub fn stop(&self) -> &CancellationToken {
        &self.stop
    }

    /// The client, for connections of their own (e.g. a pub/sub subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    pub fn counters(&self) -> &RedisCounters {
        &self.counters
    }

    /// A new connection of its own (for blocking reads), with `response_timeout`.
    pub async fn open(
        &self,
        response_timeout: Option<Duration>,
    ) -> Result<MultiplexedConnection, RedisError> {
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(response_timeout);
        self.client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
    }

    fn install(&self, inner: MultiplexedConnection) {
        let generation = self.generation.fetch_add(1, Relaxed) + 1;
        *self.lock() = Some(Conn { generation, inner });
        self.up.send_replace(true);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        // Every critical section is one assignment or clone, so a poisoned lock is still consistent.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Connects and checks that Redis answers (not just accepts: a restarting Redis may still load).
async fn open_checked(client: &redis::Client) -> Result<MultiplexedConnection, RedisError> {
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&settings)
        .await?;
    let _: String = redis::cmd("PING").query_async(&mut connection).await?;
    Ok(connection)
}

/// While up: a PING every [`HEALTH_CHECK`] (or a wake-up from [`Link::failed`]). While down: one
/// reconnect attempt per backoff step, counted, until Redis answers.
async fn recover(link: Arc<Link>) {
    let mut backoff = Backoff::new();
    let mut attempts = 0u64;
    loop {
        if let Ok(conn) = link.get() {
            tokio::select! {
                () = link.stop.cancelled() => return,
                () = link.broken.notified() => {}
                () = tokio::time::sleep(HEALTH_CHECK) => {
                    let ping: Result<String, _> =
                        redis::cmd("PING").query_async(&mut conn.inner.clone()).await;
                    if let Err(error) = ping {
                        link.failed(&conn, &error);
                    }
                }
            }
            continue;
        }
        attempts += 1;
        link.counters.reconnect_attempts.fetch_add(1, Relaxed);
        let attempt = tokio::select! {
            () = link.stop.cancelled() => return,
            attempt = open_checked(&link.client) => attempt,
        };
        match attempt {
            Ok(connection) => {
                link.install(connection);
                tracing::info!(attempts, "redis is reachable again");
                backoff.reset();
                attempts = 0;
            }
            Err(error) => {
                let wait = backoff.next_wait();
                tracing::debug!(%error, ?wait, attempts, "redis reconnect failed");
                tokio::select! {
                    () = link.stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// A link to a private `redis-server` for unit tests: the server (alive while the caller holds it), a
/// client of it, the link, and the token that stops the link's recovery task.
#[cfg(test)]
pub(crate) async fn test_link(
    counters: Arc<RedisCounters>,
) -> (
    crate::redis_server::RedisServer,
    redis::Client,
    Arc<Link>,
    CancellationToken,
) {
    use crate::redis_server::{RedisOptions, RedisServer};
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = redis::Client::open(redis.url()).unwrap_or_else(|e| panic!("{e}"));
    let stop = CancellationToken::new();
    let link = Link::connect(client.clone(), counters, stop.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (redis, client, link, stop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_with_bounded_jitter() {
        let mut backoff = Backoff::new();
        let waits: Vec<Duration> = (0..10).map(|_| backoff.next_wait()).collect();
        assert!(
            waits[0] >= Duration::from_micros(37_500) && waits[0] <= Duration::from_micros(62_500)
        );
        assert!(waits[1] >= Duration::from_millis(75) && waits[1] <= Duration::from_millis(125));
        for wait in &waits[6..] {
            assert!(*wait >= Duration::from_millis(1500) && *wait <= Duration::from_millis(2500));
        }
        backoff.reset();
        assert!(backoff.next_wait() <= Duration::from_micros(62_500));
    }
}
