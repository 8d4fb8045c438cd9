//! Kubernetes: the control plane on one of two backends
//! ([`control_plane`]; the project's double is [`kube_double`]), the key
//! material both backends share ([`pki`]), a test's share of the control
//! plane ([`cluster`]) behind a fault proxy ([`kube_proxy`]), and the
//! install manifests under `deploy/` as `kubectl kustomize` renders them
//! ([`deploy`]).

pub mod cluster;
pub mod control_plane;
pub mod deploy;
pub mod kube_double;
pub mod kube_proxy;
pub mod pki;
