//! The provider's one wiring place: the typed configuration `main` builds
//! from flags and environment, the mount logic built from it (shared with
//! the `mount` subcommand), and [`run`], which serves until its shutdown
//! future resolves: [`start`] builds and starts everything, the
//! [`Running`] provider serves, then shuts down by one path. Background
//! work — the ledger's rounds, the pod and key watches, the Vault probe and
//! cluster watches, the health port — is one [`Tasks`] set.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::MemoryBudget;
use crate::config::{ConfigError, Env, Flags, Socket};
use crate::flavor::Flavor;
use crate::kubernetes::client::KubeClient;
use crate::ledger::podwatch;
use crate::ledger::{Ledger, LedgerSettings, SystemClock};
use crate::logging::LogControl;
use crate::metrics::Metrics;
use crate::mount::{Mounter, Settings};
use crate::server::{self, health, ProviderService};
use crate::spc::Defaults;
use crate::tasks::Tasks;
use crate::vault::VaultPool;
use crate::versions::Versions;

/// Least time between two rounds of the ledger's background work: a job
/// that failed for now is tried again after it, and the state file is
/// written at most this often.
const LEDGER_ROUND: Duration = Duration::from_millis(250);
/// Most time the ledger sleeps with nothing due (what a clock jump or a
/// missed wake-up can delay at worst).
const LEDGER_IDLE: Duration = Duration::from_secs(60);
/// While the version key is missing at start-up, how often it is asked for.
const KEY_RETRY: Duration = Duration::from_secs(1);
/// How often the object-version key Secret is re-checked.
const KEY_REFRESH: Duration = Duration::from_secs(60);
/// How often the default Vault's health is probed for `vault_up`.
const VAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// How long shutdown waits for the background tasks to be dropped.
const TASKS_GRACE: Duration = Duration::from_secs(5);
/// How long start-up waits for the object-version key before serving.
const KEY_WAIT: Duration = Duration::from_secs(10);

/// Why the provider could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Kubernetes API configuration cannot be loaded.
    #[error("Kubernetes API configuration: {0}")]
    Kube(#[source] crate::kubernetes::client::ConfigError),
    /// A socket or port could not be bound.
    #[error("binding {what}: {source}")]
    Bind {
        /// What was bound.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The gRPC server failed while serving.
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What the mount logic is built from: the provider's and the `mount`
/// subcommand's alike.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Mount tunables and the primary socket's defaults.
    pub settings: Settings,
    /// The credential ledger.
    pub ledger: LedgerSettings,
    /// One HTTP request to Vault.
    pub request_timeout: Duration,
    /// `-retry-budget`.
    pub retry_window: Duration,
    /// `-max-mount-bytes`.
    pub max_mount_bytes: usize,
    /// `-max-inflight-bytes`.
    pub max_inflight_bytes: usize,
}

/// The mount logic and the parts background work shares with it.
pub struct Core {
    /// How a mount works.
    pub mounter: Arc<Mounter>,
    /// Per-pod tokens and leased responses.
    pub ledger: Arc<Ledger>,
    /// Vault clients.
    pub pool: Arc<VaultPool>,
    /// The object-version key.
    pub versions: Arc<Versions>,
    /// What Prometheus scrapes.
    pub metrics: Arc<Metrics>,
}

impl Core {
    /// Builds the mount logic over `kube` (if any) and `versions`.
    /// Vault clients start their cluster watches in `tasks`.
    pub fn build(config: CoreConfig, kube: Option<KubeClient>, versions: Arc<Versions>, tasks: Tasks) -> Core {
        let metrics = Arc::new(Metrics::new());
        let ledger = Arc::new(Ledger::new(config.ledger, Arc::new(SystemClock)).with_metrics(metrics.clone()));
        let pool = Arc::new(
            VaultPool::new(config.request_timeout)
                .with_retry_window(config.retry_window)
                .with_metrics(metrics.clone())
                .with_tasks(tasks),
        );
        let memory = MemoryBudget::new(
            config.max_mount_bytes,
            config.max_inflight_bytes.max(config.max_mount_bytes),
        );
        let mounter = Mounter::new(config.settings, kube, versions.clone(), ledger.clone(), pool.clone())
            .with_metrics(metrics.clone())
            .with_memory_budget(memory);
        Core {
            mounter: Arc::new(mounter),
            ledger,
            pool,
            versions,
            metrics,
        }
    }
}

/// Everything the serving provider needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The sockets to serve, each with its flavour's defaults.
    pub sockets: Vec<(Socket, Arc<Defaults>)>,
    /// The mount logic.
    pub core: CoreConfig,
    /// `-kubeconfig` (else in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Where the object-version key Secret lives (`None`: the provider's namespace).
    pub hmac_secret_namespace: Option<String>,
    /// Its name.
    pub hmac_secret_name: String,
    /// Bound for a mount whose caller sends no deadline.
    pub mount_timeout: Duration,
    /// Mounts running at once.
    pub max_concurrent_mounts: usize,
    /// Of those, at most this many of one namespace.
    pub max_concurrent_mounts_per_namespace: usize,
    /// How long in-flight mounts may finish after the shutdown future resolves.
    pub shutdown_grace: Duration,
    /// The health port, if served.
    pub health_addr: Option<SocketAddr>,
    /// Accept `PUT /log-level` from the network.
    pub health_remote_log_level: bool,
    /// Watch this node's pods and revoke deleted pods' credentials.
    pub revoke_on_pod_delete: bool,
    /// Things worth a warning at start-up that do not stop it.
    pub warnings: Vec<String>,
}

impl ProviderConfig {
    /// Checks flags and environment together; an error is a configuration
    /// that cannot work (exit code 64).
    pub fn from_flags(flags: &Flags, env: &Env) -> Result<ProviderConfig, ConfigError> {
        let sockets = flags.sockets()?;
        let served: Vec<Flavor> = sockets.iter().map(|s| s.flavor).collect();
        flags.check_flavor_flags(&served)?;
        let mut with_defaults = Vec::new();
        for socket in sockets {
            let defaults = flags.defaults_for(socket.flavor, env)?;
            with_defaults.push((socket, Arc::new(defaults)));
        }
        let primary = with_defaults
            .first()
            .map(|(_, d)| d.as_ref().clone())
            .ok_or(ConfigError::NoSocket)?;
        let mut warnings = Vec::new();
        if let (Some(named), Some(implied)) = (flags.flavor, Flavor::from_socket(&flags.endpoint())) {
            if named != implied {
                warnings.push(format!(
                    "-flavor={named} on a socket named for provider: {implied}: the driver sends provider: {implied} classes to {}, and they get {} defaults",
                    flags.endpoint().display(),
                    named.product()
                ));
            }
        }
        // Said once at start: what the operator left open to classes.
        let open = primary.policy.open_switches();
        if !open.is_empty() {
            warnings.push(format!(
                "the tenant policy is open: a SecretProviderClass may name {}; pin what your tenants may not choose (docs/install.md, \"Tenant policy\")",
                open.join(", ")
            ));
        }
        let node_name = flags.node_name.clone().filter(|n| !n.is_empty());
        let health_addr = match flags.health_addr.as_str() {
            "" => None,
            addr => Some(health::parse_addr(addr).map_err(ConfigError::Invalid)?),
        };
        Ok(ProviderConfig {
            sockets: with_defaults,
            core: CoreConfig {
                settings: Settings {
                    defaults: primary,
                    fetch_concurrency: usize::from(flags.fetch_concurrency),
                    node_name: node_name.clone(),
                    authoritative_classes: flags.spc_authoritative_class,
                },
                ledger: LedgerSettings {
                    reuse: flags.lease_reuse,
                    threshold: flags.renew_threshold,
                    grace: flags.rotation_grace,
                    capacity: usize::try_from(flags.cache_size).unwrap_or(0),
                    state_file: flags.state_path(),
                    node: node_name,
                    max_held_bytes: flags.max_held_bytes,
                },
                request_timeout: flags.request_timeout,
                retry_window: flags.retry_budget,
                max_mount_bytes: flags.max_mount_bytes,
                max_inflight_bytes: flags.max_inflight_bytes,
            },
            kubeconfig: flags.kubeconfig.clone(),
            hmac_secret_namespace: flags.hmac_secret_namespace.clone(),
            hmac_secret_name: flags.hmac_secret_name(),
            mount_timeout: flags.mount_timeout,
            max_concurrent_mounts: usize::from(flags.max_concurrent_mounts),
            max_concurrent_mounts_per_namespace: match flags.max_concurrent_mounts_per_namespace {
                0 => (usize::from(flags.max_concurrent_mounts) / 2).max(1),
                n => usize::from(n),
            },
            shutdown_grace: flags.shutdown_grace,
            health_addr,
            health_remote_log_level: flags.health_remote_log_level,
            revoke_on_pod_delete: flags.revoke_on_pod_delete,
            warnings,
        })
    }
}

/// Serves every socket of `config` until `shutdown` resolves, then drains
/// in-flight mounts for at most the shutdown grace, stops the background
/// tasks, persists the ledger and removes the sockets.
pub async fn run(
    config: ProviderConfig,
    logs: Arc<dyn LogControl>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let mut running = start(config, logs).await?;
    let result = running.serve(shutdown).await;
    running.shutdown().await;
    result
}

/// A started provider: its background tasks running, its sockets bound,
/// not yet answering on them ([`Running::serve`]).
pub struct Running {
    config: ProviderConfig,
    core: Core,
    tasks: Tasks,
    health: Arc<health::Health>,
    listeners: Vec<(tokio::net::UnixListener, ProviderService)>,
}

/// Starts everything `config` asks for, in one place: the Kubernetes
/// client and the version key, the mount logic, and every long-running task
/// ([`Tasks`]), then binds the sockets.
pub async fn start(config: ProviderConfig, logs: Arc<dyn LogControl>) -> Result<Running, RunError> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let kube = KubeClient::load(config.kubeconfig.as_deref(), config.core.request_timeout)
        .await
        .map_err(RunError::Kube)?;
    let key_namespace = config
        .hmac_secret_namespace
        .clone()
        .unwrap_or_else(|| kube.namespace().to_string());
    let versions = Arc::new(Versions::from_secret(
        kube.clone(),
        key_namespace,
        config.hmac_secret_name.clone(),
        KEY_REFRESH,
    ));
    let tasks = Tasks::new();
    let core = Core::build(config.core.clone(), Some(kube.clone()), versions.clone(), tasks.clone());
    start_vault_probe(&config, &core, &tasks);
    let health = start_health(&config, &core, logs, &tasks)?;
    // The key decrypts the ledger's state file, so a restart resumes its
    // credentials before the first mount. If Kubernetes is slow, serve
    // anyway: the ledger task loads the key and restores the ledger.
    let restored = restore_ledger(&core).await;
    tasks.spawn(
        "ledger",
        ledger_rounds(versions.clone(), core.ledger.clone(), core.pool.clone(), restored),
    );
    // Recreates a deleted key Secret at once; mounts then ask Kubernetes nothing.
    tasks.spawn("key watch", versions.clone().watch());
    match (config.core.settings.node_name.clone(), config.revoke_on_pod_delete) {
        (Some(node), true) => tasks.spawn("pod watch", podwatch::run(kube, node, core.ledger.clone())),
        (None, true) => tracing::warn!(
            "NODE_NAME is not set: credentials of deleted pods will not be revoked early (set it from the downward API, spec.nodeName)"
        ),
        (_, false) => tracing::info!("revocation on pod deletion is off"),
    }
    let listeners = bind_sockets(&config, &core)?;
    Ok(Running {
        config,
        core,
        tasks,
        health,
        listeners,
    })
}

/// Probes the default Vault for `vault_up`, and keeps per-address series
/// for the operator's own addresses of every socket.
fn start_vault_probe(config: &ProviderConfig, core: &Core, tasks: &Tasks) {
    let probed = &config.core.settings.defaults.vault;
    for (_, defaults) in &config.sockets {
        core.metrics
            .watch_addresses(defaults.vault.addresses.iter().map(ToString::to_string));
    }
    core.metrics
        .watch_addresses(probed.addresses.iter().map(ToString::to_string));
    // The mounts' own client, so what the probe finds steers them too.
    match core.pool.client(probed) {
        Ok(client) => tasks.spawn(
            "vault probe",
            crate::vault::probe::watch_vault(client, core.metrics.clone(), VAULT_PROBE_INTERVAL),
        ),
        Err(e) => {
            tracing::warn!(vault = %probed.addresses, error = %e, "cannot build a client to probe Vault; vault_up stays 0")
        }
    }
}

/// The health state, and (with `-health-addr`) its port served from a
/// thread and runtime of its own until the tasks shut down.
fn start_health(
    config: &ProviderConfig,
    core: &Core,
    logs: Arc<dyn LogControl>,
    tasks: &Tasks,
) -> Result<Arc<health::Health>, RunError> {
    // Gauges of what the ledger holds are read when scraped, never stale.
    let held = core.ledger.clone();
    let refresh: health::Refresh = Box::new(move |m: &Metrics| {
        let s = held.summary();
        m.set_token_cache_size(s.tokens);
        m.set_credentials_held(s.credentials);
        m.set_soonest_credential_expiry(s.soonest_expiry);
    });
    let health = health::Health::new(core.versions.clone(), core.metrics.clone(), Some(logs), Some(refresh));
    let Some(addr) = config.health_addr else {
        return Ok(health);
    };
    let bind = |what: String| move |source| RunError::Bind { what, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind(format!("the health server on {addr}")))?;
    listener
        .set_nonblocking(true)
        .map_err(bind("the health server".to_string()))?;
    // Logged with the bound address, so `-health-addr=127.0.0.1:0` is usable.
    let bound = listener.local_addr().map_err(bind("the health server".to_string()))?;
    tracing::info!(addr = %bound, "health server listening (/health/live, /health/ready, /metrics, /log-level)");
    health.allow_remote_log_level(config.health_remote_log_level);
    // Liveness asks this runtime, through a task that wakes only when asked.
    tasks.spawn("liveness", health.answer_pings());
    health::serve_on_own_thread(listener, health.clone(), tasks.token())
        .map_err(bind("the health server's thread".to_string()))?;
    Ok(health)
}

/// Restores the ledger from its state file if the version key (which seals
/// it) comes within [`KEY_WAIT`]; `false`: the ledger's rounds will.
async fn restore_ledger(core: &Core) -> bool {
    match tokio::time::timeout(KEY_WAIT, core.versions.key()).await {
        Ok(Ok(key)) => {
            core.ledger.restore(&key.state_key());
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "object-version key not available yet");
            false
        }
        Err(_) => {
            tracing::warn!("object-version key not loaded within {KEY_WAIT:?}; continuing");
            false
        }
    }
}

/// Binds each socket of `config`, with the service its flavour's defaults
/// make.
fn bind_sockets(
    config: &ProviderConfig,
    core: &Core,
) -> Result<Vec<(tokio::net::UnixListener, ProviderService)>, RunError> {
    let service = ProviderService::new(core.mounter.clone(), config.mount_timeout)
        .with_max_concurrent_mounts(config.max_concurrent_mounts, config.max_concurrent_mounts_per_namespace);
    let mut listeners = Vec::new();
    for (socket, defaults) in &config.sockets {
        let listener = server::bind_socket(&socket.path).map_err(|source| RunError::Bind {
            what: format!("{} (provider: {})", socket.path.display(), socket.flavor),
            source,
        })?;
        tracing::info!(
            endpoint = %socket.path.display(),
            provider = socket.flavor.provider(),
            address = %defaults.vault.addresses,
            auth_mount = %defaults.auth_mount,
            audience = defaults.flavor.default_audience(),
            version = env!("CARGO_PKG_VERSION"),
            "serving the CSI driver for provider: {} ({} defaults)",
            socket.flavor,
            socket.flavor.product()
        );
        listeners.push((listener, service.clone().for_socket(defaults.clone())));
    }
    Ok(listeners)
}

impl Running {
    /// Answers the driver on every socket until `shutdown` resolves, then
    /// drains in-flight mounts for at most the shutdown grace. Not ready
    /// from the moment draining starts, not only once it ends.
    pub async fn serve(&mut self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
        self.health.set_serving(true);
        let draining = self.health.clone();
        let shutdown = async move {
            shutdown.await;
            draining.set_serving(false);
        };
        let listeners = std::mem::take(&mut self.listeners);
        let result = server::serve_all(listeners, shutdown, self.config.shutdown_grace).await;
        self.health.set_serving(false);
        result.map_err(RunError::from)
    }

    /// Stops every background task (the health port with them), persists the
    /// ledger and removes the sockets.
    pub async fn shutdown(self) {
        self.tasks.shutdown(TASKS_GRACE).await;
        if let Ok(key) = self.core.versions.key().await {
            self.core.ledger.persist(&key.state_key());
        }
        for (socket, _) in &self.config.sockets {
            if let Err(e) = std::fs::remove_file(&socket.path) {
                tracing::warn!(error = %e, endpoint = %socket.path.display(), "could not remove the socket");
            }
        }
        tracing::info!("stopped");
    }
}

/// Restores the ledger once the version key is there (if start-up could
/// not), then in rounds starts the renewals and revocations due and
/// persists the ledger. A round starts when something is due
/// ([`Ledger::next_due`]) or the ledger changed ([`Ledger::changed`]), at
/// most every [`LEDGER_ROUND`] and at least every [`LEDGER_IDLE`]: idle, the
/// provider does not wake for nothing. Jobs run side by side, at most
/// [`crate::ledger::JOB_CONCURRENCY`] at once, each on its own: a Vault
/// election that stalls one pod's renewal does not hold up the next round or
/// another pod's. Dropped (at shutdown), the running jobs are dropped with
/// it; what they had not done stays in the ledger, which `run` persists.
async fn ledger_rounds(versions: Arc<Versions>, ledger: Arc<Ledger>, pool: Arc<VaultPool>, mut restored: bool) {
    let slots = crate::slots::Slots::new(
        crate::ledger::JOB_CONCURRENCY,
        crate::ledger::JOB_CONCURRENCY_PER_NAMESPACE,
    );
    let mut running = tokio::task::JoinSet::new();
    loop {
        let round = tokio::time::Instant::now();
        while running.try_join_next().is_some() {}
        let key = match versions.key().await {
            Ok(key) => {
                if !restored {
                    ledger.restore(&key.state_key());
                    restored = true;
                }
                Some(key)
            }
            Err(e) => {
                tracing::debug!(error = %e, "object-version key not available yet");
                None
            }
        };
        for job in ledger.plan() {
            let (ledger, pool, slots) = (ledger.clone(), pool.clone(), slots.clone());
            running.spawn(async move {
                // The slots are never closed.
                let Ok(_slot) = slots.acquire(job.namespace()).await else {
                    return;
                };
                ledger.run(&pool, job).await;
            });
        }
        if let Some(key) = key {
            // Writing the file waits for the disk (fsync): on the blocking
            // pool, so that the one runtime thread keeps serving mounts.
            let (ledger, key) = (ledger.clone(), key.state_key());
            if ledger.is_dirty() {
                if let Err(e) = tokio::task::spawn_blocking(move || ledger.persist(&key)).await {
                    tracing::warn!(error = %e, "the ledger state file writer stopped");
                }
            }
        }
        let mut sleep = ledger.next_due().unwrap_or(LEDGER_IDLE).min(LEDGER_IDLE);
        if !restored {
            sleep = sleep.min(KEY_RETRY);
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = ledger.changed() => {}
        }
        tokio::time::sleep_until(round + LEDGER_ROUND).await;
    }
}
