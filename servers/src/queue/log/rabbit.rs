//! Taking jobs on RabbitMQ: each lane is a durable classic queue (`cb.q.{queue}.{premium|normal}`)
//! holding the jobs as persistent messages (published with confirms after their enqueue record).
//! Classic, not quorum: one node replicates nothing, and RabbitMQ 3.10 fails the whole connection
//! (541) on a consume of a quorum queue whose Raft member has not started yet. Each instance consumes both
//! lanes with a prefetch and manual acks; a take chooses between the deliveries it holds by the lane
//! policy (two queues, so the starvation guard holds: one queue with priorities would hand out
//! premium first for as long as premium jobs keep coming), records the take in the job log and hands
//! the job out. The ack of the job acks the delivery. A job not acknowledged within the visibility
//! timeout is nacked with requeue, and a job held by an instance that dies is requeued by RabbitMQ
//! when its connection drops: either way the broker delivers it again and the next take records
//! attempt + 1.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicNackArguments, BasicQosArguments, Channel,
    QueueDeclareArguments,
};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{choose, table::JobInfo, Lanes, LogQueue, Slot, POLL};
use crate::lock::lock;
use crate::{
    backoff::Backoff,
    log::{rabbitmq::RabbitLink, LogError},
    queue::{JobState, Lane, QueueError, QueueName, Taken},
};

/// Deliveries one instance holds per lane before it acknowledges any (RabbitMQ's consumer credit).
const PREFETCH: u16 = 16;
/// Takes of one delivery lost to another instance in a row before it is given up (requeued).
const MAX_LOST: usize = 8;

fn lane_queue(queue: &QueueName, lane: Lane) -> String {
    format!("cb.q.{}.{}", queue.as_str(), lane.label())
}

fn index(lane: Lane) -> usize {
    match lane {
        Lane::Premium => 0,
        Lane::Normal => 1,
    }
}

/// A job delivered to this instance and not acknowledged yet.
struct Delivery {
    channel: Channel,
    tag: u64,
    job: JobInfo,
}

/// One queue's consumers on this instance.
struct Consumers {
    buffered: Mutex<[VecDeque<Delivery>; 2]>,
    arrived: Notify,
    /// Taken deliveries by (job, attempt), with when their visibility ends.
    in_flight: Mutex<HashMap<(String, u32), (Delivery, tokio::time::Instant)>>,
}

/// [`Lanes`] on RabbitMQ queues.
pub struct RabbitLanes {
    link: Arc<RabbitLink>,
    declared: Mutex<HashSet<String>>,
    consumers: Mutex<HashMap<QueueName, Arc<Consumers>>>,
    visibility: Duration,
    stop: CancellationToken,
}

impl Drop for RabbitLanes {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RabbitLanes {
    pub fn new(link: Arc<RabbitLink>, visibility: Duration) -> Self {
        Self {
            link,
            declared: Mutex::new(HashSet::new()),
            consumers: Mutex::new(HashMap::new()),
            visibility,
            stop: CancellationToken::new(),
        }
    }

    async fn declare(&self, name: &str) -> Result<(), LogError> {
        if lock(&self.declared).contains(name) {
            return Ok(());
        }
        let channel = self.link.channel().await?;
        let declared = channel
            .queue_declare(QueueDeclareArguments::new(name).durable(true).finish())
            .await;
        let _ = channel.close().await;
        declared.map_err(|e| self.link.failed(&e))?;
        lock(&self.declared).insert(name.to_owned());
        Ok(())
    }

    /// The queue's consumers here, started on first use.
    fn consumers(&self, queue: &QueueName) -> Arc<Consumers> {
        let mut map = lock(&self.consumers);
        if let Some(consumers) = map.get(queue) {
            return consumers.clone();
        }
        let consumers = Arc::new(Consumers {
            buffered: Mutex::new([VecDeque::new(), VecDeque::new()]),
            arrived: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
        });
        map.insert(queue.clone(), consumers.clone());
        for lane in Lane::ALL {
            tokio::spawn(consume(
                self.link.clone(),
                lane_queue(queue, lane),
                lane,
                consumers.clone(),
                self.stop.clone(),
            ));
        }
        tokio::spawn(expire(consumers.clone(), self.stop.clone()));
        consumers
    }
}

/// Keeps one lane consumed: deliveries go to the lane's buffer; after a failure it consumes again
/// (deliveries of the lost channel are dropped from the buffer: RabbitMQ requeued them).
async fn consume(
    link: Arc<RabbitLink>,
    name: String,
    lane: Lane,
    consumers: Arc<Consumers>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new();
    while !stop.is_cancelled() {
        let session = async {
            let channel = link.channel().await?;
            channel
                .basic_qos(BasicQosArguments::new(0, PREFETCH, false))
                .await
                .map_err(|e| link.failed(&e))?;
            let (_, receiver) = channel
                .basic_consume_rx(
                    BasicConsumeArguments::new(&name, "")
                        .manual_ack(true)
                        .finish(),
                )
                .await
                .map_err(|e| link.failed(&e))?;
            Ok::<_, LogError>((channel, receiver))
        };
        let (channel, mut receiver) = tokio::select! {
            () = stop.cancelled() => return,
            session = session => match session {
                Ok(session) => session,
                Err(_) => {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = async {
                            tokio::time::sleep(backoff.next_wait()).await;
                            link.wait_up().await;
                        } => {}
                    }
                    continue;
                }
            },
        };
        backoff.reset();
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                message = receiver.recv() => message,
            };
            let Some(message) = message else { break };
            let Some(tag) = message.deliver.as_ref().map(|d| d.delivery_tag()) else {
                continue;
            };
            let job = message
                .content
                .as_deref()
                .and_then(|body| serde_json::from_slice::<JobInfo>(body).ok());
            let Some(job) = job else {
                // Not a job: drop it rather than have it redelivered forever.
                let _ = channel
                    .basic_nack(BasicNackArguments::new(tag, false, false))
                    .await;
                continue;
            };
            lock(&consumers.buffered)[index(lane)].push_back(Delivery {
                channel: channel.clone(),
                tag,
                job,
            });
            consumers.arrived.notify_waiters();
        }
        // The channel is gone and with it every delivery on it (RabbitMQ requeues them).
        lock(&consumers.buffered)[index(lane)].retain(|d| d.channel.is_open());
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.next_wait()) => {}
        }
    }
}

/// Nacks (with requeue) every taken delivery whose visibility timeout passed, so RabbitMQ delivers it
/// again.
async fn expire(consumers: Arc<Consumers>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        let now = tokio::time::Instant::now();
        let expired: Vec<Delivery> = {
            let mut in_flight = lock(&consumers.in_flight);
            let keys: Vec<(String, u32)> = in_flight
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= now)
                .map(|(key, _)| key.clone())
                .collect();
            keys.iter()
                .filter_map(|key| in_flight.remove(key).map(|(d, _)| d))
                .collect()
        };
        for delivery in expired {
            let _ = delivery
                .channel
                .basic_nack(BasicNackArguments::new(delivery.tag, false, true))
                .await;
        }
    }
}

#[async_trait]
impl Lanes for RabbitLanes {
    async fn enqueued(&self, queue: &QueueName, job: &JobInfo) -> Result<(), LogError> {
        let name = lane_queue(queue, job.lane);
        self.declare(&name).await?;
        let body = Bytes::from(serde_json::to_vec(job).unwrap_or_default());
        let records = [(job.id.clone(), body)];
        match self.link.publish(&name, &records).await {
            Err(LogError::Missing(_)) => {
                lock(&self.declared).remove(&name);
                self.declare(&name).await?;
                self.link.publish(&name, &records).await
            }
            other => other,
        }
    }

    async fn take(
        &self,
        queue: &LogQueue,
        slot: &Arc<Slot>,
        wait: Duration,
    ) -> Result<Option<Taken>, QueueError> {
        for lane in Lane::ALL {
            self.declare(&lane_queue(&slot.name, lane))
                .await
                .map_err(|e| QueueError::Unavailable(e.to_string()))?;
        }
        let consumers = self.consumers(&slot.name);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let arrived = consumers.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let picked = {
                let mut buffered = lock(&consumers.buffered);
                let (premium, normal) = (!buffered[0].is_empty(), !buffered[1].is_empty());
                choose(slot, premium, normal).and_then(|(lane, contested)| {
                    buffered[index(lane)].pop_front().map(|d| (d, contested))
                })
            };
            if let Some((delivery, contested)) = picked {
                if let Some(taken) = self
                    .hand_out(queue, slot, &consumers, delivery, contested)
                    .await?
                {
                    return Ok(Some(taken));
                }
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(deadline.min(now + POLL)) => {}
            }
        }
    }

    async fn done(&self, queue: &QueueName, id: &str, attempt: u32) {
        let consumers = lock(&self.consumers).get(queue).cloned();
        let Some(consumers) = consumers else { return };
        let delivery = lock(&consumers.in_flight).remove(&(id.to_owned(), attempt));
        if let Some((delivery, _)) = delivery {
            let _ = delivery
                .channel
                .basic_ack(BasicAckArguments::new(delivery.tag, false))
                .await;
        }
    }
}

impl RabbitLanes {
    /// Records the take of a delivered job and hands it out; `None` when the delivery is stale (the
    /// job is done: acknowledged and dropped) or lost to others (requeued).
    async fn hand_out(
        &self,
        queue: &LogQueue,
        slot: &Arc<Slot>,
        consumers: &Consumers,
        delivery: Delivery,
        contested: bool,
    ) -> Result<Option<Taken>, QueueError> {
        let id = delivery.job.id.clone();
        if slot.table().state(&id).is_none() {
            // Published after its enqueue record, so a sync makes the table know it.
            queue.sync(slot).await?;
        }
        for _ in 0..MAX_LOST {
            let state = slot.table().state(&id);
            if state == Some(JobState::Done) || state.is_none() {
                let _ = delivery
                    .channel
                    .basic_ack(BasicAckArguments::new(delivery.tag, false))
                    .await;
                return Ok(None);
            }
            let attempt = slot.table().attempts(&id).unwrap_or(0) + 1;
            let claimed = queue.claim(slot, &delivery.job, attempt, contested).await;
            match claimed {
                Ok(Some(taken)) => {
                    let deadline = tokio::time::Instant::now() + self.visibility;
                    lock(&consumers.in_flight).insert((id, attempt), (delivery, deadline));
                    return Ok(Some(taken));
                }
                Ok(None) => continue,
                Err(error) => {
                    let _ = delivery
                        .channel
                        .basic_nack(BasicNackArguments::new(delivery.tag, false, true))
                        .await;
                    return Err(error);
                }
            }
        }
        let _ = delivery
            .channel
            .basic_nack(BasicNackArguments::new(delivery.tag, false, true))
            .await;
        Ok(None)
    }
}
