//! Failure paths with bounds: a Vault that refuses or never answers fails a
//! mount in seconds, naming the address; lease renewals due during a Vault
//! outage all go through once it is back; revocations cut short by a
//! shutdown are done after the restart. Real OpenBao and PostgreSQL, with
//! the fault proxy for what a real server will not do on demand.

use std::time::{Duration, Instant, SystemTime};

use crate::support::*;
use serde_json::json;
use tonic::Code;
use vcp_testbed::driver::PodContext;
use vcp_testbed::ports::free_port;

const DB_OBJECTS: &str = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";

/// Mounts with the driver's usual deadline and returns the error and how
/// long it took.
async fn failed_mount(p: &Provider, extra: &[(&str, &str)], pod: &PodContext) -> (tonic::Status, Duration) {
    let started = Instant::now();
    let e = p
        .mount(&params(KV_OBJECT, extra), pod)
        .await
        .expect_err("the mount fails");
    (e, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_silent_vault_fails_the_mount_in_seconds_naming_the_address() {
    let bed = Bed::start().await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;

    // Nothing listens there: every connection is refused.
    let refusing = format!("http://127.0.0.1:{}", free_port().unwrap());
    let (e, took) = failed_mount(&p, &[("vaultAddress", &refusing)], &pod).await;
    eprintln!(
        "FAULT | refusing address | {:?} | {} ms | {}",
        e.code(),
        took.as_millis(),
        e.message()
    );
    assert_failed_as(&p, &e, "vault_unavailable");
    assert!(
        took < Duration::from_secs(16),
        "within 16 s, not the driver's deadline: {took:?}"
    );
    assert!(e.message().contains(&refusing), "names the address: {}", e.message());
    assert!(
        e.message().contains("retry budget"),
        "says why it stopped: {}",
        e.message()
    );

    // A server that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = format!("http://{}", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let (e, took) = failed_mount(&p, &[("vaultAddress", &silent_addr)], &pod).await;
    eprintln!(
        "FAULT | silent address | {:?} | {} ms | {}",
        e.code(),
        took.as_millis(),
        e.message()
    );
    assert!(took < Duration::from_secs(25), "within 25 s: {took:?}");
    assert!(e.message().contains(&silent_addr), "names the address: {}", e.message());
    assert!(
        e.message().contains("did not answer"),
        "says what happened: {}",
        e.message()
    );
    assert_ne!(
        e.code(),
        Code::DeadlineExceeded,
        "a failure of its own, not the driver's deadline"
    );

    // A list of two dead addresses names both.
    let second = format!("http://127.0.0.1:{}", free_port().unwrap());
    let both = format!("{refusing},{second}");
    let (e, took) = failed_mount(&p, &[("vaultAddress", &both)], &pod).await;
    assert_failed_as(&p, &e, "vault_unavailable");
    assert!(took < Duration::from_secs(16), "{took:?}");
    for a in [&refusing, &second] {
        assert!(e.message().contains(a.as_str()), "names {a}: {}", e.message());
    }
}

/// A database lease's remaining TTL, from OpenBao.
async fn lease_ttl(bed: &Bed, lease_id: &str) -> Option<u64> {
    let r = bed
        .bao
        .write("sys/leases/lookup", json!({"lease_id": lease_id}))
        .await
        .ok()?;
    r["data"]["ttl"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_due_during_a_vault_outage_are_all_renewed_when_it_returns() {
    const PODS: usize = 100;
    const TTL: u64 = 90;
    const OUTAGE: Duration = Duration::from_secs(20);
    let bed = Bed::start().await;
    let pg = bed.database(&format!("{TTL}s"), "1h").await;
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    // Renewal at a fifth of the TTL (18 s, ±5 %): every lease falls due
    // during a 20 s outage, and none expires before 71 s after it began.
    let p = bed
        .provider("p", &[&format!("-vault-addr={}", proxy.url()), "-renew-threshold=0.2"])
        .await;
    let mut creds = Vec::new();
    for i in 0..PODS {
        let pod = bed.pod(&format!("web-{i}")).await;
        let r = p
            .mount(&params(DB_OBJECTS, &[]), &pod)
            .await
            .unwrap_or_else(|e| panic!("mount {i}: {e:?}"));
        creds.push((text(&r, "user"), text(&r, "pass")));
    }
    let ids = bed.bao.leases("database/creds/app").await.unwrap();
    assert_eq!(ids.len(), PODS, "one lease per pod");

    proxy.set(Fault::Refuse);
    tokio::time::sleep(OUTAGE).await;
    proxy.set(Fault::Pass);
    let back = Instant::now();

    // Renewed since Vault came back: a lease renewed before the outage has
    // at most TTL - 20 s - (time since) left, one renewed after at least
    // TTL - (time since) - 1 s.
    let mut renewed_after = None;
    while back.elapsed() < Duration::from_secs(40) {
        let since = back.elapsed().as_secs();
        let mut stale = 0;
        for id in &ids {
            let ttl = lease_ttl(&bed, id)
                .await
                .unwrap_or_else(|| panic!("lease {id} expired"));
            if ttl + since + 10 < TTL {
                stale += 1;
            }
        }
        if stale == 0 {
            renewed_after = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = renewed_after.expect("every lease renewed within 40 s of Vault's return");
    eprintln!(
        "OUTAGE | {PODS} leases due during a 20 s outage | all renewed {} ms after the return",
        took.as_millis()
    );
    assert!(took < Duration::from_secs(30), "all renewed within 30 s: {took:?}");
    for (i, (user, pass)) in creds.iter().enumerate() {
        assert!(
            pg.can_login(user, pass).await.unwrap(),
            "pod {i}: its credentials still work"
        );
    }
    let refused = p
        .logs()
        .lines()
        .filter(|l| l.contains("path=/v1/sys/leases/renew") && l.contains("unreachable"))
        .count();
    assert!(refused > 0, "renewals fell due, and were refused, during the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_cut_short_by_a_shutdown_are_done_after_the_restart() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    // Without the issuer keys, each new kubelet token is proven by a login
    // whose token is queued for revocation: retirements, due at once.
    bed.kube.set_issuer_discovery(false);
    let proxy = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    let vault_addr = format!("-vault-addr={}", proxy.url());
    let p = bed.provider("p", &[&vault_addr]).await;
    let pod = bed.pod("web-0").await;
    p.mount(&params(KV_OBJECT, &[]), &pod).await.expect("first mount");
    // Vault will not revoke for now.
    proxy.set_only("/v1/auth/token/revoke-self", Fault::Status(503));
    let expires = SystemTime::now() + Duration::from_secs(3600);
    for _ in 0..4 {
        let token = bed
            .kube
            .pod_token(bed.ns(), "web-0", &["vault"], Duration::from_secs(3600))
            .await
            .unwrap();
        let fresh = PodContext {
            tokens: Some(PodContext::tokens_json("vault", &token, expires)),
            ..pod.clone()
        };
        p.mount(&params(KV_OBJECT, &[]), &fresh)
            .await
            .expect("a proven new token");
    }
    let logins = || async { bed.bao.leases("auth/kubernetes/login").await.unwrap().len() };
    assert_eq!(logins().await, 5, "the held token and four proof tokens");
    eventually(Duration::from_secs(5), "revocations attempted", || async {
        proxy
            .seen()
            .iter()
            .any(|s| s.path.starts_with("/v1/auth/token/revoke-self"))
    })
    .await;
    p.sigterm();
    let mut p = p;
    let status = tokio::time::timeout(Duration::from_secs(30), p.child.wait())
        .await
        .expect("the provider stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}: {}", p.logs());
    assert_eq!(logins().await, 5, "nothing was revoked before the shutdown");

    proxy.set(Fault::Pass);
    let q = bed.provider("p", &[&vault_addr]).await;
    eventually(
        Duration::from_secs(15),
        "the restarted provider revokes what was left",
        || async { logins().await == 1 },
    )
    .await;
    // The first token is not the last one reviewed: proven again, by a
    // login whose token goes too.
    q.mount(&params(KV_OBJECT, &[]), &pod)
        .await
        .expect("the held token still serves the pod");
    eventually(Duration::from_secs(5), "one Vault token for the pod", || async {
        logins().await == 1
    })
    .await;
}
