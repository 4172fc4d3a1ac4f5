//! The connection to RabbitMQ of one server instance and its recovery: handed out while it is open;
//! once it drops, one background task reconnects with jittered exponential backoff (each attempt
//! counted), so a restarted node is picked up again (an AMQP connection never reconnects by itself).
//! It also owns the publishing channel, in confirm mode, with the bookkeeping of outstanding confirms.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use amqprs::{
    callbacks::{ChannelCallback, ConnectionCallback},
    channel::{BasicPublishArguments, Channel, ConfirmSelectArguments},
    connection::{Connection, OpenConnectionArguments},
    Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return,
};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{oneshot, watch, Notify};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::lock::lock;
use crate::{backoff::Backoff, log::LogError, metrics::RedisCounters};

/// Bound on connecting and on every confirm wait, so a stalled broker becomes a 503, never a hang.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle link checks that its connection is still open.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// The shared connection of one server instance (its RabbitMQ bus and queue).
pub struct RabbitLink {
    args: OpenConnectionArguments,
    current: Mutex<Option<Arc<Session>>>,
    /// How many connections were opened before the current one (see [`RabbitLink::generation`]).
    generation: AtomicU64,
    up: watch::Sender<bool>,
    broken: Notify,
    counters: Arc<RedisCounters>,
    /// Why the broker closed a channel (reply text), by channel id, until someone asks.
    closes: Arc<Mutex<HashMap<u16, String>>>,
    stop: CancellationToken,
    _running: DropGuard,
}

/// One open connection and its publishing channel.
struct Session {
    connection: Connection,
    publisher: tokio::sync::Mutex<Publisher>,
    confirms: Arc<Mutex<Confirms>>,
}

struct Publisher {
    channel: Channel,
    /// The delivery tag the broker gives the next publish on this channel (confirm mode counts from 1).
    next_tag: u64,
}

#[derive(Default)]
struct Confirms {
    pending: BTreeMap<u64, oneshot::Sender<bool>>,
    /// Message ids the broker returned as unroutable (their queue does not exist).
    returned: HashSet<String>,
}

/// Parses `amqp://[user:password@]host:port[/]`.
pub fn connection_arguments(url: &str) -> Result<OpenConnectionArguments, String> {
    let rest = url
        .strip_prefix("amqp://")
        .ok_or_else(|| format!("`{url}` is not an AMQP URL; expected amqp://host:port"))?;
    let rest = rest.trim_end_matches('/');
    let (credentials, address) = match rest.rsplit_once('@') {
        Some((credentials, address)) => (Some(credentials), address),
        None => (None, rest),
    };
    let (user, password) = match credentials.map(|c| c.split_once(':')) {
        Some(Some((user, password))) => (user, password),
        Some(None) => return Err(format!("`{url}`: credentials must be user:password")),
        None => ("guest", "guest"),
    };
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{url}` names no port; expected amqp://host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{url}`: `{port}` is not a port"))?;
    if host.is_empty() {
        return Err(format!("`{url}` names no host"));
    }
    Ok(OpenConnectionArguments::new(host, port, user, password))
}

impl RabbitLink {
    /// Connects now (an unreachable broker at startup is an error) and starts the recovery task,
    /// which ends when the link is dropped.
    pub async fn connect(url: &str, counters: Arc<RedisCounters>) -> Result<Arc<Self>, LogError> {
        let args = connection_arguments(url).map_err(LogError::Refused)?;
        let session = open(&args).await?;
        let stop = CancellationToken::new();
        let link = Arc::new(Self {
            args,
            current: Mutex::new(Some(Arc::new(session))),
            generation: AtomicU64::new(0),
            up: watch::Sender::new(true),
            broken: Notify::new(),
            counters,
            closes: Arc::default(),
            _running: stop.clone().drop_guard(),
            stop,
        });
        tokio::spawn(recover(Arc::downgrade(&link), link.stop.clone()));
        Ok(link)
    }

    /// Which connection is current: it changes with every reconnect, so what was learnt about the
    /// broker's streams on one connection can be learnt again after an outage (a restarted node may
    /// have made a stream again).
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    fn session(&self) -> Result<Arc<Session>, LogError> {
        lock(&self.current)
            .clone()
            .ok_or_else(|| LogError::down("rabbitmq is unreachable; reconnecting with backoff"))
    }

    /// A new channel of its own (a consumer, a declare that may close it), or 503 at once while the
    /// broker is down.
    pub async fn channel(&self) -> Result<Channel, LogError> {
        let session = self.session()?;
        let channel = session
            .connection
            .open_channel(None)
            .await
            .map_err(|e| self.failed(&e))?;
        lock(&self.closes).remove(&channel.channel_id());
        let events = ChannelEvents {
            confirms: None,
            closes: Some(self.closes.clone()),
        };
        channel
            .register_callback(events)
            .await
            .map_err(|e| self.failed(&e))?;
        Ok(channel)
    }

    /// Why the broker closed `channel`, if it did (its reply text, e.g. `NOT_FOUND - no queue …`).
    /// The close arrives on its own: a caller that just saw an operation fail waits a moment for it.
    pub async fn close_reason(&self, channel: &Channel) -> Option<String> {
        for _ in 0..10 {
            if let Some(reason) = lock(&self.closes).remove(&channel.channel_id()) {
                return Some(reason);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    /// Reports a failed operation: an outage when the connection is gone (it is then replaced in the
    /// background), else the broker refused it.
    pub fn failed(&self, error: &amqprs::error::Error) -> LogError {
        let detail = format!("rabbitmq: {error}");
        let mut current = lock(&self.current);
        let open = current.as_ref().is_some_and(|s| s.connection.is_open());
        if open {
            return LogError::Refused(detail);
        }
        if current.take().is_some() {
            self.up.send_replace(false);
            tracing::warn!(%detail, "rabbitmq is unreachable: spooling publishes, reconnecting");
            self.broken.notify_one();
        }
        LogError::Unavailable {
            attempted: true,
            detail,
        }
    }

    /// Publishes `records` (id, body) to the queue `queue` through the default exchange, persistent
    /// and mandatory, and waits for every confirm. A record the broker returned (no such queue) makes
    /// it [`LogError::Missing`].
    pub async fn publish(&self, queue: &str, records: &[(String, Bytes)]) -> Result<(), LogError> {
        let session = self.session()?;
        let mut waits = Vec::with_capacity(records.len());
        {
            let mut publisher = session.publisher.lock().await;
            for (id, body) in records {
                let (sender, receiver) = oneshot::channel();
                let tag = publisher.next_tag;
                lock(&session.confirms).pending.insert(tag, sender);
                let mut properties = BasicProperties::default();
                properties.with_message_id(id).with_persistence(true);
                let args = BasicPublishArguments::new("", queue)
                    .mandatory(true)
                    .finish();
                if let Err(error) = publisher
                    .channel
                    .basic_publish(properties, body.to_vec(), args)
                    .await
                {
                    lock(&session.confirms).pending.remove(&tag);
                    return Err(self.failed(&error));
                }
                publisher.next_tag += 1;
                waits.push((id, receiver));
            }
        }
        for (id, receiver) in waits {
            match tokio::time::timeout(TIMEOUT, receiver).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => {
                    return Err(LogError::Refused(format!(
                        "rabbitmq refused (nack) a publish to `{queue}`"
                    )))
                }
                // The channel or connection closed before the confirm: it may have been applied.
                Ok(Err(_)) | Err(_) => {
                    self.retire(&session);
                    return Err(LogError::Unavailable {
                        attempted: true,
                        detail: format!("rabbitmq: no confirm for a publish to `{queue}`"),
                    });
                }
            }
            if lock(&session.confirms).returned.remove(id) {
                return Err(LogError::Missing(queue.to_owned()));
            }
        }
        Ok(())
    }

    /// Retires `session` (a stalled or half-closed connection), so the recovery task replaces it.
    fn retire(&self, session: &Arc<Session>) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, session)) {
            *current = None;
            self.up.send_replace(false);
            tracing::warn!("rabbitmq connection lost: reconnecting");
            self.broken.notify_one();
        }
    }

    /// Resolves once the broker is reachable again (at once when it is), or when the link stops.
    pub async fn wait_up(&self) {
        let mut up = self.up.subscribe();
        tokio::select! {
            _ = up.wait_for(|up| *up) => {}
            () = self.stop.cancelled() => {}
        }
    }

    pub fn counters(&self) -> &RedisCounters {
        &self.counters
    }
}

/// Opens a connection and its publishing channel in confirm mode.
async fn open(args: &OpenConnectionArguments) -> Result<Session, LogError> {
    let down = |e: amqprs::error::Error| LogError::down(format!("rabbitmq: {e}"));
    let connection = tokio::time::timeout(TIMEOUT, Connection::open(args))
        .await
        .map_err(|_| LogError::down("rabbitmq: connecting timed out"))?
        .map_err(down)?;
    connection
        .register_callback(ConnectionEvents)
        .await
        .map_err(down)?;
    let channel = connection.open_channel(None).await.map_err(down)?;
    let confirms = Arc::new(Mutex::new(Confirms::default()));
    channel
        .register_callback(ChannelEvents {
            confirms: Some(confirms.clone()),
            closes: None,
        })
        .await
        .map_err(down)?;
    channel
        .confirm_select(ConfirmSelectArguments::default())
        .await
        .map_err(down)?;
    Ok(Session {
        connection,
        publisher: tokio::sync::Mutex::new(Publisher {
            channel,
            next_tag: 1,
        }),
        confirms,
    })
}

/// While up: checks every [`HEALTH_CHECK`] that the connection is open (or wakes on a failure).
/// While down: one reconnect attempt per backoff step, counted, until the broker answers.
async fn recover(link: std::sync::Weak<RabbitLink>, stop: CancellationToken) {
    let mut backoff = Backoff::new();
    loop {
        let Some(strong) = link.upgrade() else { return };
        let session = lock(&strong.current).clone();
        if let Some(session) = session {
            if !session.connection.is_open() {
                strong.retire(&session);
                continue;
            }
            drop(strong);
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(HEALTH_CHECK) => {}
            }
            continue;
        }
        strong.counters.reconnect_attempts.fetch_add(1, Relaxed);
        let args = strong.args.clone();
        drop(strong);
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = open(&args) => attempt,
        };
        let Some(strong) = link.upgrade() else { return };
        match attempt {
            Ok(session) => {
                strong.generation.fetch_add(1, Relaxed);
                *lock(&strong.current) = Some(Arc::new(session));
                strong.up.send_replace(true);
                tracing::info!("rabbitmq is reachable again");
                backoff.reset();
            }
            Err(error) => {
                let wait = backoff.next_wait();
                tracing::debug!(%error, ?wait, "rabbitmq reconnect failed");
                drop(strong);
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

struct ConnectionEvents;

#[async_trait]
impl ConnectionCallback for ConnectionEvents {
    async fn close(&mut self, _: &Connection, close: Close) -> Result<(), amqprs::error::Error> {
        tracing::debug!(?close, "rabbitmq closed the connection");
        Ok(())
    }
    async fn blocked(&mut self, _: &Connection, reason: String) {
        tracing::warn!(%reason, "rabbitmq blocked the connection");
    }
    async fn unblocked(&mut self, _: &Connection) {}
    async fn secret_updated(&mut self, _: &Connection) {}
}

/// Confirms and returns for the publishing channel; why the broker closed them for the others.
struct ChannelEvents {
    confirms: Option<Arc<Mutex<Confirms>>>,
    closes: Option<Arc<Mutex<HashMap<u16, String>>>>,
}

impl ChannelEvents {
    fn settle(&self, tag: u64, multiple: bool, ok: bool) {
        let Some(confirms) = &self.confirms else {
            return;
        };
        let mut confirms = lock(confirms);
        let tags: Vec<u64> = if multiple {
            confirms.pending.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            vec![tag]
        };
        for tag in tags {
            if let Some(sender) = confirms.pending.remove(&tag) {
                let _ = sender.send(ok);
            }
        }
    }
}

#[async_trait]
impl ChannelCallback for ChannelEvents {
    async fn close(
        &mut self,
        channel: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::debug!(code = close.reply_code(), text = %close.reply_text(), "rabbitmq closed a channel");
        if let Some(closes) = &self.closes {
            lock(closes).insert(channel.channel_id(), close.reply_text().clone());
        }
        if let Some(confirms) = &self.confirms {
            // Outstanding confirms will never come: their waiters see the sender dropped.
            lock(confirms).pending.clear();
        }
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.settle(ack.delivery_tag(), ack.mutiple(), true);
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.settle(nack.delivery_tag(), nack.multiple(), false);
    }
    async fn publish_return(
        &mut self,
        _: &Channel,
        _: Return,
        properties: BasicProperties,
        _: Vec<u8>,
    ) {
        if let (Some(confirms), Some(id)) = (&self.confirms, properties.message_id()) {
            lock(confirms).returned.insert(id.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_urls_parse_with_and_without_credentials() {
        let args = connection_arguments("amqp://127.0.0.1:5672").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((args.get_host(), args.get_port()), ("127.0.0.1", 5672));
        let args = connection_arguments("amqp://u:p@h:1/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((args.get_host(), args.get_port()), ("h", 1));
        for bad in [
            "redis://h:1",
            "amqp://h",
            "amqp://:1",
            "amqp://h:x",
            "amqp://u@h:1",
        ] {
            assert!(connection_arguments(bad).is_err(), "{bad}");
        }
    }
}
