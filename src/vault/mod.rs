//! How we talk to Vault (or OpenBao): login with a service-account JWT, and
//! the reads an SPC's objects name. Retries are limited to what cannot
//! duplicate work: requests that never reached Vault, and GETs of a failed
//! or broken exchange.
//!
//! Nothing here knows about gRPC or the driver; errors carry what Vault
//! answered and the caller adds who and what was being tried.
//!
//! Below the client: [`transport`] (HTTP on reqwest: TCP, TLS, unix
//! sockets, bounded responses), [`failover`] (address lists, per-address
//! health, which node next and what may be resent) and [`probe`] (the
//! periodic health check behind `vault_up`).

pub mod config;
pub mod failover;
mod pool;
pub mod probe;
pub mod transport;

pub use pool::VaultPool;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderName, Method};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::error::{Error, ErrorKind};
pub use config::{TlsConfig, VaultConfig};
use failover::{Attempts, Health, Next, NodeState, Reason, Resend, Step, Verdict};
use transport::{HttpClient, HttpError, Request, SetupError, TlsOptions};

/// One HTTP request to Vault, as a SecretProviderClass object asks for it.
/// Objects with equal `ReadKey`s share one request per Mount, so `username` and `password` of one database read match.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct ReadKey {
    /// `GET`, `PUT` or `POST`.
    pub method: String,
    /// API path starting with `/v1/`.
    pub path: String,
    /// Query parameters, sorted.
    pub query: Vec<(String, String)>,
    /// Canonical JSON of `secretArgs` (keys sorted), sent as the body.
    pub body: Option<String>,
}

/// The body (`secretArgs`, which may hold a value meant for Vault only) is
/// shown by length.
impl std::fmt::Debug for ReadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadKey")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("body_len", &self.body.as_ref().map(String::len))
            .finish()
    }
}

impl std::fmt::Display for ReadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        if !self.query.is_empty() {
            let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            write!(f, "?{}", q.join("&"))?;
        }
        Ok(())
    }
}

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
    /// Every address failed in a way that let the request be resent, until
    /// the time allowed ran out, or an attempt that may have been processed
    /// ended the failover.
    #[error("{}{}", describe_attempts(attempts, *elapsed), describe_stop(*stop, *window))]
    Unavailable {
        /// What each address answered last.
        attempts: Attempts,
        /// Time spent trying.
        elapsed: Duration,
        /// Why the failover stopped (`None`: an attempt's answer ended it).
        stop: Option<failover::Stop>,
        /// The retry window it ran with (`-retry-budget`).
        window: Duration,
        /// Whether any attempt may have been processed by Vault (a broken
        /// exchange, an unexplained 5xx, a timeout).
        processed: bool,
    },
}

/// "Vault answered ... (3 attempts in 1.2 s)" for one address, one clause
/// per address for several.
fn describe_attempts(attempts: &Attempts, elapsed: Duration) -> String {
    let list = attempts.list();
    let took = format!("{} attempts in {:.1} s", attempts.total(), elapsed.as_secs_f64());
    match list {
        [one] => format!("{} ({took} at {})", one.answer, one.address),
        _ => {
            let each: Vec<String> = list
                .iter()
                .map(|a| format!("{} ({}x): {}", a.address, a.count, a.answer))
                .collect();
            format!("no Vault address could serve the request ({took}): {}", each.join("; "))
        }
    }
}

/// Why retrying stopped, when that is not plain from the answers.
fn describe_stop(stop: Option<failover::Stop>, window: Duration) -> String {
    match stop {
        Some(failover::Stop::Budget) => format!(
            "; gave up after the retry budget of {:.0} s (-retry-budget) with no node reporting a leader election",
            window.as_secs_f64()
        ),
        _ => String::new(),
    }
}

impl VaultError {
    /// HTTP status, when Vault answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            VaultError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether Vault provably did not process the request: no address could
    /// be reached, or each one that answered said it could not serve (sealed,
    /// no active node). A caller may then report the failure as retryable
    /// without risking a second credential.
    pub fn unprocessed(&self) -> bool {
        match self {
            VaultError::Connect(_) => true,
            VaultError::Unavailable { processed, .. } => !processed,
            VaultError::Status { status, message } => {
                failover::classify_answer(*status, message.as_bytes()).unprocessed() && !(300..400).contains(status)
            }
            _ => false,
        }
    }

    /// Whether another attempt later may succeed where this one failed
    /// (Vault unreachable, sealed, electing, failing), as opposed to an
    /// answer that stands (403, 404, 400).
    pub fn transient(&self) -> bool {
        match self {
            VaultError::Status { status, .. } => *status >= 500,
            VaultError::Connect(_) | VaultError::Broken(_) | VaultError::Unavailable { .. } => true,
            _ => false,
        }
    }
}

/// What a Vault call was for, which decides how its failure is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// A login: a failure after it was sent may have minted a token, so it
    /// is final, while one Vault provably did not process may be retried.
    Login,
    /// A read of a secret (or a write that issues one).
    Read,
}

impl VaultError {
    /// The one place a Vault failure becomes an [`ErrorKind`] (and with it
    /// a gRPC code and a metric label), beside
    /// [`crate::kubernetes::client::KubeError::classify`]: `what` says what
    /// failed, and the Vault error stays the cause.
    pub fn classify(self, call: Call, what: impl std::fmt::Display) -> Error {
        Error::because(self.kind(call), what, self)
    }

    /// The kind of this failure of `call`.
    pub fn kind(&self, call: Call) -> ErrorKind {
        match (call, self.status()) {
            (_, Some(403)) => ErrorKind::VaultDenied,
            (Call::Read, Some(404)) => ErrorKind::NotFound,
            // A login Vault failed to process minted nothing.
            (Call::Login, Some(s)) if s >= 500 => ErrorKind::VaultUnavailable,
            (Call::Read, Some(s)) if s >= 500 => ErrorKind::VaultFailed,
            (_, Some(_)) => ErrorKind::VaultRejected,
            // Nothing reached Vault, or every node said it did not process
            // the login (sealed, electing): the driver may retry.
            (Call::Login, None) if self.unprocessed() => ErrorKind::VaultUnavailable,
            (Call::Login, None) if matches!(self, VaultError::TooLarge) => ErrorKind::BadResponse,
            (_, None) => match self {
                VaultError::TooLarge | VaultError::OverBudget(_) => ErrorKind::TooLarge,
                VaultError::BadResponse(_) => ErrorKind::BadResponse,
                // Connect, Broken, Unavailable: it may have been processed.
                _ => ErrorKind::VaultFailed,
            },
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

/// A client for one Vault cluster (one address or several nodes) and TLS
/// configuration: one pooled HTTP client per address, and the addresses'
/// shared health (see [`crate::vault::failover`]).
#[derive(Clone)]
pub struct VaultClient {
    inner: Arc<Inner>,
    /// Failover and backoff stop in time to report before this; `None`:
    /// [`BACKGROUND_DEADLINE`] from the start of each request.
    deadline: Option<Instant>,
    /// How long rounds in which every address fails are retried, unless a
    /// node reports an election (see [`crate::vault::failover`]).
    retry_window: Duration,
    /// Whether a reported election extends the retry budget (the
    /// operator's addresses; not those a class chose).
    waits_out_elections: bool,
}

struct Node {
    /// The address as configured, for messages and metrics.
    address: String,
    http: HttpClient,
}

struct Inner {
    nodes: Vec<Node>,
    health: Health,
    namespace: Option<String>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Where the task probing the nodes runs (clients of several
    /// addresses), and whether it does.
    tasks: crate::tasks::Tasks,
    watching: AtomicBool,
    /// Wakes that task when a node fails, to find a new leader sooner.
    failed: tokio::sync::Notify,
}

/// How long a request without a mount deadline (renewals, revocations,
/// probes) may keep failing over and backing off: an election takes a few
/// seconds.
pub const BACKGROUND_DEADLINE: Duration = Duration::from_secs(10);

impl VaultClient {
    /// Builds a client, reading CA and client certificate files now so that a
    /// bad path fails before anything is sent.
    pub fn new(cfg: &VaultConfig, timeout: Duration) -> Result<VaultClient, SetupError> {
        Self::build(cfg, timeout, None, crate::tasks::Tasks::new())
    }

    /// [`new`](Self::new), counting every HTTP exchange in `metrics` and
    /// starting the cluster watch (several addresses) in `tasks`.
    pub(crate) fn build(
        cfg: &VaultConfig,
        timeout: Duration,
        metrics: Option<Arc<crate::metrics::Metrics>>,
        tasks: crate::tasks::Tasks,
    ) -> Result<VaultClient, SetupError> {
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
            tls.client_auth = Some((chain, Arc::new(key)));
        }
        let nodes = cfg
            .addresses
            .iter()
            .map(|e| {
                Ok(Node {
                    address: e.to_string(),
                    http: HttpClient::new(e, &tls, timeout, MAX_RESPONSE)?,
                })
            })
            .collect::<Result<Vec<_>, SetupError>>()?;
        Ok(VaultClient {
            inner: Arc::new(Inner {
                health: Health::new(nodes.len()),
                nodes,
                namespace: cfg.namespace.clone(),
                metrics,
                tasks,
                watching: AtomicBool::new(false),
                failed: tokio::sync::Notify::new(),
            }),
            deadline: None,
            retry_window: failover::DEFAULT_RETRY_WINDOW,
            waits_out_elections: true,
        })
    }

    /// The same client, retrying rounds of failed addresses for `window`.
    pub fn with_retry_window(mut self, window: Duration) -> VaultClient {
        self.retry_window = window;
        self
    }

    /// The same client (same connections, same health) whose failover and
    /// backoff end in time to report before `deadline`: a mount's.
    pub fn until(&self, deadline: Instant) -> VaultClient {
        VaultClient {
            inner: self.inner.clone(),
            deadline: Some(deadline),
            retry_window: self.retry_window,
            waits_out_elections: self.waits_out_elections,
        }
    }

    /// The same client, waiting out a leader election past the retry
    /// budget only when `on` (the operator's addresses).
    pub fn waiting_out_elections(mut self, on: bool) -> VaultClient {
        self.waits_out_elections = on;
        self
    }

    fn request(&self, method: Method, path: String, token: Option<&str>, body: Option<Bytes>) -> Request {
        let mut headers = vec![(HeaderName::from_static("x-vault-request"), "true".to_string())];
        if let Some(ns) = &self.inner.namespace {
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

    async fn send(&self, req: Request, resend: Resend) -> Result<Json, VaultError> {
        self.send_within(req, resend, &crate::budget::Unlimited).await
    }

    /// Sends `req` to the healthiest address, failing over and backing off
    /// as [`crate::vault::failover`] allows for `resend`, until the deadline; the
    /// response is counted against `budget`.
    async fn send_within(
        &self,
        req: Request,
        resend: Resend,
        budget: &dyn crate::budget::Charge,
    ) -> Result<Json, VaultError> {
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = self.deadline.unwrap_or(started + BACKGROUND_DEADLINE);
        let single = inner.nodes.len() == 1;
        if !single {
            self.follow_cluster().await;
        }
        let mut attempts = Attempts::default();
        let mut plan = failover::Failover::new(resend, single, started, deadline, self.retry_window);
        if !self.waits_out_elections {
            plan = plan.without_election_waits();
        }
        let mut stop = None;
        let outcome = loop {
            let i = match plan.next(Instant::now(), || inner.health.order(Instant::now())) {
                Step::Send(i) => i,
                Step::Wait(d) => {
                    tokio::time::sleep(d).await;
                    continue;
                }
                Step::GiveUp(why) => {
                    stop = Some(why);
                    break None;
                }
            };
            let (result, seen) = self.attempt(i, &req, resend, budget).await;
            match plan.observe(seen) {
                Next::Done => {
                    if seen.verdict == Verdict::Final {
                        self.node_serving(i);
                    }
                    break Some((i, result, seen.verdict));
                }
                Next::Retry(reason) => self.note_retry(i, &req, reason, result, &mut attempts),
            }
        };
        let failed_over = attempts.total() > 0;
        let result = match outcome {
            Some((i, result, verdict)) => {
                if failed_over {
                    tracing::info!(vault = %inner.nodes[i].address, path = %req.path_and_query, failed_attempts = attempts.total(), "Vault request went through after failing over");
                }
                self.conclude(i, result, verdict, attempts, started, budget)
            }
            None => Err(VaultError::Unavailable {
                attempts,
                elapsed: started.elapsed(),
                processed: plan.processed(),
                stop,
                window: self.retry_window,
            }),
        };
        if failed_over {
            if let Some(m) = &inner.metrics {
                m.vault_failover(result.is_ok());
            }
        }
        result
    }

    /// On a client of several addresses' first request: learns which node
    /// is active, briefly, then keeps following the cluster in the
    /// background (the client's [`crate::tasks::Tasks`]).
    async fn follow_cluster(&self) {
        if !self.inner.watching.swap(true, Ordering::SeqCst) {
            let _ = tokio::time::timeout(failover::FIRST_PROBE, self.probe()).await;
            self.inner
                .tasks
                .spawn("vault cluster watch", watch(Arc::downgrade(&self.inner)));
        }
    }

    /// Sends `req` to node `i` once, counts the exchange, and says what the
    /// failover should make of the answer.
    async fn attempt(
        &self,
        i: usize,
        req: &Request,
        resend: Resend,
        budget: &dyn crate::budget::Charge,
    ) -> (Result<transport::Response, HttpError>, failover::Seen) {
        let inner = &self.inner;
        let sent = Instant::now();
        let result = inner.nodes[i].http.send_within(req.clone(), budget).await;
        let status = result.as_ref().ok().map(|r| r.status);
        if let Some(m) = &inner.metrics {
            m.vault_request(&req.path_and_query, status, sent.elapsed());
        }
        let seen = failover::Seen {
            verdict: failover::classify(&result),
            redirect: status.is_some_and(|s| (300..400).contains(&s)),
            standby_refusal: resend == Resend::Login
                && inner.nodes.len() > 1
                && inner.health.is_standby(i)
                && status == Some(403),
        };
        (result, seen)
    }

    /// Node `i`'s answer will be asked of another: notes it among the
    /// attempts, and (unless a standby only refused a login) as the node's
    /// failure for `reason`.
    fn note_retry(
        &self,
        i: usize,
        req: &Request,
        reason: Option<Reason>,
        result: Result<transport::Response, HttpError>,
        attempts: &mut Attempts,
    ) {
        let node = &self.inner.nodes[i];
        let answer = match interpret(result) {
            Err(e) => e.to_string(),
            Ok(_) => "answered".to_string(),
        };
        match reason {
            Some(reason) => {
                tracing::debug!(vault = %node.address, path = %req.path_and_query, reason = reason.label(), answer = %answer, "Vault address failed; trying the next");
                self.node_failed(i, reason, &answer);
                attempts.add(&node.address, answer);
            }
            None => {
                tracing::debug!(vault = %node.address, "a standby refused the login; asking the other nodes");
                attempts.add(&node.address, format!("{answer} (a standby)"));
            }
        }
    }

    /// The outcome of the answer node `i` gave last: its JSON (charged to
    /// `budget`, since the parsed form is held until the mount ends too),
    /// or its error, reported with the earlier failed attempts when it is
    /// itself a failure of the node.
    fn conclude(
        &self,
        i: usize,
        result: Result<transport::Response, HttpError>,
        verdict: Verdict,
        mut attempts: Attempts,
        started: Instant,
        budget: &dyn crate::budget::Charge,
    ) -> Result<Json, VaultError> {
        let failed_over = attempts.total() > 0;
        let json = interpret(result).and_then(|json| {
            budget
                .charge(crate::budget::json_footprint(&json))
                .map_err(VaultError::OverBudget)?;
            Ok(json)
        });
        match json {
            Err(e) if failed_over && !matches!(verdict, Verdict::Final) => {
                attempts.add(&self.inner.nodes[i].address, e.to_string());
                Err(VaultError::Unavailable {
                    attempts,
                    elapsed: started.elapsed(),
                    processed: true,
                    stop: None,
                    window: self.retry_window,
                })
            }
            other => other,
        }
    }

    /// Node `i` answered: it is up (again).
    fn node_serving(&self, i: usize) {
        let inner = &self.inner;
        if inner.health.succeeded(i) {
            tracing::info!(vault = %inner.nodes[i].address, "Vault address is serving again");
        }
        if let Some(m) = &inner.metrics {
            m.set_vault_address_up(&inner.nodes[i].address, true);
        }
    }

    /// Node `i` failed: skip it for a while and have it probed.
    fn node_failed(&self, i: usize, reason: Reason, answer: &str) {
        let inner = &self.inner;
        if inner.health.failed(i, answer, Instant::now()) && inner.nodes.len() > 1 {
            inner.failed.notify_one();
            tracing::warn!(vault = %inner.nodes[i].address, reason = reason.label(), answer = %answer, "Vault address failed; using the other addresses until it recovers");
        }
        if let Some(m) = &inner.metrics {
            m.vault_address_failed(&inner.nodes[i].address, reason.label());
            m.set_vault_address_up(&inner.nodes[i].address, false);
        }
    }

    /// Asks every address for `sys/health` now, records what each answered
    /// in the addresses' health, and returns it in list order.
    pub async fn probe(&self) -> Vec<(String, Result<NodeState, VaultError>)> {
        let states =
            futures_util::future::join_all((0..self.inner.nodes.len()).map(|i| probe_node(&self.inner, i))).await;
        let mut out = Vec::with_capacity(states.len());
        for (i, state) in states.into_iter().enumerate() {
            match &state {
                Ok(s) if s.serving() => {
                    self.node_serving(i);
                    self.inner.health.set_state(i, Some(*s));
                }
                Ok(s) => {
                    let reason = match s {
                        NodeState::Sealed => Reason::Sealed,
                        NodeState::Uninitialized => Reason::Uninitialized,
                        _ => Reason::NoActiveNode,
                    };
                    self.node_failed(i, reason, &s.to_string())
                }
                Err(e) => self.node_failed(i, Reason::Unreachable, &e.to_string()),
            }
            out.push((self.inner.nodes[i].address.clone(), state));
        }
        out
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
        // A login mints a token: resent only where it was provably not
        // processed, never after a broken exchange.
        let json = self.send(req, Resend::Login).await?;
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
        // A write (`pki/issue`) may mint a credential per attempt.
        let resend = if method == Method::GET {
            Resend::Idempotent
        } else {
            Resend::OnlyUnprocessed
        };
        let body = key.body.clone().map(Bytes::from);
        let req = self.request(method, path, Some(token), body);
        self.send_within(req, resend, budget).await
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
        let json = self.send(req, Resend::Idempotent).await?;
        let auth = json
            .get("auth")
            .ok_or_else(|| VaultError::BadResponse("renewal response has no auth section".into()))?;
        Ok(Renewed {
            ttl: Duration::from_secs(auth.get("lease_duration").and_then(Json::as_u64).unwrap_or(0)),
            renewable: auth.get("renewable").and_then(Json::as_bool).unwrap_or(false),
        })
    }

    /// Whether `token` is alive in Vault (`auth/token/lookup-self`, which
    /// every token may call on itself): `Ok(true)` alive, `Ok(false)`
    /// refused (revoked or expired), an error when Vault could not say.
    pub async fn token_alive(&self, token: &str) -> Result<bool, VaultError> {
        let req = self.request(Method::GET, "/v1/auth/token/lookup-self".to_string(), Some(token), None);
        match self.send(req, Resend::Idempotent).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(403) => Ok(false),
            Err(e) => Err(e),
        }
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
        let json = self.send(req, Resend::Idempotent).await?;
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
        self.send(req, Resend::Idempotent).await.map(|_| ())
    }

    /// Revokes the token itself (and with it every lease it created).
    pub async fn revoke_self(&self, token: &str) -> Result<(), VaultError> {
        let req = self.request(
            Method::POST,
            "/v1/auth/token/revoke-self".to_string(),
            Some(token),
            None,
        );
        self.send(req, Resend::Idempotent).await.map(|_| ())
    }
}

/// `GET /v1/sys/health` on node `i`, asked so that the status tells the
/// node's state (no `standbyok`).
async fn probe_node(inner: &Inner, i: usize) -> Result<NodeState, VaultError> {
    let req = Request {
        method: Method::GET,
        path_and_query: "/v1/sys/health".to_string(),
        headers: vec![(HeaderName::from_static("x-vault-request"), "true".to_string())],
        body: None,
    };
    let started = Instant::now();
    let result = inner.nodes[i].http.send(req).await;
    if let Some(m) = &inner.metrics {
        m.vault_request(
            "/v1/sys/health",
            result.as_ref().ok().map(|r| r.status),
            started.elapsed(),
        );
    }
    match result {
        Ok(r) => Ok(NodeState::from_health(r.status)),
        Err(e) => Err(interpret(Err(e))
            .err()
            .unwrap_or_else(|| VaultError::BadResponse("no answer".into()))),
    }
}

/// Probes every node of a client of several addresses: every
/// [`failover::RECOVERY_PROBE`] while a node is down or no active node is
/// known (to bring nodes back and find a new leader), every
/// [`failover::ROUTINE_PROBE`] otherwise; until the client is gone.
async fn watch(inner: Weak<Inner>) {
    loop {
        {
            let Some(i) = inner.upgrade() else { return };
            if i.health.down().is_empty() && i.health.active_known() {
                // Woken early when a node fails; this keeps a dropped client
                // alive at most that long.
                let _ = tokio::time::timeout(failover::ROUTINE_PROBE, i.failed.notified()).await;
            } else {
                drop(i);
                tokio::time::sleep(failover::RECOVERY_PROBE).await;
            }
        }
        let Some(strong) = inner.upgrade() else { return };
        let client = VaultClient {
            inner: strong,
            deadline: None,
            retry_window: failover::DEFAULT_RETRY_WINDOW,
            waits_out_elections: true,
        };
        client.probe().await;
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
        Err(HttpError::Tls(m)) => {
            return Err(VaultError::Connect(format!(
                "TLS handshake refused: {m} (check the CA (vaultCACertPath, -vault-tls-ca-cert), vaultTLSServerName and the client certificate)"
            )))
        }
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
            "redirect to {location} (a standby node that cannot forward to an active one?): list every node of the cluster in vaultAddress, or point it at the active node or a load balancer"
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
mod tests;
