//! Talking to Kubernetes: the API client ([`client`]), the proof that a
//! request comes from the pod it names ([`identity`]) and the check of a
//! mount against the class it names ([`classes`]). The watch of this node's
//! pods lives with the ledger it feeds ([`crate::ledger::podwatch`]), Secret
//! sync with the mount step it is ([`crate::mount::sync`]).

pub mod classes;
pub mod client;
pub mod identity;
