//! The credential ledger: per pod, the Vault token it logged in with and the
//! leased responses (dynamic database credentials, PKI certificates) it was
//! given, so that
//!
//! - a republish returns the **same** credentials (same content, same
//!   version, no new lease) while they are comfortably valid;
//! - a background task **renews** the token and renewable leases at a
//!   threshold of their TTL, so pods that are never republished keep working
//!   credentials;
//! - credentials that cannot be extended (max TTL, non-renewable, PKI
//!   `expiration`, a token at its max TTL) are **rotated** on the first Mount
//!   after the threshold, and the old ones live out a grace period before
//!   they are revoked;
//! - a deleted pod's token is **revoked** (which revokes every lease it
//!   created) — see [`podwatch`];
//! - a provider restart **resumes** from an encrypted state file.
//!
//! What bounds a credential depends on its kind:
//!
//! - A **lease** (a `lease_id`) dies with the token that created it: Vault
//!   revokes a token's leases when the token is revoked or expires. A lease
//!   is reused while its own expiry allows (renewal, max TTL, threshold) and
//!   its token is one the ledger still hands out; a token that cannot be
//!   extended is replaced before its expiry with the rotation grace left, and
//!   its leases are issued again under the new token.
//! - A **certificate** (`data.expiration`, no lease) is not tied to any
//!   token: it stays valid until its own expiry whatever happens to the token
//!   that asked for it. It is reused until the rotation threshold of its own
//!   lifetime, across token renewals and replacements.
//!
//! Decisions are pure functions of the entry and the clock, which tests can
//! set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ring::aead;
use ring::rand::SecureRandom as _;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::model::Pod;
use crate::vault::ReadKey;
use crate::vault::VaultConfig;
use crate::vault::{VaultPool, VaultToken};

/// A source of the current time, replaceable in tests.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Identity a token (and its credentials) belongs to: the pod, how it logs
/// in, and where.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenKey {
    /// The pod.
    pub pod: Pod,
    /// Vault role.
    pub role: String,
    /// Auth mount.
    pub auth_mount: String,
    /// Audience of the pod token.
    pub audience: Option<String>,
    /// The flavour of the socket: with no audience named, vault and openbao
    /// sockets log in with different tokens (audience `vault` or `openbao`).
    #[serde(default)]
    pub flavor: crate::flavor::Flavor,
    /// Vault connection.
    pub vault: VaultConfig,
}

/// Tunables, from flags.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    /// Reuse leased responses across mounts (off: every mount reads anew).
    pub reuse: bool,
    /// Fraction of a TTL after which to renew or rotate (default 2/3).
    pub threshold: f64,
    /// How long replaced credentials stay valid before they are revoked.
    pub grace: Duration,
    /// Entries kept (pods × connection configs). One namespace keeps at
    /// most a quarter of them; beyond either bound, an entry of the
    /// namespace holding the most goes (the least recently used), and its
    /// token is revoked.
    pub capacity: usize,
    /// Where the encrypted state lives; `None` keeps it in memory only.
    pub state_file: Option<PathBuf>,
    /// This node's name, bound into the state file's encryption: a file
    /// carried to another node (where the same cluster key opens it) is
    /// refused there.
    pub node: Option<String>,
    /// Most memory the held responses may take together (their parsed
    /// size); beyond it, new leased responses are returned but not held.
    pub max_held_bytes: usize,
}

/// A leased response larger than this (parsed) is never held: real leases
/// and certificates are a few KiB.
pub const MAX_HELD_RESPONSE: usize = 256 * 1024;

/// A Vault token is not handed to a new mount this close to its expiry
/// (less for very short TTLs, see [`margin`]).
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// A credential is never returned with less than this left (idem).
const CREDENTIAL_MARGIN: Duration = Duration::from_secs(2);

/// One leased response.
#[derive(Clone, Serialize, Deserialize)]
struct Credential {
    read: ReadKey,
    /// Vault's response, returned as is on reuse. Secret: never logged.
    response: Json,
    /// Empty for PKI certificates, which are not leases (and so outlive the
    /// token that asked for them).
    lease_id: String,
    issued: SystemTime,
    /// Lifetime at issue: the basis of the rotation threshold.
    lifetime: Duration,
    expires: SystemTime,
    renewable: bool,
    /// TTL granted by the last issue or renewal.
    last_ttl: Duration,
    last_renewed: SystemTime,
    /// Vault granted less than asked: the lease is at its max TTL.
    capped: bool,
}

impl Credential {
    /// A lease dies with its token; a certificate without one does not.
    fn is_lease(&self) -> bool {
        !self.lease_id.is_empty()
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct TokenState {
    token: VaultToken,
    last_renewed: SystemTime,
    last_ttl: Duration,
    capped: bool,
}

/// A pod's token and what it was given. The token may be dead (expired, or
/// refused by Vault) while certificates, which outlive it, are still held.
#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    key: TokenKey,
    token: TokenState,
    credentials: Vec<Credential>,
    last_used: SystemTime,
}

impl Entry {
    fn token_alive(&self, now: SystemTime) -> bool {
        self.token.token.expires.is_none_or(|x| x > now)
    }

    /// What letting go of this whole entry leaves to do: its token's
    /// retirement, due now, if the token is still alive (revoking it takes
    /// its leases along), and how many certificates issued without a lease
    /// will outlive it.
    fn release(&self, now: SystemTime) -> (Option<Retirement>, usize) {
        let retirement = self.token_alive(now).then(|| {
            Retirement::new(&self.key, self.token.token.token.clone(), None, now).until(self.token.token.expires)
        });
        let certificates = self
            .credentials
            .iter()
            .filter(|c| !c.is_lease() && c.expires > now)
            .count();
        (retirement, certificates)
    }

    /// Worth keeping: a live token, or a certificate that is still valid.
    fn alive(&self, now: SystemTime) -> bool {
        self.token_alive(now) || self.credentials.iter().any(|c| !c.is_lease() && c.expires > now)
    }
}

/// Something to revoke later: a replaced lease, or a replaced token (with
/// every lease it created).
#[derive(Clone, Serialize, Deserialize)]
pub struct Retirement {
    pod_uid: String,
    /// The pod's namespace: its share of the background job slots.
    #[serde(default)]
    namespace: String,
    vault: VaultConfig,
    /// The token used for the call (the replaced token itself for `Token`).
    token: String,
    lease_id: Option<String>,
    /// When it is due (again, after a failed attempt).
    at: SystemTime,
    /// The Vault role whose policies allow (or not) revoking the lease.
    #[serde(default)]
    role: String,
    /// Attempts that failed transiently (Vault unreachable or electing).
    #[serde(default)]
    attempts: u32,
    /// When the credential expires by itself: revocation is retried until
    /// then (unknown: for a bounded number of attempts).
    #[serde(default)]
    expires: Option<SystemTime>,
}

impl Retirement {
    /// `token` of the pod `key` (or a lease under it), to revoke at `at`.
    fn new(key: &TokenKey, token: String, lease_id: Option<String>, at: SystemTime) -> Retirement {
        Retirement {
            pod_uid: key.pod.uid.clone(),
            namespace: key.pod.namespace.clone(),
            vault: key.vault.clone(),
            token,
            lease_id,
            at,
            role: key.role.clone(),
            attempts: 0,
            expires: None,
        }
    }

    /// The same, for a credential that expires by itself at `expires`.
    fn until(mut self, expires: Option<SystemTime>) -> Retirement {
        self.expires = expires;
        self
    }

    /// Which in-flight job this is.
    fn job_id(&self) -> String {
        format!("retire/{}/{}", self.token, self.lease_id.as_deref().unwrap_or_default())
    }

    fn same(&self, other: &Retirement) -> bool {
        self.token == other.token && self.lease_id == other.lease_id
    }
}

/// A service-account JWT that Vault reviewed at a login for one whole
/// token key (Vault address, auth mount, role, audience and pod): the proof,
/// when the issuer's keys cannot be read, that a request carrying it for
/// that same key comes from the pod (see [`crate::kubernetes::identity`]).
/// A review by one Vault, mount or role proves nothing to another. Only its
/// SHA-256 is kept.
#[derive(Clone, Serialize, Deserialize)]
struct Reviewed {
    key: TokenKey,
    digest: String,
    /// The JWT's own expiry: no proof outlives it.
    expires: SystemTime,
}

#[derive(Default, Serialize, Deserialize)]
struct State {
    entries: Vec<Entry>,
    retiring: Vec<Retirement>,
    /// Reviews by whole token key (those of older versions, kept per pod and
    /// audience only, under `reviewed`, are not taken up).
    #[serde(default)]
    reviews: Vec<Reviewed>,
}

/// Most reviewed JWTs held (a few per pod on a node); the soonest to expire
/// goes first beyond it.
const MAX_REVIEWED: usize = 16_384;

#[derive(Default)]
struct Inner {
    entries: HashMap<TokenKey, Entry>,
    retiring: Vec<Retirement>,
    /// Per token key: the JWT Vault last reviewed.
    reviewed: HashMap<TokenKey, Reviewed>,
    dirty: bool,
    /// The generation of the state file last read or written; every write
    /// goes one higher, and a file of a lower generation is never resumed.
    generation: u64,
    /// Whether the last response refused for the memory bound was logged.
    warned_full: bool,
    /// Background jobs running now (renewals, revocations): the next plan
    /// leaves them out, so a slow one is never started twice.
    in_flight: std::collections::HashSet<String>,
    /// Roles whose denied lease revocation was logged already.
    warned_revoke_denied: std::collections::HashSet<String>,
}

impl Inner {
    /// Drops entries whose token and credentials are all gone, and each
    /// credential past its expiry (leases also die with their token;
    /// certificates only expire). True when anything was dropped.
    fn drop_expired(&mut self, now: SystemTime) -> bool {
        let before = self.entries.len() + self.reviewed.len();
        self.entries.retain(|_, e| e.alive(now));
        self.reviewed.retain(|_, r| r.expires > now);
        let mut changed = self.entries.len() + self.reviewed.len() != before;
        for e in self.entries.values_mut() {
            let n = e.credentials.len();
            let token_alive = e.token_alive(now);
            e.credentials
                .retain(|c| c.expires > now && (token_alive || !c.is_lease()));
            changed |= e.credentials.len() != n;
        }
        changed
    }

    /// Tokens and leases past `threshold` of their last TTL (with a
    /// per-credential jitter), that may still be extended.
    fn due_renewals(&self, now: SystemTime, threshold: f64) -> Vec<Job> {
        let mut due = Vec::new();
        for e in self.entries.values().filter(|e| e.token_alive(now)) {
            let t = &e.token;
            if t.token.renewable && !t.capped && t.token.expires.is_some() {
                let at = add(t.last_renewed, scale(t.last_ttl, threshold * jitter(&t.token.accessor)));
                if now >= at {
                    due.push(Job::RenewToken {
                        key: e.key.clone(),
                        token: t.token.token.clone(),
                        increment: t.token.ttl,
                    });
                }
            }
            for c in e
                .credentials
                .iter()
                .filter(|c| c.renewable && !c.capped && c.is_lease())
            {
                let at = add(c.last_renewed, scale(c.last_ttl, threshold * jitter(&c.lease_id)));
                if now >= at {
                    due.push(Job::RenewLease {
                        key: e.key.clone(),
                        token: t.token.token.clone(),
                        lease_id: c.lease_id.clone(),
                        increment: c.lifetime,
                    });
                }
            }
        }
        due
    }

    /// When the next thing is due after `now`, as the background work sees
    /// it: a renewal point (with [`Inner::due_renewals`]'s conditions), a
    /// retirement, or the expiry of a live token, credential or review (to
    /// drop it). A due renewal or retirement still in the past (running, or
    /// failed for now) counts as due now.
    fn next_due(&self, now: SystemTime, threshold: f64) -> Option<SystemTime> {
        let mut next: Option<SystemTime> = None;
        let mut at = |t: SystemTime| next = Some(next.map_or(t, |n| n.min(t)));
        for e in self.entries.values() {
            let t = &e.token;
            let alive = e.token_alive(now);
            if alive {
                if let Some(expires) = t.token.expires {
                    at(expires);
                    if t.token.renewable && !t.capped {
                        at(add(
                            t.last_renewed,
                            scale(t.last_ttl, threshold * jitter(&t.token.accessor)),
                        ));
                    }
                }
            }
            for c in &e.credentials {
                if c.expires > now {
                    at(c.expires);
                }
                if alive && c.renewable && !c.capped && c.is_lease() {
                    at(add(c.last_renewed, scale(c.last_ttl, threshold * jitter(&c.lease_id))));
                }
            }
        }
        for r in &self.retiring {
            at(r.at);
        }
        for r in self.reviewed.values().filter(|r| r.expires > now) {
            at(r.expires);
        }
        next
    }

    /// The retired credentials whose grace is over (they stay listed until
    /// their revocation is done).
    fn due_retirements(&self, now: SystemTime) -> Vec<Job> {
        self.retiring
            .iter()
            .filter(|r| r.at <= now)
            .map(|r| Job::Retire(r.clone()))
            .collect()
    }

    /// Whether some entry still hands out `token`, alive.
    fn holds_live_token(&self, token: &str, now: SystemTime) -> bool {
        self.entries
            .values()
            .any(|e| e.token.token.token == token && e.token_alive(now))
    }

    fn credential_mut(&mut self, key: &TokenKey, lease_id: &str) -> Option<&mut Credential> {
        self.entries
            .get_mut(key)?
            .credentials
            .iter_mut()
            .find(|c| c.lease_id == lease_id)
    }
}

/// What the ledger holds, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pods (entries) with a live token.
    pub tokens: usize,
    /// Leased credentials held.
    pub credentials: usize,
    /// Replaced credentials and tokens waiting for revocation.
    pub retiring: usize,
    /// Seconds until the soonest credential expiry.
    pub soonest_expiry: Option<Duration>,
}

/// The ledger. Cheap to share (`Arc`).
pub struct Ledger {
    settings: LedgerSettings,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Woken when the ledger changes after it was last persisted (see
    /// [`Locked`]): the background loop then plans at once instead of
    /// sleeping until the next due job.
    changed: tokio::sync::Notify,
}

/// The ledger's state, locked. Released after a change that made a clean
/// ledger dirty, it wakes the background loop ([`Ledger::changed`]): once
/// per change after a persist, so the loop sleeps while nothing happens.
struct Locked<'a> {
    guard: std::sync::MutexGuard<'a, Inner>,
    was_dirty: bool,
    changed: &'a tokio::sync::Notify,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if !self.was_dirty && self.guard.dirty {
            self.changed.notify_one();
        }
    }
}

fn add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

fn left(until: SystemTime, now: SystemTime) -> Duration {
    until.duration_since(now).unwrap_or(Duration::ZERO)
}

/// The safety margin for something with `lifetime`: `max`, but never more
/// than half the window between the renewal threshold and expiry, or short
/// TTLs would be treated as expired long before they are.
fn margin(max: Duration, lifetime: Duration, threshold: f64) -> Duration {
    max.min(scale(lifetime, (1.0 - threshold) / 2.0))
}

fn scale(d: Duration, f: f64) -> Duration {
    Duration::from_secs_f64((d.as_secs_f64() * f).max(0.0))
}

/// A spread of ±5 % so that pods mounted together do not renew together.
fn jitter(seed: &str) -> f64 {
    let d = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
    let b = d.as_ref()[0] as f64 / 255.0;
    0.95 + 0.1 * b
}

impl Ledger {
    /// An empty ledger.
    pub fn new(settings: LedgerSettings, clock: Arc<dyn Clock>) -> Ledger {
        Ledger {
            settings,
            clock,
            inner: Mutex::new(Inner::default()),
            metrics: Arc::new(crate::metrics::Metrics::new()),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Counts evictions, renewals, rotations and revocations in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Ledger {
        self.metrics = metrics;
        self
    }

    /// Where the ledger counts what it does (also for the pod watcher).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Whether leased responses are reused.
    pub fn reuse(&self) -> bool {
        self.settings.reuse
    }

    fn lock(&self) -> Locked<'_> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Locked {
            was_dirty: guard.dirty,
            guard,
            changed: &self.changed,
        }
    }

    /// Resolves when the ledger changed since it was last persisted (at
    /// once if it did before this was called).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// How long until something is due: a renewal, a retirement, or an
    /// expiry to drop. `None`: nothing is held.
    pub fn next_due(&self) -> Option<Duration> {
        let now = self.clock.now();
        let inner = self.lock();
        inner.next_due(now, self.settings.threshold).map(|at| left(at, now))
    }

    /// Whether anything changed since the ledger was last persisted.
    pub fn is_dirty(&self) -> bool {
        self.lock().dirty
    }

    /// The token to use for `key`, if one is held and not due for
    /// replacement. A token that cannot be extended any more (max TTL or not
    /// renewable) is replaced once past the threshold, and at least the
    /// rotation grace (at most half its TTL) before it expires: the leases it
    /// created die with it, so they are issued again under the new token
    /// while the old ones still have their grace.
    pub fn token(&self, key: &TokenKey) -> Option<VaultToken> {
        if self.settings.capacity == 0 {
            // `-cache-size <= 0`: every mount logs in, as with the
            // incumbent's cache turned off; replaced tokens still retire.
            return None;
        }
        let now = self.clock.now();
        let mut inner = self.lock();
        let entry = inner.entries.get_mut(key)?;
        if self.token_usable(&entry.token, now) {
            entry.last_used = now;
            return Some(entry.token.token.clone());
        }
        None
    }

    fn token_usable(&self, t: &TokenState, now: SystemTime) -> bool {
        let Some(exp) = t.token.expires else { return true };
        let remaining = left(exp, now);
        let ttl = t.token.ttl;
        if remaining <= margin(TOKEN_MARGIN, ttl, self.settings.threshold) {
            return false;
        }
        let extendable = t.token.renewable && !t.capped;
        extendable || remaining > self.replacement_window(ttl)
    }

    /// How long before its expiry a token that cannot be extended is
    /// replaced: `1 - threshold` of its TTL, or the rotation grace if that is
    /// longer (but never more than half the TTL, or short tokens would be
    /// replaced on every mount).
    fn replacement_window(&self, ttl: Duration) -> Duration {
        scale(ttl, 1.0 - self.settings.threshold).max(self.settings.grace.min(ttl / 2))
    }

    /// Records a fresh login for `key`. A different token held before is
    /// retired: revoked after the grace period (or when it expires), taking
    /// its leases with it. Certificates held under it are valid whatever
    /// becomes of that token: they are kept under the new one.
    pub fn store_token(&self, key: &TokenKey, token: VaultToken) {
        let now = self.clock.now();
        let grace = self.settings.grace;
        let mut inner = self.lock();
        let old = inner.entries.remove(key);
        let mut credentials = Vec::new();
        if let Some(old) = old {
            if self.settings.capacity > 0 {
                credentials.extend(
                    old.credentials
                        .iter()
                        .filter(|c| !c.is_lease() && c.expires > now)
                        .cloned(),
                );
            }
            // A dead token (expired, or refused by Vault) has nothing left
            // to revoke.
            if old.token_alive(now) && old.token.token.token != token.token {
                let at = old
                    .token
                    .token
                    .expires
                    .map(|e| e.min(add(now, grace)))
                    .unwrap_or(add(now, grace));
                inner
                    .retiring
                    .push(Retirement::new(key, old.token.token.token.clone(), None, at).until(old.token.token.expires));
            }
        }
        let fresh = TokenState {
            last_renewed: now,
            last_ttl: token.ttl,
            capped: false,
            token,
        };
        inner.entries.insert(
            key.clone(),
            Entry {
                key: key.clone(),
                token: fresh,
                credentials,
                last_used: now,
            },
        );
        self.evict(&mut inner, key);
        inner.dirty = true;
    }

    /// Records that Vault accepted `jwt` at a login for `key`; the JWT is
    /// good until `expires`.
    pub fn record_review(&self, key: &TokenKey, jwt: &str, expires: SystemTime) {
        let now = self.clock.now();
        if expires <= now {
            return;
        }
        let mut inner = self.lock();
        if inner.reviewed.len() >= MAX_REVIEWED {
            let soonest = inner
                .reviewed
                .iter()
                .min_by_key(|(_, r)| r.expires)
                .map(|(k, _)| k.clone());
            if let Some(k) = soonest {
                inner.reviewed.remove(&k);
            }
        }
        inner.reviewed.insert(
            key.clone(),
            Reviewed {
                key: key.clone(),
                digest: jwt_digest(jwt),
                expires,
            },
        );
        inner.dirty = true;
    }

    /// Whether `jwt` is the one Vault last reviewed for exactly `key`, and
    /// has not expired.
    pub fn was_reviewed(&self, key: &TokenKey, jwt: &str) -> bool {
        let now = self.clock.now();
        let inner = self.lock();
        inner
            .reviewed
            .get(key)
            .is_some_and(|r| r.expires > now && r.digest == jwt_digest(jwt))
    }

    /// Queues a token for revocation by the next tick (a proof login's,
    /// whose immediate revocation failed): kept in the state file until done.
    pub fn retire_token_now(&self, key: &TokenKey, token: &str) {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.retiring.push(Retirement::new(key, token.to_string(), None, now));
        inner.dirty = true;
    }

    /// Stops handing out `token` of `key` (if the key still holds it) and
    /// queues its revocation, which takes its leases along: a token the
    /// ledger lets go of is never left live in Vault.
    pub fn retire_token(&self, key: &TokenKey, token: &str) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(expires) = inner
            .entries
            .get(key)
            .filter(|e| e.token.token.token == token)
            .map(|e| e.token.token.expires)
        else {
            return;
        };
        Self::let_go(&mut inner, key, now);
        inner
            .retiring
            .push(Retirement::new(key, token.to_string(), None, now).until(expires));
        inner.dirty = true;
    }

    /// Marks `key`'s token dead (never handed out, renewed or revoked
    /// again) and drops its leases; the entry stays while certificates,
    /// which do not depend on the token, are valid.
    fn let_go(inner: &mut Inner, key: &TokenKey, now: SystemTime) {
        if let Some(e) = inner.entries.get_mut(key) {
            e.credentials.retain(|c| !c.is_lease());
            if e.credentials.is_empty() {
                inner.entries.remove(key);
            } else {
                e.token.token.expires = Some(now);
                e.token.token.renewable = false;
            }
        }
    }

    /// Forgets `token` of `key`, which Vault says is gone (revoked or
    /// expired: nothing is left to revoke), and with it its leases, if the
    /// key still holds that token; a fresher one is left alone.
    /// Certificates do not depend on it and stay.
    pub fn forget_dead_token(&self, key: &TokenKey, token: &str) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if inner.entries.get(key).is_some_and(|e| e.token.token.token == token) {
            Self::let_go(&mut inner, key, now);
            inner.dirty = true;
        }
    }

    /// Entries one namespace may keep: a quarter of the capacity.
    fn namespace_capacity(&self) -> usize {
        (self.settings.capacity / 4).max(1)
    }

    /// Held-response bytes one namespace may keep: a quarter of the bound.
    fn namespace_held_bytes(&self) -> usize {
        self.settings.max_held_bytes / 4
    }

    /// Keeps the ledger within its bounds after `key` was stored: first
    /// `key`'s namespace within its share, then the whole within the
    /// capacity, taking from the namespace that holds the most. Another
    /// namespace's churn never evicts yours while you are within your share,
    /// and an evicted entry's token is revoked (its leases with it), never
    /// left live in Vault.
    fn evict(&self, inner: &mut Inner, key: &TokenKey) {
        let now = self.clock.now();
        let namespace = key.pod.namespace.clone();
        loop {
            let mut per_namespace: HashMap<&str, usize> = HashMap::new();
            for k in inner.entries.keys() {
                *per_namespace.entry(k.pod.namespace.as_str()).or_default() += 1;
            }
            let from = if per_namespace.get(namespace.as_str()).copied().unwrap_or(0) > self.namespace_capacity() {
                namespace.clone()
            } else if inner.entries.len() > self.settings.capacity.max(1) {
                match per_namespace.iter().max_by_key(|(_, n)| **n) {
                    Some((ns, _)) => ns.to_string(),
                    None => break,
                }
            } else {
                break;
            };
            let Some(oldest) = inner
                .entries
                .values()
                .filter(|e| e.key.pod.namespace == from)
                .min_by_key(|e| e.last_used)
                .map(|e| e.key.clone())
            else {
                break;
            };
            let Some(e) = inner.entries.remove(&oldest) else { break };
            tracing::debug!(pod = %oldest.pod.name, namespace = %oldest.pod.namespace, "ledger full for this namespace: dropping its least recently used pod and revoking its token");
            let (retirement, certificates) = e.release(now);
            inner.retiring.extend(retirement);
            if certificates > 0 {
                self.metrics.certificates_left_to_expire(certificates);
            }
            self.metrics.token_cache_evicted();
        }
    }

    /// A held response for `read` that is still comfortably valid: by its
    /// own expiry (a renewable lease is kept alive by the background jobs of
    /// [`Ledger::plan`], any
    /// other credential is replaced once past the threshold of its
    /// lifetime), and for a lease, while its token is one [`Ledger::token`]
    /// still hands out (the lease dies with it). A certificate does not
    /// depend on the token.
    pub fn reusable(&self, key: &TokenKey, read: &ReadKey) -> Option<Json> {
        if !self.settings.reuse {
            return None;
        }
        let now = self.clock.now();
        let inner = self.lock();
        let entry = inner.entries.get(key)?;
        let c = entry.credentials.iter().find(|c| &c.read == read)?;
        let remaining = left(c.expires, now);
        if remaining <= margin(CREDENTIAL_MARGIN, c.lifetime, self.settings.threshold) {
            return None;
        }
        let extendable = c.is_lease() && c.renewable && !c.capped;
        if !extendable && remaining <= scale(c.lifetime, 1.0 - self.settings.threshold) {
            return None;
        }
        if c.is_lease() && !self.token_usable(&entry.token, now) {
            return None;
        }
        Some(c.response.clone())
    }

    /// Keeps a fresh response if it is leased (a `lease_id`) or a
    /// certificate (`data.expiration`); a credential it replaces is retired.
    pub fn store_response(&self, key: &TokenKey, read: &ReadKey, response: &Json) {
        if !self.settings.reuse {
            return;
        }
        let now = self.clock.now();
        let Some((lease_id, ttl, renewable)) = lease_of(response, now) else {
            return;
        };
        let grace = self.settings.grace;
        let size = crate::budget::json_footprint(response);
        if size > MAX_HELD_RESPONSE {
            tracing::debug!(pod = %key.pod.name, bytes = size, "a leased response this large is not held; it is read anew on every mount");
            return;
        }
        let mut inner = self.lock();
        let (mut held, mut held_here) = (0, 0);
        for e in inner.entries.values() {
            for c in e.credentials.iter().filter(|c| &c.read != read) {
                let bytes = crate::budget::json_footprint(&c.response);
                held += bytes;
                if e.key.pod.namespace == key.pod.namespace {
                    held_here += bytes;
                }
            }
        }
        if held + size > self.settings.max_held_bytes || held_here + size > self.namespace_held_bytes() {
            if !inner.warned_full {
                tracing::warn!(held_bytes = held, limit = self.settings.max_held_bytes, "the credential ledger is full (-max-held-bytes): new leased responses are returned but not held, so they are issued anew on every mount");
                inner.warned_full = true;
            }
            return;
        }
        inner.warned_full = false;
        let Inner {
            entries,
            retiring,
            dirty,
            ..
        } = &mut *inner;
        let Some(entry) = entries.get_mut(key) else {
            return;
        };
        let credential = Credential {
            read: read.clone(),
            response: response.clone(),
            lease_id,
            issued: now,
            lifetime: ttl,
            expires: add(now, ttl),
            renewable,
            last_ttl: ttl,
            last_renewed: now,
            capped: false,
        };
        if let Some(i) = entry.credentials.iter().position(|c| &c.read == read) {
            self.metrics.credential_rotated();
            let old = entry.credentials.remove(i);
            // A replaced certificate is left to expire: it is not a lease.
            if old.is_lease() && entry.token_alive(now) {
                retiring.push(
                    Retirement::new(
                        key,
                        entry.token.token.token.clone(),
                        Some(old.lease_id.clone()),
                        old.expires.min(add(now, grace)),
                    )
                    .until(Some(old.expires)),
                );
            }
        }
        entry.credentials.push(credential);
        *dirty = true;
    }

    /// Removes every entry of the pod with `uid` and returns what must be
    /// revoked now: its live tokens (which takes their leases along).
    /// Certificates are not leases: they are forgotten and expire.
    pub fn remove_pod(&self, uid: &str) -> Vec<(VaultConfig, String)> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let keys: Vec<TokenKey> = inner.entries.keys().filter(|k| k.pod.uid == uid).cloned().collect();
        let mut revoke = Vec::new();
        for k in keys {
            if let Some(e) = inner.entries.remove(&k) {
                if e.token_alive(now) {
                    revoke.push((k.vault.clone(), e.token.token.token));
                }
                inner.dirty = true;
            }
        }
        let reviews = inner.reviewed.len();
        inner.reviewed.retain(|k, _| k.pod.uid != uid);
        if inner.reviewed.len() != reviews {
            inner.dirty = true;
        }
        let (gone, keep): (Vec<Retirement>, Vec<Retirement>) = inner.retiring.drain(..).partition(|r| r.pod_uid == uid);
        inner.retiring = keep;
        revoke.extend(
            gone.into_iter()
                .filter(|r| r.lease_id.is_none())
                .map(|r| (r.vault, r.token)),
        );
        if !revoke.is_empty() {
            inner.dirty = true;
        }
        revoke
    }

    /// The pod with `uid` is gone: every entry of it is removed and its
    /// live tokens queued for revocation now (taking their leases along),
    /// retried as every retirement is until Vault confirms or the token
    /// expires. Certificates issued without a lease cannot be revoked with
    /// a token: they are counted and left to expire.
    pub fn retire_pod(&self, uid: &str) -> usize {
        let now = self.clock.now();
        let mut inner = self.lock();
        let keys: Vec<TokenKey> = inner.entries.keys().filter(|k| k.pod.uid == uid).cloned().collect();
        let mut queued = 0;
        let mut certificates = 0;
        for k in keys {
            let Some(e) = inner.entries.remove(&k) else { continue };
            let (retirement, left) = e.release(now);
            certificates += left;
            if let Some(r) = retirement {
                inner.retiring.push(r);
                queued += 1;
            }
        }
        // What was waiting for its grace to end is due now.
        for r in inner.retiring.iter_mut().filter(|r| r.pod_uid == uid) {
            r.at = r.at.min(now);
        }
        inner.reviewed.retain(|k, _| k.pod.uid != uid);
        inner.dirty = true;
        drop(inner);
        if certificates > 0 {
            self.metrics.certificates_left_to_expire(certificates);
            tracing::info!(pod_uid = %uid, certificates, "pod deleted: its certificates were issued without a lease and stay valid until they expire (set generate_lease on the PKI role to have them revoked with the pod)");
        }
        queued
    }

    /// UIDs of the pods the ledger holds tokens for, with when their token
    /// was issued.
    pub fn pod_uids(&self) -> Vec<(String, SystemTime)> {
        let inner = self.lock();
        inner
            .entries
            .values()
            .map(|e| (e.key.pod.uid.clone(), e.token.token.issued))
            .collect()
    }

    /// Counts for metrics.
    pub fn summary(&self) -> Summary {
        let now = self.clock.now();
        let inner = self.lock();
        let credentials: Vec<&Credential> = inner.entries.values().flat_map(|e| e.credentials.iter()).collect();
        Summary {
            tokens: inner.entries.values().filter(|e| e.token_alive(now)).count(),
            credentials: credentials.len(),
            retiring: inner.retiring.len(),
            soonest_expiry: credentials.iter().map(|c| left(c.expires, now)).min(),
        }
    }
}

/// The hex SHA-256 of a JWT: what the ledger keeps of one.
fn jwt_digest(jwt: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, jwt.as_bytes()))
}

/// The lease facts of a response: a `lease_id` with a TTL, or a PKI
/// certificate's `data.expiration`. `None` for static secrets.
fn lease_of(response: &Json, now: SystemTime) -> Option<(String, Duration, bool)> {
    let lease_id = response.get("lease_id").and_then(Json::as_str).unwrap_or_default();
    let duration = response.get("lease_duration").and_then(Json::as_u64).unwrap_or(0);
    if !lease_id.is_empty() && duration > 0 {
        let renewable = response.get("renewable").and_then(Json::as_bool).unwrap_or(false);
        return Some((lease_id.to_string(), Duration::from_secs(duration), renewable));
    }
    let expiration = response.get("data")?.get("expiration")?.as_u64()?;
    let until = SystemTime::UNIX_EPOCH + Duration::from_secs(expiration);
    let ttl = until.duration_since(now).ok()?;
    Some((String::new(), ttl, false))
}

mod jobs;
pub mod podwatch;
mod state_file;

pub use jobs::{Job, JOB_CONCURRENCY, JOB_CONCURRENCY_PER_NAMESPACE};

#[cfg(test)]
mod tests;
