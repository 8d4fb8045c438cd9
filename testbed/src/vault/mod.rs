//! Vault: a real OpenBao, one dev or TLS server ([`openbao`]) or a raft
//! cluster ([`raft`]); proxies between it and the provider that inject
//! faults ([`fault_proxy`]) or count the requests ([`vault_proxy`]); and the
//! benchmark's floor, a direct Vault client doing the least any client must
//! to mount ([`floor`]).

pub mod fault_proxy;
pub mod floor;
pub mod openbao;
pub mod raft;
pub mod vault_proxy;
