//! Failover across the nodes of one Vault (or OpenBao) cluster: the address
//! list, what each node last answered, which node to try next, which failed
//! attempts may be resent, and how long to wait between rounds.
//!
//! Nothing here sends a request. [`crate::vault`] sends one request per
//! attempt through the HTTP client of the chosen address and asks this
//! module what the outcome means, so the transport can change without
//! touching the policy. The decisions of one request are the small state
//! machine [`Failover`]: told what the last attempt saw, it says to send to
//! node i, to wait d, or to give up.
//!
//! The rules, checked against a 3-node raft OpenBao 2.7 cluster:
//!
//! - A connection that could not be made (refused, DNS, TLS handshake, the
//!   connect timeout) sent nothing: any request may go elsewhere.
//! - Some answers say the node did not process the request: `503 Vault is
//!   sealed`, `500 local node not active but active cluster node not found`
//!   (a standby without a leader), `501` not initialised, and a `307` from a
//!   standby that cannot forward (during an election standbys redirect
//!   writes to the dead leader). Any request may go elsewhere, and when every
//!   node answers so (an election, a sealed cluster), again after a backoff.
//! - Rounds in which every address fails are retried for at most the retry
//!   budget (`-vault-retry-budget`, about one leader election), and past it
//!   only while some node answers that an election is under way (no active
//!   node); never past the caller's deadline. A wrong or dead address thus
//!   fails its mount in seconds, naming what each address answered, and
//!   does not hold a mount slot for the driver's whole deadline.
//! - A broken exchange or any other 5xx may have been processed: only
//!   idempotent requests (reads, renewals, revocations) are resent, at most
//!   [`MAX_AMBIGUOUS`] times in all. A login or a write (`pki/issue`) is not,
//!   since a second attempt could mint a second credential.
//! - A request that timed out is never resent: it reached Vault, which is
//!   too slow already.
//!
//! Nodes that failed so are skipped until a `sys/health` probe finds them
//! serving again or their cool-down passes, so traffic returns to a
//! recovered node. Among serving nodes the one the probes found active goes
//! first (it has the latest state; OpenBao's standbys answer reads and even
//! logins themselves, possibly from stale data), then the list order.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::vault::transport::{Endpoint, HttpError, Response};

/// Most addresses one list may hold (a 5-node cluster, twice over, and more).
pub const MAX_ADDRESSES: usize = 16;
/// Resends of a request whose earlier attempt may have been processed.
pub const MAX_AMBIGUOUS: u32 = 2;
/// First wait after a round in which every address failed; doubled each round.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// An attempt is not started with less than this left before the deadline,
/// so the caller can still report what every address answered.
const RESERVE: Duration = Duration::from_millis(200);
/// First cool-down of a failed node; doubled per consecutive failure.
const FIRST_COOLDOWN: Duration = Duration::from_secs(1);
/// Longest cool-down: a node is tried again at least this often.
const MAX_COOLDOWN: Duration = Duration::from_secs(30);
/// How often the nodes are probed (`sys/health`) while one is down or no
/// active node is known, to bring nodes back and find the new leader.
pub const RECOVERY_PROBE: Duration = Duration::from_secs(2);
/// How often the nodes are probed otherwise, to follow the active node.
pub const ROUTINE_PROBE: Duration = Duration::from_secs(5);
/// Longest the first request of a client waits for its first probe.
pub const FIRST_PROBE: Duration = Duration::from_millis(500);

/// One Vault address or several nodes of one cluster, in order of
/// preference. Never empty, no address twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Addresses(Vec<Endpoint>);

impl Addresses {
    /// Parses one URL or a comma-separated list of them
    /// (`https://vault-0:8200,https://vault-1:8200`).
    pub fn parse(list: &str) -> Result<Addresses, String> {
        let mut out: Vec<Endpoint> = Vec::new();
        for part in list.split(',') {
            let part = part.trim();
            if part.is_empty() {
                if list.contains(',') {
                    return Err(format!("{list:?} has an empty entry in its address list"));
                }
                return Err("the Vault address is empty".to_string());
            }
            let e = Endpoint::parse(part)?;
            if out.contains(&e) {
                return Err(format!("{part:?} is listed twice"));
            }
            out.push(e);
        }
        if out.len() > MAX_ADDRESSES {
            return Err(format!("{} addresses listed; at most {MAX_ADDRESSES}", out.len()));
        }
        Ok(Addresses(out))
    }

    /// The addresses, in order of preference.
    pub fn iter(&self) -> std::slice::Iter<'_, Endpoint> {
        self.0.iter()
    }

    /// How many there are (at least one).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true; for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first, most preferred address.
    pub fn first(&self) -> &Endpoint {
        // The constructors never make an empty list.
        &self.0[0]
    }

    /// Whether `e` is one of them.
    pub fn contains(&self, e: &Endpoint) -> bool {
        self.0.contains(e)
    }
}

impl From<Endpoint> for Addresses {
    fn from(e: Endpoint) -> Addresses {
        Addresses(vec![e])
    }
}

impl std::fmt::Display for Addresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Accepts a list, or the single endpoint that ledger state files written
/// before address lists hold.
impl<'de> serde::Deserialize<'de> for Addresses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Addresses, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<Endpoint>),
            One(Endpoint),
        }
        let list = match Form::deserialize(d)? {
            Form::List(l) => l,
            Form::One(e) => vec![e],
        };
        if list.is_empty() || list.len() > MAX_ADDRESSES {
            return Err(serde::de::Error::custom(format!(
                "an address list holds 1 to {MAX_ADDRESSES} addresses, not {}",
                list.len()
            )));
        }
        Ok(Addresses(list))
    }
}

/// What an attempt's outcome means for failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Vault answered and the answer stands (a success, or Vault's own
    /// error such as 403 or 404); also transport errors that another node
    /// would not fix (response too large, over budget).
    Final,
    /// Nothing reached a server: safe to send anywhere.
    Unreached(Reason),
    /// A node answered that it did not process the request (sealed, no
    /// active node, a standby's redirect): safe to send anywhere.
    NotServing(Reason),
    /// The request may have been processed (broken exchange, another 5xx).
    Ambiguous,
    /// No answer within the request timeout: never resent.
    TimedOut,
}

impl Verdict {
    /// Whether the request provably was not processed.
    pub fn unprocessed(self) -> bool {
        matches!(self, Verdict::Unreached(_) | Verdict::NotServing(_))
    }
}

/// Why an address was left for another, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No connection (refused, DNS, connect timeout, a broken handshake).
    Unreachable,
    /// The TLS handshake was refused (a certificate that does not verify):
    /// configuration, which no wait fixes.
    TlsRefused,
    /// `503 Vault is sealed`.
    Sealed,
    /// A standby without an active node, or one that redirected.
    NoActiveNode,
    /// `501`: not initialised.
    Uninitialized,
    /// A broken exchange or an unexplained 5xx (idempotent requests only).
    Error,
}

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Unreachable => "unreachable",
            Reason::TlsRefused => "tls_refused",
            Reason::Sealed => "sealed",
            Reason::NoActiveNode => "no_active_node",
            Reason::Uninitialized => "uninitialized",
            Reason::Error => "error",
        }
    }
}

/// Classifies one attempt's outcome.
pub fn classify(result: &Result<Response, HttpError>) -> Verdict {
    match result {
        Err(HttpError::Connect(_)) => Verdict::Unreached(Reason::Unreachable),
        Err(HttpError::Tls(_)) => Verdict::Unreached(Reason::TlsRefused),
        Err(HttpError::Broken(_)) => Verdict::Ambiguous,
        Err(HttpError::Timeout(_)) => Verdict::TimedOut,
        Err(HttpError::TooLarge(_) | HttpError::OverBudget(_) | HttpError::Build(_)) => Verdict::Final,
        Ok(r) => classify_answer(r.status, &r.body),
    }
}

/// Classifies an HTTP answer by its status and Vault's `errors`.
pub fn classify_answer(status: u16, body: &[u8]) -> Verdict {
    let text = || String::from_utf8_lossy(&body[..body.len().min(2048)]).to_ascii_lowercase();
    match status {
        // A standby that could not forward the request to an active node
        // redirects to where it believes the leader is.
        301..=399 => Verdict::NotServing(Reason::NoActiveNode),
        501 => Verdict::NotServing(Reason::Uninitialized),
        500..=599 => {
            let t = text();
            if t.contains("is sealed") {
                Verdict::NotServing(Reason::Sealed)
            } else if t.contains("active cluster node not found")
                || t.contains("node not active")
                || t.contains("in standby mode")
                || t.contains("not initialized")
            {
                Verdict::NotServing(Reason::NoActiveNode)
            } else {
                Verdict::Ambiguous
            }
        }
        _ => Verdict::Final,
    }
}

/// Whether a failed attempt may be resent, by what the request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Reads, renewals and revocations: also after an ambiguous failure.
    Idempotent,
    /// Writes: only when nothing was processed.
    OnlyUnprocessed,
    /// Logins: as writes, and a refusal (403) from a node the last probe
    /// found to be a standby is tried on the other nodes. OpenBao's
    /// read-enabled standbys answer logins themselves, from auth
    /// configuration that can be stale: a 3-node OpenBao 2.7 cluster whose
    /// kubernetes auth was configured after the standbys started refused
    /// every login on the standbys (403) while the active node accepted
    /// them, until the standbys restarted. A refused login mints nothing.
    Login,
}

/// What `sys/health` said about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// 200: the active node.
    Active,
    /// 429 (standby) or 473 (performance standby): serving, forwards writes.
    Standby,
    /// 503: sealed.
    Sealed,
    /// 501: not initialised.
    Uninitialized,
    /// Anything else (472 DR secondary, 530 removed, other statuses).
    Other(u16),
}

impl NodeState {
    /// Reads a `sys/health` status (asked without `standbyok`).
    pub fn from_health(status: u16) -> NodeState {
        match status {
            200 => NodeState::Active,
            429 | 473 => NodeState::Standby,
            503 => NodeState::Sealed,
            501 => NodeState::Uninitialized,
            s => NodeState::Other(s),
        }
    }

    /// Whether requests may be sent to it.
    pub fn serving(self) -> bool {
        matches!(self, NodeState::Active | NodeState::Standby)
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeState::Active => f.write_str("active"),
            NodeState::Standby => f.write_str("standby"),
            NodeState::Sealed => f.write_str("sealed"),
            NodeState::Uninitialized => f.write_str("not initialised"),
            NodeState::Other(472) => f.write_str("DR secondary (472)"),
            NodeState::Other(s) => write!(f, "answered sys/health with {s}"),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct NodeHealth {
    /// What the last `sys/health` probe said, while the node has not failed since.
    state: Option<NodeState>,
    /// Set while the node is considered down: when to try it again anyway.
    retry_at: Option<Instant>,
    /// Consecutive failures (for the cool-down).
    failures: u32,
    /// What it answered last when it failed (for logs and the probe).
    last: String,
}

/// Per-address health of one cluster, shared by every request to it.
#[derive(Debug)]
pub struct Health {
    nodes: Vec<Mutex<NodeHealth>>,
}

impl Health {
    /// Every one of `n` nodes presumed healthy.
    pub fn new(n: usize) -> Health {
        Health {
            nodes: (0..n).map(|_| Mutex::new(NodeHealth::default())).collect(),
        }
    }

    fn node(&self, i: usize) -> std::sync::MutexGuard<'_, NodeHealth> {
        self.nodes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The order in which to try the nodes now: healthy ones (and those
    /// whose cool-down has passed), the active node first (it has the
    /// latest state; standbys may lag) and then in list order, then the
    /// others, soonest retry first. Every node appears once.
    pub fn order(&self, now: Instant) -> Vec<usize> {
        let mut up = Vec::new();
        let mut down = Vec::new();
        for i in 0..self.nodes.len() {
            let n = self.node(i);
            match n.retry_at {
                Some(at) if at > now => down.push((at, i)),
                _ => up.push((n.state != Some(NodeState::Active), i)),
            }
        }
        up.sort();
        down.sort();
        up.into_iter()
            .map(|(_, i)| i)
            .chain(down.into_iter().map(|(_, i)| i))
            .collect()
    }

    /// Node `i` served a request. Returns whether it was down before.
    pub fn succeeded(&self, i: usize) -> bool {
        let mut n = self.node(i);
        let was_down = n.failures > 0;
        let state = n.state;
        *n = NodeHealth {
            state,
            ..NodeHealth::default()
        };
        was_down
    }

    /// Records what a `sys/health` probe said about node `i`.
    pub fn set_state(&self, i: usize, state: Option<NodeState>) {
        self.node(i).state = state;
    }

    /// Whether the last probe found node `i` to be a standby.
    pub fn is_standby(&self, i: usize) -> bool {
        self.node(i).state == Some(NodeState::Standby)
    }

    /// Whether some node is known to be the active one.
    pub fn active_known(&self) -> bool {
        (0..self.nodes.len()).any(|i| self.node(i).state == Some(NodeState::Active))
    }

    /// Node `i` failed with `answer`. Returns whether it was up before.
    pub fn failed(&self, i: usize, answer: &str, now: Instant) -> bool {
        let mut n = self.node(i);
        let was_up = n.failures == 0;
        n.failures = n.failures.saturating_add(1);
        let shift = (n.failures - 1).min(5);
        n.retry_at = Some(now + (FIRST_COOLDOWN * (1u32 << shift)).min(MAX_COOLDOWN));
        n.last = answer.to_string();
        n.state = None;
        was_up
    }

    /// The nodes considered down now.
    pub fn down(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| self.node(i).failures > 0).collect()
    }

    /// Whether node `i` is considered down, and what it answered last.
    #[cfg(test)]
    fn status(&self, i: usize) -> (bool, String) {
        let n = self.node(i);
        (n.failures > 0, n.last.clone())
    }
}

/// The wait after the `round`-th round (from 0) in which every node failed.
fn backoff(round: u32) -> Duration {
    (FIRST_BACKOFF * (1u32 << round.min(10))).min(MAX_BACKOFF)
}

/// How long to wait after the `round`-th failed round before the next one:
/// the backoff, shortened so that one more attempt still starts
/// [`RESERVE`] before `deadline`; `None` when no attempt fits any more.
fn wait_within(round: u32, now: Instant, deadline: Instant) -> Option<Duration> {
    let room = deadline.saturating_duration_since(now).checked_sub(RESERVE)?;
    if room < Duration::from_millis(10) {
        return None;
    }
    Some(backoff(round).min(room))
}

/// Whether an attempt that starts after `wait` still fits before `deadline`.
fn fits(now: Instant, wait: Duration, deadline: Instant) -> bool {
    now + wait + RESERVE <= deadline
}

/// The retry budget when none is configured: a raft leader election
/// (OpenBao's default election timeout and a few heartbeats) fits well
/// inside it.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// What [`Failover`] says to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send the request to node `i`.
    Send(usize),
    /// Wait this long, then ask again.
    Wait(Duration),
    /// Stop: report what every address answered.
    GiveUp(Stop),
}

/// Why [`Failover`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// No further attempt fits before the caller's deadline.
    Deadline,
    /// The retry budget is spent and no node said an election is under way.
    Budget,
    /// Every address refused the TLS handshake: configuration to fix, not
    /// weather to wait out.
    TlsRefused,
}

/// What an attempt's outcome means for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The outcome stands: report it.
    Done,
    /// Try elsewhere; `Some(reason)` marks the node down for that reason,
    /// `None` leaves its health alone (a standby's refused login).
    Retry(Option<Reason>),
}

/// What one attempt saw, as [`Failover::observe`] needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The classified outcome.
    pub verdict: Verdict,
    /// A redirect (3xx) answer.
    pub redirect: bool,
    /// A login refused (403) by a node the last probe found to be a standby.
    pub standby_refusal: bool,
}

/// The failover decisions of one request: which node to send to, how long
/// to wait, when to give up. No I/O and no clock of its own: the caller
/// passes the time and the nodes' order, so tests step it without a network.
#[derive(Debug)]
pub struct Failover {
    resend: Resend,
    single: bool,
    started: Instant,
    deadline: Instant,
    window: Duration,
    /// Nodes left to try in this round.
    queue: std::collections::VecDeque<usize>,
    in_round: bool,
    round: u32,
    attempts: u32,
    ambiguous: u32,
    processed: bool,
    /// This round, every failure was a refused TLS handshake.
    only_tls: bool,
    /// This round, some node answered that it has no active node.
    election: bool,
    /// Whether an election reported by a node extends the retry budget
    /// (only for the operator's addresses: a class's own address could
    /// claim an election forever and hold a mount slot until the deadline).
    elections: bool,
}

impl Failover {
    /// The decisions for a request that may be resent as `resend` allows,
    /// to a cluster of one address (`single`) or several, started at
    /// `started`, to end before `deadline`, retrying failed rounds for
    /// `window` (longer only during an election).
    pub fn new(resend: Resend, single: bool, started: Instant, deadline: Instant, window: Duration) -> Failover {
        Failover {
            resend,
            single,
            started,
            deadline,
            window,
            queue: Default::default(),
            in_round: false,
            round: 0,
            attempts: 0,
            ambiguous: 0,
            processed: false,
            only_tls: true,
            election: false,
            elections: true,
        }
    }

    /// The same decisions, but an election a node reports does not extend
    /// the retry budget (for addresses a class chose, not the operator).
    pub fn without_election_waits(mut self) -> Failover {
        self.elections = false;
        self
    }

    /// What to do at `now`. `order` gives the nodes in the order to try
    /// them; it is asked at the start of each round.
    pub fn next(&mut self, now: Instant, order: impl FnOnce() -> Vec<usize>) -> Step {
        if !self.in_round {
            self.queue = order().into();
            self.in_round = true;
            self.only_tls = true;
            self.election = false;
        }
        if let Some(i) = self.queue.pop_front() {
            // The first attempt always goes; later ones only with time
            // left to report what every address answered.
            if self.attempts > 0 && !fits(now, Duration::ZERO, self.deadline) {
                return Step::GiveUp(Stop::Deadline);
            }
            return Step::Send(i);
        }
        // Every address failed this round.
        self.in_round = false;
        if self.only_tls && self.attempts > 0 {
            return Step::GiveUp(Stop::TlsRefused);
        }
        let Some(mut wait) = wait_within(self.round, now, self.deadline) else {
            return Step::GiveUp(Stop::Deadline);
        };
        if !(self.election && self.elections) {
            let spent = now.saturating_duration_since(self.started);
            let Some(left) = self.window.checked_sub(spent).filter(|l| !l.is_zero()) else {
                return Step::GiveUp(Stop::Budget);
            };
            wait = wait.min(left);
        }
        self.round += 1;
        Step::Wait(wait)
    }

    /// What the attempt on a node saw: whether that ends the request.
    pub fn observe(&mut self, seen: Seen) -> Next {
        self.attempts += 1;
        if seen.standby_refusal {
            // Possibly a standby's stale view: ask the others too.
            self.only_tls = false;
            return Next::Retry(None);
        }
        let moves_on = match seen.verdict {
            Verdict::Final | Verdict::TimedOut => false,
            // One address: its redirect is configuration to report, not
            // weather to wait out (there is no other node).
            Verdict::NotServing(_) if self.single && seen.redirect => false,
            Verdict::Unreached(_) | Verdict::NotServing(_) => true,
            Verdict::Ambiguous => self.resend == Resend::Idempotent && self.ambiguous < MAX_AMBIGUOUS,
        };
        if !moves_on {
            return Next::Done;
        }
        let reason = match seen.verdict {
            Verdict::Unreached(r) | Verdict::NotServing(r) => r,
            _ => {
                self.ambiguous += 1;
                self.processed = true;
                Reason::Error
            }
        };
        self.only_tls &= reason == Reason::TlsRefused;
        self.election |= reason == Reason::NoActiveNode;
        Next::Retry(Some(reason))
    }

    /// Whether an attempt that failed may have been processed by Vault.
    pub fn processed(&self) -> bool {
        self.processed
    }
}

/// What one address answered, as the final error reports it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The address.
    pub address: String,
    /// Its last answer (never a token or a secret: Vault's own messages
    /// and transport errors).
    pub answer: String,
    /// How many attempts it got.
    pub count: u32,
}

/// Records failed attempts, one line per address, in the order first tried.
#[derive(Debug, Default, Clone)]
pub struct Attempts(Vec<Attempt>);

impl Attempts {
    /// Adds a failed attempt on `address`.
    pub fn add(&mut self, address: &str, answer: String) {
        match self.0.iter_mut().find(|a| a.address == address) {
            Some(a) => {
                a.answer = answer;
                a.count += 1;
            }
            None => self.0.push(Attempt {
                address: address.to_string(),
                answer,
                count: 1,
            }),
        }
    }

    /// Attempts in all.
    pub fn total(&self) -> u32 {
        self.0.iter().map(|a| a.count).sum()
    }

    /// Per address.
    pub fn list(&self) -> &[Attempt] {
        &self.0
    }
}

#[cfg(test)]
mod tests;
