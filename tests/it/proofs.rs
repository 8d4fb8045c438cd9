//! A pod proves itself without the cluster's issuer keys: where the
//! provider cannot read `/openid/v1/jwks` (the default discovery binding
//! removed, a common hardening step), each new kubelet token is proven by a
//! login that Vault reviews, whose token is revoked at once, while the held
//! Vault token keeps the pod's credentials. Real OpenBao and PostgreSQL.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use crate::support::*;
use vcp_testbed::driver::PodContext;

const DB_OBJECTS: &str = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";

/// `pod` as kubelet describes it on its next republish: a fresh token for
/// each of `audiences`.
async fn fresh_tokens(bed: &Bed, pod: &PodContext, audiences: &[&str]) -> PodContext {
    let expires = SystemTime::now() + Duration::from_secs(3600);
    let mut tokens = serde_json::Map::new();
    for aud in audiences {
        let token = bed
            .kube
            .pod_token(&pod.namespace, &pod.name, &[aud], Duration::from_secs(3600))
            .await
            .expect("pod token");
        let one: serde_json::Value = serde_json::from_str(&PodContext::tokens_json(aud, &token, expires)).unwrap();
        tokens.extend(one.as_object().unwrap().clone());
    }
    PodContext {
        tokens: Some(serde_json::Value::Object(tokens).to_string()),
        ..pod.clone()
    }
}

async fn leases(bed: &Bed, prefix: &str) -> usize {
    bed.bao.leases(prefix).await.unwrap().len()
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tokens_without_issuer_keys_keep_one_credential_across_a_restart() {
    let bed = Bed::start().await;
    let pg = bed.database("1h", "1h").await;
    bed.kube.set_issuer_discovery(false);
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let mut users = BTreeSet::new();
    for i in 0..12 {
        let r = p
            .mount(&params(DB_OBJECTS, &[]), &fresh_tokens(&bed, &pod, &["vault"]).await)
            .await
            .unwrap_or_else(|e| panic!("mount {i}: {e:?}"));
        let (user, pass) = (text(&r, "user"), text(&r, "pass"));
        assert!(
            pg.can_login(&user, &pass).await.unwrap(),
            "mount {i}: the credentials work"
        );
        users.insert(user);
    }
    let last_mount = SystemTime::now();
    assert_eq!(users.len(), 1, "one database username for the pod: {users:?}");
    assert_eq!(leases(&bed, "database/creds/app").await, 1, "one database lease");
    assert!(token_reviews(&bed.kube) >= 12, "each new token was reviewed by Vault");
    eventually(Duration::from_secs(5), "every proof login's token revoked", || async {
        leases(&bed, "auth/kubernetes/login").await == 1
    })
    .await;
    assert!(p.logs().contains("proving it by a login"), "{}", p.logs());

    // The proofs and the held token are in the sealed state file once the
    // ledger has written it after the last mount; then a SIGKILL.
    let state = bed.dir.path().join("p.state");
    eventually(
        Duration::from_secs(5),
        "the state file written after the last mount",
        || async { modified(&state).is_some_and(|at| at > last_mount) },
    )
    .await;
    p.kill().await;
    let p = bed.provider("p", &[]).await;
    let reviews = token_reviews(&bed.kube);
    let republished = fresh_tokens(&bed, &pod, &["vault"]).await;
    for _ in 0..3 {
        let r = p
            .mount(&params(DB_OBJECTS, &[]), &republished)
            .await
            .expect("mount after the restart");
        assert_eq!(users.iter().next(), Some(&text(&r, "user")), "the same credentials");
    }
    assert_eq!(
        token_reviews(&bed.kube),
        reviews + 1,
        "one proof login for the new token, none for its republishes"
    );
    assert_eq!(leases(&bed, "database/creds/app").await, 1);
    eventually(Duration::from_secs(5), "one Vault token for the pod", || async {
        leases(&bed, "auth/kubernetes/login").await == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_with_volumes_for_two_audiences_is_not_logged_in_again_on_republish() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    bed.role("other").audience(Some("other")).write().await.unwrap();
    bed.kube.set_issuer_discovery(false);
    let p = bed.provider("p", &[]).await;
    let pod = fresh_tokens(&bed, &bed.pod_without_token("web-0").await, &["vault", "other"]).await;
    let first = params(KV_OBJECT, &[]);
    let second = params(KV_OBJECT, &[("roleName", "other"), ("audience", "other")]);
    p.mount(&first, &pod).await.expect("the vault-audience volume");
    p.mount(&second, &pod).await.expect("the other-audience volume");
    let reviews = token_reviews(&bed.kube);
    assert_eq!(reviews, 2, "one login per volume");
    for round in 0..3 {
        p.mount(&first, &pod).await.expect("republish, first volume");
        p.mount(&second, &pod).await.expect("republish, second volume");
        assert_eq!(
            token_reviews(&bed.kube),
            reviews,
            "round {round}: no login on republish"
        );
    }
    // A token for the other audience under this volume's audience is refused.
    let mut swapped = pod.clone();
    let other = fresh_tokens(&bed, &pod, &["other"]).await;
    swapped.tokens = Some(other.tokens.unwrap().replace("\"other\"", "\"vault\""));
    let e = p
        .mount(&first, &swapped)
        .await
        .expect_err("a token minted for another audience");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_mentions(&e, &["audience"]);
    assert_eq!(token_reviews(&bed.kube), reviews, "refused before Vault");
}
