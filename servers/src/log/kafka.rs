//! Logs on a Kafka-protocol broker: one single-partition topic per log, so the partition's offsets are
//! the log's. Appends are produce requests (acks from the leader; one broker here), reads are fetches
//! from an offset held open up to the wait (long polling on the broker), the end is the partition's
//! latest offset. Client: `rskafka`, pure Rust (no librdkafka to build), which covers exactly these
//! calls and reconnects by itself; calls give up after a short deadline so an outage becomes a 503.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering::Relaxed, Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use rskafka::{
    client::{
        error::{Error as KafkaError, ProtocolError},
        partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling},
        Client, ClientBuilder,
    },
    record::Record,
    BackoffConfig,
};

use super::{Entry, LogBroker, LogError, LogReader};
use crate::{backoff::Backoff, metrics::RedisCounters};

/// How long one call keeps retrying a broker that does not answer before it fails (a 503).
const DEADLINE: Duration = Duration::from_secs(2);
/// Most bytes one fetch returns.
const FETCH_BYTES: i32 = 1 << 20;
/// Longest a fetch is held on the broker. tansu (0.6) answers a held fetch by polling its storage,
/// sleeping half the remaining wait in between, and does not wake when a record arrives, so a long
/// hold is that much delivery latency; a short one costs idle requests instead (20/s per follower).
const FETCH_WAIT: Duration = Duration::from_millis(50);
/// The record header holding the id a record was appended with.
const ID_HEADER: &str = "cb-id";

/// [`LogBroker`] over a Kafka-protocol broker.
pub struct KafkaLog {
    /// Produce, offsets and admin calls; never a held fetch (see [`KafkaLog::reader`]).
    client: Client,
    address: String,
    partitions: Mutex<HashMap<String, Arc<PartitionClient>>>,
    counters: Arc<RedisCounters>,
}

/// Parses `kafka://host:port` into the bootstrap address.
pub fn bootstrap(url: &str) -> Result<String, String> {
    let address = url
        .strip_prefix("kafka://")
        .map(|rest| rest.trim_end_matches('/'))
        .ok_or_else(|| format!("`{url}` is not a Kafka URL; expected kafka://host:port"))?;
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(address.to_owned())
        }
        _ => Err(format!(
            "`{url}` must name host:port; expected kafka://host:port"
        )),
    }
}

fn classify(error: KafkaError, log: &str, attempted: bool) -> LogError {
    match &error {
        KafkaError::ServerError {
            protocol_error: ProtocolError::UnknownTopicOrPartition,
            ..
        } => LogError::Missing(log.to_owned()),
        KafkaError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        } => LogError::Refused(format!("kafka: {error}")),
        KafkaError::ServerError { .. } | KafkaError::InvalidResponse(_) => {
            LogError::Refused(format!("kafka: {error}"))
        }
        KafkaError::RetryFailed(_) if error.to_string().contains("UnknownTopicOrPartition") => {
            LogError::Missing(log.to_owned())
        }
        _ => LogError::Unavailable {
            attempted,
            detail: format!("kafka: {error}"),
        },
    }
}

/// Bounds one call: rskafka retries inside (connection, metadata, request), each loop with its own
/// deadline, so the sum is capped here; a call past it is an outage (it may have been applied).
async fn bounded<T>(
    log: &str,
    attempted: bool,
    call: impl std::future::Future<Output = Result<T, KafkaError>>,
) -> Result<T, LogError> {
    match tokio::time::timeout(DEADLINE, call).await {
        Ok(result) => result.map_err(|e| classify(e, log, attempted)),
        Err(_) => Err(LogError::Unavailable {
            attempted,
            detail: format!("kafka: no answer within {DEADLINE:?}"),
        }),
    }
}

/// A client (one connection to the broker) that gives up after [`DEADLINE`].
async fn client(address: &str) -> Result<Client, LogError> {
    let backoff = BackoffConfig {
        init_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(500),
        base: 2.0,
        deadline: Some(DEADLINE),
    };
    tokio::time::timeout(
        DEADLINE * 2,
        ClientBuilder::new(vec![address.to_owned()])
            .client_id("commbench")
            .backoff_config(backoff)
            .build(),
    )
    .await
    .map_err(|_| LogError::down("kafka: connecting timed out"))?
    .map_err(|e| classify(e, "", false))
}

fn out_of_range(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        }
    )
}

impl KafkaLog {
    /// Connects to `url` (`kafka://host:port`); an unreachable broker at startup is an error.
    pub async fn connect(url: &str, counters: Arc<RedisCounters>) -> Result<Self, LogError> {
        let address = bootstrap(url).map_err(LogError::Refused)?;
        let client = client(&address).await?;
        Ok(Self {
            client,
            address,
            partitions: Mutex::new(HashMap::new()),
            counters,
        })
    }

    async fn partition(&self, log: &str) -> Result<Arc<PartitionClient>, LogError> {
        if let Some(client) = self.lock().get(log) {
            return Ok(client.clone());
        }
        let client = bounded(
            log,
            false,
            self.client
                .partition_client(log, 0, UnknownTopicHandling::Error),
        )
        .await?;
        let client = Arc::new(client);
        self.lock().insert(log.to_owned(), client.clone());
        Ok(client)
    }

    /// Forgets a log's partition client after an error, so the next call looks it up again (a
    /// restarted broker, a deleted topic).
    fn forget(&self, log: &str) {
        self.lock().remove(log);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<PartitionClient>>> {
        // Every critical section is one map operation.
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Passes a call's result on, forgetting the log's partition client after a failure.
    fn settle<T>(&self, log: &str, result: Result<T, LogError>) -> Result<T, LogError> {
        if result.is_err() {
            self.forget(log);
        }
        result
    }
}

#[async_trait]
impl LogBroker for KafkaLog {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn create(&self, log: &str) -> Result<(), LogError> {
        if self.partition(log).await.is_ok() {
            return Ok(());
        }
        let controller = self
            .client
            .controller_client()
            .map_err(|e| classify(e, log, false))?;
        let created =
            tokio::time::timeout(DEADLINE, controller.create_topic(log, 1, 1, 5_000)).await;
        match created {
            Ok(Ok(())) => Ok(()),
            Ok(Err(KafkaError::ServerError {
                protocol_error: ProtocolError::TopicAlreadyExists,
                ..
            })) => Ok(()),
            Ok(Err(error)) => Err(classify(error, log, true)),
            Err(_) => Err(LogError::Unavailable {
                attempted: true,
                detail: format!("kafka: creating `{log}` got no answer within {DEADLINE:?}"),
            }),
        }
    }

    async fn append(&self, log: &str, records: &[(String, Bytes)]) -> Result<(), LogError> {
        let partition = self.partition(log).await?;
        let now = rskafka::chrono::DateTime::from_timestamp_micros(crate::queue::now_us() as i64)
            .unwrap_or_default();
        let records = records
            .iter()
            .map(|(id, payload)| Record {
                key: None,
                value: Some(payload.to_vec()),
                headers: [(ID_HEADER.to_owned(), id.as_bytes().to_vec())].into(),
                timestamp: now,
            })
            .collect();
        let produced = bounded(
            log,
            true,
            partition.produce(records, Compression::NoCompression),
        )
        .await;
        self.settle(log, produced).map(|_| ())
    }

    async fn end(&self, log: &str) -> Result<u64, LogError> {
        let partition = self.partition(log).await?;
        let end = bounded(log, false, partition.get_offset(OffsetAt::Latest)).await;
        self.settle(log, end).map(|end| end.max(0) as u64)
    }

    /// On a connection of its own: a broker answers the requests of one connection in order, so a
    /// fetch held open for new records would hold up every publish behind it (tansu does exactly
    /// that), and one follower's wait would hold up the others.
    async fn reader(&self, log: &str, offset: u64) -> Result<Box<dyn LogReader>, LogError> {
        let client = client(&self.address).await?;
        let partition = bounded(
            log,
            false,
            client.partition_client(log, 0, UnknownTopicHandling::Error),
        )
        .await?;
        let partition = Arc::new(partition);
        Ok(Box::new(KafkaReader {
            partition,
            log: log.to_owned(),
            next: offset,
        }))
    }

    async fn identity(&self, log: &str) -> Result<Option<String>, LogError> {
        let partition = self.partition(log).await?;
        let earliest = bounded(log, false, partition.get_offset(OffsetAt::Earliest)).await;
        let earliest = self.settle(log, earliest)?;
        let fetched = bounded(
            log,
            false,
            partition.fetch_records(earliest, 1..FETCH_BYTES, 0),
        )
        .await;
        let (records, _) = self.settle(log, fetched)?;
        Ok(records.first().map(|first| {
            let id = first
                .record
                .headers
                .get(ID_HEADER)
                .map(|id| String::from_utf8_lossy(id).into_owned());
            format!("{}:{}", first.offset, id.unwrap_or_default())
        }))
    }

    /// Probes the broker with a metadata request per backoff step (each counted) until it answers.
    async fn wait_up(&self) {
        let mut backoff = Backoff::new();
        while !matches!(
            tokio::time::timeout(DEADLINE, self.client.list_topics()).await,
            Ok(Ok(_))
        ) {
            self.counters.reconnect_attempts.fetch_add(1, Relaxed);
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }
}

struct KafkaReader {
    partition: Arc<PartitionClient>,
    log: String,
    next: u64,
}

#[async_trait]
impl LogReader for KafkaReader {
    async fn next(&mut self, wait: Duration) -> Result<Vec<Entry>, LogError> {
        let max_wait = wait.min(FETCH_WAIT).as_millis() as i32;
        let offset = i64::try_from(self.next).unwrap_or(i64::MAX);
        let fetched = match tokio::time::timeout(
            wait + DEADLINE,
            self.partition
                .fetch_records(offset, 1..FETCH_BYTES, max_wait),
        )
        .await
        {
            Ok(fetched) => fetched,
            Err(_) => return Err(LogError::down("kafka: a fetch got no answer")),
        };
        let (records, _high_watermark) = match fetched {
            Ok(fetched) => fetched,
            Err(error) if out_of_range(&error) => {
                // Before the oldest record held: start there (the caller sees the jump). Beyond the
                // end: the broker lost records it had confirmed (a restart without its data).
                let earliest =
                    tokio::time::timeout(DEADLINE, self.partition.get_offset(OffsetAt::Earliest))
                        .await;
                let latest =
                    tokio::time::timeout(DEADLINE, self.partition.get_offset(OffsetAt::Latest))
                        .await;
                let (Ok(earliest), Ok(latest)) = (earliest, latest) else {
                    return Err(LogError::down("kafka: no answer about the log's bounds"));
                };
                return match (earliest, latest) {
                    (Ok(earliest), _) if (earliest.max(0) as u64) > self.next => {
                        self.next = earliest as u64;
                        Ok(Vec::new())
                    }
                    (_, Ok(latest)) => Err(LogError::Reset {
                        log: self.log.clone(),
                        end: latest.max(0) as u64,
                    }),
                    (_, Err(error)) => Err(classify(error, &self.log, false)),
                };
            }
            Err(error) => return Err(classify(error, &self.log, false)),
        };
        let mut entries = Vec::with_capacity(records.len());
        for record in records {
            let Ok(offset) = u64::try_from(record.offset) else {
                continue;
            };
            if offset < self.next {
                continue;
            }
            self.next = offset + 1;
            let id = record
                .record
                .headers
                .get(ID_HEADER)
                .map(|id| String::from_utf8_lossy(id).into_owned())
                .unwrap_or_default();
            entries.push(Entry {
                offset,
                id,
                payload: Bytes::from(record.record.value.unwrap_or_default()),
            });
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_urls_name_host_and_port() {
        assert_eq!(
            bootstrap("kafka://127.0.0.1:9092").as_deref(),
            Ok("127.0.0.1:9092")
        );
        for bad in ["amqp://h:1", "kafka://h", "kafka://:1", "kafka://h:x"] {
            assert!(bootstrap(bad).is_err(), "{bad}");
        }
    }
}
