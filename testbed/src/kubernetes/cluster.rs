//! One test's share of the real control plane: its own namespaces and
//! nodes on the shared kube-apiserver, a [`KubeProxy`] in front of it for
//! the test's clients, and the calls a test makes as a cluster admin or as
//! kubelet (pods, tokens, Secrets, RBAC).
//!
//! Names: a test's namespace is derived from the test's name (its thread's
//! name) and a counter, so `kubectl get pods -A` on a kept control plane
//! says which test made what; [`Cluster::namespace`] gives further
//! namespaces under the same prefix, and cluster-scoped objects (nodes,
//! ClusterRoles, ClusterRoleBindings) carry the namespace in their names.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::kubernetes::control_plane::{ControlPlane, Https};
use crate::kubernetes::deploy;
use crate::kubernetes::kube_proxy::KubeProxy;

/// The provider's ServiceAccount, as `deploy/base` names it.
pub const PROVIDER_SA: &str = "vault-csi-provider";
/// The components whose RBAC a test world's provider gets: everything but
/// Secret sync, which an admin binds per namespace ([`Cluster::allow_sync`]).
pub const PROVIDER_COMPONENTS: &[&str] = &["token-request", "revoke-on-pod-delete", "secret-sync"];
/// The field manager of the test bed's own writes.
const FIELD_MANAGER: &str = "vcp-testbed";

/// Extra pod attributes for [`Cluster::add_pod_with`].
#[derive(Clone, Debug, Default)]
pub struct PodOptions {
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.ownerReferences`, as JSON objects.
    pub owner_references: Vec<Value>,
}

/// One test's view of the control plane.
pub struct Cluster {
    cp: Arc<ControlPlane>,
    proxy: KubeProxy,
    /// The namespace of the test's application pods.
    pub namespace: String,
    /// The namespace the test's provider runs in (its ServiceAccount, RBAC
    /// and object-version key Secret).
    pub provider_namespace: String,
    /// The node the test's pods (and provider) run on.
    pub node: String,
    /// Another node, for pods that are not the provider's.
    pub other_node: String,
}

impl Cluster {
    /// A share of the test binary's control plane ([`ControlPlane::shared`]).
    pub async fn start() -> Result<Cluster> {
        Self::on(ControlPlane::shared().await?).await
    }

    /// A share of `cp`: namespaces for the application and the provider,
    /// two nodes, service account `app`, the provider's ServiceAccount with
    /// the RBAC `deploy/` renders ([`PROVIDER_COMPONENTS`]), and Vault's
    /// TokenReview identity.
    pub async fn on(cp: Arc<ControlPlane>) -> Result<Cluster> {
        let thread = std::thread::current();
        Self::named(cp, thread.name().unwrap_or("t")).await
    }

    /// [`on`](Self::on), with namespaces named after `name` (the test's
    /// name by default; `demo` for the demo).
    pub async fn named(cp: Arc<ControlPlane>, name: &str) -> Result<Cluster> {
        let namespace = unique_prefix(name);
        let proxy = KubeProxy::start(&cp).await?;
        let cluster = Cluster {
            provider_namespace: format!("{namespace}-csi"),
            node: format!("{namespace}-node-1"),
            other_node: format!("{namespace}-node-2"),
            namespace,
            cp,
            proxy,
        };
        cluster.add_namespace(&cluster.namespace).await?;
        for node in [&cluster.node, &cluster.other_node] {
            cluster
                .apply(&[json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})])
                .await?;
        }
        cluster.add_service_account(&cluster.namespace, "app").await?;
        cluster
            .install_provider(&cluster.provider_namespace, PROVIDER_COMPONENTS)
            .await?;
        Ok(cluster)
    }

    /// The control plane behind the proxy.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// A client of the API server itself (not the proxy) as the cluster
    /// admin (`system:masters`, by client certificate).
    pub fn admin_client(&self) -> &Https {
        self.cp.admin()
    }

    /// A client of the API server itself without a client certificate:
    /// requests carry a bearer token, or nothing (anonymous).
    pub fn client(&self) -> Result<Https> {
        Ok(Https::new(self.cp.addr(), self.cp.client_config()?))
    }

    /// The proxy the test's clients use.
    pub fn proxy(&self) -> &KubeProxy {
        &self.proxy
    }

    /// The URL clients are given: the proxy's.
    pub fn url(&self) -> String {
        self.proxy.url()
    }

    /// PEM of the CA clients must trust (the API server's and the proxy's).
    pub fn ca_pem(&self) -> String {
        self.cp.ca_pem()
    }

    /// SPKI PEM of the service-account signing key.
    pub fn jwt_public_key_pem(&self) -> String {
        self.cp.jwt_public_key_pem()
    }

    /// The `iss` of every service-account token.
    pub fn issuer(&self) -> String {
        self.cp.issuer()
    }

    /// A further namespace of this test, `<test prefix>-<name>`, created.
    pub async fn namespace(&self, name: &str) -> Result<String> {
        let ns = format!("{}-{name}", self.namespace);
        self.add_namespace(&ns).await?;
        Ok(ns)
    }

    /// Creates namespace `ns` if it does not exist.
    pub async fn add_namespace(&self, ns: &str) -> Result<()> {
        self.apply(&[json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})])
            .await
    }

    /// Creates a ServiceAccount if missing; its uid.
    pub async fn add_service_account(&self, ns: &str, name: &str) -> Result<String> {
        let sa = self
            .apply_one(
                &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}),
            )
            .await?;
        uid(&sa)
    }

    /// Creates a pod of `service_account` scheduled to `node` (replacing one
    /// of the same name, which gets a new uid); its uid. It stays Pending:
    /// there is no kubelet, the test plays it.
    pub async fn add_pod(&self, ns: &str, name: &str, service_account: &str, node: &str) -> Result<String> {
        self.add_pod_with(ns, name, service_account, node, PodOptions::default())
            .await
    }

    /// [`add_pod`](Self::add_pod) with labels and owner references.
    pub async fn add_pod_with(
        &self,
        ns: &str,
        name: &str,
        service_account: &str,
        node: &str,
        options: PodOptions,
    ) -> Result<String> {
        self.add_service_account(ns, service_account).await?;
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": options.labels,
                "ownerReferences": options.owner_references,
            },
            "spec": {
                "serviceAccountName": service_account,
                "automountServiceAccountToken": false,
                "nodeName": node,
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            },
        });
        let path = format!("/api/v1/namespaces/{ns}/pods");
        let body = serde_json::to_vec(&pod)?;
        let (status, answer) = self
            .admin("POST", &path, "application/json", Some(body.clone()))
            .await?;
        let created = match status {
            409 => {
                self.delete_pod(ns, name).await?;
                expect_ok(
                    self.admin("POST", &path, "application/json", Some(body)).await?,
                    "creating",
                    &path,
                )?
            }
            _ => expect_ok((status, answer), "creating", &path)?,
        };
        uid(&created)
    }

    /// A pod's uid, if it exists.
    pub async fn pod_uid(&self, ns: &str, name: &str) -> Result<Option<String>> {
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        match self.admin("GET", &path, "application/json", None).await? {
            (404, _) => Ok(None),
            answer => uid(&expect_ok(answer, "reading", &path)?).map(Some),
        }
    }

    /// Deletes a pod at once (grace period 0: nothing else would finish a
    /// graceful deletion): its bound tokens stop reviewing, and watches see
    /// it go.
    pub async fn delete_pod(&self, ns: &str, name: &str) -> Result<()> {
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let body = serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}))?;
        match self.admin("DELETE", &path, "application/json", Some(body)).await? {
            (404, _) => Ok(()),
            answer => expect_ok(answer, "deleting", &path).map(|_| ()),
        }
    }

    /// A pod-bound token as kubelet asks for one for the CSI driver
    /// (TokenRequest with `boundObjectRef` to the pod). Empty `audiences`
    /// means the API server's own; the server refuses `ttl` below 10 minutes.
    pub async fn pod_token(&self, ns: &str, pod: &str, audiences: &[&str], ttl: Duration) -> Result<String> {
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}");
        let found = expect_ok(
            self.admin("GET", &path, "application/json", None).await?,
            "reading",
            &path,
        )?;
        let sa = found["spec"]["serviceAccountName"]
            .as_str()
            .ok_or_else(|| anyhow!("pod {ns}/{pod} names no service account"))?;
        self.bound_token(ns, pod, &uid(&found)?, sa, audiences, ttl).await
    }

    /// [`pod_token`](Self::pod_token) for a pod whose uid and service
    /// account the caller knows (it just created the pod).
    pub async fn bound_token(
        &self,
        ns: &str,
        pod: &str,
        pod_uid: &str,
        sa: &str,
        audiences: &[&str],
        ttl: Duration,
    ) -> Result<String> {
        let bound = json!({"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": pod_uid});
        self.token(ns, sa, audiences, ttl, Some(bound)).await
    }

    /// A token of a service account bound to no object (the provider's or
    /// Vault's reviewer identity); creates the service account if missing.
    /// Empty `audiences` means the API server's own, which API calls need.
    pub async fn service_account_token(&self, ns: &str, sa: &str, audiences: &[&str], ttl: Duration) -> Result<String> {
        self.add_service_account(ns, sa).await?;
        self.token(ns, sa, audiences, ttl, None).await
    }

    async fn token(
        &self,
        ns: &str,
        sa: &str,
        audiences: &[&str],
        ttl: Duration,
        bound: Option<Value>,
    ) -> Result<String> {
        let mut spec = json!({"audiences": audiences, "expirationSeconds": ttl.as_secs()});
        if let Some(bound) = bound {
            spec["boundObjectRef"] = bound;
        }
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        let path = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
        let answer = self
            .admin("POST", &path, "application/json", Some(serde_json::to_vec(&request)?))
            .await?;
        let issued = expect_ok(answer, "requesting a token at", &path)?;
        issued["status"]["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("TokenRequest at {path} answered without status.token"))
    }

    /// A Secret as a GET returns it, if it exists.
    pub async fn secret(&self, ns: &str, name: &str) -> Result<Option<Value>> {
        let path = format!("/api/v1/namespaces/{ns}/secrets/{name}");
        match self.admin("GET", &path, "application/json", None).await? {
            (404, _) => Ok(None),
            answer => expect_ok(answer, "reading", &path).map(Some),
        }
    }

    /// Creates or replaces a Secret as an admin would (`metadata.name`
    /// required; `data` base64): an immutable one is deleted and created
    /// again, until this creation wins over whoever else creates it.
    pub async fn put_secret(&self, ns: &str, secret: Value) -> Result<()> {
        let mut secret = secret;
        secret["metadata"]["namespace"] = json!(ns);
        let name = secret["metadata"]["name"]
            .as_str()
            .ok_or_else(|| anyhow!("a Secret without metadata.name"))?
            .to_string();
        let collection = format!("/api/v1/namespaces/{ns}/secrets");
        let path = format!("{collection}/{name}");
        let body = serde_json::to_vec(&secret)?;
        match self
            .admin("POST", &collection, "application/json", Some(body.clone()))
            .await?
        {
            (409, _) => {}
            answer => return expect_ok(answer, "creating", &collection).map(|_| ()),
        }
        match self.admin("PUT", &path, "application/json", Some(body.clone())).await? {
            (422, _) => {}
            answer => return expect_ok(answer, "replacing", &path).map(|_| ()),
        }
        for _ in 0..20 {
            self.delete_secret(ns, &name).await?;
            match self
                .admin("POST", &collection, "application/json", Some(body.clone()))
                .await?
            {
                (409, _) => {}
                answer => return expect_ok(answer, "creating", &collection).map(|_| ()),
            }
        }
        bail!("replacing {path}: another writer recreated it 20 times in a row")
    }

    /// Deletes a Secret (no error if it is gone).
    pub async fn delete_secret(&self, ns: &str, name: &str) -> Result<()> {
        let path = format!("/api/v1/namespaces/{ns}/secrets/{name}");
        match self.admin("DELETE", &path, "application/json", None).await? {
            (404, _) => Ok(()),
            answer => expect_ok(answer, "deleting", &path).map(|_| ()),
        }
    }

    /// Server-side applies `objects` as an admin (forcing conflicts).
    pub async fn apply(&self, objects: &[Value]) -> Result<()> {
        for object in objects {
            self.apply_one(object).await?;
        }
        Ok(())
    }

    async fn apply_one(&self, object: &Value) -> Result<Value> {
        let path = format!("{}?fieldManager={FIELD_MANAGER}&force=true", object_path(object)?);
        let answer = self
            .admin(
                "PATCH",
                &path,
                "application/apply-patch+yaml",
                Some(serde_json::to_vec(object)?),
            )
            .await?;
        expect_ok(answer, "applying", &path)
    }

    /// Deletes an object (no error if it is gone).
    pub async fn delete(&self, object: &Value) -> Result<()> {
        let path = object_path(object)?;
        match self.admin("DELETE", &path, "application/json", None).await? {
            (404, _) => Ok(()),
            answer => expect_ok(answer, "deleting", &path).map(|_| ()),
        }
    }

    /// A SecretProviderClass `name` in `ns` with `parameters` (provider
    /// `vault`), as its author writes it; the CSI driver's
    /// CustomResourceDefinition is installed first if missing.
    pub async fn add_class(&self, ns: &str, name: &str, parameters: &BTreeMap<String, String>) -> Result<()> {
        let crd = self.apply_one(&secret_provider_class_crd()).await?;
        let established = |crd: &Value| {
            crd["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"))
        };
        let path = object_path(&crd)?;
        let class = json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"provider": "vault", "parameters": parameters},
        });
        // A new definition is served a moment after it is established.
        let mut last = None;
        for _ in 0..100 {
            let current = expect_ok(
                self.admin("GET", &path, "application/json", None).await?,
                "reading",
                &path,
            )?;
            if established(&current) {
                match self.apply_one(&class).await {
                    Ok(_) => return Ok(()),
                    Err(e) => last = Some(e),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last.unwrap_or_else(|| anyhow!("the SecretProviderClass definition was never established")))
    }

    /// The provider's ServiceAccount ([`PROVIDER_SA`]) in `ns` (created if
    /// missing) with the RBAC that `deploy/base` and `components` render,
    /// placed in `ns`; cluster-scoped roles and bindings get `ns` in their
    /// names, so each install is its own.
    pub async fn install_provider(&self, ns: &str, components: &[&str]) -> Result<()> {
        self.add_namespace(ns).await?;
        let objects: Vec<Value> = deploy::rbac(&deploy::render(components)?)
            .into_iter()
            .map(|o| place(o, ns))
            .collect();
        self.apply(&objects).await
    }

    /// The provider's RBAC objects for `ns` as [`install_provider`] applies
    /// them with `components`.
    pub fn provider_rbac(ns: &str, components: &[&str]) -> Result<Vec<Value>> {
        Ok(deploy::rbac(&deploy::render(components)?)
            .into_iter()
            .map(|o| place(o, ns))
            .collect())
    }

    /// Narrows the key Secret's Role of the install in `ns` to what it was
    /// before the key watch: `get` on it by name (and `create` on Secrets),
    /// no `list` or `watch`.
    pub async fn key_role_from_before_the_watch(&self, ns: &str) -> Result<()> {
        let mut role = Self::provider_rbac(ns, &[])?
            .into_iter()
            .find(|o| o["kind"] == "Role")
            .ok_or_else(|| anyhow!("deploy/base renders no Role"))?;
        let rule = role["rules"]
            .as_array_mut()
            .and_then(|rules| rules.iter_mut().find(|r| r.get("resourceNames").is_some()))
            .ok_or_else(|| anyhow!("deploy/base's Role has no rule by name"))?;
        rule["verbs"] = json!(["get"]);
        self.apply(&[role]).await
    }

    /// Binds the `secret-sync` ClusterRole of the provider installed in
    /// `provider_ns` in namespace `ns`, as an admin does with
    /// `deploy/components/secret-sync/rolebinding-template.yaml`.
    pub async fn allow_sync(&self, provider_ns: &str, ns: &str) -> Result<()> {
        let binding = deploy::sync_rolebinding_template()?;
        self.apply(&[sync_binding(binding, provider_ns, ns)?]).await
    }

    /// A token of Vault's TokenReview identity: service account
    /// `vault-reviewer` of this test's namespace, bound to
    /// `system:auth-delegator` (what Vault's kubernetes auth needs).
    pub async fn reviewer_token(&self) -> Result<String> {
        let ns = &self.namespace;
        self.add_service_account(ns, "vault-reviewer").await?;
        self.apply(&[json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_scoped("vault-reviewer", ns)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
            "subjects": [{"kind": "ServiceAccount", "name": "vault-reviewer", "namespace": ns}],
        })])
        .await?;
        self.token(ns, "vault-reviewer", &[], Duration::from_secs(86400), None)
            .await
    }

    /// A kubeconfig for `token` against this test's proxy, whose context's
    /// namespace is `namespace` (what the provider takes as its own when it
    /// has no `-hmac-secret-namespace`).
    pub fn write_kubeconfig(&self, path: &Path, token: &str, namespace: &str) -> std::io::Result<()> {
        let user = json!({"token": token});
        write_kubeconfig(path, &self.url(), &self.ca_pem(), user, namespace)
    }

    /// A kubeconfig of the cluster admin, straight to the API server (for
    /// `kubectl` in tests).
    pub fn write_admin_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let (cert, key) = self.cp.admin_pem();
        let user = json!({
            "client-certificate-data": STANDARD.encode(cert),
            "client-key-data": STANDARD.encode(key),
        });
        write_kubeconfig(path, &self.cp.url(), &self.ca_pem(), user, &self.namespace)
    }

    /// Every request that reached the proxy: (method, path with query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.proxy.seen().into_iter().map(|s| (s.method, s.path)).collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.proxy.clear_seen();
    }

    /// Every pod read through the proxy (get, list, watch): its path
    /// (`...?list` or `...?watch` for collections) and whether only
    /// metadata was asked for (`Accept: ...;as=PartialObjectMetadata...`).
    pub fn pod_reads(&self) -> Vec<(String, bool)> {
        self.proxy
            .seen()
            .into_iter()
            .filter(|s| s.method == "GET")
            .filter_map(|s| {
                let path = s.path.split('?').next().unwrap_or_default().to_string();
                let segments: Vec<&str> = path.split('/').collect();
                let at = segments.iter().position(|p| *p == "pods")?;
                let metadata_only = s.accept.contains("as=PartialObjectMetadata");
                let shown = if at + 1 < segments.len() {
                    path
                } else if s.is_watch() {
                    format!("{path}?watch")
                } else {
                    format!("{path}?list")
                };
                Some((shown, metadata_only))
            })
            .collect()
    }

    /// Holds every answer back by `d` (zero: none).
    pub fn set_delay(&self, d: Duration) {
        self.proxy.set_delay(d);
    }

    /// While on, every request through the proxy is answered 503.
    pub fn set_unavailable(&self, on: bool) {
        self.proxy.set_unavailable(on);
    }

    /// While `Some(code)`, every request through the proxy is answered with
    /// `code` (see [`KubeProxy::set_failing`]).
    pub fn set_failing(&self, code: Option<u16>) {
        self.proxy.set_failing(code);
    }

    /// Whether clients may read the issuer discovery document and keys
    /// (see [`KubeProxy::set_issuer_discovery`]).
    pub fn set_issuer_discovery(&self, on: bool) {
        self.proxy.set_issuer_discovery(on);
    }

    /// Breaks off every open watch (clients resume from where they were).
    pub fn cut_watches(&self) {
        self.proxy.cut_watches();
    }

    /// Expires every watch's history, as a compaction does: open watches
    /// are broken off and resuming from any version seen so far is answered
    /// `410 Expired`, so clients must list again.
    pub async fn expire_watches(&self) -> Result<()> {
        // A write moves the store's version past everything clients hold.
        let marker = self
            .apply_one(&json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "vcp-watch-expiry", "namespace": self.namespace},
                "data": {"at": format!("{:?}", std::time::SystemTime::now())},
            }))
            .await?;
        let rv = str_at(&marker, "/metadata/resourceVersion")?
            .parse::<u64>()
            .context("a numeric resourceVersion")?;
        self.proxy.expire_watches_before(rv);
        Ok(())
    }

    async fn admin(&self, method: &str, path: &str, content_type: &str, body: Option<Vec<u8>>) -> Result<(u16, Value)> {
        self.cp.admin().call(method, path, content_type, body).await
    }
}

/// A namespace prefix unique in this process, from `name`.
fn unique_prefix(name: &str) -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    // `group::test_name` → `group-test-name`, as a DNS label.
    let mut slug = String::new();
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '-'
        };
        if !(c == '-' && slug.ends_with('-')) {
            slug.push(c);
        }
    }
    slug.truncate(40);
    let slug = slug.trim_matches('-');
    let slug = if slug.is_empty() || !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("t-{slug}")
    } else {
        slug.to_string()
    };
    format!("{}-{n}", slug.trim_end_matches('-'))
}

/// The Secrets Store CSI driver's SecretProviderClass definition, its
/// `v1` schema cut to what classes hold (parameters are strings).
fn secret_provider_class_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "secretproviderclasses.secrets-store.csi.x-k8s.io"},
        "spec": {
            "group": "secrets-store.csi.x-k8s.io",
            "scope": "Namespaced",
            "names": {
                "kind": "SecretProviderClass",
                "listKind": "SecretProviderClassList",
                "plural": "secretproviderclasses",
                "singular": "secretproviderclass",
            },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "provider": {"type": "string"},
                                "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
                                "secretObjects": {
                                    "type": "array",
                                    "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                },
                            },
                        },
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            }],
        },
    })
}

/// The API path of an object.
fn object_path(object: &Value) -> Result<String> {
    let api_version = str_at(object, "/apiVersion")?;
    let kind = str_at(object, "/kind")?;
    let name = str_at(object, "/metadata/name")?;
    let group = if api_version == "v1" {
        "/api/v1".to_string()
    } else {
        format!("/apis/{api_version}")
    };
    let lower = kind.to_ascii_lowercase();
    let plural = match lower.strip_suffix('y') {
        Some(stem) => format!("{stem}ies"),
        None if lower.ends_with('s') => format!("{lower}es"),
        None => format!("{lower}s"),
    };
    const CLUSTER_SCOPED: [&str; 8] = [
        "Namespace",
        "Node",
        "ClusterRole",
        "ClusterRoleBinding",
        "CSIDriver",
        "CustomResourceDefinition",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    if CLUSTER_SCOPED.contains(&kind) {
        Ok(format!("{group}/{plural}/{name}"))
    } else {
        let ns = str_at(object, "/metadata/namespace")?;
        Ok(format!("{group}/namespaces/{ns}/{plural}/{name}"))
    }
}

/// A rendered RBAC object moved into `ns`: namespaced objects into it,
/// cluster-scoped ones renamed for it, ServiceAccount subjects pointed at it.
fn place(mut object: Value, ns: &str) -> Value {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    match kind.as_str() {
        "ClusterRole" | "ClusterRoleBinding" => {
            if let Some(name) = object["metadata"]["name"].as_str() {
                object["metadata"]["name"] = json!(cluster_scoped(name, ns));
            }
        }
        _ => object["metadata"]["namespace"] = json!(ns),
    }
    if object["roleRef"]["kind"] == "ClusterRole" {
        if let Some(name) = object["roleRef"]["name"].as_str() {
            object["roleRef"]["name"] = json!(cluster_scoped(name, ns));
        }
    }
    place_subjects(&mut object, ns);
    object
}

fn place_subjects(binding: &mut Value, ns: &str) {
    if let Some(subjects) = binding.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects.iter_mut().filter(|s| s["kind"] == "ServiceAccount") {
            s["namespace"] = json!(ns);
        }
    }
}

/// A RoleBinding of the secret-sync ClusterRole as an admin writes it
/// (the template, or an example's), placed in `ns` for the provider
/// installed in `provider_ns`.
pub fn sync_binding(mut binding: Value, provider_ns: &str, ns: &str) -> Result<Value> {
    binding["metadata"]["namespace"] = json!(ns);
    binding["metadata"]["name"] = json!(cluster_scoped(str_at(&binding, "/metadata/name")?, provider_ns));
    binding["roleRef"]["name"] = json!(cluster_scoped(str_at(&binding, "/roleRef/name")?, provider_ns));
    place_subjects(&mut binding, provider_ns);
    Ok(binding)
}

/// The name of a cluster-scoped object of the install in `ns`.
pub fn cluster_scoped(name: &str, ns: &str) -> String {
    format!("{name}.{ns}")
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Result<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no {pointer} in {v}"))
}

fn uid(object: &Value) -> Result<String> {
    str_at(object, "/metadata/uid").map(str::to_owned)
}

/// The body of a 2xx answer, or an error with the server's message.
fn expect_ok((status, body): (u16, Value), what: &str, path: &str) -> Result<Value> {
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let message = body["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    bail!("{what} {path}: the API server answered {status}: {message}")
}

fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, user: Value, namespace: &str) -> std::io::Result<()> {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "test",
            "cluster": {"server": server, "certificate-authority-data": STANDARD.encode(ca_pem.as_bytes())},
        }],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
        "current-context": "test",
    });
    let yaml = serde_yaml_ng::to_string(&config).map_err(std::io::Error::other)?;
    std::fs::write(path, yaml)
}
