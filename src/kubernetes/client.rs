//! How we talk to the Kubernetes API: the few calls the provider makes,
//! through kube-rs (the field's client: in-cluster and kubeconfig
//! configuration with exec and OIDC auth plugins, typed objects,
//! server-side apply, watches that relist on their own).
//!
//! It covers TokenRequest for pods whose volume context carries no token,
//! the Secret holding the object-version key (read, created and watched),
//! synced Secrets, the pods of this node (as metadata only) and the
//! issuer's public keys. Every failure
//! becomes a [`KubeError`], and [`KubeError::classify`] is the one place
//! that turns it into the provider's [`Error`].

use std::path::Path;
use std::time::Duration;

use ::kube::api::{ListParams, Patch, PatchParams, PostParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::core::PartialObjectMeta;
use ::kube::runtime::watcher;
use ::kube::{Api, Client, Config};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};

use crate::error::{describe_chain, Error, ErrorKind};

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

    /// The provider's error for a failed attempt at `what`: refusals (with
    /// `fix`, the RBAC to grant) are PERMISSION_DENIED, a missing object
    /// NOT_FOUND, a request the server calls malformed INVALID_ARGUMENT, and
    /// an API server that is down, overloaded or slow UNAVAILABLE (nothing
    /// was minted, so the driver may retry).
    pub fn classify(self, what: &str, fix: &str) -> Error {
        let kind = match &self {
            KubeError::Status { code: 401 | 403, .. } => ErrorKind::KubeDenied,
            KubeError::Status { code: 404, .. } => ErrorKind::NotFound,
            KubeError::Status { code: 400 | 422, .. } => ErrorKind::InvalidRequest,
            KubeError::Status { code, .. } if *code == 429 || *code >= 500 => ErrorKind::KubeUnavailable,
            KubeError::Unreachable(_) => ErrorKind::KubeUnavailable,
            KubeError::Status { .. } | KubeError::BadResponse(_) => ErrorKind::BadResponse,
        };
        let error = Error::because(kind, what, self);
        match kind {
            ErrorKind::KubeDenied => error.hint(fix),
            _ => error,
        }
    }
}

/// Whether the API server refused a watcher's list or watch (401/403:
/// RBAC), which retrying will not change.
pub fn watch_refused(e: &watcher::Error) -> bool {
    let code = match e {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            match e {
                ::kube::Error::Api(status) => Some(status.code),
                _ => None,
            }
        }
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    };
    matches!(code, Some(401 | 403))
}

impl From<::kube::Error> for KubeError {
    fn from(e: ::kube::Error) -> Self {
        match e {
            ::kube::Error::Api(status) => KubeError::Status {
                code: status.code,
                reason: status.reason.clone(),
                message: status.message.clone(),
            },
            ::kube::Error::SerdeError(e) => KubeError::BadResponse(e.to_string()),
            ::kube::Error::FromUtf8(e) => KubeError::BadResponse(e.to_string()),
            ::kube::Error::BuildRequest(e) => KubeError::BadResponse(e.to_string()),
            ::kube::Error::HttpError(e) => KubeError::BadResponse(e.to_string()),
            other => KubeError::Unreachable(describe_chain(&other)),
        }
    }
}

/// A Kubernetes API client.
#[derive(Clone)]
pub struct KubeClient {
    client: Client,
    namespace: String,
    server: String,
    timeout: Duration,
}

/// Why no Kubernetes client could be configured: what was being loaded,
/// and the error behind it.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {}", describe_chain(source.as_ref()))]
pub struct ConfigError {
    what: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl ConfigError {
    fn new(what: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> ConfigError {
        ConfigError {
            what: what.into(),
            source: Box::new(source),
        }
    }
}

/// A token minted by the TokenRequest API.
pub struct IssuedToken {
    /// The JWT. Never logged.
    pub token: String,
}

impl KubeClient {
    /// A kubeconfig when given (its current context, exec and OIDC plugins
    /// included), else the in-cluster configuration. Each call is bounded
    /// by `timeout`.
    pub async fn load(kubeconfig: Option<&Path>, timeout: Duration) -> Result<KubeClient, ConfigError> {
        let mut config = match kubeconfig {
            Some(path) => {
                let what = || format!("kubeconfig {}", path.display());
                let kc = Kubeconfig::read_from(path).map_err(|e| ConfigError::new(what(), e))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| ConfigError::new(what(), e))?
            }
            None => {
                Config::incluster().map_err(|e| ConfigError::new("not in a cluster and no -kubeconfig given", e))?
            }
        };
        config.connect_timeout = Some(timeout.min(Duration::from_secs(10)));
        // No retries hidden in the client: a 429 or 503 is reported as such
        // (UNAVAILABLE, which the driver retries with its own backoff), not
        // turned into a timeout by retries that outlast the request bound.
        config.default_retry = false;
        let namespace = config.default_namespace.clone();
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|e| ConfigError::new("Kubernetes client", e))?;
        Ok(KubeClient {
            client,
            namespace,
            server,
            timeout,
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

    /// Runs one call within the request timeout.
    async fn bounded<T>(&self, call: impl std::future::Future<Output = ::kube::Result<T>>) -> Result<T, KubeError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(KubeError::from),
            Err(_) => Err(KubeError::Unreachable(format!("no answer within {:?}", self.timeout))),
        }
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
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.to_vec(),
                expiration_seconds: i64::try_from(expiration_seconds).ok(),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".to_string()),
                    kind: Some("Pod".to_string()),
                    name: Some(pod_name.to_string()),
                    uid: Some(pod_uid.to_string()),
                }),
            },
            ..Default::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let issued = self
            .bounded(api.create_token_request(service_account, &PostParams::default(), &request))
            .await?;
        let token = issued
            .status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| KubeError::BadResponse("TokenRequest without status.token".into()))?;
        Ok(IssuedToken { token })
    }

    /// The Secrets of `namespace`: for the calls below, and for the watcher
    /// of the object-version key Secret (narrowed to it by name).
    pub fn secrets(&self, namespace: &str) -> Api<Secret> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Reads a Secret; `Ok(None)` when it does not exist.
    pub async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, KubeError> {
        self.bounded(self.secrets(namespace).get_opt(name)).await
    }

    /// Creates a Secret; `Ok(None)` when one of that name already exists.
    pub async fn create_secret(&self, namespace: &str, secret: &Secret) -> Result<Option<Secret>, KubeError> {
        match self
            .bounded(self.secrets(namespace).create(&PostParams::default(), secret))
            .await
        {
            Ok(created) => Ok(Some(created)),
            Err(KubeError::Status { code: 409, .. }) => Ok(None),
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
        secret: &Secret,
    ) -> Result<Secret, KubeError> {
        let params = PatchParams::apply(field_manager);
        self.bounded(self.secrets(namespace).patch(name, &params, &Patch::Apply(secret)))
            .await
    }

    /// A pod's metadata; `Ok(None)` when it does not exist. Pods are only
    /// ever read as metadata: the provider needs names, uids and owners,
    /// never a pod's spec (whose environment can hold values nobody meant
    /// for it).
    pub async fn get_pod(&self, namespace: &str, name: &str) -> Result<Option<PartialObjectMeta<Pod>>, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.bounded(api.get_metadata_opt(name)).await
    }

    /// Whether the pod `namespace/name` with `uid` is scheduled to `node`
    /// (`list` on pods with field selectors, metadata only).
    pub async fn pod_on_node(&self, namespace: &str, name: &str, uid: &str, node: &str) -> Result<bool, KubeError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = ListParams::default().fields(&format!("metadata.name={name},spec.nodeName={node}"));
        let pods = self.bounded(api.list_metadata(&params)).await?;
        Ok(pods.items.iter().any(|p| p.metadata.uid.as_deref() == Some(uid)))
    }

    /// Every namespace's pods as metadata only, for the watcher (which
    /// narrows them to this node with a field selector).
    pub fn node_pods(&self) -> Api<PartialObjectMeta<Pod>> {
        Api::all(self.client.clone())
    }

    /// Reads any JSON document of the API server (`/openid/v1/jwks`, ...).
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, KubeError> {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| KubeError::BadResponse(e.to_string()))?;
        self.bounded(self.client.request::<serde_json::Value>(request)).await
    }
}
