//! What only a real control plane shows: service-account tokens of an RS256
//! and of an ES256 issuer (kube-apiserver's own TokenRequest, its
//! `/openid/v1/jwks`, its TokenReview), and the pod watch behind
//! revoke-on-delete when its connection drops (it resumes where it was) and
//! when the server's history has moved on (`410 Expired`: it lists again
//! and revokes the pods deleted meanwhile). The faults come from the test's
//! proxy; everything else is kube-apiserver's.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use serde_json::json;
use tonic::Code;
use vcp_testbed::kubernetes::control_plane::{Backend, ControlPlane, Signing};

/// A kubelet token reused through the signature check, and what the check
/// refuses, on a world whose issuer signs with `signing`.
async fn a_held_token_is_proven_by_the_issuers_signature(world: &World, signing: Signing) {
    let alg = match signing {
        Signing::Rs256 => "RS256",
        Signing::Es256 => "ES256",
    };
    world.bao.kv2_put("secret", "app", json!({"k": "v"})).await.unwrap();
    let p = world.provider(provider_binary(), "p", &[]).await.unwrap();
    let ns = world.ns();
    let pod = world.pod(ns, "web-0", APP_SA).await.unwrap();
    let other = world.pod(ns, "other-0", APP_SA).await.unwrap();
    let ps = params(KV_OBJECT, &[]);
    let ttl = Duration::from_secs(3600);
    let token = world.kube.pod_token(ns, "web-0", &["vault"], ttl).await.unwrap();
    assert_eq!(jwt_header(&token)["alg"], alg, "kube-apiserver signs with {alg}");

    let r = p
        .mount(&ps, &with_token(&pod, &token))
        .await
        .expect("kubelet token: a login");
    assert_eq!(text(&r, "k"), "v");
    let reviews = token_reviews(&world.kube);
    assert!(reviews >= 1, "Vault reviewed the token through TokenReview");

    // Kubelet's next token for the same pod (every republish brings one):
    // verified against the issuer's keys, the held Vault token is reused.
    let next = world.kube.pod_token(ns, "web-0", &["vault"], ttl).await.unwrap();
    assert_ne!(next, token);
    p.mount(&ps, &with_token(&pod, &next)).await.expect("a republish");
    assert_eq!(
        token_reviews(&world.kube),
        reviews,
        "{alg}: no new login for a proven token"
    );

    // Another pod's real token, and one re-written to name this pod.
    let theirs = world.kube.pod_token(ns, "other-0", &["vault"], ttl).await.unwrap();
    let e = p.mount(&ps, &with_token(&pod, &theirs)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_mentions(&e, &[&format!("belongs to pod {ns}/other-0")]);
    let uid = pod.uid.clone();
    let resigned = forge(&theirs, |c| {
        c["kubernetes.io"]["pod"] = json!({"name": "web-0", "uid": uid})
    });
    let e = p.mount(&ps, &with_token(&pod, &resigned)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert_mentions(&e, &["signature does not verify"]);
    assert_eq!(token_reviews(&world.kube), reviews, "{alg}: refused before Vault");
    p.mount(&ps, &other).await.expect("the other pod mounts its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_issuer_tokens_are_verified_by_their_signature() {
    let bed = Bed::start().await;
    assert_eq!(bed.kube.control_plane().signing(), Signing::Rs256);
    a_held_token_is_proven_by_the_issuers_signature(&bed, Signing::Rs256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_issuer_tokens_are_verified_by_their_signature() {
    // A control plane of its own: the shared one signs with RSA.
    let backend = Backend::from_env().expect("the Kubernetes backend");
    let cp = ControlPlane::start(&backend, Signing::Es256)
        .await
        .expect("an ES256 control plane");
    let dir = tempfile::tempdir().unwrap();
    let world = World::on(dir.path(), Arc::new(cp)).await.expect("world");
    a_held_token_is_proven_by_the_issuers_signature(&world, Signing::Es256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_watch_resumes_a_dropped_stream_and_lists_again_when_its_history_expired() {
    let bed = Bed::start().await;
    let pg = bed.database("1h", "2h").await;
    let node = format!("-node-name={}", bed.kube.node);
    let p = bed.provider("p", &[&node]).await;
    let objects = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";
    let mut creds = Vec::new();
    for name in ["a-0", "b-0", "c-0"] {
        let r = p.mount(&params(objects, &[]), &bed.pod(name).await).await.unwrap();
        creds.push((text(&r, "user"), text(&r, "pass")));
    }
    let logs_in = |i: usize| {
        let (user, pass) = creds[i].clone();
        let pg = &pg;
        async move { pg.can_login(&user, &pass).await.unwrap() }
    };
    // The node's pods, listed (not watched) through the proxy.
    let lists = || {
        bed.kube
            .proxy()
            .seen()
            .iter()
            .filter(|s| s.method == "GET" && s.path.starts_with("/api/v1/pods?") && !s.is_watch())
            .count()
    };
    let watches = || {
        bed.kube
            .proxy()
            .seen()
            .iter()
            .filter(|s| s.is_watch() && s.path.starts_with("/api/v1/pods?"))
            .count()
    };
    eventually(Duration::from_secs(10), "the pod watch open", || async {
        watches() >= 1
    })
    .await;

    // 1. The stream breaks: the watcher resumes from where it was, without
    // listing again, and the deletion arrives as an event.
    let listed = lists();
    bed.kube.cut_watches();
    bed.kube.delete_pod(bed.ns(), "a-0").await.unwrap();
    eventually(Duration::from_secs(20), "pod a's credentials revoked", || async {
        !logs_in(0).await
    })
    .await;
    assert_eq!(lists(), listed, "a dropped watch resumes, it does not list again");
    assert!(logs_in(1).await && logs_in(2).await, "only pod a's");

    // 2. Pod b goes while the provider cannot reach the API server, and by
    // the time it can, the server's history has moved past the watch's
    // version: `410 Expired`, a fresh list, and b is missing from it.
    bed.kube.set_unavailable(true);
    bed.kube.cut_watches();
    bed.kube.delete_pod(bed.ns(), "b-0").await.unwrap();
    bed.kube.expire_watches().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    bed.kube.set_unavailable(false);
    eventually(Duration::from_secs(30), "pod b's credentials revoked", || async {
        !logs_in(1).await
    })
    .await;
    assert!(lists() > listed, "the expired watch was followed by a list");
    assert!(
        p.logs().contains("too old resource version"),
        "the watcher saw the 410: {}",
        p.logs()
    );
    assert!(logs_in(2).await, "pod c keeps its credentials");
    assert_eq!(bed.bao.leases("database/creds/app").await.unwrap().len(), 1);
    assert!(!p.logs().contains("panicked"));
}
