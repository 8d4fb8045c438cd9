//! A fault proxy in front of the real kube-apiserver: what a real server
//! will not do on demand. Each test world puts one between the API server
//! and its clients (the provider, and OpenBao's TokenReview calls), passing
//! everything through unchanged until a test asks for a fault:
//!
//! - [`KubeProxy::set_failing`]: every request answered with an error status
//!   and the `Status` body the API server sends with it (503 unavailable, 429
//!   throttled by API priority and fairness with `Retry-After`, 500);
//! - [`KubeProxy::set_delay`]: every answer held back (a slow server);
//! - [`KubeProxy::cut_watches`]: open watch streams broken off mid-stream (a
//!   dropped connection); the client must watch again;
//! - [`KubeProxy::expire_watches_before`]: watches resuming from an older
//!   resourceVersion get the `410 Expired` event a compacted server sends,
//!   so the client must list again;
//! - [`KubeProxy::set_issuer_discovery`]: the issuer discovery paths
//!   forwarded without credentials, so the real server refuses them as it
//!   refuses anyone not bound to `system:service-account-issuer-discovery`.
//!
//! It also records every request (method, path with query, `Accept`), so a
//! test can see what reached Kubernetes. TLS on both sides: it serves a
//! certificate of the control plane's CA, so clients trust it like the API
//! server, and forwards the request's own credentials (bearer tokens).
//! HTTP/1.1 only; one upstream connection per client connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::task::{JoinHandle, JoinSet};

use crate::kubernetes::control_plane::{ControlPlane, Https};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// The `Accept` header (empty when none).
    pub accept: String,
}

impl Seen {
    /// Whether this is a watch (`watch=true` or `watch=1`).
    pub fn is_watch(&self) -> bool {
        query(&self.path).get("watch").is_some_and(|v| v == "true" || v == "1")
    }
}

#[derive(Default)]
struct Faults {
    failing: Option<u16>,
    delay: Duration,
    no_issuer_discovery: bool,
    /// Watches resuming from below this resourceVersion are expired.
    expired_before: Option<u64>,
}

struct Shared {
    upstream: Https,
    faults: Mutex<Faults>,
    seen: Mutex<Vec<Seen>>,
    /// Bumped to break off every open watch stream.
    cut: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seen(&self) -> MutexGuard<'_, Vec<Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy; dropping it closes its listener and every connection.
pub struct KubeProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks, so this ends them all.
        self.task.abort();
    }
}

impl KubeProxy {
    /// A proxy on a free loopback port in front of `cp`.
    pub async fn start(cp: &ControlPlane) -> Result<KubeProxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Kubernetes proxy")?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(cp.serving_config()?);
        let shared = Arc::new(Shared {
            upstream: Https::new(cp.addr(), cp.client_config()?),
            faults: Mutex::new(Faults::default()),
            seen: Mutex::new(Vec::new()),
            cut: tokio::sync::watch::channel(0).0,
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        Ok(KubeProxy { addr, shared, task })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// While on, every request is answered 503 ServiceUnavailable.
    pub fn set_unavailable(&self, on: bool) {
        self.set_failing(on.then_some(503));
    }

    /// While `Some(code)`, every request is answered with `code` (429, 500,
    /// 503, ...) and the `Status` the API server writes for it.
    pub fn set_failing(&self, code: Option<u16>) {
        self.shared.faults().failing = code;
    }

    /// Holds every answer back by `d` (zero: none).
    pub fn set_delay(&self, d: Duration) {
        self.shared.faults().delay = d;
    }

    /// Whether `/.well-known/openid-configuration` and `/openid/v1/jwks`
    /// carry the client's credentials (on by default). Off, they go to the
    /// server anonymously, which it refuses with 403 as it would for an
    /// identity without the `system:service-account-issuer-discovery` role.
    pub fn set_issuer_discovery(&self, on: bool) {
        self.shared.faults().no_issuer_discovery = !on;
    }

    /// Breaks off every open watch stream (the client sees its connection
    /// end mid-stream).
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// From now on, a watch from a resourceVersion below `rv` is answered
    /// with a `410 Expired` event, as a server that compacted its history
    /// answers; open watches are broken off, so their clients resume from
    /// their older version and must list again.
    pub fn expire_watches_before(&self, rv: u64) {
        self.shared.faults().expired_before = Some(rv);
        self.cut_watches();
    }

    /// Every request seen, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen().clone()
    }

    /// Forgets the requests seen so far.
    pub fn clear_seen(&self) {
        self.shared.seen().clear();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Answers go out as written (no wait for the client's delayed ACK).
        let _ = tcp.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        connections.spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            // One upstream connection per client connection, opened on the
            // first request and again whenever the server closed it.
            let upstream: Upstream = Arc::new(tokio::sync::Mutex::new(None));
            let service = hyper::service::service_fn(move |req| {
                let (shared, upstream) = (shared.clone(), upstream.clone());
                async move { Ok::<_, Infallible>(handle(&shared, upstream, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;
type Upstream = Arc<tokio::sync::Mutex<Option<Sender>>>;

/// Sends `req` on the connection's upstream connection, (re)opening it
/// when there is none or the server closed it while idle.
async fn forward(shared: &Shared, upstream: &Upstream, req: http::Request<Body>) -> Result<http::Response<Incoming>> {
    let mut sender = upstream.lock().await;
    if let Some(s) = sender.as_mut() {
        if s.is_closed() || s.ready().await.is_err() {
            *sender = None;
        }
    }
    let s = match sender.as_mut() {
        Some(s) => s,
        None => sender.insert(shared.upstream.connect::<Body>().await?),
    };
    Ok(s.send_request(req).await?)
}

async fn handle(shared: &Shared, upstream: Upstream, req: http::Request<Incoming>) -> http::Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let seen = Seen {
        method: req.method().to_string(),
        path: path.clone(),
        accept: header(&req, http::header::ACCEPT),
    };
    shared.seen().push(seen.clone());
    let (failing, delay, no_discovery, expired_before) = {
        let f = shared.faults();
        (f.failing, f.delay, f.no_issuer_discovery, f.expired_before)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(code) = failing {
        return failure(code);
    }
    let watch = seen.is_watch();
    if watch {
        let from = query(&path).get("resourceVersion").and_then(|v| v.parse::<u64>().ok());
        if let (Some(from), Some(before)) = (from, expired_before) {
            if from < before {
                return expired(from, before);
            }
        }
    }
    let (mut parts, body) = req.into_parts();
    let discovery = matches!(
        parts.uri.path(),
        "/.well-known/openid-configuration" | "/openid/v1/jwks"
    );
    if no_discovery && discovery {
        parts.headers.remove(http::header::AUTHORIZATION);
    }
    let forwarded = http::Request::from_parts(parts, body.map_err(BoxError::from).boxed());
    let cut = shared.cut.subscribe();
    match forward(shared, &upstream, forwarded).await {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let body = if watch {
                cuttable(body, cut)
            } else {
                body.map_err(BoxError::from).boxed()
            };
            http::Response::from_parts(parts, body)
        }
        Err(e) => status(
            502,
            "InternalError",
            &format!("the proxy cannot reach the API server: {e:#}"),
        ),
    }
}

/// A watch body that ends with an error (the connection is dropped) when
/// the cut signal moves.
fn cuttable(mut body: Incoming, mut cut: tokio::sync::watch::Receiver<u64>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = cut.changed() => {
                    if changed.is_ok() {
                        let _ = tx.send(Err("watch cut by the test".into())).await;
                    }
                    return;
                }
                frame = body.frame() => match frame {
                    Some(frame) => {
                        if tx.send(frame.map_err(BoxError::from)).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    StreamBody::new(stream).boxed()
}

/// What the API server answers when it fails with `code`.
fn failure(code: u16) -> http::Response<Body> {
    let mut response = match code {
        429 => status(429, "TooManyRequests", "Too many requests, please try again later."),
        503 => status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        _ => status(
            code,
            "InternalError",
            "an error on the server has prevented the request from succeeding",
        ),
    };
    if code == 429 {
        // API priority and fairness asks clients to come back in a second.
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    }
    response
}

/// A `Status` failure, as the API server writes them.
fn status(code: u16, reason: &str, message: &str) -> http::Response<Body> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    http::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(body.to_string()))
        .unwrap_or_else(|_| http::Response::new(full(String::new())))
}

/// What a compacted server streams to a watch from `from`: one ERROR event
/// carrying `410 Expired`, then the end of the stream.
fn expired(from: u64, now: u64) -> http::Response<Body> {
    let event = json!({
        "type": "ERROR",
        "object": {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": format!("too old resource version: {from} ({now})"),
            "reason": "Expired", "code": 410,
        },
    });
    http::Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(format!("{event}\n")))
        .unwrap_or_else(|_| http::Response::new(full(String::new())))
}

fn full(text: String) -> Body {
    Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed()
}

fn header(req: &http::Request<Incoming>, name: http::header::HeaderName) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The query parameters of `path` (decoded).
fn query(path: &str) -> HashMap<String, String> {
    let q = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}
