//! Installing on a real cluster: the kustomize variants under `deploy/`
//! (rendered with `kubectl kustomize`, validated against the Kubernetes
//! OpenAPI schemas, RBAC checked rule by rule and then applied to the real
//! kube-apiserver, which enforces it while the provider mounts), the
//! vault-helm and openbao-helm charts' argument lists and Agent-socket
//! `VAULT_ADDR`, and the files under `examples/`, applied and mounted as
//! they are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use serde_json::{json, Value};
use tonic::Code;
use vault_csi_provider::spc::names as spc_names;
use vcp_testbed::driver::{DriverClient, Generation, PodContext};
use vcp_testbed::kubernetes::deploy;
use vcp_testbed::ports::free_port;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Kubernetes versions the manifests must be valid for: the oldest still
/// commonly run, and the newest the validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
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
/// The example scenarios, each a directory under `examples/`, each mounted below.
const EXAMPLES: &[&str] = &[
    "kv",
    "database",
    "pki",
    "jwt-auth",
    "custom-audience",
    "sync",
    "openbao-kv",
];

// ---------------------------------------------------------------- rendering

/// The `kubernetes-validate` tool that `scripts/testbed.sh install` puts in
/// `.testbed/`, or a failure that says how to get it.
fn validator() -> PathBuf {
    let path = std::env::var_os("VCP_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join(".testbed/kubernetes-validate/bin/kubernetes-validate"));
    assert!(
        path.is_file(),
        "kubernetes-validate not found at {}: run `scripts/testbed.sh install` (installs it from PyPI into .testbed/)",
        path.display()
    );
    path
}

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

/// Runs the validator in strict mode on `files` for one Kubernetes version,
/// and returns (success, output).
fn validate(files: &[PathBuf], version: &str) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_variant_and_example_matches_the_kubernetes_schemas_with_no_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut expected = 0;
    for v in variants() {
        assert!(!v.objects.is_empty(), "{} renders nothing", v.name);
        let file = dir.path().join(format!("{}.yaml", v.name.replace('/', "-")));
        std::fs::write(&file, &v.yaml).unwrap();
        files.push(file);
        expected += v.objects.len();
    }
    // The examples' Kubernetes objects (the SecretProviderClass is a CRD the
    // validator has no schema for; it is checked field by field below).
    for ex in EXAMPLES {
        for entry in std::fs::read_dir(Path::new(REPO).join("examples").join(ex)).unwrap() {
            let file = entry.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && name != "secretproviderclass.yaml" {
                expected += yaml_docs(&std::fs::read_to_string(&file).unwrap()).len();
                files.push(file);
            }
        }
    }
    for version in KUBERNETES_VERSIONS {
        let (ok, out) = validate(&files, version);
        assert!(ok, "kubernetes-validate -k {version} failed:\n{out}");
        let passed = out.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(
            passed, expected,
            "every object must be checked against a schema (no WARN for unknown kinds):\n{out}"
        );
    }

    // The check has teeth: a misspelt field is refused.
    let bad = dir.path().join("bad.yaml");
    let base = render("base", &[]);
    std::fs::write(
        &bad,
        base.yaml.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"),
    )
    .unwrap();
    let (ok, out) = validate(&[bad], KUBERNETES_VERSIONS[0]);
    assert!(
        !ok && out.contains("readOnlyRootFileSystem"),
        "strict validation catches a typo:\n{out}"
    );
}

// ---------------------------------------------------------------- RBAC

/// One permission: where it applies, and what it allows.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    /// `namespace/<ns>` (Role + RoleBinding), `cluster` (ClusterRole +
    /// ClusterRoleBinding), or `unbound/<clusterrole>` (a ClusterRole left
    /// for admins to bind per namespace).
    scope: String,
    resource: String,
    name: String,
    verb: String,
}

fn g(scope: &str, resource: &str, name: &str, verb: &str) -> Grant {
    Grant {
        scope: scope.into(),
        resource: resource.into(),
        name: name.into(),
        verb: verb.into(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().expect("string").to_string()).collect())
        .unwrap_or_default()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The permissions a rendered install grants, after checking the shape
/// every variant must have: core API group only (but for SecretProviderClasses), no wildcards, every binding
/// for the provider's own service account and to a role rendered alongside.
fn grants(v: &Variant) -> BTreeSet<Grant> {
    let sa = of_kind(&v.objects, "ServiceAccount");
    assert_eq!(sa.len(), 1, "{}: one ServiceAccount", v.name);
    let sa_name = sa[0]["metadata"]["name"].as_str().unwrap();
    let sa_ns = sa[0]["metadata"]["namespace"].as_str().unwrap();

    let mut rules: BTreeMap<(String, String), (Option<String>, Vec<Value>)> = BTreeMap::new();
    for kind in ["Role", "ClusterRole"] {
        for r in of_kind(&v.objects, kind) {
            let ns = r["metadata"]["namespace"].as_str().map(String::from);
            let name = r["metadata"]["name"].as_str().unwrap().to_string();
            let list = r["rules"].as_array().cloned().unwrap_or_default();
            for rule in &list {
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    assert!(
                        !strings(&rule[field]).iter().any(|s| s.contains('*')),
                        "{}: {kind} {name} uses a wildcard in {field}",
                        v.name
                    );
                }
                // The core API, and the CSI driver's SecretProviderClasses.
                let group = if strings(&rule["resources"]) == ["secretproviderclasses"] {
                    "secrets-store.csi.x-k8s.io"
                } else {
                    ""
                };
                assert_eq!(
                    strings(&rule["apiGroups"]),
                    vec![group],
                    "{}: {name}: core API only, but for SecretProviderClasses",
                    v.name
                );
                assert!(rule.get("nonResourceURLs").is_none(), "{}: {name}: no URLs", v.name);
            }
            rules.insert((kind.to_string(), name), (ns, list));
        }
    }
    assert!(
        v.objects
            .iter()
            .all(|o| o["kind"] != "ClusterRole" || o.get("aggregationRule").is_none()),
        "{}: no aggregated roles",
        v.name
    );

    let mut out = BTreeSet::new();
    let mut bound = BTreeSet::new();
    for kind in ["RoleBinding", "ClusterRoleBinding"] {
        for b in of_kind(&v.objects, kind) {
            let subjects = b["subjects"].as_array().unwrap();
            assert_eq!(subjects.len(), 1, "{}: one subject per binding", v.name);
            assert_eq!(subjects[0]["kind"], "ServiceAccount");
            assert_eq!(subjects[0]["name"], sa_name, "{}: binds the provider", v.name);
            assert_eq!(subjects[0]["namespace"], sa_ns, "{}: binds the provider", v.name);
            let role_kind = b["roleRef"]["kind"].as_str().unwrap().to_string();
            let role_name = b["roleRef"]["name"].as_str().unwrap().to_string();
            let (role_ns, list) = rules.get(&(role_kind.clone(), role_name.clone())).unwrap_or_else(|| {
                panic!(
                    "{}: {kind} refers to {role_kind} {role_name}, not rendered here",
                    v.name
                )
            });
            let scope = match kind {
                "RoleBinding" => {
                    let ns = b["metadata"]["namespace"].as_str().unwrap();
                    if role_kind == "Role" {
                        assert_eq!(role_ns.as_deref(), Some(ns));
                    }
                    format!("namespace/{ns}")
                }
                _ => {
                    assert_eq!(role_kind, "ClusterRole");
                    "cluster".to_string()
                }
            };
            bound.insert((role_kind.clone(), role_name.clone()));
            expand(&scope, list, &mut out);
        }
    }
    for ((kind, name), (_, list)) in &rules {
        if !bound.contains(&(kind.clone(), name.clone())) {
            assert_eq!(kind, "ClusterRole", "{}: Role {name} is never bound", v.name);
            expand(&format!("unbound/{name}"), list, &mut out);
        }
    }
    out
}

fn expand(scope: &str, rules: &[Value], out: &mut BTreeSet<Grant>) {
    for rule in rules {
        let names = strings(&rule["resourceNames"]);
        let names = if names.is_empty() { vec![String::new()] } else { names };
        for resource in strings(&rule["resources"]) {
            for verb in strings(&rule["verbs"]) {
                for name in &names {
                    out.insert(g(scope, &resource, name, &verb));
                }
            }
        }
    }
}

/// What each feature needs, and nothing more.
fn needed(component: &str) -> BTreeSet<Grant> {
    let set: Vec<Grant> = match component {
        "base" => vec![
            g("namespace/csi", "secrets", "vault-csi-provider-hmac-key", "get"),
            g("namespace/csi", "secrets", "vault-csi-provider-hmac-key", "list"),
            g("namespace/csi", "secrets", "vault-csi-provider-hmac-key", "watch"),
            g("namespace/csi", "secrets", "", "create"),
        ],
        "token-request" => vec![
            g("cluster", "serviceaccounts/token", "", "create"),
            g("cluster", "pods", "", "list"),
        ],
        "revoke-on-pod-delete" => vec![g("cluster", "pods", "", "list"), g("cluster", "pods", "", "watch")],
        "secret-sync" => vec![
            g("unbound/vault-csi-provider-secret-sync", "secrets", "", "get"),
            g("unbound/vault-csi-provider-secret-sync", "secrets", "", "create"),
            g("unbound/vault-csi-provider-secret-sync", "secrets", "", "patch"),
            g("unbound/vault-csi-provider-secret-sync", "pods", "", "get"),
        ],
        "authoritative-class" => vec![g("cluster", "secretproviderclasses", "", "get")],
        // openbao: both sockets share one key Secret and one identity.
        "metrics" | "non-root" | "network-policy" | "openbao" => vec![],
        other => panic!("no RBAC expectation for component {other}"),
    };
    set.into_iter().collect()
}

/// The provider container of a rendered DaemonSet.
fn provider_container(v: &Variant) -> (&Value, &Value) {
    let ds = of_kind(&v.objects, "DaemonSet");
    assert_eq!(ds.len(), 1, "{}: one DaemonSet", v.name);
    let pod = &ds[0]["spec"]["template"]["spec"];
    (pod, &pod["containers"][0])
}

#[test]
fn rbac_of_each_variant_is_exactly_what_its_features_need() {
    let base = render("base", &[]);
    let base_grants = grants(&base);
    assert_eq!(base_grants, needed("base"));
    // No Secret write outside the provider's namespace in the base, and no
    // cluster-wide Secret access in any variant.
    for v in variants().iter().filter(|v| v.name != "deploy/driver") {
        for grant in grants(v) {
            assert!(
                !(grant.scope == "cluster" && grant.resource == "secrets"),
                "{}: cluster-wide Secret access: {grant:?}",
                v.name
            );
        }
    }
    for c in COMPONENTS {
        let v = render(c, &[c]);
        let mut want = needed("base");
        want.extend(needed(c));
        assert_eq!(grants(&v), want, "RBAC of the {c} component");
    }
    let all = render("all", COMPONENTS);
    let mut want = needed("base");
    for c in COMPONENTS {
        want.extend(needed(c));
    }
    assert_eq!(grants(&all), want);

    // The Role names the Secret the DaemonSet's -hmac-secret-name points to.
    let (_, container) = provider_container(&base);
    let args = strings(&container["args"]);
    assert!(args.contains(&"-hmac-secret-name=vault-csi-provider-hmac-key".to_string()));
    // The committed example overlay: base + revocation + metrics + network
    // policy, in its namespace, and never cluster-wide token minting (the
    // reference CSIDriver hands the pods' tokens over).
    let example = variants().into_iter().find(|v| v.name == "deploy/example").unwrap();
    let mut want: BTreeSet<Grant> = needed("base")
        .into_iter()
        .map(|mut g| {
            g.scope = "namespace/vault-csi".into();
            g
        })
        .collect();
    want.extend(needed("revoke-on-pod-delete"));
    assert_eq!(grants(&example), want);
    assert!(
        !grants(&example).iter().any(|g| g.resource == "serviceaccounts/token"),
        "the example grants no TokenRequest"
    );
}

#[test]
fn the_daemonset_is_locked_down_in_every_variant() {
    for v in variants().iter().filter(|v| v.name != "deploy/driver") {
        let (pod, c) = provider_container(v);
        let n = &v.name;
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{n}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{n}");
        assert_eq!(sc["privileged"], false, "{n}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL"], "{n}");
        assert!(sc["capabilities"].get("add").is_none(), "{n}: no capability added");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{n}"
        );
        for forbidden in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(pod.get(forbidden).is_none(), "{n}: {forbidden}");
        }
        assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}), "{n}");
        assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]), "{n}");
        assert!(c["resources"]["requests"]["cpu"].is_string(), "{n}: cpu request");
        assert!(c["resources"]["requests"]["memory"].is_string(), "{n}: memory request");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{n}: memory limit");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health/live", "{n}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready", "{n}");
        // The only host path is the socket directory, mounted at /provider;
        // anything else is a read-only ConfigMap (the example's CA files).
        let all_volumes = pod["volumes"].as_array().unwrap();
        let volumes: Vec<&Value> = all_volumes.iter().filter(|v| v.get("hostPath").is_some()).collect();
        assert_eq!(volumes.len(), 1, "{n}");
        for v in all_volumes.iter().filter(|v| v.get("hostPath").is_none()) {
            assert!(
                v.get("configMap").is_some(),
                "{n}: only ConfigMaps besides the socket directory: {v}"
            );
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == v["name"])
                .unwrap_or_else(|| panic!("{n}: {v} is mounted"));
            assert_eq!(mount["readOnly"], true, "{n}: {mount}");
        }
        let host = volumes[0]["hostPath"]["path"].as_str().unwrap();
        assert!(
            [
                "/var/run/secrets-store-csi-providers",
                "/etc/kubernetes/secrets-store-csi-providers"
            ]
            .contains(&host),
            "{n}: {host}"
        );
        assert_eq!(
            c["volumeMounts"][0],
            json!({"name": "providervol", "mountPath": "/provider"}),
            "{n}"
        );
        assert!(strings(&c["args"]).contains(&"-endpoint=/provider/vault.sock".to_string()));
        let openbao = n == "openbao" || n == "all";
        assert_eq!(
            strings(&c["args"]).contains(&"-openbao-endpoint=/provider/openbao.sock".to_string()),
            openbao,
            "{n}: the openbao socket, in the same socket directory"
        );
        // Root only where the socket directory requires it.
        let user = pod["securityContext"]["runAsUser"].as_i64().unwrap();
        if n == "non-root" || n == "all" {
            assert_eq!(user, 65532, "{n}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{n}");
            assert_eq!(volumes[0]["hostPath"]["type"], "Directory", "{n}");
        } else {
            assert_eq!(user, 0, "{n}");
        }
        let env: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let revoke = n == "revoke-on-pod-delete" || n == "all" || n == "deploy/example";
        let flag = format!("-revoke-on-pod-delete={revoke}");
        let args = strings(&c["args"]);
        assert_eq!(
            args.iter()
                .filter(|a| a.contains("revoke-on-pod-delete"))
                .collect::<Vec<_>>(),
            vec![&flag],
            "{n}"
        );
        // Every variant knows its node: the node check before a token is
        // used or minted, and the revocation watch.
        assert!(env.contains(&"NODE_NAME"), "{n}");
        assert_eq!(env.iter().filter(|e| **e == "NODE_NAME").count(), 1, "{n}");
    }
    let driver = variants().into_iter().find(|v| v.name == "deploy/driver").unwrap();
    let spec = &of_kind(&driver.objects, "CSIDriver")[0]["spec"];
    assert_eq!(spec["tokenRequests"], json!([{"audience": "vault"}]));
    assert_eq!(spec["requiresRepublish"], true);
    assert_eq!(spec["podInfoOnMount"], true);
}

/// Starts the provider as the ServiceAccount `deploy/` renders, installed
/// in its own namespace `<test>-<name>` with exactly the RBAC of the base
/// and `components` (applied to the real API server, which enforces it).
async fn installed_provider(bed: &Bed, name: &str, components: &[&str]) -> (Provider, String) {
    let ns = bed.kube.namespace(name).await.unwrap();
    bed.kube.install_provider(&ns, components).await.unwrap();
    let kubeconfig = bed.world.provider_kubeconfig(&ns, name).await.unwrap();
    let socket = bed.dir.path().join(format!("{name}.sock"));
    let args = vec![
        format!("-endpoint={}", socket.display()),
        format!("-vault-addr={}", bed.world.bao.addr()),
        format!("-kubeconfig={}", kubeconfig.display()),
        "-health-addr=127.0.0.1:0".to_string(),
    ];
    let p = spawn_provider(
        &args,
        socket,
        bed.dir.path().join(format!("{name}.log")),
        &[],
        "provider starts",
    )
    .await;
    (p, ns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rendered_rbac_is_enough_for_a_mount_and_token_request_needs_its_component() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    bed.role("any-aud").write().await.unwrap();
    let objects = KV_OBJECT;

    // Exactly the base's RBAC: a kubelet token → mount works, key created
    // (in the namespace the kubeconfig's context names, as in-cluster).
    let (p, ns) = installed_provider(&bed, "base", &[]).await;
    let pod = bed.pod("web-0").await;
    let r = p
        .mount(&params(objects, &[]), &pod)
        .await
        .expect("mount with the base RBAC");
    assert_eq!(text(&r, "k"), "v");
    assert!(bed.kube.secret(&ns, KEY_SECRET).await.unwrap().is_some());
    // ... but no TokenRequest: a pod without a kubelet token is refused.
    let bare = bed.pod_without_token("bare-0").await;
    let e = p
        .mount(&params(objects, &[("roleName", "any-aud")]), &bare)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    // The token-request component's RBAC makes that mount work.
    let (p, _) = installed_provider(&bed, "tr", &["token-request"]).await;
    let bare = bed.pod_without_token("bare-1").await;
    let r = p
        .mount(&params(objects, &[("roleName", "any-aud")]), &bare)
        .await
        .expect("mount through TokenRequest");
    assert_eq!(text(&r, "k"), "v");
}

// ---------------------------------------------------------------- vault-helm

/// A unix socket that relays every connection to a TCP address: the Vault
/// Agent sidecar's `listener "unix"` as vault-helm configures it.
async fn agent_relay(socket: &Path, upstream: String) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use std::sync::atomic::Ordering;
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    count
}

/// A chart's provider mounting through the Agent's unix socket: the value
/// arrives, the relay carried Vault's traffic, and the key Secret the
/// chart's Role names is in the provider's namespace, immutable.
async fn mounts_through_the_agent(
    bed: &Bed,
    p: &Provider,
    ps: &BTreeMap<String, String>,
    pod: &PodContext,
    relayed: &std::sync::atomic::AtomicUsize,
    key_secret: &str,
) {
    let r = p.mount(ps, pod).await.expect("mount through the Agent socket");
    assert_eq!(text(&r, "k"), "via-agent");
    assert!(
        relayed.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "Vault was reached through the Agent's unix socket"
    );
    let key = bed.key_secret(key_secret).await;
    assert_eq!(key["immutable"], true);
}

/// GET on the health server, as the chart's probes do: the status code.
async fn probe(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls a probe until it answers 200 (readiness waits for the version key).
async fn wait_ready(port: u16) {
    eventually(Duration::from_secs(5), "/health/ready to answer 200", || async {
        probe(port, "/health/ready").await == 200
    })
    .await;
}

/// Starts the provider with the arguments a chart renders — `args`, given
/// the socket path (`socket` under `root`) and a free health port — and the
/// container's `env`; returns once `/health/ready` answers.
async fn chart_provider(
    root: &Path,
    socket: &str,
    env: &[(&str, String)],
    what: &str,
    args: impl FnOnce(&Path, u16) -> Vec<String>,
) -> Provider {
    let endpoint = root.join(socket);
    std::fs::create_dir_all(endpoint.parent().unwrap()).unwrap();
    // A free port, not the chart's 8080, which may be taken on a shared test
    // machine; `-health-addr` arrives through `csi.extraArgs`.
    let health = free_port().unwrap();
    let args = args(&endpoint, health);
    let log = root.join(format!("{}.log", socket.replace('/', "-")));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = spawn_provider(&args, endpoint, log, &env, &format!("provider starts with {what}")).await;
    wait_ready(health).await;
    p
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_helm_arguments_and_agent_socket_vault_addr_mount() {
    let bed = Bed::start().await;
    bed.kv(json!({"k": "via-agent"})).await;
    let root = bed.dir.path();
    // The chart's paths, relocated under the test's scratch directory:
    // /provider (the providervol hostPath) and /var/run/vault (the Agent's emptyDir).
    let endpoint = root.join("provider/vault.sock");
    std::fs::create_dir_all(endpoint.parent().unwrap()).unwrap();
    let agent_socket = root.join("var/run/vault/agent.sock");
    let upstream = bed.world.bao.addr().trim_start_matches("http://").to_string();
    let relayed = agent_relay(&agent_socket, upstream).await;
    let kubeconfig = in_cluster_stand_in(&bed, "helm").await;
    chart_key_role(&bed, "my-vault-csi-provider-hmac-key").await;
    let health = free_port().unwrap();

    // csi-daemonset.yaml with csi.agent.enabled=true (the chart's default),
    // release name `my-vault`, csi.logLevel=info, and csi.extraArgs.
    let args = vec![
        format!("--endpoint={}", endpoint.display()),
        "--log-level=info".to_string(),
        "--hmac-secret-name=my-vault-csi-provider-hmac-key".to_string(),
        // csi.extraArgs (rendered verbatim, one list item each):
        format!("-health-addr=127.0.0.1:{health}"),
        "-vault-mount=kubernetes".to_string(),
    ];
    let vault_addr = format!("unix://{}", agent_socket.display());
    assert!(
        vault_addr.starts_with("unix:///"),
        "same form as unix:///var/run/vault/agent.sock"
    );
    let p = spawn_provider(
        &args,
        endpoint.clone(),
        root.join("helm.log"),
        &[
            ("VAULT_ADDR", &vault_addr),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ],
        "provider starts with the chart's arguments",
    )
    .await;
    wait_ready(health).await;
    assert_eq!(probe(health, "/health/ready").await, 200);

    // An SPC without vaultAddress: every Vault request goes through the Agent socket.
    let pod = bed.pod("web-0").await;
    let objects = KV_OBJECT;
    mounts_through_the_agent(
        &bed,
        &p,
        &params(objects, &[]),
        &pod,
        &relayed,
        "my-vault-csi-provider-hmac-key",
    )
    .await;
    p.sigterm();

    // Older charts render --debug=<bool> instead of --log-level, and without
    // the Agent, VAULT_ADDR is the Vault service's URL.
    let env = [
        ("VAULT_ADDR", bed.world.bao.addr()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
    ];
    let p = chart_provider(
        root,
        "provider-old/vault.sock",
        &env,
        "the older chart's arguments",
        |endpoint, health| {
            vec![
                format!("--endpoint={}", endpoint.display()),
                "--debug=false".to_string(),
                "--hmac-secret-name=vault-csi-provider-hmac-key".to_string(),
                format!("--health-addr=127.0.0.1:{health}"),
            ]
        },
    )
    .await;
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    assert_eq!(text(&r, "k"), "via-agent");
}

// ---------------------------------------------------------------- OpenBao

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_helm_arguments_env_and_agent_socket_mount() {
    let bed = Bed::start().await;
    bed.kv(json!({"k": "via-agent"})).await;
    openbao_role(&bed, "kubernetes", "bao-app").await;
    let root = bed.dir.path();
    // openbao-helm's paths, relocated under the scratch directory:
    // /provider (hostPath csi.daemonSet.providersDir) and /var/run/vault
    // (the Agent's emptyDir). These are the only writable paths the chart
    // gives the container (readOnlyRootFilesystem: true); TMPDIR points at
    // a read-only directory to show nothing else is written.
    let endpoint = root.join("provider/openbao.sock");
    std::fs::create_dir_all(endpoint.parent().unwrap()).unwrap();
    let agent_socket = root.join("var/run/vault/agent.sock");
    let upstream = bed.world.bao.addr().trim_start_matches("http://").to_string();
    let relayed = agent_relay(&agent_socket, upstream).await;
    let readonly = root.join("read-only");
    std::fs::create_dir_all(&readonly).unwrap();
    std::fs::set_permissions(&readonly, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let kubeconfig = in_cluster_stand_in(&bed, "openbao-helm").await;
    chart_key_role(&bed, "openbao-csi-provider-hmac-key").await;
    let health = free_port().unwrap();

    // csi-daemonset.yaml of openbao-helm 0.29.2 with its defaults (chart
    // name `openbao`, csi.agent.enabled=true, csi.debug=false,
    // csi.daemonSet.endpoint=/provider/openbao.sock), and csi.extraArgs.
    let args = vec![
        format!("--endpoint={}", endpoint.display()),
        "--debug=false".to_string(),
        "--hmac-secret-name=openbao-csi-provider-hmac-key".to_string(),
        // csi.extraArgs (the chart's probes use 8080; moved for a shared machine):
        format!("-health-addr=127.0.0.1:{health}"),
    ];
    // The chart's only env: VAULT_ADDR, the Agent's socket. No BAO_ADDR, so
    // the openbao socket falls back to it.
    let vault_addr = format!("unix://{}", agent_socket.display());
    let p = spawn_provider(
        &args,
        endpoint.clone(),
        root.join("openbao-helm.log"),
        &[
            ("VAULT_ADDR", &vault_addr),
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("TMPDIR", readonly.to_str().unwrap()),
        ],
        "provider starts with openbao-helm's arguments",
    )
    .await;
    wait_ready(health).await;
    let version = p.client(Generation::V16).await.unwrap().version().await.unwrap();
    assert_eq!(version.runtime_name, "openbao-csi-provider");

    // A class as OpenBao users write it: baoRoleName wins over roleName
    // (`app`, bound to audience vault), and with no audience the kubelet
    // token for `openbao` is used.
    let pod = pod_with_tokens(&bed, "web-0", &["vault", "openbao"]).await;
    let objects = KV_OBJECT;
    let ps = params(objects, &[("baoRoleName", "bao-app")]);
    mounts_through_the_agent(&bed, &p, &ps, &pod, &relayed, "openbao-csi-provider-hmac-key").await;
    let logs = p.logs();
    assert!(
        logs.contains("serving the CSI driver for provider: openbao (OpenBao defaults)"),
        "{logs}"
    );
    assert!(!logs.contains("DEBUG"), "--debug=false logs at info:\n{logs}");
    p.sigterm();
    let mut p = p;
    let status = p.child.wait().await.unwrap();
    assert!(status.success(), "{status}: {}", p.logs());
    // The ledger's state went to the socket directory, the writable host path.
    assert!(root.join("provider/openbao-csi-provider.state").is_file());
    assert_eq!(std::fs::read_dir(&readonly).unwrap().count(), 0);

    // csi.debug=true and csi.agent.enabled=false: --debug=true, and
    // VAULT_ADDR is the OpenBao service's URL.
    let env = [
        ("VAULT_ADDR", bed.world.bao.addr()),
        ("KUBECONFIG", kubeconfig.display().to_string()),
    ];
    let p = chart_provider(
        root,
        "provider-debug/openbao.sock",
        &env,
        "csi.debug=true",
        |endpoint, health| {
            vec![
                format!("--endpoint={}", endpoint.display()),
                "--debug=true".to_string(),
                "--hmac-secret-name=openbao-csi-provider-hmac-key".to_string(),
                format!("-health-addr=127.0.0.1:{health}"),
            ]
        },
    )
    .await;
    let r = p
        .mount(&params(objects, &[("baoRoleName", "bao-app")]), &pod)
        .await
        .expect("mount");
    assert_eq!(text(&r, "k"), "via-agent");
    assert!(
        p.logs().contains("DEBUG"),
        "--debug=true gives debug logs:\n{}",
        p.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bao_addr_unset_empty_or_set_against_vault_addr() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    openbao_role(&bed, "kubernetes", "bao-app").await;
    let pod = pod_with_tokens(&bed, "web-0", &["openbao"]).await;
    let objects = KV_OBJECT;
    let spc = params(objects, &[("baoRoleName", "bao-app")]);
    let bao = bed.world.bao.addr();
    let dead = "http://127.0.0.1:1";

    // Unset: VAULT_ADDR.
    let p = openbao_provider(&bed, "unset", &[], &[("VAULT_ADDR", &bao)]).await;
    assert_eq!(text(&p.mount(&spc, &pod).await.expect("VAULT_ADDR used"), "k"), "v");
    // Set: BAO_ADDR, whatever VAULT_ADDR says.
    let p = openbao_provider(&bed, "set", &[], &[("VAULT_ADDR", dead), ("BAO_ADDR", &bao)]).await;
    assert_eq!(text(&p.mount(&spc, &pod).await.expect("BAO_ADDR used"), "k"), "v");
    // Empty: BAO_ADDR still wins, and means the built-in default, not VAULT_ADDR.
    let p = openbao_provider(&bed, "empty", &[], &[("VAULT_ADDR", &bao), ("BAO_ADDR", "")]).await;
    // Nothing listens there: a short driver deadline, since a Vault that
    // refuses connections is waited out until the deadline.
    let req = vcp_testbed::driver::mount_request(Generation::V16, "spc", &spc, &pod, false, Vec::new());
    let e = p
        .client(Generation::V16)
        .await
        .unwrap()
        .mount(req, Duration::from_secs(4))
        .await
        .unwrap_err();
    assert_mentions(&e, &["login to OpenBao at https://127.0.0.1:8200"]);
    // A vault socket reads VAULT_ADDR only, as HashiCorp's provider.
    let p = bed.provider("vault", &[]).await;
    assert_eq!(
        p.client(Generation::V16)
            .await
            .unwrap()
            .version()
            .await
            .unwrap()
            .runtime_name,
        "vault-csi-provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_provider_serves_vault_and_openbao_sockets_from_the_openbao_component() {
    let bed = Bed::start().await;
    bed.kv(json!({"k": "shared"})).await;
    // The openbao socket's auth mount: kubernetes auth at bao-kubernetes,
    // where role `app` wants audience openbao. At `kubernetes`, role `app`
    // wants audience vault (the world's).
    bed.world.bao.enable_auth("bao-kubernetes", "kubernetes").await.unwrap();
    let reviewer = bed.kube.reviewer_token().await.unwrap();
    bed.world
        .bao
        .configure_kubernetes_auth("bao-kubernetes", &bed.kube.url(), &bed.kube.ca_pem(), &reviewer)
        .await
        .unwrap();
    openbao_role(&bed, "bao-kubernetes", "app").await;
    // BAO_ADDR points at a proxy in front of the same OpenBao, to see which
    // socket's requests go where.
    let proxy = Proxy::start(&bed.world.bao.addr(), Duration::ZERO).await;

    // The DaemonSet's arguments and env as the component renders them,
    // relocated (/provider under the scratch directory, addresses of the
    // test), plus what an operator adds for this cluster.
    let v = render("openbao", &["openbao"]);
    let (_, c) = provider_container(&v);
    let root = bed.dir.path();
    let provider_dir = root.join("provider");
    std::fs::create_dir_all(&provider_dir).unwrap();
    let mut args: Vec<String> = strings(&c["args"])
        .into_iter()
        .map(|a| a.replace("/provider/", &format!("{}/", provider_dir.display())))
        .map(|a| {
            if a.starts_with("-health-addr=") {
                "-health-addr=127.0.0.1:0".to_string()
            } else {
                a
            }
        })
        .collect();
    let kubeconfig = in_cluster_stand_in(&bed, "both").await;
    args.push(format!("-kubeconfig={}", kubeconfig.display()));
    args.push("-openbao-mount=bao-kubernetes".to_string());
    let rendered_env: BTreeMap<String, String> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        rendered_env.contains_key("BAO_ADDR") && rendered_env.contains_key("VAULT_ADDR"),
        "the component adds the openbao socket's address: {rendered_env:?}"
    );
    let (vault_addr, bao_addr) = (bed.world.bao.addr(), proxy.url());
    let vault_sock = provider_dir.join("vault.sock");
    let bao_sock = provider_dir.join("openbao.sock");
    let p = spawn_provider(
        &args,
        vault_sock.clone(),
        root.join("both.log"),
        &[("VAULT_ADDR", &vault_addr), ("BAO_ADDR", &bao_addr)],
        "provider starts with the component's arguments",
    )
    .await;
    // Both sockets, one process, each with its runtime name.
    for (sock, name) in [(&vault_sock, "vault-csi-provider"), (&bao_sock, "openbao-csi-provider")] {
        let client = DriverClient::connect(sock, Generation::V16).await.unwrap();
        assert_eq!(client.version().await.unwrap().runtime_name, name);
    }

    // One pod, kubelet tokens for both audiences, the same class on both
    // sockets: each socket picks its audience, auth mount and address.
    let pod = pod_with_tokens(&bed, "web-0", &["vault", "openbao"]).await;
    let objects = KV_OBJECT;
    let spc = params(objects, &[]);
    let from_vault = p.mount_at(&vault_sock, &spc, &pod).await.expect("provider: vault");
    assert_eq!(text(&from_vault, "k"), "shared");
    assert_eq!(proxy.forwarded("/v1/"), 0, "the vault socket uses VAULT_ADDR");
    let from_bao = p.mount_at(&bao_sock, &spc, &pod).await.expect("provider: openbao");
    assert_eq!(text(&from_bao, "k"), "shared");
    assert_eq!(
        proxy.forwarded("/v1/auth/bao-kubernetes/login"),
        1,
        "the openbao socket uses BAO_ADDR and -openbao-mount"
    );
    // One object-version key for both sockets: equal objects, equal versions.
    assert_eq!(versions(&from_vault)["k"], versions(&from_bao)["k"]);
    let key = |name: &'static str| bed.kube.secret(bed.provider_ns(), name);
    assert!(key(KEY_SECRET).await.unwrap().is_some());
    assert!(key("openbao-csi-provider-hmac-key").await.unwrap().is_none());

    // The token cache keeps the flavours apart. A class on the openbao
    // socket naming the vault socket's address and mount, for the same pod
    // and role, resolves to the same connection as the vault-socket mount
    // above, whose token is cached; but its JWT is the `openbao` one, which
    // role app at auth/kubernetes refuses. Reusing the cached token would
    // let it through.
    let same_connection = params(
        objects,
        &[("baoAddress", &vault_addr), ("baoKubernetesMountPath", "kubernetes")],
    );
    let e = p.mount_at(&bao_sock, &same_connection, &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert_mentions(&e, &["login to OpenBao at"]);
    // Naming the audience makes it the same login as the vault socket's.
    let mut named = same_connection.clone();
    named.insert("audience".into(), "vault".into());
    let r = p.mount_at(&bao_sock, &named, &pod).await.expect("audience vault named");
    assert_eq!(text(&r, "k"), "shared");

    let logs = p.logs();
    for line in [
        "serving the CSI driver for provider: vault (Vault defaults)",
        "serving the CSI driver for provider: openbao (OpenBao defaults)",
    ] {
        assert!(logs.contains(line), "{line}:\n{logs}");
    }
}

// ---------------------------------------------------------------- examples

/// One example as a user would apply it.
struct Example {
    /// `spec.provider`: `vault` or `openbao`.
    provider: String,
    /// The SecretProviderClass's `spec.parameters`.
    parameters: BTreeMap<String, String>,
    /// The pod's name and service account.
    pod_name: String,
    service_account: String,
    /// `pod.yaml`: the ServiceAccount and the Pod.
    manifests: Vec<Value>,
    /// `policy.hcl`.
    policy: String,
}

/// Loads `examples/<name>`, checking the SecretProviderClass field by field
/// (the schema validator has no CRD schemas) and that the pod mounts it.
fn example(name: &str) -> Example {
    let dir = Path::new(REPO).join("examples").join(name);
    let spc = yaml_docs(&std::fs::read_to_string(dir.join("secretproviderclass.yaml")).unwrap());
    assert_eq!(spc.len(), 1, "{name}: one SecretProviderClass");
    let spc = &spc[0];
    assert_eq!(spc["apiVersion"], "secrets-store.csi.x-k8s.io/v1", "{name}");
    assert_eq!(spc["kind"], "SecretProviderClass", "{name}");
    let spec = spc["spec"].as_object().unwrap();
    for key in spec.keys() {
        assert!(
            ["provider", "parameters", "secretObjects"].contains(&key.as_str()),
            "{name}: unknown SecretProviderClass field spec.{key}"
        );
    }
    let provider = spec["provider"].as_str().unwrap_or_default().to_string();
    assert!(
        provider == "vault" || provider == "openbao",
        "{name}: spec.provider {provider:?} is not served"
    );
    let mut parameters = BTreeMap::new();
    for (k, v) in spec["parameters"].as_object().unwrap() {
        let v = v
            .as_str()
            .unwrap_or_else(|| panic!("{name}: parameter {k} must be a string (quote it)"));
        parameters.insert(k.clone(), v.to_string());
    }
    let docs = yaml_docs(&std::fs::read_to_string(dir.join("pod.yaml")).unwrap());
    let pod = docs.iter().find(|d| d["kind"] == "Pod").expect("a Pod");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["csi"]["driver"] == "secrets-store.csi.k8s.io")
        .expect("a secrets-store CSI volume");
    assert_eq!(volume["csi"]["readOnly"], true, "{name}");
    let attrs = volume["csi"]["volumeAttributes"].as_object().unwrap();
    assert_eq!(
        attrs["secretProviderClass"], spc["metadata"]["name"],
        "{name}: pod mounts the SPC"
    );
    // The driver copies the volume attributes over the SPC parameters.
    for (k, v) in attrs {
        if k != "secretProviderClass" {
            parameters.insert(k.clone(), v.as_str().unwrap().to_string());
        }
    }
    let sa = pod["spec"]["serviceAccountName"].as_str().unwrap().to_string();
    assert!(
        docs.iter()
            .any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == sa.as_str()),
        "{name}: the pod's ServiceAccount is in the example"
    );
    Example {
        provider,
        parameters,
        pod_name: pod["metadata"]["name"].as_str().unwrap().to_string(),
        service_account: sa,
        manifests: docs.clone(),
        policy: std::fs::read_to_string(dir.join("policy.hcl")).unwrap(),
    }
}

impl Example {
    /// The parameters with the address (under whichever name the example
    /// writes it) pointed at the test's OpenBao.
    fn params_for(&self, bed: &Bed) -> BTreeMap<String, String> {
        let mut p = self.parameters.clone();
        let name = spc_names::ADDRESS
            .iter()
            .find(|n| p.contains_key(**n))
            .expect("examples show the address");
        p.insert(name.to_string(), bed.world.bao.addr());
        p
    }

    /// The role, under whichever name the example writes it.
    fn role_name(&self) -> &str {
        spc_names::ROLE
            .iter()
            .find_map(|n| self.parameters.get(*n))
            .expect("examples name a role")
    }

    /// Writes the example's policy and a kubernetes-auth role for its pod.
    async fn role(&self, bed: &Bed, audience: Option<&str>) {
        let role = self.role_name();
        bed.world.bao.put_policy(role, &self.policy).await.unwrap();
        bed.world
            .bao
            .kubernetes_role(role)
            .binding(&[&self.service_account], &[bed.ns()])
            .policies(&[role])
            .audience(audience)
            .write()
            .await
            .unwrap();
    }

    /// Applies `pod.yaml` to the API server as written, in the test's
    /// namespace (the examples name none, so they land in the user's
    /// current one), with the pod named `name` and scheduled to the
    /// provider's node; what kubelet tells the driver about it, no token yet.
    async fn pod_named(&self, bed: &Bed, name: &str) -> PodContext {
        let mut applied = Vec::new();
        for doc in &self.manifests {
            let mut doc = doc.clone();
            doc["metadata"]["namespace"] = json!(bed.ns());
            if doc["kind"] == "Pod" {
                doc["metadata"]["name"] = json!(name);
                doc["spec"]["nodeName"] = json!(bed.kube.node);
            }
            applied.push(doc);
        }
        bed.kube.apply(&applied).await.expect("the example's pod.yaml applies");
        let uid = bed
            .kube
            .pod_uid(bed.ns(), name)
            .await
            .unwrap()
            .expect("the example's pod");
        PodContext {
            name: name.to_string(),
            namespace: bed.ns().to_string(),
            uid,
            service_account: self.service_account.clone(),
            tokens: None,
        }
    }

    /// The example's pod with kubelet's token for `audience`.
    async fn pod_for(&self, bed: &Bed, audience: &str) -> PodContext {
        let mut pod = self.pod_named(bed, &self.pod_name).await;
        let ttl = Duration::from_secs(3600);
        let token = bed
            .kube
            .pod_token(bed.ns(), &self.pod_name, &[audience], ttl)
            .await
            .unwrap();
        pod.tokens = Some(PodContext::tokens_json(
            audience,
            &token,
            std::time::SystemTime::now() + ttl,
        ));
        pod
    }

    /// The example's pod with the token the reference CSIDriver's
    /// `tokenRequests` asks for (audience `vault`).
    async fn pod(&self, bed: &Bed) -> PodContext {
        self.pod_for(bed, "vault").await
    }
}

#[test]
fn every_example_directory_is_mounted_by_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(Path::new(REPO).join("examples"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut listed: Vec<String> = EXAMPLES.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(found, listed, "add a test below for each new example");
    for ex in EXAMPLES {
        example(ex);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_kv() {
    let bed = Bed::start().await;
    let ex = example("kv");
    ex.role(&bed, Some("vault")).await;
    bed.kv(json!({"password": "first", "api-key": "k1"})).await;
    bed.kv(json!({"password": "second", "api-key": "k2"})).await;
    let p = bed.provider("p", &[]).await;
    let r = p
        .mount(&ex.params_for(&bed), &ex.pod(&bed).await)
        .await
        .expect("kv example mounts");
    assert_eq!(text(&r, "db-password"), "second");
    assert_eq!(text(&r, "api/key"), "k2");
    assert_eq!(text(&r, "db-password.previous"), "first");
    let whole: Value = serde_json::from_str(&text(&r, "app.json")).unwrap();
    assert_eq!(whole["data"]["data"]["password"], "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_database() {
    let bed = Bed::start().await;
    let pg = bed.database("5m", "10m").await;
    let ex = example("database");
    ex.role(&bed, Some("vault")).await;
    let p = bed.provider("p", &[]).await;
    let r = p
        .mount(&ex.params_for(&bed), &ex.pod(&bed).await)
        .await
        .expect("database example mounts");
    let (user, pass) = (text(&r, "db-username"), text(&r, "db-password"));
    assert!(pg.can_login(&user, &pass).await.unwrap(), "the credentials log in");
    assert_eq!(bed.world.bao.leases("database/creds/app").await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_pki() {
    let bed = Bed::start().await;
    let ex = example("pki");
    ex.role(&bed, Some("vault")).await;
    let ca = bed.world.bao.setup_pki("pki", "web", "24h").await.unwrap();
    let p = bed.provider("p", &[]).await;
    let r = p
        .mount(&ex.params_for(&bed), &ex.pod(&bed).await)
        .await
        .expect("pki example mounts");
    let cert = text(&r, "tls.crt");
    assert_eq!(
        openssl(&["x509", "-noout", "-pubkey"], cert.as_bytes()),
        openssl(&["pkey", "-pubout"], text(&r, "tls.key").as_bytes()),
        "key and certificate come from one issue"
    );
    assert!(openssl(&["x509", "-noout", "-subject"], cert.as_bytes()).contains("web.default.svc"));
    assert_eq!(text(&r, "ca.crt").trim(), ca.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_jwt_auth() {
    let bed = Bed::start().await;
    let ex = example("jwt-auth");
    assert_eq!(ex.parameters["vaultAuthMountPath"], "jwt");
    let role = ex.parameters["roleName"].clone();
    bed.world.bao.put_policy(&role, &ex.policy).await.unwrap();
    bed.world.bao.enable_auth("jwt", "jwt").await.unwrap();
    bed.world
        .bao
        .configure_jwt_auth("jwt", &bed.kube.jwt_public_key_pem())
        .await
        .unwrap();
    let subject = format!("system:serviceaccount:{}:{}", bed.ns(), ex.service_account);
    bed.world
        .bao
        .jwt_role("jwt", &role, "vault", &subject, &[&role], "1h")
        .await
        .unwrap();
    bed.kv(json!({"password": "jwt"})).await;
    let p = bed.provider("p", &[]).await;
    let r = p
        .mount(&ex.params_for(&bed), &ex.pod(&bed).await)
        .await
        .expect("jwt example mounts");
    assert_eq!(text(&r, "db-password"), "jwt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_custom_audience() {
    let bed = Bed::start().await;
    let ex = example("custom-audience");
    let audience = ex.parameters["audience"].clone();
    ex.role(&bed, Some(&audience)).await;
    bed.kv(json!({"password": "aud"})).await;
    let p = bed.provider("p", &[]).await;
    // Kubelet minted the audience (CSIDriver tokenRequests lists it) ...
    let pod = ex.pod_for(&bed, &audience).await;
    let r = p
        .mount(&ex.params_for(&bed), &pod)
        .await
        .expect("custom-audience example mounts");
    assert_eq!(text(&r, "db-password"), "aud");
    // ... or the provider requests it (token-request component).
    let bare = ex.pod_named(&bed, &format!("{}-2", ex.pod_name)).await;
    let r = p
        .mount(&ex.params_for(&bed), &bare)
        .await
        .expect("mount via TokenRequest");
    assert_eq!(text(&r, "db-password"), "aud");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_sync() {
    let bed = Bed::start().await;
    let ex = example("sync");
    ex.role(&bed, Some("vault")).await;
    bed.kv(json!({"username": "app", "password": "synced"})).await;
    // The example's RoleBinding binds the secret-sync component's ClusterRole
    // for the provider (in `csi`) in the pod's namespace (`default`): apply
    // it, placed in the test's namespaces.
    let binding =
        yaml_docs(&std::fs::read_to_string(Path::new(REPO).join("examples/sync/rolebinding.yaml")).unwrap()).remove(0);
    assert_eq!(binding["roleRef"]["name"], "vault-csi-provider-secret-sync");
    assert_eq!(binding["subjects"][0]["name"], PROVIDER_SA);
    assert_eq!(binding["subjects"][0]["namespace"], "csi", "deploy/base's namespace");
    assert_eq!(binding["metadata"]["namespace"], "default", "the pod's");
    let p = bed.provider("p", &[]).await;
    let pod = ex.pod(&bed).await;
    // Without the binding the mount fails and says so.
    let e = p.mount(&ex.params_for(&bed), &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    let binding = vcp_testbed::kubernetes::cluster::sync_binding(binding, bed.provider_ns(), bed.ns()).unwrap();
    bed.kube.apply(&[binding]).await.unwrap();
    let r = p.mount(&ex.params_for(&bed), &pod).await.expect("sync example mounts");
    assert_eq!(text(&r, "password"), "synced");
    let secret = bed.secret("app-credentials").await;
    assert_eq!(secret["type"], "kubernetes.io/basic-auth");
    assert_eq!(secret["data"]["password"], "c3luY2Vk", "base64 of the Vault value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_openbao_kv() {
    let bed = Bed::start().await;
    let ex = example("openbao-kv");
    assert_eq!(ex.provider, "openbao");
    assert!(!ex.parameters.contains_key("audience"), "the socket's default audience");
    ex.role(&bed, Some("openbao")).await;
    bed.kv(json!({"password": "from-openbao", "mode": "prod"})).await;
    let p = openbao_provider(&bed, "p", &[], &[]).await;
    // Kubelet hands over the token for audience openbao (tokenRequests).
    let pod = ex.pod_for(&bed, "openbao").await;
    let r = p
        .mount(&ex.params_for(&bed), &pod)
        .await
        .expect("openbao-kv example mounts");
    assert_eq!(text(&r, "db-password"), "from-openbao");
    let config: Value = serde_json::from_str(&text(&r, "config/app.json")).unwrap();
    assert_eq!(config["mode"], "prod");
}

/// The committed example pins classes to the operator's Vault: a class
/// naming another address (or plain http, a unix socket, skipped TLS
/// verification) is refused while its request is parsed, before any
/// connection is made; one naming none mounts from the operator's Vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_install_pins_classes_to_the_operators_vault() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let example = variants().into_iter().find(|v| v.name == "deploy/example").unwrap();
    let (_, c) = provider_container(&example);
    let root = bed.dir.path();
    let provider_dir = root.join("provider");
    std::fs::create_dir_all(&provider_dir).unwrap();
    // Where the vault-ca ConfigMap is mounted.
    let ca_dir = root.join("vault-tls");
    std::fs::create_dir_all(&ca_dir).unwrap();
    // The rendered arguments, relocated, with the test's OpenBao in place of
    // the example's https://vault.example.com:8200 (TLS aside, the same pin).
    let operators = bed.world.bao.addr();
    let mut args: Vec<String> = strings(&c["args"])
        .into_iter()
        .map(|a| a.replace("/provider/", &format!("{}/", provider_dir.display())))
        .map(|a| a.replace("=/vault/tls", &format!("={}", ca_dir.display())))
        .map(|a| a.replace("https://vault.example.com:8200", &operators))
        .map(|a| {
            if a.starts_with("-health-addr=") {
                "-health-addr=127.0.0.1:0".to_string()
            } else {
                a
            }
        })
        .collect();
    for pinned in [
        "-spc-allow-http=false",
        "-spc-allow-unix=false",
        "-spc-allow-skip-tls-verify=false",
        "-spc-allowed-audiences=vault",
        "-spc-allowed-tls-server-names=vault.example.com",
    ] {
        assert!(
            args.contains(&pinned.to_string()),
            "the example sets {pinned}: {args:?}"
        );
    }
    assert!(
        args.contains(&format!("-spc-allowed-vault-addrs={operators}")),
        "the example lists only its own Vault: {args:?}"
    );
    args.push(format!(
        "-kubeconfig={}",
        in_cluster_stand_in(&bed, "example").await.display()
    ));
    args.push(format!("-hmac-secret-namespace={}", bed.provider_ns()));
    let socket = provider_dir.join("vault.sock");
    let p = spawn_provider(
        &args,
        socket,
        root.join("example.log"),
        &[("VAULT_ADDR", &operators)],
        "provider starts with the example's arguments",
    )
    .await;

    // Another server that counts every connection made to it.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = format!("https://{}", elsewhere.local_addr().unwrap());
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = elsewhere.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let pod = bed.pod("web-0").await;
    let sock = root.join("agent.sock");
    let http_other = other.replace("https://", "http://");
    let unix = format!("unix://{}", sock.display());
    for (what, extra, needle) in [
        (
            "another https address",
            vec![("vaultAddress", other.as_str())],
            "-spc-allowed-vault-addrs",
        ),
        (
            "another plain-http address",
            vec![("vaultAddress", http_other.as_str())],
            "-spc-allow-http=false",
        ),
        (
            "a unix socket on the node",
            vec![("vaultAddress", unix.as_str())],
            "-spc-allow-unix=false",
        ),
        (
            "an unverified connection to the operator's Vault",
            vec![("vaultSkipTLSVerify", "true")],
            "-spc-allow-skip-tls-verify=false",
        ),
        (
            "another TLS server name",
            vec![("vaultTLSServerName", "vault.elsewhere.example")],
            "-spc-allowed-tls-server-names",
        ),
        (
            "another audience",
            vec![("audience", "elsewhere")],
            "-spc-allowed-audiences",
        ),
        (
            "a CA file outside the operator's directory",
            vec![("vaultCACertPath", "/etc/hostname")],
            "-spc-file-dirs",
        ),
    ] {
        let e = p.mount(&params(KV_OBJECT, &extra), &pod).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {}", e.message());
        assert!(e.message().contains(needle), "{what}: {}", e.message());
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was sent to the address a class named"
    );
    let r = p
        .mount(&params(KV_OBJECT, &[]), &pod)
        .await
        .expect("a class naming no address mounts from the operator's Vault");
    assert_eq!(text(&r, "k"), "v");
    let named = p
        .mount(&params(KV_OBJECT, &[("vaultAddress", operators.as_str())]), &pod)
        .await
        .expect("a class naming the operator's own address mounts too");
    assert_eq!(text(&named, "k"), "v");
    assert!(
        !p.logs().contains("the tenant policy is open"),
        "the example closes every switch: {}",
        p.logs()
    );
    // The base's defaults (the incumbent's) leave them open, and say so once.
    let open = bed.provider("open", &[]).await;
    let warned: Vec<String> = open
        .logs()
        .lines()
        .filter(|l| l.contains("the tenant policy is open"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warned.len(), 1, "{}", open.logs());
    for flag in [
        "-spc-allowed-vault-addrs",
        "-spc-allow-http=true",
        "-spc-allow-unix=true",
        "-spc-allow-skip-tls-verify=true",
        "-spc-file-dirs",
        "-spc-allowed-audiences",
        "-spc-allowed-tls-server-names",
    ] {
        assert!(warned[0].contains(flag), "{flag}: {}", warned[0]);
    }
}
