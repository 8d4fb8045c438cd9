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

/// The key Secret's label, as the provider writes it.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "vault-csi-provider");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_secret_the_provider_did_not_write_is_refused_with_the_fix() {
    // Someone with create on Secrets in the provider's namespace plants a
    // key of their own before the provider starts (no label, the incumbent's
    // shape): the provider refuses it, mounts fail saying what to do, and
    // once it is deleted the provider creates its own.
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let planted = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    bed.kube
        .put_secret(
            bed.provider_ns(),
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "immutable": true,
                "metadata": {"name": KEY_SECRET}, "data": {"key": planted}}),
        )
        .await
        .unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let ps = params(OBJECTS, &[]);
    let refused = p.mount(&ps, &pod).await.unwrap_err();
    let message = refused.message();
    assert!(
        message.contains("not an object-version key this provider created")
            && message.contains("app.kubernetes.io/managed-by")
            && message.contains("delete it"),
        "{message}"
    );
    bed.kube.delete_secret(bed.provider_ns(), KEY_SECRET).await.unwrap();
    eventually(Duration::from_secs(10), "the provider's own key Secret", || async {
        let secret = bed.kube.secret(bed.provider_ns(), KEY_SECRET).await.unwrap();
        secret.is_some_and(|s| s["metadata"]["labels"][MANAGED_BY.0] == MANAGED_BY.1)
    })
    .await;
    let (_, key) = key_secret(&bed).await.unwrap();
    assert_ne!(key, planted);
    eventually(Duration::from_secs(10), "mounts served with it", || async {
        p.mount(&ps, &pod).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_admission_policy_lets_only_the_provider_write_its_key_secret() {
    let bed = Bed::start().await;
    if !real_server_only(
        &bed.kube,
        "ValidatingAdmissionPolicy is CEL admission, which the double does not run; the provider's own label check runs on both",
    ) {
        return;
    }
    let pns = bed.provider_ns().to_string();
    // deploy/base's policy and binding, as rendered, the binding narrowed
    // to this test's provider namespace (the control plane is shared).
    let rendered = vcp_testbed::kubernetes::deploy::yaml_docs(
        &vcp_testbed::kubernetes::deploy::kustomize(&vcp_testbed::kubernetes::deploy::repo().join("deploy/base"))
            .unwrap(),
    )
    .unwrap();
    let pick = |kind: &str| -> serde_json::Value {
        let mut o = rendered
            .iter()
            .find(|o| o["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("deploy/base renders no {kind}"));
        o["metadata"]["name"] = serde_json::json!(vcp_testbed::kubernetes::cluster::cluster_scoped(
            "vault-csi-provider-hmac-key",
            &pns
        ));
        o["metadata"].as_object_mut().unwrap().remove("namespace");
        o
    };
    let policy = pick("ValidatingAdmissionPolicy");
    let mut binding = pick("ValidatingAdmissionPolicyBinding");
    binding["spec"]["policyName"] = policy["metadata"]["name"].clone();
    binding["spec"]["matchResources"] =
        serde_json::json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pns}}});
    bed.kube.apply(&[policy.clone(), binding.clone()]).await.unwrap();

    // Another ServiceAccount of the namespace, allowed by RBAC to write
    // Secrets there.
    bed.kube.add_service_account(&pns, "intruder").await.unwrap();
    bed.kube
        .apply(&[
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "intruder", "namespace": pns},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update", "patch", "get"]}]}),
            serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "intruder", "namespace": pns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "intruder"},
                "subjects": [{"kind": "ServiceAccount", "name": "intruder", "namespace": pns}]}),
        ])
        .await
        .unwrap();
    let client = bed.kube.client().unwrap();
    let send = |token: String, method: &'static str, path: String, body: serde_json::Value| {
        let client = client.clone();
        async move {
            let auth = format!("Bearer {token}");
            let content = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            client
                .send(
                    method,
                    &path,
                    &[("content-type", content), ("authorization", &auth)],
                    Some(body.to_string().into_bytes()),
                )
                .await
                .unwrap()
        }
    };
    let hour = Duration::from_secs(3600);
    let intruder = bed
        .kube
        .service_account_token(&pns, "intruder", &[], hour)
        .await
        .unwrap();
    let provider = bed
        .kube
        .service_account_token(&pns, PROVIDER_SA, &[], hour)
        .await
        .unwrap();
    let secrets = format!("/api/v1/namespaces/{pns}/secrets");
    let key_body = |key: [u8; 32]| {
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "immutable": true,
            "metadata": {"name": KEY_SECRET, "labels": {MANAGED_BY.0: MANAGED_BY.1}},
            "data": {"key": base64::engine::general_purpose::STANDARD.encode(key)}})
    };
    let text = |a: &vcp_testbed::kubernetes::control_plane::Answer| String::from_utf8_lossy(&a.body).into_owned();

    // A planted key, labelled as the provider labels it: refused once the
    // policy is in force (it takes a moment to be loaded).
    let mut planted = None;
    for _ in 0..100 {
        let a = send(intruder.clone(), "POST", secrets.clone(), key_body([5; 32])).await;
        if a.status == 201 {
            bed.kube.delete_secret(&pns, KEY_SECRET).await.unwrap();
        } else {
            planted = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let planted = planted.expect("the policy never came into force");
    assert_eq!(planted.status, 403, "{}", text(&planted));
    assert!(
        text(&planted).contains("only the provider's ServiceAccount"),
        "{}",
        text(&planted)
    );

    // The provider creates its key under the policy and serves mounts.
    bed.kv_secret().await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    p.mount(&params(OBJECTS, &[]), &pod)
        .await
        .expect("the provider's own key is admitted");
    let (uid, _) = key_secret(&bed).await.expect("created by the provider");

    // Another ServiceAccount may not relabel it (labels are not locked by
    // immutability; only the policy stops this) ...
    let relabel = serde_json::json!({"metadata": {"labels": {MANAGED_BY.0: "someone-else"}}});
    let a = send(
        intruder.clone(),
        "PATCH",
        format!("{secrets}/{KEY_SECRET}"),
        relabel.clone(),
    )
    .await;
    assert!(a.status == 403 || a.status == 422, "{}", text(&a));
    assert!(text(&a).contains("only the provider's ServiceAccount"), "{}", text(&a));
    // ... nor the provider strip its label ...
    let a = send(provider.clone(), "PATCH", format!("{secrets}/{KEY_SECRET}"), relabel).await;
    assert!(a.status == 403 || a.status == 422, "{}", text(&a));
    // ... and the provider's create on Secrets is for the key alone.
    let other = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "other"}, "data": {}});
    let a = send(provider, "POST", secrets.clone(), other).await;
    assert_eq!(a.status, 403, "{}", text(&a));
    assert!(text(&a).contains("no Secret in its own namespace but"), "{}", text(&a));

    // Deleting it stays the operator's way to rotate: the provider
    // recreates it at once, under the policy.
    bed.kube.delete_secret(&pns, KEY_SECRET).await.unwrap();
    eventually(Duration::from_secs(10), "the key recreated by the provider", || async {
        key_secret(&bed).await.is_some_and(|(u, _)| u != uid)
    })
    .await;
    bed.kube.delete(&binding).await.unwrap();
    bed.kube.delete(&policy).await.unwrap();
}
