//! The object-version key Secret, watched. Deleted, it is back at once with
//! a new key and the next mount's versions all change (what the incumbent's
//! own e2e test expects of a provider that reads the Secret on every mount),
//! while mounts ask Kubernetes nothing for the key; versions follow key and
//! content, not the pod. Without RBAC for the watch the provider works as
//! before: it says so once, keeps its key, and re-checks once a minute.

use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::support::*;

const OBJECTS: &str =
    "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n- {objectName: all, secretPath: secret/data/app}\n";

/// `metadata.uid` and `data.key` (base64) of the key Secret, if it exists.
async fn key_secret(bed: &Bed) -> Option<(String, String)> {
    let secret = bed.kube.secret(bed.provider_ns(), KEY_SECRET).await.unwrap()?;
    Some((
        secret["metadata"]["uid"].as_str()?.to_string(),
        secret["data"]["key"].as_str()?.to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_secret_is_back_at_once_and_every_version_changes() {
    let (bed, p) = Bed::ready().await;
    let pod = bed.pod("web-0").await;
    let ps = params(OBJECTS, &[]);
    let before = versions(&p.mount(&ps, &pod).await.unwrap());
    assert_eq!(before.len(), 2);
    let (old_uid, _) = key_secret(&bed).await.expect("key Secret created");

    // Mounts ask Kubernetes nothing for the key (kubelet hands the token).
    bed.kube.clear_requests();
    p.mount(&ps, &pod).await.unwrap();
    let asked: Vec<_> = bed
        .kube
        .requests()
        .into_iter()
        .filter(|(_, path)| !path.contains("watch="))
        .collect();
    assert!(asked.is_empty(), "a mount asked Kubernetes: {asked:?}");

    bed.kube.delete_secret(bed.provider_ns(), KEY_SECRET).await.unwrap();
    let deleted = Instant::now();
    eventually(Duration::from_secs(1), "the key Secret recreated", || async {
        key_secret(&bed).await.is_some_and(|(uid, _)| uid != old_uid)
    })
    .await;
    println!("KEY_WATCH | key Secret back {:?} after its deletion", deleted.elapsed());
    let (_, new_key) = key_secret(&bed).await.unwrap();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = versions(&p.mount(&ps, &pod).await.unwrap());
    assert_eq!(after.len(), before.len());
    for (id, version) in &before {
        assert_ne!(&after[id], version, "the version of {id} changed with the key");
    }

    // The same pod recreated (same namespace, name and service account, a
    // new uid): versions depend on key and content, not on the pod.
    bed.kube.delete_pod(bed.ns(), "web-0").await.unwrap();
    let again = bed.pod("web-0").await;
    assert_ne!(again.uid, pod.uid);
    assert_eq!(versions(&p.mount(&ps, &again).await.unwrap()), after);

    // The change is logged by fingerprint; the key never.
    let logs = p.logs();
    assert!(logs.contains("object-version key changed"), "{logs}");
    let raw = base64::engine::general_purpose::STANDARD.decode(&new_key).unwrap();
    for shown in [new_key.clone(), hex::encode(&raw)] {
        assert!(!logs.contains(&shown), "the key reached the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rbac_for_the_watch_the_provider_falls_back_to_the_recheck() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    // A Role from before the watch: get and create only.
    bed.kube
        .key_role_from_before_the_watch(bed.provider_ns())
        .await
        .unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let ps = params(OBJECTS, &[]);
    let before = versions(&p.mount(&ps, &pod).await.expect("mounts work without the watch"));
    eventually(Duration::from_secs(10), "the refused watch logged", || async {
        p.logs().contains("cannot watch the object-version key Secret")
    })
    .await;

    // Nothing recreates the Secret before the next re-check (a minute), and
    // mounts keep working with the key held.
    bed.kube.delete_secret(bed.provider_ns(), KEY_SECRET).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(key_secret(&bed).await.is_none(), "recreated without a watch");
    assert_eq!(versions(&p.mount(&ps, &pod).await.unwrap()), before);
    assert_eq!(
        p.logs().matches("cannot watch the object-version key Secret").count(),
        1,
        "said once"
    );

    // A provider started now creates a new key, as ever.
    let q = bed.provider("q", &[]).await;
    let rotated = versions(&q.mount(&ps, &pod).await.unwrap());
    assert!(key_secret(&bed).await.is_some());
    assert_ne!(rotated["k"], before["k"]);
}
