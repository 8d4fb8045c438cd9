//! Test bed: the world around the provider in tests, the demo and the
//! benchmark, grouped by the part of a real installation each piece stands
//! for. The provider never depends on it: tests and the demo run the
//! provider binary against it.
//!
//! - [`kubernetes`]: the control plane ([`kubernetes::control_plane`]:
//!   kube-apiserver and etcd from the envtest assets where
//!   `KUBEBUILDER_ASSETS` names them, the project's own double,
//!   [`kubernetes::kube_double`], elsewhere) shared by a test binary, its key
//!   material ([`kubernetes::pki`]), each test's share of it
//!   ([`kubernetes::cluster`]) behind a fault proxy
//!   ([`kubernetes::kube_proxy`]), and the install manifests as
//!   `kubectl kustomize` renders them ([`kubernetes::deploy`]).
//! - [`vault`]: a real OpenBao (a dev or TLS server,
//!   [`vault::openbao`], or a raft cluster, [`vault::raft`]), the proxies
//!   put in front of it (faults: [`vault::fault_proxy`]; counting:
//!   [`vault::vault_proxy`]), and the benchmark's floor, a direct Vault
//!   client doing the least a provider must ([`vault::floor`]).
//! - [`driver`]: the other side of the provider's socket: the driver-like
//!   tonic client ([`driver`] itself), kubelet and the driver as they treat
//!   a pod's volume ([`driver::kubelet`]), real gRPC clients run as child
//!   processes ([`driver::clients`]) and a recorder of what a client puts on
//!   the wire ([`driver::wire`]).
//!
//! At the top, what stands for none of these parts: [`world`] wires them
//! all together (OpenBao's kubernetes auth on the test's share of the
//! control plane, pods, provider processes); [`postgres`] finds the
//! PostgreSQL server behind OpenBao's database engine, a part outside both
//! Kubernetes and Vault; [`hostile`] holds a hostile tenant's
//! SecretProviderClasses, input rather than a part; [`child`] (child
//! processes that die with the test) and [`ports`] (free loopback ports)
//! serve every group.
#![forbid(unsafe_code)]

pub mod child;
pub mod driver;
pub mod hostile;
pub mod kubernetes;
pub mod ports;
pub mod postgres;
pub mod vault;
pub mod world;
