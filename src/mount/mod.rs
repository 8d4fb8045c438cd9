//! How a mount works: parse the request, get the version key, log in to
//! Vault as the pod (reusing a cached token while it is valid), fetch every
//! distinct read once and concurrently, and turn responses into files with
//! modes and versions.
//!
//! This is the domain core: it knows nothing of gRPC (the server module
//! translates) and talks to Vault and Kubernetes only through their clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{self, StreamExt};
use serde_json::Value as Json;

use crate::bounded::BoundedMap;
use crate::budget::{Charge, MemoryBudget, MountBudget};
use crate::error::{Error, ErrorKind, Result};
use crate::kubernetes::classes::AuthoritativeClasses;
use crate::kubernetes::client::KubeClient;
use crate::kubernetes::identity::{IssuerKeys, Proof};
use crate::ledger::{Ledger, TokenKey};
use crate::metrics::Metrics;
use crate::render::{self, OutFile};
use crate::spc::Defaults;
use crate::spc::{self, MountSpec, ObjectSpec};
use crate::vault::ReadKey;
use crate::vault::{Call, VaultClient, VaultError, VaultPool, VaultToken};
use crate::versions::Versions;
use sync::Syncer;

pub mod sync;

/// Lifetime of a token we request ourselves (the incumbent's choice; the
/// TokenRequest minimum is 600 s).
const REQUESTED_TOKEN_SECONDS: u64 = 900;

/// Tunables of the mount logic.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Flag and environment defaults.
    pub defaults: Defaults,
    /// Concurrent Vault reads within one mount.
    pub fetch_concurrency: usize,
    /// This node's name: a pod that does not run here gets no token.
    pub node_name: Option<String>,
    /// Refuse mounts whose pod changes what its class says
    /// (`-spc-authoritative-class`).
    pub authoritative_classes: bool,
}

/// The raw fields of a Mount request.
#[derive(Clone, Default)]
pub struct MountInput {
    /// JSON attributes.
    pub attributes: String,
    /// JSON of the node-publish secret.
    pub secrets: String,
    /// Decimal default file mode.
    pub permission: String,
}

/// Lengths only: the attributes carry service-account tokens, the secrets a
/// Secret's data.
impl std::fmt::Debug for MountInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountInput")
            .field("attributes_len", &self.attributes.len())
            .field("secrets_len", &self.secrets.len())
            .field("permission", &self.permission)
            .finish()
    }
}

/// What a successful mount returns.
#[derive(Debug, Clone)]
pub struct MountOutput {
    /// Files, in SPC order.
    pub files: Vec<OutFile>,
    /// (object id, version) pairs, in SPC order.
    pub versions: Vec<(String, String)>,
}

/// The provider's mount logic and its caches.
pub struct Mounter {
    settings: Settings,
    kube: Option<KubeClient>,
    versions: Arc<Versions>,
    ledger: Arc<Ledger>,
    pool: Arc<VaultPool>,
    syncer: Syncer,
    metrics: Arc<Metrics>,
    memory: Arc<MemoryBudget>,
    /// The cluster's issuer keys, to prove a request's pod on a cache hit.
    issuer: IssuerKeys,
    /// Per pod uid: when it was last seen scheduled to this node.
    on_node: std::sync::Mutex<BoundedMap<String, Instant>>,
    /// The classes' parsed `objects`, so a republish does not parse them again.
    classes: Arc<spc::ClassCache>,
    /// Slots of the blocking pool for work a class chooses.
    tenant_cpu: Arc<tokio::sync::Semaphore>,
    /// With `-spc-authoritative-class`: the check against the class.
    authoritative: Option<AuthoritativeClasses>,
}

/// Work a class chooses — parsing a large request, rendering templates or
/// much data — runs on the blocking pool, at most this many at once, never
/// on the runtime thread every mount shares.
const TENANT_CPU_SLOTS: usize = 2;
/// Requests up to this size are parsed on the runtime thread (most are a
/// few KiB, and their `objects` are cached).
const INLINE_PARSE_BYTES: usize = 64 * 1024;
/// Mounts without templates holding up to this much are rendered on the
/// runtime thread.
const INLINE_RENDER_BYTES: usize = 256 * 1024;

/// How long a pod seen on this node is trusted to stay there.
const NODE_CHECK_TTL: Duration = Duration::from_secs(60);
/// Most pods whose place on this node is remembered (see [`BoundedMap`]).
const MAX_PODS_SEEN_ON_NODE: usize = 16_384;

impl Mounter {
    /// Builds the mount logic. Without a Kubernetes client, pods must carry
    /// their token in the volume context.
    pub fn new(
        settings: Settings,
        kube: Option<KubeClient>,
        versions: Arc<Versions>,
        ledger: Arc<Ledger>,
        pool: Arc<VaultPool>,
    ) -> Mounter {
        let syncer = Syncer::new(kube.clone());
        let issuer = IssuerKeys::new(kube.clone());
        let authoritative = kube
            .clone()
            .filter(|_| settings.authoritative_classes)
            .map(AuthoritativeClasses::new);
        Mounter {
            authoritative,
            issuer,
            on_node: std::sync::Mutex::new(BoundedMap::new(MAX_PODS_SEEN_ON_NODE)),
            classes: Default::default(),
            tenant_cpu: Arc::new(tokio::sync::Semaphore::new(TENANT_CPU_SLOTS)),
            settings,
            kube,
            versions,
            ledger,
            pool,
            syncer,
            metrics: Arc::new(Metrics::new()),
            memory: MemoryBudget::default_limits(),
        }
    }

    /// Bounds what each mount, and all mounts together, may hold in memory.
    pub fn with_memory_budget(mut self, memory: Arc<MemoryBudget>) -> Mounter {
        self.memory = memory;
        self
    }

    /// Records token reuse in `metrics` (the server records mounts there).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Mounter {
        self.metrics = metrics;
        self
    }

    /// Where this mount logic records what it does.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The version key store (for readiness).
    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// The credential ledger (tokens and leased responses per pod).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Performs one mount, giving up at `deadline`.
    pub async fn mount(&self, input: &MountInput, deadline: Instant) -> Result<MountOutput> {
        self.mount_with(input, deadline, &self.settings.defaults).await
    }

    /// Performs one mount with the defaults of the socket it came in on
    /// (each socket has its flavour's: audience, address, auth mount).
    pub async fn mount_with(&self, input: &MountInput, deadline: Instant, defaults: &Defaults) -> Result<MountOutput> {
        let spec = if input.attributes.len() + input.secrets.len() <= INLINE_PARSE_BYTES {
            spc::parse_mount_cached(
                &input.attributes,
                &input.secrets,
                &input.permission,
                defaults,
                &self.classes,
            )?
        } else {
            let (input, defaults, classes) = (input.clone(), defaults.clone(), self.classes.clone());
            self.off_thread(move || {
                spc::parse_mount_cached(
                    &input.attributes,
                    &input.secrets,
                    &input.permission,
                    &defaults,
                    &classes,
                )
            })
            .await?
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let what = format!(
            "mount for pod {}/{} timed out after {:?}",
            spec.pod.namespace, spec.pod.name, remaining
        );
        let work = async {
            if let Some(classes) = &self.authoritative {
                classes.check(&input.attributes, &spec.pod).await?;
            }
            self.mount_spec(&spec, deadline).await
        };
        match tokio::time::timeout(remaining, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("{what} (is Vault or the Kubernetes API slow?)"),
            )),
        }
    }

    async fn mount_spec(&self, spec: &MountSpec, deadline: Instant) -> Result<MountOutput> {
        // The key first: a Kubernetes outage then fails the mount before any
        // credential is minted, so the driver may safely retry it.
        let key = self.versions.key().await?;
        // Failover and backoff between Vault's addresses end in time to
        // report what each answered before the mount's deadline.
        let client = self
            .client(spec)
            .await?
            .until(deadline)
            .waiting_out_elections(spec.operator_vault);
        // Everything this mount holds is counted against it until it ends.
        let budget = self.memory.mount();
        let responses = self.fetch_all(spec, &client, &budget).await?;
        let templated = !spec.templates.is_empty()
            || spec
                .objects
                .iter()
                .any(|o| matches!(o.output, spc::Output::Template(_)));
        let (rendered, _budget) = if !templated && budget.used() <= INLINE_RENDER_BYTES {
            (
                render::render_all(&spec.objects, &spec.templates, &responses, &key, &budget)?,
                budget,
            )
        } else {
            let (objects, templates, key) = (spec.objects.clone(), spec.templates.clone(), key.clone());
            self.off_thread(move || {
                render::render_all(&objects, &templates, &responses, &key, &budget).map(|r| (r, budget))
            })
            .await?
        };
        self.syncer.sync(spec, &rendered.files, &key).await?;
        Ok(MountOutput {
            files: rendered.files,
            versions: rendered.versions,
        })
    }

    /// Runs `work` — CPU a class chooses — on the blocking pool, in one of
    /// [`TENANT_CPU_SLOTS`], so that it never stalls the runtime thread
    /// other mounts, the driver's connections and Vault's timers share.
    async fn off_thread<T: Send + 'static>(&self, work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        let slot = self
            .tenant_cpu
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "the provider is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Internal, format!("rendering failed: {e}")))?
    }

    async fn client(&self, spec: &MountSpec) -> Result<VaultClient> {
        self.pool.connect(&spec.vault).await.map_err(|e| {
            Error::because(
                ErrorKind::InvalidRequest,
                format!("Vault connection to {}", spec.vault.addresses),
                e,
            )
        })
    }

    /// Reads every distinct request once, reusing leased responses the
    /// ledger still holds for this pod. A 403 with a cached token earns one
    /// fresh login and one more try only if Vault says the token is gone
    /// (`lookup-self`): otherwise it is the policy's answer for that path.
    async fn fetch_all(
        &self,
        spec: &MountSpec,
        client: &VaultClient,
        budget: &MountBudget,
    ) -> Result<HashMap<ReadKey, Json>> {
        let mut reads: BTreeMap<&ReadKey, &ObjectSpec> = BTreeMap::new();
        for o in &spec.objects {
            reads.entry(&o.read).or_insert(o);
        }
        let key = token_key(spec);
        let (token, cached) = self.token(spec, &key, client).await?;
        let (mut out, missing) = self.held(&key, reads.keys().copied(), budget)?;
        let mut results = self.fetch(client, &token, missing, budget).await;
        if let Some(e) = unprocessed_everywhere(spec, &reads, &mut results) {
            return Err(e);
        }

        let denied: Vec<ReadKey> = results
            .iter()
            .filter(|(_, r)| matches!(r, Err(e) if e.status() == Some(403)))
            .map(|(k, _)| k.clone())
            .collect();
        // A 403 is usually the role's policy answering for that path: the
        // token stays (forgetting it would log in again and re-issue every
        // credential the pod holds, on every mount). Only when Vault says
        // the token itself is gone is it replaced by a fresh login.
        if cached && !denied.is_empty() && matches!(client.token_alive(&token.token).await, Ok(false)) {
            tracing::info!(pod = %spec.pod.name, namespace = %spec.pod.namespace, "the held Vault token was revoked or expired in Vault; logging in again");
            self.ledger.forget_dead_token(&key, &token.token);
            let (fresh, _) = self.token(spec, &key, client).await?;
            // Held leases died with the refused token (certificates did not):
            // fetch everything the ledger no longer holds.
            let missing;
            (out, missing) = self.held(&key, reads.keys().copied(), budget)?;
            results = self.fetch(client, &fresh, missing, budget).await;
            if let Some(e) = unprocessed_everywhere(spec, &reads, &mut results) {
                return Err(e);
            }
        }

        for (read, object) in reads {
            if out.contains_key(read) {
                continue;
            }
            match results.remove(read) {
                Some(Ok(json)) => {
                    self.ledger.store_response(&key, read, &json);
                    out.insert(read.clone(), json);
                }
                Some(Err(e)) => return Err(read_error(spec, object, e)),
                None => {
                    return Err(Error::new(
                        ErrorKind::Internal,
                        format!("read {read} was not performed"),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Splits `reads` into the responses the ledger holds for the pod and
    /// the reads to perform.
    fn held<'a>(
        &self,
        key: &TokenKey,
        reads: impl Iterator<Item = &'a ReadKey>,
        budget: &MountBudget,
    ) -> Result<(HashMap<ReadKey, Json>, Vec<ReadKey>)> {
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for read in reads {
            match self.ledger.reusable(key, read) {
                Some(held) => {
                    budget
                        .charge(crate::budget::json_footprint(&held))
                        .map_err(Error::from)?;
                    out.insert(read.clone(), held);
                }
                None => missing.push(read.clone()),
            }
        }
        if !out.is_empty() {
            tracing::debug!(reused = out.len(), "returning held credentials");
        }
        Ok((out, missing))
    }

    async fn fetch(
        &self,
        client: &VaultClient,
        token: &VaultToken,
        reads: Vec<ReadKey>,
        budget: &MountBudget,
    ) -> HashMap<ReadKey, std::result::Result<Json, VaultError>> {
        stream::iter(reads)
            .map(|read| async move {
                let result = client.read_within(&token.token, &read, budget).await;
                (read, result)
            })
            .buffer_unordered(self.settings.fetch_concurrency.max(1))
            .collect()
            .await
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
}

impl Mounter {
    /// Refuses a pod that is not scheduled to this node (when the node's
    /// name is known): the driver on this node mounts only for pods here, so
    /// a request naming another node's pod did not come from its kubelet.
    async fn check_on_node(&self, spec: &MountSpec) -> Result<()> {
        let (Some(node), Some(kube)) = (self.settings.node_name.as_deref(), &self.kube) else {
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

fn with_hint(error: Error, hint: Option<String>) -> Error {
    match hint {
        Some(hint) => error.hint(hint),
        None => error,
    }
}

/// When every read failed without Vault processing any of them (no address
/// reachable, every node sealed or electing), nothing was minted, so the
/// mount fails as UNAVAILABLE and the driver may retry it at once.
fn unprocessed_everywhere(
    spec: &MountSpec,
    reads: &BTreeMap<&ReadKey, &ObjectSpec>,
    results: &mut HashMap<ReadKey, std::result::Result<Json, VaultError>>,
) -> Option<Error> {
    if results.is_empty() || !results.values().all(|r| matches!(r, Err(e) if e.unprocessed())) {
        return None;
    }
    let (read, object) = reads.iter().find(|(r, _)| results.contains_key(**r))?;
    let e = results.remove(*read)?.err()?;
    Some(read_error(spec, object, e).into_kind(ErrorKind::VaultUnavailable))
}

fn read_error(spec: &MountSpec, object: &ObjectSpec, e: VaultError) -> Error {
    let mut read = object.read.to_string();
    if read.len() > 256 {
        // Quoted, so that `error::readable` shortens it in the message.
        read = format!("{read:?}");
    }
    let what = format!("object {:?}: {read} at {}", object.name, spec.vault.addresses);
    let hint = match e.status() {
        Some(403) => Some(format!("The policies of role {:?} do not allow this path", spec.role)),
        Some(404) => Some("Check secretPath (KV v2 reads go through <mount>/data/<path>)".to_string()),
        _ => None,
    };
    with_hint(e.classify(Call::Read, format!("{what} failed")), hint)
}
