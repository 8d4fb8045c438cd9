//! The project's Kubernetes API server double: the backend of the test bed
//! where no real kube-apiserver binary exists (this project's CI), chosen
//! by [`crate::kubernetes::control_plane`] when `KUBEBUILDER_ASSETS` names none.
//!
//! It serves the API on loopback over TLS with the control plane's own
//! certificates, so everything that talks to it — the provider (kube-rs),
//! OpenBao's TokenReview calls, `kubectl`, the test bed's admin client —
//! talks to it exactly as to a real server, through the same fault proxy.
//! It behaves as kube-apiserver does wherever the provider can tell
//! (`tests/it/kubernetes_conformance.rs` asserts those behaviours on
//! whichever backend runs):
//!
//! - authentication by client certificate (the admin: `system:masters`),
//!   bearer token (service-account JWTs, RS256 or ES256, checked like the
//!   real authenticator: signature, issuer, audience, time, and that the
//!   service account and the bound pod still exist with the uids the token
//!   names) or anonymous; impersonation;
//! - RBAC evaluated from the Roles and bindings in the store and the
//!   bootstrap policy ([`rbac`]), `resourceNames` matching lists and
//!   watches by `metadata.name`;
//! - TokenRequest with the real claims (pod, node, jti), TokenReview, the
//!   issuer discovery document and `/openid/v1/jwks` (406 unless the client
//!   accepts `application/jwk-set+json`), access reviews, discovery;
//! - one global resourceVersion, lists paginated from a consistent
//!   snapshot, watches from a resourceVersion with bookmarks and `410 Gone`
//!   past a five-minute history ([`store`]);
//! - server-side apply with managed fields and conflicts, merge, strategic
//!   and JSON patches ([`apply`]);
//! - the validation and admission the provider could meet: name rules per
//!   kind (a pod name is a DNS subdomain), immutable Secrets, Secret types,
//!   namespaces that must exist, pods whose service account must exist,
//!   graceful pod deletion with no kubelet to finish it ([`validate`]).
//!
//! What it knowingly leaves out is listed in `docs/architecture.md`.

mod api;
mod apply;
mod discovery;
mod protobuf;
mod rbac;
mod read;
mod resources;
mod reviews;
mod status;
mod store;
mod tokens;
mod validate;
mod write;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use serde_json::json;
use tokio::task::JoinSet;

use crate::kubernetes::pki::{self, Signing};
use store::Store;
use tokens::{Signer, Subject, User};

pub use discovery::VERSION;

/// What the double is started with: the control plane's key material.
pub struct Config {
    /// PEM of the CA that signs the serving and client certificates.
    pub ca_pem: String,
    /// The serving certificate and key (PEM).
    pub serving: (String, String),
    /// Client certificates (PEM) and the user each authenticates as.
    pub clients: Vec<(String, String, Vec<String>)>,
    /// How tokens are signed, and the key (PKCS#8 PEM) and its public key
    /// (SPKI PEM).
    pub signing: (Signing, String, String),
}

/// State shared by the connections.
struct Shared {
    store: Mutex<Store>,
    signer: Signer,
    /// `https://127.0.0.1:<port>`: the issuer and the API audience.
    issuer: String,
    uid_seed: [u8; 16],
    uid_counter: AtomicU64,
}

impl Shared {
    /// The store; a panic while it was held leaves data consistent enough
    /// for a double, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A fresh uid, shaped like Kubernetes' (a version-4 UUID).
    fn uid(&self) -> String {
        let n = self.uid_counter.fetch_add(1, Ordering::Relaxed);
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.uid_seed);
        ctx.update(&n.to_be_bytes());
        let d = ctx.finish();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d.as_ref()[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex::encode(b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    /// Checks `token` for one of `audiences` as the service-account
    /// authenticator does, including that its service account and bound
    /// pod still exist with the uids it names. The error is what a
    /// TokenReview reports.
    fn review(&self, token: &str, audiences: &[String]) -> Result<Subject, String> {
        let subject = self
            .signer
            .subject(token, &self.issuer, audiences, tokens::unix_now())?;
        let invalidated = || "service account token has been invalidated".to_string();
        let store = self.lock();
        let get = |plural: &str, name: &str| {
            resources::find("", "v1", plural)
                .and_then(|r| store.get(&(store::id(r), subject.namespace.clone(), name.to_string())))
        };
        let (sa_name, sa_uid) = &subject.service_account;
        let sa = get("serviceaccounts", sa_name).ok_or_else(invalidated)?;
        let uid = sa["metadata"]["uid"].as_str().unwrap_or_default();
        if uid != sa_uid {
            return Err(format!("service account UID ({uid}) does not match claim ({sa_uid})"));
        }
        if let Some((pod_name, pod_uid)) = &subject.pod {
            let pod = get("pods", pod_name).ok_or_else(invalidated)?;
            let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
            if uid != pod_uid {
                return Err(format!("pod UID ({uid}) does not match claim ({pod_uid})"));
            }
            // A pod whose deletion began over a minute ago no longer
            // vouches for its tokens.
            if let Some(deleting) = pod["metadata"]["deletionTimestamp"].as_str() {
                let at = humantime::parse_rfc3339(deleting)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                let grace = pod["metadata"]["deletionGracePeriodSeconds"].as_u64().unwrap_or(0);
                if at.saturating_sub(grace) + 60 < tokens::unix_now() {
                    return Err(invalidated());
                }
            }
        }
        Ok(subject)
    }
}

/// A running double. Dropping it stops its server (on a thread and runtime
/// of its own, so it outlives any one test's runtime) and closes every
/// connection.
pub struct KubeDouble {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for KubeDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl KubeDouble {
    /// Starts the double on a free loopback port.
    pub fn start(config: Config) -> Result<KubeDouble> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the Kubernetes double")?;
        listener.set_nonblocking(true).context("a non-blocking listener")?;
        let addr = listener.local_addr()?;
        let issuer = format!("https://{addr}");
        let (signing, private, public) = &config.signing;
        let signer = Signer::new(*signing, private, public)?;
        let mut uid_seed = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut uid_seed)
            .map_err(|_| anyhow!("the system RNG failed"))?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            signer,
            issuer,
            uid_seed,
            uid_counter: AtomicU64::new(0),
        });
        shared.bootstrap();
        let (tls, clients) = tls(&config)?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kube-double")
            .enable_all()
            .build()
            .context("the Kubernetes double's runtime")?;
        std::thread::Builder::new()
            .name("kube-double".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = accept(listener, tls, clients, shared) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends every connection task.
            })
            .context("the Kubernetes double's thread")?;
        Ok(KubeDouble { addr, stop: Some(stop) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Shared {
    /// What kube-apiserver creates at start: the bootstrap RBAC policy and
    /// the `default`, `kube-system`, `kube-public` and `kube-node-lease`
    /// namespaces.
    fn bootstrap(&self) {
        let mut store = self.lock();
        let now = tokens::rfc3339(tokens::unix_now());
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let object = json!({
                "metadata": {"name": ns, "uid": self.uid(), "creationTimestamp": now,
                    "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            store.put((("", "namespaces"), String::new(), ns.into()), object);
        }
        for (plural, mut object) in rbac::bootstrap() {
            let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
            object["metadata"]["uid"] = json!(self.uid());
            object["metadata"]["creationTimestamp"] = json!(now);
            store.put((("rbac.authorization.k8s.io", plural), String::new(), name), object);
        }
    }
}

type Clients = Arc<Vec<(CertificateDer<'static>, User)>>;

/// The serving configuration (client certificates asked for and checked
/// against the CA, but optional) and the known client certificates.
fn tls(config: &Config) -> Result<(tokio_rustls::TlsAcceptor, Clients)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(config.ca_pem.as_bytes()) {
        roots
            .add(cert.context("the CA certificate")?)
            .context("trusting the CA")?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), pki::provider())
        .allow_unauthenticated()
        .build()
        .context("the client certificate verifier")?;
    let (chain, key) = pki::identity(&config.serving)?;
    let mut server = rustls::ServerConfig::builder_with_provider(pki::provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the serving certificate")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut clients = Vec::new();
    for (cert_pem, name, groups) in &config.clients {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).context("a client certificate")?;
        let mut groups = groups.clone();
        groups.push("system:authenticated".into());
        clients.push((
            cert,
            User {
                name: name.clone(),
                groups,
                ..User::default()
            },
        ));
    }
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(server)), Arc::new(clients)))
}

async fn accept(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    clients: Clients,
    shared: Arc<Shared>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let (tls, clients, shared) = (tls.clone(), clients.clone(), shared.clone());
        connections.spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| clients.iter().find(|(c, _)| c == cert))
                .map(|(_, user)| user.clone());
            let service = hyper::service::service_fn(move |req| api::handle(shared.clone(), peer.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
