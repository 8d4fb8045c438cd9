//! Revocation when a pod goes away. The driver never says so (there is no
//! unmount RPC), so the provider watches the pods of its own node through
//! the Kubernetes API and, when one that holds credentials is deleted,
//! revokes its Vault token — which revokes every lease it created.
//!
//! kube-runtime's metadata watcher lists the node's pods, then watches from
//! the list's resourceVersion, and lists again (with backoff) whenever the
//! watch breaks or its resourceVersion is too old. After every list, pods
//! the ledger holds credentials for that are not in it (deleted while the
//! provider was down or the watch was broken) are revoked; after that, every
//! deletion as it arrives. Without RBAC permission to list pods this says so
//! once and stops: credentials then expire on their own.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use ::kube::runtime::watcher::{self, Event};
use ::kube::runtime::WatchStreamExt as _;
use futures_util::StreamExt as _;

use crate::kubernetes::client::{watch_refused, KubeClient};
use crate::ledger::Ledger;

/// Runs until the API server refuses the watch (or the task is dropped).
pub async fn run(kube: KubeClient, node: String, ledger: Arc<Ledger>) {
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let events = watcher::watcher(kube.node_pods(), config).default_backoff();
    tokio::pin!(events);
    // The pods seen by the list in progress, and when it started.
    let mut listing: Option<(SystemTime, HashSet<String>)> = None;
    loop {
        match events.next().await {
            None => return,
            Some(Ok(Event::Init)) => listing = Some((SystemTime::now(), HashSet::new())),
            Some(Ok(Event::InitApply(pod))) => {
                if let (Some((_, seen)), Some(uid)) = (&mut listing, pod.metadata.uid) {
                    seen.insert(uid);
                }
            }
            Some(Ok(Event::InitDone)) => {
                if let Some((listed_at, present)) = listing.take() {
                    for (uid, since) in ledger.pod_uids() {
                        // A pod first seen after the list started may simply be missing from it.
                        if since < listed_at && !present.contains(&uid) {
                            revoke(&ledger, &uid);
                        }
                    }
                }
            }
            Some(Ok(Event::Apply(_))) => {}
            Some(Ok(Event::Delete(pod))) => {
                if let Some(uid) = pod.metadata.uid {
                    revoke(&ledger, &uid);
                }
            }
            Some(Err(e)) if watch_refused(&e) => {
                tracing::warn!(node = %node, error = %e, "cannot list or watch this node's pods: credentials of deleted pods will not be revoked early but expire on their own (grant list/watch on pods, see deploy/components/revoke-on-pod-delete)");
                return;
            }
            // The watcher backs off and lists again by itself.
            Some(Err(e)) => tracing::warn!(node = %node, error = %e, "watching this node's pods failed; retrying"),
        }
    }
}

/// Queues the revocation of a deleted pod's tokens (and with them its
/// leases): the ledger's jobs run it at once and retry it while Vault is
/// away, until Vault confirms or the tokens expire.
fn revoke(ledger: &Ledger, uid: &str) {
    let queued = ledger.retire_pod(uid);
    if queued > 0 {
        tracing::info!(pod_uid = %uid, tokens = queued, "pod deleted: revoking its Vault tokens and leases");
    }
}
