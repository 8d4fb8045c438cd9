//! One error type for the whole provider, and the single place that maps an
//! error's cause to the gRPC status the driver (and so `kubectl describe pod`)
//! sees.
//!
//! Messages are written for the person reading pod events: what was attempted,
//! with which role / mount / path / service account, what Vault or Kubernetes
//! answered, and a hint where the cause is well known. They never contain a
//! token or a secret value; callers only ever pass Vault's and Kubernetes'
//! own error strings, which do not echo request bodies.

use tonic::Code;

/// Everything that can make a Mount fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request or the SecretProviderClass is malformed; nothing was fetched.
    #[error("invalid mount request: {0}")]
    InvalidRequest(String),

    /// Vault refused a login or a read (HTTP 403).
    #[error("{0}")]
    VaultDenied(String),

    /// A secret, or a key inside it, does not exist.
    #[error("{0}")]
    NotFound(String),

    /// Vault rejected the request as malformed (HTTP 4xx other than 403/404).
    #[error("{0}")]
    VaultRejected(String),

    /// Vault could not be reached or failed (connection error, 5xx) before any
    /// secret was requested, so a retry of the whole mount duplicates nothing.
    #[error("{0}")]
    VaultUnavailable(String),

    /// Vault failed while secrets were being fetched. A driver-level retry
    /// would repeat reads that may already have minted credentials, so this
    /// is deliberately not reported as UNAVAILABLE.
    #[error("{0}")]
    VaultFailed(String),

    /// The Kubernetes API refused us (RBAC, missing object).
    #[error("{0}")]
    KubeDenied(String),

    /// The Kubernetes API could not be reached or failed.
    #[error("{0}")]
    KubeUnavailable(String),

    /// A response from Vault or Kubernetes was not what the API promises.
    #[error("{0}")]
    BadResponse(String),

    /// The mount ran out of time (the caller's deadline or our own timeouts).
    #[error("{0}")]
    Timeout(String),

    /// A Secret to sync exists and is not ours, or another manager owns it.
    #[error("{0}")]
    SyncRefused(String),

    /// The files would exceed what the driver accepts.
    #[error("{0}")]
    TooLarge(String),

    /// The provider is shutting down or misconfigured.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The gRPC status code for this error: the one mapping from cause to code.
    ///
    /// UNAVAILABLE makes the driver retry the whole Mount up to three times, so
    /// it is only used where nothing non-idempotent can have happened yet.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidRequest(_) => Code::InvalidArgument,
            Error::VaultDenied(_) | Error::KubeDenied(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::VaultRejected(_) | Error::SyncRefused(_) => Code::FailedPrecondition,
            Error::VaultUnavailable(_) | Error::KubeUnavailable(_) => Code::Unavailable,
            Error::VaultFailed(_) => Code::Aborted,
            Error::BadResponse(_) | Error::Internal(_) => Code::Internal,
            Error::Timeout(_) => Code::DeadlineExceeded,
            Error::TooLarge(_) => Code::ResourceExhausted,
        }
    }

    /// A short, fixed label for logs and metrics (low cardinality).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::VaultDenied(_) => "vault_denied",
            Error::NotFound(_) => "not_found",
            Error::VaultRejected(_) => "vault_rejected",
            Error::VaultUnavailable(_) => "vault_unavailable",
            Error::VaultFailed(_) => "vault_failed",
            Error::KubeDenied(_) => "kube_denied",
            Error::KubeUnavailable(_) => "kube_unavailable",
            Error::BadResponse(_) => "bad_response",
            Error::Timeout(_) => "timeout",
            Error::TooLarge(_) => "too_large",
            Error::SyncRefused(_) => "sync_refused",
            Error::Internal(_) => "internal",
        }
    }

    /// Prefixes the message with context, keeping the kind (and so the code).
    pub fn context(self, what: impl std::fmt::Display) -> Error {
        let wrap = |m: String| format!("{what}: {m}");
        match self {
            Error::InvalidRequest(m) => Error::InvalidRequest(wrap(m)),
            Error::VaultDenied(m) => Error::VaultDenied(wrap(m)),
            Error::NotFound(m) => Error::NotFound(wrap(m)),
            Error::VaultRejected(m) => Error::VaultRejected(wrap(m)),
            Error::VaultUnavailable(m) => Error::VaultUnavailable(wrap(m)),
            Error::VaultFailed(m) => Error::VaultFailed(wrap(m)),
            Error::KubeDenied(m) => Error::KubeDenied(wrap(m)),
            Error::KubeUnavailable(m) => Error::KubeUnavailable(wrap(m)),
            Error::BadResponse(m) => Error::BadResponse(wrap(m)),
            Error::Timeout(m) => Error::Timeout(wrap(m)),
            Error::TooLarge(m) => Error::TooLarge(wrap(m)),
            Error::SyncRefused(m) => Error::SyncRefused(wrap(m)),
            Error::Internal(m) => Error::Internal(wrap(m)),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

/// Result alias used throughout the provider.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_the_documented_code() {
        let cases = [
            (Error::InvalidRequest(String::new()), Code::InvalidArgument),
            (Error::VaultDenied(String::new()), Code::PermissionDenied),
            (Error::KubeDenied(String::new()), Code::PermissionDenied),
            (Error::NotFound(String::new()), Code::NotFound),
            (Error::VaultRejected(String::new()), Code::FailedPrecondition),
            (Error::VaultUnavailable(String::new()), Code::Unavailable),
            (Error::KubeUnavailable(String::new()), Code::Unavailable),
            (Error::VaultFailed(String::new()), Code::Aborted),
            (Error::BadResponse(String::new()), Code::Internal),
            (Error::Internal(String::new()), Code::Internal),
            (Error::Timeout(String::new()), Code::DeadlineExceeded),
            (Error::TooLarge(String::new()), Code::ResourceExhausted),
            (Error::SyncRefused(String::new()), Code::FailedPrecondition),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{}", err.kind());
        }
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = Error::VaultDenied("permission denied".into()).context("reading secret/x");
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.to_string(), "reading secret/x: permission denied");
        let s: tonic::Status = e.into();
        assert_eq!(s.code(), Code::PermissionDenied);
    }
}
