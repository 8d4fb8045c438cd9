//! What kube-apiserver checks and fills in on a write, for the kinds the
//! double serves: name rules per kind, labels and annotations, Secrets'
//! data, types and immutability, pods' containers and the ServiceAccount
//! admission plugin, RBAC role references, and the defaults the provider or
//! a test could see (a Secret's type, a namespace's name label and phase, a
//! pod's phase).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::resources::Resource;
use super::status::{Cause, Status};

const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";
/// A Secret's or ConfigMap's data may hold at most this many bytes.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
        && b.iter().all(|c| is_alnum(*c) || matches!(c, b'-' | b'_' | b'.'))
}

/// Problems with a qualified name (`prefix/name` or `name`).
fn qualified_name_problems(field: &str, key: &str) -> Vec<Cause> {
    let value = json!(key);
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut causes = Vec::new();
    if let Some(p) = prefix {
        if !is_subdomain(p) {
            causes.push(Cause::invalid(
                field,
                &value,
                &format!("prefix part {DNS1123_SUBDOMAIN}"),
            ));
        }
    }
    if !is_name_part(name) {
        let detail = if name.len() > 63 {
            "name part must be no more than 63 characters".to_string()
        } else {
            QUALIFIED_NAME.to_string()
        };
        causes.push(Cause::invalid(field, &value, &detail));
    }
    causes
}

/// The name rule of a kind: (checker, message).
fn name_rule(r: &Resource) -> (fn(&str) -> bool, &'static str, usize) {
    match r.plural {
        "namespaces" => (is_label, DNS1123_LABEL, 63),
        "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings" => (
            |s: &str| s != "." && s != ".." && !s.contains(['/', '%']),
            "",
            usize::MAX,
        ),
        _ => (is_subdomain, DNS1123_SUBDOMAIN, 253),
    }
}

fn name_problems(r: &Resource, name: &str) -> Vec<Cause> {
    let (ok, message, max) = name_rule(r);
    let value = json!(name);
    if name.len() > max {
        return vec![Cause::invalid(
            "metadata.name",
            &value,
            &format!("must be no more than {max} characters"),
        )];
    }
    if ok(name) {
        return Vec::new();
    }
    let detail = if message.is_empty() {
        if name == "." || name == ".." {
            format!("may not be '{name}'")
        } else {
            "may not contain '/' or '%'".to_string()
        }
    } else {
        message.to_string()
    };
    vec![Cause::invalid("metadata.name", &value, &detail)]
}

/// Whether `name` is a valid object name of `r` (for names taken from a
/// path, which the server checks the same way).
pub fn valid_name(r: &Resource, name: &str) -> bool {
    name_problems(r, name).is_empty()
}

fn string_map<'a>(v: &'a Value, field: &str) -> Result<Option<&'a Map<String, Value>>, Status> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => {
            if let Some((k, bad)) = m.iter().find(|(_, v)| !v.is_string()) {
                return Err(Status::bad_request(format!(
                    "json: cannot unmarshal {} into Go struct field {field} of type string (key {k:?})",
                    json_type(bad)
                )));
            }
            Ok(Some(m))
        }
        other => Err(Status::bad_request(format!(
            "json: cannot unmarshal {} into Go struct field {field} of type map[string]string",
            json_type(other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Metadata checks every kind shares.
fn metadata_problems(meta: &Value) -> Result<Vec<Cause>, Status> {
    let mut causes = Vec::new();
    if let Some(labels) = string_map(&meta["labels"], "ObjectMeta.metadata.labels")? {
        for (k, v) in labels {
            causes.extend(qualified_name_problems("metadata.labels", k));
            let v = v.as_str().unwrap_or_default();
            if !(v.is_empty() || is_name_part(v)) {
                let detail = if v.len() > 63 {
                    "must be no more than 63 characters"
                } else {
                    LABEL_VALUE
                };
                causes.push(Cause::invalid("metadata.labels", &json!(v), detail));
            }
        }
    }
    if let Some(annotations) = string_map(&meta["annotations"], "ObjectMeta.metadata.annotations")? {
        let mut total = 0;
        for (k, v) in annotations {
            causes.extend(
                qualified_name_problems("metadata.annotations", k)
                    .into_iter()
                    .map(|c| Cause {
                        field: "metadata.annotations".into(),
                        ..c
                    }),
            );
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > MAX_ANNOTATION_BYTES {
            causes.push(Cause::too_long(
                "metadata.annotations",
                &format!("must have at most {MAX_ANNOTATION_BYTES} bytes"),
            ));
        }
    }
    for (i, o) in meta["ownerReferences"].as_array().into_iter().flatten().enumerate() {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if o[field].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("metadata.ownerReferences[{i}].{field}"), ""));
            }
        }
    }
    Ok(causes)
}

/// Checks a Secret's `data` (after `stringData` was merged in) and type.
fn secret_problems(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut total = 0;
    let data = object["data"].as_object();
    for (k, v) in data.into_iter().flatten() {
        if k.is_empty() || k.len() > 253 || !k.bytes().all(|c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.')) {
            causes.push(Cause::invalid(format!("data[{k}]"), &json!(k), CONFIG_KEY));
        }
        total += v.as_str().and_then(|s| STANDARD.decode(s).ok()).map_or(0, |b| b.len());
    }
    if total > MAX_DATA_BYTES {
        causes.push(Cause::too_long(
            "data",
            &format!("may not be more than {MAX_DATA_BYTES} bytes"),
        ));
    }
    let has = |key: &str| data.is_some_and(|d| d.contains_key(key));
    let json_key = |key: &str, causes: &mut Vec<Cause>| match data.and_then(|d| d.get(key)) {
        None => causes.push(Cause::required(format!("data[{key}]"), "")),
        Some(v) => {
            let bytes = v.as_str().and_then(|s| STANDARD.decode(s).ok()).unwrap_or_default();
            if serde_json::from_slice::<Value>(&bytes).is_err() {
                causes.push(Cause::invalid(
                    format!("data[{key}]"),
                    &json!("<secret contents redacted>"),
                    "must be valid JSON",
                ));
            }
        }
    };
    match object["type"].as_str().unwrap_or("Opaque") {
        "kubernetes.io/tls" => {
            for key in ["tls.key", "tls.crt"] {
                if !has(key) {
                    causes.push(Cause::required(format!("data[{key}]"), ""));
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            causes.push(Cause::required("data[username]", ""));
            causes.push(Cause::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if !has("ssh-privatekey") => {
            causes.push(Cause::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/dockerconfigjson" => json_key(".dockerconfigjson", &mut causes),
        "kubernetes.io/dockercfg" => json_key(".dockercfg", &mut causes),
        "kubernetes.io/service-account-token"
            if object["metadata"]["annotations"]["kubernetes.io/service-account.name"]
                .as_str()
                .is_none_or(str::is_empty) =>
        {
            causes.push(Cause::required(
                "metadata.annotations[kubernetes.io/service-account.name]",
                "",
            ));
        }
        _ => {}
    }
    causes
}

/// Decodes a Secret as the server does: `data` values must be base64,
/// `stringData` is merged into `data` and dropped, the type defaults to
/// `Opaque`.
fn decode_secret(object: &mut Value) -> Result<(), Status> {
    let undecodable = |detail: String| {
        Status::bad_request(format!(
            "Secret in version \"v1\" cannot be handled as a Secret: {detail}"
        ))
    };
    if let Some(data) = string_map(&object["data"], "Secret.data").map_err(|s| undecodable(s.message))? {
        for v in data.values() {
            let s = v.as_str().unwrap_or_default();
            if let Err(e) = STANDARD.decode(s) {
                let at = match e {
                    base64::DecodeError::InvalidByte(o, _) | base64::DecodeError::InvalidLastSymbol(o, _) => o,
                    base64::DecodeError::InvalidLength(l) => l,
                    base64::DecodeError::InvalidPadding => s.len(),
                };
                return Err(undecodable(format!("illegal base64 data at input byte {at}")));
            }
        }
    }
    let string_data = object
        .as_object_mut()
        .and_then(|o| o.remove("stringData"))
        .unwrap_or(Value::Null);
    if let Some(sd) = string_map(&string_data, "Secret.stringData").map_err(|s| undecodable(s.message))? {
        if !object["data"].is_object() {
            object["data"] = json!({});
        }
        for (k, v) in sd {
            object["data"][k] = json!(STANDARD.encode(v.as_str().unwrap_or_default()));
        }
    }
    if object["type"].as_str().is_none_or(str::is_empty) {
        object["type"] = json!("Opaque");
    }
    Ok(())
}

fn pod_problems(object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let containers = object["spec"]["containers"].as_array();
    if containers.is_none_or(|c| c.is_empty()) {
        causes.push(Cause::required("spec.containers", ""));
    }
    for (i, c) in containers.into_iter().flatten().enumerate() {
        let name = c["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::required(format!("spec.containers[{i}].name"), ""));
        } else if !is_label(name) {
            causes.push(Cause::invalid(
                format!("spec.containers[{i}].name"),
                &json!(name),
                DNS1123_LABEL,
            ));
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            causes.push(Cause::required(format!("spec.containers[{i}].image"), ""));
        }
    }
    causes
}

fn rbac_problems(r: &Resource, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    match r.plural {
        "roles" | "clusterroles" => {
            for (i, rule) in object["rules"].as_array().into_iter().flatten().enumerate() {
                if rule["verbs"].as_array().is_none_or(|v| v.is_empty()) {
                    causes.push(Cause::required(
                        format!("rules[{i}].verbs"),
                        "verbs must contain at least one value",
                    ));
                }
                let urls = rule["nonResourceURLs"].as_array().is_some_and(|u| !u.is_empty());
                let resources = rule["resources"].as_array().is_some_and(|u| !u.is_empty());
                if urls && r.plural == "roles" {
                    causes.push(Cause::invalid(
                        format!("rules[{i}].nonResourceURLs"),
                        &rule["nonResourceURLs"],
                        "namespaced rules cannot apply to non-resource URLs",
                    ));
                }
                if urls && resources {
                    causes.push(Cause::invalid(
                        format!("rules[{i}].nonResourceURLs"),
                        &rule["nonResourceURLs"],
                        "rules cannot apply to both regular resources and non-resource URLs",
                    ));
                }
                if !urls && rule["apiGroups"].as_array().is_none_or(|g| g.is_empty()) {
                    causes.push(Cause::required(
                        format!("rules[{i}].apiGroups"),
                        "resource rules must supply at least one api group",
                    ));
                }
                if !urls && !resources {
                    causes.push(Cause::required(
                        format!("rules[{i}].resources"),
                        "resource rules must supply at least one resource",
                    ));
                }
            }
        }
        _ => {
            let kind = object["roleRef"]["kind"].as_str().unwrap_or_default();
            let allowed: &[&str] = if r.plural == "rolebindings" {
                &["Role", "ClusterRole"]
            } else {
                &["ClusterRole"]
            };
            if !allowed.contains(&kind) {
                causes.push(Cause::unsupported("roleRef.kind", &json!(kind), allowed));
            }
            if object["roleRef"]["name"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required("roleRef.name", ""));
            }
            for (i, s) in object["subjects"].as_array().into_iter().flatten().enumerate() {
                let kind = s["kind"].as_str().unwrap_or_default();
                if s["name"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(format!("subjects[{i}].name"), ""));
                }
                match kind {
                    "ServiceAccount" => {
                        if r.plural == "clusterrolebindings" && s["namespace"].as_str().is_none_or(str::is_empty) {
                            causes.push(Cause::required(format!("subjects[{i}].namespace"), ""));
                        }
                    }
                    "User" | "Group" => {}
                    other => causes.push(Cause::unsupported(
                        format!("subjects[{i}].kind"),
                        &json!(other),
                        &["ServiceAccount", "User", "Group"],
                    )),
                }
            }
        }
    }
    causes
}

fn fail(r: &Resource, object: &Value, causes: Vec<Cause>) -> Result<(), Status> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    Err(Status::invalid(&r.qualified_kind(), name, causes))
}

/// Decodes and checks `object` as a new object of `r`, filling in the
/// server's defaults.
pub fn create(r: &Resource, object: &mut Value) -> Result<(), Status> {
    decode(r, object)?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut causes = if name.is_empty() {
        vec![Cause::required("metadata.name", "name or generateName is required")]
    } else {
        name_problems(r, &name)
    };
    causes.extend(metadata_problems(&object["metadata"])?);
    causes.extend(kind_problems(r, object));
    fail(r, object, causes)?;
    default(r, object);
    Ok(())
}

/// Decodes and checks `new` as the next state of `old` (both of `r`).
pub fn update(r: &Resource, old: &Value, new: &mut Value) -> Result<(), Status> {
    decode(r, new)?;
    let mut causes = metadata_problems(&new["metadata"])?;
    causes.extend(kind_problems(r, new));
    match r.plural {
        "secrets" | "configmaps" => {
            if old["immutable"] == json!(true) {
                if old["data"] != new["data"] || old["binaryData"] != new["binaryData"] {
                    causes.push(Cause::forbidden("data", IMMUTABLE_SET));
                }
                if new["immutable"] != json!(true) {
                    causes.push(Cause::forbidden("immutable", IMMUTABLE_SET));
                }
            }
            if r.plural == "secrets" && old["type"] != new["type"] {
                causes.push(Cause::invalid("type", &new["type"], "field is immutable"));
            }
        }
        "pods" => {
            let strip_images = |spec: &Value| {
                let mut spec = spec.clone();
                for list in ["containers", "initContainers"] {
                    for c in spec[list].as_array_mut().into_iter().flatten() {
                        c["image"] = Value::Null;
                    }
                }
                spec
            };
            let (mut before, mut after) = (strip_images(&old["spec"]), strip_images(&new["spec"]));
            for spec in [&mut before, &mut after] {
                if let Some(s) = spec.as_object_mut() {
                    s.remove("activeDeadlineSeconds");
                    s.remove("tolerations");
                }
            }
            if before != after {
                causes.push(Cause::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        "rolebindings" | "clusterrolebindings" if old["roleRef"] != new["roleRef"] => {
            causes.push(Cause::invalid("roleRef", &new["roleRef"], "cannot change roleRef"));
        }
        _ => {}
    }
    fail(r, new, causes)?;
    default(r, new);
    // What only the server writes stays as it was.
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if r.plural == "pods" || r.plural == "namespaces" {
        new["status"] = old["status"].clone();
    }
    Ok(())
}

fn decode(r: &Resource, object: &mut Value) -> Result<(), Status> {
    if !object.is_object() {
        return Err(Status::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: json: cannot unmarshal {} into Go value of type {}",
            r.kind,
            r.version,
            r.kind,
            json_type(object),
            r.kind
        )));
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    match r.plural {
        "secrets" => decode_secret(object),
        _ => Ok(()),
    }
}

fn kind_problems(r: &Resource, object: &Value) -> Vec<Cause> {
    match r.plural {
        "secrets" => secret_problems(object),
        "configmaps" => object["data"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.is_empty() || !k.bytes().all(|c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.')))
            .map(|(k, _)| Cause::invalid(format!("data[{k}]"), &json!(k), CONFIG_KEY))
            .collect(),
        "pods" => pod_problems(object),
        "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" => rbac_problems(r, object),
        "customresourcedefinitions" => {
            let spec = &object["spec"];
            let expected = format!(
                "{}.{}",
                spec["names"]["plural"].as_str().unwrap_or_default(),
                spec["group"].as_str().unwrap_or_default()
            );
            if object["metadata"]["name"].as_str() != Some(expected.as_str()) {
                vec![Cause::invalid(
                    "metadata.name",
                    &object["metadata"]["name"],
                    "must be spec.names.plural+\".\"+spec.group",
                )]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// The defaults the server fills in.
fn default(r: &Resource, object: &mut Value) {
    match r.plural {
        // The real server accepts the names and establishes the resource a
        // moment later; the double at once (its custom resources are in
        // `resources`, served once their definition exists).
        "customresourcedefinitions" => {
            let names = object["spec"]["names"].clone();
            object["status"] = json!({
                "acceptedNames": names,
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                ],
                "storedVersions": [object["spec"]["versions"][0]["name"].clone()],
            });
        }
        "namespaces" => {
            let name = object["metadata"]["name"].clone();
            if !object["metadata"]["labels"].is_object() {
                object["metadata"]["labels"] = json!({});
            }
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if object["spec"]["finalizers"].is_null() {
                object["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            if object["status"]["phase"].is_null() {
                object["status"] = json!({"phase": "Active"});
            }
        }
        "pods" => {
            let spec = &mut object["spec"];
            for (field, value) in [
                ("restartPolicy", json!("Always")),
                ("terminationGracePeriodSeconds", json!(30)),
                ("dnsPolicy", json!("ClusterFirst")),
                ("schedulerName", json!("default-scheduler")),
                ("securityContext", json!({})),
                ("enableServiceLinks", json!(true)),
                ("serviceAccountName", json!("default")),
                ("priority", json!(0)),
                ("preemptionPolicy", json!("PreemptLowerPriority")),
            ] {
                if spec[field].is_null() {
                    spec[field] = value;
                }
            }
            spec["serviceAccount"] = spec["serviceAccountName"].clone();
            for c in spec["containers"].as_array_mut().into_iter().flatten() {
                if c["terminationMessagePath"].is_null() {
                    c["terminationMessagePath"] = json!("/dev/termination-log");
                }
                if c["terminationMessagePolicy"].is_null() {
                    c["terminationMessagePolicy"] = json!("File");
                }
                if c["resources"].is_null() {
                    c["resources"] = json!({});
                }
                if c["imagePullPolicy"].is_null() {
                    let image = c["image"].as_str().unwrap_or_default();
                    let tagged = image
                        .rsplit('/')
                        .next()
                        .is_some_and(|last| last.contains(':') || last.contains('@'));
                    let latest = image.ends_with(":latest");
                    c["imagePullPolicy"] = json!(if tagged && !latest { "IfNotPresent" } else { "Always" });
                }
            }
            if object["status"]["phase"].is_null() {
                object["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
            }
        }
        _ => {}
    }
}
