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
