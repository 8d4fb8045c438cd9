//! How we talk to Vault (or OpenBao): login with a service-account JWT, and
//! the reads an SPC's objects name. Retries are limited to what cannot
//! duplicate work: requests that never reached Vault, and GETs of a failed
//! or broken exchange.
//!
//! Nothing here knows about gRPC or the driver; errors carry what Vault
//! answered and the caller adds who and what was being tried.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderName, Method};
use serde_json::Value as Json;

use crate::http::{self as transport, HttpClient, HttpError, Request, TlsOptions};
use crate::spc::{ReadKey, VaultConfig};

/// Largest Vault response we accept. The driver takes at most 4 MiB of files
/// per mount, so anything larger could never be delivered anyway.
pub const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// What went wrong talking to Vault.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Vault answered with an error status.
    #[error("Vault answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Vault's `errors`, joined (they never echo request values).
        message: String,
    },
    /// No connection could be made (nothing was sent).
    #[error("cannot connect to Vault: {0}")]
    Connect(String),
    /// The exchange broke or timed out after the request was sent.
    #[error("{0}")]
    Broken(String),
    /// The response was not what Vault's API promises.
    #[error("unexpected response from Vault: {0}")]
    BadResponse(String),
    /// The response exceeded [`MAX_RESPONSE`].
    #[error("Vault's response is larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    /// Holding the response would take the mount over a memory limit.
    #[error("{0}")]
    OverBudget(crate::budget::Exceeded),
}

impl VaultError {
    /// HTTP status, when Vault answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            VaultError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A Vault token obtained by login.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct VaultToken {
    /// The token itself. Never logged or put in an error.
    pub token: String,
    /// Accessor, safe to log: identifies the token without granting anything.
    pub accessor: String,
    /// When the login happened.
    pub issued: SystemTime,
    /// TTL granted at login (zero for a token without TTL).
    pub ttl: Duration,
    /// When the token expires (`None` for a token without TTL); moves with renewals.
    pub expires: Option<SystemTime>,
    /// Whether it may be renewed.
    pub renewable: bool,
}

impl std::fmt::Debug for VaultToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultToken")
            .field("accessor", &self.accessor)
            .field("expires", &self.expires)
            .field("renewable", &self.renewable)
            .finish_non_exhaustive()
    }
}

/// The outcome of a renewal.
#[derive(Debug, Clone, Copy)]
pub struct Renewed {
    /// The TTL Vault granted from now.
    pub ttl: Duration,
    /// Whether it may be renewed again.
    pub renewable: bool,
}

/// A client for one Vault server and TLS configuration.
#[derive(Clone)]
pub struct VaultClient {
    http: HttpClient,
    namespace: Option<String>,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

const RETRY_DELAYS: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(600)];

impl VaultClient {
    /// Builds a client, reading CA and client certificate files now so that a
    /// bad path fails before anything is sent.
    pub fn new(cfg: &VaultConfig, timeout: Duration) -> Result<VaultClient, String> {
        let mut tls = TlsOptions {
            server_name: cfg.tls.server_name.clone(),
            skip_verify: cfg.tls.skip_verify,
            ..Default::default()
        };
        if let Some(p) = &cfg.tls.ca_cert {
            tls.roots.extend(crate::pem::read_pem_certs(p)?);
        }
        if let Some(d) = &cfg.tls.ca_directory {
            tls.roots.extend(crate::pem::read_pem_dir(d)?);
        }
        if let Some((cert, key)) = &cfg.tls.client_cert {
            let chain = crate::pem::read_pem_certs(cert)?;
            let key = crate::pem::read_pem_key(key)?;
            tls.client_auth = Some((chain, std::sync::Arc::new(key)));
        }
        let http = HttpClient::new(&cfg.endpoint, &tls, timeout, MAX_RESPONSE)?;
        Ok(VaultClient {
            http,
            namespace: cfg.namespace.clone(),
            metrics: None,
        })
    }

    /// Counts every HTTP exchange of this client in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> VaultClient {
        self.metrics = Some(metrics);
        self
    }

    fn request(&self, method: Method, path: String, token: Option<&str>, body: Option<Bytes>) -> Request {
        let mut headers = vec![(HeaderName::from_static("x-vault-request"), "true".to_string())];
        if let Some(ns) = &self.namespace {
            headers.push((HeaderName::from_static("x-vault-namespace"), ns.clone()));
        }
        if let Some(t) = token {
            headers.push((HeaderName::from_static("x-vault-token"), t.to_string()));
        }
        Request {
            method,
            path_and_query: path,
            headers,
            body: body.map(|b| (b, "application/json")),
        }
    }

    /// Sends with bounded retries: a request that never left is always safe to
    /// resend; one whose exchange broke only when `idempotent`; one that timed
    /// out never.
    async fn send(&self, req: Request, idempotent: bool) -> Result<Json, VaultError> {
        self.send_within(req, idempotent, &crate::budget::Unlimited).await
    }

    /// [`send`](Self::send), counting what is read against `budget`.
    async fn send_within(
        &self,
        req: Request,
        idempotent: bool,
        budget: &dyn crate::budget::Charge,
    ) -> Result<Json, VaultError> {
        let mut attempt = 0;
        loop {
            let started = std::time::Instant::now();
            let result = self.http.send_within(req.clone(), budget).await;
            if let Some(m) = &self.metrics {
                m.vault_request(
                    &req.path_and_query,
                    result.as_ref().ok().map(|r| r.status),
                    started.elapsed(),
                );
            }
            let retry = match &result {
                Err(HttpError::Connect(_)) => true,
                Err(HttpError::Broken(_)) => idempotent,
                // A Vault slower than the timeout is not faster a moment
                // later: resending triples the time to fail, adds load where
                // there is too much already, and since the request did reach
                // Vault, mints a credential per attempt that nobody sees.
                Err(HttpError::Timeout(_)) => false,
                Ok(r) if r.status >= 500 && r.status != 501 => idempotent,
                _ => false,
            };
            if retry && attempt < RETRY_DELAYS.len() {
                tracing::debug!(attempt, path = %req.path_and_query, "retrying Vault request");
                tokio::time::sleep(RETRY_DELAYS[attempt]).await;
                attempt += 1;
                continue;
            }
            let json = interpret(result)?;
            // The parsed form is held until the mount ends, too.
            budget
                .charge(crate::budget::json_footprint(&json))
                .map_err(VaultError::OverBudget)?;
            return Ok(json);
        }
    }

    /// Logs in at `auth/<mount>/login` with a JWT and a role.
    pub async fn login(&self, mount: &str, role: &str, jwt: &str) -> Result<VaultToken, VaultError> {
        let body = serde_json::json!({ "jwt": jwt, "role": role }).to_string();
        let started = SystemTime::now();
        let req = self.request(
            Method::POST,
            format!("/v1/auth/{mount}/login"),
            None,
            Some(Bytes::from(body)),
        );
        // A login only creates a token; resending after a broken exchange at
        // worst leaves one unused token to expire, so it counts as idempotent.
        let json = self.send(req, true).await?;
        let auth = json
            .get("auth")
            .filter(|a| a.is_object())
            .ok_or_else(|| VaultError::BadResponse("login response has no auth section".to_string()))?;
        let token = auth
            .get("client_token")
            .and_then(Json::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| VaultError::BadResponse("login response has no client_token".to_string()))?;
        let ttl = auth.get("lease_duration").and_then(Json::as_u64).unwrap_or(0);
        Ok(VaultToken {
            token: token.to_string(),
            accessor: auth
                .get("accessor")
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_string(),
            issued: started,
            ttl: Duration::from_secs(ttl),
            expires: (ttl > 0).then(|| started + Duration::from_secs(ttl)),
            renewable: auth.get("renewable").and_then(Json::as_bool).unwrap_or(false),
        })
    }

    /// Performs the request an object names and returns Vault's JSON response.
    pub async fn read(&self, token: &str, key: &ReadKey) -> Result<Json, VaultError> {
        self.read_within(token, key, &crate::budget::Unlimited).await
    }

    /// [`read`](Self::read), counting the response against a mount's budget.
    pub async fn read_within(
        &self,
        token: &str,
        key: &ReadKey,
        budget: &dyn crate::budget::Charge,
    ) -> Result<Json, VaultError> {
        let mut path = encode_path(&key.path);
        if !key.query.is_empty() {
            let q = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(key.query.iter())
                .finish();
            path = format!("{path}?{q}");
        }
        let method = Method::from_bytes(key.method.as_bytes()).map_err(|e| VaultError::BadResponse(e.to_string()))?;
        let idempotent = method == Method::GET;
        let body = key.body.clone().map(Bytes::from);
        let req = self.request(method, path, Some(token), body);
        self.send_within(req, idempotent, budget).await
    }

    /// Extends the token's TTL by `increment`; returns the TTL Vault granted
    /// (shorter than asked once the token reaches its max TTL).
    pub async fn renew_self(&self, token: &str, increment: Duration) -> Result<Renewed, VaultError> {
        let body = serde_json::json!({ "increment": format!("{}s", increment.as_secs()) }).to_string();
        let req = self.request(
            Method::POST,
            "/v1/auth/token/renew-self".to_string(),
            Some(token),
            Some(Bytes::from(body)),
        );
        let json = self.send(req, true).await?;
        let auth = json
            .get("auth")
            .ok_or_else(|| VaultError::BadResponse("renewal response has no auth section".into()))?;
        Ok(Renewed {
            ttl: Duration::from_secs(auth.get("lease_duration").and_then(Json::as_u64).unwrap_or(0)),
            renewable: auth.get("renewable").and_then(Json::as_bool).unwrap_or(false),
        })
    }

    /// Extends a lease by `increment`; returns the duration Vault granted.
    pub async fn renew_lease(&self, token: &str, lease_id: &str, increment: Duration) -> Result<Renewed, VaultError> {
        let body = serde_json::json!({ "lease_id": lease_id, "increment": increment.as_secs() }).to_string();
        let req = self.request(
            Method::PUT,
            "/v1/sys/leases/renew".to_string(),
            Some(token),
            Some(Bytes::from(body)),
        );
        let json = self.send(req, true).await?;
        Ok(Renewed {
            ttl: Duration::from_secs(json.get("lease_duration").and_then(Json::as_u64).unwrap_or(0)),
            renewable: json.get("renewable").and_then(Json::as_bool).unwrap_or(false),
        })
    }

    /// Revokes one lease now.
    pub async fn revoke_lease(&self, token: &str, lease_id: &str) -> Result<(), VaultError> {
        let body = serde_json::json!({ "lease_id": lease_id }).to_string();
        let req = self.request(
            Method::PUT,
            "/v1/sys/leases/revoke".to_string(),
            Some(token),
            Some(Bytes::from(body)),
        );
        self.send(req, true).await.map(|_| ())
    }

    /// Revokes the token itself (and with it every lease it created).
    pub async fn revoke_self(&self, token: &str) -> Result<(), VaultError> {
        let req = self.request(
            Method::POST,
            "/v1/auth/token/revoke-self".to_string(),
            Some(token),
            None,
        );
        self.send(req, true).await.map(|_| ())
    }
}

/// Percent-encodes characters that may not appear raw in a URL path, keeping
/// `/` as the separator.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b);
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn interpret(result: Result<transport::Response, HttpError>) -> Result<Json, VaultError> {
    let response = match result {
        Ok(r) => r,
        Err(HttpError::Connect(m)) => return Err(VaultError::Connect(m)),
        Err(HttpError::Broken(m)) => return Err(VaultError::Broken(format!("connection to Vault broke: {m}"))),
        Err(HttpError::Timeout(d)) => return Err(VaultError::Broken(format!("Vault did not answer within {d:?}"))),
        Err(HttpError::TooLarge(_)) => return Err(VaultError::TooLarge),
        Err(HttpError::OverBudget(e)) => return Err(VaultError::OverBudget(e)),
        Err(HttpError::Build(m)) => return Err(VaultError::BadResponse(m)),
    };
    if (200..300).contains(&response.status) {
        if response.body.is_empty() {
            return Ok(Json::Null);
        }
        return serde_json::from_slice(&response.body)
            .map_err(|e| VaultError::BadResponse(format!("response is not JSON: {e}")));
    }
    let mut message = match serde_json::from_slice::<Json>(&response.body) {
        Ok(j) => j
            .get("errors")
            .and_then(Json::as_array)
            .map(|errs| errs.iter().filter_map(Json::as_str).collect::<Vec<_>>().join("; "))
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    if (300..400).contains(&response.status) {
        let location = response
            .headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?");
        message = format!(
            "redirect to {location} (a standby node?): point vaultAddress at the active node or a load balancer"
        );
    }
    if message.is_empty() {
        message = match response.status {
            404 => "not found".to_string(),
            _ => http::StatusCode::from_u16(response.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_string(),
        };
    }
    message.truncate(500);
    Err(VaultError::Status {
        status: response.status,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_but_keep_slashes() {
        assert_eq!(encode_path("/v1/secret/data/my app"), "/v1/secret/data/my%20app");
        assert_eq!(encode_path("/v1/pki/issue/web-server"), "/v1/pki/issue/web-server");
        assert_eq!(encode_path("/v1/a?b#c"), "/v1/a%3Fb%23c");
    }

    fn resp(status: u16, body: &str) -> Result<transport::Response, HttpError> {
        Ok(transport::Response {
            status,
            headers: Default::default(),
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn vault_errors_are_extracted() {
        let e = interpret(resp(403, r#"{"errors":["permission denied"]}"#)).unwrap_err();
        assert_eq!(e.to_string(), "Vault answered 403: permission denied");
        let e = interpret(resp(404, r#"{"errors":[]}"#)).unwrap_err();
        assert_eq!(e.to_string(), "Vault answered 404: not found");
        let e = interpret(resp(502, "<html>bad gateway</html>")).unwrap_err();
        assert_eq!(e.to_string(), "Vault answered 502: Bad Gateway");
        assert_eq!(interpret(resp(204, "")).unwrap(), Json::Null);
        assert!(matches!(
            interpret(resp(200, "{not json")),
            Err(VaultError::BadResponse(_))
        ));
    }
}

/// Vault clients shared by mounts and background renewals, one per
/// connection configuration (so connections are pooled per server).
#[derive(Default)]
pub struct VaultPool {
    clients: std::sync::Mutex<std::collections::HashMap<VaultConfig, VaultClient>>,
    timeout: Duration,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

/// More distinct Vault connection configurations than this is unusual; the
/// pool is then simply rebuilt on demand.
const MAX_POOLED_CLIENTS: usize = 64;

impl VaultPool {
    /// An empty pool whose clients use `timeout` per request.
    pub fn new(timeout: Duration) -> VaultPool {
        VaultPool {
            clients: Default::default(),
            timeout,
            metrics: None,
        }
    }

    /// Counts every HTTP exchange of the pool's clients in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> VaultPool {
        self.metrics = Some(metrics);
        self
    }

    /// The client for `cfg`, built on first use. Building reads CA and
    /// client-certificate files: background work, whose configurations
    /// mounts have built before, uses this; mounts use [`connect`](Self::connect).
    pub fn client(&self, cfg: &VaultConfig) -> Result<VaultClient, String> {
        if let Some(c) = self.cached(cfg) {
            return Ok(c);
        }
        let client = self.build(cfg)?;
        Ok(self.keep(cfg, client))
    }

    /// [`client`](Self::client) for a mount: files are read on a blocking
    /// thread, never on the runtime, and no lock is held while they are, so
    /// a slow or hostile path named by one class cannot stall other mounts.
    pub async fn connect(self: &std::sync::Arc<Self>, cfg: &VaultConfig) -> Result<VaultClient, String> {
        if let Some(c) = self.cached(cfg) {
            return Ok(c);
        }
        let pool = self.clone();
        let owned = cfg.clone();
        let client = tokio::task::spawn_blocking(move || pool.build(&owned))
            .await
            .map_err(|e| format!("building the Vault client failed: {e}"))??;
        Ok(self.keep(cfg, client))
    }

    fn cached(&self, cfg: &VaultConfig) -> Option<VaultClient> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients.get(cfg).cloned()
    }

    fn build(&self, cfg: &VaultConfig) -> Result<VaultClient, String> {
        let mut client = VaultClient::new(cfg, self.timeout)?;
        if let Some(m) = &self.metrics {
            client = client.with_metrics(m.clone());
        }
        Ok(client)
    }

    /// Keeps a freshly built client, or the one a concurrent build kept first.
    fn keep(&self, cfg: &VaultConfig, client: VaultClient) -> VaultClient {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = clients.get(cfg) {
            return existing.clone();
        }
        if clients.len() >= MAX_POOLED_CLIENTS {
            clients.clear();
        }
        clients.insert(cfg.clone(), client.clone());
        client
    }
}
