//! Proof against a real OpenBao dev server: its `kubernetes` auth method
//! reviews our tokens through the double's TokenReview, and its `jwt` auth
//! method verifies them with the double's public key. A missing `bao` binary
//! fails these tests with install advice.

use std::time::Duration;

use serde_json::{json, Value};

use super::KubeDouble;
use crate::openbao::OpenBao;

const HOUR: Duration = Duration::from_secs(3600);

/// The shared OpenBao launcher, with the call shapes these tests use.
struct Bao(OpenBao);

impl Bao {
    /// Starts a dev server; a missing binary fails the test with install advice.
    async fn start() -> Bao {
        Bao(OpenBao::start()
            .await
            .expect("OpenBao (run scripts/testbed.sh install)"))
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.0
            .request(method, path.trim_start_matches("/v1/"), Some(body))
            .await
            .unwrap()
    }

    async fn login(&self, mount: &str, role: &str, jwt: &str) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/auth/{mount}/login"),
            json!({"role": role, "jwt": jwt}),
        )
        .await
    }
}

fn review_count(kd: &KubeDouble) -> usize {
    kd.requests()
        .iter()
        .filter(|(m, p)| m == "POST" && p == "/apis/authentication.k8s.io/v1/tokenreviews")
        .count()
}

#[tokio::test]
async fn openbao_kubernetes_auth_reviews_tokens_through_the_double() {
    let bao = Bao::start().await;
    let kd = KubeDouble::start().await.unwrap();
    kd.grant("vault", "reviewer", "create", "tokenreviews", None, None);
    let reviewer = kd.service_account_token("vault", "reviewer", &[], HOUR);
    kd.add_pod("default", "web", "app", "node-1");

    assert_eq!(
        bao.call("POST", "/v1/sys/auth/kubernetes", json!({"type": "kubernetes"}))
            .await
            .0,
        204
    );
    let (code, body) = bao
        .call(
            "POST",
            "/v1/auth/kubernetes/config",
            json!({
                "kubernetes_host": kd.url(),
                "kubernetes_ca_cert": kd.ca_pem(),
                "token_reviewer_jwt": reviewer,
                "disable_local_ca_jwt": true,
            }),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = bao
        .call(
            "POST",
            "/v1/auth/kubernetes/role/app",
            json!({
                "bound_service_account_names": ["app"],
                "bound_service_account_namespaces": ["default"],
                "audience": "vault",
                "token_policies": ["default"],
                "token_ttl": "1h",
            }),
        )
        .await;
    assert_eq!(code, 204, "{body}");

    // A pod token logs in, and Vault really asked the double.
    let token = kd.pod_token("default", "web", &["vault"], HOUR).unwrap();
    let before = review_count(&kd);
    let (code, body) = bao.login("kubernetes", "app", &token).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["auth"]["client_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(body["auth"]["metadata"]["service_account_name"], "app");
    assert_eq!(body["auth"]["metadata"]["service_account_namespace"], "default");
    assert_eq!(review_count(&kd), before + 1);

    // Deleting the pod makes the same token's review fail: 403.
    kd.delete_pod("default", "web");
    let before = review_count(&kd);
    let (code, body) = bao.login("kubernetes", "app", &token).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(review_count(&kd), before + 1, "refused by the review");

    // A token for another audience is refused; Vault checks the role's
    // audience itself before asking for a review.
    kd.add_pod("default", "web", "app", "node-1");
    let other_aud = kd.pod_token("default", "web", &["other"], HOUR).unwrap();
    let before = review_count(&kd);
    let (code, body) = bao.login("kubernetes", "app", &other_aud).await;
    assert_eq!(code, 403, "{body}");
    assert!(body["errors"][0].as_str().unwrap().contains("audience"), "{body}");
    assert_eq!(review_count(&kd), before);

    // A service account the role does not bind is refused.
    kd.add_pod("default", "intruder", "someone-else", "node-1");
    let intruder = kd.pod_token("default", "intruder", &["vault"], HOUR).unwrap();
    let (code, body) = bao.login("kubernetes", "app", &intruder).await;
    assert_eq!(code, 403, "{body}");

    // The recreated pod's fresh token works again.
    let fresh = kd.pod_token("default", "web", &["vault"], HOUR).unwrap();
    let (code, body) = bao.login("kubernetes", "app", &fresh).await;
    assert_eq!(code, 200, "{body}");

    // Without tokenreviews permission the reviewer cannot vouch for anyone.
    kd.revoke("vault", "reviewer", "create", "tokenreviews", None, None);
    let (code, body) = bao.login("kubernetes", "app", &fresh).await;
    assert_eq!(code, 403, "{body}");
}

#[tokio::test]
async fn openbao_role_without_audience_reviews_with_the_token_audiences() {
    let bao = Bao::start().await;
    let kd = KubeDouble::start().await.unwrap();
    kd.grant("vault", "reviewer", "create", "tokenreviews", None, None);
    let reviewer = kd.service_account_token("vault", "reviewer", &[], HOUR);
    kd.add_pod("default", "web", "app", "node-1");
    bao.call("POST", "/v1/sys/auth/kubernetes", json!({"type": "kubernetes"}))
        .await;
    bao.call(
        "POST",
        "/v1/auth/kubernetes/config",
        json!({
            "kubernetes_host": kd.url(),
            "kubernetes_ca_cert": kd.ca_pem(),
            "token_reviewer_jwt": reviewer,
            "disable_local_ca_jwt": true,
        }),
    )
    .await;
    let (code, body) = bao
        .call(
            "POST",
            "/v1/auth/kubernetes/role/any",
            json!({
                "bound_service_account_names": ["app"],
                "bound_service_account_namespaces": ["default"],
                "token_policies": ["default"],
            }),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    // With no role audience Vault passes the token's own audiences to the
    // review, so any audience (including the API server default) passes.
    for aud in [&["vault"][..], &[]] {
        let token = kd.pod_token("default", "web", aud, HOUR).unwrap();
        let (code, body) = bao.login("kubernetes", "any", &token).await;
        assert_eq!(code, 200, "{aud:?}: {body}");
    }
    // An unbound service-account token is accepted too (no pod to check).
    let sa_token = kd.service_account_token("default", "app", &["vault"], HOUR);
    let (code, body) = bao.login("kubernetes", "any", &sa_token).await;
    assert_eq!(code, 200, "{body}");
    kd.delete_service_account("default", "app");
    let (code, body) = bao.login("kubernetes", "any", &sa_token).await;
    assert_eq!(code, 403, "{body}");
}

#[tokio::test]
async fn openbao_jwt_auth_accepts_the_double_public_key() {
    let bao = Bao::start().await;
    let kd = KubeDouble::start().await.unwrap();
    kd.add_pod("default", "web", "app", "node-1");

    assert_eq!(
        bao.call("POST", "/v1/sys/auth/jwt", json!({"type": "jwt"})).await.0,
        204
    );
    let (code, body) = bao
        .call(
            "POST",
            "/v1/auth/jwt/config",
            json!({
                "jwt_validation_pubkeys": [kd.jwt_public_key_pem()],
                "bound_issuer": kd.issuer(),
            }),
        )
        .await;
    assert_eq!(code, 204, "{body}");
    let (code, body) = bao
        .call(
            "POST",
            "/v1/auth/jwt/role/app",
            json!({
                "role_type": "jwt",
                "bound_audiences": ["vault"],
                "user_claim": "sub",
                "bound_subject": "system:serviceaccount:default:app",
                "token_policies": ["default"],
            }),
        )
        .await;
    assert_eq!(code, 204, "{body}");

    let token = kd.pod_token("default", "web", &["vault"], HOUR).unwrap();
    let (code, body) = bao.login("jwt", "app", &token).await;
    assert_eq!(code, 200, "{body}");
    assert!(body["auth"]["client_token"].as_str().is_some_and(|t| !t.is_empty()));

    // Wrong subject and a token signed by another key are refused.
    kd.add_pod("default", "other", "intruder", "node-1");
    let wrong_sub = kd.pod_token("default", "other", &["vault"], HOUR).unwrap();
    let (code, body) = bao.login("jwt", "app", &wrong_sub).await;
    assert!(code == 400 || code == 403, "{code} {body}");
    let stranger = KubeDouble::start().await.unwrap();
    stranger.add_pod("default", "web", "app", "node-1");
    let foreign = stranger.pod_token("default", "web", &["vault"], HOUR).unwrap();
    let (code, body) = bao.login("jwt", "app", &foreign).await;
    assert!(code == 400 || code == 403, "{code} {body}");
}
