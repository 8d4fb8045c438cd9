//! Revocation when a pod goes away. The driver never says so (there is no
//! unmount RPC), so the provider watches the pods of its own node through
//! the Kubernetes API and, when one that holds credentials is deleted,
//! revokes its Vault token — which revokes every lease it created.
//!
//! A list is taken first (pods deleted while the provider was down are
//! caught there), then a watch from the list's resourceVersion; when the
//! watch ends or breaks, the cycle starts again. Without RBAC permission to
//! list pods this says so once and stops: credentials then expire on their
//! own, as they did before.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::kube::{KubeClient, KubeError};
use crate::ledger::Ledger;
use crate::vault::VaultPool;

/// How long one watch request runs before it is renewed.
const WATCH_TIMEOUT: Duration = Duration::from_secs(240);

/// Runs until `shutdown` flips to true.
pub async fn run(
    kube: KubeClient,
    node: String,
    ledger: Arc<Ledger>,
    pool: Arc<VaultPool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let cycle = cycle(&kube, &node, &ledger, &pool);
        let result = tokio::select! {
            r = cycle => r,
            _ = shutdown.changed() => return,
        };
        match result {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(KubeError::Status {
                code: 401 | 403,
                message,
                ..
            }) => {
                tracing::warn!(node = %node, %message, "cannot list or watch this node's pods: credentials of deleted pods will not be revoked early but expire on their own (grant list/watch on pods, see deploy/components/revoke-on-pod-delete)");
                return;
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "watching this node's pods failed; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

async fn cycle(kube: &KubeClient, node: &str, ledger: &Ledger, pool: &VaultPool) -> Result<(), KubeError> {
    let listed_at = SystemTime::now();
    let (rv, uids) = kube.list_node_pods(node).await?;
    let present: HashSet<String> = uids.into_iter().collect();
    for (uid, since) in ledger.pod_uids() {
        // A pod first seen after the list started may simply be missing from it.
        if since < listed_at && !present.contains(&uid) {
            revoke(ledger, pool, &uid).await;
        }
    }
    // Revoke as events arrive rather than when the watch ends.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let watch = kube.watch_node_pods(node, &rv, WATCH_TIMEOUT, move |uid| {
        let _ = tx.send(uid);
    });
    tokio::pin!(watch);
    loop {
        tokio::select! {
            r = &mut watch => {
                while let Ok(uid) = rx.try_recv() {
                    revoke(ledger, pool, &uid).await;
                }
                return r;
            }
            Some(uid) = rx.recv() => revoke(ledger, pool, &uid).await,
        }
    }
}

async fn revoke(ledger: &Ledger, pool: &VaultPool, uid: &str) {
    let tokens = ledger.remove_pod(uid);
    for (vault, token) in tokens {
        let result = match pool.client(&vault) {
            Ok(c) => c.revoke_self(&token).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if result.is_ok() {
            ledger.metrics().credential_revoked();
        }
        match result {
            Ok(()) => tracing::info!(pod_uid = %uid, "pod deleted: revoked its Vault token and leases"),
            Err(e) => {
                tracing::warn!(pod_uid = %uid, error = %e, "pod deleted but revoking its Vault token failed; it will expire on its own")
            }
        }
    }
}
