//! The benchmark's floor: the least any client must do to mount — a login,
//! then one GET per secret, over pooled keep-alive HTTP/1.1 connections —
//! with no provider in between. It is not the provider's Vault client, so
//! the floor does not move when that client does.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A direct Vault client over plain HTTP.
#[derive(Clone)]
pub struct VaultFloor {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    timeout: Duration,
}

impl VaultFloor {
    /// A client of the Vault at `addr` (`http://host:port`).
    pub fn new(addr: &str, timeout: Duration) -> VaultFloor {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        VaultFloor {
            http: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(connector),
            base: addr.trim_end_matches('/').to_string(),
            timeout,
        }
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("X-Vault-Request", "true");
        if let Some(t) = token {
            builder = builder.header("X-Vault-Token", t);
        }
        let payload = match body {
            Some(b) => {
                builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(&b)?)
            }
            None => Bytes::new(),
        };
        let exchange = async {
            let response = self.http.request(builder.body(Full::new(payload))?).await?;
            let status = response.status();
            let bytes = response.into_body().collect().await?.to_bytes();
            if !status.is_success() {
                return Err(anyhow!("{path}: Vault answered {status}"));
            }
            serde_json::from_slice(&bytes).with_context(|| format!("{path}: not JSON"))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("{path}: no answer within {:?}", self.timeout))?
    }

    /// Logs in at `auth/<mount>/login`; the client token.
    pub async fn login(&self, mount: &str, role: &str, jwt: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({"jwt": jwt, "role": role});
        let answer = self
            .call(http::Method::POST, &format!("/v1/auth/{mount}/login"), None, Some(body))
            .await?;
        answer["auth"]["client_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("login answer without auth.client_token"))
    }

    /// `GET /v1/<path>` with `token`.
    pub async fn read(&self, token: &str, path: &str) -> anyhow::Result<Value> {
        self.call(
            http::Method::GET,
            &format!("/v1/{}", path.trim_start_matches('/')),
            Some(token),
            None,
        )
        .await
    }
}
