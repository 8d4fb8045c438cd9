//! A HashiCorp Vault / OpenBao provider for the Kubernetes Secrets Store CSI
//! driver: it logs in to Vault as the mounting pod, reads the secrets its
//! SecretProviderClass names, and returns them to the driver as files.
//!
//! Module map: [`config`] (flags), [`spc`] (parsing a Mount request),
//! [`mount`] (how a mount works), [`render`] (how files and versions are
//! made), [`vault`] (talking to Vault), [`kube`]
//! (talking to Kubernetes), [`versions`] (object versions), [`http`] (the
//! shared transport), [`server`] (gRPC, socket, health), [`error`] (error
//! kinds and their gRPC codes), [`metrics`] (what Prometheus scrapes),
//! [`logging`] (log setup, runtime level), [`probe`] (Vault reachability),
//! [`cli`] (the `mount` and `check` subcommands), [`testbed`] (test doubles
//! and harness helpers, not used by the provider binary).
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod kube;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod mount;
pub mod podwatch;
pub mod probe;
pub mod render;
pub mod server;
pub mod spc;
pub mod sync;
pub mod testbed;
pub mod vault;
pub mod versions;

/// Generated protocol types and service stubs for the driver contract.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("v1alpha1");
}
