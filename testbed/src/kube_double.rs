//! A Kubernetes API server test double.
//!
//! Serves HTTPS on `127.0.0.1:<ephemeral>` with its own CA and behaves like a
//! kube-apiserver for what the provider and Vault use: TokenReview,
//! TokenRequest, Secrets (list and watch included), Pods (get, list, watch). Tokens are real ES256 JWTs
//! with the claims of bound service-account tokens, so Vault's `kubernetes`
//! auth method (via TokenReview) and `jwt` auth method (via the public key)
//! both validate them genuinely, and deleting a pod or service account
//! invalidates its tokens as on a cluster.
//!
//! Callers authenticate with `Authorization: Bearer <token>` (one of ours,
//! carrying the issuer audience) and are authorised by a grants table the
//! test controls. Error bodies are `Status` objects shaped like the real ones.
//!
//! Approximations, knowingly:
//! - Namespaces are implicit; ServiceAccounts have no endpoints of their own.
//! - No clock leeway on `exp`/`nbf` (the real server allows a minute), so short
//!   token TTLs can be tested without waiting.
//! - Server-side apply tracks ownership per leaf field (see `secrets`), not the
//!   full structured-merge-diff algorithm; strategic merge patch is treated as
//!   JSON merge patch; JSON patch is answered with 415.
//! - Watches exist for pods and Secrets; there is no history compaction (no
//!   410 Gone) and no bookmarks.
//! - Only the RBAC verbs and resources listed on [`KubeDouble::grant`]; no
//!   aggregated roles, groups or impersonation.
//! - HTTP/1.1 only.
//!
//! Where the real server differs from intuition the double follows the real
//! one: a TokenRequest below 600 s is 422 Invalid, TokenReview answers 201,
//! no-op writes keep the resourceVersion.

mod api;
mod crypto;
mod secrets;
mod state;
mod status;
mod tokens;

#[cfg(test)]
mod openbao_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::task::{JoinHandle, JoinSet};

use crypto::{rfc3339, unix_now, TokenSigner, UidSource};
use state::{EventKind, Grant, Pod, ServiceAccount, State};
use tokens::TokenClaims;

/// The issuer (and default API audience) of a kubeadm-style cluster.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// State shared by the server tasks and the control API.
struct Shared {
    state: Mutex<State>,
    signer: TokenSigner,
    uids: UidSource,
    issuer: String,
}

impl Shared {
    /// Locks the state; a panic elsewhere while holding it leaves data that is
    /// still consistent enough for a test double, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Extra pod attributes for [`KubeDouble::add_pod_with`].
#[derive(Clone, Debug, Default)]
pub struct PodOptions {
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.ownerReferences`, as JSON objects.
    pub owner_references: Vec<Value>,
}

/// A running API server double; dropping it stops the server and closes
/// its connections (including open watches).
pub struct KubeDouble {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    server: JoinHandle<()>,
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        // The accept task owns every connection task, so this ends them all.
        self.server.abort();
    }
}

impl KubeDouble {
    /// Starts a double with the [`DEFAULT_ISSUER`].
    pub async fn start() -> Result<KubeDouble> {
        Self::start_with_issuer(DEFAULT_ISSUER).await
    }

    /// Starts a double whose tokens carry `issuer` (also the API audience).
    pub async fn start_with_issuer(issuer: &str) -> Result<KubeDouble> {
        let rng = ring::rand::SystemRandom::new();
        let uids = UidSource::new(&rng)?;
        let signer = TokenSigner::generate(rng)?;
        let tls = crypto::tls_material()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the kube double listener")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                issuer_discovery: true,
                ..State::default()
            }),
            signer,
            uids,
            issuer: issuer.to_owned(),
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config);
        let server_shared = shared.clone();
        let server = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Usually fd exhaustion; back off instead of spinning.
                        tracing::warn!(error = %e, "kube double: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                while connections.try_join_next().is_some() {}
                let acceptor = acceptor.clone();
                let shared = server_shared.clone();
                connections.spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "kube double: TLS handshake failed");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |req| api::handle(shared.clone(), req));
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await
                    {
                        tracing::debug!(%peer, error = %e, "kube double: connection ended");
                    }
                });
            }
        });
        Ok(KubeDouble {
            shared,
            addr,
            ca_pem: tls.ca_pem,
            server,
        })
    }

    /// Base URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// SPKI PEM of the token signing key (Vault's `jwt_validation_pubkeys`).
    pub fn jwt_public_key_pem(&self) -> String {
        self.shared.signer.public_key_pem()
    }

    /// The `iss` of every token, also the API server's own audience.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// Creates a ServiceAccount (idempotent) and returns its uid.
    pub fn add_service_account(&self, ns: &str, name: &str) -> String {
        let mut st = self.shared.lock();
        ensure_service_account(&mut st, &self.shared.uids, ns, name)
    }

    /// Deletes a ServiceAccount: its tokens stop validating. Re-adding it
    /// gives a new uid, so old tokens stay invalid, as on a cluster.
    pub fn delete_service_account(&self, ns: &str, name: &str) {
        let mut st = self.shared.lock();
        if st.service_accounts.remove(&(ns.to_owned(), name.to_owned())).is_some() {
            st.bump();
        }
    }

    /// Creates (or recreates, with a new uid) a running pod; creates the
    /// service account if missing. Returns the pod uid.
    pub fn add_pod(&self, ns: &str, name: &str, service_account: &str, node: &str) -> String {
        self.add_pod_with(ns, name, service_account, node, PodOptions::default())
    }

    /// [`add_pod`](Self::add_pod) with labels and owner references.
    pub fn add_pod_with(&self, ns: &str, name: &str, service_account: &str, node: &str, options: PodOptions) -> String {
        let mut st = self.shared.lock();
        ensure_service_account(&mut st, &self.shared.uids, ns, service_account);
        let key = (ns.to_owned(), name.to_owned());
        if let Some(old) = st.pods.remove(&key) {
            let mut gone = old;
            gone.resource_version = st.bump();
            st.record(EventKind::Deleted, None, gone);
        }
        let pod = Pod {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            uid: self.shared.uids.next(),
            service_account: service_account.to_owned(),
            node: node.to_owned(),
            labels: options.labels,
            owner_references: options.owner_references,
            resource_version: st.bump(),
            created: rfc3339(unix_now()),
        };
        let uid = pod.uid.clone();
        st.pods.insert(key, pod.clone());
        st.record(EventKind::Added, None, pod);
        uid
    }

    /// Replaces a pod's labels (a MODIFIED watch event); false if no such pod.
    pub fn set_pod_labels(&self, ns: &str, name: &str, labels: &[(&str, &str)]) -> bool {
        let mut st = self.shared.lock();
        let key = (ns.to_owned(), name.to_owned());
        let Some(old) = st.pods.get(&key).cloned() else {
            return false;
        };
        let mut pod = old.clone();
        pod.labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        pod.resource_version = st.bump();
        st.pods.insert(key, pod.clone());
        st.record(EventKind::Modified, Some(old), pod);
        true
    }

    /// Deletes a pod: its bound tokens stop validating (a DELETED watch event).
    pub fn delete_pod(&self, ns: &str, name: &str) {
        let mut st = self.shared.lock();
        if let Some(mut pod) = st.pods.remove(&(ns.to_owned(), name.to_owned())) {
            pod.resource_version = st.bump();
            st.record(EventKind::Deleted, None, pod);
        }
    }

    /// A pod-bound token as kubelet would hand to the CSI driver. Empty
    /// `audiences` means the API server's default audience (the issuer). No
    /// minimum TTL applies here, so expiry can be tested quickly.
    pub fn pod_token(&self, ns: &str, pod: &str, audiences: &[&str], ttl: Duration) -> Result<String> {
        let (sa, sa_uid, pod_uid) = {
            let st = self.shared.lock();
            let p = st
                .pods
                .get(&(ns.to_owned(), pod.to_owned()))
                .ok_or_else(|| anyhow!("pod {ns}/{pod} does not exist"))?;
            let sa = st
                .service_accounts
                .get(&(ns.to_owned(), p.service_account.clone()))
                .ok_or_else(|| anyhow!("service account {ns}/{} does not exist", p.service_account))?;
            (p.service_account.clone(), sa.uid.clone(), p.uid.clone())
        };
        let audiences: Vec<String> = audiences.iter().map(|a| (*a).to_owned()).collect();
        let (token, _) = self.shared.mint(&TokenClaims {
            namespace: ns,
            sa_name: &sa,
            sa_uid: &sa_uid,
            pod: Some((pod, &pod_uid)),
            audiences: &audiences,
            ttl_seconds: ttl.as_secs(),
        })?;
        Ok(token)
    }

    /// A token for a service account without pod binding (the provider's or
    /// Vault's reviewer identity); creates the service account if missing.
    /// Empty `audiences` means the issuer, which API requests need.
    ///
    /// # Panics
    /// Only if ES256 signing fails, which ring does only when the OS RNG fails;
    /// `start` already depended on that RNG.
    pub fn service_account_token(&self, ns: &str, sa: &str, audiences: &[&str], ttl: Duration) -> String {
        let sa_uid = self.add_service_account(ns, sa);
        let audiences: Vec<String> = audiences.iter().map(|a| (*a).to_owned()).collect();
        let minted = self.shared.mint(&TokenClaims {
            namespace: ns,
            sa_name: sa,
            sa_uid: &sa_uid,
            pod: None,
            audiences: &audiences,
            ttl_seconds: ttl.as_secs(),
        });
        #[allow(clippy::expect_used)]
        minted.expect("ES256 signing fails only if the OS RNG fails").0
    }

    /// Grants `verb` on `resource` (`secrets`, `pods`, `serviceaccounts/token`,
    /// `tokenreviews`, or `*`) to a service account, in `namespace` (`None`:
    /// cluster-wide, like a ClusterRoleBinding) and optionally only on the
    /// object named `resource_name` (as in RBAC, a list or watch is on that
    /// object when its field selector requires `metadata.name=<that name>`).
    /// Verbs: get, list, watch, create, update, patch, delete, or `*`.
    pub fn grant(
        &self,
        sa_namespace: &str,
        sa_name: &str,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        resource_name: Option<&str>,
    ) {
        let g = Grant {
            sa_namespace: sa_namespace.to_owned(),
            sa_name: sa_name.to_owned(),
            verb: verb.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            resource_name: resource_name.map(str::to_owned),
        };
        let mut st = self.shared.lock();
        if !st.grants.contains(&g) {
            st.grants.push(g);
        }
    }

    /// Removes a grant made with exactly these arguments.
    pub fn revoke(
        &self,
        sa_namespace: &str,
        sa_name: &str,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        resource_name: Option<&str>,
    ) {
        let mut st = self.shared.lock();
        st.grants.retain(|g| {
            !(g.sa_namespace == sa_namespace
                && g.sa_name == sa_name
                && g.verb == verb
                && g.resource == resource
                && g.namespace.as_deref() == namespace
                && g.resource_name.as_deref() == resource_name)
        });
    }

    /// The stored Secret as a GET would return it.
    pub fn secret(&self, ns: &str, name: &str) -> Option<Value> {
        secrets::get(&self.shared.lock(), ns, name).ok()
    }

    /// Stores a Secret (`metadata.name` required; `data` base64, `stringData`
    /// merged) bypassing RBAC, preconditions and immutability, keeping the
    /// uid of an existing one.
    ///
    /// # Panics
    /// If `secret` is not a decodable Secret: a bug in the calling test.
    pub fn put_secret(&self, ns: &str, secret: Value) {
        let mut st = self.shared.lock();
        if let Err(s) = secrets::put_unchecked(&mut st, &self.shared.uids, unix_now(), ns, &secret) {
            drop(st);
            panic!("KubeDouble::put_secret: {}", s.message);
        }
    }

    /// Deletes a Secret bypassing RBAC.
    pub fn delete_secret(&self, ns: &str, name: &str) {
        secrets::remove(&mut self.shared.lock(), ns, name);
    }

    /// Every request seen, in order: (method, path-with-query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Writes a kubeconfig (server, certificate-authority-data, token) a
    /// client can load; its context's namespace is `default`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) -> std::io::Result<()> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "kube-double",
                "cluster": {
                    "server": self.url(),
                    "certificate-authority-data": STANDARD.encode(self.ca_pem.as_bytes()),
                },
            }],
            "users": [{"name": "kube-double", "user": {"token": token}}],
            "contexts": [{
                "name": "kube-double",
                "context": {"cluster": "kube-double", "user": "kube-double", "namespace": "default"},
            }],
            "current-context": "kube-double",
        });
        let yaml = serde_yaml_ng::to_string(&config).map_err(std::io::Error::other)?;
        std::fs::write(path, yaml)
    }

    /// Delays every response by `d` (zero to stop).
    pub fn set_delay(&self, d: Duration) {
        self.shared.lock().delay = d;
    }

    /// Every pod read so far (get, list, watch): its path (`...?list`,
    /// `...?watch` for collections) and whether only metadata was asked for.
    pub fn pod_reads(&self) -> Vec<(String, bool)> {
        self.shared.lock().pod_reads.clone()
    }

    /// Whether service accounts may read `/openid/v1/jwks` and
    /// `/.well-known/openid-configuration` (on by default, as Kubernetes
    /// binds `system:service-account-issuer-discovery` to every service account).
    pub fn set_issuer_discovery(&self, on: bool) {
        self.shared.lock().issuer_discovery = on;
    }

    /// While on, every request is answered 503 ServiceUnavailable.
    pub fn set_unavailable(&self, on: bool) {
        self.shared.lock().unavailable = on;
    }
}

fn ensure_service_account(st: &mut State, uids: &UidSource, ns: &str, name: &str) -> String {
    let key = (ns.to_owned(), name.to_owned());
    if let Some(sa) = st.service_accounts.get(&key) {
        return sa.uid.clone();
    }
    let uid = uids.next();
    st.service_accounts.insert(key, ServiceAccount { uid: uid.clone() });
    st.bump();
    uid
}
