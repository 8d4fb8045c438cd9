//! How we talk to the Kubernetes API: a small client over the shared HTTP
//! transport, configured in-cluster (service-account token, CA, namespace
//! files) or from a kubeconfig. It covers only what the provider needs:
//! TokenRequest for pods whose volume context carries no token, and the
//! Secret holding the object-version key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, Method};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::http::{self as transport, Endpoint, HttpClient, HttpError, Request, TlsOptions};

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Asks the API server for `PartialObjectMetadataList` instead of full pods:
/// the provider needs names, uids and deletion, never a pod's spec (whose
/// environment can hold values nobody meant for the provider).
const METADATA_LIST: &str = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";
/// The same for single objects and watch events.
const METADATA: &str = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// A failed Kubernetes API call.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The API server answered with a `Status` failure.
    #[error("Kubernetes API answered {code} {reason}: {message}")]
    Status {
        /// HTTP status code.
        code: u16,
        /// The `Status.reason` (Forbidden, NotFound, AlreadyExists, ...).
        reason: String,
        /// The `Status.message`.
        message: String,
    },
    /// The API server could not be reached or did not answer in time.
    #[error("cannot reach the Kubernetes API: {0}")]
    Unreachable(String),
    /// The answer was not what the API promises.
    #[error("unexpected response from the Kubernetes API: {0}")]
    BadResponse(String),
}

impl KubeError {
    /// HTTP status, when the server answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

#[derive(Clone)]
enum Credentials {
    /// Re-read on every call: projected tokens are rotated by kubelet.
    TokenFile(PathBuf),
    Token(Arc<str>),
    /// Client certificate (in the TLS config) or nothing.
    None,
}

/// A Kubernetes API client.
#[derive(Clone)]
pub struct KubeClient {
    http: HttpClient,
    credentials: Credentials,
    namespace: String,
    server: String,
}

/// A token minted by the TokenRequest API.
pub struct IssuedToken {
    /// The JWT. Never logged.
    pub token: String,
    /// Its expiry, as the API server reported it.
    pub expires: Option<SystemTime>,
}

impl KubeClient {
    /// A kubeconfig when given, else the in-cluster configuration.
    pub fn load(kubeconfig: Option<&Path>, timeout: Duration) -> Result<KubeClient, String> {
        match kubeconfig {
            Some(p) => Self::from_kubeconfig(p, timeout),
            None => Self::in_cluster(timeout),
        }
    }

    /// The configuration every pod gets: `KUBERNETES_SERVICE_HOST`/`PORT` and
    /// the mounted service-account files.
    pub fn in_cluster(timeout: Duration) -> Result<KubeClient, String> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| "not in a cluster (KUBERNETES_SERVICE_HOST unset) and no -kubeconfig given".to_string())?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".to_string());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let server = format!("https://{host}:{port}");
        let dir = Path::new(SA_DIR);
        let roots = transport::read_pem_certs(&dir.join("ca.crt"))?;
        let namespace = std::fs::read_to_string(dir.join("namespace"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "default".to_string());
        let tls = TlsOptions {
            roots,
            ..Default::default()
        };
        Self::build(
            &server,
            &tls,
            Credentials::TokenFile(dir.join("token")),
            namespace,
            timeout,
        )
    }

    /// Loads the current context of a kubeconfig file.
    pub fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<KubeClient, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
        let kc: Kubeconfig =
            serde_yaml_ng::from_str(&text).map_err(|e| format!("kubeconfig {} is not valid: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let ctx_name = kc.current_context.clone().ok_or("kubeconfig has no current-context")?;
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == ctx_name)
            .map(|c| &c.context)
            .ok_or_else(|| format!("kubeconfig context {ctx_name:?} not found"))?;
        let cluster = kc
            .clusters
            .iter()
            .find(|c| c.name == ctx.cluster)
            .map(|c| &c.cluster)
            .ok_or_else(|| format!("kubeconfig cluster {:?} not found", ctx.cluster))?;
        let user = match &ctx.user {
            Some(u) => kc
                .users
                .iter()
                .find(|x| &x.name == u)
                .map(|x| x.user.clone())
                .unwrap_or_default(),
            None => KcUser::default(),
        };
        let resolve = |p: &str| {
            if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                base.join(p)
            }
        };
        let b64 = base64::engine::general_purpose::STANDARD;

        let mut tls = TlsOptions {
            server_name: cluster.tls_server_name.clone(),
            skip_verify: cluster.insecure_skip_tls_verify,
            ..Default::default()
        };
        if let Some(data) = &cluster.certificate_authority_data {
            let pem = b64
                .decode(data.trim())
                .map_err(|e| format!("certificate-authority-data: {e}"))?;
            tls.roots = transport::parse_pem_certs(&pem, "certificate-authority-data")?;
        } else if let Some(file) = &cluster.certificate_authority {
            tls.roots = transport::read_pem_certs(&resolve(file))?;
        }
        let cert = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(d), _) => Some(transport::parse_pem_certs(
                &b64.decode(d.trim())
                    .map_err(|e| format!("client-certificate-data: {e}"))?,
                "client-certificate-data",
            )?),
            (None, Some(f)) => Some(transport::read_pem_certs(&resolve(f))?),
            _ => None,
        };
        let key = match (&user.client_key_data, &user.client_key) {
            (Some(d), _) => Some(transport::parse_pem_key(
                &b64.decode(d.trim()).map_err(|e| format!("client-key-data: {e}"))?,
                "client-key-data",
            )?),
            (None, Some(f)) => Some(transport::read_pem_key(&resolve(f))?),
            _ => None,
        };
        if let (Some(c), Some(k)) = (cert, key) {
            tls.client_auth = Some((c, Arc::new(k)));
        }
        if user.exec.is_some() || user.auth_provider.is_some() {
            return Err("kubeconfig users with exec or auth-provider plugins are not supported: use a token or client certificate".to_string());
        }
        let credentials = match (&user.token, &user.token_file) {
            (Some(t), _) => Credentials::Token(Arc::from(t.as_str())),
            (None, Some(f)) => Credentials::TokenFile(resolve(f)),
            _ => Credentials::None,
        };
        let namespace = ctx.namespace.clone().unwrap_or_else(|| "default".to_string());
        Self::build(&cluster.server, &tls, credentials, namespace, timeout)
    }

    fn build(
        server: &str,
        tls: &TlsOptions,
        credentials: Credentials,
        namespace: String,
        timeout: Duration,
    ) -> Result<KubeClient, String> {
        let endpoint = Endpoint::parse(server).map_err(|e| format!("Kubernetes API server address: {e}"))?;
        let http = HttpClient::new(&endpoint, tls, timeout, MAX_RESPONSE)?;
        Ok(KubeClient {
            http,
            credentials,
            namespace,
            server: server.to_string(),
        })
    }

    /// The namespace the provider runs in (or the kubeconfig context's).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The API server URL, for messages.
    pub fn server(&self) -> &str {
        &self.server
    }

    fn auth_headers(&self) -> Result<Vec<(HeaderName, String)>, KubeError> {
        let mut headers = vec![(http::header::ACCEPT, "application/json".to_string())];
        let token = match &self.credentials {
            Credentials::TokenFile(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| {
                        KubeError::Unreachable(format!("cannot read service-account token {}: {e}", p.display()))
                    })?
                    .trim()
                    .to_string(),
            ),
            Credentials::Token(t) => Some(t.to_string()),
            Credentials::None => None,
        };
        if let Some(t) = token {
            headers.push((HeaderName::from_static("authorization"), format!("Bearer {t}")));
        }
        Ok(headers)
    }

    /// The same headers, asking for metadata only (`accept`).
    fn metadata_headers(&self, accept: &str) -> Result<Vec<(HeaderName, String)>, KubeError> {
        let mut headers = self.auth_headers()?;
        for (name, value) in headers.iter_mut() {
            if *name == http::header::ACCEPT {
                *value = accept.to_string();
            }
        }
        Ok(headers)
    }

    /// Reads any JSON document of the API server (`/openid/v1/jwks`, ...).
    pub async fn get_json(&self, path: &str) -> Result<Json, KubeError> {
        self.call(Method::GET, path.to_string(), None)
            .await
            .map(|(_, json)| json)
    }

    /// Whether the pod `namespace/name` with `uid` is scheduled to `node`,
    /// asked for its metadata only (`list` on pods with field selectors).
    pub async fn pod_on_node(&self, namespace: &str, name: &str, uid: &str, node: &str) -> Result<bool, KubeError> {
        let selector: String =
            form_urlencoded::byte_serialize(format!("metadata.name={name},spec.nodeName={node}").as_bytes()).collect();
        let req = Request {
            method: Method::GET,
            path_and_query: format!("/api/v1/namespaces/{}/pods?fieldSelector={selector}", seg(namespace)),
            headers: self.metadata_headers(METADATA_LIST)?,
            body: None,
        };
        let (_, json) = self.exchange(req).await?;
        Ok(json.get("items").and_then(Json::as_array).is_some_and(|items| {
            items
                .iter()
                .any(|p| p.pointer("/metadata/uid").and_then(Json::as_str) == Some(uid))
        }))
    }

    async fn call(&self, method: Method, path: String, body: Option<Json>) -> Result<(u16, Json), KubeError> {
        let headers = self.auth_headers()?;
        let req = Request {
            method,
            path_and_query: path,
            headers,
            body: body.map(|b| (Bytes::from(b.to_string()), "application/json")),
        };
        self.exchange(req).await
    }

    async fn exchange(&self, req: Request) -> Result<(u16, Json), KubeError> {
        let resp = self.http.send(req).await.map_err(|e| match e {
            HttpError::Build(m) => KubeError::BadResponse(m),
            other => KubeError::Unreachable(other.to_string()),
        })?;
        let json: Json = if resp.body.is_empty() {
            Json::Null
        } else {
            serde_json::from_slice(&resp.body)
                .map_err(|e| KubeError::BadResponse(format!("HTTP {}: body is not JSON: {e}", resp.status)))?
        };
        if (200..300).contains(&resp.status) {
            return Ok((resp.status, json));
        }
        let text = |k: &str| json.get(k).and_then(Json::as_str).unwrap_or_default().to_string();
        Err(KubeError::Status {
            code: resp.status,
            reason: text("reason"),
            message: text("message"),
        })
    }

    /// Mints a pod-bound service-account token (TokenRequest API).
    pub async fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[String],
        expiration_seconds: u64,
        pod_name: &str,
        pod_uid: &str,
    ) -> Result<IssuedToken, KubeError> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": expiration_seconds,
                "boundObjectRef": { "kind": "Pod", "apiVersion": "v1", "name": pod_name, "uid": pod_uid },
            }
        });
        let path = format!(
            "/api/v1/namespaces/{}/serviceaccounts/{}/token",
            seg(namespace),
            seg(service_account)
        );
        let (_, json) = self.call(Method::POST, path, Some(body)).await?;
        let status = json
            .get("status")
            .ok_or_else(|| KubeError::BadResponse("TokenRequest without status".into()))?;
        let token = status
            .get("token")
            .and_then(Json::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| KubeError::BadResponse("TokenRequest without status.token".into()))?;
        let expires = status
            .get("expirationTimestamp")
            .and_then(Json::as_str)
            .and_then(|s| humantime::parse_rfc3339_weak(s).ok());
        Ok(IssuedToken {
            token: token.to_string(),
            expires,
        })
    }

    /// Reads a Secret; `Ok(None)` when it does not exist.
    pub async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Json>, KubeError> {
        let path = format!("/api/v1/namespaces/{}/secrets/{}", seg(namespace), seg(name));
        match self.call(Method::GET, path, None).await {
            Ok((_, json)) => Ok(Some(json)),
            Err(KubeError::Status { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a Secret; `Ok(None)` when one of that name already exists.
    pub async fn create_secret(&self, namespace: &str, secret: Json) -> Result<Option<Json>, KubeError> {
        let path = format!("/api/v1/namespaces/{}/secrets", seg(namespace));
        match self.call(Method::POST, path, Some(secret)).await {
            Ok((_, json)) => Ok(Some(json)),
            Err(KubeError::Status { code: 409, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl KubeClient {
    /// Reads a pod's metadata (`PartialObjectMetadata`); `Ok(None)` when it
    /// does not exist.
    pub async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<Json>, KubeError> {
        let req = Request {
            method: Method::GET,
            path_and_query: format!("/api/v1/namespaces/{}/pods/{}", seg(namespace), seg(name)),
            headers: self.metadata_headers(METADATA)?,
            body: None,
        };
        match self.exchange(req).await {
            Ok((_, json)) => Ok(Some(json)),
            Err(KubeError::Status { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Server-side apply of a Secret under `field_manager`, without force:
    /// fields another manager owns make it fail with 409 rather than be
    /// taken over.
    pub async fn apply_secret(
        &self,
        namespace: &str,
        name: &str,
        field_manager: &str,
        secret: Json,
    ) -> Result<Json, KubeError> {
        let path = format!(
            "/api/v1/namespaces/{}/secrets/{}?fieldManager={}",
            seg(namespace),
            seg(name),
            seg(field_manager)
        );
        let headers = self.auth_headers()?;
        // JSON is YAML, so the body needs no YAML encoder.
        let req = Request {
            method: Method::PATCH,
            path_and_query: path,
            headers,
            body: Some((Bytes::from(secret.to_string()), "application/apply-patch+yaml")),
        };
        let (_, json) = self.exchange(req).await?;
        Ok(json)
    }

    /// Lists the pods scheduled to `node`: the list's resourceVersion and
    /// the UIDs present.
    pub async fn list_node_pods(&self, node: &str) -> Result<(String, Vec<String>), KubeError> {
        let selector = node_selector(node);
        let req = Request {
            method: Method::GET,
            path_and_query: format!("/api/v1/pods?fieldSelector={selector}"),
            headers: self.metadata_headers(METADATA_LIST)?,
            body: None,
        };
        let (_, json) = self.exchange(req).await?;
        let rv = json
            .pointer("/metadata/resourceVersion")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_string();
        let uids = json
            .get("items")
            .and_then(Json::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|p| p.pointer("/metadata/uid").and_then(Json::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok((rv, uids))
    }

    /// Watches the pods of `node` from `resource_version`, calling `deleted`
    /// with the UID of every pod that goes away, until the server ends the
    /// watch (after `timeout`) or the connection breaks.
    pub async fn watch_node_pods(
        &self,
        node: &str,
        resource_version: &str,
        timeout: Duration,
        mut deleted: impl FnMut(String),
    ) -> Result<(), KubeError> {
        use http_body_util::BodyExt as _;
        let selector = node_selector(node);
        let path = format!(
            "/api/v1/pods?watch=true&fieldSelector={selector}&resourceVersion={}&timeoutSeconds={}&allowWatchBookmarks=true",
            seg(resource_version),
            timeout.as_secs()
        );
        let req = Request {
            method: Method::GET,
            path_and_query: path,
            headers: self.metadata_headers(METADATA)?,
            body: None,
        };
        let (status, mut body) = self
            .http
            .send_streaming(req)
            .await
            .map_err(|e| KubeError::Unreachable(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(KubeError::Status {
                code: status,
                reason: String::new(),
                message: "watch refused".into(),
            });
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| KubeError::Unreachable(format!("watch broke: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            if buf.len() > MAX_RESPONSE {
                return Err(KubeError::BadResponse("watch event too large".into()));
            }
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let Ok(event) = serde_json::from_slice::<Json>(&line) else {
                    continue;
                };
                match event.get("type").and_then(Json::as_str) {
                    Some("DELETED") => {
                        if let Some(uid) = event.pointer("/object/metadata/uid").and_then(Json::as_str) {
                            deleted(uid.to_string());
                        }
                    }
                    Some("ERROR") => {
                        let code = event.pointer("/object/code").and_then(Json::as_u64).unwrap_or(500) as u16;
                        let message = event
                            .pointer("/object/message")
                            .and_then(Json::as_str)
                            .unwrap_or_default();
                        return Err(KubeError::Status {
                            code,
                            reason: "WatchError".into(),
                            message: message.into(),
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// The escaped field selector for the pods scheduled to `node`.
fn node_selector(node: &str) -> String {
    form_urlencoded::byte_serialize(format!("spec.nodeName={node}").as_bytes()).collect()
}

/// Escapes a name for use as one URL path segment. Kubernetes names are
/// DNS labels already; this only guards against malformed input.
fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context")]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<Named<KcContext>>,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    context: T,
}

#[derive(Deserialize)]
struct KcContext {
    cluster: String,
    user: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: KcCluster,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct KcCluster {
    server: String,
    certificate_authority: Option<String>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: KcUser,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "kebab-case")]
struct KcUser {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    client_key: Option<String>,
    client_key_data: Option<String>,
    exec: Option<serde_yaml_ng::Value>,
    auth_provider: Option<serde_yaml_ng::Value>,
}
