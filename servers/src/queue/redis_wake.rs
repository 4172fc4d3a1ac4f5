//! Waking the Redis queue's local waiters: the queue's notification channel (followed once per
//! instance with `redis/pubsub.rs`) is dispatched to takers (per queue) and handle long polls (per job).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::Notify;

use super::QueueName;
use crate::lock::lock;

/// Local waiters, woken by the pub/sub listener: takers per queue, handle waiters per job.
pub struct Wakers {
    /// Most queue names with a shared taker notification (`--max-queues`).
    limit: usize,
    takers: Mutex<HashMap<String, Arc<Notify>>>,
    jobs: Mutex<HashMap<String, (Arc<Notify>, usize)>>,
}

impl Wakers {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            takers: Mutex::default(),
            jobs: Mutex::default(),
        }
    }
}

impl Wakers {
    pub fn taker(&self, queue: &QueueName) -> Arc<Notify> {
        let mut takers = lock(&self.takers);
        if let Some(notify) = takers.get(queue.as_str()) {
            return notify.clone();
        }
        let notify = Arc::new(Notify::new());
        // Bounded like the queues themselves: a taker on yet another name still works, on the
        // fallback poll alone.
        if takers.len() < self.limit {
            takers.insert(queue.as_str().to_owned(), notify.clone());
        }
        notify
    }

    pub fn job(self: &Arc<Self>, key: String) -> JobWaiter {
        let mut jobs = lock(&self.jobs);
        let entry = jobs
            .entry(key.clone())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        JobWaiter {
            notify: entry.0.clone(),
            wakers: self.clone(),
            key,
        }
    }

    pub fn dispatch(&self, message: &str) {
        if let Some(queue) = message.strip_prefix("e ") {
            if let Some(notify) = lock(&self.takers).get(queue) {
                notify.notify_one();
            }
        } else if let Some(job) = message.strip_prefix("d ") {
            if let Some((notify, _)) = lock(&self.jobs).get(job) {
                notify.notify_waiters();
            }
        }
    }
}

/// A registered handle waiter; unregisters on drop so the map holds only live waiters.
pub struct JobWaiter {
    pub notify: Arc<Notify>,
    wakers: Arc<Wakers>,
    key: String,
}

impl Drop for JobWaiter {
    fn drop(&mut self) {
        let mut jobs = lock(&self.wakers.jobs);
        if let Some(entry) = jobs.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                jobs.remove(&self.key);
            }
        }
    }
}
