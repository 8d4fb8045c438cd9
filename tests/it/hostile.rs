//! A tenant cannot take the node's provider down (issue 32): the attacks a
//! hostile class author can write, played against the real provider with
//! real OpenBao, each followed by a victim's mount. The classes come from
//! `vcp_testbed::hostile`; `tests/bounded.rs` measures what parsing them
//! costs in allocations.

use std::time::{Duration, Instant};

use crate::support::*;
use tonic::Code;
use vcp_testbed::hostile;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classes_that_amplify_their_errors_are_refused_cheaply_and_the_provider_stays_up() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let mut p = bed.provider_in_daemonset_limits("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let victim = bed.pod("victim-0").await;
    p.mount(&params(KV_OBJECT, &[]), &victim)
        .await
        .expect("the victim's first mount");
    let pid = p.child.id().unwrap();
    let before = peak_rss_kib(pid);
    let sync_objects = KV_OBJECT.to_string();
    let attacks = [
        (
            "attack 1: a template naming 1,000 missing objects",
            hostile::names_no_object(1000),
            None,
            "a template may name at most 256",
        ),
        (
            "attack 1, 250 missing objects",
            hostile::names_no_object(250),
            None,
            "and 245 more name no object",
        ),
        (
            "attack 2: 2,000 empty sync entries",
            sync_objects.clone(),
            Some(hostile::sync_amplified(2000)),
            "data lists 2000 keys; at most 256",
        ),
        (
            "attack 2, 256 empty sync entries",
            sync_objects.clone(),
            Some(hostile::sync_amplified(256)),
            "more problems",
        ),
    ];
    for (what, objects, sync, needle) in attacks {
        let extra: Vec<(&str, &str)> = sync.iter().map(|s| ("syncSecrets", s.as_str())).collect();
        let started = Instant::now();
        let e = p.mount(&params(&objects, &extra), &pod).await.expect_err(what);
        let took = started.elapsed();
        println!(
            "HOSTILE | {what} | {:?} | {} ms | {} bytes of message | peak RSS {} KiB",
            e.code(),
            took.as_millis(),
            e.message().len(),
            peak_rss_kib(pid)
        );
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {}", e.message());
        assert_mentions(&e, &[needle]);
        assert!(took < Duration::from_secs(2), "{what}: {took:?}");
    }
    let growth = peak_rss_kib(pid).saturating_sub(before);
    println!("HOSTILE | attacks 1 and 2 | peak RSS growth {growth} KiB");
    assert!(growth <= 32 * 1024, "peak RSS grew by {growth} KiB");
    p.mount(&params(KV_OBJECT, &[]), &victim)
        .await
        .expect("the victim's mount right after");
    assert!(p.child.try_wait().unwrap().is_none(), "alive: {}", p.logs());
}

#[test]
fn check_reports_an_amplifying_class_in_a_few_lines() {
    let dir = tempfile::tempdir().unwrap();
    for (what, objects, sync) in [
        ("attack 1", hostile::names_no_object(250), None),
        ("attack 2", KV_OBJECT.to_string(), Some(hostile::sync_amplified(256))),
    ] {
        let mut parameters = serde_json::json!({"roleName": "app", "objects": objects});
        if let Some(sync) = sync {
            parameters["syncSecrets"] = serde_json::json!(sync);
        }
        let class = serde_json::json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClass",
            "metadata": {"name": "hostile"},
            "spec": {"provider": "vault", "parameters": parameters},
        });
        let file = dir.path().join("spc.yaml");
        std::fs::write(&file, serde_yaml_ng::to_string(&class).unwrap()).unwrap();
        let out = std::process::Command::new(provider_binary())
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        let printed = out.stdout.len() + out.stderr.len();
        println!("HOSTILE | check on {what} | {printed} bytes printed");
        assert_eq!(out.status.code(), Some(1), "{what}: problems found");
        assert!(printed < 64 * 1024, "{what}: check printed {printed} bytes");
    }
}

/// The `q` quantile of `samples` (sorted in place).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_that_renders_as_much_as_it_may_does_not_stall_other_mounts_or_the_probes() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let p = bed.provider("p", &[]).await;
    let health = health_addr(&p);
    let tenant = bed.pod("tenant-0").await;
    let victim = bed.pod("victim-0").await;
    p.mount(&params(KV_OBJECT, &[]), &victim)
        .await
        .expect("the victim's first mount");
    // Valid: 256 templates (the most a class may have), each looping just
    // within a render's fuel.
    let busy = hostile::busy_templates(256, 15_000);
    let e = p
        .mount(&params(&busy, &[]), &tenant)
        .await
        .expect_err("over the mount's fuel");
    assert_mentions(&e, &["together did more work than one mount's may"]);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..4 {
        let (p, tenant, busy, stop) = (&p, tenant.clone(), busy.clone(), stop.clone());
        attackers.push(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = p.mount(&params(&busy, &[]), &tenant).await;
                n += 1;
            }
            n
        });
    }
    let victims = async {
        let mut mounts = Vec::new();
        let mut probes = Vec::new();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            let started = Instant::now();
            let r = p.mount(&params(KV_OBJECT, &[]), &victim).await;
            mounts.push(started.elapsed());
            if let Err(e) = r {
                panic!(
                    "the victim's mount failed during the attack: {:?}: {}",
                    e.code(),
                    e.message()
                );
            }
            let started = Instant::now();
            let (status, body) = http(health, "GET", "/health/live", "").await;
            probes.push(started.elapsed());
            assert_eq!(status, 200, "{body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (mounts, probes)
    };
    let (attacks, (mut mounts, mut probes)) = tokio::join!(futures_util::future::join_all(attackers), victims);
    let attacks: usize = attacks.iter().sum();
    let (m50, m99) = (quantile(&mut mounts, 0.5), quantile(&mut mounts, 0.99));
    let (h50, h99) = (quantile(&mut probes, 0.5), quantile(&mut probes, 0.99));
    println!(
        "HOSTILE | attack 3: {attacks} busy mounts in 10 s | victim warm mounts: {} , p50 {m50:?}, p99 {m99:?} | /health/live p50 {h50:?}, p99 {h99:?}",
        mounts.len()
    );
    assert!(m99 <= Duration::from_millis(250), "victim p99 {m99:?}");
    assert!(h99 <= Duration::from_millis(100), "liveness p99 {h99:?}");
    assert!(
        !p.logs().contains("did not answer within"),
        "nothing was blamed on Vault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_holding_its_share_of_slots_leaves_the_rest_to_others() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let p = bed.provider("p", &[]).await;
    let victim = bed.pod("victim-0").await;
    p.mount(&params(KV_OBJECT, &[]), &victim)
        .await
        .expect("the victim's first mount");
    // The tenant names an address of its own that claims, forever, that its
    // cluster is electing a leader.
    let leaderless = Proxy::start(&bed.bao.addr(), Duration::ZERO).await;
    leaderless.set(Fault::Leaderless);
    let tenant_ns = bed.kube.namespace("tenant").await.unwrap();
    let tenant = bed.world.pod(&tenant_ns, "tenant-0", APP_SA).await.unwrap();
    let class = params(KV_OBJECT, &[("vaultAddress", &leaderless.url())]);
    let started = Instant::now();
    let mut volumes = Vec::new();
    for _ in 0..64 {
        let (p, tenant, class) = (&p, tenant.clone(), class.clone());
        volumes.push(async move {
            let client = p.client(vcp_testbed::driver::Generation::V16).await.unwrap();
            let req = vcp_testbed::driver::mount_request(
                vcp_testbed::driver::Generation::V16,
                "spc",
                &class,
                &tenant,
                false,
                Vec::new(),
            );
            let r = client.mount(req, Duration::from_secs(60)).await;
            (r, started.elapsed())
        });
    }
    let victim_mount = async {
        // Once the tenant's mounts hold every slot they may.
        eventually(Duration::from_secs(10), "the tenant's mounts under way", || async {
            leaderless.seen().len() >= 32
        })
        .await;
        let t = Instant::now();
        let r = p.mount(&params(KV_OBJECT, &[]), &victim).await;
        (r, t.elapsed())
    };
    let (tenants, (victim_result, victim_took)) = tokio::join!(futures_util::future::join_all(volumes), victim_mount);
    println!("HOSTILE | attack 4: 64 tenant volumes against a leaderless address | victim served in {victim_took:?}");
    victim_result.expect("the victim is served");
    assert!(
        victim_took <= Duration::from_secs(2),
        "the victim waited {victim_took:?}"
    );
    let slowest = tenants.iter().map(|(_, took)| *took).max().unwrap();
    println!("HOSTILE | attack 4: the tenant's 64 mounts ended within {slowest:?}");
    for (r, _) in &tenants {
        let e = r.as_ref().expect_err("the leaderless address serves nothing");
        assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    }
    // A class's own address gets -retry-budget (10 s) and no more, however
    // long it claims an election: two waves of 32, not the 60 s deadline.
    assert!(slowest < Duration::from_secs(35), "{slowest:?}");
}
