//! The one protobuf body the double reads: the access review kubectl (like
//! every client-go client of the built-in types) sends as
//! `application/vnd.kubernetes.protobuf` for `kubectl auth can-i`. The
//! Kubernetes envelope is the magic `k8s\0` and a `runtime.Unknown` whose
//! `raw` bytes are the object; the messages below carry only the fields an
//! access review needs, with the field numbers of `k8s.io/api`'s
//! `generated.proto`.

use prost::Message;
use serde_json::{json, Value};

#[derive(Clone, PartialEq, Message)]
struct TypeMeta {
    #[prost(string, optional, tag = "1")]
    api_version: Option<String>,
    #[prost(string, optional, tag = "2")]
    kind: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(message, optional, tag = "1")]
    type_meta: Option<TypeMeta>,
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

/// `SelfSubjectAccessReviewSpec` (its attributes are fields 1 and 2, as in
/// `SubjectAccessReviewSpec`, whose user and groups follow).
#[derive(Clone, PartialEq, Message)]
struct ReviewSpec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
    #[prost(string, optional, tag = "3")]
    user: Option<String>,
    #[prost(string, repeated, tag = "4")]
    groups: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct Review {
    #[prost(message, optional, tag = "2")]
    spec: Option<ReviewSpec>,
}

/// The access review in `body` as its JSON form, or why not.
pub fn access_review(body: &[u8]) -> Result<Value, String> {
    let raw = body
        .strip_prefix(b"k8s\0")
        .ok_or("the protobuf body lacks the k8s envelope")?;
    let unknown = Unknown::decode(raw).map_err(|e| format!("the protobuf envelope: {e}"))?;
    let meta = unknown.type_meta.unwrap_or_default();
    let kind = meta.kind.unwrap_or_default();
    if !matches!(kind.as_str(), "SelfSubjectAccessReview" | "SubjectAccessReview") {
        return Err(format!(
            "the double reads protobuf only for access reviews, not {kind:?}"
        ));
    }
    let review = Review::decode(unknown.raw.unwrap_or_default().as_slice()).map_err(|e| format!("the {kind}: {e}"))?;
    let spec = review.spec.unwrap_or_default();
    let mut out = json!({"apiVersion": meta.api_version, "kind": kind, "spec": {}});
    if let Some(r) = spec.resource_attributes {
        out["spec"]["resourceAttributes"] = json!({
            "namespace": r.namespace, "verb": r.verb, "group": r.group, "version": r.version,
            "resource": r.resource, "subresource": r.subresource, "name": r.name,
        });
    }
    if let Some(n) = spec.non_resource_attributes {
        out["spec"]["nonResourceAttributes"] = json!({"path": n.path, "verb": n.verb});
    }
    if let Some(user) = spec.user {
        out["spec"]["user"] = json!(user);
        out["spec"]["groups"] = json!(spec.groups);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_protobuf_access_review_reads_as_its_json() {
        let spec = ReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some("ns".into()),
                verb: Some("get".into()),
                resource: Some("secrets".into()),
                name: Some("k".into()),
                ..ResourceAttributes::default()
            }),
            ..ReviewSpec::default()
        };
        let raw = Review { spec: Some(spec) }.encode_to_vec();
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("authorization.k8s.io/v1".into()),
                kind: Some("SelfSubjectAccessReview".into()),
            }),
            raw: Some(raw),
        };
        let mut body = b"k8s\0".to_vec();
        body.extend(unknown.encode_to_vec());
        let v = access_review(&body).unwrap();
        assert_eq!(v["spec"]["resourceAttributes"]["name"], "k");
        assert_eq!(v["spec"]["resourceAttributes"]["verb"], "get");
        assert!(access_review(b"k8s\0\x0a\x00").is_err());
    }
}
