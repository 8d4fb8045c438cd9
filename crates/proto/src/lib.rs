//! The Secrets Store CSI driver's provider protocol: the gRPC service
//! `v1alpha1.CSIDriverProvider` generated from `proto/provider.proto` (by
//! protox and tonic-prost-build, so no system `protoc` is needed), and the
//! attribute keys kubelet and the driver put in every Mount request. Shared
//! by the provider and the test bed's driver-like clients.
#![forbid(unsafe_code)]
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("v1alpha1");

/// Lengths instead of contents: the attributes and secrets carry
/// service-account tokens, the secrets field a Secret's data.
impl std::fmt::Debug for MountRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountRequest")
            .field("attributes_len", &self.attributes.len())
            .field("secrets_len", &self.secrets.len())
            .field("target_path", &self.target_path)
            .field("permission", &self.permission)
            .field("current_object_version", &self.current_object_version)
            .finish()
    }
}

impl std::fmt::Debug for MountResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountResponse")
            .field("object_version", &self.object_version)
            .field("error", &self.error)
            .field("files", &self.files)
            .finish()
    }
}

/// Path, mode and size; never the contents.
impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("len", &self.contents.len())
            .finish()
    }
}

/// Attribute keys kubelet and the driver add to every request.
pub mod keys {
    /// Pod name (needs `podInfoOnMount: true` on the CSIDriver).
    pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    /// Pod namespace.
    pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    /// Pod UID.
    pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    /// Pod service account name.
    pub const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
    /// Tokens kubelet requested for the CSIDriver's `tokenRequests`.
    pub const SA_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    /// Name of the SecretProviderClass (driver v1.6+ only).
    pub const SPC_NAME: &str = "secretProviderClass";
}
