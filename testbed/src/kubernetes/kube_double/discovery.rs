//! Discovery, as kubectl reads it to map kinds and names to resources: the
//! legacy documents (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`)
//! built from the resource table, and `/version`. Aggregated discovery
//! (`apidiscovery.k8s.io/v2`) is not served; clients fall back to these.

use serde_json::{json, Value};

use super::resources::{self, Resource, RESOURCES};

/// The Kubernetes version the double answers as.
pub const VERSION: (&str, &str) = ("1", "33");

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": VERSION.0,
        "minor": VERSION.1,
        "gitVersion": format!("v{}.{}.0-vcp-double", VERSION.0, VERSION.1),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_resource(r: &Resource) -> Value {
    let mut v = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    v
}

fn resource_list(group: &str, version: &str, served: &impl Fn(&Resource) -> bool) -> Option<Value> {
    let mut list: Vec<Value> = Vec::new();
    for r in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version && served(r))
    {
        list.push(api_resource(r));
        if r.plural == "serviceaccounts" {
            list.push(
                json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true,
                "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}),
            );
        }
        if matches!(r.plural, "pods" | "namespaces") {
            list.push(
                json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                "kind": r.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
    }
    if list.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}))
}

fn api_group(group: &str) -> Value {
    let version = RESOURCES
        .iter()
        .find(|r| r.group == group)
        .map(|r| r.version)
        .unwrap_or("v1");
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv], "preferredVersion": gv})
}

/// The discovery document at `path`, if it is one; `served` says which
/// resources are served now (custom ones only once their definition exists).
pub fn document(path: &str, issuer: &str, served: impl Fn(&Resource) -> bool) -> Option<Value> {
    let groups: Vec<&str> = resources::groups()
        .into_iter()
        .filter(|g| RESOURCES.iter().any(|r| r.group == *g && served(r)))
        .collect();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["api"] => {
            let address = issuer.trim_start_matches("https://");
            Some(json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
            }))
        }
        ["api", version] => resource_list("", version, &served),
        ["apis"] => {
            let groups: Vec<Value> = groups.iter().filter(|g| !g.is_empty()).map(|g| api_group(g)).collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", group] if groups.contains(group) => {
            let mut g = api_group(group);
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Some(g)
        }
        ["apis", group, version] => resource_list(group, version, &served),
        _ => None,
    }
}
