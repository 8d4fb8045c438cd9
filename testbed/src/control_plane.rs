//! A real Kubernetes control plane for the tests and the demo: the
//! `kube-apiserver` and `etcd` binaries of the envtest convention (the
//! directory `KUBEBUILDER_ASSETS` names), started on loopback with free
//! ports, TLS, an admin client certificate, the server's own URL as the
//! service-account issuer, RS256 or ES256 signing keys and `Node,RBAC`
//! authorization.
//!
//! There is no controller-manager, scheduler or kubelet: namespaces get no
//! `default` ServiceAccount and pods stay Pending, so the test bed creates
//! what it uses and plays the kubelet itself (see [`crate::cluster`]).
//!
//! The processes are always stopped, also when a test fails or panics or
//! the test process is killed: they run under a small shell script whose
//! stdin is a pipe only this process holds. When the pipe closes — the
//! [`ControlPlane`] dropped, or the process gone for any reason — the script
//! stops both servers and removes their directory. One control plane serves
//! a whole test binary ([`ControlPlane::shared`]); tests keep apart by
//! namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;

/// The variable naming the directory with `kube-apiserver` and `etcd`.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";
/// The oldest Kubernetes minor version the test bed accepts (1.30).
pub const OLDEST_MINOR: u32 = 30;

/// What a person without the assets should do.
const HOW_TO_GET_ASSETS: &str = "the tests and the demo run against a real Kubernetes API server: set \
KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd (Kubernetes 1.30 or later). \
scripts/test.sh and scripts/demo.sh unpack ../shared/envtest into .testbed/envtest when it is there; \
elsewhere, get them with controller-runtime's setup-envtest: \
`go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest && \
export KUBEBUILDER_ASSETS=\"$(setup-envtest use 1.33 -p path)\"`";

/// The envtest binaries: their directory and the Kubernetes version.
#[derive(Debug, Clone)]
pub struct Assets {
    /// The directory holding `kube-apiserver` and `etcd`.
    pub dir: PathBuf,
    /// What `kube-apiserver --version` says, e.g. `v1.36.2`.
    pub version: String,
}

impl Assets {
    /// The assets `KUBEBUILDER_ASSETS` names, checked: both binaries there
    /// and runnable, Kubernetes 1.30 or later. The error says how to get
    /// them.
    pub fn from_env() -> Result<Assets> {
        let dir = std::env::var_os(ASSETS_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("{ASSETS_ENV} is not set: {HOW_TO_GET_ASSETS}"))?;
        Self::at(&dir)
    }

    /// The assets in `dir`, checked as [`Assets::from_env`] does.
    pub fn at(dir: &Path) -> Result<Assets> {
        for binary in ["kube-apiserver", "etcd"] {
            let path = dir.join(binary);
            if !path.is_file() {
                bail!("{ASSETS_ENV}={}: no {binary} there: {HOW_TO_GET_ASSETS}", dir.display());
            }
        }
        let out = Command::new(dir.join("kube-apiserver"))
            .arg("--version")
            .output()
            .with_context(|| format!("running {}/kube-apiserver --version", dir.display()))?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let version = said
            .split_whitespace()
            .find(|w| w.starts_with('v'))
            .ok_or_else(|| anyhow!("{}/kube-apiserver --version said {said:?}", dir.display()))?
            .to_string();
        let minor = version
            .trim_start_matches('v')
            .split('.')
            .nth(1)
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| anyhow!("cannot read the version in {said:?}"))?;
        if !version.starts_with("v1.") || minor < OLDEST_MINOR {
            bail!(
                "{}/kube-apiserver is {version}; the test bed needs Kubernetes 1.{OLDEST_MINOR} or later: {HOW_TO_GET_ASSETS}",
                dir.display()
            );
        }
        Ok(Assets {
            dir: dir.to_path_buf(),
            version,
        })
    }
}

/// How the API server signs service-account tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// An RSA 2048 key (what kubeadm generates): RS256 tokens.
    Rs256,
    /// A P-256 key: ES256 tokens.
    Es256,
}

/// An HTTPS client of the API server over loopback, one connection per
/// request (enough for a test bed, and no pool to outlive a test's runtime).
#[derive(Clone)]
pub struct Https {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Https {
    /// A client of `addr` with `tls` (its trusted CA and client certificate).
    pub fn new(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Https {
        Https { addr, tls }
    }

    /// Opens a TLS connection and an HTTP/1.1 client on it.
    pub async fn connect<B>(&self) -> Result<hyper::client::conn::http1::SendRequest<B>>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        // Small writes (TLS records, then the body) must not wait for the
        // peer's delayed ACK: 40 ms per request otherwise.
        tcp.set_nodelay(true).context("TCP_NODELAY")?;
        let server_name = ServerName::IpAddress(self.addr.ip().into());
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(server_name, tcp)
            .await
            .with_context(|| format!("TLS with {}", self.addr))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// One request; the answer's status and its body parsed as JSON
    /// (`Null` when empty, a string when not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value)> {
        let mut sender = self.connect::<Full<Bytes>>().await?;
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("building the request")?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?
            .to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Ok((status, value))
    }
}

/// A running kube-apiserver with its etcd. Dropping it stops both.
pub struct ControlPlane {
    assets: Assets,
    signing: Signing,
    addr: SocketAddr,
    dir: PathBuf,
    ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    admin: Https,
    admin_pem: (String, String),
    sa_public_pem: String,
    /// The watchdog script; it ends the servers when `stdin` closes.
    watchdog: Child,
    stdin: Option<ChildStdin>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Closing the pipe is the stop signal; the script does the rest.
        drop(self.stdin.take());
        let _ = self.watchdog.try_wait();
    }
}

static SHARED: tokio::sync::OnceCell<Arc<ControlPlane>> = tokio::sync::OnceCell::const_new();

impl ControlPlane {
    /// The test binary's one control plane (RS256), started on first use
    /// from the assets `KUBEBUILDER_ASSETS` names. It lives until the
    /// process ends.
    pub async fn shared() -> Result<Arc<ControlPlane>> {
        SHARED
            .get_or_try_init(|| async {
                let assets = Assets::from_env()?;
                ControlPlane::start(&assets, Signing::Rs256).await.map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Starts a control plane of its own (stopped when dropped), e.g. with
    /// another signing algorithm than the shared one.
    pub async fn start(assets: &Assets, signing: Signing) -> Result<ControlPlane> {
        // Free ports are picked by binding and releasing them; another
        // process may take one in between, so a failed start is retried.
        let mut last = None;
        for _ in 0..3 {
            match Self::start_once(assets, signing).await {
                Ok(cp) => return Ok(cp),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("the control plane did not start")))
    }

    async fn start_once(assets: &Assets, signing: Signing) -> Result<ControlPlane> {
        // Removed on any failure until the watchdog, which removes it from
        // then on, is running.
        let scratch = tempfile::Builder::new()
            .prefix("vcp-control-plane-")
            .tempdir()
            .context("control plane directory")?;
        let dir = scratch.path().to_path_buf();
        let [api_port, client_port, peer_port] = free_ports()?;
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), api_port);
        let url = format!("https://{addr}");
        let pki = Pki::generate()?;
        let (sa_key_pem, sa_public_pem) = signing_key(signing, &dir)?;
        let write =
            |name: &str, text: &str| std::fs::write(dir.join(name), text).with_context(|| format!("writing {name}"));
        write("ca.crt", &pki.ca_pem)?;
        write("apiserver.crt", &pki.serving_cert_pem)?;
        write("apiserver.key", &pki.serving_key_pem)?;
        write("sa.key", &sa_key_pem)?;
        write("sa.pub", &sa_public_pem)?;

        let etcd = [
            format!("{}/etcd", assets.dir.display()),
            format!("--data-dir={}/etcd-data", dir.display()),
            format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync".into(),
            "--log-level=warn".into(),
        ];
        let d = dir.display();
        let apiserver = [
            format!("{}/kube-apiserver", assets.dir.display()),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            "--advertise-address=127.0.0.1".into(),
            format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            format!("--tls-cert-file={d}/apiserver.crt"),
            format!("--tls-private-key-file={d}/apiserver.key"),
            format!("--client-ca-file={d}/ca.crt"),
            "--authorization-mode=Node,RBAC".into(),
            "--anonymous-auth=true".into(),
            format!("--service-account-issuer={url}"),
            format!("--api-audiences={url}"),
            format!("--service-account-key-file={d}/sa.pub"),
            format!("--service-account-signing-key-file={d}/sa.key"),
            // Tokens live as long as asked, as kubelet's do on a cluster
            // that does not extend them.
            "--service-account-extend-token-expiration=false".into(),
            "--service-cluster-ip-range=10.96.0.0/24".into(),
            "--endpoint-reconciler-type=none".into(),
            format!("--cert-dir={d}/certs"),
            "--profiling=false".into(),
        ];
        let script = format!(
            "# Stops the control plane and removes its directory when stdin closes:\n\
             # the test process that holds the other end dropped it or ended.\n\
             cd {dir}\n\
             {etcd} >etcd.log 2>&1 </dev/null &\n\
             etcd=$!\n\
             {apiserver} >kube-apiserver.log 2>&1 </dev/null &\n\
             apiserver=$!\n\
             echo \"$etcd $apiserver\" >pids\n\
             cat >/dev/null\n\
             kill -KILL $apiserver $etcd 2>/dev/null\n\
             wait\n\
             cd / && rm -rf {dir}\n",
            dir = quote(&dir.display().to_string()),
            etcd = etcd.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
            apiserver = apiserver.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "),
        );
        write("run.sh", &script)?;
        let mut watchdog = Command::new("sh")
            .arg(dir.join("run.sh"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the control plane script")?;
        let _ = scratch.keep();
        let stdin = watchdog.stdin.take();
        let cp = ControlPlane {
            assets: assets.clone(),
            signing,
            addr,
            admin: Https::new(addr, client_config(&pki.ca_pem, Some(identity(&pki.admin)?))?),
            admin_pem: pki.admin.clone(),
            ca_pem: pki.ca_pem.clone(),
            ca: pki.ca,
            sa_public_pem,
            dir,
            watchdog,
            stdin,
        };
        cp.wait_ready(Duration::from_secs(60)).await?;
        Ok(cp)
    }

    /// Polls `/readyz` as the admin until it answers 200, failing early
    /// with the server's log when a process has exited.
    async fn wait_ready(&self, within: Duration) -> Result<()> {
        let until = Instant::now() + within;
        loop {
            let last = match self.admin.call("GET", "/readyz", "application/json", None).await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => format!("/readyz answered {status}: {body}"),
                Err(e) => format!("{e:#}"),
            };
            if let Some(dead) = self.exited() {
                bail!("{dead} exited while starting: {}", self.log_tail(dead));
            }
            if Instant::now() >= until {
                bail!(
                    "kube-apiserver not ready after {within:?} ({last}): {}",
                    self.log_tail("kube-apiserver")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which server process has exited, if one has.
    fn exited(&self) -> Option<&'static str> {
        let pids = std::fs::read_to_string(self.dir.join("pids")).ok()?;
        let mut pids = pids.split_whitespace();
        for name in ["etcd", "kube-apiserver"] {
            let pid = pids.next()?;
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return Some(name);
            }
        }
        None
    }

    /// The last lines of a server's log.
    fn log_tail(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `https://127.0.0.1:<port>`: also the issuer and the API audience.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The address the API server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `iss` of its service-account tokens.
    pub fn issuer(&self) -> String {
        self.url()
    }

    /// PEM of the CA of its serving certificate (and of client certificates).
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// SPKI PEM of the service-account signing key (Vault's
    /// `jwt_validation_pubkeys`).
    pub fn jwt_public_key_pem(&self) -> String {
        self.sa_public_pem.clone()
    }

    /// How tokens are signed.
    pub fn signing(&self) -> Signing {
        self.signing
    }

    /// The Kubernetes version, e.g. `v1.36.2`, and where its binaries are.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// A client authenticated as a cluster admin (`system:masters`).
    pub fn admin(&self) -> &Https {
        &self.admin
    }

    /// The admin's client certificate and key (PEM), for kubeconfigs.
    pub fn admin_pem(&self) -> (String, String) {
        self.admin_pem.clone()
    }

    /// A TLS server configuration for `127.0.0.1` signed by this control
    /// plane's CA, so that a proxy in front of it is trusted like it.
    pub fn serving_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let (chain, key) = identity(&leaf_pem(&self.ca, "kube-apiserver-proxy", Leaf::Server)?)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .context("TLS serving certificate")?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// A TLS client configuration trusting this control plane's CA,
    /// without a client certificate (requests carry bearer tokens).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        client_config(&self.ca_pem, None)
    }
}

/// Picks three free loopback ports (bound at once, so distinct).
fn free_ports() -> Result<[u16; 3]> {
    let listeners = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free ports")?;
    let port = |i: usize| listeners[i].local_addr().map(|a| a.port());
    Ok([port(0)?, port(1)?, port(2)?])
}

/// A shell word for `s`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The service-account signing key (PEM) and its public key (SPKI PEM).
fn signing_key(signing: Signing, dir: &Path) -> Result<(String, String)> {
    match signing {
        Signing::Es256 => {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("P-256 key")?;
            Ok((key.serialize_pem(), key.public_key_pem()))
        }
        Signing::Rs256 => {
            // ring cannot generate RSA keys; openssl can.
            let key = dir.join("sa-rsa.key");
            let run = |args: &[&str]| -> Result<Vec<u8>> {
                let out = Command::new("openssl")
                    .args(args)
                    .output()
                    .context("running openssl (Debian: openssl)")?;
                if !out.status.success() {
                    bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                }
                Ok(out.stdout)
            };
            let path = key.display().to_string();
            run(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &path,
            ])?;
            let public = run(&["pkey", "-in", &path, "-pubout"])?;
            let private = std::fs::read_to_string(&key).context("reading the RSA key")?;
            Ok((private, String::from_utf8(public).context("openssl's public key")?))
        }
    }
}

/// The CA, the API server's serving certificate and the admin's client
/// certificate.
struct Pki {
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
    serving_cert_pem: String,
    serving_key_pem: String,
    /// The admin's client certificate and key (PEM).
    admin: (String, String),
}

impl Pki {
    fn generate() -> Result<Pki> {
        let ca_key = rcgen::KeyPair::generate().context("CA key")?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vcp-testbed-ca");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key).context("self-signing the CA")?;
        let ca = rcgen::Issuer::new(params, ca_key);
        let (serving_cert_pem, serving_key_pem) = leaf_pem(&ca, "kube-apiserver", Leaf::Server)?;
        let admin = leaf_pem(
            &ca,
            "vcp-admin",
            Leaf::Client {
                group: "system:masters",
            },
        )?;
        Ok(Pki {
            ca,
            ca_pem: ca_cert.pem(),
            serving_cert_pem,
            serving_key_pem,
            admin,
        })
    }
}

/// What a leaf certificate is for.
enum Leaf {
    /// Serving `127.0.0.1`, `localhost` and the in-cluster names.
    Server,
    /// A client in `group` (the certificate's organization).
    Client { group: &'static str },
}

fn leaf_params(name: &str, kind: &Leaf) -> Result<rcgen::CertificateParams> {
    let sans = match kind {
        Leaf::Server => vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ],
        Leaf::Client { .. } => Vec::new(),
    };
    let mut params = rcgen::CertificateParams::new(sans)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    match kind {
        Leaf::Server => params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth],
        Leaf::Client { group } => {
            params.distinguished_name.push(rcgen::DnType::OrganizationName, *group);
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    Ok(params)
}

fn leaf_pem(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, name: &str, kind: Leaf) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("leaf key")?;
    let cert = leaf_params(name, &kind)?
        .signed_by(&key, ca)
        .with_context(|| format!("signing the {name} certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A certificate and key in PEM as rustls takes them.
fn identity((cert_pem, key_pem): &(String, String)) -> Result<Identity> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("a leaf certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("a leaf key")?;
    Ok((chain, key))
}

/// ring, explicitly: independent of any process-wide default provider.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(ca_pem: &str, identity: Option<Identity>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.context("the CA certificate")?;
        roots.add(cert).context("trusting the CA")?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .context("the client certificate")?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A directory whose `kube-apiserver --version` prints `said`.
    fn assets_saying(said: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let apiserver = dir.path().join("kube-apiserver");
        std::fs::write(&apiserver, format!("#!/bin/sh\necho '{said}'\n")).unwrap();
        std::fs::set_permissions(&apiserver, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("etcd"), "").unwrap();
        dir
    }

    #[test]
    fn assets_from_kubernetes_1_30_on_are_accepted_and_older_ones_say_why_not() {
        for ok in ["Kubernetes v1.30.0", "Kubernetes v1.33.4", "Kubernetes v1.36.2"] {
            let dir = assets_saying(ok);
            let assets = Assets::at(dir.path()).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
            assert_eq!(assets.version, ok.trim_start_matches("Kubernetes "));
        }
        let dir = assets_saying("Kubernetes v1.29.9");
        let e = format!("{:#}", Assets::at(dir.path()).unwrap_err());
        assert!(e.contains("v1.29.9") && e.contains("1.30 or later"), "{e}");
        assert!(e.contains("setup-envtest use"), "says how to get newer ones: {e}");

        let empty = tempfile::tempdir().unwrap();
        let e = format!("{:#}", Assets::at(empty.path()).unwrap_err());
        assert!(e.contains("no kube-apiserver there") && e.contains(ASSETS_ENV), "{e}");
    }
}
