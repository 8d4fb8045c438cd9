//! Health endpoints with meaning: `/health/live` answers while the process
//! can serve HTTP at all; `/health/ready` only once the driver socket is
//! served and the object-version key is loaded. Vault being down affects
//! neither: a restart would not fix Vault, and a DaemonSet pod in a restart
//! loop only makes the outage worse.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::versions::Versions;

/// What readiness depends on.
pub struct Health {
    serving: AtomicBool,
    versions: Arc<Versions>,
}

impl Health {
    /// Not ready until [`Health::set_serving`] is called and the key is loaded.
    pub fn new(versions: Arc<Versions>) -> Arc<Health> {
        Arc::new(Health {
            serving: AtomicBool::new(false),
            versions,
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

/// The health router.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
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
        let h = Health::new(Arc::new(Versions::fixed(&[0u8; 32])));
        assert_eq!(h.readiness().await, Err("driver socket not served yet"));
        h.set_serving(true);
        assert_eq!(h.readiness().await, Ok(()));
    }
}
