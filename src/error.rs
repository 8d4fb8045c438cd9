//! One error type for the whole provider — a kind, a message and the cause —
//! and the single place that maps an error's kind to the gRPC status the
//! driver (and so `kubectl describe pod`) sees and to its metric label.
//!
//! Messages are written for the person reading pod events: what was attempted,
//! with which role / mount / path / service account, what Vault or Kubernetes
//! answered, and a hint where the cause is well known. They never contain a
//! token or a secret value; callers only ever pass Vault's and Kubernetes'
//! own error strings, which do not echo request bodies.

use std::error::Error as StdError;
use std::fmt;

use tonic::Code;

/// What went wrong, as far as the driver, the metrics and the log care: the
/// one mapping to a gRPC code ([`ErrorKind::code`]) and to a metric label
/// ([`ErrorKind::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request or the SecretProviderClass is malformed; nothing was fetched.
    InvalidRequest,
    /// Vault refused a login or a read (HTTP 403).
    VaultDenied,
    /// A secret, or a key inside it, does not exist.
    NotFound,
    /// Vault rejected the request as malformed (HTTP 4xx other than 403/404).
    VaultRejected,
    /// Vault could not be reached or failed (connection error, 5xx) before any
    /// secret was requested, so a retry of the whole mount duplicates nothing.
    VaultUnavailable,
    /// Vault failed while secrets were being fetched. A driver-level retry
    /// would repeat reads that may already have minted credentials, so this
    /// is deliberately not reported as UNAVAILABLE.
    VaultFailed,
    /// The Kubernetes API refused us (RBAC, missing object).
    KubeDenied,
    /// The Kubernetes API could not be reached or failed.
    KubeUnavailable,
    /// A response from Vault or Kubernetes was not what the API promises.
    BadResponse,
    /// The mount ran out of time (the caller's deadline or our own timeouts).
    Timeout,
    /// A Secret to sync exists and is not ours, or another manager owns it.
    SyncRefused,
    /// The request does not prove it comes from the pod it names (its
    /// service-account token names another pod, is expired or forged, or the
    /// pod does not run on this node).
    NotThisPod,
    /// The mount asks for more than one mount may have: files over what the
    /// driver accepts, or more memory than `-max-mount-bytes`.
    TooLarge,
    /// Capacity the provider shares between mounts (mount slots, the
    /// memory pool of `-max-inflight-bytes`) is taken by others: a retry
    /// may pass.
    Busy,
    /// The provider is shutting down or misconfigured.
    Internal,
}

impl ErrorKind {
    /// The gRPC status code for this kind: the one mapping from cause to code.
    ///
    /// Every code is *final* for kubelet (none of CANCELLED,
    /// DEADLINE_EXCEEDED, UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED). kubelet
    /// keeps the volume's target directory after a non-final code and
    /// retries soon; the driver then finds that fresh directory, answers OK
    /// without calling the provider, and the pod starts with an empty
    /// secrets volume until a republish after the rotation interval. After
    /// a final code kubelet removes the directory and its retry calls the
    /// provider afresh. So a failure that may pass — Vault or Kubernetes
    /// unreachable, failing or slow, the provider's shared capacity taken —
    /// is
    /// FAILED_PRECONDITION ("not now"), and one the class causes by asking
    /// too much is INVALID_ARGUMENT; the kind stays in the message, the log
    /// line and the metric label ([`ErrorKind::label`]).
    pub fn code(self) -> Code {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::TooLarge => Code::InvalidArgument,
            ErrorKind::VaultDenied | ErrorKind::KubeDenied | ErrorKind::NotThisPod => Code::PermissionDenied,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::VaultRejected
            | ErrorKind::SyncRefused
            | ErrorKind::VaultUnavailable
            | ErrorKind::KubeUnavailable
            | ErrorKind::VaultFailed
            | ErrorKind::Timeout
            | ErrorKind::Busy => Code::FailedPrecondition,
            ErrorKind::BadResponse | ErrorKind::Internal => Code::Internal,
        }
    }

    /// A short, fixed label for logs and metrics (low cardinality).
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::VaultDenied => "vault_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::VaultRejected => "vault_rejected",
            ErrorKind::VaultUnavailable => "vault_unavailable",
            ErrorKind::VaultFailed => "vault_failed",
            ErrorKind::KubeDenied => "kube_denied",
            ErrorKind::KubeUnavailable => "kube_unavailable",
            ErrorKind::BadResponse => "bad_response",
            ErrorKind::Timeout => "timeout",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Busy => "busy",
            ErrorKind::NotThisPod => "not_this_pod",
            ErrorKind::SyncRefused => "sync_refused",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Everything that can make a Mount fail: a kind, the message for the
/// person reading pod events, and the error that caused it, if one did
/// (the `std::io::Error` shape).
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    /// Whether the message already tells the cause's text ([`Error::because`]):
    /// the chain then goes on below it, so that each cause is told once.
    told: bool,
}

impl Error {
    /// An error of `kind` saying `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
            told: false,
        }
    }

    /// An error of `kind` while doing `what`, caused by `source`: the
    /// message is `what: <source>`. The cause is kept ([`Error::cause`]),
    /// and since the message tells it, the chain of sources goes on below
    /// it: a reader walking the chain meets each text once.
    pub fn because(kind: ErrorKind, what: impl fmt::Display, source: impl StdError + Send + Sync + 'static) -> Error {
        Error {
            kind,
            message: format!("{what}: {source}"),
            source: Some(Box::new(source)),
            told: true,
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The gRPC status code (see [`ErrorKind::code`]).
    pub fn code(&self) -> Code {
        self.kind.code()
    }

    /// The message, without the kind's prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error told as another kind (the cause and message kept).
    pub fn into_kind(self, kind: ErrorKind) -> Error {
        Error { kind, ..self }
    }

    /// The same error, with `source` as its cause (the message unchanged:
    /// it already says what the cause means here).
    pub fn with_source(self, source: impl StdError + Send + Sync + 'static) -> Error {
        Error {
            source: Some(Box::new(source)),
            told: false,
            ..self
        }
    }

    /// What caused this error, if anything did (to inspect its type; its
    /// text may already be part of the message, see [`Error::because`]).
    pub fn cause(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }

    /// Ends the message with what the reader can do about it.
    pub fn hint(self, hint: impl fmt::Display) -> Error {
        Error {
            message: format!("{}. {hint}", self.message),
            ..self
        }
    }

    /// Prefixes the message with context, keeping the kind (and so the code)
    /// and the cause.
    pub fn context(self, what: impl fmt::Display) -> Error {
        Error {
            message: format!("{what}: {}", self.message),
            ..self
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::InvalidRequest => write!(f, "invalid mount request: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl StdError for Error {
    /// The cause, unless the message already tells it: then the cause's
    /// own source (each text once along the chain).
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let cause = self.cause()?;
        if self.told {
            cause.source()
        } else {
            Some(cause)
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

/// The longest value shown whole in a message (in characters).
const QUOTED: usize = 64;

/// A tenant's value as a message shows it: Rust-quoted (`"a\"b"`), cut to
/// its first [`QUOTED`] characters and its length in bytes when longer.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(QUOTED) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}…({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gRPC codes kubelet treats as "the operation may still be in
    /// progress" when NodePublishVolume returns them: it keeps the target
    /// directory and retries, and the driver's retry of a mount it just set up
    /// answers OK without calling the provider. The provider never answers a
    /// Mount with one of these ([`ErrorKind::code`]).
    const NOT_FINAL: [Code; 5] = [
        Code::Cancelled,
        Code::DeadlineExceeded,
        Code::Unavailable,
        Code::ResourceExhausted,
        Code::Aborted,
    ];

    /// Every kind, listed by a match without a wildcard: a new kind does not
    /// compile until it is added here, and so to the tests below.
    fn every_kind() -> Vec<ErrorKind> {
        let all = [
            ErrorKind::InvalidRequest,
            ErrorKind::VaultDenied,
            ErrorKind::NotFound,
            ErrorKind::VaultRejected,
            ErrorKind::VaultUnavailable,
            ErrorKind::VaultFailed,
            ErrorKind::KubeDenied,
            ErrorKind::KubeUnavailable,
            ErrorKind::BadResponse,
            ErrorKind::Timeout,
            ErrorKind::SyncRefused,
            ErrorKind::NotThisPod,
            ErrorKind::TooLarge,
            ErrorKind::Busy,
            ErrorKind::Internal,
        ];
        for kind in all {
            match kind {
                ErrorKind::InvalidRequest
                | ErrorKind::VaultDenied
                | ErrorKind::NotFound
                | ErrorKind::VaultRejected
                | ErrorKind::VaultUnavailable
                | ErrorKind::VaultFailed
                | ErrorKind::KubeDenied
                | ErrorKind::KubeUnavailable
                | ErrorKind::BadResponse
                | ErrorKind::Timeout
                | ErrorKind::SyncRefused
                | ErrorKind::NotThisPod
                | ErrorKind::TooLarge
                | ErrorKind::Busy
                | ErrorKind::Internal => {}
            }
        }
        all.to_vec()
    }

    #[test]
    fn no_kind_answers_a_code_kubelet_would_not_take_as_final() {
        let kinds = every_kind();
        assert_eq!(kinds.len(), 15);
        for kind in kinds {
            let code = Error::new(kind, "x").code();
            assert!(
                !NOT_FINAL.contains(&code),
                "{} answers {code:?}, which kubelet takes as still in progress: a pod could start with an empty volume",
                kind.label()
            );
            assert_eq!(tonic::Status::from(Error::new(kind, "x")).code(), code);
        }
    }

    #[test]
    fn every_kind_maps_to_the_documented_code() {
        let cases = [
            (ErrorKind::InvalidRequest, Code::InvalidArgument),
            (ErrorKind::VaultDenied, Code::PermissionDenied),
            (ErrorKind::KubeDenied, Code::PermissionDenied),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::VaultRejected, Code::FailedPrecondition),
            (ErrorKind::VaultUnavailable, Code::FailedPrecondition),
            (ErrorKind::KubeUnavailable, Code::FailedPrecondition),
            (ErrorKind::VaultFailed, Code::FailedPrecondition),
            (ErrorKind::BadResponse, Code::Internal),
            (ErrorKind::Internal, Code::Internal),
            (ErrorKind::Timeout, Code::FailedPrecondition),
            (ErrorKind::TooLarge, Code::InvalidArgument),
            (ErrorKind::Busy, Code::FailedPrecondition),
            (ErrorKind::SyncRefused, Code::FailedPrecondition),
            (ErrorKind::NotThisPod, Code::PermissionDenied),
        ];
        assert_eq!(cases.len(), every_kind().len());
        for (kind, code) in cases {
            assert_eq!(Error::new(kind, "x").code(), code, "{}", kind.label());
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
        let s: tonic::Status = Error::new(ErrorKind::InvalidRequest, many).into();
        assert!(s.message().len() <= MAX_MESSAGE);
    }

    #[test]
    fn context_keeps_the_kind_and_the_cause() {
        let e = Error::new(ErrorKind::VaultDenied, "permission denied").context("reading secret/x");
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.to_string(), "reading secret/x: permission denied");
        let s: tonic::Status = e.into();
        assert_eq!(s.code(), Code::PermissionDenied);

        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::because(ErrorKind::InvalidRequest, "CA file /x", io).context("object \"a\"");
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert_eq!(
            e.to_string(),
            "invalid mount request: object \"a\": CA file /x: no such file"
        );
        let cause = e.cause().expect("the cause is kept");
        assert_eq!(cause.to_string(), "no such file");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        assert!(e.source().is_none(), "the message told the cause; nothing below it");
        assert_eq!(describe_chain(&e), e.to_string(), "its text is said once");
        let e = e.into_kind(ErrorKind::NotThisPod);
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.cause().is_some());
        // A cause the message does not tell stays the source.
        let e =
            Error::new(ErrorKind::Internal, "state file unreadable").with_source(std::io::Error::other("disk on fire"));
        assert_eq!(e.source().map(ToString::to_string).as_deref(), Some("disk on fire"));
        assert_eq!(describe_chain(&e), "state file unreadable: disk on fire");
    }
}
