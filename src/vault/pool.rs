//! The clients of every Vault connection mounts have named, built once each
//! and shared: building one reads CA and client-certificate files.

use std::time::Duration;

use super::transport::SetupError;
use super::{failover, VaultClient, VaultConfig, VaultError};
use crate::bounded::BoundedMap;

/// Why a token could not be revoked.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No client for its Vault could be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Vault did not revoke it.
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Vault clients shared by mounts and background renewals, one per
/// connection configuration (so connections are pooled per server).
pub struct VaultPool {
    clients: std::sync::Mutex<BoundedMap<VaultConfig, VaultClient>>,
    timeout: Duration,
    retry_window: Duration,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    tasks: crate::tasks::Tasks,
}

/// More distinct Vault connection configurations than this is unusual; the
/// pool is then simply rebuilt on demand.
const MAX_POOLED_CLIENTS: usize = 64;

impl VaultPool {
    /// An empty pool whose clients use `timeout` per request.
    pub fn new(timeout: Duration) -> VaultPool {
        VaultPool {
            clients: std::sync::Mutex::new(BoundedMap::new(MAX_POOLED_CLIENTS)),
            timeout,
            retry_window: failover::DEFAULT_RETRY_WINDOW,
            metrics: None,
            tasks: crate::tasks::Tasks::new(),
        }
    }

    /// Clients start their cluster watches (several addresses) in `tasks`,
    /// so that they stop with the provider's other background work.
    pub fn with_tasks(mut self, tasks: crate::tasks::Tasks) -> VaultPool {
        self.tasks = tasks;
        self
    }

    /// Clients retry rounds of failed addresses for `window`
    /// (`-retry-budget`).
    pub fn with_retry_window(mut self, window: Duration) -> VaultPool {
        self.retry_window = window;
        self
    }

    /// Counts every HTTP exchange of the pool's clients in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> VaultPool {
        self.metrics = Some(metrics);
        self
    }

    /// The client for `cfg`, built on first use. Building reads CA and
    /// client-certificate files: background work, whose configurations
    /// mounts have built before, uses this; mounts use [`connect`](Self::connect).
    pub fn client(&self, cfg: &VaultConfig) -> Result<VaultClient, SetupError> {
        if let Some(c) = self.cached(cfg) {
            return Ok(c);
        }
        let client = self.build(cfg)?;
        Ok(self.keep(cfg, client))
    }

    /// Revokes `token` (and with it every lease it created) at the Vault of
    /// `cfg`.
    pub async fn revoke(&self, cfg: &VaultConfig, token: &str) -> Result<(), RevokeError> {
        Ok(self.client(cfg)?.revoke_self(token).await?)
    }

    /// [`client`](Self::client) for a mount: files are read on a blocking
    /// thread, never on the runtime, and no lock is held while they are, so
    /// a slow or hostile path named by one class cannot stall other mounts.
    pub async fn connect(self: &std::sync::Arc<Self>, cfg: &VaultConfig) -> Result<VaultClient, SetupError> {
        if let Some(c) = self.cached(cfg) {
            return Ok(c);
        }
        let pool = self.clone();
        let owned = cfg.clone();
        let client = tokio::task::spawn_blocking(move || pool.build(&owned))
            .await
            .map_err(SetupError::Join)??;
        Ok(self.keep(cfg, client))
    }

    fn cached(&self, cfg: &VaultConfig) -> Option<VaultClient> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.get(cfg).cloned()
    }

    fn build(&self, cfg: &VaultConfig) -> Result<VaultClient, SetupError> {
        Ok(
            VaultClient::build(cfg, self.timeout, self.metrics.clone(), self.tasks.clone())?
                .with_retry_window(self.retry_window),
        )
    }

    /// Keeps a freshly built client, or the one a concurrent build kept first.
    fn keep(&self, cfg: &VaultConfig, client: VaultClient) -> VaultClient {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = clients.get(cfg) {
            return existing.clone();
        }
        clients.insert(cfg.clone(), client.clone());
        client
    }
}
