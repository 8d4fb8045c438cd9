//! What the double serves: one row per resource, as discovery lists it.
//! Adding a kind the provider or a test needs is one row here (plus, where
//! the real server validates it specially, a rule in `validate`).

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// The one served version.
    pub version: &'static str,
    /// The plural, as in URLs and RBAC rules.
    pub plural: &'static str,
    /// The kind of its objects.
    pub kind: &'static str,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
    /// The verbs discovery lists for it.
    pub verbs: &'static [&'static str],
    /// Field labels it can be selected by, beyond `metadata.name` and
    /// `metadata.namespace` (which every resource has).
    pub fields: &'static [&'static str],
    /// Short names (`kubectl get sa`).
    pub short_names: &'static [&'static str],
    /// Kept objects (everything but reviews, which are answered and
    /// forgotten).
    pub stored: bool,
    /// The singular name.
    pub singular: &'static str,
    /// For a custom resource: the CustomResourceDefinition that must exist
    /// for it to be served (as on a real server, where it is 404 until then).
    pub crd: Option<&'static str>,
}

impl Resource {
    /// `plural` in the core group, `plural.group` elsewhere (how messages
    /// name a resource).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind, group-qualified outside the core group (how validation
    /// messages name it: `Role.rbac.authorization.k8s.io`).
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether `field` may be used in a field selector on this resource.
    pub fn selectable(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace") || self.fields.contains(&field)
    }
}

const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const REVIEW: &[&str] = &["create"];

/// Every resource the double serves.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        verbs: &["create", "delete", "get", "list", "patch", "update", "watch"],
        fields: &["status.phase"],
        short_names: &["ns"],
        stored: true,
        singular: "namespace",
        crd: None,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        verbs: CRUD,
        fields: &["spec.unschedulable"],
        short_names: &["no"],
        stored: true,
        singular: "node",
        crd: None,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        verbs: CRUD,
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        short_names: &["po"],
        stored: true,
        singular: "pod",
        crd: None,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        verbs: CRUD,
        fields: &["type"],
        short_names: &[],
        stored: true,
        singular: "secret",
        crd: None,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        verbs: CRUD,
        fields: &[],
        short_names: &["cm"],
        stored: true,
        singular: "configmap",
        crd: None,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        kind: "ServiceAccount",
        namespaced: true,
        verbs: CRUD,
        fields: &[],
        short_names: &["sa"],
        stored: true,
        singular: "serviceaccount",
        crd: None,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        kind: "Role",
        namespaced: true,
        verbs: CRUD,
        fields: &[],
        short_names: &[],
        stored: true,
        singular: "role",
        crd: None,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        verbs: CRUD,
        fields: &[],
        short_names: &[],
        stored: true,
        singular: "rolebinding",
        crd: None,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
        verbs: CRUD,
        fields: &[],
        short_names: &[],
        stored: true,
        singular: "clusterrole",
        crd: None,
    },
    Resource {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
        verbs: CRUD,
        fields: &[],
        short_names: &[],
        stored: true,
        singular: "clusterrolebinding",
        crd: None,
    },
    Resource {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        kind: "TokenReview",
        namespaced: false,
        verbs: REVIEW,
        fields: &[],
        short_names: &[],
        stored: false,
        singular: "tokenreview",
        crd: None,
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        verbs: REVIEW,
        fields: &[],
        short_names: &[],
        stored: false,
        singular: "selfsubjectaccessreview",
        crd: None,
    },
    Resource {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespaced: false,
        verbs: REVIEW,
        fields: &[],
        short_names: &[],
        stored: false,
        singular: "subjectaccessreview",
        crd: None,
    },
    Resource {
        group: "apiextensions.k8s.io",
        version: "v1",
        plural: "customresourcedefinitions",
        kind: "CustomResourceDefinition",
        namespaced: false,
        verbs: CRUD,
        fields: &[],
        short_names: &["crd", "crds"],
        stored: true,
        singular: "customresourcedefinition",
        crd: None,
    },
    Resource {
        group: "secrets-store.csi.x-k8s.io",
        version: "v1",
        plural: "secretproviderclasses",
        kind: "SecretProviderClass",
        namespaced: true,
        verbs: CRUD,
        fields: &[],
        short_names: &[],
        stored: true,
        singular: "secretproviderclass",
        crd: Some("secretproviderclasses.secrets-store.csi.x-k8s.io"),
    },
];

/// The resource `plural` of `group`/`version`, if served.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Whether `r` is served now: always, but for a custom resource whose
/// CustomResourceDefinition does not exist (yet).
pub fn served(store: &super::store::Store, r: &Resource) -> bool {
    r.crd.is_none_or(|name| {
        store
            .get(&(
                ("apiextensions.k8s.io", "customresourcedefinitions"),
                String::new(),
                name.to_string(),
            ))
            .is_some()
    })
}

/// The groups served, in discovery order (core first).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}
