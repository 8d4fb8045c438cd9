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

use crate::http::{Endpoint, HttpError, Response};

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
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(10);

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
    budget: Duration,
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
}

impl Failover {
    /// The decisions for a request that may be resent as `resend` allows,
    /// to a cluster of one address (`single`) or several, started at
    /// `started`, to end before `deadline`, retrying failed rounds for
    /// `budget` (longer only during an election).
    pub fn new(resend: Resend, single: bool, started: Instant, deadline: Instant, budget: Duration) -> Failover {
        Failover {
            resend,
            single,
            started,
            deadline,
            budget,
            queue: Default::default(),
            in_round: false,
            round: 0,
            attempts: 0,
            ambiguous: 0,
            processed: false,
            only_tls: true,
            election: false,
        }
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
        if !self.election {
            let spent = now.saturating_duration_since(self.started);
            let Some(left) = self.budget.checked_sub(spent).filter(|l| !l.is_zero()) else {
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
mod tests {
    use super::*;

    #[test]
    fn address_lists_parse() {
        let a = Addresses::parse("http://n1:8200, http://n2:8200,http://n3:8200").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a.to_string(), "http://n1:8200,http://n2:8200,http://n3:8200");
        assert_eq!(a.first(), &Endpoint::parse("http://n1:8200").unwrap());
        assert_eq!(Addresses::parse("https://vault:8200").unwrap().len(), 1);
        for (bad, why) in [
            ("", "empty"),
            ("http://a:1,,http://b:1", "empty entry"),
            ("http://a:1,", "empty entry"),
            ("http://a:1,http://a:1/", "listed twice"),
            ("http://a:1,vault:8200", "must start with"),
            ("http://a:99999", "not a port"),
        ] {
            let e = Addresses::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let many: Vec<String> = (1..=17).map(|i| format!("http://n{i}:8200")).collect();
        assert!(Addresses::parse(&many.join(",")).unwrap_err().contains("at most 16"));
    }

    #[test]
    fn old_single_endpoints_deserialize_as_lists() {
        let one = serde_json::to_value(Endpoint::parse("http://n1:8200").unwrap()).unwrap();
        let a: Addresses = serde_json::from_value(one).unwrap();
        assert_eq!(a, Addresses::parse("http://n1:8200").unwrap());
        let list = Addresses::parse("http://n1:8200,unix:///run/agent.sock").unwrap();
        let back: Addresses = serde_json::from_value(serde_json::to_value(&list).unwrap()).unwrap();
        assert_eq!(back, list);
        assert!(serde_json::from_str::<Addresses>("[]").is_err());
    }

    fn answer(status: u16, body: &str) -> Result<Response, HttpError> {
        Ok(Response {
            status,
            headers: Default::default(),
            body: bytes::Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn openbao_answers_are_classified() {
        // As a 3-node raft OpenBao 2.7 answered during elections and seals.
        let sealed = answer(503, r#"{"errors":["Vault is sealed"]}"#);
        assert_eq!(classify(&sealed), Verdict::NotServing(Reason::Sealed));
        let leaderless = answer(
            500,
            r#"{"errors":["local node not active but active cluster node not found"]}"#,
        );
        assert_eq!(classify(&leaderless), Verdict::NotServing(Reason::NoActiveNode));
        assert_eq!(classify(&answer(307, "")), Verdict::NotServing(Reason::NoActiveNode));
        assert_eq!(
            classify(&answer(501, r#"{"errors":["Vault is not initialized"]}"#)),
            Verdict::NotServing(Reason::Uninitialized)
        );
        // Anything else may have been processed.
        assert_eq!(
            classify(&answer(500, r#"{"errors":["internal error"]}"#)),
            Verdict::Ambiguous
        );
        assert_eq!(
            classify(&answer(503, r#"{"errors":["injected fault: 503"]}"#)),
            Verdict::Ambiguous
        );
        assert_eq!(classify(&answer(502, "<html>bad gateway</html>")), Verdict::Ambiguous);
        for s in [200, 204, 400, 403, 404, 429] {
            assert_eq!(classify(&answer(s, "{}")), Verdict::Final, "{s}");
        }
        assert_eq!(
            classify(&Err(HttpError::Connect("connection refused".into()))),
            Verdict::Unreached(Reason::Unreachable)
        );
        assert_eq!(classify(&Err(HttpError::Broken("reset".into()))), Verdict::Ambiguous);
        assert_eq!(
            classify(&Err(HttpError::Tls("invalid peer certificate".into()))),
            Verdict::Unreached(Reason::TlsRefused)
        );
        assert_eq!(
            classify(&Err(HttpError::Timeout(Duration::from_secs(1)))),
            Verdict::TimedOut
        );
        assert!(Verdict::NotServing(Reason::Sealed).unprocessed());
        assert!(!Verdict::Ambiguous.unprocessed());
    }

    #[test]
    fn health_codes_are_read() {
        assert!(NodeState::from_health(200).serving());
        assert!(NodeState::from_health(429).serving());
        assert!(NodeState::from_health(473).serving());
        for s in [472, 501, 503, 530] {
            assert!(!NodeState::from_health(s).serving(), "{s}");
        }
    }

    #[test]
    fn failed_nodes_go_last_and_come_back() {
        let h = Health::new(3);
        let t0 = Instant::now();
        assert_eq!(h.order(t0), vec![0, 1, 2]);
        assert!(h.failed(0, "refused", t0));
        assert_eq!(h.order(t0), vec![1, 2, 0], "a failed node is tried last");
        assert!(h.failed(1, "sealed", t0 + Duration::from_millis(10)));
        assert_eq!(h.order(t0), vec![2, 0, 1], "down nodes: soonest retry first");
        // After its cool-down a node is preferred again, in list order.
        assert_eq!(h.order(t0 + Duration::from_millis(1005)), vec![0, 2, 1]);
        // Consecutive failures lengthen the cool-down, up to 30 s.
        for _ in 0..10 {
            h.failed(0, "refused", t0);
        }
        assert_eq!(h.order(t0 + Duration::from_secs(29)), vec![1, 2, 0]);
        assert_eq!(h.order(t0 + Duration::from_secs(31)), vec![0, 1, 2]);
        assert_eq!(h.down(), vec![0, 1]);
        assert!(h.succeeded(0), "it was down");
        assert!(!h.succeeded(0));
        assert_eq!(h.status(1), (true, "sealed".to_string()));
        assert_eq!(h.down(), vec![1]);
        // The active node, once a probe found it, goes first.
        let h = Health::new(3);
        h.set_state(0, Some(NodeState::Standby));
        h.set_state(2, Some(NodeState::Active));
        assert!(h.active_known() && h.is_standby(0) && !h.is_standby(1));
        assert_eq!(h.order(t0), vec![2, 0, 1]);
        h.failed(2, "refused", t0);
        assert!(!h.active_known(), "a failure forgets the role");
        assert_eq!(h.order(t0), vec![0, 1, 2]);
    }

    #[test]
    fn backoff_grows_and_stays_inside_the_deadline() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(5), Duration::from_secs(2));
        assert_eq!(backoff(40), Duration::from_secs(2));
        let now = Instant::now();
        assert!(fits(now, Duration::from_millis(100), now + Duration::from_millis(300)));
        assert!(!fits(now, Duration::from_millis(101), now + Duration::from_millis(300)));
        assert_eq!(
            wait_within(5, now, now + Duration::from_secs(10)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            wait_within(5, now, now + Duration::from_millis(700)),
            Some(Duration::from_millis(500))
        );
        assert_eq!(wait_within(0, now, now + Duration::from_millis(205)), None);
    }

    fn seen(verdict: Verdict) -> Seen {
        Seen {
            verdict,
            redirect: false,
            standby_refusal: false,
        }
    }

    /// Steps `f` against `answer(node, now)` with a simulated clock, each
    /// attempt taking `cost`; returns the steps and when it gave up.
    fn simulate(
        mut f: Failover,
        t0: Instant,
        cost: Duration,
        mut answer: impl FnMut(usize, Duration) -> Verdict,
    ) -> (Vec<Step>, Duration) {
        let mut now = t0;
        let mut steps = Vec::new();
        loop {
            let step = f.next(now, || vec![0, 1, 2]);
            steps.push(step);
            match step {
                Step::Send(i) => {
                    let v = answer(i, now - t0);
                    now += cost;
                    if f.observe(seen(v)) == Next::Done {
                        return (steps, now - t0);
                    }
                }
                Step::Wait(d) => now += d,
                Step::GiveUp(_) => return (steps, now - t0),
            }
            assert!(steps.len() < 10_000, "the machine ends");
        }
    }

    #[test]
    fn every_address_refusing_gives_up_after_the_budget_not_the_deadline() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(88);
        let f = Failover::new(Resend::Login, false, t0, deadline, Duration::from_secs(10));
        let refused = |_, _| Verdict::Unreached(Reason::Unreachable);
        let (steps, took) = simulate(f, t0, Duration::from_millis(1), refused);
        assert_eq!(steps.last(), Some(&Step::GiveUp(Stop::Budget)));
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(11),
            "gave up at {took:?}"
        );
        // Every round tries every node, and waits grow up to 2 s.
        assert_eq!(
            &steps[..4],
            &[Step::Send(0), Step::Send(1), Step::Send(2), Step::Wait(backoff(0))]
        );
        assert!(steps
            .iter()
            .all(|s| !matches!(s, Step::Wait(d) if *d > Duration::from_secs(2))));
    }

    #[test]
    fn an_election_is_waited_out_past_the_budget_until_the_deadline() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(30);
        let budget = Duration::from_secs(5);
        // Node 0 is dead; the others have no leader until 12 s, then 1 leads.
        let electing = |i: usize, at: Duration| match i {
            0 => Verdict::Unreached(Reason::Unreachable),
            1 if at >= Duration::from_secs(12) => Verdict::Final,
            _ => Verdict::NotServing(Reason::NoActiveNode),
        };
        let f = Failover::new(Resend::Idempotent, false, t0, deadline, budget);
        let (steps, took) = simulate(f, t0, Duration::from_millis(1), electing);
        assert!(matches!(steps.last(), Some(Step::Send(1))), "{:?}", steps.last());
        assert!(
            took >= Duration::from_secs(12) && took < Duration::from_secs(15),
            "{took:?}"
        );
        // An election that never ends still stops at the deadline.
        let endless = |_, _| Verdict::NotServing(Reason::NoActiveNode);
        let f = Failover::new(Resend::Idempotent, false, t0, deadline, budget);
        let (steps, took) = simulate(f, t0, Duration::from_millis(1), endless);
        assert_eq!(steps.last(), Some(&Step::GiveUp(Stop::Deadline)));
        assert!(took <= Duration::from_secs(30), "{took:?}");
        assert!(took >= Duration::from_secs(29), "{took:?}");
    }

    #[test]
    fn a_sealed_cluster_is_not_an_election() {
        let t0 = Instant::now();
        let f = Failover::new(
            Resend::Idempotent,
            false,
            t0,
            t0 + Duration::from_secs(60),
            Duration::from_secs(3),
        );
        let (steps, took) = simulate(f, t0, Duration::from_millis(1), |_, _| {
            Verdict::NotServing(Reason::Sealed)
        });
        assert_eq!(steps.last(), Some(&Step::GiveUp(Stop::Budget)));
        assert!(took < Duration::from_secs(4), "{took:?}");
    }

    #[test]
    fn what_may_have_been_processed_is_not_resent_unless_idempotent() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(60);
        let budget = Duration::from_secs(10);
        // A login: a broken exchange ends it at once.
        let mut f = Failover::new(Resend::Login, false, t0, deadline, budget);
        assert_eq!(f.next(t0, || vec![0, 1]), Step::Send(0));
        assert_eq!(f.observe(seen(Verdict::Ambiguous)), Next::Done);
        // A read: resent at most MAX_AMBIGUOUS times, then it stands.
        let mut f = Failover::new(Resend::Idempotent, false, t0, deadline, budget);
        for i in 0..MAX_AMBIGUOUS as usize {
            assert_eq!(f.next(t0, || vec![0, 1, 2]), Step::Send(i));
            assert_eq!(f.observe(seen(Verdict::Ambiguous)), Next::Retry(Some(Reason::Error)));
        }
        assert_eq!(f.next(t0, || vec![0, 1, 2]), Step::Send(2));
        assert_eq!(f.observe(seen(Verdict::Ambiguous)), Next::Done);
        assert!(f.processed());
        // A timeout is never resent; a write goes elsewhere only unprocessed.
        let mut f = Failover::new(Resend::OnlyUnprocessed, false, t0, deadline, budget);
        f.next(t0, || vec![0, 1]);
        assert_eq!(
            f.observe(seen(Verdict::NotServing(Reason::Sealed))),
            Next::Retry(Some(Reason::Sealed))
        );
        f.next(t0, || vec![0, 1]);
        assert_eq!(f.observe(seen(Verdict::TimedOut)), Next::Done);
        assert!(!f.processed());
    }

    #[test]
    fn refused_certificates_and_single_redirects_are_reported_at_once() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(60);
        let budget = Duration::from_secs(10);
        let mut f = Failover::new(Resend::Idempotent, false, t0, deadline, budget);
        for i in 0..2 {
            assert_eq!(f.next(t0, || vec![0, 1]), Step::Send(i));
            f.observe(seen(Verdict::Unreached(Reason::TlsRefused)));
        }
        assert_eq!(f.next(t0, || vec![0, 1]), Step::GiveUp(Stop::TlsRefused));
        let mut f = Failover::new(Resend::Idempotent, true, t0, deadline, budget);
        f.next(t0, || vec![0]);
        let redirect = Seen {
            verdict: Verdict::NotServing(Reason::NoActiveNode),
            redirect: true,
            standby_refusal: false,
        };
        assert_eq!(f.observe(redirect), Next::Done);
        // A standby's refused login moves on without marking the node down.
        let mut f = Failover::new(Resend::Login, false, t0, deadline, budget);
        f.next(t0, || vec![0, 1]);
        let refusal = Seen {
            verdict: Verdict::Final,
            redirect: false,
            standby_refusal: true,
        };
        assert_eq!(f.observe(refusal), Next::Retry(None));
        assert_eq!(f.next(t0, || vec![0, 1]), Step::Send(1));
    }

    #[test]
    fn no_attempt_starts_too_close_to_the_deadline() {
        let t0 = Instant::now();
        let mut f = Failover::new(
            Resend::Idempotent,
            false,
            t0,
            t0 + Duration::from_millis(300),
            Duration::from_secs(10),
        );
        assert_eq!(f.next(t0, || vec![0, 1]), Step::Send(0));
        f.observe(seen(Verdict::Unreached(Reason::Unreachable)));
        assert_eq!(
            f.next(t0 + Duration::from_millis(150), || vec![0, 1]),
            Step::GiveUp(Stop::Deadline)
        );
    }

    #[test]
    fn attempts_keep_one_line_per_address() {
        let mut a = Attempts::default();
        a.add("http://n1", "refused".into());
        a.add("http://n2", "sealed".into());
        a.add("http://n1", "refused again".into());
        assert_eq!(a.total(), 3);
        assert_eq!(a.list()[0].answer, "refused again");
        assert_eq!(a.list()[0].count, 2);
        assert_eq!(a.list()[1].address, "http://n2");
    }
}
