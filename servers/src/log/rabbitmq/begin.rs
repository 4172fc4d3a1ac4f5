//! That every stream begins with its genesis: the node's streams are made to take writes before an
//! instance uses them, and an instance writes to a stream only once it has seen the stream's first
//! record be a genesis. A record written ahead of the genesis would take offset 0, where every reader
//! skips the genesis, and be lost to all of them (a job enqueued then answered 404 everywhere).

use std::{collections::HashMap, sync::Mutex, time::Duration};

use amqprs::{channel::QueueDeclareArguments, FieldValue};
use bytes::Bytes;

use super::{
    consume, stream_arguments, stream_offset, turns::Turns, RabbitLink, RabbitLog, END_WAIT,
    GENESIS,
};
use crate::lock::lock;
use crate::log::{LogBroker, LogError};

/// A stream each instance declares and writes one empty record to when it connects.
const READY_STREAM: &str = "cb.ready";
/// How long [`ready_streams`] keeps trying before the instance starts anyway.
const READY_WAIT: Duration = Duration::from_secs(30);
/// Looks at an empty stream's start this many times (each a create, then [`END_WAIT`]) before its
/// writer gives up.
const BEGIN_TRIES: u32 = 3;
/// Streams remembered as begun; beyond it the memory starts again (a stream is then looked at once
/// more).
const BEGUN_MAX: usize = 16_384;

/// Waits until the node's streams take writes. RabbitMQ 3.10 starts its stream coordinator with the
/// node's first stream: a stream declared meanwhile exists at once, but what is published to it is
/// neither confirmed nor stored until the coordinator is up (seconds on a fresh node), so a genesis
/// written then was lost. The coordinator is started here, with a stream of its own, before this
/// instance makes any log; a broker that does not take the write in [`READY_WAIT`] is left to the
/// logs' own checks.
pub(super) async fn ready_streams(link: &RabbitLink) {
    let deadline = tokio::time::Instant::now() + READY_WAIT;
    loop {
        let attempt = async {
            let channel = link.channel().await?;
            let declared = channel
                .queue_declare(
                    QueueDeclareArguments::new(READY_STREAM)
                        .durable(true)
                        .arguments(stream_arguments())
                        .finish(),
                )
                .await
                .map_err(|e| link.failed(&e));
            let _ = channel.close().await;
            declared?;
            link.publish(READY_STREAM, &[(String::new(), Bytes::new())])
                .await
        }
        .await;
        match attempt {
            Ok(()) => return,
            Err(error) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(%error, "rabbitmq's streams took no write at startup; going on");
                return;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                link.wait_up().await;
            }
        }
    }
}

/// What this instance knows of its streams' starts.
#[derive(Default)]
pub(super) struct Begun {
    /// Streams seen to begin with their genesis, with the connection that saw it.
    marks: Mutex<HashMap<String, u64>>,
    /// One look per stream at a time: the first writes to a new stream come together, and each
    /// look is a consumer of its own.
    looks: Turns,
}

impl Begun {
    fn known(&self, log: &str, generation: u64) -> bool {
        lock(&self.marks).get(log) == Some(&generation)
    }

    /// Records that `log` begins with its genesis, as seen on connection `generation`.
    pub(super) fn mark(&self, log: &str, generation: u64) {
        let mut marks = lock(&self.marks);
        if marks.len() >= BEGUN_MAX {
            marks.clear();
        }
        marks.insert(log.to_owned(), generation);
    }

    /// Forgets what is known of `log`'s start (it was found missing).
    pub(super) fn forget(&self, log: &str) {
        lock(&self.marks).remove(log);
    }
}

impl RabbitLog {
    /// Returns once `log` is known to begin with its genesis, so this instance may write to it. A
    /// stream's creator writes the genesis under the lock right after declaring it, but another
    /// writer can see the stream exist in between; and a genesis can be lost (see
    /// [`ready_streams`]). An empty stream is given its genesis by [`LogBroker::create`]. Known once
    /// per stream and connection: a restarted node may have made a stream again.
    pub(super) async fn begun(&self, log: &str) -> Result<(), LogError> {
        let generation = self.link.generation();
        if self.begun.known(log, generation) {
            return Ok(());
        }
        self.begun
            .looks
            .take(log, self.look_at_start(log, generation))
            .await
    }

    /// [`begun`](Self::begun) once this instance's turn to look at `log` has come.
    async fn look_at_start(&self, log: &str, generation: u64) -> Result<(), LogError> {
        if self.begun.known(log, generation) {
            return Ok(());
        }
        let mut tries = 0;
        loop {
            match self.first_record(log).await? {
                Some((_, id)) if id.starts_with(GENESIS) => break,
                // The start was trimmed away: it began long ago.
                Some((offset, _)) if offset > 0 => break,
                Some((_, id)) => {
                    return Err(LogError::Refused(format!(
                        "rabbitmq stream `{log}` begins with record `{id}`, not with commbench's \
                         genesis: it was not made by commbench (delete it, or use another broker)"
                    )))
                }
                None if tries < BEGIN_TRIES => {
                    tries += 1;
                    self.create(log).await?;
                }
                None => {
                    return Err(LogError::down(format!(
                        "rabbitmq stream `{log}` stayed empty: its genesis was not written"
                    )))
                }
            }
        }
        self.begun.mark(log, generation);
        Ok(())
    }

    /// The stream offset and id of the oldest record `log` holds; `None` when none arrives within
    /// [`END_WAIT`] (the stream is empty).
    pub(super) async fn first_record(&self, log: &str) -> Result<Option<(u64, String)>, LogError> {
        self.settled(log).await?;
        let channel = self.link.channel().await?;
        let first = async {
            let mut receiver = consume(&self.link, &channel, log, FieldValue::l(0)).await?;
            match tokio::time::timeout(END_WAIT, receiver.recv()).await {
                Ok(Some(message)) => {
                    let id = message
                        .basic_properties
                        .as_ref()
                        .and_then(|p| p.message_id().cloned())
                        .unwrap_or_default();
                    Ok(Some((stream_offset(&message).unwrap_or(0), id)))
                }
                Ok(None) => Err(LogError::down("rabbitmq: the consumer ended")),
                Err(_) => Ok(None),
            }
        }
        .await;
        let _ = channel.close().await;
        first
    }
}
