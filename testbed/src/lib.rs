//! Test bed: the parts that stand in for a cluster in tests and the demo.
//! A Kubernetes API double, a driver-like gRPC client, real gRPC clients
//! (grpc-go and C-core programs, see [`clients`]), and launchers for a real
//! OpenBao (a dev server, or a raft cluster: [`raft`]) and PostgreSQL. The provider never depends on it: tests
//! and the demo run the provider binary against it.
#![forbid(unsafe_code)]

pub mod clients;
pub mod driver;
pub mod fault_proxy;
pub mod floor;
pub mod kube_double;
pub mod openbao;
pub mod postgres;
pub mod raft;
pub mod vault_proxy;
pub mod wire;
pub mod world;
