//! The Kubernetes API double, checked with a client this project did not
//! write: `kubectl` (client-go). The provider's Kubernetes behaviour is
//! proven against the double, so the double must answer the way a real API
//! server does — response shapes client-go decodes, `Status` bodies it turns
//! into the messages users see, the status codes it classifies. Every request
//! here is one the provider makes (TokenRequest, Secret get/create, the node's
//! pods), sent by kubectl instead.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use base64::Engine as _;
use serde_json::{json, Value};

/// Runs kubectl with `kubeconfig`; (success, stdout, stderr).
fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl runs (install it: the manifest tests need it too)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url payload");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A kubeconfig for the provider's service account (which the world grants
/// `create` on `serviceaccounts/token`, `get`/`create` on Secrets in its
/// namespace and `list`/`watch` on pods).
fn provider_kubeconfig(bed: &Bed) -> std::path::PathBuf {
    let token = bed
        .kube
        .service_account_token(PROVIDER_NS, "vault-csi-provider", &[], Duration::from_secs(3600));
    let path = bed.dir.path().join("kubectl.kubeconfig");
    bed.kube.write_kubeconfig(&path, &token).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_token_request_gets_a_pod_bound_token_that_vault_accepts() {
    let bed = Bed::start().await;
    let pod = bed.pod_without_token("default", "web-0", "app");
    let kubeconfig = provider_kubeconfig(&bed);

    // `kubectl create token` sends its TokenRequest as protobuf, which the
    // double does not decode (the provider sends JSON): it must refuse it the
    // way an API server refuses a media type, and the same request as JSON
    // (what the provider sends) must work.
    let (ok, _, stderr) = kubectl(&kubeconfig, &["create", "token", "app", "-n", "default"]);
    assert!(!ok);
    assert!(stderr.contains("unknown format"), "{stderr}");
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "audiences": ["vault"],
            "expirationSeconds": 900,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0", "uid": pod.uid},
        },
    });
    let file = bed.dir.path().join("tokenrequest.json");
    std::fs::write(&file, request.to_string()).unwrap();
    let (ok, stdout, stderr) = kubectl(
        &kubeconfig,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/serviceaccounts/app/token",
            "-f",
            &file.display().to_string(),
        ],
    );
    assert!(ok, "TokenRequest failed: {stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["kind"], "TokenRequest");
    let expires = answer["status"]["expirationTimestamp"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(expires).is_ok(), "{expires}");
    let token = answer["status"]["token"].as_str().unwrap().to_string();
    let c = claims(&token);
    assert_eq!(c["aud"], json!(["vault"]));
    assert_eq!(c["sub"], "system:serviceaccount:default:app");
    assert_eq!(c["kubernetes.io"]["pod"]["uid"], pod.uid.as_str());
    assert_eq!(c["kubernetes.io"]["pod"]["name"], "web-0");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);

    // Real OpenBao reviews it through the double and logs the pod in.
    let (status, login) = bed
        .bao
        .request(
            "POST",
            "auth/kubernetes/login",
            Some(json!({"role": "app", "jwt": token})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["auth"]["metadata"]["service_account_name"], "app", "{login}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reads_the_doubles_answers_and_errors_as_a_real_api_servers() {
    let bed = Bed::start().await;
    bed.pod_without_token("default", "web-0", "app");
    let kubeconfig = provider_kubeconfig(&bed);

    // 404 with a NotFound Status: client-go prints its reason and message.
    let (ok, _, stderr) = kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/csi/secrets/missing"]);
    assert!(!ok);
    assert!(
        stderr.contains(r#"Error from server (NotFound): secrets "missing" not found"#),
        "{stderr}"
    );

    // Create, read back, create again: 201, 200, then 409 AlreadyExists.
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "key", "namespace": "csi"},
        "data": {"key": base64::engine::general_purpose::STANDARD.encode([7u8; 32])},
    });
    let file = bed.dir.path().join("secret.json");
    std::fs::write(&file, secret.to_string()).unwrap();
    let file = file.display().to_string();
    let (ok, stdout, stderr) = kubectl(
        &kubeconfig,
        &["create", "--raw", "/api/v1/namespaces/csi/secrets", "-f", &file],
    );
    assert!(ok, "{stderr}");
    let created: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(created["metadata"]["name"], "key");
    assert!(created["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));
    let (ok, stdout, stderr) = kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/csi/secrets/key"]);
    assert!(ok, "{stderr}");
    let read: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(read["data"], secret["data"]);
    assert_eq!(read["kind"], "Secret");
    let (ok, _, stderr) = kubectl(
        &kubeconfig,
        &["create", "--raw", "/api/v1/namespaces/csi/secrets", "-f", &file],
    );
    assert!(!ok);
    assert!(
        stderr.contains(r#"Error from server (AlreadyExists): secrets "key" already exists"#),
        "{stderr}"
    );

    // 403 with a Forbidden Status naming user, verb, resource and namespace.
    let (ok, _, stderr) = kubectl(&kubeconfig, &["get", "--raw", "/api/v1/namespaces/default/secrets/key"]);
    assert!(!ok);
    assert!(stderr.contains("Error from server (Forbidden)"), "{stderr}");
    assert!(
        stderr.contains(r#"User "system:serviceaccount:csi:vault-csi-provider" cannot get resource "secrets""#),
        "{stderr}"
    );
    assert!(stderr.contains(r#"in the namespace "default""#), "{stderr}");

    // The node's pods, as the revocation watch lists them.
    let (ok, stdout, stderr) = kubectl(
        &kubeconfig,
        &["get", "--raw", "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-1"],
    );
    assert!(ok, "{stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list["kind"], "PodList");
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["web-0"]);
    assert!(list["metadata"]["resourceVersion"].as_str().is_some());

    // An unknown bearer token: 401, which client-go reports as a login problem.
    let stranger = bed.dir.path().join("stranger.kubeconfig");
    bed.kube.write_kubeconfig(&stranger, "not-a-token").unwrap();
    let (ok, _, stderr) = kubectl(&stranger, &["get", "--raw", "/api/v1/namespaces/csi/secrets/key"]);
    assert!(!ok);
    assert!(
        stderr.contains("You must be logged in to the server (Unauthorized)"),
        "{stderr}"
    );
}
