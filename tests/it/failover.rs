//! Failover through a real 3-node raft OpenBao cluster: the provider is
//! given the nodes as an address list and mounts keep working while a
//! standby or the active node is killed, while a node is sealed, and with
//! the first address dead from the start; no mount mints a second credential
//! and a held lease is renewed across the leader change.
//!
//! Mounts come from the grpc-go client (the library of every CSI driver
//! release) on one persistent connection, one call every 100 ms for 30 s per
//! scenario; each pod is mounted three times (one login and one database
//! lease, then two mounts from the ledger), so new pods keep logging in and
//! minting leases throughout. Each observation is printed as a `FAILOVER |`
//! line (`--nocapture`); those lines are the figures in docs/reliability.md.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;
use vault_csi_provider::proto::MountRequest;
use vcp_testbed::driver::clients::{RealClient, Session};
use vcp_testbed::driver::{mount_request, Generation, PodContext};
use vcp_testbed::postgres::Postgres;
use vcp_testbed::vault::openbao::OpenBao;
use vcp_testbed::vault::raft::RaftCluster;
use vcp_testbed::vault::vault_proxy::VaultProxy;
use vcp_testbed::world::World;

/// A KV secret and a dynamic database credential.
const OBJECTS: &str = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";
/// A database credential with a 20 s lease, renewed by the ledger every
/// ~13 s (so it outlives an election of a few seconds only if renewed).
const SHORT: &str = "- {objectName: user, secretPath: database/creds/short, secretKey: username}\n- {objectName: pass, secretPath: database/creds/short, secretKey: password}\n";
const LEASES: &str = "database/creds/app";
/// One scenario's mount loop.
const LOOP: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_millis(100);
/// When the fault strikes within a loop.
const FAULT_AT: Duration = Duration::from_secs(5);
/// Mounts per pod: the first logs in and mints, the others reuse.
const MOUNTS_PER_POD: usize = 3;
/// The driver-side deadline of each mount (the provider keeps 2 s back).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

struct Bed {
    cluster: RaftCluster,
    world: World,
    _dir: tempfile::TempDir,
    /// Pods with at least one successful mount, over the whole test.
    mounted: BTreeSet<String>,
}

/// What one loop saw.
#[derive(Default)]
struct Seen {
    mounts: usize,
    ok: usize,
    /// (start of the mount relative to the loop's start, code, message).
    failures: Vec<(Duration, tonic::Code, String)>,
    slowest: Duration,
}

impl Bed {
    async fn start() -> Bed {
        let started = Instant::now();
        let cluster = RaftCluster::start(3)
            .await
            .expect("a 3-node raft OpenBao cluster starts (run scripts/testbed.sh install)");
        let formed = started.elapsed();
        let active = cluster.active().await.expect("an active node");
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = cluster.admin(active).expect("admin client");
        admin
            .enable_secrets("secret", "kv", json!({"version": "2"}))
            .await
            .expect("KV v2 at secret/");
        let world = World::around(dir.path(), admin)
            .await
            .expect("kubernetes auth wired to the control plane");
        let pg = Postgres::from_env().expect("PostgreSQL for tests (scripts/testbed.sh pg-start)");
        world
            .bao
            .setup_database("database", &pg, "app", "1h", "2h")
            .await
            .expect("database role app");
        world
            .bao
            .setup_database("database", &pg, "short", "20s", "10m")
            .await
            .expect("database role short");
        world
            .bao
            .kv2_put("secret", "app", json!({"k": "v"}))
            .await
            .expect("kv put");
        println!(
            "FAILOVER | cluster of 3 formed (init, unseal, all voters) | {} ms | wired in {} ms |",
            formed.as_millis(),
            (started.elapsed() - formed).as_millis()
        );
        Bed {
            cluster,
            world,
            _dir: dir,
            mounted: BTreeSet::new(),
        }
    }

    /// An admin client on a node that is up now.
    async fn admin(&self) -> OpenBao {
        let i = self
            .cluster
            .wait_active(None, Duration::from_secs(20))
            .await
            .expect("an active node");
        self.cluster.admin(i).expect("admin client")
    }

    async fn leases(&self) -> usize {
        self.admin().await.leases(LEASES).await.expect("list leases").len()
    }

    /// A provider whose only Vault is the address list `addrs`.
    async fn provider(&self, name: &str, addrs: &str) -> Provider {
        let list = format!("-vault-addr={addrs}");
        self.world
            .provider(provider_binary(), name, &[&list, "-request-timeout=5s"])
            .await
            .expect("provider starts")
    }

    async fn pod(&self, name: &str) -> PodContext {
        self.world.pod(self.world.ns(), name, APP_SA).await.expect("pod token")
    }

    /// Mounts every [`EVERY`] for `duration` through `session`, a new pod
    /// every [`MOUNTS_PER_POD`] mounts; at [`FAULT_AT`] runs `fault` once.
    async fn mount_loop(
        &mut self,
        session: &mut Session,
        label: &str,
        duration: Duration,
        mut fault: impl FnMut(&mut RaftCluster),
    ) -> Seen {
        let mut seen = Seen::default();
        let started = Instant::now();
        let mut faulted = false;
        let mut pod = None;
        let mut n = 0usize;
        while started.elapsed() < duration {
            if !faulted && started.elapsed() >= FAULT_AT {
                fault(&mut self.cluster);
                faulted = true;
            }
            if n.is_multiple_of(MOUNTS_PER_POD) {
                // A pod name is a DNS subdomain: the label in lower-case words.
                let words: Vec<&str> = label
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .collect();
                let name = format!("{}-{}", words.join("-").to_ascii_lowercase(), n / MOUNTS_PER_POD);
                pod = Some(self.pod(&name).await);
            }
            let Some(p) = pod.as_ref() else {
                panic!("a pod is set on the first mount")
            };
            let req = kv_and_db_request(p);
            let at = started.elapsed();
            let call = session.mount_other(&req).await.expect("the grpc-go client answers");
            seen.mounts += 1;
            seen.slowest = seen.slowest.max(call.latency);
            match call.result {
                Ok(r) => {
                    assert_eq!(text(&r, "k"), "v");
                    seen.ok += 1;
                    self.mounted.insert(p.name.clone());
                }
                Err(s) => seen.failures.push((at, s.code(), s.message().to_string())),
            }
            n += 1;
            let next = started + EVERY * u32::try_from(n).unwrap_or(u32::MAX);
            tokio::time::sleep_until(next.into()).await;
        }
        let last_failure = seen
            .failures
            .last()
            .map(|(at, code, m)| format!("last failure at {} ms: {code:?}: {m}", at.as_millis()))
            .unwrap_or_default();
        println!(
            "FAILOVER | {label} | {} mounts | {} ok ({:.1} %) | {} failed | slowest {} ms | {last_failure}",
            seen.mounts,
            seen.ok,
            100.0 * seen.ok as f64 / seen.mounts.max(1) as f64,
            seen.failures.len(),
            seen.slowest.as_millis()
        );
        seen
    }

    /// Every lease of role `app` belongs to a pod that mounted: none minted twice.
    async fn no_duplicates(&self, label: &str) {
        let leases = self.leases().await;
        println!(
            "FAILOVER | {label}: database leases | {leases} | pods mounted | {} |",
            self.mounted.len()
        );
        assert_eq!(
            leases,
            self.mounted.len(),
            "{label}: one lease per pod, none minted twice"
        );
    }
}

/// A Mount of [`OBJECTS`] for `pod`, as driver v1.6 sends it.
fn kv_and_db_request(pod: &PodContext) -> MountRequest {
    mount_request(
        Generation::V16,
        "spc",
        &params(OBJECTS, &[("audience", "vault")]),
        pod,
        false,
        Vec::new(),
    )
}

async fn session(p: &Provider, pod: &PodContext) -> Session {
    let req = kv_and_db_request(pod);
    RealClient::GoV16
        .session(&p.socket, &req, MOUNT_TIMEOUT)
        .await
        .expect("the grpc-go client starts (scripts/testbed.sh install builds it)")
}

fn no_failures(label: &str, seen: &Seen) {
    assert!(
        seen.failures.is_empty(),
        "{label}: {} of {} mounts failed, first: {:?}",
        seen.failures.len(),
        seen.mounts,
        seen.failures.iter().take(3).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_ride_through_failover_in_a_raft_cluster() {
    let mut bed = Bed::start().await;
    let pg = Postgres::from_env().expect("PostgreSQL for tests");

    // A standby dies: the provider is pointed at it first.
    let active = bed.cluster.active().await.expect("active");
    let standby = bed.cluster.standby().await.expect("a standby");
    let other = (0..3).find(|i| *i != active && *i != standby).expect("third node");
    let list = [standby, active, other].map(|i| bed.cluster.addr(i)).join(",");
    let p = bed.provider("standby", &list).await;
    let mut s = session(&p, &bed.pod("warm-a").await).await;
    let seen = bed
        .mount_loop(&mut s, "standby killed (first in the list)", LOOP, |c| c.kill(standby))
        .await;
    no_failures("standby killed", &seen);
    bed.no_duplicates("standby killed").await;
    bed.cluster.restart(standby).await.expect("the standby rejoins");
    drop(s);
    p.kill().await;

    // A sealed node is skipped; unsealed again, it is used. A counting proxy
    // in front of it shows where the reads go.
    let sealed = bed.cluster.standby().await.expect("a standby");
    let proxy = VaultProxy::start(&bed.cluster.addr(sealed)).await.expect("proxy");
    let rest: Vec<String> = (0..3).filter(|i| *i != sealed).map(|i| bed.cluster.addr(i)).collect();
    let p = bed
        .provider("sealed", &format!("{},{}", proxy.url(), rest.join(",")))
        .await;
    let mut s = session(&p, &bed.pod("warm-s").await).await;
    bed.cluster.seal(sealed).await.expect("seal a standby");
    let before = kv_reads(&proxy);
    let seen = bed
        .mount_loop(&mut s, "sealed node first in the list", Duration::from_secs(10), |_| {})
        .await;
    no_failures("sealed node", &seen);
    let while_sealed = kv_reads(&proxy) - before;
    bed.cluster.unseal(sealed).await.expect("unseal");
    bed.cluster
        .wait_health(sealed, Instant::now() + Duration::from_secs(20), |c| c == Some(429))
        .await
        .expect("the unsealed node serves as a standby");
    // Mounts go to the active node first: hand leadership to the unsealed
    // node, and the provider's probe (every 5 s) follows it there.
    let mut leader = bed.cluster.active().await.expect("active");
    // A step-down does not hand leadership to a random follower: 16 in a
    // row never reached the node in a fresh-clone run. So after a few step-downs the
    // leader is killed instead — the survivors elect one of them by their
    // random election timeouts — and restarted.
    const STEP_DOWNS: usize = 4;
    for round in 0..16 {
        if leader == sealed {
            break;
        }
        // Autopilot can take long to call the cluster healthy again after
        // a step-down on a loaded 2-core machine (30 s once was not enough).
        bed.cluster
            .wait_settled(Duration::from_secs(60))
            .await
            .expect("cluster settled");
        let before = leader;
        let how = if round < STEP_DOWNS {
            "step-down"
        } else {
            "leader killed"
        };
        if round < STEP_DOWNS {
            bed.cluster.step_down(leader).await.expect("step-down");
            leader = match bed.cluster.wait_active(Some(leader), Duration::from_secs(30)).await {
                Ok(next) => next,
                // On a loaded machine the node that stepped down can win the
                // next election itself (seen in CI); the loop tries again.
                Err(_) => bed
                    .cluster
                    .wait_active(None, Duration::from_secs(30))
                    .await
                    .expect("a leader after step-down"),
            };
        } else {
            bed.cluster.kill(leader);
            leader = bed
                .cluster
                .wait_active(Some(leader), Duration::from_secs(60))
                .await
                .expect("a leader elected after the old one was killed");
            bed.cluster
                .restart_within(before, Duration::from_secs(120))
                .await
                .expect("the killed leader rejoins");
        }
        println!(
            "FAILOVER | handing leadership to node {sealed} | round {round} ({how}) | node {before} -> node {leader} |"
        );
    }
    assert_eq!(leader, sealed, "leadership reached the unsealed node");
    // The provider's probe (every 5 s) follows leadership there: mount one
    // pod until a read goes through the proxy.
    let follower = bed.pod("follow-s").await;
    let req = kv_and_db_request(&follower);
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let before = kv_reads(&proxy);
        let call = s.mount_other(&req).await.expect("the grpc-go client answers");
        if call.result.is_ok() {
            bed.mounted.insert(follower.name.clone());
        }
        if kv_reads(&proxy) > before {
            break;
        }
        assert!(
            Instant::now() < until,
            "the provider did not follow leadership to the unsealed node within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = kv_reads(&proxy);
    let seen = bed
        .mount_loop(&mut s, "sealed node unsealed again", Duration::from_secs(5), |_| {})
        .await;
    no_failures("unsealed node", &seen);
    let after_unseal = kv_reads(&proxy) - before;
    println!(
        "FAILOVER | sealed node: KV reads through it while sealed | {while_sealed} | after unsealing (and becoming active) | {after_unseal} of {} mounts |",
        seen.mounts
    );
    assert!(
        after_unseal >= seen.mounts - 1,
        "the unsealed node is used again: {after_unseal} of {} reads",
        seen.mounts
    );
    assert!(
        while_sealed * 5 < seen.mounts * 2,
        "the sealed node was skipped: {while_sealed}"
    );
    bed.no_duplicates("sealed node").await;
    drop(s);
    p.kill().await;

    // The active node dies, and with it the leader; a pod holds a 20 s
    // database lease that must be renewed through the new leader.
    bed.cluster
        .wait_settled(Duration::from_secs(30))
        .await
        .expect("cluster settled");
    let active = bed.cluster.active().await.expect("active");
    let order: Vec<usize> = std::iter::once(active).chain((0..3).filter(|i| *i != active)).collect();
    let list = order.iter().map(|i| bed.cluster.addr(*i)).collect::<Vec<_>>().join(",");
    let p = bed.provider("active", &list).await;
    let holder = bed.pod("holder").await;
    let held = p
        .mount(&params(SHORT, &[("audience", "vault")]), &holder)
        .await
        .expect("the holder mounts");
    let (user, pass) = (text(&held, "user"), text(&held, "pass"));
    let mut s = session(&p, &bed.pod("warm-b").await).await;
    let seen = bed
        .mount_loop(&mut s, "active node killed (first in the list)", LOOP, |c| {
            c.kill(active)
        })
        .await;
    let late: Vec<_> = seen
        .failures
        .iter()
        .filter(|(at, _, _)| *at > FAULT_AT + Duration::from_secs(10))
        .collect();
    assert!(late.is_empty(), "mounts failed more than 10 s after the kill: {late:?}");
    let ok = seen.ok as f64 / seen.mounts as f64;
    assert!(
        ok >= 0.95,
        "{:.1} % of mounts OK, first failures: {:?}",
        ok * 100.0,
        seen.failures.iter().take(3).collect::<Vec<_>>()
    );
    let new_active = bed
        .cluster
        .wait_active(Some(active), Duration::from_secs(5))
        .await
        .expect("a new leader");
    println!("FAILOVER | active node {active} killed; new active node | {new_active} |");
    bed.no_duplicates("active node killed").await;
    // 30 s after its 20 s lease was issued, the credential still logs in:
    // renewed through the new leader.
    let renewed = pg.can_login(&user, &pass).await.expect("login attempt");
    let leases = bed
        .admin()
        .await
        .leases("database/creds/short")
        .await
        .expect("short leases");
    println!(
        "FAILOVER | held 20 s lease {} s after issue, across the leader change: logs in | {renewed} | leases | {} |",
        (LOOP + Duration::from_secs(1)).as_secs(),
        leases.len()
    );
    let renewals: Vec<String> = p
        .logs()
        .lines()
        .filter(|l| l.contains("renew") || l.contains("lease"))
        .map(|l| l.chars().take(400).collect())
        .collect();
    assert!(
        renewed,
        "the held credential was renewed across the leader change: {renewals:#?}"
    );
    assert_eq!(leases.len(), 1, "renewed, not replaced");
    assert!(!p.logs().contains("panicked"), "{}", p.logs());
    drop(s);
    p.kill().await;

    // The first address is dead from the start (the killed node stays down).
    let rest: Vec<String> = (0..3).filter(|i| *i != active).map(|i| bed.cluster.addr(i)).collect();
    let p = bed
        .provider(
            "first-dead",
            &format!("{},{}", bed.cluster.addr(active), rest.join(",")),
        )
        .await;
    let mut s = session(&p, &bed.pod("warm-c").await).await;
    let seen = bed
        .mount_loop(&mut s, "first address dead from the start", LOOP, |_| {})
        .await;
    no_failures("first address dead", &seen);
    bed.no_duplicates("first address dead").await;
    let metrics = scrape(&p).await;
    for line in metrics
        .lines()
        .filter(|l| l.contains("vault_address") || l.contains("failovers_total"))
    {
        println!("FAILOVER | metrics | {line} |");
    }
    assert!(
        metrics.contains(&format!(
            "vault_csi_provider_vault_address_up{{address=\"{}\"}} 0",
            bed.cluster.addr(active)
        )),
        "{metrics}"
    );
    drop(s);
    p.kill().await;
}

/// KV reads the proxy passed on.
fn kv_reads(proxy: &VaultProxy) -> usize {
    proxy
        .counts()
        .iter()
        .filter(|(op, _)| op.starts_with("GET secret/data"))
        .map(|(_, n)| *n as usize)
        .sum()
}

/// The provider's `/metrics`, from the health port it logged.
async fn scrape(p: &Provider) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let logs = p.logs();
    let addr = logs
        .lines()
        .find(|l| l.contains("health server listening"))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .unwrap_or_else(|| panic!("no health server line in the log:\n{logs}"))
        .to_string();
    let mut c = tokio::net::TcpStream::connect(&addr).await.expect("health port");
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut raw = String::new();
    c.read_to_string(&mut raw).await.expect("response");
    raw.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
