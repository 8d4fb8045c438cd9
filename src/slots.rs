//! Slots shared fairly between namespaces, as API priority and fairness
//! gives each flow its own seats: at most `total` pieces of work run at
//! once, and one namespace's hold at most `per_namespace` of those slots,
//! so the rest always remains for others. Work first takes a seat of its
//! namespace, then a slot. The mounts (`-max-concurrent-mounts` and
//! `-max-concurrent-mounts-per-namespace`) and the ledger's background jobs
//! are shared this way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why no slot was taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The provider is shutting down.
    Closed,
}

/// One namespace's seats and how many mounts hold or wait for one.
struct Seats {
    seats: Arc<Semaphore>,
    users: usize,
}

/// The slots of every socket of the provider.
pub struct Slots {
    all: Arc<Semaphore>,
    per_namespace: usize,
    namespaces: Mutex<HashMap<String, Seats>>,
}

/// A mount's slot: released (and its namespace forgotten once unused) when
/// dropped.
pub struct Slot {
    _slot: OwnedSemaphorePermit,
    _seat: OwnedSemaphorePermit,
    _user: User,
}

/// A mount counted as its namespace's user, from before it waits to after
/// it ends: the entry goes when the last user does.
struct User {
    slots: Arc<Slots>,
    namespace: String,
}

impl Drop for User {
    fn drop(&mut self) {
        let mut namespaces = self.slots.lock();
        if let Some(entry) = namespaces.get_mut(&self.namespace) {
            entry.users -= 1;
            if entry.users == 0 {
                namespaces.remove(&self.namespace);
            }
        }
    }
}

impl Slots {
    /// `total` slots, of which one namespace's mounts hold at most
    /// `per_namespace` (at least one, at most `total`).
    pub fn new(total: usize, per_namespace: usize) -> Arc<Slots> {
        let total = total.max(1);
        Arc::new(Slots {
            all: Arc::new(Semaphore::new(total)),
            per_namespace: per_namespace.clamp(1, total),
            namespaces: Mutex::new(HashMap::new()),
        })
    }

    /// The share of a namespace.
    pub fn per_namespace(&self) -> usize {
        self.per_namespace
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seats>> {
        self.namespaces.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a seat of `namespace`, then for a slot.
    pub async fn acquire(self: &Arc<Self>, namespace: &str) -> Result<Slot, Refused> {
        let seats = {
            let mut namespaces = self.lock();
            let entry = namespaces.entry(namespace.to_string()).or_insert_with(|| Seats {
                seats: Arc::new(Semaphore::new(self.per_namespace)),
                users: 0,
            });
            entry.users += 1;
            entry.seats.clone()
        };
        let user = User {
            slots: self.clone(),
            namespace: namespace.to_string(),
        };
        let seat = seats.acquire_owned().await.map_err(|_| Refused::Closed)?;
        let slot = self.all.clone().acquire_owned().await.map_err(|_| Refused::Closed)?;
        Ok(Slot {
            _slot: slot,
            _seat: seat,
            _user: user,
        })
    }

    /// Namespaces with a mount running or waiting.
    #[cfg(test)]
    pub fn namespaces(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_namespace_never_takes_the_slots_another_needs() {
        let slots = Slots::new(4, 2);
        let a1 = slots.acquire("a").await.unwrap();
        let _a2 = slots.acquire("a").await.unwrap();
        // A third of namespace a waits for a seat of its own namespace...
        let a3 = tokio::time::timeout(Duration::from_millis(50), slots.acquire("a")).await;
        assert!(a3.is_err(), "a holds its share");
        // ... while b still gets in at once.
        let _b = tokio::time::timeout(Duration::from_millis(50), slots.acquire("b"))
            .await
            .expect("b is served")
            .unwrap();
        drop(a1);
        let _a3 = tokio::time::timeout(Duration::from_millis(50), slots.acquire("a"))
            .await
            .expect("a's seat freed")
            .unwrap();
        assert_eq!(slots.namespaces(), 2);
    }

    #[tokio::test]
    async fn a_namespace_is_forgotten_when_its_last_mount_ends_or_gives_up() {
        let slots = Slots::new(2, 1);
        let held = slots.acquire("a").await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(20), slots.acquire("a")).await;
        assert!(waited.is_err());
        assert_eq!(slots.namespaces(), 1);
        drop(held);
        assert_eq!(slots.namespaces(), 0);
    }
}
