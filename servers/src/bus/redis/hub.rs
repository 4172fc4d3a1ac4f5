//! Per-instance fan-out of one Redis stream: one task per topic follows it with a blocking XREAD on
//! its own connection and broadcasts each event (encoded once) to this instance's subscribers. When
//! Redis goes away the task reconnects with backoff and resumes after the last event it handed on, so
//! subscriptions stay open through an outage and miss nothing. Events missing from the stream (Redis
//! lost them before the task read them, or trimmed them under a lagging task) are logged; each
//! subscription tells its subscriber of the hole as a gap.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::{aio::MultiplexedConnection, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{floors::Floors, recent::Recent, wire};
use crate::{
    backoff::Backoff,
    bus::ReadBatch,
    event::SharedEvent,
    redis::link::{Link, TIMEOUT},
    topic::TopicName,
};

/// How long one blocking XREAD waits before the task checks whether anyone still listens.
const BLOCK: Duration = Duration::from_secs(1);
/// Most entries one XREAD returns, so a burst is handed on in bounded pieces.
const BATCH: usize = 512;

/// One followed topic: the live fan-out and the newest events handed on.
#[derive(Clone)]
struct Hub {
    sender: broadcast::Sender<SharedEvent>,
    recent: Arc<Mutex<Recent>>,
}

type HubMap = HashMap<TopicName, Hub>;

fn lock_recent(recent: &Mutex<Recent>) -> std::sync::MutexGuard<'_, Recent> {
    // Each critical section is one push or one copy out, so a poisoned window is still consistent.
    recent.lock().unwrap_or_else(|p| p.into_inner())
}

/// The followed topics of one instance; at most `limit` at once, so memory stays bounded.
pub struct Hubs {
    map: Arc<Mutex<HubMap>>,
    limit: usize,
    capacity: usize,
    link: Arc<Link>,
    floors: Arc<Floors>,
    /// The bus's token: followers end when the bus is dropped.
    stop: CancellationToken,
}

fn lock(map: &Mutex<HubMap>) -> std::sync::MutexGuard<'_, HubMap> {
    // Every critical section is a single map operation, so a poisoned map is still consistent.
    map.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hubs {
    pub fn new(
        limit: usize,
        capacity: usize,
        link: Arc<Link>,
        floors: Arc<Floors>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            map: Arc::new(Mutex::new(HashMap::new())),
            limit,
            capacity,
            link,
            floors,
            stop,
        }
    }

    /// A receiver of the topic's live events, if the topic is already followed.
    pub fn existing(&self, topic: &TopicName) -> Option<broadcast::Receiver<SharedEvent>> {
        lock(&self.map).get(topic).map(|hub| hub.sender.subscribe())
    }

    /// A read answered from the newest events this instance's follower handed on, when they cover it
    /// (see [`Recent::read`]); `None` when the topic is not followed or Redis must answer.
    pub fn read_recent(&self, topic: &TopicName, after: u64, limit: usize) -> Option<ReadBatch> {
        let recent = lock(&self.map).get(topic)?.recent.clone();
        let answer = lock_recent(&recent).read(after, limit);
        answer
    }

    /// A receiver of every event after `head`, starting a follower task at `head` when the topic is
    /// not followed yet. `head` must have been read before this call: callers read the head again
    /// afterwards, so nothing published in between is missed. `None` when the instance already follows
    /// `limit` topics.
    pub fn follow(&self, topic: &TopicName, head: u64) -> Option<broadcast::Receiver<SharedEvent>> {
        let mut map = lock(&self.map);
        if let Some(hub) = map.get(topic) {
            return Some(hub.sender.subscribe());
        }
        if map.len() >= self.limit {
            return None;
        }
        let (sender, receiver) = broadcast::channel(self.capacity);
        let hub = Hub {
            sender,
            recent: Arc::new(Mutex::new(Recent::new(head, self.capacity))),
        };
        map.insert(topic.clone(), hub.clone());
        tokio::spawn(run(
            self.map.clone(),
            topic.clone(),
            head,
            hub,
            (self.link.clone(), self.floors.clone()),
            self.stop.clone(),
        ));
        Some(receiver)
    }
}

/// Follows the stream from `last` until nobody listens or the bus stops. A Redis failure never ends
/// the subscriptions: the task reconnects with backoff (each attempt counted) and resumes after
/// `last`, so subscribers get every event once, in order, when Redis returns.
async fn run(
    map: Arc<Mutex<HubMap>>,
    topic: TopicName,
    mut last: u64,
    hub: Hub,
    (link, floors): (Arc<Link>, Arc<Floors>),
    stop: CancellationToken,
) {
    let sender = &hub.sender;
    let key = wire::stream_key(&topic);
    let mut connection: Option<MultiplexedConnection> = None;
    let mut backoff = Backoff::new();
    let mut failing = false;
    while !stop.is_cancelled() {
        let reply = match connection.as_mut() {
            Some(connection) => read(connection, &key, last)
                .await
                .map_err(|e| e.to_string())
                .and_then(|v| wire::parse_xread(&topic, &v)),
            None => {
                if failing {
                    link.counters()
                        .reconnect_attempts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                // A blocking read answers within BLOCK; anything much longer is a stalled Redis.
                match link.open(Some(BLOCK + TIMEOUT)).await {
                    Ok(opened) => {
                        connection = Some(opened);
                        continue;
                    }
                    Err(error) => Err(error.to_string()),
                }
            }
        };
        let events = match reply {
            Ok(events) => events,
            Err(detail) => {
                if !failing {
                    tracing::warn!(topic = topic.as_str(), %detail, last, "stream follower lost redis; retrying with backoff, subscribers stay connected");
                }
                failing = true;
                connection = None;
                if leave_if_unheard(&map, &topic, sender) {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff.next_wait()) => {}
                }
                // While the shared link is down, it alone probes Redis: no connect storm from
                // every followed topic.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = link.wait_up() => {}
                }
                continue;
            }
        };
        if failing {
            tracing::info!(topic = topic.as_str(), last, "stream follower resumed");
            failing = false;
            backoff.reset();
        }
        if events.is_empty() {
            if leave_if_unheard(&map, &topic, sender) {
                return;
            }
            continue;
        }
        for event in events {
            if event.seq > last + 1 {
                // Numbers are handed out one by one, so a hole means events nobody here will see.
                tracing::warn!(
                    topic = topic.as_str(),
                    after = last,
                    oldest = event.seq,
                    "stream follower found events missing (lost by Redis, or trimmed before it \
                     read them); subscribers get a gap"
                );
            }
            last = event.seq;
            // Into the window before the broadcast, so a woken reader finds it there.
            lock_recent(&hub.recent).push(event.clone());
            // No receiver right now is fine: the next idle round removes the follower.
            let _ = sender.send(event);
        }
        floors.raise(&topic, last);
    }
    let mut map = lock(&map);
    if map
        .get(&topic)
        .is_some_and(|h| h.sender.same_channel(sender))
    {
        map.remove(&topic);
    }
}

async fn read(
    connection: &mut MultiplexedConnection,
    key: &str,
    last: u64,
) -> redis::RedisResult<Value> {
    redis::cmd("XREAD")
        .arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS")
        .arg(key)
        .arg(format!("{last}-0"))
        .query_async(connection)
        .await
}

/// Removes the follower when nobody listens any more; checked under the map lock, so no subscriber
/// can join a follower that is leaving.
fn leave_if_unheard(
    map: &Mutex<HubMap>,
    topic: &TopicName,
    sender: &broadcast::Sender<SharedEvent>,
) -> bool {
    let mut map = lock(map);
    if sender.receiver_count() > 0 {
        return false;
    }
    if map
        .get(topic)
        .is_some_and(|h| h.sender.same_channel(sender))
    {
        map.remove(topic);
    }
    true
}
