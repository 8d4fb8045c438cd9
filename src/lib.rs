//! A HashiCorp Vault / OpenBao provider for the Kubernetes Secrets Store CSI
//! driver: it logs in to Vault as the mounting pod, reads the secrets its
//! SecretProviderClass names, and returns them to the driver as files.
//!
//! Module map, by layer, top to bottom. A module uses only modules of its
//! own layer or below, never one above, and no import closes a cycle:
//! `tests/it/layers.rs` reads this list as its rank table and fails on any
//! upward edge, naming the file and line; `docs/architecture.md` draws it.
//!
//! - **the binary and its wiring**: [`cli`] (the `mount` and `check`
//!   subcommands), [`app`] (the one place that builds and starts
//!   everything), [`config`] (command-line flags and the environment,
//!   resolved once)
//! - **the driver's side**: [`server`] (gRPC on the unix sockets, the health
//!   port)
//! - **a mount, step by step**: [`mount`] (the pod's Vault token, the
//!   reads, rendering, `mount::sync` of Kubernetes Secrets)
//! - **a tenant's request, parsed**: [`spc`] (attributes, objects and sync
//!   parameters into a `MountSpec`, every problem bounded and named),
//!   [`kubernetes::classes`] (the class a mount names, when classes are
//!   authoritative)
//! - **what a mount holds and makes**: [`ledger`] (held tokens and leases:
//!   reuse, renewal, rotation, retirement, the state file, and
//!   `ledger::podwatch`, the pod deletions that feed it), [`render`] (files
//!   and versions), [`kubernetes::identity`] (proof that a request comes
//!   from the pod it names)
//! - **keyed versions and templates**: [`versions`] (object versions and
//!   their key Secret), [`template`] (the sandboxed template engine)
//! - **the domain model**: [`model`] (the pod, the validated request, its
//!   objects and outputs, the Secrets it syncs, the driver's path rules)
//! - **talking to Vault and Kubernetes**: [`vault`] (the client and its
//!   connection settings), [`vault::pool`] (one client per connection),
//!   [`vault::probe`] (reachability), [`vault::failover`] (which node
//!   next), [`vault::transport`] (HTTP on reqwest), [`kubernetes::client`]
//!   (kube-rs), [`kubernetes`]
//! - **at the bottom**: [`policy`] (the operator's limits on class
//!   parameters), [`endpoint`] (where a server listens), [`pem`] (bounded
//!   PEM files), [`bounded`] (the one bounded map every cache uses),
//!   [`budget`] (memory a mount may hold), [`slots`] (work
//!   shared fairly between namespaces), [`tasks`] (the long-running tasks,
//!   started and stopped one way), [`metrics`], [`logging`],
//!   [`flavor`] (Vault or OpenBao defaults per socket), [`proto`] (the
//!   driver's protocol types), [`error`] (error kinds, their gRPC codes and
//!   metric labels)
//!
//! The test bed is the separate `vcp-testbed` crate, which the provider only
//! dev-depends on.
#![forbid(unsafe_code)]

pub mod app;
mod bounded;
mod budget;
pub mod cli;
pub mod config;
mod endpoint;
mod error;
pub mod flavor;
mod kubernetes;
mod ledger;
pub mod logging;
mod metrics;
mod model;
mod mount;
mod pem;
pub mod policy;
pub mod render;
mod server;
mod slots;
pub mod spc;
pub mod tasks;
mod template;
mod vault;
mod versions;

/// How to reach a Vault, for callers that build a `spc::Defaults` of
/// their own (`spc::Defaults::builtin` gives the provider's).
pub use endpoint::Endpoint;
pub use vault::{TlsConfig, VaultConfig};
/// Generated protocol types and service stubs for the driver contract.
pub use vcp_proto as proto;

#[cfg(test)]
mod redaction_tests {
    //! Every type that holds a token, a request body or secret content
    //! formats with `{:?}` without it.

    const SECRET: &str = "s3cr3t-marker";

    fn clean(what: &str, debug: String) {
        assert!(!debug.contains(SECRET), "{what} leaks through Debug: {debug}");
        assert!(!debug.is_empty());
    }

    #[test]
    fn debug_output_never_holds_secrets() {
        let request = crate::proto::MountRequest {
            attributes: format!("{{\"csi.storage.k8s.io/serviceAccount.tokens\":\"{SECRET}\"}}"),
            secrets: SECRET.into(),
            target_path: "/t".into(),
            permission: "420".into(),
            current_object_version: Vec::new(),
        };
        clean("MountRequest", format!("{request:?}"));
        let file = crate::proto::File {
            path: "f".into(),
            mode: 0o644,
            contents: SECRET.as_bytes().to_vec(),
        };
        clean("File", format!("{file:?}"));
        let response = crate::proto::MountResponse {
            object_version: Vec::new(),
            error: None,
            files: vec![file],
        };
        clean("MountResponse", format!("{response:?}"));
        let input = crate::mount::MountInput {
            attributes: request.attributes.clone(),
            secrets: SECRET.into(),
            permission: "420".into(),
        };
        clean("MountInput", format!("{input:?}"));
        let http_request = crate::vault::transport::Request {
            method: http::Method::POST,
            path_and_query: "/v1/auth/kubernetes/login".into(),
            headers: vec![(http::HeaderName::from_static("x-vault-token"), SECRET.into())],
            body: Some((bytes::Bytes::from(SECRET), "application/json")),
        };
        clean("http::Request", format!("{http_request:?}"));
        let http_response = crate::vault::transport::Response {
            status: 200,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from(SECRET),
        };
        clean("http::Response", format!("{http_response:?}"));
        let read = crate::vault::ReadKey {
            method: "PUT".into(),
            path: "/v1/pki/issue/web".into(),
            query: Vec::new(),
            body: Some(SECRET.into()),
        };
        clean("ReadKey", format!("{read:?}"));
        let token = crate::vault::VaultToken {
            token: SECRET.into(),
            accessor: "acc".into(),
            issued: std::time::SystemTime::UNIX_EPOCH,
            ttl: std::time::Duration::ZERO,
            expires: None,
            renewable: false,
        };
        clean("VaultToken", format!("{token:?}"));
        let provided = crate::spc::ProvidedToken {
            token: SECRET.into(),
            expires: None,
        };
        clean("ProvidedToken", format!("{provided:?}"));
        let out = crate::render::OutFile {
            path: "f".into(),
            mode: 0o600,
            contents: SECRET.as_bytes().to_vec(),
        };
        clean("OutFile", format!("{out:?}"));
    }
}
