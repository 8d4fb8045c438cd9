//! An HTTP proxy in front of OpenBao that counts the requests passing
//! through it by operation, so a harness can report how many Vault calls a
//! workload costs without trusting the provider's own numbers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A running counting proxy; dropping it stops accepting.
pub struct VaultProxy {
    addr: SocketAddr,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for VaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The operation a Vault request performs, for counting.
pub fn operation(method: &str, path: &str) -> String {
    let p = path.split('?').next().unwrap_or(path);
    if p.ends_with("/login") {
        "login".into()
    } else if p.ends_with("/renew-self") || p.ends_with("/leases/renew") {
        "renew".into()
    } else if p.ends_with("/revoke-self") || p.ends_with("/leases/revoke") {
        "revoke".into()
    } else {
        format!(
            "{} {}",
            method,
            p.trim_start_matches("/v1/")
                .split('/')
                .take(2)
                .collect::<Vec<_>>()
                .join("/")
        )
    }
}

impl VaultProxy {
    /// Proxies `upstream` (an `http://` URL) on a fresh loopback port.
    pub async fn start(upstream: &str) -> anyhow::Result<VaultProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_string();
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let client = client.clone();
                let upstream = upstream.clone();
                let counts = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let client = client.clone();
                        let upstream = upstream.clone();
                        let counts = counts.clone();
                        async move {
                            let op = operation(req.method().as_str(), req.uri().path());
                            *counts.lock().unwrap_or_else(|p| p.into_inner()).entry(op).or_default() += 1;
                            let (mut parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let pq = parts
                                .uri
                                .path_and_query()
                                .map(|p| p.as_str().to_string())
                                .unwrap_or_default();
                            parts.uri = format!("{upstream}{pq}").parse().unwrap_or_default();
                            parts.headers.remove(http::header::HOST);
                            let resp = client.request(hyper::Request::from_parts(parts, Full::new(body))).await;
                            let out = match resp {
                                Ok(r) => {
                                    let (parts, body) = r.into_parts();
                                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                    hyper::Response::from_parts(parts, Full::new(body))
                                }
                                Err(e) => {
                                    let mut r = hyper::Response::new(Full::new(Bytes::from(e.to_string())));
                                    *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                                    r
                                }
                            };
                            Ok::<_, std::convert::Infallible>(out)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(VaultProxy { addr, counts, task })
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen so far, by operation.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Total requests seen so far.
    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }
}
