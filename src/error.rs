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

    /// The request does not prove it comes from the pod it names (its
    /// service-account token names another pod, is expired or forged, or the
    /// pod does not run on this node).
    #[error("{0}")]
    NotThisPod(String),

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
            Error::VaultDenied(_) | Error::KubeDenied(_) | Error::NotThisPod(_) => Code::PermissionDenied,
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
            Error::NotThisPod(_) => "not_this_pod",
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
            Error::NotThisPod(m) => Error::NotThisPod(wrap(m)),
            Error::SyncRefused(m) => Error::SyncRefused(wrap(m)),
            Error::Internal(m) => Error::Internal(wrap(m)),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), readable(&e.to_string()))
    }
}

/// Longest message handed to the driver. gRPC carries it in a header, which
/// clients bound (a larger one reaches the driver as a bare "h2 protocol
/// error"), and Kubernetes cuts event messages at 1 KiB anyway.
pub const MAX_MESSAGE: usize = 4096;
/// Longest quoted value kept whole in a message.
const MAX_QUOTED: usize = 96;

/// The message as the person reading pod events should get it: every
/// quoted value (messages quote what users wrote, `{:?}`) longer than
/// [`MAX_QUOTED`] shortened to its start and its length, then the whole cut
/// to [`MAX_MESSAGE`]. So a 7 MiB `objectName` still yields a one-line
/// message that ends with what is wrong with it.
pub fn readable(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE));
    let mut rest = message;
    while let Some(open) = rest.find('"') {
        out.push_str(&rest[..=open]);
        let quoted = &rest[open + 1..];
        // The closing quote: the first one not escaped by a backslash.
        let mut close = None;
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = close.unwrap_or(quoted.len());
        let value = &quoted[..end];
        if value.len() > MAX_QUOTED {
            let mut cut = MAX_QUOTED - 32;
            while !value.is_char_boundary(cut) || value[..cut].ends_with('\\') {
                cut -= 1;
            }
            out.push_str(&value[..cut]);
            out.push_str(&format!("…({} bytes)", value.len()));
        } else {
            out.push_str(value);
        }
        match close {
            Some(i) => {
                out.push('"');
                rest = &quoted[i + 1..];
            }
            None => rest = "",
        }
    }
    out.push_str(rest);
    if out.len() > MAX_MESSAGE {
        let total = out.len();
        let mut cut = MAX_MESSAGE - 48;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str(&format!(" …(message cut from {total} bytes)"));
    }
    out
}

/// Result alias used throughout the provider.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its chain of sources as one line, each cause once (many
/// libraries repeat their source's text in their own).
pub(crate) fn describe_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

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
            (Error::NotThisPod(String::new()), Code::PermissionDenied),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{}", err.kind());
        }
    }

    #[test]
    fn long_quoted_values_and_long_messages_are_shortened() {
        let name = "a".repeat(7 << 20);
        let m = readable(&format!("object {name:?} (#1): objectName: is longer than 4096 bytes"));
        assert!(m.len() < 200, "{m}");
        assert!(m.starts_with("object \"aaaa"), "{m}");
        assert!(
            m.ends_with("…(7340032 bytes)\" (#1): objectName: is longer than 4096 bytes"),
            "{m}"
        );
        // Short values, escapes and unbalanced quotes survive as they are.
        let short = r#"key "a\"b" not found; Vault said: bad "thing"#;
        assert_eq!(readable(short), short);
        let escaped = format!("{:?}", format!("{}\"{}", "x".repeat(100), "y".repeat(100)));
        let m = readable(&format!("value {escaped} is bad"));
        assert!(m.ends_with("bytes)\" is bad"), "{m}");
        // Many short problems: cut at the limit, saying so.
        let many = vec!["object \"/k\" (#1): objectName: \"/k\" must be a relative path"; 10_000].join("; ");
        let m = readable(&many);
        assert!(
            m.len() <= MAX_MESSAGE && m.ends_with(&format!("(message cut from {} bytes)", many.len())),
            "{m}"
        );
        let s: tonic::Status = Error::InvalidRequest(many).into();
        assert!(s.message().len() <= MAX_MESSAGE);
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
