//! The shared Redis connection and its recovery: handed out while Redis answers; once a command fails
//! because Redis is unreachable, one background task reconnects with jittered exponential backoff, so
//! a restarted Redis is picked up again (a `MultiplexedConnection` never reconnects by itself). Every
//! connect and health check also reads Redis's data epoch (`epoch.rs`), so a Redis that came back
//! without its data is noticed and its owners repair what they can ([`Link::on_data_loss`]). One
//! link per server instance, owned jointly by its Redis bus and Redis queue ([`LinkShare`]).

use std::{
    future::Future,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Duration,
};

use redis::{
    aio::MultiplexedConnection, AsyncConnectionConfig, FromRedisValue, Pipeline, RedisError,
    Script, ScriptInvocation,
};
use tokio::sync::{watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::epoch::Epoch;
use crate::{backoff::Backoff, metrics::RedisCounters, spool::Failure};

/// Bound on connecting and on every ordinary command, so a stalled Redis becomes a 503 (or a spooled
/// publish), never a hang.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle healthy link checks that Redis still answers (and still holds its data), so an
/// outage is noticed (and logged) and a restart picked up even when no request happens to fail.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

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

/// Redis is unreachable right now; the link is already reconnecting, so callers answer 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("redis is unreachable; reconnecting with backoff")]
pub struct LinkDown;

/// A handed-out connection and the generation it belongs to, so a failure only retires the
/// connection it happened on.
#[derive(Clone)]
pub struct Conn {
    generation: u64,
    pub inner: MultiplexedConnection,
}

/// The shared connection of one server instance (its Redis bus and queue). Background tasks hold it
/// as `Arc<Link>`; what keeps it running is a [`LinkShare`].
pub struct Link {
    client: redis::Client,
    current: Mutex<Option<Conn>>,
    generation: std::sync::atomic::AtomicU64,
    up: watch::Sender<bool>,
    broken: Notify,
    epoch: Epoch,
    counters: Arc<RedisCounters>,
    stop: CancellationToken,
}

/// One owner's share of a [`Link`] (the Redis bus holds one, the Redis queue another): the link and
/// its recovery task run until the last share is dropped, whoever drops last.
#[derive(Clone)]
pub struct LinkShare {
    link: Arc<Link>,
    _running: Arc<DropGuard>,
}

impl LinkShare {
    /// The link itself, for the owner's background tasks (holding it does not keep the link running:
    /// those tasks end on their owner's [`child_stop`](Self::child_stop) token).
    pub fn link(&self) -> Arc<Link> {
        self.link.clone()
    }

    /// A token for one owner's tasks: cancelled when the link stops; the owner cancels it when it is
    /// dropped, so its tasks end with it.
    pub fn child_stop(&self) -> CancellationToken {
        self.link.stop.child_token()
    }
}

impl std::ops::Deref for LinkShare {
    type Target = Link;
    fn deref(&self) -> &Link {
        &self.link
    }
}

impl Link {
    /// Connects now (an unreachable Redis at startup is an error) and starts the recovery task, which
    /// ends when the last [`LinkShare`] is dropped.
    pub async fn connect(
        client: redis::Client,
        counters: Arc<RedisCounters>,
    ) -> Result<LinkShare, RedisError> {
        let stop = CancellationToken::new();
        let epoch = Epoch::default();
        let (first, seen) = open_checked(&client, &epoch).await?;
        epoch.observe(seen, &counters);
        let link = Arc::new(Self {
            client,
            current: Mutex::new(Some(Conn {
                generation: 0,
                inner: first,
            })),
            generation: std::sync::atomic::AtomicU64::new(0),
            up: watch::Sender::new(true),
            broken: Notify::new(),
            epoch,
            counters,
            stop,
        });
        tokio::spawn(recover(link.clone()));
        Ok(LinkShare {
            _running: Arc::new(link.stop.clone().drop_guard()),
            link,
        })
    }

    /// The current connection, or [`LinkDown`] at once while Redis is down (the recovery task is
    /// already reconnecting, so a request never waits for it).
    pub fn get(&self) -> Result<Conn, LinkDown> {
        self.lock().clone().ok_or(LinkDown)
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

    /// Resolves once Redis answers again (at once when it does), or when the link stops.
    pub async fn wait_up(&self) {
        let mut up = self.up.subscribe();
        tokio::select! {
            _ = up.wait_for(|up| *up) => {}
            () = self.stop.cancelled() => {}
        }
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

    /// Runs one script invocation on the current connection; a failure says whether Redis was
    /// unreachable (the connection is then retired) or refused the command.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Failure> {
        let conn = self.get().map_err(not_sent)?;
        invocation
            .invoke_async(&mut conn.inner.clone())
            .await
            .map_err(|error| self.failure(&conn, &error))
    }

    /// Runs `pipe` on the current connection, classifying a failure like [`invoke`](Self::invoke).
    pub async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, Failure> {
        let conn = self.get().map_err(not_sent)?;
        pipe.query_async(&mut conn.inner.clone())
            .await
            .map_err(|error| self.failure(&conn, &error))
    }

    /// Runs `repair` after every loss of Redis's data this link notices, until `stop`: again after
    /// Redis answers (paced by backoff) while it fails with an outage, given up with a warning when
    /// Redis refuses it. Losses noticed while it runs are covered by one more run.
    pub fn on_data_loss<F, Fut>(self: &Arc<Self>, stop: CancellationToken, repair: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send,
    {
        let link = self.clone();
        let mut losses = self.epoch.losses();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = losses.changed() => if changed.is_err() { return },
                }
                losses.borrow_and_update();
                let mut backoff = Backoff::new();
                loop {
                    match repair().await {
                        Ok(()) => break,
                        Err(Failure::Refused(detail)) => {
                            tracing::warn!(%detail, "redis refused the repair after its data loss");
                            break;
                        }
                        Err(Failure::Outage { .. }) => {
                            tokio::select! {
                                () = stop.cancelled() => return,
                                () = link.wait_up() => {}
                            }
                            tokio::select! {
                                () = stop.cancelled() => return,
                                () = tokio::time::sleep(backoff.next_wait()) => {}
                            }
                        }
                    }
                }
            }
        });
    }

    /// Runs invocations of `script` in one pipeline, in order; one answer each.
    pub async fn invoke_batch<T: FromRedisValue>(
        &self,
        script: &Script,
        invocations: &[ScriptInvocation<'_>],
    ) -> Result<Vec<T>, Failure> {
        let conn = self.get().map_err(not_sent)?;
        let mut pipe = redis::pipe();
        // A pipeline does not load scripts on demand, and a restarted Redis has forgotten them.
        pipe.load_script(script).ignore();
        for invocation in invocations {
            pipe.invoke_script(invocation);
        }
        pipe.query_async(&mut conn.inner.clone())
            .await
            .map_err(|error| self.failure(&conn, &error))
    }

    /// Classifies a command's failure on `conn` (retiring the connection on an outage).
    fn failure(&self, conn: &Conn, error: &RedisError) -> Failure {
        let detail = format!("redis: {error}");
        if self.failed(conn, error) {
            Failure::Outage {
                attempted: true,
                detail,
            }
        } else {
            Failure::Refused(detail)
        }
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

fn not_sent(down: LinkDown) -> Failure {
    Failure::Outage {
        attempted: false,
        detail: down.to_string(),
    }
}

/// Connects and checks that Redis answers (not just accepts: a restarting Redis may still load);
/// returns the connection and Redis's data epoch.
async fn open_checked(
    client: &redis::Client,
    epoch: &Epoch,
) -> Result<(MultiplexedConnection, String), RedisError> {
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&settings)
        .await?;
    let seen = epoch.read(&mut connection).await?;
    Ok((connection, seen))
}

/// While up: an epoch read every [`HEALTH_CHECK`] (or a wake-up from [`Link::failed`]). While down:
/// one reconnect attempt per backoff step, counted, until Redis answers; a changed epoch is announced
/// before the new connection is handed out.
async fn recover(link: Arc<Link>) {
    let mut backoff = Backoff::new();
    let mut attempts = 0u64;
    loop {
        if let Ok(conn) = link.get() {
            tokio::select! {
                () = link.stop.cancelled() => return,
                () = link.broken.notified() => {}
                () = tokio::time::sleep(HEALTH_CHECK) => {
                    match link.epoch.read(&mut conn.inner.clone()).await {
                        Ok(seen) => link.epoch.observe(seen, &link.counters),
                        Err(error) => {
                            link.failed(&conn, &error);
                        }
                    }
                }
            }
            continue;
        }
        attempts += 1;
        link.counters.reconnect_attempts.fetch_add(1, Relaxed);
        let attempt = tokio::select! {
            () = link.stop.cancelled() => return,
            attempt = open_checked(&link.client, &link.epoch) => attempt,
        };
        match attempt {
            Ok((connection, seen)) => {
                link.epoch.observe(seen, &link.counters);
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
/// client of it, and a share of the link (which stops when it is dropped).
#[cfg(test)]
pub(crate) async fn test_link(
    counters: Arc<RedisCounters>,
) -> (super::server::RedisServer, redis::Client, LinkShare) {
    use super::server::{RedisOptions, RedisServer};
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = redis::Client::open(redis.url()).unwrap_or_else(|e| panic!("{e}"));
    let link = Link::connect(client.clone(), counters)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (redis, client, link)
}
