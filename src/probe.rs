//! Watching whether the default Vault answers, for the `vault_up` metric and
//! a log line on every change. Deliberately not part of readiness: a
//! DaemonSet pod taken out of service or restarted would not bring Vault
//! back, and mounts report the outage to the pod themselves.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;
use crate::spc::{ReadKey, VaultConfig};
use crate::vault::VaultClient;

/// Probes `GET /v1/sys/health` on `vault` every `interval`, forever.
/// Standby nodes count as up (`standbyok`), a sealed or uninitialised Vault
/// as down.
pub async fn watch_vault(vault: VaultConfig, request_timeout: Duration, metrics: Arc<Metrics>, interval: Duration) {
    let address = vault.endpoint.to_string();
    let client = match VaultClient::new(&vault, request_timeout) {
        Ok(c) => c.with_metrics(metrics.clone()),
        Err(e) => {
            tracing::warn!(vault = %address, error = %e, "cannot build a client to probe Vault; vault_up stays 0");
            return;
        }
    };
    let health = ReadKey {
        method: "GET".to_string(),
        path: "/v1/sys/health".to_string(),
        query: vec![
            ("perfstandbyok".to_string(), "true".to_string()),
            ("standbyok".to_string(), "true".to_string()),
        ],
        body: None,
    };
    let mut was_up: Option<bool> = None;
    loop {
        // sys/health needs no token; the empty one is ignored by Vault.
        let result = client.read("", &health).await;
        let up = result.is_ok();
        metrics.set_vault_up(up);
        if was_up != Some(up) {
            match result {
                Ok(_) => tracing::info!(vault = %address, "Vault answers its health check"),
                Err(e) => tracing::warn!(
                    vault = %address,
                    error = %e,
                    "Vault is unreachable or not serving: mounts using it will fail until it answers (liveness and readiness are unaffected)"
                ),
            }
            was_up = Some(up);
        }
        tokio::time::sleep(interval).await;
    }
}
