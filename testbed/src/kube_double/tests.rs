//! Unit tests of the double over real HTTPS: authentication, RBAC, Secret
//! semantics, TokenRequest/TokenReview, pods and watches, fault injection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use super::KubeDouble;

const HOUR: Duration = Duration::from_secs(3600);

/// A minimal HTTPS client trusting only the double's CA, one connection per request.
pub(super) struct TestClient {
    addr: std::net::SocketAddr,
    connector: tokio_rustls::TlsConnector,
}

impl TestClient {
    pub(super) fn new(kd: &KubeDouble) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(kd.ca_pem().as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestClient {
            addr: kd.addr(),
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        }
    }

    /// Sends a request and returns the response with a streaming body.
    pub(super) async fn open(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> http::Response<hyper::body::Incoming> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let tls = self
            .connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req = req.header("content-type", content_type.unwrap_or("application/json"));
        let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).unwrap();
        sender.send_request(req).await.unwrap()
    }

    /// Sends a request and returns the status code and JSON body.
    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: Option<String>,
    ) -> (u16, Value) {
        let resp = self.open(method, path, token, content_type, body).await;
        let code = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, v)
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), None, None).await
    }

    async fn send_json(&self, method: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call(method, path, Some(token), None, Some(body.to_string())).await
    }
}

/// A double with SA `sys/tester` allowed everything everywhere.
async fn admin() -> (KubeDouble, TestClient, String) {
    let kd = KubeDouble::start().await.unwrap();
    kd.grant("sys", "tester", "*", "*", None, None);
    let token = kd.service_account_token("sys", "tester", &[], HOUR);
    let client = TestClient::new(&kd);
    (kd, client, token)
}

fn rv(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn unauthenticated_requests_get_401() {
    let kd = KubeDouble::start().await.unwrap();
    kd.grant("ns", "sa", "*", "*", None, None);
    let c = TestClient::new(&kd);
    let path = "/api/v1/namespaces/ns/secrets";
    let expect_401 = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401});

    assert_eq!(c.call("GET", path, None, None, None).await, (401, expect_401.clone()));
    assert_eq!(c.get(path, "not-a-jwt").await, (401, expect_401.clone()));
    // A token for another audience is not an API credential.
    let vault_only = kd.service_account_token("ns", "sa", &["vault"], HOUR);
    assert_eq!(c.get(path, &vault_only).await.0, 401);
    // Expired.
    let expired = kd.service_account_token("ns", "sa", &[], Duration::ZERO);
    assert_eq!(c.get(path, &expired).await.0, 401);
    // Signed by another double's key.
    let other = KubeDouble::start().await.unwrap();
    let foreign = other.service_account_token("ns", "sa", &[], HOUR);
    assert_eq!(c.get(path, &foreign).await.0, 401);
    // Service account deleted, then recreated with a new uid.
    let good = kd.service_account_token("ns", "sa", &[], HOUR);
    assert_eq!(c.get(path, &good).await.0, 200);
    kd.delete_service_account("ns", "sa");
    assert_eq!(c.get(path, &good).await.0, 401);
    kd.add_service_account("ns", "sa");
    assert_eq!(c.get(path, &good).await.0, 401);
    // Health is public.
    assert_eq!(c.call("GET", "/healthz", None, None, None).await.0, 200);
}

#[tokio::test]
async fn rbac_denials_use_the_real_message_shape() {
    let kd = KubeDouble::start().await.unwrap();
    let c = TestClient::new(&kd);
    let t = kd.service_account_token("ns", "sa", &[], HOUR);

    let (code, body) = c.get("/api/v1/namespaces/ns/secrets/x", &t).await;
    assert_eq!(code, 403);
    assert_eq!(
        body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"secrets \"x\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot get resource \"secrets\" in API group \"\" in the namespace \"ns\"",
            "reason":"Forbidden","details":{"name":"x","kind":"secrets"},"code":403})
    );
    let (code, body) = c.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", &t).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "pods is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
    );
    let (code, body) = c
        .send_json(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            &t,
            json!({"spec":{"token":"x"}}),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:ns:sa\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope"
    );
    let (code, body) = c
        .send_json(
            "POST",
            "/api/v1/namespaces/ns/serviceaccounts/app/token",
            &t,
            json!({"spec":{}}),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "serviceaccounts \"app\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"ns\""
    );

    // A namespaced, name-restricted grant allows exactly that.
    kd.grant("ns", "sa", "get", "secrets", Some("ns"), Some("x"));
    assert_eq!(c.get("/api/v1/namespaces/ns/secrets/x", &t).await.0, 404);
    assert_eq!(c.get("/api/v1/namespaces/ns/secrets/y", &t).await.0, 403);
    assert_eq!(c.get("/api/v1/namespaces/other/secrets/x", &t).await.0, 403);
    assert_eq!(c.get("/api/v1/namespaces/ns/secrets", &t).await.0, 403);
    kd.revoke("ns", "sa", "get", "secrets", Some("ns"), Some("x"));
    assert_eq!(c.get("/api/v1/namespaces/ns/secrets/x", &t).await.0, 403);
}

#[tokio::test]
async fn secret_create_get_conflicts_and_delete() {
    let (kd, c, t) = admin().await;
    let base = "/api/v1/namespaces/ns/secrets";

    let (code, body) = c.get(&format!("{base}/x"), &t).await;
    assert_eq!(code, 404);
    assert_eq!(
        body,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"secrets \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"secrets"},"code":404})
    );

    let secret = json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"x","labels":{"app":"a"}},
        "data":{"a":"YWFh"},"stringData":{"b":"bbb"}});
    let (code, created) = c.send_json("POST", base, &t, secret.clone()).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["kind"], "Secret");
    assert_eq!(created["data"], json!({"a":"YWFh","b":"YmJi"}));
    assert_eq!(created["type"], "Opaque");
    assert!(created.get("stringData").is_none());
    assert!(created["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(created["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let rv1 = rv(&created);

    let (code, again) = c.send_json("POST", base, &t, secret).await;
    assert_eq!(code, 409);
    assert_eq!(again["reason"], "AlreadyExists");
    assert_eq!(again["message"], "secrets \"x\" already exists");

    let (code, got) = c.get(&format!("{base}/x"), &t).await;
    assert_eq!(code, 200);
    assert_eq!(got["data"], created["data"]);
    assert_eq!(kd.secret("ns", "x").unwrap()["data"]["b"], "YmJi");

    // PUT with the current resourceVersion succeeds and bumps it...
    let mut updated = got.clone();
    updated["data"]["c"] = json!("Y2Nj");
    let (code, put) = c.send_json("PUT", &format!("{base}/x"), &t, updated.clone()).await;
    assert_eq!(code, 200, "{put}");
    assert!(rv(&put) > rv1);
    assert_eq!(put["metadata"]["uid"], created["metadata"]["uid"]);
    // ...and the same body again is now stale.
    let (code, stale) = c.send_json("PUT", &format!("{base}/x"), &t, updated).await;
    assert_eq!(code, 409);
    assert_eq!(stale["reason"], "Conflict");
    assert_eq!(
        stale["message"],
        "Operation cannot be fulfilled on secrets \"x\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // PUT to a missing object is 404, name mismatch 400, bad base64 400.
    let (code, _) = c
        .send_json("PUT", &format!("{base}/nope"), &t, json!({"metadata":{"name":"nope"}}))
        .await;
    assert_eq!(code, 404);
    let (code, _) = c
        .send_json("PUT", &format!("{base}/x"), &t, json!({"metadata":{"name":"y"}}))
        .await;
    assert_eq!(code, 400);
    let (code, bad) = c
        .send_json(
            "POST",
            base,
            &t,
            json!({"metadata":{"name":"b64"},"data":{"k":"not base64!"}}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(bad["message"].as_str().unwrap().contains("illegal base64 data"));

    // List with a label selector.
    c.send_json("POST", base, &t, json!({"metadata":{"name":"other"}}))
        .await;
    let (code, list) = c.get(&format!("{base}?labelSelector=app%3Da"), &t).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "SecretList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());

    // Delete with a wrong uid precondition is a conflict, then a plain delete works.
    let (code, _) = c
        .send_json(
            "DELETE",
            &format!("{base}/x"),
            &t,
            json!({"preconditions":{"uid":"nope"}}),
        )
        .await;
    assert_eq!(code, 409);
    let (code, deleted) = c.call("DELETE", &format!("{base}/x"), Some(&t), None, None).await;
    assert_eq!(code, 200);
    assert_eq!(deleted["status"], "Success");
    assert_eq!(deleted["details"]["uid"], created["metadata"]["uid"]);
    assert_eq!(c.get(&format!("{base}/x"), &t).await.0, 404);
    assert!(kd.secret("ns", "x").is_none());
}

#[tokio::test]
async fn immutable_secrets_reject_data_changes() {
    let (_kd, c, t) = admin().await;
    let base = "/api/v1/namespaces/ns/secrets";
    let (code, created) = c
        .send_json(
            "POST",
            base,
            &t,
            json!({"metadata":{"name":"hmac"},"data":{"key":"a2V5"},"immutable":true}),
        )
        .await;
    assert_eq!(code, 201);

    let mut changed = created.clone();
    changed["data"]["key"] = json!("b3RoZXI=");
    let (code, body) = c.send_json("PUT", &format!("{base}/hmac"), &t, changed).await;
    assert_eq!(code, 422);
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "Secret \"hmac\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
    );
    assert_eq!(body["details"]["causes"][0]["field"], "data");

    let (code, body) = c
        .call(
            "PATCH",
            &format!("{base}/hmac"),
            Some(&t),
            Some("application/merge-patch+json"),
            Some(json!({"immutable": false}).to_string()),
        )
        .await;
    assert_eq!(code, 422);
    assert!(body["message"].as_str().unwrap().contains("immutable: Forbidden"));

    // Metadata may still change.
    let (code, body) = c
        .call(
            "PATCH",
            &format!("{base}/hmac"),
            Some(&t),
            Some("application/merge-patch+json"),
            Some(json!({"metadata":{"labels":{"x":"y"}}}).to_string()),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["labels"]["x"], "y");
}

#[tokio::test]
async fn merge_patch_semantics() {
    let (_kd, c, t) = admin().await;
    let base = "/api/v1/namespaces/ns/secrets";
    let patch = |body: Value| {
        let c = &c;
        let t = &t;
        async move {
            c.call(
                "PATCH",
                &format!("{base}/p"),
                Some(t),
                Some("application/merge-patch+json"),
                Some(body.to_string()),
            )
            .await
        }
    };
    assert_eq!(patch(json!({"data":{"a":"YQ=="}})).await.0, 404);
    let (_, created) = c
        .send_json(
            "POST",
            base,
            &t,
            json!({"metadata":{"name":"p"},"data":{"a":"YQ==","b":"Yg=="}}),
        )
        .await;
    let (code, body) = patch(json!({"data":{"a":null,"c":"Yw=="},"stringData":{"d":"d"}})).await;
    assert_eq!(code, 200);
    assert_eq!(body["data"], json!({"b":"Yg==","c":"Yw==","d":"ZA=="}));
    // A resourceVersion in the patch is a precondition.
    let (code, body) =
        patch(json!({"metadata":{"resourceVersion": created["metadata"]["resourceVersion"]},"data":{"e":"ZQ=="}}))
            .await;
    assert_eq!(code, 409, "{body}");
    // A no-op patch keeps the resourceVersion.
    let (_, before) = c.get(&format!("{base}/p"), &t).await;
    let (code, after) = patch(json!({"data":{"b":"Yg=="}})).await;
    assert_eq!(code, 200);
    assert_eq!(rv(&before), rv(&after));
    // JSON patch is not implemented.
    let (code, body) = c
        .call(
            "PATCH",
            &format!("{base}/p"),
            Some(&t),
            Some("application/json-patch+json"),
            Some("[]".into()),
        )
        .await;
    assert_eq!(code, 415, "{body}");
}

#[tokio::test]
async fn server_side_apply_semantics() {
    let (kd, c, t) = admin().await;
    let apply = |manager: Option<&'static str>, force: bool, yaml: &'static str| {
        let c = &c;
        let t = &t;
        async move {
            let mut path = "/api/v1/namespaces/ns/secrets/s".to_owned();
            let mut q = Vec::new();
            if let Some(m) = manager {
                q.push(format!("fieldManager={m}"));
            }
            if force {
                q.push("force=true".into());
            }
            if !q.is_empty() {
                path = format!("{path}?{}", q.join("&"));
            }
            c.call(
                "PATCH",
                &path,
                Some(t),
                Some("application/apply-patch+yaml"),
                Some(yaml.into()),
            )
            .await
        }
    };
    let cfg_a = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  labels:\n    owner: a\nstringData:\n  one: \"1\"\n  two: \"2\"\n";

    let (code, body) = apply(None, false, cfg_a).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("fieldManager: Required value"));

    let (code, created) = apply(Some("mgr-a"), false, cfg_a).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["data"], json!({"one":"MQ==","two":"Mg=="}));
    let mf = &created["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "mgr-a");
    assert_eq!(mf["operation"], "Apply");
    assert_eq!(mf["fieldsType"], "FieldsV1");
    assert_eq!(mf["fieldsV1"]["f:data"], json!({"f:one":{},"f:two":{}}));
    assert_eq!(mf["fieldsV1"]["f:metadata"]["f:labels"], json!({"f:owner":{}}));

    // Re-applying the same configuration is a no-op.
    let (code, same) = apply(Some("mgr-a"), false, cfg_a).await;
    assert_eq!(code, 200);
    assert_eq!(rv(&same), rv(&created));

    // Another manager changing an owned field conflicts unless forced.
    let cfg_b = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData:\n  two: \"B\"\n  three: \"3\"\n";
    let (code, conflict) = apply(Some("mgr-b"), false, cfg_b).await;
    assert_eq!(code, 409, "{conflict}");
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"mgr-a\" using v1: .data.two"
    );
    let (code, forced) = apply(Some("mgr-b"), true, cfg_b).await;
    assert_eq!(code, 200, "{forced}");
    assert_eq!(forced["data"], json!({"one":"MQ==","two":"Qg==","three":"Mw=="}));

    // mgr-a stops applying `one` (it owns it alone, so it goes) and `two`
    // (now owned by mgr-b, so it stays).
    let cfg_a2 = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  labels:\n    owner: a\n";
    let (code, after) = apply(Some("mgr-a"), false, cfg_a2).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["data"], json!({"two":"Qg==","three":"Mw=="}));
    let managers: Vec<&str> = after["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["mgr-a", "mgr-b"]);
    assert_eq!(kd.secret("ns", "s").unwrap()["data"], after["data"]);

    // An update by another writer takes over the fields it changes.
    let (code, body) = c
        .call(
            "PATCH",
            "/api/v1/namespaces/ns/secrets/s?fieldManager=editor",
            Some(&t),
            Some("application/merge-patch+json"),
            Some(json!({"data":{"three":"eA=="}}).to_string()),
        )
        .await;
    assert_eq!(code, 200);
    let editor = body["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "editor")
        .unwrap()
        .clone();
    assert_eq!(editor["operation"], "Update");
    assert_eq!(editor["fieldsV1"], json!({"f:data":{"f:three":{}}}));
}

#[tokio::test]
async fn token_request_and_review() {
    let (kd, c, t) = admin().await;
    let pod_uid = kd.add_pod("default", "web", "app", "node-1");
    kd.add_service_account("default", "other");
    let path = "/api/v1/namespaces/default/serviceaccounts/app/token";
    let req = |seconds: i64, pod: &str, uid: &str| {
        json!({"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{
            "audiences":["vault"],"expirationSeconds":seconds,
            "boundObjectRef":{"kind":"Pod","apiVersion":"v1","name":pod,"uid":uid}}})
    };

    let (code, body) = c.send_json("POST", path, &t, req(599, "web", &pod_uid)).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("may not specify a duration less than 10 minutes"));
    let (code, _) = c.send_json("POST", path, &t, req(600, "gone", "")).await;
    assert_eq!(code, 404);
    let (code, body) = c.send_json("POST", path, &t, req(600, "web", "wrong-uid")).await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = c
        .send_json(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/other/token",
            &t,
            req(600, "web", &pod_uid),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let (code, _) = c
        .send_json(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            &t,
            req(600, "web", &pod_uid),
        )
        .await;
    assert_eq!(code, 404);

    let (code, body) = c.send_json("POST", path, &t, req(900, "web", &pod_uid)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["kind"], "TokenRequest");
    let token = body["status"]["token"].as_str().unwrap().to_owned();
    let exp = humantime::parse_rfc3339(body["status"]["expirationTimestamp"].as_str().unwrap()).unwrap();
    let left = exp.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_secs(890) && left <= Duration::from_secs(900));

    let review = |token: String, audiences: Value| {
        let c = &c;
        let t = &t;
        async move {
            let (code, body) = c
                .send_json(
                    "POST",
                    "/apis/authentication.k8s.io/v1/tokenreviews",
                    t,
                    json!({"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview",
                        "spec":{"token":token,"audiences":audiences}}),
                )
                .await;
            assert_eq!(code, 201, "{body}");
            assert_eq!(body["kind"], "TokenReview");
            body["status"].clone()
        }
    };
    let ok = review(token.clone(), json!(["vault", "x"])).await;
    assert_eq!(ok["authenticated"], true, "{ok}");
    assert_eq!(ok["audiences"], json!(["vault"]));
    assert_eq!(ok["user"]["username"], "system:serviceaccount:default:app");
    assert_eq!(
        ok["user"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    assert_eq!(
        ok["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["web"])
    );
    assert_eq!(
        ok["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([pod_uid])
    );

    // No spec.audiences means the API server's audience, which this token lacks.
    let no_aud = review(token.clone(), json!([])).await;
    assert_eq!(no_aud["authenticated"], false);
    assert!(no_aud["error"]
        .as_str()
        .unwrap()
        .contains("token audiences [\"vault\"] is invalid for the target audiences"));
    let wrong = review(token.clone(), json!(["other"])).await;
    assert_eq!(wrong["authenticated"], false);

    // A default-audience token passes an audience-less review.
    let sa_token = kd.service_account_token("default", "app", &[], HOUR);
    let plain = review(sa_token, json!([])).await;
    assert_eq!(plain["authenticated"], true);
    assert_eq!(plain["audiences"], json!([kd.issuer()]));
    assert!(plain["user"]["extra"]
        .get("authentication.kubernetes.io/pod-name")
        .is_none());

    // Deleting the pod invalidates the bound token; so does recreating it.
    kd.delete_pod("default", "web");
    let gone = review(token.clone(), json!(["vault"])).await;
    assert_eq!(gone["authenticated"], false);
    assert_eq!(gone["error"], "[invalid bearer token, pods \"web\" not found]");
    kd.add_pod("default", "web", "app", "node-1");
    let recreated = review(token, json!(["vault"])).await;
    assert_eq!(recreated["authenticated"], false);
    assert!(recreated["error"].as_str().unwrap().contains("pod UID"));

    // Control-API pod tokens expire.
    let short = kd
        .pod_token("default", "web", &["vault"], Duration::from_secs(1))
        .unwrap();
    assert_eq!(review(short.clone(), json!(["vault"])).await["authenticated"], true);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = review(short, json!(["vault"])).await;
    assert_eq!(expired["authenticated"], false);
    assert!(expired["error"].as_str().unwrap().contains("expired"));
    assert!(kd.pod_token("default", "nope", &[], HOUR).is_err());
}

#[tokio::test]
async fn pods_get_list_and_watch() {
    let (kd, c, t) = admin().await;
    let uid = kd.add_pod("ns", "p1", "app", "node-1");
    kd.add_pod("ns", "p2", "app", "node-2");
    kd.add_pod("other", "p3", "app", "node-1");

    let (code, pod) = c.get("/api/v1/namespaces/ns/pods/p1", &t).await;
    assert_eq!(code, 200);
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["uid"], uid.as_str());
    assert_eq!(pod["spec"]["serviceAccountName"], "app");
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    assert_eq!(c.get("/api/v1/namespaces/ns/pods/zz", &t).await.0, 404);

    let (code, list) = c.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1", &t).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "PodList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p1", "p3"]);
    let list_rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_owned();
    assert_eq!(c.get("/api/v1/pods?fieldSelector=spec.bogus%3Dx", &t).await.0, 400);

    // Watch from the list's resourceVersion: only later events, filtered by node.
    let resp = c
        .open(
            "GET",
            &format!("/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dnode-1&resourceVersion={list_rv}"),
            Some(&t),
            None,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut next_event = async || -> Value {
        loop {
            if let Some(i) = buf.find('\n') {
                let line: String = buf.drain(..=i).collect();
                return serde_json::from_str(&line).unwrap();
            }
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .expect("watch event in time")
                .unwrap()
                .unwrap();
            if let Ok(d) = frame.into_data() {
                buf.push_str(std::str::from_utf8(&d).unwrap());
            }
        }
    };
    kd.add_pod("ns", "elsewhere", "app", "node-2");
    kd.add_pod("ns", "p4", "app", "node-1");
    let ev = next_event().await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["metadata"]["name"], "p4");
    assert_eq!(ev["object"]["kind"], "Pod");
    kd.set_pod_labels("ns", "p4", &[("a", "b")]);
    let ev = next_event().await;
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["metadata"]["labels"]["a"], "b");
    kd.delete_pod("ns", "p1");
    let ev = next_event().await;
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(ev["object"]["metadata"]["name"], "p1");

    // Without a resourceVersion the watch starts with the current pods, and
    // timeoutSeconds ends it.
    let resp = c
        .open(
            "GET",
            "/api/v1/namespaces/ns/pods?watch=1&timeoutSeconds=1",
            Some(&t),
            None,
            None,
        )
        .await;
    let all = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let events: Vec<Value> = std::str::from_utf8(&all)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["elsewhere", "p2", "p4"]);
    assert!(events.iter().all(|e| e["type"] == "ADDED"));
}

/// Reads newline-delimited watch events off a streaming response body.
struct Events {
    body: hyper::body::Incoming,
    buf: String,
}

impl Events {
    fn new(resp: http::Response<hyper::body::Incoming>) -> Self {
        assert_eq!(resp.status(), 200);
        Events {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next event, or `None` if none arrives within `within` (or the
    /// stream ends).
    async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Some(i) = self.buf.find('\n') {
                let line: String = self.buf.drain(..=i).collect();
                return Some(serde_json::from_str(&line).unwrap());
            }
            let frame = tokio::time::timeout_at(until, self.body.frame()).await.ok()??.unwrap();
            if let Ok(d) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&d).unwrap());
            }
        }
    }

    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("watch event in time")
    }
}

/// As the real API server: a list or watch names an object when its field
/// selector requires `metadata.name`, so a rule with `resourceNames` allows
/// listing and watching exactly that Secret (how the provider watches its key
/// Secret), and nothing else.
#[tokio::test]
async fn secrets_are_listed_and_watched_by_name_under_a_resource_names_rule() {
    let kd = KubeDouble::start().await.unwrap();
    let c = TestClient::new(&kd);
    let t = kd.service_account_token("ns", "sa", &[], HOUR);
    kd.grant("ns", "sa", "list", "secrets", Some("ns"), Some("key"));
    kd.grant("ns", "sa", "watch", "secrets", Some("ns"), Some("key"));
    kd.put_secret("ns", json!({"metadata": {"name": "key"}, "data": {"key": "AQ=="}}));
    kd.put_secret("ns", json!({"metadata": {"name": "other"}, "data": {"key": "Ag=="}}));
    kd.put_secret(
        "elsewhere",
        json!({"metadata": {"name": "key"}, "data": {"key": "Aw=="}}),
    );
    let base = "/api/v1/namespaces/ns/secrets";
    let by_name = format!("{base}?fieldSelector=metadata.name%3Dkey");

    // Denied: everything, another name, a selector that names nothing, a
    // label selector, another namespace, and get (another verb).
    for path in [
        base.to_string(),
        format!("{base}?watch=true"),
        format!("{base}?fieldSelector=metadata.name%3Dother"),
        format!("{base}?fieldSelector=metadata.name%21%3Dother"),
        format!("{base}?fieldSelector=type%3DOpaque"),
        format!("{base}?labelSelector=metadata.name%3Dkey"),
        "/api/v1/namespaces/elsewhere/secrets?fieldSelector=metadata.name%3Dkey".to_string(),
        "/api/v1/secrets?fieldSelector=metadata.name%3Dkey".to_string(),
        format!("{base}/key"),
    ] {
        assert_eq!(c.get(&path, &t).await.0, 403, "{path}");
    }
    let (code, body) = c.get(&format!("{base}?fieldSelector=metadata.name%3Dother"), &t).await;
    assert_eq!(code, 403);
    assert_eq!(
        body["message"],
        "secrets \"other\" is forbidden: User \"system:serviceaccount:ns:sa\" cannot list resource \"secrets\" in API group \"\" in the namespace \"ns\""
    );
    // Authorization comes first: an unknown field label is 403 before it is 400.
    assert_eq!(c.get(&format!("{base}?fieldSelector=spec.x%3Dy"), &t).await.0, 403);

    // Allowed: the list of that one Secret (`==` and further requirements
    // still name it; they only narrow the list).
    let (code, list) = c.get(&by_name, &t).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "SecretList");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["key"]);
    assert_eq!(list["items"][0]["data"]["key"], "AQ==");
    let (code, narrowed) = c
        .get(
            &format!("{base}?fieldSelector=metadata.name%3D%3Dkey%2Ctype%3Dkubernetes.io%2Ftls"),
            &t,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(narrowed["items"], json!([]));
    let list_rv = rv(&list);

    // The watch from the list's resourceVersion sees that Secret's changes
    // only: MODIFIED, DELETED (with a newer resourceVersion), ADDED.
    let mut events = Events::new(
        c.open(
            "GET",
            &format!("{by_name}&watch=true&resourceVersion={list_rv}"),
            Some(&t),
            None,
            None,
        )
        .await,
    );
    kd.put_secret("ns", json!({"metadata": {"name": "other"}, "data": {"key": "BA=="}}));
    kd.put_secret(
        "elsewhere",
        json!({"metadata": {"name": "key"}, "data": {"key": "BQ=="}}),
    );
    kd.put_secret("ns", json!({"metadata": {"name": "key"}, "data": {"key": "Bg=="}}));
    let ev = events.next().await;
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["kind"], "Secret");
    assert_eq!(ev["object"]["metadata"]["namespace"], "ns");
    assert_eq!(ev["object"]["data"]["key"], "Bg==");
    let modified_rv = rv(&ev["object"]);
    assert!(modified_rv > list_rv);
    kd.delete_secret("ns", "other");
    kd.delete_secret("ns", "key");
    let ev = events.next().await;
    assert_eq!(ev["type"], "DELETED");
    assert_eq!(ev["object"]["metadata"]["name"], "key");
    assert!(
        rv(&ev["object"]) > modified_rv,
        "a deletion has its own resourceVersion"
    );
    // Writes through the API record events too: a create by another client.
    kd.grant("ns", "admin", "*", "*", None, None);
    let admin = kd.service_account_token("ns", "admin", &[], HOUR);
    let (code, _) = c
        .send_json(
            "POST",
            base,
            &admin,
            json!({"metadata": {"name": "key"}, "data": {"key": "Bw=="}}),
        )
        .await;
    assert_eq!(code, 201);
    let ev = events.next().await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["data"]["key"], "Bw==");
    // ... and a delete through the API.
    assert_eq!(
        c.call("DELETE", &format!("{base}/key"), Some(&admin), None, None)
            .await
            .0,
        200
    );
    assert_eq!(events.next().await["type"], "DELETED");
    assert!(
        events.next_within(Duration::from_millis(300)).await.is_none(),
        "no event of other Secrets"
    );

    // Without a resourceVersion the watch starts with the Secret as it is.
    kd.put_secret("ns", json!({"metadata": {"name": "key"}, "data": {"key": "CA=="}}));
    let mut events = Events::new(
        c.open(
            "GET",
            &format!("{by_name}&watch=1&timeoutSeconds=1"),
            Some(&t),
            None,
            None,
        )
        .await,
    );
    let ev = events.next().await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["data"]["key"], "CA==");
    let started = Instant::now();
    assert!(events.next_within(Duration::from_secs(5)).await.is_none());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "timeoutSeconds ends the stream"
    );
}

#[tokio::test]
async fn fault_injection_request_log_and_kubeconfig() {
    let (kd, c, t) = admin().await;
    kd.clear_requests();
    kd.set_unavailable(true);
    let (code, body) = c.get("/api/v1/namespaces/ns/secrets/a", &t).await;
    assert_eq!(code, 503);
    assert_eq!(body["reason"], "ServiceUnavailable");
    kd.set_unavailable(false);

    kd.set_delay(Duration::from_millis(300));
    let started = Instant::now();
    assert_eq!(c.get("/api/v1/namespaces/ns/secrets/a", &t).await.0, 404);
    assert!(started.elapsed() >= Duration::from_millis(300));
    kd.set_delay(Duration::ZERO);

    assert_eq!(
        kd.requests(),
        vec![
            ("GET".to_owned(), "/api/v1/namespaces/ns/secrets/a".to_owned()),
            ("GET".to_owned(), "/api/v1/namespaces/ns/secrets/a".to_owned()),
        ]
    );

    kd.put_secret("ns", json!({"metadata":{"name":"given"},"stringData":{"k":"v"}}));
    assert_eq!(
        c.get("/api/v1/namespaces/ns/secrets/given", &t).await.1["data"]["k"],
        "dg=="
    );
    kd.delete_secret("ns", "given");
    assert!(kd.secret("ns", "given").is_none());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    kd.write_kubeconfig(&path, &t).unwrap();
    let cfg: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(cfg["clusters"][0]["cluster"]["server"], kd.url());
    assert_eq!(cfg["users"][0]["user"]["token"], t.as_str());
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            cfg["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(String::from_utf8(ca).unwrap(), kd.ca_pem());
}

#[tokio::test]
async fn dropping_the_double_stops_the_server() {
    let kd = KubeDouble::start().await.unwrap();
    let addr = kd.addr();
    drop(kd);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
