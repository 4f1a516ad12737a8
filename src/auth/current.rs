//! The generation of the [`Authenticator`] in force, shared by the shards and swapped by a
//! reload (SIGHUP).
//!
//! A shard keeps its own `Arc` of the generation it uses and looks at the generation
//! number once a second (one relaxed load); when it changed, it *tries* the lock to take
//! the new one, and tries again at its next look if a reload holds the lock just then. So
//! no shard ever waits on a reload, and a reload reaches every shard within about a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

use super::Authenticator;

/// The current generation and its number.
#[derive(Debug)]
pub struct CurrentAuth {
    current: Mutex<Arc<Authenticator>>,
    generation: AtomicU64,
}

impl CurrentAuth {
    pub fn new(first: Arc<Authenticator>) -> CurrentAuth {
        CurrentAuth {
            current: Mutex::new(first),
            generation: AtomicU64::new(1),
        }
    }

    /// Puts a new generation in force (called by the thread that reloads).
    pub fn replace(&self, next: Arc<Authenticator>) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *current = next;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The number of the generation in force (1 for the first).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The generation in force with its number, unless a reload holds the lock this
    /// instant (then `None`: ask again later).
    pub fn try_get(&self) -> Option<(Arc<Authenticator>, u64)> {
        let guard = match self.current.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some((Arc::clone(&guard), self.generation()))
    }

    /// The generation in force, waiting for the lock (for threads that may wait).
    pub fn get(&self) -> Arc<Authenticator> {
        Arc::clone(&self.current.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::AuthStats;

    #[test]
    fn current_auth_swaps_generations() {
        let stats = Arc::new(AuthStats::default());
        let first = Arc::new(Authenticator::open(stats.clone()));
        let slot = CurrentAuth::new(first.clone());
        let (got, generation) = slot.try_get().unwrap();
        assert!(Arc::ptr_eq(&got, &first));
        assert_eq!(generation, 1);
        let second = Arc::new(Authenticator::open(stats));
        slot.replace(second.clone());
        assert_eq!(slot.generation(), 2);
        assert!(Arc::ptr_eq(&slot.get(), &second));
        // Held by a reload: a shard does not wait.
        let held = slot.current.lock().unwrap();
        assert!(slot.try_get().is_none());
        drop(held);
        assert!(slot.try_get().is_some());
    }
}
