//! Talking to Kubernetes: the API client ([`client`]), the watch of this
//! node's pods behind revoke-on-delete ([`podwatch`]), the proof that a
//! request comes from the pod it names ([`identity`]), Secret sync
//! ([`sync`]) and the check of a mount against the class it names
//! ([`classes`]).

pub mod classes;
pub mod client;
pub mod identity;
pub mod podwatch;
pub mod sync;
