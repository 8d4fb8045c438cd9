//! `vault-csi-provider`: flags, logging, build, serve, wait for SIGTERM or
//! SIGINT, drain under a timeout. The `mount` and `check` subcommands live
//! in the library's `cli` module.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use vault_csi_provider::config::{Env, Flags};
use vault_csi_provider::flavor::Flavor;
use vault_csi_provider::kube::KubeClient;
use vault_csi_provider::ledger::{Ledger, LedgerSettings, SystemClock};
use vault_csi_provider::logging::{self, LogControl};
use vault_csi_provider::metrics::Metrics;
use vault_csi_provider::mount::{Mounter, Settings};
use vault_csi_provider::podwatch;
use vault_csi_provider::server::{self, health, ProviderService};
use vault_csi_provider::vault::VaultPool;
use vault_csi_provider::versions::Versions;

/// Exit code for unusable configuration (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;
/// How often the ledger looks for renewals and revocations due: short
/// enough for TTLs of a few seconds, cheap when nothing is due.
const LEDGER_TICK: Duration = Duration::from_millis(250);
/// How often the object-version key Secret is re-checked.
const KEY_REFRESH: Duration = Duration::from_secs(60);
/// How often the default Vault's health is probed for `vault_up`.
const VAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(code) = vault_csi_provider::cli::run_subcommand(&args) {
        return code;
    }
    let flags = match Flags::parse_args(args) {
        Ok(f) => f,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            eprintln!("vault-csi-provider: {}", first.trim_start_matches("error: "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let logs = match logging::init(flags.effective_log_level(), flags.log_format) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vault-csi-provider: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vault-csi-provider: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The environment is read once, here; everything after uses this snapshot.
    let env = Env::from_process();
    match runtime.block_on(run(flags, env, logs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("vault-csi-provider: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

async fn run(flags: Flags, env: Env, logs: Arc<dyn LogControl>) -> anyhow::Result<()> {
    let sockets = flags.sockets().map_err(anyhow::Error::msg)?;
    let served: Vec<Flavor> = sockets.iter().map(|s| s.flavor).collect();
    flags.check_flavor_flags(&served).map_err(anyhow::Error::msg)?;
    // Each socket's defaults, from its flavour's flags and environment.
    let mut socket_defaults = Vec::new();
    for socket in &sockets {
        let d = flags.defaults_for(socket.flavor, &env).map_err(anyhow::Error::msg)?;
        socket_defaults.push(Arc::new(d));
    }
    if let (Some(named), Some(implied)) = (flags.flavor, Flavor::from_socket(&flags.endpoint())) {
        if named != implied {
            tracing::warn!(
                endpoint = %flags.endpoint().display(),
                "-flavor={named} on a socket named for provider: {implied}: the driver sends provider: {implied} classes here, and they get {} defaults",
                named.product()
            );
        }
    }
    let defaults = socket_defaults
        .first()
        .map(|d| d.as_ref().clone())
        .ok_or_else(|| anyhow::anyhow!("no socket to serve"))?;
    let kube = KubeClient::load(flags.kubeconfig.as_deref(), flags.request_timeout)
        .await
        .map_err(|e| anyhow::anyhow!("Kubernetes API configuration: {e}"))?;
    let key_namespace = flags
        .hmac_secret_namespace
        .clone()
        .unwrap_or_else(|| kube.namespace().to_string());
    let versions = Arc::new(Versions::from_secret(
        kube.clone(),
        key_namespace,
        flags.hmac_secret_name(),
        KEY_REFRESH,
    ));
    let settings = Settings {
        defaults,
        request_timeout: flags.request_timeout,
        fetch_concurrency: usize::from(flags.fetch_concurrency),
        node_name: flags.node_name.clone().filter(|n| !n.is_empty()),
    };
    let metrics = Arc::new(Metrics::new());
    tokio::spawn(vault_csi_provider::probe::watch_vault(
        settings.defaults.vault.clone(),
        flags.request_timeout,
        metrics.clone(),
        VAULT_PROBE_INTERVAL,
    ));
    let ledger = Arc::new(
        Ledger::new(
            LedgerSettings {
                reuse: flags.lease_reuse,
                threshold: flags.renew_threshold,
                grace: flags.rotation_grace,
                capacity: usize::try_from(flags.cache_size).unwrap_or(0),
                state_file: flags.state_path(),
                node: flags.node_name.clone().filter(|n| !n.is_empty()),
                max_held_bytes: flags.max_held_bytes,
            },
            Arc::new(SystemClock),
        )
        .with_metrics(metrics.clone()),
    );
    let pool = Arc::new(VaultPool::new(flags.request_timeout).with_metrics(metrics.clone()));
    let mounter = Arc::new(
        Mounter::new(
            settings,
            Some(kube.clone()),
            versions.clone(),
            ledger.clone(),
            pool.clone(),
        )
        .with_metrics(metrics.clone())
        .with_memory_budget(vault_csi_provider::budget::MemoryBudget::new(
            flags.max_mount_bytes,
            flags.max_inflight_bytes.max(flags.max_mount_bytes),
        )),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Gauges of what the ledger holds are read when scraped, never stale.
    let held = ledger.clone();
    let refresh: health::Refresh = Box::new(move |m: &Metrics| {
        let s = held.summary();
        m.set_token_cache_size(s.tokens);
        m.set_credentials_held(s.credentials);
        m.set_soonest_credential_expiry(s.soonest_expiry);
    });
    let health = health::Health::new(versions.clone(), metrics, Some(logs), Some(refresh));

    if !flags.health_addr.is_empty() {
        let addr = health::parse_addr(&flags.health_addr).map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding health server on {addr}"))?;
        // Logged with the bound address, so `-health-addr=127.0.0.1:0` is usable.
        let bound = listener.local_addr().context("reading the health server's address")?;
        tracing::info!(addr = %bound, "health server listening (/health/live, /health/ready, /metrics, /log-level)");
        health.allow_remote_log_level(flags.health_remote_log_level);
        let served = health.clone();
        tokio::spawn(async move {
            if let Err(e) = health::serve(listener, served).await {
                tracing::error!(error = %e, "health server stopped");
            }
        });
    }

    // The key decrypts the ledger's state file, so a restart resumes its
    // credentials before the first mount. If Kubernetes is slow, serve
    // anyway: the background task loads the key and restores the ledger.
    let restored = match tokio::time::timeout(Duration::from_secs(10), versions.key()).await {
        Ok(Ok(key)) => {
            ledger.restore(&key.state_key());
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "object-version key not available yet");
            false
        }
        Err(_) => {
            tracing::warn!("object-version key not loaded within 10 s; continuing");
            false
        }
    };
    tokio::spawn(background(
        versions.clone(),
        ledger.clone(),
        pool.clone(),
        restored,
        stop_rx.clone(),
    ));
    match (&flags.node_name, flags.revoke_on_pod_delete) {
        (Some(node), true) if !node.is_empty() => {
            tokio::spawn(podwatch::run(kube.clone(), node.clone(), ledger.clone(), pool.clone(), stop_rx.clone()));
        }
        (_, true) => tracing::warn!(
            "NODE_NAME is not set: credentials of deleted pods will not be revoked early (set it from the downward API, spec.nodeName)"
        ),
        (_, false) => tracing::info!("revocation on pod deletion is off"),
    }

    let service = ProviderService::new(mounter, flags.mount_timeout)
        .with_max_concurrent_mounts(usize::from(flags.max_concurrent_mounts));
    let mut listeners = Vec::new();
    for (socket, defaults) in sockets.iter().zip(&socket_defaults) {
        let listener = server::bind_socket(&socket.path)
            .with_context(|| format!("binding {} (provider: {})", socket.path.display(), socket.flavor))?;
        tracing::info!(
            endpoint = %socket.path.display(),
            provider = socket.flavor.provider(),
            address = %defaults.vault.endpoint,
            auth_mount = %defaults.auth_mount,
            audience = defaults.flavor.default_audience(),
            version = env!("CARGO_PKG_VERSION"),
            "serving the CSI driver for provider: {} ({} defaults)",
            socket.flavor,
            socket.flavor.product()
        );
        listeners.push((listener, service.clone().for_socket(defaults.clone())));
    }
    health.set_serving(true);
    // Not ready from the moment draining starts, not only once it ends.
    let draining = health.clone();
    let shutdown = async move {
        shutdown_signal().await;
        draining.set_serving(false);
    };
    let result = server::serve_all(listeners, shutdown, flags.shutdown_grace).await;
    health.set_serving(false);
    let _ = stop_tx.send(true);
    if let Ok(key) = versions.key().await {
        ledger.persist(&key.state_key());
    }
    for socket in &sockets {
        if let Err(e) = std::fs::remove_file(&socket.path) {
            tracing::warn!(error = %e, endpoint = %socket.path.display(), "could not remove the socket");
        }
    }
    tracing::info!("stopped");
    result.context("gRPC server failed")
}

/// Restores the ledger once the version key is there (if start-up could
/// not), then renews, retires and persists credentials every tick.
async fn background(
    versions: Arc<Versions>,
    ledger: Arc<Ledger>,
    pool: Arc<VaultPool>,
    mut restored: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(LEDGER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match versions.key().await {
            Ok(key) => {
                if !restored {
                    ledger.restore(&key.state_key());
                    restored = true;
                }
                ledger.tick(&pool).await;
                ledger.persist(&key.state_key());
            }
            Err(e) => {
                tracing::debug!(error = %e, "object-version key not available yet");
                ledger.tick(&pool).await;
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining in-flight mounts"),
        _ = int.recv() => tracing::info!("SIGINT: draining in-flight mounts"),
    }
}
