//! Per-instance fan-out of one Redis stream: one task per topic follows it with a blocking XREAD on
//! its own connection and broadcasts each event (encoded once) to this instance's subscribers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::{aio::MultiplexedConnection, Value};
use tokio::sync::broadcast;

use super::wire;
use crate::{event::SharedEvent, topic::TopicName};

/// How long one blocking XREAD waits before the task checks whether anyone still listens.
const BLOCK: Duration = Duration::from_secs(1);
/// Most entries one XREAD returns, so a burst is handed on in bounded pieces.
const BATCH: usize = 512;

type HubMap = HashMap<TopicName, broadcast::Sender<SharedEvent>>;

/// The followed topics of one instance; at most `limit` at once, so memory stays bounded.
pub struct Hubs {
    map: Arc<Mutex<HubMap>>,
    limit: usize,
    capacity: usize,
}

fn lock(map: &Mutex<HubMap>) -> std::sync::MutexGuard<'_, HubMap> {
    // Every critical section is a single map operation, so a poisoned map is still consistent.
    map.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hubs {
    pub fn new(limit: usize, capacity: usize) -> Self {
        Self {
            map: Arc::new(Mutex::new(HashMap::new())),
            limit,
            capacity,
        }
    }

    /// A receiver of the topic's live events, if the topic is already followed.
    pub fn existing(&self, topic: &TopicName) -> Option<broadcast::Receiver<SharedEvent>> {
        lock(&self.map).get(topic).map(broadcast::Sender::subscribe)
    }

    /// A receiver of every event after `head`, starting a follower task at `head` when the topic is
    /// not followed yet. `head` must have been read before this call: callers read the head again
    /// afterwards, so nothing published in between is missed. `None` when the instance already follows
    /// `limit` topics.
    pub fn follow(
        &self,
        topic: &TopicName,
        head: u64,
        connection: MultiplexedConnection,
    ) -> Option<broadcast::Receiver<SharedEvent>> {
        let mut map = lock(&self.map);
        if let Some(sender) = map.get(topic) {
            return Some(sender.subscribe());
        }
        if map.len() >= self.limit {
            return None;
        }
        let (sender, receiver) = broadcast::channel(self.capacity);
        map.insert(topic.clone(), sender.clone());
        tokio::spawn(run(
            self.map.clone(),
            topic.clone(),
            head,
            sender,
            connection,
        ));
        Some(receiver)
    }
}

/// Follows the stream from `last` until nobody listens or Redis fails; dropping the sender then ends
/// every subscription (clients resume from their cursor).
async fn run(
    map: Arc<Mutex<HubMap>>,
    topic: TopicName,
    mut last: u64,
    sender: broadcast::Sender<SharedEvent>,
    mut connection: MultiplexedConnection,
) {
    let key = wire::stream_key(&topic);
    loop {
        let reply: Result<Value, _> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&key)
            .arg(format!("{last}-0"))
            .query_async(&mut connection)
            .await;
        let events = match reply
            .map_err(|e| e.to_string())
            .and_then(|v| wire::parse_xread(&topic, &v))
        {
            Ok(events) => events,
            Err(detail) => {
                tracing::warn!(topic = topic.as_str(), %detail, "stream follower stopped");
                break;
            }
        };
        if events.is_empty() {
            let mut map = lock(&map);
            // Checked under the map lock, so no subscriber can join a follower that is leaving.
            if sender.receiver_count() == 0 {
                map.remove(&topic);
                return;
            }
            continue;
        }
        for event in events {
            last = event.seq;
            // No receiver right now is fine: the next idle round removes the follower.
            let _ = sender.send(event);
        }
    }
    let mut map = lock(&map);
    if map.get(&topic).is_some_and(|s| s.same_channel(&sender)) {
        map.remove(&topic);
    }
}
