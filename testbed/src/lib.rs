//! Test bed: the cluster around the provider in tests and the demo. A
//! Kubernetes control plane ([`control_plane`]: kube-apiserver and etcd from
//! the envtest assets where `KUBEBUILDER_ASSETS` names them, the project's
//! own double, [`kube_double`], elsewhere) shared by a test binary, each test's share of it
//! ([`cluster`]) behind a fault proxy ([`kube_proxy`]), the install
//! manifests as `kubectl kustomize` renders them ([`deploy`]), a
//! driver-like gRPC client, real gRPC clients (grpc-go and C-core programs,
//! see [`clients`]), and launchers for a real OpenBao (a dev server, or a
//! raft cluster: [`raft`]) and PostgreSQL. The provider never depends on
//! it: tests and the demo run the provider binary against it.
#![forbid(unsafe_code)]

pub mod child;
pub mod clients;
pub mod cluster;
pub mod control_plane;
pub mod deploy;
pub mod driver;
pub mod fault_proxy;
pub mod floor;
pub mod hostile;
pub mod kube_double;
pub mod kube_proxy;
pub mod kubelet;
pub mod openbao;
pub mod pki;
pub mod postgres;
pub mod raft;
pub mod vault_proxy;
pub mod wire;
pub mod world;
