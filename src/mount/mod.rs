//! How a mount works, step by step: parse the request, get the version key,
//! get the pod's Vault token (`mount::token`, one entry point: held and
//! proven, or a fresh login), fetch every distinct read once and
//! concurrently (reusing held leases), turn responses into files with modes
//! and versions, and sync Kubernetes Secrets (`mount::sync`).
//!
//! This is the domain core: it knows nothing of gRPC (the server module
//! translates) and talks to Vault and Kubernetes only through their clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use futures_util::stream::{self, StreamExt};
use serde_json::Value as Json;

use crate::budget::{Charge, MemoryBudget, MountBudget};
use crate::error::{Error, ErrorKind, Result};
use crate::kubernetes::classes::AuthoritativeClasses;
use crate::kubernetes::client::KubeClient;
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
mod token;

use token::PodTokens;

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
    versions: Arc<Versions>,
    ledger: Arc<Ledger>,
    pool: Arc<VaultPool>,
    syncer: Syncer,
    memory: Arc<MemoryBudget>,
    /// The pod's Vault token: one home, one entry point.
    tokens: PodTokens,
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
        let tokens = PodTokens::new(kube.clone(), ledger.clone(), settings.node_name.clone());
        let authoritative = kube
            .clone()
            .filter(|_| settings.authoritative_classes)
            .map(AuthoritativeClasses::new);
        Mounter {
            authoritative,
            tokens,
            classes: Default::default(),
            tenant_cpu: Arc::new(tokio::sync::Semaphore::new(TENANT_CPU_SLOTS)),
            settings,
            versions,
            ledger,
            pool,
            syncer,
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
        self.tokens.metrics = metrics;
        self
    }

    /// Where this mount logic records what it does.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.tokens.metrics
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
        let budget = self.memory.for_mount();
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

    /// The pod's token, then every distinct read once, reusing leased
    /// responses the ledger still holds for this pod. A 403 with a held
    /// token earns one fresh login and one more try only if Vault says the
    /// token is gone ([`PodTokens::replace_if_dead`]): otherwise it is the
    /// policy's answer for that path.
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
        let token = self.tokens.get(spec, client).await?;
        let (mut out, missing) = self.held(&token.key, reads.keys().copied(), budget)?;
        let mut results = self.fetch(client, &token.token, missing, budget).await;
        if let Some(e) = unprocessed_everywhere(spec, &reads, &mut results) {
            return Err(e);
        }
        let denied = results.values().any(|r| matches!(r, Err(e) if e.status() == Some(403)));
        if denied {
            if let Some(fresh) = self.tokens.replace_if_dead(spec, client, &token).await? {
                // Held leases died with the refused token (certificates did
                // not): fetch everything the ledger no longer holds.
                let missing;
                (out, missing) = self.held(&fresh.key, reads.keys().copied(), budget)?;
                results = self.fetch(client, &fresh.token, missing, budget).await;
                if let Some(e) = unprocessed_everywhere(spec, &reads, &mut results) {
                    return Err(e);
                }
            }
        }
        for (read, object) in reads {
            if out.contains_key(read) {
                continue;
            }
            match results.remove(read) {
                Some(Ok(json)) => {
                    self.ledger.store_response(&token.key, read, &json);
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
}

pub(super) fn with_hint(error: Error, hint: Option<String>) -> Error {
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
