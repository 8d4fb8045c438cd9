//! The HTTP transport to Vault, on reqwest: TCP, TLS (our own rustls
//! configuration: a CA, a server-name override, client certificates, or no
//! verification when asked; ring as the one crypto provider) and unix
//! sockets, with connection pooling, per-request timeouts and a cap on
//! response size enforced as the body streams in.
//!
//! It knows nothing about Vault; [`crate::vault`] builds [`Request`]s and
//! interprets [`Response`]s.

use std::io;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::describe_chain;

pub use crate::endpoint::Endpoint;

/// Which certificates to trust.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// Extra CA certificates; when empty, the system roots are used.
    pub roots: Vec<CertificateDer<'static>>,
    /// Verify the server against this name instead of the URL's host.
    pub server_name: Option<String>,
    /// Client certificate chain and key for mTLS.
    pub client_auth: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    /// Accept any certificate (insecure; for tests and explicit opt-in only).
    pub skip_verify: bool,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trusted roots, loaded once: reading them costs milliseconds.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        for cert in loaded.certs {
            let _ = store.add(cert);
        }
        store
    })
}

/// Why a client for an endpoint could not be set up (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A CA, client certificate or key file could not be used.
    #[error(transparent)]
    Pem(#[from] crate::pem::PemError),
    /// rustls refused the protocol versions (a build problem).
    #[error("TLS setup: {0}")]
    Tls(#[source] rustls::Error),
    /// A CA certificate was refused.
    #[error("unusable CA certificate: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// The client certificate or key was refused.
    #[error("unusable client certificate or key: {0}")]
    ClientCertificate(#[source] rustls::Error),
    /// The server name to verify is not a DNS name or address.
    #[error("TLS server name {name:?} is not valid: {source}")]
    ServerName {
        /// The name given.
        name: String,
        /// Why it is not one.
        #[source]
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// reqwest could not build the client.
    #[error("HTTP client: {}", describe_chain(.0))]
    Client(#[source] reqwest::Error),
    /// The endpoint does not make a URL (an address that parsed as a URI
    /// but that the URL standard refuses).
    #[error("Vault address {0}")]
    Address(String),
    /// The blocking thread that read the files failed.
    #[error("building the client failed: {0}")]
    Join(#[source] tokio::task::JoinError),
}

fn tls_config(opts: &TlsOptions) -> Result<ClientConfig, SetupError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(SetupError::Tls)?;
    let builder = if opts.skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
    } else if opts.roots.is_empty() {
        builder.with_root_certificates(system_roots().clone())
    } else {
        let mut store = RootCertStore::empty();
        for c in &opts.roots {
            store.add(c.clone()).map_err(SetupError::CaCertificate)?;
        }
        builder.with_root_certificates(store)
    };
    let mut config = match &opts.client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(SetupError::ClientCertificate)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any server certificate but still checks the handshake signature,
/// which is what `-vault-tls-skip-verify` promises and nothing more.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One request, relative to the client's endpoint.
#[derive(Clone)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path_and_query: String,
    /// Extra headers. Values may be secret (tokens): never log them.
    pub headers: Vec<(http::HeaderName, String)>,
    /// Body, with its content type.
    pub body: Option<(Bytes, &'static str)>,
}

/// Header names but not values (tokens travel in headers), and the body's
/// length (a login's JWT, a write's arguments).
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path_and_query", &self.path_and_query)
            .field("headers", &names)
            .field("body_len", &self.body.as_ref().map(|(b, _)| b.len()))
            .finish()
    }
}

/// A complete response.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// The body's length only: responses carry secrets.
impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No connection could be made: the request was never sent, so any
    /// request may be retried.
    #[error("{0}")]
    Connect(String),
    /// The connection broke after the request may have reached the server:
    /// only idempotent requests may be retried.
    #[error("{0}")]
    Broken(String),
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The response body exceeded the limit.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// Reading the response would take its mount over a memory limit.
    #[error("{0}")]
    OverBudget(crate::budget::Exceeded),
    /// The TLS handshake was refused (the server's certificate did not
    /// verify, or ours was not accepted): nothing was sent, and waiting will
    /// not change it.
    #[error("TLS handshake refused: {0}")]
    Tls(String),
    /// The request could not be built (a bug or bad input).
    #[error("bad request: {0}")]
    Build(String),
}

/// A pooled HTTP client bound to one endpoint and TLS configuration, on
/// reqwest with our own rustls configuration. Redirects are not followed (a
/// standby's 307 is an answer for the failover logic), nothing is retried
/// inside (retries are [`crate::vault`]'s decision), and no proxy is used.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    /// The endpoint's URL, parsed once: each request only sets its path and
    /// query on a copy (never its scheme, host or port).
    base: reqwest::Url,
    /// The endpoint's path prefix, without a trailing `/` (often empty).
    prefix: String,
    timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    /// Builds a client; fails only on unusable TLS material.
    pub fn new(
        endpoint: &Endpoint,
        tls: &TlsOptions,
        timeout: Duration,
        max_body: usize,
    ) -> Result<HttpClient, SetupError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .http1_only()
            .tcp_nodelay(true)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .user_agent(concat!("vault-csi-provider/", env!("CARGO_PKG_VERSION")));
        let mut base = endpoint.base_url();
        // Always our configuration (ring), even for plain http: reqwest
        // would otherwise build a default one, for which it has no provider.
        builder = builder.use_preconfigured_tls(tls_config(tls)?);
        match endpoint {
            Endpoint::Unix(path) => builder = builder.unix_socket(path.clone()),
            Endpoint::Tcp { tls: false, .. } => {}
            Endpoint::Tcp {
                tls: true,
                host,
                port,
                prefix,
            } => {
                if let Some(name) = tls.server_name.as_deref().filter(|n| *n != host.as_str()) {
                    // The name to verify (and send as SNI) goes in the URL;
                    // it resolves to the endpoint's real host.
                    ServerName::try_from(name.to_string()).map_err(|source| SetupError::ServerName {
                        name: name.to_string(),
                        source,
                    })?;
                    base = format!("https://{name}:{port}{prefix}");
                    builder = builder.dns_resolver(Arc::new(ServerNameResolver {
                        name: name.to_string(),
                        target: (host.clone(), *port),
                    }));
                }
            }
        }
        let client = builder.build().map_err(SetupError::Client)?;
        let base = reqwest::Url::parse(&base).map_err(|e| SetupError::Address(format!("{base:?}: {e}")))?;
        Ok(HttpClient {
            client,
            prefix: base.path().trim_end_matches('/').to_string(),
            base,
            timeout,
            max_body,
        })
    }

    /// The endpoint's URL with `path_and_query` (after its prefix).
    fn url(&self, path_and_query: &str) -> reqwest::Url {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let mut url = self.base.clone();
        if self.prefix.is_empty() {
            url.set_path(path);
        } else {
            url.set_path(&format!("{}{path}", self.prefix));
        }
        url.set_query(query);
        url
    }

    /// Sends a request and reads the whole response, bounded by the timeout.
    pub async fn send(&self, req: Request) -> Result<Response, HttpError> {
        self.send_within(req, &crate::budget::Unlimited).await
    }

    /// [`send`](Self::send), counting the response body against `budget` as
    /// it arrives: a mount over its memory limit stops reading at once
    /// instead of holding the whole body first.
    pub async fn send_within(&self, req: Request, budget: &dyn crate::budget::Charge) -> Result<Response, HttpError> {
        let mut builder = self.client.request(req.method, self.url(&req.path_and_query));
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        if let Some((bytes, content_type)) = req.body {
            builder = builder.header(http::header::CONTENT_TYPE, content_type).body(bytes);
        }
        let max = self.max_body;
        let exchange = async {
            let mut response = builder.send().await.map_err(|e| {
                if tls_refused(&e) {
                    HttpError::Tls(describe_chain(&e))
                } else if e.is_connect() {
                    HttpError::Connect(describe_chain(&e))
                } else if e.is_builder() {
                    HttpError::Build(describe_chain(&e))
                } else {
                    HttpError::Broken(describe_chain(&e))
                }
            })?;
            let announced = response.content_length().and_then(|n| usize::try_from(n).ok());
            if announced.is_some_and(|n| n > max) {
                return Err(HttpError::TooLarge(max));
            }
            let mut collected: Vec<u8> = Vec::new();
            if let Some(n) = announced.filter(|n| *n > 0) {
                budget.charge(n).map_err(HttpError::OverBudget)?;
                collected.reserve_exact(n);
            }
            while let Some(data) = response
                .chunk()
                .await
                .map_err(|e| HttpError::Broken(format!("reading response: {}", describe_chain(&e))))?
            {
                let needed = collected.len() + data.len();
                if needed > max {
                    return Err(HttpError::TooLarge(max));
                }
                // What is counted is what is allocated: the buffer grows
                // by doubling, and each growth is charged before it happens.
                if needed > collected.capacity() {
                    let grown = needed.max(collected.capacity() * 2).min(max);
                    budget
                        .charge(grown - collected.capacity())
                        .map_err(HttpError::OverBudget)?;
                    collected.reserve_exact(grown - collected.len());
                }
                collected.extend_from_slice(&data);
            }
            Ok(Response {
                status: response.status().as_u16(),
                headers: std::mem::take(response.headers_mut()),
                body: Bytes::from(collected),
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(HttpError::Timeout(self.timeout)),
        }
    }
}

/// Resolves the TLS server name of a `vaultTLSServerName` override to the
/// endpoint's real host, so the connection goes there while rustls sends
/// and verifies the override (as Go's `tls.Config.ServerName` does).
struct ServerNameResolver {
    name: String,
    target: (String, u16),
}

impl reqwest::dns::Resolve for ServerNameResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = if name.as_str() == self.name {
            self.target.0.clone()
        } else {
            name.as_str().to_string()
        };
        let port = self.target.1;
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.collect::<Vec<_>>().into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether the TLS handshake was refused somewhere in the error's chain: a
/// `rustls::Error`, or the I/O error of kind `InvalidData` that the TLS
/// layers turn every rustls failure into (a refused or reset connection has
/// another kind). I/O errors are looked into too: the connector wraps the
/// TLS layer's error in one of its own.
fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io_err) = err.downcast_ref::<io::Error>() {
            if io_err.kind() == io::ErrorKind::InvalidData {
                return true;
            }
            if let Some(inner) = io_err.get_ref() {
                current = Some(inner as &(dyn std::error::Error + 'static));
                continue;
            }
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_sets_only_the_path_and_query_of_the_endpoint_url() {
        let url = |endpoint: &str, path: &str| {
            let ep = Endpoint::parse(endpoint).unwrap();
            HttpClient::new(&ep, &TlsOptions::default(), Duration::from_secs(1), 1024)
                .unwrap()
                .url(path)
                .to_string()
        };
        assert_eq!(
            url("https://vault.example:8200", "/v1/secret/data/a?version=2"),
            "https://vault.example:8200/v1/secret/data/a?version=2"
        );
        assert_eq!(
            url("http://[::1]:8201/vault/", "/v1/sys/health"),
            "http://[::1]:8201/vault/v1/sys/health"
        );
        assert_eq!(url("unix:///run/agent.sock", "/v1/a"), "http://localhost/v1/a");
        // A path never reaches another host, nor ends early.
        assert_eq!(
            url("http://vault:8200", "//evil.example/v1/a"),
            "http://vault:8200//evil.example/v1/a"
        );
        assert_eq!(url("http://vault:8200", "/v1/a#b"), "http://vault:8200/v1/a%23b");
    }

    fn get_root() -> Request {
        Request {
            method: Method::GET,
            path_and_query: "/".into(),
            headers: vec![],
            body: None,
        }
    }

    #[tokio::test]
    async fn unreachable_server_is_a_connect_error_not_a_hang() {
        let port = vcp_testbed::ports::free_port().unwrap();
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let c = HttpClient::new(&ep, &TlsOptions::default(), Duration::from_secs(2), 1024).unwrap();
        let r = c.send(get_root()).await;
        match r {
            Err(HttpError::Connect(m)) => assert!(m.contains("refused"), "{m}"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let c = HttpClient::new(&ep, &TlsOptions::default(), Duration::from_millis(300), 1024).unwrap();
        let r = c.send(get_root()).await;
        assert!(matches!(r, Err(HttpError::Timeout(_))), "{r:?}");
    }
}
