//! In-memory objects of the double, their JSON rendering, label and field
//! selectors, the change logs watches replay, and the RBAC grants table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::secrets::Secret;
use super::status::Status;

/// Everything the server knows, behind one mutex (never held across an await).
#[derive(Default)]
pub(super) struct State {
    /// The global resourceVersion counter: bumped by every write of any object.
    pub resource_version: u64,
    pub service_accounts: BTreeMap<(String, String), ServiceAccount>,
    pub pods: BTreeMap<(String, String), Pod>,
    /// Every pod change since start; watches replay from here.
    pub pod_events: Vec<Event<Pod>>,
    pub secrets: BTreeMap<(String, String), Secret>,
    /// Every Secret change since start.
    pub secret_events: Vec<Event<Secret>>,
    /// Carries the resourceVersion of the latest recorded change, to wake
    /// watch streams (of any kind: each looks in its own log).
    pub changes: tokio::sync::watch::Sender<u64>,
    pub grants: Vec<Grant>,
    pub requests: Vec<(String, String)>,
    pub delay: Duration,
    pub unavailable: bool,
    /// Every pod read (get, list, watch): its path and whether only
    /// metadata was asked for.
    pub pod_reads: Vec<(String, bool)>,
    /// Whether service accounts may read the issuer discovery documents
    /// (Kubernetes' default `system:service-account-issuer-discovery`
    /// binding grants it to `system:serviceaccounts`).
    pub issuer_discovery: bool,
}

impl State {
    /// Takes the next resourceVersion.
    pub fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    /// Records a change of `object` (already carrying the resourceVersion of
    /// the write; for a deletion, a fresh one) for watchers and wakes them.
    /// `old` is the object before a modification.
    pub fn record<T: Watched>(&mut self, kind: EventKind, old: Option<T>, object: T) {
        let resource_version = object.resource_version();
        T::events_mut(self).push(Event {
            resource_version,
            kind,
            old,
            object,
        });
        self.changes.send_replace(resource_version);
    }
}

/// A kind of object a client can watch: where its objects and its change
/// log live in the state, and how a watch's filter and rendering see one.
/// The watch machinery (`api::serve_watch`) is written once over this.
pub(super) trait Watched: Clone + Send + 'static {
    /// The objects that exist now.
    fn current(st: &State) -> impl Iterator<Item = &Self>;
    /// The recorded changes, oldest first (resourceVersions ascending).
    fn events(st: &State) -> &[Event<Self>];
    /// The same, to append to.
    fn events_mut(st: &mut State) -> &mut Vec<Event<Self>>;
    /// `metadata.resourceVersion`.
    fn resource_version(&self) -> u64;
    /// Whether the object passes the namespace restriction and both selectors.
    fn matches(&self, namespace: Option<&str>, labels: &Selector, fields: &Selector) -> bool;
    /// The object as a watch event carries it, full or metadata-only.
    fn render(&self, metadata_only: bool) -> Value;
}

impl Watched for Pod {
    fn current(st: &State) -> impl Iterator<Item = &Self> {
        st.pods.values()
    }
    fn events(st: &State) -> &[Event<Self>] {
        &st.pod_events
    }
    fn events_mut(st: &mut State) -> &mut Vec<Event<Self>> {
        &mut st.pod_events
    }
    fn resource_version(&self) -> u64 {
        self.resource_version
    }
    fn matches(&self, namespace: Option<&str>, labels: &Selector, fields: &Selector) -> bool {
        Pod::matches(self, namespace, labels, fields)
    }
    fn render(&self, metadata_only: bool) -> Value {
        Pod::render(self, metadata_only)
    }
}

/// A ServiceAccount: only its identity matters to token validation.
#[derive(Clone)]
pub(super) struct ServiceAccount {
    pub uid: String,
}

/// A Pod as far as the provider and TokenReview look at it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub owner_references: Vec<Value>,
    pub resource_version: u64,
    pub created: String,
}

impl Pod {
    /// The object as the API server returns it (without kind/apiVersion, which
    /// lists omit on items and single GETs add).
    pub fn to_json(&self) -> Value {
        let mut meta = Map::new();
        meta.insert("name".into(), json!(self.name));
        meta.insert("namespace".into(), json!(self.namespace));
        meta.insert("uid".into(), json!(self.uid));
        meta.insert("resourceVersion".into(), json!(self.resource_version.to_string()));
        meta.insert("creationTimestamp".into(), json!(self.created));
        if !self.labels.is_empty() {
            meta.insert("labels".into(), json!(self.labels));
        }
        if !self.owner_references.is_empty() {
            meta.insert("ownerReferences".into(), json!(self.owner_references));
        }
        json!({
            "metadata": meta,
            "spec": {
                "serviceAccountName": self.service_account,
                "serviceAccount": self.service_account,
                "nodeName": self.node,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
            },
            "status": {"phase": "Running"},
        })
    }

    /// The full object with `kind` and `apiVersion`.
    pub fn to_json_with_kind(&self) -> Value {
        with_kind(self.to_json(), "Pod")
    }

    /// Only the metadata, as `PartialObjectMetadata` (what a client asking
    /// with `Accept: application/json;as=PartialObjectMetadata;...` gets).
    pub fn to_metadata_json(&self) -> Value {
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": self.to_json()["metadata"],
        })
    }

    /// Full or metadata-only, as the request asked.
    pub fn render(&self, metadata_only: bool) -> Value {
        if metadata_only {
            self.to_metadata_json()
        } else {
            self.to_json_with_kind()
        }
    }

    /// Values for the field selectors the API server supports on pods.
    fn field(&self, key: &str) -> Option<String> {
        Some(match key {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.namespace.clone(),
            "spec.nodeName" => self.node.clone(),
            "spec.serviceAccountName" => self.service_account.clone(),
            "status.phase" => "Running".to_owned(),
            _ => return None,
        })
    }

    /// Whether the pod passes the namespace restriction and both selectors.
    pub fn matches(&self, namespace: Option<&str>, labels: &Selector, fields: &Selector) -> bool {
        namespace.is_none_or(|ns| ns == self.namespace)
            && labels.matches(|k| self.labels.get(k).cloned())
            && fields.matches(|k| self.field(k))
    }
}

/// Adds `kind`/`apiVersion: v1` in front of an object's fields.
pub(super) fn with_kind(object: Value, kind: &str) -> Value {
    let mut m = Map::new();
    m.insert("kind".into(), json!(kind));
    m.insert("apiVersion".into(), json!("v1"));
    if let Value::Object(o) = object {
        m.extend(o);
    }
    Value::Object(m)
}

/// Watch event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EventKind {
    Added,
    Modified,
    Deleted,
}

impl EventKind {
    /// The `type` string on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One recorded change; `old` lets a filtered watch turn a MODIFIED into
/// ADDED/DELETED when the object enters or leaves the selection, as the real one does.
#[derive(Clone, Debug)]
pub(super) struct Event<T> {
    pub resource_version: u64,
    pub kind: EventKind,
    pub old: Option<T>,
    pub object: T,
}

impl<T: Watched> Event<T> {
    /// The event as a watcher with this filter would see it, if at all.
    pub fn filtered(&self, namespace: Option<&str>, labels: &Selector, fields: &Selector) -> Option<(EventKind, &T)> {
        let now = self.object.matches(namespace, labels, fields);
        match self.kind {
            EventKind::Added | EventKind::Deleted => now.then_some((self.kind, &self.object)),
            EventKind::Modified => {
                let before = self.old.as_ref().is_some_and(|o| o.matches(namespace, labels, fields));
                match (before, now) {
                    (true, true) => Some((EventKind::Modified, &self.object)),
                    (false, true) => Some((EventKind::Added, &self.object)),
                    (true, false) => Some((EventKind::Deleted, &self.object)),
                    (false, false) => None,
                }
            }
        }
    }
}

/// One requirement of a label or field selector.
#[derive(Clone, Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// Equality-based selector (`a=b,c!=d,e,!f`); set-based syntax is refused.
#[derive(Clone, Debug, Default)]
pub(super) struct Selector {
    reqs: Vec<Requirement>,
}

impl Selector {
    /// Parses a `labelSelector`.
    pub fn labels(text: Option<&str>) -> Result<Self, Status> {
        Self::parse(text.unwrap_or(""), None)
    }

    /// Parses a selector's syntax only, with any keys: what the API server
    /// reads a request's `fieldSelector` with before authorizing it (unknown
    /// field labels are refused later, by the resource's handler).
    pub fn any(text: Option<&str>) -> Result<Self, Status> {
        Self::parse(text.unwrap_or(""), None)
    }

    /// Parses a `fieldSelector`, accepting only `allowed` keys like the API
    /// server (which answers 400 for unknown field labels).
    pub fn fields(text: Option<&str>, allowed: &[&str]) -> Result<Self, Status> {
        Self::parse(text.unwrap_or(""), Some(allowed))
    }

    fn parse(text: &str, allowed: Option<&[&str]>) -> Result<Self, Status> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part.contains(' ') || part.contains('(') {
                return Err(Status::bad_request(format!(
                    "unable to parse requirement: set-based selector {part:?} is not supported by the test double"
                )));
            } else {
                Requirement::Exists(part.into())
            };
            if let Some(allowed) = allowed {
                let key = match &req {
                    Requirement::Equals(k, _) | Requirement::NotEquals(k, _) => k,
                    Requirement::Exists(k) | Requirement::NotExists(k) => {
                        return Err(Status::bad_request(format!(
                            "invalid selector: '{k}'; can't understand '{k}'"
                        )))
                    }
                };
                if !allowed.contains(&key.as_str()) {
                    return Err(Status::bad_request(format!("field label not supported: {key}")));
                }
            }
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    /// The value the selector requires `key` to equal (`key=v` or `key==v`),
    /// if it does. The API server takes `metadata.name`'s as a list or watch
    /// request's object name, which RBAC rules with `resourceNames` match.
    pub fn exact(&self, key: &str) -> Option<&str> {
        self.reqs.iter().find_map(|r| match r {
            Requirement::Equals(k, v) if k == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// Evaluates the selector against a value lookup.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k).as_deref() != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// One RBAC permission of a service account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Grant {
    pub sa_namespace: String,
    pub sa_name: String,
    pub verb: String,
    pub resource: String,
    /// `None`: every namespace and cluster-scoped resources (a ClusterRoleBinding).
    pub namespace: Option<String>,
    /// `None`: any object; `Some` matches only requests naming that object.
    pub resource_name: Option<String>,
}

impl Grant {
    /// RBAC rule matching, with `*` wildcards for verb and resource.
    pub fn allows(
        &self,
        caller: (&str, &str),
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> bool {
        let ns_ok = match (&self.namespace, namespace) {
            (None, _) => true,
            (Some(g), Some(r)) => g == r,
            (Some(_), None) => false,
        };
        // A rule with resourceNames matches only a request that names an
        // object: by its URL, or a list/watch whose field selector requires
        // metadata.name (see `api::request_name`); never a create or a list
        // of everything, as in RBAC.
        let name_ok = match (&self.resource_name, name) {
            (None, _) => true,
            (Some(g), Some(r)) => g == r,
            (Some(_), None) => false,
        };
        self.sa_namespace == caller.0
            && self.sa_name == caller.1
            && (self.verb == "*" || self.verb == verb)
            && (self.resource == "*" || self.resource == resource)
            && ns_ok
            && name_ok
    }
}

/// Field paths (`["data","key"]`) an object sets, for managedFields bookkeeping.
pub(super) type FieldSet = BTreeSet<Vec<String>>;
