//! Talking to Kubernetes: the API client ([`client`]), the watch of this
//! node's pods behind revoke-on-delete ([`podwatch`]), the proof that a
//! request comes from the pod it names ([`identity`]) and Secret sync
//! ([`sync`]).

pub mod client;
pub mod identity;
pub mod podwatch;
pub mod sync;
