//! Authoritative SecretProviderClasses (`-spc-authoritative-class`, off by
//! default as in both incumbents).
//!
//! The driver copies a pod's `volumeAttributes` over its class's
//! `parameters`, so whoever may create a pod that uses a class can change
//! what it reads (`objects`), as whom (the role, the audience) and where
//! (the address, the auth mount). With the flag on, the provider reads the
//! class a request names from the API and refuses a mount whose attributes
//! differ from the class in any of those, naming the parameter. The class's
//! name comes from the request (`secretProviderClass`); rotation calls of
//! drivers before v1.6 carry none, so the class each pod mounted last is
//! remembered.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value as Json;

use super::client::KubeClient;
use crate::bounded::BoundedMap;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{names, Pod};
use vcp_proto::keys;

/// What a pod may not change of its class while classes are authoritative.
const PROTECTED: &[&[&str]] = &[
    &["objects"],
    names::ROLE,
    names::ADDRESS,
    names::KUBERNETES_MOUNT_PATH,
    names::AUTH_MOUNT_PATH,
    &["audience"],
];
/// Most pods whose class is remembered (see [`BoundedMap`]).
const MAX_PODS_REMEMBERED: usize = 16_384;
/// The RBAC the check needs, for a refusal's hint.
const GRANT: &str =
    "grant get on secretproviderclasses.secrets-store.csi.x-k8s.io (deploy/components/authoritative-class)";

/// Checks mounts against the classes they name.
pub struct AuthoritativeClasses {
    kube: KubeClient,
    /// Per pod uid: the class it mounted last.
    class_of: Mutex<BoundedMap<String, String>>,
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidRequest, message)
}

/// Whether `s` is a DNS subdomain (a SecretProviderClass's name; a
/// namespace's name is a DNS label, which is one too).
fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// At most the first 64 characters of `s`: a tenant's value is cut before
/// a message is built from it.
fn cut(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// A parameter's value as a message shows it: short ones quoted, `objects`
/// and long ones by their length only.
fn shown(name: &str, value: Option<&str>) -> String {
    match value {
        None => "unset".to_string(),
        Some(v) if name == "objects" || v.len() > 128 => format!("{} bytes", v.len()),
        Some(v) => format!("{v:?}"),
    }
}

impl AuthoritativeClasses {
    /// Checks with `kube`'s identity.
    pub fn new(kube: KubeClient) -> AuthoritativeClasses {
        AuthoritativeClasses {
            kube,
            class_of: Mutex::new(BoundedMap::new(MAX_PODS_REMEMBERED)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoundedMap<String, String>> {
        self.class_of.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The class a request for `pod` is for: the one it names, else the one
    /// the pod mounted last.
    fn class_name(&self, attrs: &HashMap<String, String>, pod: &Pod) -> Result<String> {
        if let Some(named) = attrs.get(keys::SPC_NAME).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let mut known = self.lock();
            if known.get(&pod.uid).map(String::as_str) != Some(named) {
                known.insert(pod.uid.clone(), named.to_string());
            }
            return Ok(named.to_string());
        }
        self.lock().get(&pod.uid).cloned().ok_or_else(|| {
            invalid(format!(
                "the request names no SecretProviderClass (attribute {}: a driver before v1.6 sends none when it rotates) and this provider has not mounted pod {}/{} since it started; classes are authoritative here (-spc-authoritative-class), so the mount is refused until the pod's volume is published again",
                keys::SPC_NAME,
                pod.namespace,
                pod.name
            ))
        })
    }

    /// Refuses a mount whose `attributes` (as the driver sent them, for
    /// `pod`) change what its class says of the protected parameters.
    pub async fn check(&self, attributes: &str, pod: &Pod) -> Result<()> {
        let attrs: HashMap<String, String> = serde_json::from_str(attributes)
            .map_err(|e| invalid(format!("attributes are not a JSON object of strings: {e}")))?;
        let class = self.class_name(&attrs, pod)?;
        let ns = &pod.namespace;
        if !is_object_name(&class) || !is_object_name(ns) {
            return Err(invalid(format!(
                "SecretProviderClass {:?} in namespace {:?} is not a valid object name",
                cut(&class),
                cut(ns)
            )));
        }
        let path = format!("/apis/secrets-store.csi.x-k8s.io/v1/namespaces/{ns}/secretproviderclasses/{class}");
        let found = self
            .kube
            .get_json(&path)
            .await
            .map_err(|e| e.classify(&format!("reading SecretProviderClass {ns}/{class}"), GRANT))?;
        let declared = found.pointer("/spec/parameters").and_then(Json::as_object);
        for group in PROTECTED {
            for name in *group {
                let sent = attrs.get(*name).map(String::as_str);
                let says = declared.and_then(|p| p.get(*name)).and_then(Json::as_str);
                if sent != says {
                    return Err(invalid(format!(
                        "parameter {name}: the pod's volumeAttributes make it {} where SecretProviderClass {ns}/{class} says {}; classes are authoritative on this provider (-spc-authoritative-class): remove {name} from the pod's volumeAttributes, or change the class",
                        shown(name, sent),
                        shown(name, says)
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_path_are_not_object_names() {
        for ok in ["spc", "my-class.v2", "a"] {
            assert!(is_object_name(ok), "{ok}");
        }
        for bad in ["", "..", "a/b", "a?x=1", "A", "-a", "a..b", &"a".repeat(254)] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn objects_and_long_values_are_shown_by_length() {
        assert_eq!(shown("roleName", Some("app")), "\"app\"");
        assert_eq!(shown("objects", Some("- a")), "3 bytes");
        assert_eq!(shown("vaultAddress", None), "unset");
        assert_eq!(shown("audience", Some(&"x".repeat(200))), "200 bytes");
    }
}
