//! Logs on RabbitMQ: one durable stream queue per log (`x-queue-type: stream`), appended to through the
//! default exchange with publisher confirms (mandatory, so a missing stream is reported, not dropped)
//! and read with a consumer from an `x-stream-offset`. One connection per server instance, replaced in
//! the background with backoff when it drops (`link.rs`).
//!
//! RabbitMQ 3.10 tells an AMQP 0.9.1 client neither the offset a publish got nor where a stream ends
//! (`queue.declare-ok` counts 0 messages for a stream). The end is read from the stream itself: a
//! consumer at `last` gets the newest chunk, whose last record is the newest. So that an existing
//! stream is never empty, its creator (one instance, chosen by an exclusive lock queue) appends a
//! *genesis* record first; offsets seen through [`LogBroker`] are the stream's minus one, and no
//! instance writes to a stream before it has seen it begin with a genesis (`begin.rs`).

mod begin;
mod link;
mod turns;

use std::{collections::HashMap, sync::Arc, time::Duration};

use amqprs::{
    channel::{
        BasicAckArguments, BasicConsumeArguments, BasicQosArguments, Channel,
        QueueDeclareArguments, QueueDeleteArguments,
    },
    FieldTable, FieldValue,
};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

pub use link::RabbitLink;

/// Checks an `amqp://[user:password@]host:port` URL.
pub fn check_url(url: &str) -> Result<(), String> {
    link::connection_arguments(url).map(|_| ())
}

use super::{Entry, LogBroker, LogError, LogReader};
use crate::metrics::RedisCounters;

/// The id prefix of a stream's first record, which no reader hands on; a random suffix tells one
/// incarnation of a stream from the next ([`LogBroker::identity`]).
const GENESIS: &str = "cb-genesis";
/// Credit of a stream consumer (RabbitMQ requires a prefetch for streams); bounds what is buffered.
const PREFETCH: u16 = 512;
/// How long reading the newest chunk may take before the broker counts as stalled.
const END_WAIT: Duration = Duration::from_secs(3);
/// After the first record of the newest chunk, the rest of it arrives back to back; this much
/// silence ends the chunk.
const CHUNK_QUIET: Duration = Duration::from_millis(15);
/// How RabbitMQ 3.10 says a durable stream exists but cannot be used: after a SIGKILL and restart it
/// stays so (its member is not restarted), which counts as a stream the broker lost.
const DOWN: &str = "down or inaccessible";
/// Tries of a stream declare the node refuses (see [`RabbitLog::create`]).
const CREATE_TRIES: u32 = 10;
/// Most records one [`LogReader::next`] hands on.
const BATCH: usize = 512;
/// How old a stream must be (since this instance first saw it) before anything here consumes from
/// it: RabbitMQ 3.10 may fail the whole connection (541) on a consume of a stream declared a moment
/// ago, which a thousand pollers of a topic whose first publish is under way reliably hit. This was
/// 600 ms while a job enqueued on another instance could read as unknown to a young stream's
/// consumers (300 ms let that happen in one run in three of the queue suite). That was a record
/// written ahead of the stream's genesis (`begin.rs`), not the stream's age: with it fixed, and the
/// node's stream coordinator started at connect, the RabbitMQ suites passed 4 rounds of 4 and the
/// RabbitMQ cells (1,000 pollers of one new topic included) ran without an error at 100 ms.
const SETTLE: Duration = Duration::from_millis(150);
/// Streams remembered as settled; beyond it the memory starts again (a stream then waits once more).
const SETTLED_MAX: usize = 16_384;

/// [`LogBroker`] over a RabbitMQ node.
pub struct RabbitLog {
    link: Arc<RabbitLink>,
    /// When this instance first saw each stream exist (see [`SETTLE`]).
    first_seen: std::sync::Mutex<HashMap<String, tokio::time::Instant>>,
    /// One create at a time per stream in this process. The broker-side lock is an exclusive
    /// queue, which every channel of this connection may declare, so two creates here (a worker
    /// queue readied at start and the first enqueue) would otherwise both write a genesis, and the
    /// second would read as a new incarnation of the stream.
    creating: turns::Turns,
    /// What this instance knows of its streams' starts (`begin.rs`).
    begun: begin::Begun,
}

impl RabbitLog {
    /// Connects to `url` (`amqp://host:port`, user and password `guest` unless given); an unreachable
    /// broker at startup is an error (later outages are survived).
    pub async fn connect(url: &str, counters: Arc<RedisCounters>) -> Result<Self, LogError> {
        let link = RabbitLink::connect(url, counters).await?;
        begin::ready_streams(&link).await;
        Ok(Self {
            link,
            first_seen: std::sync::Mutex::new(HashMap::new()),
            creating: turns::Turns::default(),
            begun: begin::Begun::default(),
        })
    }

    /// Waits until the stream is at least [`SETTLE`] old as far as this instance knows; `Missing`
    /// when it does not exist (asked without a consumer).
    async fn settled(&self, log: &str) -> Result<(), LogError> {
        let known = self.first_seen().get(log).copied();
        let first_seen = match known {
            Some(at) => at,
            None => {
                if !self.exists(log).await? {
                    return Err(LogError::Missing(log.to_owned()));
                }
                let mut seen = self.first_seen();
                if seen.len() >= SETTLED_MAX {
                    seen.clear();
                }
                *seen
                    .entry(log.to_owned())
                    .or_insert_with(tokio::time::Instant::now)
            }
        };
        tokio::time::sleep_until(first_seen + SETTLE).await;
        Ok(())
    }

    fn first_seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::time::Instant>> {
        self.first_seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection, shared with the RabbitMQ queue when the server runs both.
    pub fn link(&self) -> Arc<RabbitLink> {
        self.link.clone()
    }

    /// The stream's end counting the genesis record (0: missing or, for a moment, empty).
    async fn raw_end(&self, log: &str) -> Result<u64, LogError> {
        self.settled(log).await?;
        let channel = self.link.channel().await?;
        let result = newest_end(&self.link, &channel, log).await;
        let _ = channel.close().await;
        result
    }

    async fn create_locked(&self, log: &str) -> Result<(), LogError> {
        let lock = format!("cb.lock.{log}");
        let channel = self.link.channel().await?;
        let locked = channel
            .queue_declare(
                QueueDeclareArguments::new(&lock)
                    .exclusive(true)
                    .auto_delete(true)
                    .finish(),
            )
            .await;
        if locked.is_err() {
            // Another instance creates it: wait until the stream exists, give its creator a moment
            // for the genesis (a consume of a stream declared an instant ago can fail the whole
            // connection), then wait for the genesis itself.
            let deadline = tokio::time::Instant::now() + END_WAIT;
            while !self.exists(log).await? {
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            while tokio::time::Instant::now() < deadline {
                match self.raw_end(log).await {
                    Ok(end) if end > 0 => return Ok(()),
                    Ok(_) | Err(LogError::Missing(_)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(error) => return Err(error),
                }
            }
            return Err(LogError::down(format!(
                "stream `{log}` is being created by another instance and did not appear"
            )));
        }
        let result = async {
            // Existing but unreadable (after a restart RabbitMQ 3.10 may leave a stream `down or
            // inaccessible` until it is declared again) is not missing: declared again, never given
            // a second genesis.
            let existed = self.exists(log).await?;
            if existed {
                // Existing but unusable: the broker lost it; delete it and make it again (readers
                // notice the new genesis and number on after what they saw, as after Kafka's loss).
                match self.raw_end(log).await {
                    Err(LogError::Unavailable { detail, .. }) if detail.contains(DOWN) => {
                        tracing::warn!(
                            log,
                            "stream lost by rabbitmq after a restart; making it again"
                        );
                        channel
                            .queue_delete(QueueDeleteArguments::new(log))
                            .await
                            .map_err(|e| self.link.failed(&e))?;
                    }
                    Ok(end) if end > 0 => return Ok(()),
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
            }
            channel
                .queue_declare(
                    QueueDeclareArguments::new(log)
                        .durable(true)
                        .arguments(stream_arguments())
                        .finish(),
                )
                .await
                .map_err(|e| self.link.failed(&e))?;
            // Under the lock, after finding the stream missing or empty: the genesis goes first (no
            // other instance writes to a stream before it has seen its genesis). No consumer here:
            // RabbitMQ 3.10 may fail the whole connection, 541, on a consume of a stream declared a
            // moment ago.
            let generation = self.link.generation();
            self.link
                .publish(
                    log,
                    &[(
                        format!("{GENESIS}-{:016x}", fastrand::u64(..)),
                        Bytes::new(),
                    )],
                )
                .await?;
            self.begun.mark(log, generation);
            Ok(())
        }
        .await;
        let _ = channel.queue_delete(QueueDeleteArguments::new(&lock)).await;
        let _ = channel.close().await;
        result
    }
}

impl RabbitLog {
    /// [`LogBroker::create`] once this process's turn for `log` has come.
    async fn create_tried(&self, log: &str) -> Result<(), LogError> {
        let mut tries = 0;
        loop {
            let created = match self.raw_end(log).await {
                Ok(end) if end > 0 => Ok(()),
                Ok(_) | Err(LogError::Missing(_)) => self.create_locked(log).await,
                Err(LogError::Unavailable { detail, .. }) if detail.contains(DOWN) => {
                    self.create_locked(log).await
                }
                Err(error) => Err(error),
            };
            match created {
                Err(LogError::Refused(_)) if tries < CREATE_TRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// Whether the queue exists (a passive declare, on a channel of its own: a 404 closes it).
    async fn exists(&self, name: &str) -> Result<bool, LogError> {
        let channel = self.link.channel().await?;
        let declared = channel
            .queue_declare(QueueDeclareArguments::new(name).passive(true).finish())
            .await;
        let result = match declared {
            Ok(_) => Ok(true),
            Err(error) => match self.link.failed(&error) {
                LogError::Refused(detail) => match self.link.close_reason(&channel).await {
                    Some(reason) if reason.contains("no queue") => Ok(false),
                    // Declared, but its member is not running (see [`DOWN`]).
                    Some(reason) if reason.contains(DOWN) => Ok(true),
                    reason => Err(LogError::down(reason.unwrap_or(detail))),
                },
                outage => Err(outage),
            },
        };
        let _ = channel.close().await;
        result
    }
}

fn stream_arguments() -> FieldTable {
    let mut arguments = FieldTable::new();
    insert(&mut arguments, "x-queue-type", text("stream"));
    arguments
}

fn text(value: &str) -> FieldValue {
    FieldValue::S(value.try_into().unwrap_or_default())
}

fn insert(table: &mut FieldTable, key: &str, value: FieldValue) {
    if let Ok(key) = key.try_into() {
        table.insert(key, value);
    }
}

/// A consumer on `log` from `offset` (a number, or `"last"`), acknowledging manually.
/// A consume the broker refuses on an open connection is one on a missing stream (it closes the
/// channel with 404).
async fn consume(
    link: &RabbitLink,
    channel: &Channel,
    log: &str,
    offset: FieldValue,
) -> Result<mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>, LogError> {
    channel
        .basic_qos(BasicQosArguments::new(0, PREFETCH, false))
        .await
        .map_err(|e| link.failed(&e))?;
    let mut arguments = FieldTable::new();
    insert(&mut arguments, "x-stream-offset", offset);
    let consumed = channel
        .basic_consume_rx(
            BasicConsumeArguments::new(log, "")
                .manual_ack(true)
                .arguments(arguments)
                .finish(),
        )
        .await;
    match consumed {
        Ok((_tag, receiver)) => Ok(receiver),
        Err(error) => match link.failed(&error) {
            // Only `no queue` is a missing stream; `home node … is down or inaccessible` (a stream
            // still starting after a restart) passes.
            LogError::Refused(detail) => match link.close_reason(channel).await {
                Some(reason) if reason.contains("no queue") => {
                    Err(LogError::Missing(log.to_owned()))
                }
                reason => Err(LogError::down(reason.unwrap_or(detail))),
            },
            outage => Err(outage),
        },
    }
}

/// One past the newest record's offset, read from the newest chunk; 0 when no record arrived within
/// [`END_WAIT`] (an empty stream: only while it is being created).
async fn newest_end(link: &RabbitLink, channel: &Channel, log: &str) -> Result<u64, LogError> {
    let mut receiver = consume(link, channel, log, text("last")).await?;
    let mut end = 0;
    let mut wait = END_WAIT;
    while let Ok(Some(message)) = tokio::time::timeout(wait, receiver.recv()).await {
        if let Some(offset) = stream_offset(&message) {
            end = end.max(offset + 1);
        }
        wait = CHUNK_QUIET;
    }
    Ok(end)
}

fn stream_offset(message: &amqprs::channel::ConsumerMessage) -> Option<u64> {
    let headers = message.basic_properties.as_ref()?.headers()?;
    match headers.get(&"x-stream-offset".try_into().ok()?)? {
        FieldValue::l(offset) => u64::try_from(*offset).ok(),
        FieldValue::I(offset) => u64::try_from(*offset).ok(),
        _ => None,
    }
}

#[async_trait]
impl LogBroker for RabbitLog {
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }

    /// A node that has just started may refuse to declare a stream until its stream coordinator
    /// is up (the channel is closed with an internal error): tried a few times before giving up.
    async fn create(&self, log: &str) -> Result<(), LogError> {
        // The second of two creates finds the stream made (its end past the genesis) and is done.
        self.creating.take(log, self.create_tried(log)).await
    }

    async fn append(&self, log: &str, records: &[(String, Bytes)]) -> Result<(), LogError> {
        self.begun(log).await?;
        let published = self.link.publish(log, records).await;
        if let Err(LogError::Missing(_)) = published {
            self.begun.forget(log);
        }
        published
    }

    async fn end(&self, log: &str) -> Result<u64, LogError> {
        match self.raw_end(log).await? {
            0 => Ok(0),
            end => Ok(end - 1),
        }
    }

    async fn reader(&self, log: &str, offset: u64) -> Result<Box<dyn LogReader>, LogError> {
        self.settled(log).await?;
        let channel = self.link.channel().await?;
        let raw = i64::try_from(offset + 1).unwrap_or(i64::MAX);
        let receiver = consume(&self.link, &channel, log, FieldValue::l(raw)).await?;
        Ok(Box::new(RabbitReader { channel, receiver }))
    }

    async fn wait_up(&self) {
        self.link.wait_up().await;
    }

    /// A stream is made again only after a restart, which ends the consumer reading it.
    fn remakes_under_readers(&self) -> bool {
        false
    }

    /// A stream's identity is its genesis record, which readers never see.
    fn identity_of_first(&self, _first: &Entry) -> Option<String> {
        None
    }

    /// The id of the stream's genesis record (random per creation).
    async fn identity(&self, log: &str) -> Result<Option<String>, LogError> {
        let first = self.first_record(log).await?;
        Ok(first.map(|(_, id)| format!("0:{id}")))
    }
}

/// A stream consumer; deliveries are acknowledged batch by batch, which returns their credit.
struct RabbitReader {
    channel: Channel,
    receiver: mpsc::UnboundedReceiver<amqprs::channel::ConsumerMessage>,
}

impl Drop for RabbitReader {
    fn drop(&mut self) {
        let channel = self.channel.clone();
        tokio::spawn(async move {
            let _ = channel.close().await;
        });
    }
}

#[async_trait]
impl LogReader for RabbitReader {
    async fn next(&mut self, wait: Duration) -> Result<Vec<Entry>, LogError> {
        let gone = || LogError::down("rabbitmq: the stream consumer ended (connection lost)");
        let first = match tokio::time::timeout(wait, self.receiver.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err(gone()),
            Ok(Some(message)) => message,
        };
        let mut messages = vec![first];
        while messages.len() < BATCH {
            match self.receiver.try_recv() {
                Ok(message) => messages.push(message),
                Err(_) => break,
            }
        }
        let last_tag = messages
            .iter()
            .filter_map(|m| m.deliver.as_ref().map(|d| d.delivery_tag()))
            .max();
        if let Some(tag) = last_tag {
            self.channel
                .basic_ack(BasicAckArguments::new(tag, true))
                .await
                .map_err(|e| LogError::down(format!("rabbitmq: {e}")))?;
        }
        let mut entries = Vec::with_capacity(messages.len());
        for message in messages {
            let Some(raw) = stream_offset(&message) else {
                continue;
            };
            let id = message
                .basic_properties
                .as_ref()
                .and_then(|p| p.message_id().cloned())
                .unwrap_or_default();
            if raw == 0 || id.starts_with(GENESIS) {
                continue;
            }
            entries.push(Entry {
                offset: raw - 1,
                id,
                payload: Bytes::from(message.content.unwrap_or_default()),
            });
        }
        Ok(entries)
    }
}
