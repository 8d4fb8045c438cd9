//! The RBAC each variant renders, checked rule by rule against what its
//! features need, then applied to the real API server, which enforces it
//! while the provider mounts.

use std::collections::{BTreeMap, BTreeSet};

use super::{of_kind, provider_container, render, strings, variants, Variant, COMPONENTS};
use crate::support::*;
use serde_json::Value;
use tonic::Code;

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
