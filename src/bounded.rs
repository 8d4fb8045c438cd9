//! The one bounded map every cache of the provider uses.
//!
//! Each of these caches remembers something the provider can find out again
//! (a Vault client it can rebuild, a signature it can verify again, the
//! class a pod mounted, content it applied, a pod seen on this node), keyed
//! by values tenants choose. So each is bounded by a count fixed at build
//! time, and when a new key would go past it the map forgets everything at
//! once: O(1) per insert on average, no ordering to keep, and the worst a
//! tenant who fills it can cause is that everyone's next lookup misses
//! once. A key already held is replaced in place and never clears the map.
//! (The class cache, whose misses cost a parse, is the one cache with a
//! per-namespace share instead: `spc::ClassCache`.)

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// A map of at most `capacity` entries, cleared when a new key would pass
/// it. See the module's documentation.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    entries: HashMap<K, V>,
    capacity: usize,
}

impl<K: Eq + Hash, V> BoundedMap<K, V> {
    /// An empty map of at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> BoundedMap<K, V> {
        BoundedMap {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The value held for `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.get(key)
    }

    /// Holds `value` for `key`, replacing what was held for it; a new key
    /// when the map is full clears it first.
    pub fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.clear();
        }
        self.entries.insert(key, value);
    }

    /// How many entries are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_capacity_and_clears_for_a_new_key_when_full() {
        let mut map = BoundedMap::new(3);
        for i in 0..3 {
            map.insert(i, i * 10);
        }
        assert_eq!(map.len(), 3);
        // A key already held is replaced in place.
        map.insert(1, 11);
        assert_eq!((map.len(), map.get(&1), map.get(&0)), (3, Some(&11), Some(&0)));
        // A new one clears the map first.
        map.insert(7, 70);
        assert_eq!((map.len(), map.get(&7), map.get(&0)), (1, Some(&70), None));
        for i in 0..10_000 {
            map.insert(i, i);
            assert!(map.len() <= 3);
        }
    }

    #[test]
    fn looks_up_by_a_borrowed_key_and_never_has_zero_capacity() {
        let mut map: BoundedMap<String, u8> = BoundedMap::new(0);
        assert_eq!(map.len(), 0);
        map.insert("pod-a".to_string(), 1);
        assert_eq!(map.get("pod-a"), Some(&1));
        map.insert("pod-b".to_string(), 2);
        assert_eq!((map.len(), map.get("pod-a"), map.get("pod-b")), (1, None, Some(&2)));
    }
}
