//! The per-socket cap on open GraphQL subscriptions (--ws-max-subscriptions), kept in the
//! connection data so the subscription resolver can enforce it.

use std::sync::{
    atomic::{AtomicUsize, Ordering::Relaxed},
    Arc,
};

use async_graphql::Result;

use super::schema::refusal;
use crate::metrics::RejectReason;

/// Subscriptions one WebSocket may hold at once (--ws-max-subscriptions); in the connection data.
pub struct SubscriptionSlots {
    open: Arc<AtomicUsize>,
    limit: usize,
}

impl SubscriptionSlots {
    pub fn new(limit: usize) -> Self {
        Self {
            open: Arc::default(),
            limit,
        }
    }

    /// How many subscriptions are open now (shared with every slot).
    pub fn open(&self) -> Arc<AtomicUsize> {
        self.open.clone()
    }

    pub fn take(&self) -> Result<Slot> {
        if self.open.fetch_add(1, Relaxed) >= self.limit {
            self.open.fetch_sub(1, Relaxed);
            return Err(refusal(
                RejectReason::SubscriptionLimit,
                format!("a socket may hold at most {} subscriptions", self.limit),
            ));
        }
        Ok(Slot(self.open.clone()))
    }
}

/// One open subscription's place in its socket's [`SubscriptionSlots`]; freed on drop.
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
