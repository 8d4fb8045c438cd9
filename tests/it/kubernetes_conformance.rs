//! The Kubernetes API behaviours the provider and the test bed depend on,
//! asserted against whichever backend this run uses: the real
//! kube-apiserver where `KUBEBUILDER_ASSETS` names one, the project's double
//! elsewhere (`vcp_testbed::kubernetes::kube_double`). On the real server these tests
//! say at once where the double has drifted from it; on the double they
//! keep it honest. They speak raw HTTP, as no client library smooths over
//! what the server answers.
//!
//! Each test names one behaviour: object names per kind, immutable Secrets,
//! RBAC `resourceNames` on lists and watches, TokenRequest's claims and
//! TokenReview of a deleted pod's token, issuer discovery and its keys,
//! server-side apply with managers and conflicts, lists and watches by
//! resourceVersion (pages, metadata only, `410 Gone`), graceful deletion of
//! a pod no kubelet finishes.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use vcp_testbed::kubernetes::cluster::{Cluster, PROVIDER_SA};
use vcp_testbed::kubernetes::control_plane::{Answer, Https};

use crate::support::*;

/// A share of the control plane with its clients.
struct Api {
    kube: Cluster,
    admin: Https,
    client: Https,
}

async fn api() -> Api {
    let kube = Cluster::start().await.expect("a share of the Kubernetes control plane");
    let admin = kube.admin_client().clone();
    let client = kube.client().expect("a client");
    Api { kube, admin, client }
}

const JSON: (&str, &str) = ("content-type", "application/json");

impl Api {
    /// An admin request with a JSON body.
    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string().into_bytes());
        self.admin.send(method, path, &[JSON], body).await.expect("the request")
    }

    /// A request with `token` as its bearer credential.
    async fn with_token(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Answer {
        let auth = format!("Bearer {token}");
        let body = body.map(|b| b.to_string().into_bytes());
        self.client
            .send(method, path, &[JSON, ("authorization", &auth)], body)
            .await
            .expect("the request")
    }

    /// A server-side apply by `manager`.
    async fn apply(&self, path: &str, manager: &str, force: bool, object: Value) -> Answer {
        let path = format!("{path}?fieldManager={manager}&force={force}");
        let body = Some(object.to_string().into_bytes());
        self.admin
            .send(
                "PATCH",
                &path,
                &[("content-type", "application/apply-patch+yaml")],
                body,
            )
            .await
            .expect("the apply")
    }

    fn ns(&self) -> &str {
        &self.kube.namespace
    }
}

/// The claims of a JWT.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url claims")).expect("JSON claims")
}

fn message(a: &Answer) -> String {
    a.json()["message"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_names_follow_the_rules_of_their_kind_and_creates_need_a_namespace() {
    let api = api().await;
    let ns = api.ns();
    api.kube.add_service_account(ns, "app").await.unwrap();
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"serviceAccountName": "app", "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}})
    };
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    // A pod name is a DNS subdomain: dots allowed, underscores and capitals not.
    let a = api.admin("POST", &pods, Some(pod("Web_0"))).await;
    assert_eq!(a.status, 422, "{:?}", a.json());
    assert_eq!(a.json()["reason"], "Invalid");
    assert!(
        message(&a).contains(r#"metadata.name: Invalid value: "Web_0""#),
        "{}",
        message(&a)
    );
    assert!(message(&a).contains("RFC 1123 subdomain"), "{}", message(&a));
    assert_eq!(api.admin("POST", &pods, Some(pod("web-0.a"))).await.status, 201);
    let again = api.admin("POST", &pods, Some(pod("web-0.a"))).await;
    assert_eq!(
        (again.status, again.json()["reason"].clone()),
        (409, json!("AlreadyExists"))
    );
    // A namespace name is a DNS label.
    let a = api
        .admin("POST", "/api/v1/namespaces", Some(json!({"metadata": {"name": "a.b"}})))
        .await;
    assert_eq!(a.status, 422, "{:?}", a.json());
    assert!(message(&a).contains("RFC 1123 label"), "{}", message(&a));
    // A pod's service account must exist, and its namespace.
    let a = api
        .admin(
            "POST",
            &pods,
            Some(pod("web-1").tap(|p| p["spec"]["serviceAccountName"] = json!("nobody"))),
        )
        .await;
    assert_eq!(a.status, 403, "{:?}", a.json());
    assert!(
        message(&a).contains(r#"serviceaccount "nobody" not found"#),
        "{}",
        message(&a)
    );
    let secret = json!({"metadata": {"name": "s"}, "data": {}});
    let a = api
        .admin(
            "POST",
            &format!("/api/v1/namespaces/{ns}-missing/secrets"),
            Some(secret),
        )
        .await;
    assert_eq!(a.status, 404, "{:?}", a.json());
    assert_eq!(message(&a), format!(r#"namespaces "{ns}-missing" not found"#));
}

/// `tap` for building JSON in place.
trait Tap: Sized {
    fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
}

impl Tap for Value {
    fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_secret_refuses_new_data_but_takes_new_labels() {
    let api = api().await;
    let path = format!("/api/v1/namespaces/{}/secrets", api.ns());
    let secret = json!({"metadata": {"name": "key"}, "immutable": true, "stringData": {"k": "v1"}});
    let created = api.admin("POST", &path, Some(secret)).await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let created = created.json();
    assert_eq!(created["data"]["k"], "djE=", "stringData is stored base64 in data");
    assert!(created.get("stringData").is_none(), "and never returned");
    assert_eq!(created["type"], "Opaque");

    let mut changed = created.clone();
    changed["data"]["k"] = json!("djI=");
    let a = api.admin("PUT", &format!("{path}/key"), Some(changed)).await;
    assert_eq!(a.status, 422, "{:?}", a.json());
    assert!(
        message(&a).contains("field is immutable when `immutable` is set"),
        "{}",
        message(&a)
    );
    let mut labelled = created.clone();
    labelled["metadata"]["labels"] = json!({"a": "b"});
    let a = api.admin("PUT", &format!("{path}/key"), Some(labelled)).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    // A write carrying an older resourceVersion is refused.
    let a = api.admin("PUT", &format!("{path}/key"), Some(created)).await;
    assert_eq!((a.status, a.json()["reason"].clone()), (409, json!("Conflict")));
    // Base64 that is not base64 is refused before anything is stored.
    let bad = json!({"metadata": {"name": "bad"}, "data": {"k": "not base64!"}});
    assert_eq!(api.admin("POST", &path, Some(bad)).await.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_resource_names_cover_the_lists_and_watches_that_name_the_object() {
    let api = api().await;
    let pns = &api.kube.provider_namespace;
    let token = api
        .kube
        .service_account_token(pns, PROVIDER_SA, &[], Duration::from_secs(3600))
        .await
        .unwrap();
    let secrets = format!("/api/v1/namespaces/{pns}/secrets");
    let by_name = format!("fieldSelector=metadata.name%3D{KEY_SECRET}");
    let can = |path: String| {
        let api = &api;
        let token = token.clone();
        async move { api.with_token(&token, "GET", &path, None).await }
    };
    // deploy/base's Role names the key Secret: get, list and watch it by name.
    let a = can(format!("{secrets}?{by_name}")).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["kind"], "SecretList");
    let (status, _) = api
        .client
        .stream(
            &format!("{secrets}?{by_name}&watch=true&timeoutSeconds=1"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "a watch by name");
    let a = can(format!("{secrets}/{KEY_SECRET}")).await;
    assert_eq!(a.status, 404, "allowed, and not there yet: {:?}", a.json());
    // Anything that does not name it is refused, in RBAC's words.
    let a = can(secrets.clone()).await;
    assert_eq!(a.status, 403, "{:?}", a.json());
    let user = format!("system:serviceaccount:{pns}:{PROVIDER_SA}");
    assert_eq!(
        message(&a),
        format!(
            r#"secrets is forbidden: User "{user}" cannot list resource "secrets" in API group "" in the namespace "{pns}""#
        )
    );
    assert_eq!(can(format!("{secrets}/other")).await.status, 403);
    assert_eq!(
        can(format!("/api/v1/namespaces/{}/secrets?{by_name}", api.ns()))
            .await
            .status,
        403,
        "only in its own namespace"
    );
    // revoke-on-pod-delete: pods of every namespace, listed (metadata only).
    let a = api
        .client
        .send(
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dnowhere",
            &[
                ("authorization", &format!("Bearer {token}")),
                (
                    "accept",
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                ),
            ],
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["kind"], "PartialObjectMetadataList");
    // An invalid credential is 401, not anonymous.
    let a = api.with_token("not-a-token", "GET", &secrets, None).await;
    assert_eq!(a.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_token_carries_the_real_claims_and_stops_reviewing_when_its_pod_goes() {
    let api = api().await;
    let (ns, node) = (api.ns().to_string(), api.kube.node.clone());
    let sa_uid = api.kube.add_service_account(&ns, "app").await.unwrap();
    let pod_uid = api.kube.add_pod(&ns, "web-0", "app", &node).await.unwrap();
    let ttl = Duration::from_secs(3600);
    let token = api.kube.pod_token(&ns, "web-0", &["vault"], ttl).await.unwrap();
    let c = claims(&token);
    assert_eq!(c["iss"], api.kube.issuer());
    assert_eq!(c["aud"], json!(["vault"]));
    assert_eq!(c["sub"], format!("system:serviceaccount:{ns}:app"));
    assert_eq!(c["kubernetes.io"]["namespace"], ns);
    assert_eq!(c["kubernetes.io"]["pod"], json!({"name": "web-0", "uid": pod_uid}));
    assert_eq!(
        c["kubernetes.io"]["serviceaccount"],
        json!({"name": "app", "uid": sa_uid})
    );
    assert_eq!(c["kubernetes.io"]["node"]["name"], node, "the pod's node");
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 3600);
    assert_eq!(c["nbf"], c["iat"]);
    assert_eq!(jwt_header(&token)["alg"], "RS256");

    // Below ten minutes TokenRequest refuses.
    let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": ["vault"], "expirationSeconds": 599}});
    let a = api
        .admin(
            "POST",
            &format!("/api/v1/namespaces/{ns}/serviceaccounts/app/token"),
            Some(request),
        )
        .await;
    assert_eq!(a.status, 422, "{:?}", a.json());
    assert!(
        message(&a).contains("may not specify a duration less than 10 minutes"),
        "{}",
        message(&a)
    );

    // Vault's reviewer (system:auth-delegator) reviews it.
    let reviewer = api.kube.reviewer_token().await.unwrap();
    let review = |token: &str, audiences: &[&str]| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences}})
    };
    let reviews = "/apis/authentication.k8s.io/v1/tokenreviews";
    let a = api
        .with_token(&reviewer, "POST", reviews, Some(review(&token, &["vault"])))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.json());
    let status = &a.json()["status"];
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["audiences"], json!(["vault"]));
    assert_eq!(status["user"]["username"], format!("system:serviceaccount:{ns}:app"));
    assert_eq!(status["user"]["uid"], sa_uid);
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web-0"])
    );
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid])
    );
    let a = api
        .with_token(&reviewer, "POST", reviews, Some(review(&token, &["other"])))
        .await;
    assert_ne!(a.json()["status"]["authenticated"], true, "another audience");
    // Only an identity allowed to review may.
    let app = api.kube.service_account_token(&ns, "app", &[], ttl).await.unwrap();
    assert_eq!(
        api.with_token(&app, "POST", reviews, Some(review(&token, &["vault"])))
            .await
            .status,
        403
    );

    // The pod goes: its token no longer authenticates.
    api.kube.delete_pod(&ns, "web-0").await.unwrap();
    eventually(Duration::from_secs(10), "the deleted pod's token refused", || async {
        let a = api
            .with_token(&reviewer, "POST", reviews, Some(review(&token, &["vault"])))
            .await;
        let status = &a.json()["status"];
        status["authenticated"] != true && status["error"].as_str().is_some_and(|e| !e.is_empty())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_discovery_serves_the_signing_key_to_service_accounts_only() {
    let api = api().await;
    let ns = api.ns().to_string();
    let token = api
        .kube
        .service_account_token(&ns, "app", &[], Duration::from_secs(3600))
        .await
        .unwrap();
    let a = api
        .with_token(&token, "GET", "/.well-known/openid-configuration", None)
        .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["issuer"], api.kube.issuer());
    assert!(a.json()["jwks_uri"].as_str().unwrap().ends_with("/openid/v1/jwks"));
    let auth = format!("Bearer {token}");
    let jwks = |accept: &'static str| {
        let (api, auth) = (&api, auth.clone());
        async move {
            api.client
                .send(
                    "GET",
                    "/openid/v1/jwks",
                    &[("authorization", &auth), ("accept", accept)],
                    None,
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(
        jwks("application/json").await.status,
        406,
        "JWKS is not application/json"
    );
    let a = jwks("application/jwk-set+json").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/jwk-set+json");
    let keys = a.json()["keys"].as_array().cloned().unwrap();
    assert!(
        keys.iter()
            .any(|k| k["kid"] == jwt_header(&token)["kid"] && k["alg"] == "RS256"),
        "the key that signed the token: {keys:?}"
    );
    // Without credentials: anonymous, which the discovery role does not cover.
    let a = api.client.send("GET", "/openid/v1/jwks", &[], None).await.unwrap();
    assert_eq!(a.status, 403, "{:?}", a.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_tracks_managers_and_refuses_conflicts_unless_forced() {
    let api = api().await;
    let path = format!("/api/v1/namespaces/{}/secrets/synced", api.ns());
    let secret =
        |data: Value| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "synced"}, "data": data});
    let a = api
        .apply(&path, "provider", false, secret(json!({"k": "MQ==", "old": "MA=="})))
        .await;
    assert_eq!(a.status, 201, "{:?}", a.json());
    let rv = a.json()["metadata"]["resourceVersion"].clone();
    let managers = |a: &Answer| -> Vec<(String, String)> {
        a.json()["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap().to_string(),
                    e["operation"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(managers(&a), [("provider".to_string(), "Apply".to_string())]);
    let a = api
        .apply(&path, "provider", false, secret(json!({"k": "MQ==", "old": "MA=="})))
        .await;
    assert_eq!(
        a.json()["metadata"]["resourceVersion"],
        rv,
        "an apply that changes nothing writes nothing"
    );

    // Another manager setting another value conflicts, naming who and what.
    let a = api.apply(&path, "someone", false, secret(json!({"k": "Mg=="}))).await;
    assert_eq!(a.status, 409, "{:?}", a.json());
    assert!(
        message(&a).contains(r#"conflict with "provider""#) && message(&a).contains(".data.k"),
        "{}",
        message(&a)
    );
    // The same value is shared, not a conflict; forcing takes it over.
    assert_eq!(
        api.apply(&path, "someone", false, secret(json!({"k": "MQ=="})))
            .await
            .status,
        200
    );
    let a = api.apply(&path, "someone", true, secret(json!({"k": "Mg=="}))).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["data"]["k"], "Mg==");
    // What a manager stops applying and owns alone goes.
    let mut labelled = secret(json!({}));
    labelled["metadata"]["labels"] = json!({"app": "a"});
    labelled.as_object_mut().unwrap().remove("data");
    let a = api.apply(&path, "provider", false, labelled).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["data"], json!({"k": "Mg=="}), "old removed, k kept by someone");
    let mut owners = managers(&a);
    owners.sort();
    assert_eq!(
        owners,
        [
            ("provider".to_string(), "Apply".to_string()),
            ("someone".to_string(), "Apply".to_string())
        ]
    );
    // Apply needs a field manager.
    let a = api
        .admin
        .send(
            "PATCH",
            &path,
            &[("content-type", "application/apply-patch+yaml")],
            Some(secret(json!({})).to_string().into_bytes()),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 422, "{:?}", a.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_page_from_one_revision_and_watches_resume_from_one() {
    let api = api().await;
    let ns = api.ns().to_string();
    let maps = format!("/api/v1/namespaces/{ns}/configmaps");
    for i in 0..5 {
        let a = api
            .admin(
                "POST",
                &maps,
                Some(json!({"metadata": {"name": format!("c{i}")}, "data": {"i": i.to_string()}})),
            )
            .await;
        assert_eq!(a.status, 201);
    }
    // Pages of two, all from the first page's revision: a change in between
    // shows in none of them.
    let first = api.admin("GET", &format!("{maps}?limit=2"), None).await.json();
    let rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    api.admin("DELETE", &format!("{maps}/c4"), None).await;
    let mut names: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut token = first["metadata"]["continue"].as_str().unwrap().to_string();
    loop {
        let page = api
            .admin("GET", &format!("{maps}?limit=2&continue={token}"), None)
            .await
            .json();
        assert_eq!(page["metadata"]["resourceVersion"], rv.as_str());
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4"]);

    // A watch from that revision replays what came after, in order.
    let (status, mut events) = api
        .admin
        .stream(&format!("{maps}?watch=true&resourceVersion={rv}&timeoutSeconds=5"), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let mut c0 = api.admin("GET", &format!("{maps}/c0"), None).await.json();
    c0["data"]["i"] = json!("changed");
    assert_eq!(api.admin("PUT", &format!("{maps}/c0"), Some(c0)).await.status, 200);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let line = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("a watch event in time")
            .expect("the stream open");
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["type"] == "BOOKMARK" {
            continue;
        }
        seen.push((
            e["type"].as_str().unwrap().to_string(),
            e["object"]["metadata"]["name"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("DELETED".to_string(), "c4".to_string()),
            ("MODIFIED".to_string(), "c0".to_string())
        ]
    );
    // It ends at its timeout.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while events.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the watch ended at timeoutSeconds");

    // A revision older than the server's history is gone: 410 Expired.
    let (status, mut events) = api
        .admin
        .stream(&format!("{maps}?watch=true&resourceVersion=1"), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let line = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["type"], "ERROR", "{e}");
    assert_eq!(e["object"]["code"], 410, "{e}");
    assert!(
        e["object"]["message"]
            .as_str()
            .unwrap()
            .contains("too old resource version"),
        "{e}"
    );

    // Metadata only, when asked.
    let a = api
        .admin
        .send(
            "GET",
            &format!("{maps}/c0"),
            &[("accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.json()["kind"], "PartialObjectMetadata");
    assert!(a.json().get("data").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_pod_deleted_with_grace_stays_terminating_with_no_kubelet_to_finish() {
    let api = api().await;
    let (ns, node) = (api.ns().to_string(), api.kube.node.clone());
    api.kube.add_pod(&ns, "slow-0", "app", &node).await.unwrap();
    let path = format!("/api/v1/namespaces/{ns}/pods/slow-0");
    let a = api.admin("DELETE", &path, None).await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let pod = api.admin("GET", &path, None).await;
    assert_eq!(pod.status, 200, "still there");
    assert!(pod.json()["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(pod.json()["metadata"]["deletionGracePeriodSeconds"], 30);
    // Grace zero removes it at once (what the test bed's kubelet does).
    api.kube.delete_pod(&ns, "slow-0").await.unwrap();
    assert_eq!(api.admin("GET", &path, None).await.status, 404);
}
