//! The provider's integration tests, one binary (one link) for all: the real
//! provider binary against real OpenBao, PostgreSQL, gRPC clients and
//! readers, and a real kube-apiserver (one control plane for the binary,
//! namespaces per test; see `vcp_testbed::kubernetes::cluster`). Run one group with
//! `cargo test --test it <group>::` (e.g. `cargo test --test it leases::`).

mod support;

mod core;
mod corpus;
mod failover;
mod failure_paths;
mod faults;
mod hostile;
mod install;
mod key_watch;
mod kubectl;
mod kubelet;
mod kubernetes;
mod kubernetes_conformance;
mod layers;
mod leases;
mod load;
mod operate;
mod proofs;
mod readers;
mod real_clients;
mod retirement;
mod shaping;
mod sync;
mod tenancy;
