//! One at a time per stream within a process: creates of a stream, and looks at its start, each
//! wait for the one in progress (whose outcome they then usually find done).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use crate::lock::lock;

/// Turns by stream name; an entry exists only while someone holds or waits for that stream's turn
/// (one whose waiter was cancelled may stay, at most one per stream).
#[derive(Default)]
pub(super) struct Turns(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// Runs `work` once `log`'s turn has come.
    pub(super) async fn take<T>(&self, log: &str, work: impl Future<Output = T>) -> T {
        let turn = lock(&self.0).entry(log.to_owned()).or_default().clone();
        let done = {
            let _turn = turn.lock().await;
            work.await
        };
        // The last one out takes the entry away.
        let mut entries = lock(&self.0);
        if Arc::strong_count(&turn) == 2 {
            entries.remove(log);
        }
        done
    }
}
