//! The pod's Vault token: one capability with one entry point,
//! [`PodTokens::get`], so that a mount reads as "token, reads, render".
//!
//! Behind it: the proof that a request comes from the pod it names (the
//! issuer's signature, a JWT Vault reviewed before, or a proof login), the
//! ledger's held token for the whole token key, the pod's JWT (kubelet's,
//! else one requested through the TokenRequest API for a pod on this node),
//! the login, and recording what Vault reviewed. [`PodTokens::replace_if_dead`]
//! is the one way a held token is given up during a mount: only when Vault
//! says it is gone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::with_hint;
use crate::bounded::BoundedMap;
use crate::error::{Error, ErrorKind, Result};
use crate::kubernetes::client::KubeClient;
use crate::kubernetes::identity::{IssuerKeys, Proof};
use crate::ledger::{Ledger, TokenKey};
use crate::metrics::Metrics;
use crate::spc::{self, MountSpec};
use crate::vault::{Call, VaultClient, VaultError, VaultToken};

/// Lifetime of a token we request ourselves (the incumbent's choice; the
/// TokenRequest minimum is 600 s).
const REQUESTED_TOKEN_SECONDS: u64 = 900;
/// How long a pod seen on this node is trusted to stay there.
const NODE_CHECK_TTL: Duration = Duration::from_secs(60);
/// Most pods whose place on this node is remembered (see [`BoundedMap`]).
const MAX_PODS_SEEN_ON_NODE: usize = 16_384;

/// Where pods' Vault tokens come from (see the module's documentation).
pub(super) struct PodTokens {
    kube: Option<KubeClient>,
    ledger: Arc<Ledger>,
    /// The cluster's issuer keys, to prove a request's pod on a cache hit.
    issuer: IssuerKeys,
    pub(super) metrics: Arc<Metrics>,
    /// This node's name: a pod that does not run here gets no token.
    node_name: Option<String>,
    /// Per pod uid: when it was last seen scheduled to this node.
    on_node: Mutex<BoundedMap<String, Instant>>,
}

/// The token a mount uses, the ledger key it is held under, and whether it
/// was held before this mount (then a refusal may mean it is gone).
pub(super) struct PodToken {
    pub(super) key: TokenKey,
    pub(super) token: VaultToken,
    held: bool,
}

impl PodTokens {
    /// Tokens for pods, held in `ledger`; without `kube`, pods must carry
    /// their JWT in the volume context.
    pub(super) fn new(kube: Option<KubeClient>, ledger: Arc<Ledger>, node_name: Option<String>) -> PodTokens {
        PodTokens {
            issuer: IssuerKeys::new(kube.clone()),
            kube,
            ledger,
            metrics: Arc::new(Metrics::new()),
            node_name,
            on_node: Mutex::new(BoundedMap::new(MAX_PODS_SEEN_ON_NODE)),
        }
    }

    /// The pod's Vault token for `spec`: see [`PodTokens::token`].
    pub(super) async fn get(&self, spec: &MountSpec, client: &VaultClient) -> Result<PodToken> {
        let key = token_key(spec);
        let (token, held) = self.token(spec, &key, client).await?;
        Ok(PodToken { key, token, held })
    }

    /// After Vault refused reads made with `current`: a 403 is usually the
    /// role's policy answering for that path, and the token stays
    /// (forgetting it would log in again and re-issue every credential the
    /// pod holds, on every mount). Only a held token Vault says is gone
    /// (`lookup-self`) is forgotten and replaced by a fresh login.
    pub(super) async fn replace_if_dead(
        &self,
        spec: &MountSpec,
        client: &VaultClient,
        current: &PodToken,
    ) -> Result<Option<PodToken>> {
        if !current.held || !matches!(client.token_alive(&current.token.token).await, Ok(false)) {
            return Ok(None);
        }
        tracing::info!(pod = %spec.pod.name, namespace = %spec.pod.namespace, "the held Vault token was revoked or expired in Vault; logging in again");
        self.ledger.forget_dead_token(&current.key, &current.token.token);
        self.get(spec, client).await.map(Some)
    }

    /// A valid Vault token for the pod: held by the ledger, or from a fresh
    /// login. A held token goes only to a request that proves its pod (see
    /// [`crate::kubernetes::identity`]): by the issuer's signature, by carrying a JWT
    /// Vault reviewed before, or — for any other JWT when the signature
    /// cannot be checked — by a proof login. That login's token is revoked
    /// at once and the held token kept: in Vault a lease belongs to the token
    /// that created it, so replacing the token would re-issue every
    /// credential the pod holds.
    async fn token(&self, spec: &MountSpec, key: &TokenKey, client: &VaultClient) -> Result<(VaultToken, bool)> {
        let audience = spec.token_audience();
        let proof = match &spec.provided_token {
            Some(t) => Some(self.issuer.prove(&t.token, &spec.pod, audience).await.map_err(|e| {
                Error::new(
                    ErrorKind::NotThisPod,
                    format!("mount for pod {}/{} refused: {e}", spec.pod.namespace, spec.pod.name),
                )
            })?),
            None => None,
        };
        if let Some(held) = self.ledger.token(key) {
            match (&proof, &spec.provided_token) {
                (Some(Proof::ClaimsOnly(why)), Some(jwt)) if !self.ledger.was_reviewed(key, &jwt.token) => {
                    tracing::debug!(pod = %spec.pod.name, namespace = %spec.pod.namespace, reason = %why, "a new service-account token that cannot be verified here: proving it by a login, keeping the held Vault token");
                    self.prove_by_login(spec, key, client, jwt).await?;
                }
                (Some(_), _) => {}
                // The provider mints this pod's tokens itself: the pod must
                // at least run on this node.
                (None, _) => self.check_on_node(spec).await?,
            }
            self.metrics.token_cache_hit();
            return Ok((held, true));
        }
        self.metrics.token_cache_miss();
        let jwt = self.service_account_token(spec).await?;
        let token = client
            .login(&spec.auth_mount, &spec.role, &jwt)
            .await
            .map_err(|e| login_error(spec, e))?;
        if let Some(provided) = &spec.provided_token {
            self.record_review(key, provided);
        }
        tracing::debug!(pod = %spec.pod.name, namespace = %spec.pod.namespace, accessor = %token.accessor, "logged in to Vault");
        self.ledger.store_token(key, token.clone());
        Ok((token, false))
    }

    /// Has Vault review `jwt` by a login and queues that login's token for
    /// revocation (the ledger's next tick, within a second; kept in the
    /// state file until done). A refused login fails the mount as any
    /// login would.
    async fn prove_by_login(
        &self,
        spec: &MountSpec,
        key: &TokenKey,
        client: &VaultClient,
        jwt: &spc::ProvidedToken,
    ) -> Result<()> {
        let proof = client
            .login(&spec.auth_mount, &spec.role, &jwt.token)
            .await
            .map_err(|e| login_error(spec, e))?;
        self.metrics.token_proof_login();
        self.ledger.retire_token_now(key, &proof.token);
        self.record_review(key, jwt);
        tracing::debug!(pod = %spec.pod.name, namespace = %spec.pod.namespace, accessor = %proof.accessor, "Vault accepted the pod's new service-account token; its login token is being revoked");
        Ok(())
    }

    /// Remembers that Vault accepted the kubelet token `jwt` for `key`.
    fn record_review(&self, key: &TokenKey, jwt: &spc::ProvidedToken) {
        let expires = jwt
            .expires
            .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(REQUESTED_TOKEN_SECONDS));
        self.ledger.record_review(key, &jwt.token, expires);
    }

    /// The pod's JWT: from kubelet's `serviceAccount.tokens`, else minted
    /// through the TokenRequest API, bound to the pod.
    async fn service_account_token(&self, spec: &MountSpec) -> Result<String> {
        if let Some(t) = &spec.provided_token {
            if t.expires.is_some_and(|e| e <= SystemTime::now()) {
                tracing::warn!(pod = %spec.pod.name, namespace = %spec.pod.namespace, "the service-account token from kubelet has expired; Vault will refuse it");
            }
            return Ok(t.token.clone());
        }
        let pod = &spec.pod;
        let Some(kube) = &self.kube else {
            return Err(Error::new(ErrorKind::InvalidRequest, format!(
                "no service-account token for audience {:?} in the volume context of pod {}/{}, and no Kubernetes API access to request one: add tokenRequests: [{{audience: {}}}] to the CSIDriver object",
                spec.token_audience(),
                pod.namespace,
                pod.name,
                spec.token_audience()
            )));
        };
        if pod.name.is_empty() || pod.uid.is_empty() {
            return Err(Error::new(ErrorKind::InvalidRequest,
                "pod name and uid are missing from the volume context: set podInfoOnMount: true on the CSIDriver object",
            ));
        }
        self.check_on_node(spec).await?;
        let audiences: Vec<String> = spec.audience.iter().cloned().collect();
        let issued = kube
            .create_token(&pod.namespace, &pod.service_account, &audiences, REQUESTED_TOKEN_SECONDS, &pod.name, &pod.uid)
            .await
            .map_err(|e| {
                let what = format!(
                    "requesting a token for service account {}/{} (pod {}) from the Kubernetes API",
                    pod.namespace, pod.service_account, pod.name
                );
                e.classify(
                    &what,
                    &format!(
                        "Grant the provider create on serviceaccounts/token, or add tokenRequests: [{{audience: {}}}] to the CSIDriver so kubelet passes the token",
                        spec.token_audience()
                    ),
                )
            })?;
        Ok(issued.token)
    }

    /// Refuses a pod that is not scheduled to this node (when the node's
    /// name is known): the driver on this node mounts only for pods here, so
    /// a request naming another node's pod did not come from its kubelet.
    async fn check_on_node(&self, spec: &MountSpec) -> Result<()> {
        let (Some(node), Some(kube)) = (self.node_name.as_deref(), &self.kube) else {
            return Ok(());
        };
        let pod = &spec.pod;
        {
            let seen = self.on_node.lock().unwrap_or_else(|p| p.into_inner());
            if seen.get(&pod.uid).is_some_and(|at| at.elapsed() < NODE_CHECK_TTL) {
                return Ok(());
            }
        }
        let here = kube
            .pod_on_node(&pod.namespace, &pod.name, &pod.uid, node)
            .await
            .map_err(|e| {
                let what = format!(
                    "checking that pod {}/{} runs on node {node} before using its identity",
                    pod.namespace, pod.name
                );
                let e = e.classify(
                    &what,
                    "Grant the provider list on pods (deploy/components/token-request)",
                );
                // The pod was named by the request: no such pod, no token.
                match e.kind() {
                    ErrorKind::NotFound => e.into_kind(ErrorKind::NotThisPod),
                    _ => e,
                }
            })?;
        if !here {
            return Err(Error::new(
                ErrorKind::NotThisPod,
                format!(
                    "pod {}/{} (uid {}) does not run on node {node}: this provider serves only its own node's pods",
                    pod.namespace, pod.name, pod.uid
                ),
            ));
        }
        let mut seen = self.on_node.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(pod.uid.clone(), Instant::now());
        Ok(())
    }
}

fn token_key(spec: &MountSpec) -> TokenKey {
    TokenKey {
        pod: spec.pod.clone(),
        role: spec.role.clone(),
        auth_mount: spec.auth_mount.clone(),
        audience: spec.audience.clone(),
        flavor: spec.flavor,
        vault: spec.vault.clone(),
    }
}

fn login_error(spec: &MountSpec, e: VaultError) -> Error {
    let who = format!(
        "login to {} at {} (auth mount {:?}, role {:?}) as service account {}/{}{}",
        spec.flavor.product(),
        spec.vault.addresses,
        spec.auth_mount,
        spec.role,
        spec.pod.namespace,
        spec.pod.service_account,
        spec.vault
            .namespace
            .as_deref()
            .map(|n| format!(", Vault namespace {n:?}"))
            .unwrap_or_default()
    );
    let lower = e.to_string().to_ascii_lowercase();
    let hint = match e.status() {
        // Vault and OpenBao also answer an unauthenticated request to a path
        // where nothing is mounted with 403, so the mount is a suspect too.
        Some(403) => Some(format!(
            "Check that an auth method is mounted at auth/{}, that the role binds this service account and namespace (bound_service_account_names/_namespaces), that the token's audience matches the role's, and that Vault can call the TokenReview API",
            spec.auth_mount
        )),
        Some(400) if lower.contains("role") => Some(format!(
            "Does role {:?} exist at auth/{}/role?",
            spec.role, spec.auth_mount
        )),
        Some(404) if lower.contains("namespace") && spec.vault.namespace.is_some() => {
            Some("Does the Vault namespace exist (vaultNamespace, -vault-namespace)?".to_string())
        }
        Some(404) => Some(format!("Is an auth method mounted at auth/{}?", spec.auth_mount)),
        None if !e.unprocessed() && e.transient() => Some(
            "Vault may have issued a token that never arrived; it expires with the role's token_ttl".to_string(),
        ),
        _ => None,
    };
    with_hint(e.classify(Call::Login, format!("{who} failed")), hint)
}
