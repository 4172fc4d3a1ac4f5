//! The bus: how events are published, stored as bounded history and fanned out to subscribers.
//! Patterns talk only to this trait, so a Redis-backed bus can replace the in-process one.

mod fanout;
mod log;
mod memory;
mod outbox;
pub(crate) mod redis;

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::Serialize;

pub use self::redis::{RedisBus, RedisBusOptions};
pub use fanout::{Fanout, OverflowHook};
pub use log::LogBus;
pub use memory::{MemoryBus, MemoryBusConfig};

use crate::{event::SharedEvent, topic::TopicName};

/// Events a reader missed because its cursor fell out of history: `after + 1 .. oldest` are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The cursor the reader asked to resume after.
    pub after: u64,
    /// The oldest sequence number still available.
    pub oldest: u64,
}

impl Gap {
    /// How many events were skipped.
    pub fn missed(&self) -> u64 {
        self.oldest.saturating_sub(self.after + 1)
    }
}

/// The answer to a cursor read.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    /// Events after the cursor (after the gap, if any), oldest first.
    pub events: Vec<SharedEvent>,
    /// The topic's newest sequence number (0 when nothing was published yet).
    pub head: u64,
    /// Set when the cursor is older than the retained history.
    pub gap: Option<Gap>,
    /// True when more events exist beyond `events` (the read hit its limit).
    pub more: bool,
}

impl ReadBatch {
    /// The poll answer body, `{"topic","head","more","gap","events":[…]}`, assembled from the events'
    /// pre-encoded JSON without re-encoding them.
    pub fn to_json(&self, topic: &TopicName) -> Bytes {
        let size: usize = self.events.iter().map(|e| e.json.len() + 1).sum();
        let mut out = Vec::with_capacity(size + 128);
        out.extend_from_slice(b"{\"topic\":\"");
        out.extend_from_slice(topic.as_str().as_bytes());
        out.extend_from_slice(
            format!("\",\"head\":{},\"more\":{},\"gap\":", self.head, self.more).as_bytes(),
        );
        match self.gap {
            Some(gap) => out.extend_from_slice(
                format!("{{\"after\":{},\"oldest\":{}}}", gap.after, gap.oldest).as_bytes(),
            ),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"events\":[");
        for (i, event) in self.events.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&event.json);
        }
        out.extend_from_slice(b"]}");
        Bytes::from(out)
    }
}

/// What a subscription yields.
#[derive(Debug, Clone)]
pub enum Delivery {
    Event(SharedEvent),
    /// The cursor was older than history; delivery resumes at `gap.oldest`.
    Gap(Gap),
    /// The subscriber fell further behind than its buffer allows and was cut off; the stream ends.
    Lagged {
        missed: u64,
    },
}

/// A live feed of one topic from a cursor: backlog first, then new events, never a duplicate.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Delivery> + Send>>,
    /// The cursor the subscription starts after (the head when the caller asked for live only).
    pub after: u64,
    /// The topic's head when the subscription started.
    pub head: u64,
    /// The mailbox the live part comes from, when the bus fans out through a [`Fanout`].
    mailbox: Option<std::sync::Arc<fanout::Mailbox>>,
}

impl Subscription {
    pub fn new(
        after: u64,
        head: u64,
        inner: impl Stream<Item = Delivery> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(inner),
            after,
            head,
            mailbox: None,
        }
    }

    /// A subscription whose live part is `receiver`, after the `backlog` items.
    pub fn with_backlog(
        after: u64,
        head: u64,
        backlog: Vec<Delivery>,
        receiver: fanout::Receiver,
    ) -> Self {
        let mailbox = Some(receiver.mailbox());
        let inner: Pin<Box<dyn Stream<Item = Delivery> + Send>> = if backlog.is_empty() {
            Box::pin(receiver)
        } else {
            Box::pin(futures_util::stream::iter(backlog).chain(receiver))
        };
        Self {
            inner,
            after,
            head,
            mailbox,
        }
    }

    fn from_receiver(after: u64, head: u64, receiver: fanout::Receiver) -> Self {
        Self::with_backlog(after, head, Vec::new(), receiver)
    }
}

impl Stream for Subscription {
    type Item = Delivery;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Why the bus refused an operation.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("cursor {after} is ahead of the topic's head {head}")]
    CursorAhead { after: u64, head: u64 },
    #[error("the server already holds {limit} topics; no new topic can be created")]
    TopicLimit { limit: usize },
    #[error("the bus is unavailable: {0}")]
    Unavailable(String),
}

/// Where an accepted publish went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Appended now with this sequence number.
    Appended(u64),
    /// The broker is unreachable: held in the outage spool (`depth` items now) and replayed in order
    /// when it returns; the sequence number is assigned then.
    Spooled { depth: usize },
}

/// Why a spooling publish was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    SpoolFull(#[from] crate::spool::SpoolFull),
}

/// The event feed every pattern shares. Async and fallible so a networked broker fits behind it.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Appends an event, assigning the topic's next sequence number.
    /// Returns the sequence number; the event itself reaches readers and subscribers, encoded where
    /// they are served.
    async fn publish(&self, topic: &TopicName, payload: Bytes) -> Result<u64, BusError>;

    /// Like [`publish`](Self::publish), but a bus with an outage spool may hold the event for an
    /// in-order replay instead of failing while its broker is unreachable.
    async fn publish_or_spool(
        &self,
        topic: &TopicName,
        payload: Bytes,
    ) -> Result<Published, PublishError> {
        Ok(Published::Appended(self.publish(topic, payload).await?))
    }

    /// Reads at most `limit` events after `after`, with the head and any gap.
    async fn read(
        &self,
        topic: &TopicName,
        after: u64,
        limit: usize,
    ) -> Result<ReadBatch, BusError>;

    /// Waits until an event after `after` exists on `topic` or `wait` has passed (long polling).
    /// Unlike `subscribe`, it never creates the topic, so waiting readers use no topic slot.
    async fn wait_for_event(
        &self,
        topic: &TopicName,
        after: u64,
        wait: std::time::Duration,
    ) -> Result<(), BusError>;

    /// Follows a topic after `after` (the retained backlog, then live events), or, with `None`, only
    /// events published from now on.
    async fn subscribe(
        &self,
        topic: &TopicName,
        after: Option<u64>,
    ) -> Result<Subscription, BusError>;
}
