//! `Status` failures shaped like the API server's: the same codes, reasons,
//! messages and details, so clients parse what they will meet on a cluster.

use serde_json::{json, Map, Value};

use super::resources::Resource;

/// A failed request.
#[derive(Debug, Clone)]
pub struct Status {
    /// The HTTP status code.
    pub code: u16,
    /// `reason`: Forbidden, NotFound, Invalid, ...
    pub reason: &'static str,
    /// `message`, in the real server's words.
    pub message: String,
    /// `details`, when the real server sends them.
    pub details: Option<Value>,
}

/// One field problem of a 422 `Invalid`.
#[derive(Debug, Clone)]
pub struct Cause {
    /// The field path, e.g. `metadata.name` or `data[k]`.
    pub field: String,
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueForbidden`, ...
    pub reason: &'static str,
    /// What follows the field in the message, e.g. `Invalid value: "x": ...`.
    pub message: String,
}

impl Cause {
    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {detail}", go_value(value)),
        }
    }

    /// `Required value[: detail]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Cause {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Cause {
            field: field.into(),
            reason: "FieldValueRequired",
            message,
        }
    }

    /// `Forbidden: detail`.
    pub fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
        }
    }

    /// `Too long: may not be more than N bytes` and the like.
    pub fn too_long(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueTooLong",
            message: format!("Too long: {detail}"),
        }
    }

    /// `Unsupported value: "x": supported values: ...`.
    pub fn unsupported(field: impl Into<String>, value: &Value, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            field: field.into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                list.join(", ")
            ),
        }
    }
}

/// A value as Go's field errors print it: strings quoted, the rest as JSON.
fn go_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn details(name: &str, resource: Option<&Resource>, kind: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if let Some(r) = resource.filter(|r| !r.group.is_empty()) {
        d.insert("group".into(), json!(r.group));
    }
    d.insert("kind".into(), json!(kind));
    Value::Object(d)
}

impl Status {
    /// The JSON body the API server sends.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!("Status"));
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("metadata".into(), json!({}));
        m.insert("status".into(), json!("Failure"));
        m.insert("message".into(), json!(self.message));
        m.insert("reason".into(), json!(self.reason));
        if let Some(d) = &self.details {
            m.insert("details".into(), d.clone());
        }
        m.insert("code".into(), json!(self.code));
        Value::Object(m)
    }

    /// 401: no or an invalid credential.
    pub fn unauthorized() -> Status {
        Status {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        }
    }

    /// 403 for a resource request, in RBAC's words.
    pub fn forbidden(
        user: &str,
        verb: &str,
        resource: &Resource,
        subresource: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Status {
        let what = match subresource {
            Some(sub) => format!("{}/{sub}", resource.plural),
            None => resource.plural.to_string(),
        };
        let qualified = resource.qualified();
        let subject = match name {
            Some(n) => format!("{qualified} {n:?}"),
            None => qualified,
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace {ns:?}"),
            None => "at the cluster scope".to_owned(),
        };
        Status {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{subject} is forbidden: User {user:?} cannot {verb} resource {what:?} in API group {:?} {scope}",
                resource.group
            ),
            details: Some(details(name.unwrap_or(""), Some(resource), resource.plural)),
        }
    }

    /// 403 for a non-resource URL.
    pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Status {
        Status {
            code: 403,
            reason: "Forbidden",
            message: format!("forbidden: User {user:?} cannot {verb} path {path:?}"),
            details: Some(json!({})),
        }
    }

    /// 403 from an admission plugin or a namespace being deleted.
    pub fn forbidden_by(resource: &Resource, name: &str, why: &str) -> Status {
        let subject = if name.is_empty() {
            resource.qualified()
        } else {
            format!("{} {name:?}", resource.qualified())
        };
        Status {
            code: 403,
            reason: "Forbidden",
            message: format!("{subject} is forbidden: {why}"),
            details: Some(details(name, Some(resource), resource.plural)),
        }
    }

    /// 404 for a named object.
    pub fn not_found(resource: &Resource, name: &str) -> Status {
        Status {
            code: 404,
            reason: "NotFound",
            message: format!("{} {name:?} not found", resource.qualified()),
            details: Some(details(name, Some(resource), resource.plural)),
        }
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Status {
        Status {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(json!({})),
        }
    }

    /// 405 for a known path with a method it does not take.
    pub fn method_not_allowed() -> Status {
        Status {
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource".into(),
            details: Some(json!({})),
        }
    }

    /// 406: no media type the client accepts is served.
    pub fn not_acceptable(accepted: &[&str]) -> Status {
        Status {
            code: 406,
            reason: "NotAcceptable",
            message: format!("only the following media types are accepted: {}", accepted.join(", ")),
            details: None,
        }
    }

    /// 409 on creating an object that exists.
    pub fn already_exists(resource: &Resource, name: &str) -> Status {
        Status {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} {name:?} already exists", resource.qualified()),
            details: Some(details(name, Some(resource), resource.plural)),
        }
    }

    /// 409 with the optimistic-concurrency wording.
    pub fn conflict(resource: &Resource, name: &str, why: &str) -> Status {
        Status {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                resource.qualified()
            ),
            details: Some(details(name, Some(resource), resource.plural)),
        }
    }

    /// 409 for a write carrying a stale `resourceVersion`.
    pub fn stale(resource: &Resource, name: &str) -> Status {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 from server-side apply: fields other managers own.
    pub fn apply_conflicts(resource: &Resource, name: &str, conflicts: &[(String, String)]) -> Status {
        let n = conflicts.len();
        let plural = if n == 1 { "conflict" } else { "conflicts" };
        let mut message = format!("Apply failed with {n} {plural}:");
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager:?}"),
                    "field": field,
                })
            })
            .collect();
        for (manager, field) in conflicts {
            message.push_str(&format!(" conflict with {manager:?}: {field}"));
        }
        let mut d = details(name, Some(resource), resource.plural);
        if let Value::Object(m) = &mut d {
            m.insert("causes".into(), Value::Array(causes));
        }
        Status {
            code: 409,
            reason: "Conflict",
            message,
            details: Some(d),
        }
    }

    /// 400 with a free-form message.
    pub fn bad_request(message: impl Into<String>) -> Status {
        Status {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 410 for a resourceVersion older than the kept history.
    pub fn expired(message: impl Into<String>) -> Status {
        Status {
            code: 410,
            reason: "Expired",
            message: message.into(),
            details: None,
        }
    }

    /// 413 for a body over the server's limit.
    pub fn too_large() -> Status {
        Status {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: "Request entity too large: limit is 3145728".into(),
            details: None,
        }
    }

    /// 415 for a body in a format the double does not read.
    pub fn unsupported_media_type(content_type: &str) -> Status {
        Status {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {content_type:?})"),
            details: None,
        }
    }

    /// 422 `Invalid`, one cause per field problem; `kind` is the object's
    /// kind, group-qualified outside the core group.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> Status {
        let texts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let joined = if texts.len() == 1 {
            texts.concat()
        } else {
            format!("[{}]", texts.join(", "))
        };
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut d = Map::new();
        if !name.is_empty() {
            d.insert("name".into(), json!(name));
        }
        let (bare, group) = match kind.split_once('.') {
            Some((k, g)) => (k, Some(g)),
            None => (kind, None),
        };
        if let Some(g) = group {
            d.insert("group".into(), json!(g));
        }
        d.insert("kind".into(), json!(bare));
        d.insert("causes".into(), Value::Array(causes_json));
        Status {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} {name:?} is invalid: {joined}"),
            details: Some(Value::Object(d)),
        }
    }

    /// 500, where the real server also fails internally.
    pub fn internal(message: impl Into<String>) -> Status {
        Status {
            code: 500,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }
}
