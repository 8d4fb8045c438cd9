//! How much memory mounts may hold: each mount's share, and all mounts
//! together.
//!
//! A SecretProviderClass decides how much a mount reads (its objects, the
//! size of what Vault holds there) and renders (`expandKeys`, templates). A
//! provider under a container memory limit must not let one class, or many
//! mounts at once, take it over that limit: when it is OOM-killed, every pod
//! on its node stops getting secrets. So what a mount holds is counted as it
//! grows — response bytes as they stream in, their parsed form, each rendered
//! file — against its own limit and against one provider-wide pool, and a
//! mount that would exceed either fails naming the limit (its own: the
//! class asks too much; the pool: the provider is busy, a retry may pass),
//! while every other mount goes on.
//!
//! The count is conservative (a response's bytes stay counted after they are
//! parsed and dropped) and ends with the mount: a [`MountBudget`] gives its
//! share back to the pool when it is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Default for `-max-mount-bytes`: four times the driver's 4 MiB response
/// limit, room for a mount that is near that limit (the response, its parsed
/// form and the files).
pub const DEFAULT_MAX_MOUNT_BYTES: usize = 16 * 1024 * 1024;
/// Default for `-max-inflight-bytes`: what all mounts together may hold,
/// sized for the DaemonSet's 128 MiB limit (see docs/security.md).
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 48 * 1024 * 1024;

/// A mount went over a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    /// This mount alone would hold more than its share.
    #[error("this mount needs more than the {limit} bytes of memory one mount may hold (-max-mount-bytes): it reads or renders too much; split the SecretProviderClass or select less (secretKey, secretKeyPointer)")]
    Mount {
        /// The per-mount limit.
        limit: usize,
    },
    /// All mounts together would hold more than the pool.
    #[error("the provider's mounts together would hold more than {limit} bytes of memory (-max-inflight-bytes): too many large mounts at once; the driver will retry")]
    Provider {
        /// The provider-wide limit.
        limit: usize,
    },
}

impl From<Exceeded> for crate::error::Error {
    fn from(e: Exceeded) -> Self {
        let kind = match e {
            Exceeded::Mount { .. } => crate::error::ErrorKind::TooLarge,
            Exceeded::Provider { .. } => crate::error::ErrorKind::Busy,
        };
        crate::error::Error::new(kind, e.to_string()).with_source(e)
    }
}

/// Something that accounts for bytes a mount holds.
pub trait Charge: Send + Sync {
    /// Counts `bytes` more, or refuses if that would exceed a limit (and then
    /// counts nothing).
    fn charge(&self, bytes: usize) -> Result<(), Exceeded>;
}

/// No accounting (offline tools and tests).
pub struct Unlimited;

impl Charge for Unlimited {
    fn charge(&self, _bytes: usize) -> Result<(), Exceeded> {
        Ok(())
    }
}

/// The provider-wide pool.
#[derive(Debug)]
pub struct MemoryBudget {
    per_mount: usize,
    total: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    /// A pool of `total` bytes, of which one mount may hold `per_mount`.
    pub fn new(per_mount: usize, total: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            per_mount,
            total,
            used: AtomicUsize::new(0),
        })
    }

    /// The default limits.
    pub fn default_limits() -> Arc<MemoryBudget> {
        MemoryBudget::new(DEFAULT_MAX_MOUNT_BYTES, DEFAULT_MAX_INFLIGHT_BYTES)
    }

    /// A fresh share for one mount.
    pub fn for_mount(self: &Arc<Self>) -> MountBudget {
        MountBudget {
            pool: self.clone(),
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes all running mounts hold now.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// One mount's share of the pool; given back when dropped.
#[derive(Debug)]
pub struct MountBudget {
    pool: Arc<MemoryBudget>,
    used: AtomicUsize,
}

impl MountBudget {
    /// Bytes this mount holds.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

impl Charge for MountBudget {
    fn charge(&self, bytes: usize) -> Result<(), Exceeded> {
        let mine = self.used.fetch_add(bytes, Ordering::SeqCst).saturating_add(bytes);
        if mine > self.pool.per_mount {
            self.used.fetch_sub(bytes, Ordering::SeqCst);
            return Err(Exceeded::Mount {
                limit: self.pool.per_mount,
            });
        }
        let all = self.pool.used.fetch_add(bytes, Ordering::SeqCst).saturating_add(bytes);
        if all > self.pool.total {
            self.pool.used.fetch_sub(bytes, Ordering::SeqCst);
            self.used.fetch_sub(bytes, Ordering::SeqCst);
            return Err(Exceeded::Provider { limit: self.pool.total });
        }
        Ok(())
    }
}

impl Drop for MountBudget {
    fn drop(&mut self) {
        self.pool
            .used
            .fetch_sub(self.used.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Roughly what a parsed JSON value occupies on the heap: every node, every
/// string's bytes and every map entry's overhead. An estimate that errs
/// high, for counting, not for allocation.
pub fn json_footprint(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    const NODE: usize = std::mem::size_of::<Value>();
    // A BTreeMap entry: the key String plus node bookkeeping.
    const ENTRY: usize = std::mem::size_of::<String>() + 16;
    let mut total = 0usize;
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        total = total.saturating_add(NODE);
        match v {
            Value::String(s) => total = total.saturating_add(s.len()),
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(map) => {
                for (k, item) in map {
                    total = total.saturating_add(ENTRY + k.len());
                    stack.push(item);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_mount_and_all_mounts_are_bounded_and_shares_come_back() {
        let pool = MemoryBudget::new(100, 250);
        let a = pool.for_mount();
        let b = pool.for_mount();
        let c = pool.for_mount();
        a.charge(60).unwrap();
        assert_eq!(a.charge(41), Err(Exceeded::Mount { limit: 100 }));
        a.charge(40).unwrap();
        b.charge(100).unwrap();
        assert_eq!(c.charge(51), Err(Exceeded::Provider { limit: 250 }));
        assert_eq!(c.used(), 0, "a refused charge counts nothing");
        c.charge(50).unwrap();
        assert_eq!(pool.in_use(), 250);
        drop(a);
        assert_eq!(pool.in_use(), 150);
        c.charge(50).unwrap();
        drop(b);
        drop(c);
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn footprints_count_strings_and_structure() {
        let small = json_footprint(&serde_json::json!({"k": "v"}));
        let big = json_footprint(&serde_json::json!({"k": "v".repeat(10_000)}));
        assert!(big >= 10_000 && big < 10_000 + small + 64, "{big}");
        let many: serde_json::Map<String, serde_json::Value> =
            (0..1000).map(|i| (format!("k{i}"), serde_json::json!(i))).collect();
        let raw = serde_json::to_string(&many).unwrap().len();
        assert!(
            json_footprint(&serde_json::Value::Object(many)) > raw,
            "structure costs more than its text"
        );
    }
}
