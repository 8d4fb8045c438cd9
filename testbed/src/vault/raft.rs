//! A real OpenBao raft cluster for failover tests: `n` `bao server`
//! processes with `storage "raft"` and `retry_join` to each other on
//! loopback ports, one `sys/init` (one unseal key), each node unsealed, and
//! every node a raft voter before [`RaftCluster::start`] returns.
//!
//! Tuned to start and fail over fast on a small machine:
//! `performance_multiplier = 1` (raft's shortest timeouts: a new leader
//! about 2.5 s after the old one is killed) and an autopilot stabilisation
//! time of 1 s, so joined nodes become voters within seconds.
//!
//! Nodes can be killed (SIGKILL), restarted (they rejoin with their data and
//! are unsealed again), sealed and unsealed. Dropping the cluster kills
//! every node and removes its scratch directory.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::openbao::{random_hex, OpenBao};
use crate::ports::free_port_pair;

/// Bound on one call to a node, so that a hung node fails a test quickly.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the cluster may take to form (all nodes unsealed voters).
const FORM_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a restarted node may take to serve again.
const REJOIN_TIMEOUT: Duration = Duration::from_secs(30);

struct RaftNode {
    port: u16,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
}

/// A running raft cluster of OpenBao nodes on loopback.
pub struct RaftCluster {
    binary: PathBuf,
    dir: PathBuf,
    nodes: Vec<RaftNode>,
    unseal_key: String,
    root_token: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl std::fmt::Debug for RaftCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftCluster")
            .field("addresses", &self.addresses())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What `sys/health` says about a node (`None`: no answer).
pub type HealthCode = Option<u16>;

impl RaftCluster {
    /// Starts `n` nodes, initialises the cluster and unseals every node;
    /// returns once all are voters, one active and the others standbys.
    pub async fn start(n: usize) -> anyhow::Result<RaftCluster> {
        if n == 0 {
            bail!("a raft cluster needs at least one node");
        }
        let binary = OpenBao::binary()?;
        let dir = std::env::temp_dir().join(format!("vcp-raft-{}", random_hex(8)?));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < n {
            let p = free_port_pair()?;
            if !ports.iter().any(|q| q.abs_diff(p) < 2) {
                ports.push(p);
            }
        }
        let mut cluster = RaftCluster {
            binary,
            dir: dir.clone(),
            nodes: Vec::new(),
            unseal_key: String::new(),
            root_token: String::new(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        };
        for (i, port) in ports.iter().enumerate() {
            let data = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&data)?;
            let joins: String = ports
                .iter()
                .filter(|p| *p != port)
                .map(|p| format!("  retry_join {{\n    leader_api_addr = \"http://127.0.0.1:{p}\"\n  }}\n"))
                .collect();
            let config = dir.join(format!("n{i}.hcl"));
            std::fs::write(
                &config,
                format!(
                    r#"storage "raft" {{
  path = "{data}"
  node_id = "n{i}"
  performance_multiplier = 1
{joins}}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cport}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cport}"
disable_mlock = true
ui = false
"#,
                    data = data.display(),
                    cport = port + 1,
                ),
            )?;
            cluster.nodes.push(RaftNode {
                port: *port,
                child: None,
                config,
                log: dir.join(format!("n{i}.log")),
            });
        }
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.form().await.map_err(|e| {
            let logs = cluster.log_tails(20);
            e.context(logs)
        })?;
        Ok(cluster)
    }

    async fn form(&mut self) -> anyhow::Result<()> {
        let until = Instant::now() + FORM_TIMEOUT;
        self.wait_health(0, until, |c| c == Some(501)).await?;
        let init = self
            .call(
                0,
                "PUT",
                "sys/init",
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await?;
        if init.0 != 200 {
            bail!("sys/init answered {}: {}", init.0, init.1);
        }
        self.unseal_key = init.1["keys_base64"][0]
            .as_str()
            .ok_or_else(|| anyhow!("sys/init gave no unseal key: {}", init.1))?
            .to_string();
        self.root_token = init.1["root_token"]
            .as_str()
            .ok_or_else(|| anyhow!("sys/init gave no root token"))?
            .to_string();
        self.unseal(0).await?;
        self.wait_health(0, until, |c| c == Some(200)).await?;
        // Joined nodes become voters once stable for this long (10 s by default).
        let (status, body) = self
            .call(
                0,
                "POST",
                "sys/storage/raft/autopilot/configuration",
                Some(json!({"server_stabilization_time": "1s"})),
            )
            .await?;
        if !(200..300).contains(&status) {
            bail!("setting the autopilot configuration answered {status}: {body}");
        }
        for i in 1..self.nodes.len() {
            self.join(i, until).await?;
        }
        self.wait_voters(until).await
    }

    /// Unseals node `i` once `retry_join` has fetched its challenge from the
    /// leader (it then reports initialised and sealed), until it is a standby.
    async fn join(&self, i: usize, until: Instant) -> anyhow::Result<()> {
        loop {
            let code = self.health(i).await;
            match code {
                Some(429) | Some(200) => return Ok(()),
                Some(503) => {
                    let _ = self.unseal(i).await;
                }
                _ => {}
            }
            if Instant::now() >= until {
                bail!("node {i} did not join the cluster (sys/health: {code:?})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until autopilot reports the cluster healthy with every running
    /// node a voter and one failure tolerated (for 3 nodes and more): then
    /// any one node may be killed and a leader is still elected.
    async fn wait_voters(&self, until: Instant) -> anyhow::Result<()> {
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        let tolerance = (running.saturating_sub(1) / 2) as u64;
        loop {
            let mut last = String::from("no active node");
            if let Some(active) = self.active().await {
                match self.call(active, "GET", "sys/storage/raft/autopilot/state", None).await {
                    Ok((200, body)) => {
                        let d = &body["data"];
                        let voters = d["servers"]
                            .as_object()
                            .map(|m| {
                                m.values()
                                    .filter(|s| s["status"] == "voter" || s["status"] == "leader")
                                    .count()
                            })
                            .unwrap_or(0);
                        let tolerated = d["failure_tolerance"].as_u64().unwrap_or(0);
                        if d["healthy"] == Value::Bool(true) && voters >= running && tolerated >= tolerance {
                            return Ok(());
                        }
                        last = format!(
                            "{voters} of {running} voters, healthy {}, failure tolerance {tolerated}",
                            d["healthy"]
                        );
                    }
                    Ok((s, body)) => last = format!("{s}: {body}"),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            if Instant::now() >= until {
                bail!("the cluster did not settle: {last}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits (up to `timeout`) until every running node is a healthy voter
    /// and the cluster tolerates one more failure.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_voters(Instant::now() + timeout).await
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("opening {}", node.log.display()))?;
        let mut cmd = crate::child::std_command(&self.binary);
        cmd.arg("server").arg(format!("-config={}", node.config.display()));
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("BAO_") || k.starts_with("VAULT_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        node.child = Some(
            cmd.spawn()
                .with_context(|| format!("spawning {}", self.binary.display()))?,
        );
        Ok(())
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `http://127.0.0.1:<port>` of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's address, comma-separated in node order.
    pub fn addresses(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The root token.
    pub fn root_token(&self) -> String {
        self.root_token.clone()
    }

    /// An admin client (root token) for node `i`; standbys forward writes.
    pub fn admin(&self, i: usize) -> anyhow::Result<OpenBao> {
        OpenBao::attached(self.nodes[i].port, &self.root_token)
    }

    /// Node `i`'s `sys/health` status code, `None` without an answer.
    pub async fn health(&self, i: usize) -> HealthCode {
        self.call(i, "GET", "sys/health", None).await.ok().map(|(s, _)| s)
    }

    /// The node that answers `sys/health` with 200, if any.
    pub async fn active(&self) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some() && self.health(i).await == Some(200) {
                return Some(i);
            }
        }
        None
    }

    /// Waits up to `timeout` for an active node other than `not` (if given).
    pub async fn wait_active(&self, not: Option<usize>, timeout: Duration) -> anyhow::Result<usize> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(a) = self.active().await.filter(|a| Some(*a) != not) {
                return Ok(a);
            }
            if Instant::now() >= until {
                bail!("no active node within {timeout:?}:\n{}", self.log_tails(10));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A running node that answers as a standby.
    pub async fn standby(&self) -> Option<usize> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_some() && self.health(i).await == Some(429) {
                return Some(i);
            }
        }
        None
    }

    /// Kills node `i` with SIGKILL (no clean shutdown, no step-down).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed node again with its data and unseals it; returns once
    /// it serves again as a voter.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.restart_within(i, REJOIN_TIMEOUT).await
    }

    /// [`RaftCluster::restart`], waiting up to `timeout` for the node to serve and
    /// the cluster to settle: after its leader was killed, autopilot can take
    /// longer than [`REJOIN_TIMEOUT`] to call the cluster healthy again.
    pub async fn restart_within(&mut self, i: usize, timeout: Duration) -> anyhow::Result<()> {
        self.kill(i);
        self.spawn(i)?;
        let until = Instant::now() + timeout;
        self.wait_health(i, until, |c| c == Some(503)).await?;
        self.join(i, until).await?;
        self.wait_voters(until).await
    }

    /// Seals node `i` (`sys/seal` on a standby seals only that node).
    pub async fn seal(&self, i: usize) -> anyhow::Result<()> {
        let (status, body) = self.call(i, "PUT", "sys/seal", None).await?;
        if !(200..300).contains(&status) {
            bail!("sys/seal on node {i} answered {status}: {body}");
        }
        Ok(())
    }

    /// Makes the active node `i` give up leadership (`sys/step-down`); another
    /// node is elected.
    pub async fn step_down(&self, i: usize) -> anyhow::Result<()> {
        let (status, body) = self.call(i, "PUT", "sys/step-down", None).await?;
        if !(200..300).contains(&status) {
            bail!("sys/step-down on node {i} answered {status}: {body}");
        }
        Ok(())
    }

    /// Sends the unseal key to node `i`.
    pub async fn unseal(&self, i: usize) -> anyhow::Result<()> {
        let (status, body) = self
            .call(i, "PUT", "sys/unseal", Some(json!({ "key": self.unseal_key })))
            .await?;
        if status != 200 {
            bail!("sys/unseal on node {i} answered {status}: {body}");
        }
        Ok(())
    }

    /// Waits until node `i` answers `sys/health` with a code `ok` accepts.
    pub async fn wait_health(&self, i: usize, until: Instant, ok: impl Fn(HealthCode) -> bool) -> anyhow::Result<()> {
        loop {
            let code = self.health(i).await;
            if ok(code) {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!("node {i} answered sys/health with {code:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One call to node `i` with the root token (when known).
    async fn call(&self, i: usize, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let port = self.nodes[i].port;
        let mut builder = http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes())?)
            .uri(format!("http://127.0.0.1:{port}/v1/{path}"));
        if !self.root_token.is_empty() {
            builder = builder.header("X-Vault-Token", &self.root_token);
        }
        let payload = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let req = builder.body(Full::new(payload))?;
        let exchange = async {
            let resp = self.http.request(req).await?;
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("{method} {path} on node {i}: no answer within {CALL_TIMEOUT:?}"))?
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- node {i} ({}) ---\n", self.addr(i)));
            out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
            out.push('\n');
        }
        out
    }
}

impl Drop for RaftCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
