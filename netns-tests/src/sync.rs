//! Small synchronisation helpers.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, also after a panic elsewhere poisoned it: teardown must still work then.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
