//! The health port: `/health/live` answers while the process can serve HTTP
//! at all; `/health/ready` only while the driver socket is served and the
//! object-version key is loaded. Vault being down affects neither: a restart
//! would not fix Vault, and a DaemonSet pod in a restart loop only makes the
//! outage worse; `vault_csi_provider_vault_up` and a log line report it
//! instead. The same port serves `/metrics` and `/log-level`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::config::parse_log_level;
use crate::logging::LogControl;
use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::versions::Versions;

/// Sets gauges that are cheaper to read at scrape time than to keep
/// current (what the credential ledger holds).
pub type Refresh = Box<dyn Fn(&Metrics) + Send + Sync>;

/// What readiness depends on, and what the health port exports.
pub struct Health {
    serving: AtomicBool,
    versions: Arc<Versions>,
    metrics: Arc<Metrics>,
    logs: Option<Arc<dyn LogControl>>,
    refresh: Option<Refresh>,
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
            serving: AtomicBool::new(false),
            versions,
            metrics,
            logs,
            refresh,
        })
    }

    /// Records whether the driver socket is being served.
    pub fn set_serving(&self, on: bool) {
        self.serving.store(on, Ordering::SeqCst);
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

async fn live() -> &'static str {
    "ok\n"
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

async fn put_log_level(State(health): State<Arc<Health>>, body: String) -> (StatusCode, String) {
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

/// The health port's router: health, metrics and the log level.
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
}
