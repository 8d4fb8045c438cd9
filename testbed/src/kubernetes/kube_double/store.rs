//! The double's etcd: every object under one global resourceVersion
//! counter (etcd's revision), and the history of changes that watches
//! replay and paginated lists read their snapshot from. History is kept for
//! [`HISTORY_WINDOW`] and at most [`HISTORY_EVENTS`] events, like an etcd
//! that compacts every five minutes: older resourceVersions are `410 Gone`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::resources::Resource;

/// How long changes are kept for watches and continued lists.
pub const HISTORY_WINDOW: Duration = Duration::from_secs(300);
/// At most this many changes are kept.
pub const HISTORY_EVENTS: usize = 50_000;

/// Which resource a key belongs to: (group, plural).
pub type ResourceId = (&'static str, &'static str);

/// An object's place: resource, namespace (`""` when cluster-scoped), name.
pub type Key = (ResourceId, String, String);

/// The id of `r`.
pub fn id(r: &Resource) -> ResourceId {
    (r.group, r.plural)
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

impl EventKind {
    /// The watch event's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Added => "ADDED",
            EventKind::Modified => "MODIFIED",
            EventKind::Deleted => "DELETED",
        }
    }
}

/// One recorded change.
#[derive(Clone, Debug)]
pub struct Event {
    /// The revision of the change.
    pub rv: u64,
    /// The object's key.
    pub key: Key,
    /// What happened.
    pub kind: EventKind,
    /// The object after the change (for a deletion: its last state, with
    /// the deletion's resourceVersion, as watches deliver it).
    pub object: Arc<Value>,
    /// The object before the change (modifications and deletions).
    pub old: Option<Arc<Value>>,
    at: Instant,
}

/// Every object and the recent history.
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Arc<Value>>,
    history: VecDeque<Event>,
    /// Changes up to this revision are gone from the history.
    compacted: u64,
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            // etcd's first revisions go to the API server's own bootstrap
            // objects; clients never see small numbers either.
            rv: 100,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: 100,
            changes: tokio::sync::watch::channel(100).0,
        }
    }
}

impl Store {
    /// The current revision.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest revision a watch may start from or a continued list read.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// A receiver that sees the revision move.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The object at `key`.
    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.objects.get(key).cloned()
    }

    /// The objects of `resource` (in `namespace`, when given), in key order.
    pub fn list(&self, resource: ResourceId, namespace: Option<&str>) -> Vec<(Key, Arc<Value>)> {
        let start: Key = (resource, namespace.unwrap_or_default().to_string(), String::new());
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.0 == resource && namespace.is_none_or(|ns| k.1 == ns))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The objects of `resource` as they were at revision `rv`, rebuilt from
    /// the current ones by undoing later changes; `None` when the history
    /// no longer reaches back that far.
    pub fn list_at(&self, resource: ResourceId, namespace: Option<&str>, rv: u64) -> Option<Vec<(Key, Arc<Value>)>> {
        if rv < self.compacted {
            return None;
        }
        let mut at: BTreeMap<Key, Arc<Value>> = self.list(resource, namespace).into_iter().collect();
        for e in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if e.key.0 != resource || namespace.is_some_and(|ns| e.key.1 != ns) {
                continue;
            }
            match (e.kind, &e.old) {
                (EventKind::Added, _) => {
                    at.remove(&e.key);
                }
                (_, Some(old)) => {
                    at.insert(e.key.clone(), old.clone());
                }
                (_, None) => {}
            }
        }
        Some(at.into_iter().collect())
    }

    /// Every change after `rv` (which must not be below [`Store::compacted`]).
    pub fn since(&self, rv: u64) -> impl Iterator<Item = &Event> {
        let start = self.history.partition_point(|e| e.rv <= rv);
        self.history.range(start..)
    }

    /// Stores `object` at `key` (created or replaced), stamping the next
    /// revision into its `metadata.resourceVersion`; the stored object.
    pub fn put(&mut self, key: Key, mut object: Value) -> Arc<Value> {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let object = Arc::new(object);
        let old = self.objects.insert(key.clone(), object.clone());
        let kind = if old.is_some() {
            EventKind::Modified
        } else {
            EventKind::Added
        };
        self.record(key, kind, object.clone(), old);
        object
    }

    /// Removes the object at `key`; its last state, stamped with the
    /// deletion's revision.
    pub fn remove(&mut self, key: &Key) -> Option<Arc<Value>> {
        let old = self.objects.remove(key)?;
        self.rv += 1;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let last = Arc::new(last);
        self.record(key.clone(), EventKind::Deleted, last.clone(), Some(old));
        Some(last)
    }

    fn record(&mut self, key: Key, kind: EventKind, object: Arc<Value>, old: Option<Arc<Value>>) {
        let now = Instant::now();
        self.history.push_back(Event {
            rv: self.rv,
            key,
            kind,
            object,
            old,
            at: now,
        });
        while let Some(first) = self.history.front() {
            let too_many = self.history.len() > HISTORY_EVENTS;
            let too_old = now.duration_since(first.at) > HISTORY_WINDOW;
            if !(too_many || too_old) {
                break;
            }
            self.compacted = first.rv;
            self.history.pop_front();
        }
        self.changes.send_replace(self.rv);
    }

    #[cfg(test)]
    /// Forgets every change up to now, as `etcdctl compact` does: watches
    /// and continued lists from an older revision get `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A label or field selector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    reqs: Vec<Requirement>,
}

/// Splits a selector at the commas outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn set_values(text: &str) -> Option<Vec<String>> {
    let inner = text.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect(),
    )
}

/// An equality requirement (`a=b`, `a==b`, `a!=b`), if `part` is one.
fn equality(part: &str) -> Option<Requirement> {
    if let Some((k, v)) = part.split_once("!=") {
        Some(Requirement::NotEquals(k.trim().into(), v.trim().into()))
    } else {
        let (k, v) = part.split_once("==").or_else(|| part.split_once('='))?;
        Some(Requirement::Equals(k.trim().into(), v.trim().into()))
    }
}

impl Selector {
    /// A `labelSelector`: equality (`a=b`, `a==b`, `a!=b`), sets
    /// (`a in (x,y)`, `a notin (x)`) and existence (`a`, `!a`).
    pub fn labels(text: &str) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in split_top(text) {
            let req = if let Some(req) = equality(part) {
                req
            } else if let Some((k, v)) = part.split_once(" notin ") {
                let values = set_values(v).ok_or_else(|| format!("unable to parse requirement: {part:?}"))?;
                Requirement::NotIn(k.trim().into(), values)
            } else if let Some((k, v)) = part.split_once(" in ") {
                let values = set_values(v).ok_or_else(|| format!("unable to parse requirement: {part:?}"))?;
                Requirement::In(k.trim().into(), values)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().into())
            } else if part.contains([' ', '(', ')']) {
                return Err(format!("unable to parse requirement: {part:?}"));
            } else {
                Requirement::Exists(part.into())
            };
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    /// A `fieldSelector` (`a=b`, `a==b`, `a!=b` only); `allowed` says which
    /// field labels the resource supports.
    pub fn fields(text: &str, allowed: impl Fn(&str) -> bool) -> Result<Selector, String> {
        let mut reqs = Vec::new();
        for part in split_top(text) {
            let Some(req) = equality(part) else {
                return Err(format!("invalid selector: '{text}'; can't understand '{part}'"));
            };
            let (Requirement::Equals(k, _) | Requirement::NotEquals(k, _)) = &req else {
                continue;
            };
            if !allowed(k) {
                return Err(format!("field label not supported: {k}"));
            }
            reqs.push(req);
        }
        Ok(Selector { reqs })
    }

    /// The value `key` must equal (`key=v` or `key==v`), if the selector
    /// requires one: for `metadata.name`, the object a list or watch names
    /// (what RBAC's `resourceNames` match).
    pub fn exact(&self, key: &str) -> Option<&str> {
        self.reqs.iter().find_map(|r| match r {
            Requirement::Equals(k, v) if k == key => Some(v.as_str()),
            _ => None,
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Evaluates the selector over a lookup of values.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.reqs.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k).as_deref() != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Which objects a list or watch sees.
#[derive(Clone, Debug)]
pub struct Filter {
    /// The resource.
    pub resource: ResourceId,
    /// Its namespace (`None`: all).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: Selector,
    /// `fieldSelector`.
    pub fields: Selector,
}

impl Filter {
    /// Whether `object` at `key` passes.
    pub fn matches(&self, key: &Key, object: &Value) -> bool {
        key.0 == self.resource
            && self.namespace.as_deref().is_none_or(|ns| key.1 == ns)
            && self.labels.matches(|k| {
                object["metadata"]["labels"]
                    .get(k)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            && self.fields.matches(|k| Some(field_value(object, k)))
    }

    /// How a filtered watch sees `event`: a modification that moves an
    /// object into or out of the selection is an ADDED or DELETED, as the
    /// real server's watch cache delivers it.
    pub fn sees(&self, event: &Event) -> Option<EventKind> {
        if event.key.0 != self.resource {
            return None;
        }
        let now = self.matches(&event.key, &event.object);
        match event.kind {
            EventKind::Added | EventKind::Deleted => now.then_some(event.kind),
            EventKind::Modified => {
                let before = event.old.as_ref().is_some_and(|o| self.matches(&event.key, o));
                match (before, now) {
                    (true, true) => Some(EventKind::Modified),
                    (false, true) => Some(EventKind::Added),
                    (true, false) => Some(EventKind::Deleted),
                    (false, false) => None,
                }
            }
        }
    }
}

/// A field label's value on `object` (`spec.nodeName` → `/spec/nodeName`):
/// strings as they are, booleans as `true`/`false`, missing as `""`.
pub fn field_value(object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: ResourceId = ("", "pods");

    fn pod(name: &str, node: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns", "labels": {"app": name}}, "spec": {"nodeName": node}})
    }

    fn key(name: &str) -> Key {
        (PODS, "ns".into(), name.into())
    }

    #[test]
    fn a_list_at_an_older_revision_undoes_what_came_after() {
        let mut s = Store::default();
        s.put(key("a"), pod("a", "n1"));
        let rv = s.rv();
        s.put(key("b"), pod("b", "n1"));
        s.put(key("a"), pod("a", "n2"));
        s.remove(&key("a"));
        let then = s.list_at(PODS, Some("ns"), rv).unwrap();
        assert_eq!(then.len(), 1);
        assert_eq!(then[0].1["spec"]["nodeName"], "n1");
        assert_eq!(s.list(PODS, None).len(), 1, "b only, now");
        s.compact();
        assert!(s.list_at(PODS, None, rv).is_none(), "compacted away");
    }

    #[test]
    fn a_filtered_watch_sees_objects_enter_and_leave_its_selection() {
        let mut s = Store::default();
        let filter = Filter {
            resource: PODS,
            namespace: None,
            labels: Selector::default(),
            fields: Selector::fields("spec.nodeName=n1", |_| true).unwrap(),
        };
        let from = s.rv();
        s.put(key("a"), pod("a", "n2"));
        s.put(key("a"), pod("a", "n1"));
        s.put(key("a"), pod("a", "n1"));
        s.put(key("a"), pod("a", "n2"));
        let seen: Vec<_> = s.since(from).filter_map(|e| filter.sees(e)).collect();
        assert_eq!(seen, [EventKind::Added, EventKind::Modified, EventKind::Deleted]);
    }

    #[test]
    fn selectors_parse_as_the_api_server_reads_them() {
        let l = Selector::labels("app in (a, b),tier!=db,!gone,team").unwrap();
        let get = |m: &'static [(&'static str, &'static str)]| {
            move |k: &str| m.iter().find(|(x, _)| *x == k).map(|(_, v)| v.to_string())
        };
        assert!(l.matches(get(&[("app", "a"), ("team", "x")])));
        assert!(!l.matches(get(&[("app", "c"), ("team", "x")])));
        assert!(!l.matches(get(&[("app", "a"), ("team", "x"), ("gone", "")])));
        assert!(Selector::labels("app in a").is_err());
        let f = Selector::fields("metadata.name=x,spec.nodeName==n", |_| true).unwrap();
        assert_eq!(f.exact("metadata.name"), Some("x"));
        let e = Selector::fields("spec.bogus=1", |k| k == "metadata.name").unwrap_err();
        assert_eq!(e, "field label not supported: spec.bogus");
    }
}
