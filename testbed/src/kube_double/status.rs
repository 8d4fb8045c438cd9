//! `Status` error bodies shaped like the API server's, so clients exercise
//! the same parsing they will meet on a real cluster.

use serde_json::{json, Map, Value};

/// A failed request: HTTP code, `reason`, `message` and optional `details`.
#[derive(Debug, Clone)]
pub(super) struct Status {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// One field problem inside a 422 `Invalid` status.
pub(super) struct Cause {
    pub field: String,
    pub reason: &'static str,
    /// Text after the field path, e.g. `Forbidden: field is immutable ...`.
    pub message: String,
}

fn name_kind(name: &str, kind: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
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

    /// 403 for a non-resource URL, in RBAC's words.
    pub fn forbidden_url(user: &str, path: &str) -> Self {
        Status {
            code: 403,
            reason: "Forbidden",
            message: format!("forbidden: User \"{user}\" cannot get path \"{path}\""),
            details: Some(json!({})),
        }
    }

    /// 401 for a missing or invalid bearer token.
    pub fn unauthorized() -> Self {
        Status {
            code: 401,
            reason: "Unauthorized",
            message: "Unauthorized".into(),
            details: None,
        }
    }

    /// 403 with RBAC's wording; `plural` may carry a subresource
    /// (`serviceaccounts/token`), the details name the parent resource.
    pub fn forbidden(
        user: &str,
        verb: &str,
        plural: &str,
        group: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let parent = plural.split('/').next().unwrap_or(plural);
        // The API server names the group-qualified resource (`tokenreviews.authentication.k8s.io`).
        let qualified = if group.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{group}")
        };
        let subject = match name {
            Some(n) => format!("{qualified} \"{n}\""),
            None => qualified,
        };
        let scope = match namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_owned(),
        };
        Status {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}"
            ),
            details: Some({
                let mut d = name_kind(name.unwrap_or(""), parent);
                if let (false, Value::Object(m)) = (group.is_empty(), &mut d) {
                    m.insert("group".into(), json!(group));
                }
                d
            }),
        }
    }

    /// 404 for a named object.
    pub fn not_found(plural: &str, name: &str) -> Self {
        Status {
            code: 404,
            reason: "NotFound",
            message: format!("{plural} \"{name}\" not found"),
            details: Some(name_kind(name, plural)),
        }
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        Status {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(json!({})),
        }
    }

    /// 405 for a known path with an unsupported method.
    pub fn method_not_allowed() -> Self {
        Status {
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource".into(),
            details: Some(json!({})),
        }
    }

    /// 409 on create of an existing object.
    pub fn already_exists(plural: &str, name: &str) -> Self {
        Status {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{plural} \"{name}\" already exists"),
            details: Some(name_kind(name, plural)),
        }
    }

    /// 409 with the API server's optimistic-concurrency wording.
    pub fn conflict(plural: &str, name: &str, why: &str) -> Self {
        Status {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {plural} \"{name}\": {why}"),
            details: Some(name_kind(name, plural)),
        }
    }

    /// 409 for a stale `resourceVersion`.
    pub fn stale(plural: &str, name: &str) -> Self {
        Self::conflict(
            plural,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 400 with a free-form message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Status {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: None,
        }
    }

    /// 415 for a PATCH content type the double does not implement.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Status {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {content_type:?})"),
            details: None,
        }
    }

    /// 422 `Invalid` with one entry per field problem.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let texts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let joined = if texts.len() == 1 {
            texts.join("")
        } else {
            format!("[{}]", texts.join(", "))
        };
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut details = name_kind(name, kind);
        if let Value::Object(m) = &mut details {
            m.insert("causes".into(), Value::Array(causes_json));
        }
        Status {
            code: 422,
            reason: "Invalid",
            message: format!("{kind} \"{name}\" is invalid: {joined}"),
            details: Some(details),
        }
    }

    /// 500, used where the real server also answers with an internal error.
    pub fn internal(message: impl Into<String>) -> Self {
        Status {
            code: 500,
            reason: "InternalError",
            message: message.into(),
            details: None,
        }
    }

    /// 503 for fault injection.
    pub fn unavailable() -> Self {
        Status {
            code: 503,
            reason: "ServiceUnavailable",
            message: "the server is currently unable to handle the request".into(),
            details: None,
        }
    }
}
