//! Installing on a real cluster, by subject: the kustomize variants under
//! `deploy/` as `kubectl kustomize` renders them, validated against the
//! Kubernetes OpenAPI schemas ([`rendering`]); their RBAC checked rule by
//! rule and then applied to the real kube-apiserver, which enforces it while
//! the provider mounts ([`rbac`]); the vault-helm and openbao-helm charts'
//! argument lists and Agent-socket `VAULT_ADDR` ([`charts`]); OpenBao's
//! addresses and sockets ([`openbao`]); and the files under `examples/`,
//! applied and mounted as they are ([`examples`]). This module holds what
//! several of them share.

mod charts;
mod examples;
mod openbao;
mod rbac;
mod rendering;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;
use serde_json::{json, Value};
use vcp_testbed::driver::PodContext;
use vcp_testbed::kubernetes::deploy;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The optional components, each a directory under `deploy/components`.
const COMPONENTS: &[&str] = &[
    "token-request",
    "revoke-on-pod-delete",
    "secret-sync",
    "metrics",
    "non-root",
    "network-policy",
    "openbao",
    "authoritative-class",
];
/// The example scenarios, each a directory under `examples/`, each mounted in [`examples`].
const EXAMPLES: &[&str] = &[
    "kv",
    "database",
    "pki",
    "jwt-auth",
    "custom-audience",
    "sync",
    "openbao-kv",
];

/// Parses a multi-document YAML stream into JSON values (empty documents dropped).
fn yaml_docs(text: &str) -> Vec<Value> {
    deploy::yaml_docs(text).expect("valid YAML")
}

/// A rendered install: a name and its objects.
struct Variant {
    name: String,
    yaml: String,
    objects: Vec<Value>,
}

fn kustomize(dir: &Path) -> String {
    deploy::kustomize(dir).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Renders the base with `components` through a generated overlay.
fn render(name: &str, components: &[&str]) -> Variant {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kustomize").join(name);
    let yaml = deploy::render_in(&dir, components).unwrap_or_else(|e| panic!("{e:#}"));
    Variant {
        name: name.to_string(),
        objects: yaml_docs(&yaml),
        yaml,
    }
}

/// Every variant: the base, each component alone, all together, and the
/// committed overlays (`deploy/example`, `deploy/driver`).
fn variants() -> Vec<Variant> {
    let mut v = vec![render("base", &[])];
    for c in COMPONENTS {
        v.push(render(c, &[c]));
    }
    v.push(render("all", COMPONENTS));
    for dir in ["example", "driver"] {
        let yaml = kustomize(&Path::new(REPO).join("deploy").join(dir));
        v.push(Variant {
            name: format!("deploy/{dir}"),
            objects: yaml_docs(&yaml),
            yaml,
        });
    }
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().expect("string").to_string()).collect())
        .unwrap_or_default()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The provider container of a rendered DaemonSet.
fn provider_container(v: &Variant) -> (&Value, &Value) {
    let ds = of_kind(&v.objects, "DaemonSet");
    assert_eq!(ds.len(), 1, "{}: one DaemonSet", v.name);
    let pod = &ds[0]["spec"]["template"]["spec"];
    (pod, &pod["containers"][0])
}

/// The kubeconfig standing in for the in-cluster configuration: the
/// provider's service account, and its namespace as the context's.
async fn in_cluster_stand_in(bed: &Bed, name: &str) -> PathBuf {
    bed.world.provider_kubeconfig(bed.provider_ns(), name).await.unwrap()
}

/// The Role a chart (vault-helm's and openbao-helm's `csi-role.yaml`)
/// renders for the provider's key Secret `key`: `get` on it by name and
/// `create` on Secrets, bound to the provider's ServiceAccount.
async fn chart_key_role(bed: &Bed, key: &str) {
    let ns = bed.provider_ns();
    bed.kube
        .apply(&[
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": format!("{key}-role"), "namespace": ns},
                "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": [key]},
                    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                ],
            }),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": format!("{key}-role"), "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{key}-role")},
                "subjects": [{"kind": "ServiceAccount", "name": PROVIDER_SA, "namespace": ns}],
            }),
        ])
        .await
        .unwrap();
}

/// A kubernetes-auth role for `<test namespace>/app` at `mount` whose tokens must
/// carry audience `openbao`.
async fn openbao_role(bed: &Bed, mount: &str, role: &str) {
    bed.role(role)
        .at(mount)
        .audience(Some("openbao"))
        .write()
        .await
        .unwrap();
}

/// A pod with the kubelet tokens a CSIDriver whose `tokenRequests` list
/// `audiences` hands over, one per audience.
async fn pod_with_tokens(bed: &Bed, name: &str, audiences: &[&str]) -> PodContext {
    let mut pod = bed.pod_without_token(name).await;
    let ttl = Duration::from_secs(3600);
    let expires = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + ttl).to_string();
    let mut tokens = serde_json::Map::new();
    for audience in audiences {
        let token = bed.kube.pod_token(bed.ns(), name, &[audience], ttl).await.unwrap();
        tokens.insert(
            audience.to_string(),
            json!({"token": token, "expirationTimestamp": expires}),
        );
    }
    pod.tokens = Some(Value::Object(tokens).to_string());
    pod
}

/// The provider serving `<scratch>/<name>/openbao.sock` only (OpenBao's
/// flags, env and defaults), as the provider's service account with
/// openbao-helm's Role for its key Secret.
async fn openbao_provider(bed: &Bed, name: &str, extra: &[String], env: &[(&str, &str)]) -> Provider {
    // Its key Secret is OpenBao's default, which openbao-helm's Role names.
    chart_key_role(bed, "openbao-csi-provider-hmac-key").await;
    let dir = bed.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("openbao.sock");
    let kubeconfig = in_cluster_stand_in(bed, name).await;
    let mut args = vec![
        format!("-endpoint={}", socket.display()),
        format!("-kubeconfig={}", kubeconfig.display()),
        "-health-addr=127.0.0.1:0".to_string(),
        "-log-level=debug".to_string(),
    ];
    args.extend(extra.iter().cloned());
    spawn_provider(
        &args,
        socket,
        bed.dir.path().join(format!("{name}.log")),
        env,
        "provider starts",
    )
    .await
}
