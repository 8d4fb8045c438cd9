//! The health port: `/health/live` answers while the runtime that serves
//! mounts answers (the port itself is served from a thread and runtime of
//! its own, so a busy tenant cannot starve the probe, and a dead runtime
//! fails it); `/health/ready` only while the driver socket is served and the
//! object-version key is loaded. Vault being down affects neither: a restart
//! would not fix Vault, and a DaemonSet pod in a restart loop only makes the
//! outage worse; `vault_csi_provider_vault_up` and a log line report it
//! instead. The same port serves `/metrics` and `/log-level`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::logging::parse_log_level;
use crate::logging::LogControl;
use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::versions::Versions;

/// Sets gauges that are cheaper to read at scrape time than to keep
/// current (what the credential ledger holds).
pub type Refresh = Box<dyn Fn(&Metrics) + Send + Sync>;

/// How long liveness waits for the mount runtime's answer (the
/// DaemonSet's probe gives up after 3 s).
const LIVE_WAIT: Duration = Duration::from_secs(2);

/// A liveness question to the mount runtime: it answers by sending back.
type Ping = tokio::sync::oneshot::Sender<()>;

/// What readiness depends on, and what the health port exports.
pub struct Health {
    /// Asks the mount runtime whether it runs ([`Health::answer_pings`]);
    /// `None` until someone answers.
    ping: std::sync::Mutex<Option<tokio::sync::mpsc::Sender<Ping>>>,
    serving: AtomicBool,
    versions: Arc<Versions>,
    metrics: Arc<Metrics>,
    logs: Option<Arc<dyn LogControl>>,
    refresh: Option<Refresh>,
    /// Whether `PUT /log-level` is accepted from peers other than loopback.
    remote_log_level: AtomicBool,
}

impl Health {
    /// Not ready until [`Health::set_serving`] is called and the key is
    /// loaded. Without `logs`, the log level cannot be changed at runtime;
    /// `refresh` runs before every scrape.
    pub fn new(
        versions: Arc<Versions>,
        metrics: Arc<Metrics>,
        logs: Option<Arc<dyn LogControl>>,
        refresh: Option<Refresh>,
    ) -> Arc<Health> {
        Arc::new(Health {
            ping: std::sync::Mutex::new(None),
            serving: AtomicBool::new(false),
            versions,
            metrics,
            logs,
            refresh,
            remote_log_level: AtomicBool::new(false),
        })
    }

    /// Accepts `PUT /log-level` from any peer, not only loopback.
    pub fn allow_remote_log_level(&self, on: bool) {
        self.remote_log_level.store(on, Ordering::SeqCst);
    }

    /// Records whether the driver socket is being served.
    pub fn set_serving(&self, on: bool) {
        self.serving.store(on, Ordering::SeqCst);
    }

    /// The task that answers liveness from the runtime it is spawned on
    /// (the mount runtime): it waits for questions and wakes for nothing
    /// else.
    pub fn answer_pings(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Ping>(8);
        *self.ping.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        async move {
            while let Some(ping) = rx.recv().await {
                let _ = ping.send(());
            }
        }
    }

    /// Whether the mount runtime answers within [`LIVE_WAIT`] (always, when
    /// no one was set to answer).
    pub async fn liveness(&self) -> Result<(), String> {
        let ping = self
            .ping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let Some(ping) = ping else { return Ok(()) };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let asked = async {
            ping.send(tx).await.map_err(|_| ())?;
            rx.await.map_err(|_| ())
        };
        match tokio::time::timeout(LIVE_WAIT, asked).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(())) => Err("the mount runtime has stopped".to_string()),
            Err(_) => Err(format!("the mount runtime did not answer within {LIVE_WAIT:?}")),
        }
    }

    /// Whether the provider can serve mounts, and if not, why.
    pub async fn readiness(&self) -> Result<(), &'static str> {
        if !self.serving.load(Ordering::SeqCst) {
            return Err("driver socket not served yet");
        }
        if !self.versions.is_loaded().await {
            return Err("object-version key not loaded yet");
        }
        Ok(())
    }
}

async fn live(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    match health.liveness().await {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not live: {why}\n")),
    }
}

async fn ready(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    match health.readiness().await {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    // Read at scrape time rather than pushed, so it is never stale.
    health.metrics.set_hmac_key_loaded(health.versions.is_loaded().await);
    if let Some(refresh) = &health.refresh {
        refresh(&health.metrics);
    }
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], health.metrics.encode())
}

async fn get_log_level(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    match &health.logs {
        Some(logs) => (StatusCode::OK, format!("{}\n", logs.level().directive())),
        None => (
            StatusCode::NOT_FOUND,
            "the log level is fixed in this process\n".to_string(),
        ),
    }
}

async fn put_log_level(
    State(health): State<Arc<Health>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: String,
) -> (StatusCode, String) {
    // The only write on a port the pod network reaches: from loopback only
    // (kubectl port-forward and exec arrive there), unless allowed.
    if !peer.ip().is_loopback() && !health.remote_log_level.load(Ordering::SeqCst) {
        return (
            StatusCode::FORBIDDEN,
            "PUT /log-level is accepted from loopback only (use kubectl port-forward); start the provider with -health-remote-log-level=true to accept it from the network\n".to_string(),
        );
    }
    let Some(logs) = &health.logs else {
        return (
            StatusCode::NOT_FOUND,
            "the log level is fixed in this process\n".to_string(),
        );
    };
    let level = match parse_log_level(body.trim()) {
        Ok(l) => l,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let before = logs.level();
    match logs.set_level(level) {
        Ok(()) => {
            tracing::info!(
                from = before.directive(),
                to = level.directive(),
                "log level changed through the health port"
            );
            (StatusCode::OK, format!("{}\n", level.directive()))
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Serves the health port on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(health).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Serves the health port on `listener` from a thread and runtime of its
/// own, until `stop` is cancelled: the probes then answer whatever the
/// mount runtime is busy with.
pub fn serve_on_own_thread(
    listener: std::net::TcpListener,
    health: Arc<Health>,
    stop: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("health".into()).spawn(move || {
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "health server cannot serve its port");
                    return;
                }
            };
            tokio::select! {
                served = serve(listener, health) => {
                    if let Err(e) = served {
                        tracing::error!(error = %e, "health server stopped");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    })?;
    Ok(())
}

/// The health port's router: health, metrics and the log level. Serve it
/// with connection info (see [`serve`]): `PUT /log-level` needs the peer.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/log-level", get(get_log_level).put(put_log_level))
        .with_state(health)
}

/// Parses `-health-addr`: Go-style `:8080` means every interface.
pub fn parse_addr(addr: &str) -> Result<SocketAddr, String> {
    let full = if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    };
    full.parse()
        .map_err(|e| format!("-health-addr {addr:?} is not host:port: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_addresses() {
        assert_eq!(parse_addr(":8080").unwrap().to_string(), "0.0.0.0:8080");
        assert_eq!(parse_addr("127.0.0.1:9").unwrap().to_string(), "127.0.0.1:9");
        assert!(parse_addr("8080").is_err());
    }

    #[tokio::test]
    async fn ready_needs_socket_and_key() {
        let h = Health::new(
            Arc::new(Versions::fixed(&[0u8; 32])),
            Arc::new(Metrics::new()),
            None,
            None,
        );
        assert_eq!(h.readiness().await, Err("driver socket not served yet"));
        h.set_serving(true);
        assert_eq!(h.readiness().await, Ok(()));
    }

    #[tokio::test]
    async fn liveness_is_the_mount_runtimes_answer() {
        let h = Health::new(
            Arc::new(Versions::fixed(&[0u8; 32])),
            Arc::new(Metrics::new()),
            None,
            None,
        );
        assert_eq!(h.liveness().await, Ok(()), "no one asked to answer yet");
        // A runtime of its own plays the mount runtime; a task hogging its
        // only thread stands for a runtime that no longer runs.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answering = runtime.spawn(h.answer_pings());
        let (go, blocked) = std::sync::mpsc::channel::<()>();
        let mount_runtime = std::thread::spawn(move || {
            runtime.block_on(async {
                tokio::task::yield_now().await;
                // Answer for a while, then hog the thread.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = blocked.recv();
                drop(answering);
            })
        });
        assert_eq!(h.liveness().await, Ok(()));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let started = std::time::Instant::now();
        let e = h.liveness().await.unwrap_err();
        assert!(e.contains("did not answer within 2s"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        go.send(()).unwrap();
        mount_runtime.join().unwrap();
    }

    struct Level(std::sync::Mutex<crate::logging::LogLevel>);

    impl LogControl for Level {
        fn set_level(&self, level: crate::logging::LogLevel) -> Result<(), String> {
            *self.0.lock().unwrap() = level;
            Ok(())
        }

        fn level(&self) -> crate::logging::LogLevel {
            *self.0.lock().unwrap()
        }
    }

    #[tokio::test]
    async fn the_log_level_is_changed_from_loopback_only_unless_allowed() {
        use axum::body::Body;
        use axum::extract::connect_info::MockConnectInfo;
        use tower::ServiceExt as _;

        let logs = Arc::new(Level(std::sync::Mutex::new(crate::logging::LogLevel::Info)));
        let h = Health::new(
            Arc::new(Versions::fixed(&[0u8; 32])),
            Arc::new(Metrics::new()),
            Some(logs.clone()),
            None,
        );
        let put = |from: &str, level: &str| {
            let app = router(h.clone()).layer(MockConnectInfo(from.parse::<SocketAddr>().unwrap()));
            let req = axum::http::Request::put("/log-level")
                .body(Body::from(level.to_string()))
                .unwrap();
            async move { app.oneshot(req).await.unwrap().status() }
        };
        assert_eq!(put("10.1.2.3:40000", "debug").await, StatusCode::FORBIDDEN);
        assert_eq!(logs.level(), crate::logging::LogLevel::Info);
        assert_eq!(put("127.0.0.1:40000", "debug").await, StatusCode::OK);
        assert_eq!(put("[::1]:40000", "warn").await, StatusCode::OK);
        assert_eq!(logs.level(), crate::logging::LogLevel::Warn);
        h.allow_remote_log_level(true);
        assert_eq!(put("10.1.2.3:40000", "error").await, StatusCode::OK);
        assert_eq!(logs.level(), crate::logging::LogLevel::Error);
    }
}
