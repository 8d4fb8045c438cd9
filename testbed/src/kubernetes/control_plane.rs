//! The Kubernetes control plane of the tests and the demo, on one of two
//! backends chosen once per process ([`Backend::from_env`]):
//!
//! - **the real one** where `KUBEBUILDER_ASSETS` names a directory with
//!   `kube-apiserver` and `etcd` (Kubernetes 1.30 or later), the envtest
//!   convention: both started on loopback with free ports, TLS, an admin
//!   client certificate, the server's own URL as the service-account
//!   issuer, RS256 or ES256 signing keys and `Node,RBAC` authorization;
//! - **the project's double** ([`crate::kubernetes::kube_double`]) everywhere else (this
//!   project's CI has no such binaries): the same API on loopback with the
//!   same certificates, keys and issuer, behaving as the real server does
//!   wherever the provider can tell.
//!
//! Either way there is no controller-manager, scheduler or kubelet:
//! namespaces get no `default` ServiceAccount and pods stay Pending, so the
//! test bed creates what it uses and plays the kubelet itself (see
//! [`crate::kubernetes::cluster`]).
//!
//! The real processes are always stopped, also when a test fails or panics
//! or the test process is killed: they run under a small shell script whose
//! stdin is a pipe only this process holds. When the pipe closes — the
//! [`ControlPlane`] dropped, or the process gone for any reason — the script
//! stops both servers and removes their directory. The double lives in the
//! test process itself. One control plane serves a whole test binary
//! ([`ControlPlane::shared`]); tests keep apart by namespace.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;

use crate::kubernetes::kube_double::{self, KubeDouble};
pub use crate::kubernetes::pki::Signing;
use crate::kubernetes::pki::{client_config, identity, leaf_pem, provider, signing_key, Leaf, Pki};
use crate::ports::free_ports;

/// The variable naming the directory with `kube-apiserver` and `etcd`.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";
/// The oldest Kubernetes minor version the test bed accepts (1.30).
pub const OLDEST_MINOR: u32 = 30;

/// How to run on the real control plane.
const HOW_TO_GET_ASSETS: &str = "to run on a real Kubernetes API server, set KUBEBUILDER_ASSETS to a \
directory holding kube-apiserver and etcd (Kubernetes 1.30 or later), e.g. with controller-runtime's \
setup-envtest: `go install sigs.k8s.io/controller-runtime/tools/setup-envtest@latest && \
export KUBEBUILDER_ASSETS=\"$(setup-envtest use 1.33 -p path)\"`; unset it to run on the project's \
Kubernetes double";

/// The envtest binaries: their directory and the Kubernetes version.
#[derive(Debug, Clone)]
pub struct Assets {
    /// The directory holding `kube-apiserver` and `etcd`.
    pub dir: PathBuf,
    /// What `kube-apiserver --version` says, e.g. `v1.36.2`.
    pub version: String,
}

impl Assets {
    /// The assets in `dir`, checked: both binaries there and runnable,
    /// Kubernetes 1.30 or later. The error says how to get them.
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

/// Which Kubernetes the test bed runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    /// kube-apiserver and etcd from the envtest assets.
    Real(Assets),
    /// The project's double ([`crate::kubernetes::kube_double`]).
    Double,
}

impl Backend {
    /// The real control plane when `KUBEBUILDER_ASSETS` is set (its
    /// binaries checked: a set but unusable value is an error, not a quiet
    /// fall-back), the double when it is unset or empty.
    pub fn from_env() -> Result<Backend> {
        match std::env::var_os(ASSETS_ENV).filter(|d| !d.is_empty()) {
            Some(dir) => Assets::at(Path::new(&dir)).map(Backend::Real),
            None => Ok(Backend::Double),
        }
    }

    /// Whether this is the real kube-apiserver.
    pub fn is_real(&self) -> bool {
        matches!(self, Backend::Real(_))
    }

    /// One line saying which Kubernetes this is, for the start of a run.
    pub fn describe(&self) -> String {
        match self {
            Backend::Real(a) => format!(
                "the real kube-apiserver {} and etcd ({ASSETS_ENV}={})",
                a.version,
                a.dir.display()
            ),
            Backend::Double => format!(
                "the project's Kubernetes double (API of v{}.{}; {ASSETS_ENV} is not set)",
                kube_double::VERSION.0,
                kube_double::VERSION.1
            ),
        }
    }
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
        let answer = self.send(method, path, &[("content-type", content_type)], body).await?;
        Ok((answer.status, answer.json()))
    }

    /// One request with `headers` (an `Accept` of `application/json`
    /// unless they name one); the whole answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer> {
        let response = self.open(method, path, headers, body).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer to {method} {path}"))?
            .to_bytes();
        Ok(Answer { status, headers, body })
    }

    /// A GET whose answer is a stream (a watch): its status, and its lines
    /// as they arrive (the channel closes when the stream ends).
    pub async fn stream(
        &self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(u16, tokio::sync::mpsc::Receiver<String>)> {
        let response = self.open("GET", path, headers, None).await?;
        let status = response.status().as_u16();
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let mut body = response.into_body();
        tokio::spawn(async move {
            let mut pending = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Ok(data) = frame.into_data() else { continue };
                pending.extend_from_slice(&data);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let line = String::from_utf8_lossy(&line).trim().to_string();
                    if !line.is_empty() && tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
            let rest = String::from_utf8_lossy(&pending).trim().to_string();
            if !rest.is_empty() {
                let _ = tx.send(rest).await;
            }
        });
        Ok((status, rx))
    }

    async fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let mut sender = self.connect::<Full<Bytes>>().await?;
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, self.addr.to_string());
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
            request = request.header(http::header::ACCEPT, "application/json");
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("building the request")?;
        sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path}"))
    }
}

/// A whole answer of the API server.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// Its headers.
    pub headers: http::HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`Null` when empty, a string when not JSON).
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into()))
        }
    }
}

/// What runs behind the control plane's address.
enum Running {
    /// The watchdog script of kube-apiserver and etcd; closing its stdin
    /// stops them.
    Processes {
        dir: PathBuf,
        watchdog: Child,
        stdin: Option<ChildStdin>,
    },
    /// The double, stopped when dropped.
    Double { _server: KubeDouble },
}

/// A running control plane. Dropping it stops it.
pub struct ControlPlane {
    backend: Backend,
    signing: Signing,
    addr: SocketAddr,
    ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    admin: Https,
    admin_pem: (String, String),
    sa_public_pem: String,
    running: Running,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Running::Processes { watchdog, stdin, .. } = &mut self.running {
            // Closing the pipe is the stop signal; the script does the rest.
            drop(stdin.take());
            let _ = watchdog.try_wait();
        }
    }
}

static SHARED: tokio::sync::OnceCell<Arc<ControlPlane>> = tokio::sync::OnceCell::const_new();

impl ControlPlane {
    /// The test binary's one control plane (RS256) on the backend
    /// [`Backend::from_env`] picks, started on first use; it lives until
    /// the process ends. Says on stderr (past the test harness's capture)
    /// which backend it is.
    pub async fn shared() -> Result<Arc<ControlPlane>> {
        SHARED
            .get_or_try_init(|| async {
                let backend = Backend::from_env()?;
                let _ = writeln!(std::io::stderr(), "vcp-testbed: Kubernetes is {}", backend.describe());
                ControlPlane::start(&backend, Signing::Rs256).await.map(Arc::new)
            })
            .await
            .cloned()
    }

    /// Starts a control plane of its own on `backend` (stopped when
    /// dropped), e.g. with another signing algorithm than the shared one.
    pub async fn start(backend: &Backend, signing: Signing) -> Result<ControlPlane> {
        match backend {
            Backend::Double => Self::start_double(signing).await,
            Backend::Real(assets) => {
                // Free ports are picked by binding and releasing them;
                // another process may take one in between, so a failed
                // start is retried.
                let mut last = None;
                for _ in 0..3 {
                    match Self::start_real(assets, signing).await {
                        Ok(cp) => return Ok(cp),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| anyhow!("the control plane did not start")))
            }
        }
    }

    /// A started control plane, with its admin client: either backend's
    /// last step.
    fn assemble(
        backend: Backend,
        signing: Signing,
        addr: SocketAddr,
        pki: Pki,
        sa_public_pem: String,
        running: Running,
    ) -> Result<ControlPlane> {
        Ok(ControlPlane {
            backend,
            signing,
            addr,
            admin: Https::new(addr, client_config(&pki.ca_pem, Some(identity(&pki.admin)?))?),
            admin_pem: pki.admin,
            ca_pem: pki.ca_pem,
            ca: pki.ca,
            sa_public_pem,
            running,
        })
    }

    async fn start_double(signing: Signing) -> Result<ControlPlane> {
        let scratch = tempfile::tempdir().context("a scratch directory for the signing key")?;
        let pki = Pki::generate()?;
        let (sa_key_pem, sa_public_pem) = signing_key(signing, scratch.path())?;
        let double = KubeDouble::start(kube_double::Config {
            ca_pem: pki.ca_pem.clone(),
            serving: (pki.serving_cert_pem.clone(), pki.serving_key_pem.clone()),
            clients: vec![(
                pki.admin.0.clone(),
                "vcp-admin".to_string(),
                vec!["system:masters".to_string()],
            )],
            signing: (signing, sa_key_pem, sa_public_pem.clone()),
        })?;
        let addr = double.addr();
        let running = Running::Double { _server: double };
        let cp = Self::assemble(Backend::Double, signing, addr, pki, sa_public_pem, running)?;
        cp.wait_ready(Duration::from_secs(10)).await?;
        Ok(cp)
    }

    async fn start_real(assets: &Assets, signing: Signing) -> Result<ControlPlane> {
        // Removed on any failure until the watchdog, which removes it from
        // then on, is running.
        let scratch = tempfile::Builder::new()
            .prefix("vcp-control-plane-")
            .tempdir()
            .context("control plane directory")?;
        let dir = scratch.path().to_path_buf();
        let [api_port, client_port, peer_port] = free_ports().context("finding free ports")?;
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
        let running = Running::Processes { dir, watchdog, stdin };
        let cp = Self::assemble(
            Backend::Real(assets.clone()),
            signing,
            addr,
            pki,
            sa_public_pem,
            running,
        )?;
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
                    "the API server is not ready after {within:?} ({last}): {}",
                    self.log_tail("kube-apiserver")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Which server process has exited, if one has.
    fn exited(&self) -> Option<&'static str> {
        let Running::Processes { dir, .. } = &self.running else {
            return None;
        };
        let pids = std::fs::read_to_string(dir.join("pids")).ok()?;
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
        let Running::Processes { dir, .. } = &self.running else {
            return String::new();
        };
        let log = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
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

    /// Which backend this is (for the real one, its version and where its
    /// binaries are).
    pub fn backend(&self) -> &Backend {
        &self.backend
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

/// A shell word for `s`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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
