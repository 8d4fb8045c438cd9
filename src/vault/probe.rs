//! Watching whether the default Vault answers, address by address, for the
//! `vault_up` and `vault_address_up` metrics and a log line on every change.
//! Deliberately not part of readiness: a DaemonSet pod taken out of service
//! or restarted would not bring Vault back, and mounts report the outage to
//! the pod themselves.
//!
//! The probe uses the mounts' own client, so what it finds (a node sealed,
//! another back) also steers which address the next mount tries first.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::vault::VaultClient;

/// Probes `GET /v1/sys/health` on every address of `client` every
/// `interval`, forever. Active and standby nodes count as up; sealed,
/// uninitialised or unreachable ones as down. `vault_up` is 1 while at
/// least one address is up.
pub async fn watch_vault(client: VaultClient, metrics: Arc<Metrics>, interval: Duration) {
    let mut was: Vec<Option<String>> = Vec::new();
    loop {
        let states = client.probe().await;
        was.resize(states.len(), None);
        let mut any_up = false;
        for ((address, state), was) in states.iter().zip(was.iter_mut()) {
            let (up, now) = match state {
                Ok(s) => (s.serving(), s.to_string()),
                Err(e) => (false, e.to_string()),
            };
            any_up |= up;
            if was.as_deref() != Some(now.as_str()) {
                if up {
                    tracing::info!(vault = %address, state = %now, "Vault address answers its health check");
                } else {
                    tracing::warn!(
                        vault = %address,
                        state = %now,
                        "Vault address is unreachable or not serving: mounts use the other addresses, or fail until one answers (liveness and readiness are unaffected)"
                    );
                }
                *was = Some(now);
            }
        }
        metrics.set_vault_up(any_up);
        tokio::time::sleep(interval).await;
    }
}
