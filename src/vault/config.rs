//! Connection settings: how to reach one Vault server or cluster, kept with
//! the client that uses them. Flags and the environment give the
//! provider's defaults (`crate::config`), a SecretProviderClass may override
//! them (`crate::spc`); a [`VaultConfig`] is part of every token and pool
//! key.

use std::path::PathBuf;

use serde::Deserialize;

use super::failover::Addresses;

/// How to reach one Vault server or cluster. Part of the token cache key,
/// so two SPCs pointing at different servers never share a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub struct VaultConfig {
    /// Where Vault listens: one address, or the nodes of one cluster in
    /// order of preference (state files from before lists say `endpoint`).
    #[serde(alias = "endpoint")]
    pub addresses: Addresses,
    /// `X-Vault-Namespace` for every request, login included.
    pub namespace: Option<String>,
    /// TLS options.
    pub tls: TlsConfig,
}

/// TLS settings for the connection to Vault.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
pub struct TlsConfig {
    /// PEM file of CA certificates.
    pub ca_cert: Option<PathBuf>,
    /// Directory of PEM CA files.
    pub ca_directory: Option<PathBuf>,
    /// Name to verify the server certificate against (and send as SNI).
    pub server_name: Option<String>,
    /// Client certificate and key for mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Accept any server certificate.
    pub skip_verify: bool,
}
