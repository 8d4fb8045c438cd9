//! The ledger's background work: what is due ([`Ledger::plan`], under the
//! lock) and doing it ([`Ledger::run`], outside it) — renewing tokens and
//! leases, revoking what was replaced or retired.

use std::time::Duration;

use super::*;

/// Background work the tick found due, with what it needs outside the
/// lock. Each job is independent of every other: one pod's slow Vault call
/// never holds up another pod's renewal.
pub enum Job {
    /// Renew a pod's token.
    RenewToken {
        /// Whose.
        key: TokenKey,
        /// The token (never logged).
        token: String,
        /// The TTL to ask for.
        increment: Duration,
    },
    /// Renew a lease under the pod's token.
    RenewLease {
        /// Whose.
        key: TokenKey,
        /// The pod's token (never logged).
        token: String,
        /// The lease.
        lease_id: String,
        /// The TTL to ask for.
        increment: Duration,
    },
    /// Revoke a replaced lease or token. It stays in the ledger (and the
    /// state file) until the revocation is done: work cut short by a
    /// shutdown is resumed after the restart.
    Retire(Retirement),
}

impl Job {
    /// The namespace of the pod the job is for (its share of the job slots).
    pub fn namespace(&self) -> &str {
        match self {
            Job::RenewToken { key, .. } | Job::RenewLease { key, .. } => &key.pod.namespace,
            Job::Retire(r) => &r.namespace,
        }
    }

    fn id(&self) -> String {
        match self {
            Job::RenewToken { token, .. } => format!("renew/{token}"),
            Job::RenewLease { lease_id, .. } => format!("renew-lease/{lease_id}"),
            Job::Retire(r) => r.job_id(),
        }
    }
}

/// Background jobs run at once, at most (each waits for Vault at most
/// [`crate::vault::BACKGROUND_DEADLINE`] plus one request timeout).
pub const JOB_CONCURRENCY: usize = 32;
/// Of those, at most this many for the pods of one namespace: a namespace
/// whose Vault is slow never takes the slots every other's renewals need.
pub const JOB_CONCURRENCY_PER_NAMESPACE: usize = 8;
/// Wait before a revocation that failed transiently is tried again.
const RETIRE_RETRY: Duration = Duration::from_secs(5);
/// Transient failures after which a revocation is given up (the credential
/// then runs out at its own TTL): about ten minutes of retries.
const RETIRE_ATTEMPTS: u32 = 120;

impl Ledger {
    /// Plans background work: drops what has expired, and returns the
    /// renewals and revocations due that are not running already, marking
    /// them as running. Each must be passed to [`Ledger::run`].
    pub fn plan(&self) -> Vec<Job> {
        let now = self.clock.now();
        let mut inner = self.lock();
        let changed = inner.drop_expired(now);
        inner.dirty |= changed;
        let mut jobs = inner.due_renewals(now, self.settings.threshold);
        jobs.extend(inner.due_retirements(now));
        jobs.retain(|j| inner.in_flight.insert(j.id()));
        jobs
    }

    /// Runs one planned job. Dropped before it ends (a shutdown), it leaves
    /// the ledger as it was: a renewal not applied is due again, a
    /// revocation not done is still listed, and persisted.
    pub async fn run(&self, pool: &VaultPool, job: Job) {
        /// Takes the job off the running list however `run` ends.
        struct Running<'a>(&'a Ledger, String);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.lock().in_flight.remove(&self.1);
            }
        }
        let _running = Running(self, job.id());
        match job {
            Job::RenewToken { key, token, increment } => self.renew_token(pool, key, token, increment).await,
            Job::RenewLease {
                key,
                token,
                lease_id,
                increment,
            } => self.renew_lease(pool, key, token, lease_id, increment).await,
            Job::Retire(r) => self.revoke_retired(pool, r).await,
        }
    }

    /// One whole round of background work, for the unit tests:
    /// [`Ledger::plan`], then every job at most [`JOB_CONCURRENCY`] at a
    /// time, until all are done. The provider runs jobs as tasks instead
    /// (`app::ledger_ticks`), so that no round waits for its slowest job.
    #[cfg(test)]
    pub async fn tick(&self, pool: &VaultPool) {
        use futures_util::stream::StreamExt as _;
        futures_util::stream::iter(self.plan())
            .for_each_concurrent(JOB_CONCURRENCY, |job| self.run(pool, job))
            .await;
    }

    async fn renew_token(&self, pool: &VaultPool, key: TokenKey, token: String, increment: Duration) {
        let Ok(client) = pool.client(&key.vault) else { return };
        match client.renew_self(&token, increment).await {
            Ok(r) => {
                self.metrics.credential_renewed();
                self.apply_token_renewal(&key, &token, r.ttl, r.renewable, increment)
            }
            Err(e) => {
                self.metrics.credential_renewal_failed();
                tracing::warn!(pod = %key.pod.name, namespace = %key.pod.namespace, error = %e, "renewing the pod's Vault token failed");
                if e.status() == Some(403) {
                    // Revoked in Vault, or a policy that refuses renewals:
                    // this token (not a fresher one the key may hold by
                    // now) is retired, and the next mount logs in again.
                    self.retire_token(&key, &token);
                }
            }
        }
    }

    async fn renew_lease(&self, pool: &VaultPool, key: TokenKey, token: String, lease_id: String, increment: Duration) {
        let Ok(client) = pool.client(&key.vault) else { return };
        match client.renew_lease(&token, &lease_id, increment).await {
            Ok(r) => {
                self.metrics.credential_renewed();
                self.apply_lease_renewal(&key, &lease_id, r.ttl, r.renewable, increment)
            }
            // Vault unreachable, sealed or electing (after the client's own
            // failover and backoff): the lease is still good, so the next
            // tick tries again rather than replacing it.
            Err(e) if e.transient() => {
                self.metrics.credential_renewal_failed();
                tracing::warn!(pod = %key.pod.name, namespace = %key.pod.namespace, error = %e, "renewing a lease failed; trying again on the next round");
            }
            Err(e) => {
                self.metrics.credential_renewal_failed();
                tracing::warn!(pod = %key.pod.name, namespace = %key.pod.namespace, error = %e, "renewing a lease failed; it will be rotated on the next mount");
                self.mark_capped(&key, &lease_id);
            }
        }
    }

    async fn revoke_retired(&self, pool: &VaultPool, r: Retirement) {
        let kind = if r.lease_id.is_some() { "lease" } else { "token" };
        let client = match pool.client(&r.vault) {
            Ok(c) => c,
            Err(e) => return self.retry_retirement(&r, &e),
        };
        let result = match &r.lease_id {
            Some(id) => client.revoke_lease(&r.token, id).await,
            None => client.revoke_self(&r.token).await,
        };
        match result {
            Ok(()) => {
                self.metrics.credential_revoked();
                tracing::debug!(kind, "revoked replaced credentials");
            }
            // A lease under a token the ledger still holds alive: Vault
            // denies `sys/leases/revoke` itself (its default policy does not
            // grant it). The lease then runs out at its own TTL.
            Err(e)
                if e.status() == Some(403)
                    && r.lease_id.is_some()
                    && self.lock().holds_live_token(&r.token, self.clock.now()) =>
            {
                self.metrics.credential_revocation_denied();
                let first = self.lock().warned_revoke_denied.insert(r.role.clone());
                if first {
                    tracing::warn!(role = %r.role, error = %e, "Vault refused to revoke a replaced lease: the role's policies do not allow it. Replaced leases of this role run out at their own TTL; to revoke them at once, add to its policy: path \"sys/leases/revoke\" {{ capabilities = [\"update\"] }}");
                }
            }
            // The token expired or was revoked already: so were its leases.
            Err(e) if matches!(e.status(), Some(400 | 403 | 404)) => {
                tracing::debug!(kind, "replaced credentials were gone already");
            }
            Err(e) if e.transient() => return self.retry_retirement(&r, &e),
            Err(e) => {
                tracing::warn!(kind, error = %e, "revoking replaced credentials failed; they will expire on their own")
            }
        }
        self.finish_retirement(&r);
    }

    /// Takes a retirement off the list: done, or nothing more to do.
    fn finish_retirement(&self, r: &Retirement) {
        let mut inner = self.lock();
        let before = inner.retiring.len();
        inner.retiring.retain(|x| !x.same(r));
        if inner.retiring.len() != before {
            inner.dirty = true;
        }
    }

    /// A revocation failed for now (Vault unreachable, electing): due again
    /// after [`RETIRE_RETRY`], given up after [`RETIRE_ATTEMPTS`].
    fn retry_retirement(&self, r: &Retirement, why: &dyn std::fmt::Display) {
        let now = self.clock.now();
        let mut inner = self.lock();
        let Some(x) = inner.retiring.iter_mut().find(|x| x.same(r)) else {
            return;
        };
        x.attempts += 1;
        let moot = match x.expires {
            Some(expires) => now >= expires,
            None => x.attempts >= RETIRE_ATTEMPTS,
        };
        if moot {
            tracing::warn!(error = %why, attempts = x.attempts, "giving up revoking replaced credentials; they will expire on their own");
            inner.retiring.retain(|x| !x.same(r));
        } else {
            tracing::debug!(error = %why, attempts = x.attempts, "revoking replaced credentials failed for now; trying again");
            x.at = add(now, RETIRE_RETRY);
        }
        inner.dirty = true;
    }

    fn apply_token_renewal(&self, key: &TokenKey, token: &str, ttl: Duration, renewable: bool, asked: Duration) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get_mut(key) {
            if e.token.token.token == token {
                e.token.last_renewed = now;
                e.token.last_ttl = ttl;
                e.token.token.expires = Some(add(now, ttl));
                e.token.token.renewable = renewable;
                e.token.capped = ttl + Duration::from_secs(1) < asked;
                tracing::debug!(pod = %key.pod.name, ttl_s = ttl.as_secs(), capped = e.token.capped, "renewed the pod's Vault token");
            }
        }
        inner.dirty = true;
    }

    fn apply_lease_renewal(&self, key: &TokenKey, lease_id: &str, ttl: Duration, renewable: bool, asked: Duration) {
        let now = self.clock.now();
        let mut inner = self.lock();
        if let Some(c) = inner.credential_mut(key, lease_id) {
            c.last_renewed = now;
            c.last_ttl = ttl;
            c.expires = add(now, ttl);
            c.renewable = renewable;
            c.capped = ttl + Duration::from_secs(1) < asked;
            tracing::debug!(pod = %key.pod.name, ttl_s = ttl.as_secs(), capped = c.capped, "renewed a lease");
        }
        inner.dirty = true;
    }

    fn mark_capped(&self, key: &TokenKey, lease_id: &str) {
        if let Some(c) = self.lock().credential_mut(key, lease_id) {
            c.capped = true;
        }
    }
}
