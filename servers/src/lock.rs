//! Taking a std mutex whose holder panicked: every critical section in this crate is one map,
//! table or queue operation, so what a poisoned lock guards is still consistent, and one panicked
//! request must not fail every later one that needs the lock.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, poisoned or not.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
