//! RBAC as kube-apiserver's authorizer evaluates it, from the Role,
//! ClusterRole, RoleBinding and ClusterRoleBinding objects in the store
//! (the ones `kubectl kustomize deploy/…` renders, applied by the test bed),
//! plus the bootstrap policy the real server creates at start and its
//! `system:masters` superuser group. Not modelled: the Node authorizer (no
//! kubelet runs), ClusterRole aggregation (no controller-manager runs in
//! envtest either, so aggregated roles stay empty there too), and the
//! escalation check on writing roles (only the admin writes them here).

use serde_json::{json, Value};

use super::store::{Key, Store};
use super::tokens::User;

/// What a request asks to do.
#[derive(Debug, Clone)]
pub enum Target<'a> {
    /// A resource request.
    Resource {
        /// API group.
        group: &'a str,
        /// The plural.
        resource: &'a str,
        /// A subresource (`token`, `status`).
        subresource: Option<&'a str>,
        /// The namespace (`None`: cluster scope or all namespaces).
        namespace: Option<&'a str>,
        /// The object's name (for lists and watches, the one their field
        /// selector requires `metadata.name` to be).
        name: Option<&'a str>,
    },
    /// A non-resource URL.
    Path(&'a str),
}

const RBAC: &str = "rbac.authorization.k8s.io";

/// Whether `user` may `verb` `target`.
pub fn allowed(store: &Store, user: &User, verb: &str, target: &Target) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    let cluster_roles = (RBAC, "clusterroles");
    let rules_of = |kind: &str, ns: &str, name: &str| -> Vec<Value> {
        let key: Key = if kind == "ClusterRole" {
            (cluster_roles, String::new(), name.to_string())
        } else {
            ((RBAC, "roles"), ns.to_string(), name.to_string())
        };
        store
            .get(&key)
            .and_then(|r| r["rules"].as_array().cloned())
            .unwrap_or_default()
    };
    let grants = |binding: &Value, binding_ns: &str| -> bool {
        if !binds(binding, binding_ns, user) {
            return false;
        }
        let kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        rules_of(kind, binding_ns, name)
            .iter()
            .any(|rule| matches(rule, verb, target))
    };
    for (_, binding) in store.list((RBAC, "clusterrolebindings"), None) {
        if grants(&binding, "") {
            return true;
        }
    }
    if let Target::Resource {
        namespace: Some(ns), ..
    } = target
    {
        for (_, binding) in store.list((RBAC, "rolebindings"), Some(ns)) {
            if grants(&binding, ns) {
                return true;
            }
        }
    }
    false
}

/// Whether one of `binding`'s subjects is `user`. A ServiceAccount subject
/// without a namespace means the binding's own.
fn binds(binding: &Value, binding_ns: &str, user: &User) -> bool {
    binding["subjects"].as_array().into_iter().flatten().any(|s| {
        let name = s["name"].as_str().unwrap_or_default();
        match s["kind"].as_str().unwrap_or_default() {
            "User" => user.name == name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                let ns = s["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
                user.name == format!("system:serviceaccount:{ns}:{name}")
            }
            _ => false,
        }
    })
}

fn has(list: &Value, item: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|x| x == item)
}

/// One rule against a request, as RBAC's `RuleAllows`.
fn matches(rule: &Value, verb: &str, target: &Target) -> bool {
    if !(has(&rule["verbs"], verb) || has(&rule["verbs"], "*")) {
        return false;
    }
    match target {
        Target::Path(path) => rule["nonResourceURLs"].as_array().into_iter().flatten().any(|u| {
            let u = u.as_str().unwrap_or_default();
            u == "*" || u == *path || u.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
        }),
        Target::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            if !(has(&rule["apiGroups"], group) || has(&rule["apiGroups"], "*")) {
                return false;
            }
            let combined = match subresource {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_string(),
            };
            let resource_ok = rule["resources"].as_array().into_iter().flatten().any(|r| {
                let r = r.as_str().unwrap_or_default();
                r == "*" || r == combined || subresource.is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
            });
            let names = rule["resourceNames"].as_array().filter(|n| !n.is_empty());
            let name_ok = match names {
                None => true,
                Some(names) => name.is_some_and(|n| names.iter().any(|x| x.as_str() == Some(n))),
            };
            resource_ok && name_ok
        }
    }
}

fn bootstrap_meta(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
    })
}

/// The bootstrap ClusterRoles and ClusterRoleBindings the real server
/// creates (the ones a request here can meet), as (plural, object).
pub fn bootstrap() -> Vec<(&'static str, Value)> {
    let role = |name: &str, rules: Value| {
        (
            "clusterroles",
            json!({"metadata": bootstrap_meta(name), "rules": rules}),
        )
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": RBAC, "kind": "Group", "name": g}))
            .collect();
        (
            "clusterrolebindings",
            json!({
                "metadata": bootstrap_meta(name),
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
                "subjects": subjects,
            }),
        )
    };
    vec![
        role(
            "cluster-admin",
            json!([
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ]),
        ),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": [
                "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*",
                "/readyz", "/version", "/version/",
            ], "verbs": ["get"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!([
                {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
            ]),
        ),
        role(
            "system:auth-delegator",
            json!([
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            ]),
        ),
        role(
            "system:service-account-issuer-discovery",
            json!([{"nonResourceURLs": [
                "/.well-known/openid-configuration", "/.well-known/openid-configuration/",
                "/openid/v1/jwks", "/openid/v1/jwks/",
            ], "verbs": ["get"]}]),
        ),
        binding("cluster-admin", &["system:masters"]),
        binding("system:discovery", &["system:authenticated"]),
        binding(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
        binding("system:basic-user", &["system:authenticated"]),
        binding("system:service-account-issuer-discovery", &["system:serviceaccounts"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(objects: &[(&'static str, &str, Value)]) -> Store {
        let mut s = Store::default();
        for (plural, ns, o) in objects {
            let name = o["metadata"]["name"].as_str().unwrap().to_string();
            s.put(((RBAC, plural), ns.to_string(), name), o.clone());
        }
        s
    }

    fn secret<'a>(verb: &'a str, ns: &'a str, name: Option<&'a str>) -> (&'a str, Target<'a>) {
        (
            verb,
            Target::Resource {
                group: "",
                resource: "secrets",
                subresource: None,
                namespace: Some(ns),
                name,
            },
        )
    }

    #[test]
    fn resource_names_allow_only_requests_that_name_the_object() {
        let s = store_with(&[
            (
                "roles",
                "csi",
                json!({"metadata": {"name": "key"}, "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["k"], "verbs": ["get", "list", "watch"]},
                ]}),
            ),
            (
                "rolebindings",
                "csi",
                json!({"metadata": {"name": "key"}, "roleRef": {"kind": "Role", "name": "key"},
                    "subjects": [{"kind": "ServiceAccount", "name": "p"}]}),
            ),
        ]);
        let p = User::service_account("csi", "p");
        let can = |(verb, target): (&str, Target)| allowed(&s, &p, verb, &target);
        assert!(can(secret("get", "csi", Some("k"))));
        assert!(can(secret("watch", "csi", Some("k"))));
        assert!(!can(secret("list", "csi", None)), "a list naming nothing");
        assert!(!can(secret("get", "csi", Some("other"))));
        assert!(!can(secret("get", "default", Some("k"))), "another namespace");
        let other = User::service_account("default", "p");
        assert!(!allowed(&s, &other, "get", &secret("get", "csi", Some("k")).1));
    }

    #[test]
    fn the_bootstrap_policy_lets_service_accounts_discover_the_issuer_but_not_anonymous() {
        let mut s = Store::default();
        for (plural, o) in bootstrap() {
            let name = o["metadata"]["name"].as_str().unwrap().to_string();
            s.put(((RBAC, plural), String::new(), name), o);
        }
        let jwks = Target::Path("/openid/v1/jwks");
        assert!(allowed(&s, &User::service_account("a", "b"), "get", &jwks));
        assert!(!allowed(&s, &User::anonymous(), "get", &jwks));
        assert!(allowed(&s, &User::anonymous(), "get", &Target::Path("/readyz")));
        let review = Target::Resource {
            group: "authentication.k8s.io",
            resource: "tokenreviews",
            subresource: None,
            namespace: None,
            name: None,
        };
        assert!(!allowed(&s, &User::service_account("a", "b"), "create", &review));
    }
}
