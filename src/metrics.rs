//! What the provider exports for Prometheus: mounts, Vault requests, the
//! token cache, held credentials, the object-version key and Vault's
//! reachability.
//!
//! One [`Metrics`] value owns its own registry and is passed around as an
//! `Arc`, never a global, so every test can make its own and read it back.
//! Labels are fixed, short vocabularies (results, gRPC codes, operations,
//! status classes, the operator's own `-vault-addr` addresses): never pod
//! names, paths, secret names or addresses a SecretProviderClass names,
//! which would make the series count grow with the cluster.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the mount duration buckets: a cached mount takes
/// milliseconds, a fresh login tens of them, a slow Vault seconds, and the
/// driver gives up after about two minutes.
const MOUNT_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Upper bounds (seconds) of one Vault HTTP request.
const VAULT_BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Labels of a finished mount.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MountLabels {
    /// `ok`, or the error kind (`Error::kind`).
    result: &'static str,
    /// The gRPC code the driver saw, in its canonical upper-case name.
    code: &'static str,
}

/// Labels of the mount duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `ok` or `error`.
    outcome: &'static str,
}

/// Labels of one Vault HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VaultLabels {
    operation: &'static str,
    /// `2xx`, `3xx`, `4xx`, `5xx`, or `error` when no answer arrived.
    status: &'static str,
}

/// Labels of the Vault request duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// Labels of a credential renewal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewalLabels {
    /// `ok` or `failed`.
    result: &'static str,
}

/// Labels of one Vault address: one of the provider's default addresses
/// (`-vault-addr`), or `other` for addresses a SecretProviderClass names,
/// which would otherwise make the series count unbounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabels {
    address: String,
}

/// Labels of a failed attempt on one address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressFailureLabels {
    address: String,
    /// `unreachable`, `sealed`, `no_active_node`, `uninitialized`, `error`.
    reason: &'static str,
}

/// Addresses whose own series are exported.
const OTHER_ADDRESS: &str = "other";

/// What a request to Vault was for, derived from its path so that every
/// caller of the Vault client is counted without passing labels around.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultOperation {
    /// `auth/<mount>/login`.
    Login,
    /// Any secret read or write an object names.
    Read,
    /// Token or lease renewal.
    Renew,
    /// Token or lease revocation.
    Revoke,
    /// `sys/health`, the reachability probe.
    Health,
}

impl VaultOperation {
    /// Classifies a request by its API path (with or without query).
    pub fn of_path(path_and_query: &str) -> VaultOperation {
        let path = path_and_query.split('?').next().unwrap_or_default();
        let path = path.strip_prefix("/v1/").unwrap_or(path);
        if path.starts_with("auth/") && path.ends_with("/login") {
            VaultOperation::Login
        } else if path.starts_with("auth/token/renew") || path.starts_with("sys/leases/renew") || path == "sys/renew" {
            VaultOperation::Renew
        } else if path.starts_with("auth/token/revoke") || path.starts_with("sys/leases/revoke") || path == "sys/revoke"
        {
            VaultOperation::Revoke
        } else if path == "sys/health" {
            VaultOperation::Health
        } else {
            VaultOperation::Read
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            VaultOperation::Login => "login",
            VaultOperation::Read => "read",
            VaultOperation::Renew => "renew",
            VaultOperation::Revoke => "revoke",
            VaultOperation::Health => "health",
        }
    }
}

/// The status class label of an HTTP status, `error` for no answer.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "error",
    }
}

/// The canonical upper-case name of a gRPC code, as the driver's own metrics
/// and grpc-go spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

fn mount_histogram() -> Histogram {
    Histogram::new(MOUNT_BUCKETS)
}

fn vault_histogram() -> Histogram {
    Histogram::new(VAULT_BUCKETS)
}

/// Every metric the provider exports, with the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    mounts: Family<MountLabels, Counter>,
    mount_duration: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    vault_requests: Family<VaultLabels, Counter>,
    vault_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    vault_up: Gauge,
    vault_address_up: Family<AddressLabels, Gauge>,
    vault_address_failures: Family<AddressFailureLabels, Counter>,
    vault_failovers: Family<RenewalLabels, Counter>,
    known_addresses: std::sync::RwLock<Vec<String>>,
    token_cache_size: Gauge,
    token_cache_hits: Counter,
    token_cache_misses: Counter,
    token_cache_evictions: Counter,
    token_proof_logins: Counter,
    credentials_held: Gauge,
    credential_renewals: Family<RenewalLabels, Counter>,
    credential_rotations: Counter,
    credential_revocations: Counter,
    credential_revocations_denied: Counter,
    certificates_left_to_expire: Counter,
    credential_expiry: Gauge<f64, AtomicU64>,
    hmac_key_loaded: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh set of metrics, every one registered (and so exported) from
    /// the start, at zero where nothing happened yet.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vault_csi_provider");
        let m = Metrics {
            mounts: Family::default(),
            mount_duration: Family::new_with_constructor(mount_histogram as fn() -> Histogram),
            vault_requests: Family::default(),
            vault_duration: Family::new_with_constructor(vault_histogram as fn() -> Histogram),
            vault_up: Gauge::default(),
            vault_address_up: Family::default(),
            vault_address_failures: Family::default(),
            vault_failovers: Family::default(),
            known_addresses: Default::default(),
            token_cache_size: Gauge::default(),
            token_cache_hits: Counter::default(),
            token_cache_misses: Counter::default(),
            token_cache_evictions: Counter::default(),
            token_proof_logins: Counter::default(),
            credentials_held: Gauge::default(),
            credential_renewals: Family::default(),
            credential_rotations: Counter::default(),
            credential_revocations: Counter::default(),
            credential_revocations_denied: Counter::default(),
            certificates_left_to_expire: Counter::default(),
            credential_expiry: Gauge::default(),
            hmac_key_loaded: Gauge::default(),
            registry: Registry::default(),
        };
        // Soonest expiry is unknown until a credential is held.
        m.credential_expiry.set(f64::NAN);
        // A family is only exported once it has a series; create the common
        // ones at zero so dashboards and alerts see them from the start.
        let _ = m.mounts.get_or_create(&MountLabels {
            result: "ok",
            code: "OK",
        });
        for outcome in ["ok", "error"] {
            let _ = m.mount_duration.get_or_create(&OutcomeLabels { outcome });
        }
        for op in [
            VaultOperation::Login,
            VaultOperation::Read,
            VaultOperation::Renew,
            VaultOperation::Revoke,
        ] {
            let operation = op.label();
            let _ = m.vault_requests.get_or_create(&VaultLabels {
                operation,
                status: "2xx",
            });
            let _ = m.vault_duration.get_or_create(&OperationLabels { operation });
        }
        for result in ["ok", "failed"] {
            let _ = m.credential_renewals.get_or_create(&RenewalLabels { result });
            let _ = m.vault_failovers.get_or_create(&RenewalLabels { result });
        }

        registry.register(
            "build",
            "Build information",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("runtime", "vault-csi-provider"),
            ]),
        );
        registry.register(
            "mounts",
            "Mount requests answered, by result (ok or error kind) and gRPC code",
            m.mounts.clone(),
        );
        registry.register_with_unit(
            "mount_duration",
            "Time to answer a Mount request",
            Unit::Seconds,
            m.mount_duration.clone(),
        );
        registry.register(
            "vault_requests",
            "HTTP requests sent to Vault (retries included), by operation and status class",
            m.vault_requests.clone(),
        );
        registry.register_with_unit(
            "vault_request_duration",
            "Duration of one HTTP request to Vault",
            Unit::Seconds,
            m.vault_duration.clone(),
        );
        registry.register(
            "vault_up",
            "1 when the default Vault address answered its last health probe, else 0",
            m.vault_up.clone(),
        );
        registry.register(
            "vault_address_up",
            "Per default Vault address: 1 while it serves (active or standby), 0 while it is down, sealed or without an active node",
            m.vault_address_up.clone(),
        );
        registry.register(
            "vault_address_failures",
            "Requests and health probes that failed on a Vault address (the request moving to another address or a later try), by address (other: addresses a SecretProviderClass names) and reason",
            m.vault_address_failures.clone(),
        );
        registry.register(
            "vault_failovers",
            "Vault requests that failed on an address and were sent again, by final result",
            m.vault_failovers.clone(),
        );
        registry.register(
            "token_cache_size",
            "Vault tokens in the cache",
            m.token_cache_size.clone(),
        );
        registry.register(
            "token_cache_hits",
            "Mounts that reused a cached Vault token",
            m.token_cache_hits.clone(),
        );
        registry.register(
            "token_cache_misses",
            "Mounts that had to log in to Vault",
            m.token_cache_misses.clone(),
        );
        registry.register(
            "token_cache_evictions",
            "Cached Vault tokens pushed out because the cache was full",
            m.token_cache_evictions.clone(),
        );
        registry.register(
            "token_proof_logins",
            "Logins made only to have Vault review a new service-account token of a pod whose Vault token is held (the issuer keys could not verify it); each login's token is revoked at once",
            m.token_proof_logins.clone(),
        );
        registry.register(
            "credentials_held",
            "Dynamic credentials (leases) the provider keeps alive",
            m.credentials_held.clone(),
        );
        registry.register(
            "credential_renewals",
            "Lease renewals, by result",
            m.credential_renewals.clone(),
        );
        registry.register(
            "credential_rotations",
            "Credentials replaced by fresh ones before they expired",
            m.credential_rotations.clone(),
        );
        registry.register(
            "credential_revocations",
            "Credentials revoked by the provider",
            m.credential_revocations.clone(),
        );
        registry.register(
            "credential_revocations_denied",
            "Replaced leases Vault would not let the provider revoke (403 on sys/leases/revoke: the role's policies lack update on it); they run out at their own TTL",
            m.credential_revocations_denied.clone(),
        );
        registry.register(
            "certificates_left_to_expire",
            "Certificates the ledger let go of (their pod deleted, or evicted from a full ledger) that were issued without a lease (the PKI role's generate_lease is false), so no token revocation takes them: they stay valid until their own expiry",
            m.certificates_left_to_expire.clone(),
        );
        registry.register_with_unit(
            "credential_soonest_expiry",
            "Time until the soonest held credential expires (NaN when none is held)",
            Unit::Seconds,
            m.credential_expiry.clone(),
        );
        registry.register(
            "hmac_key_loaded",
            "1 when the object-version key is loaded, else 0",
            m.hmac_key_loaded.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records one answered Mount: `Ok(())` or the error's kind and code.
    pub fn mount_finished(&self, result: Result<(), &crate::error::Error>, elapsed: Duration) {
        let (labels, outcome) = match result {
            Ok(()) => (
                MountLabels {
                    result: "ok",
                    code: "OK",
                },
                "ok",
            ),
            Err(e) => (
                MountLabels {
                    result: e.kind().label(),
                    code: code_name(e.code()),
                },
                "error",
            ),
        };
        self.mounts.get_or_create(&labels).inc();
        self.mount_duration
            .get_or_create(&OutcomeLabels { outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one HTTP exchange with Vault; `status` is `None` when no
    /// answer arrived.
    pub fn vault_request(&self, path_and_query: &str, status: Option<u16>, elapsed: Duration) {
        let operation = VaultOperation::of_path(path_and_query).label();
        self.vault_requests
            .get_or_create(&VaultLabels {
                operation,
                status: status_class(status),
            })
            .inc();
        self.vault_duration
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Records the outcome of a Vault health probe.
    pub fn set_vault_up(&self, up: bool) {
        self.vault_up.set(i64::from(up));
    }

    /// Exports per-address series for these addresses (the provider's
    /// defaults), each starting as up.
    pub fn watch_addresses(&self, addresses: impl IntoIterator<Item = String>) {
        let mut known = self.known_addresses.write().unwrap_or_else(|p| p.into_inner());
        for a in addresses {
            if !known.contains(&a) {
                self.vault_address_up
                    .get_or_create(&AddressLabels { address: a.clone() })
                    .set(1);
                known.push(a);
            }
        }
    }

    fn address_label(&self, address: &str) -> Option<String> {
        let known = self.known_addresses.read().unwrap_or_else(|p| p.into_inner());
        known.iter().any(|k| k == address).then(|| address.to_string())
    }

    /// Whether a Vault address serves; only default addresses are exported.
    pub fn set_vault_address_up(&self, address: &str, up: bool) {
        if let Some(address) = self.address_label(address) {
            self.vault_address_up
                .get_or_create(&AddressLabels { address })
                .set(i64::from(up));
        }
    }

    /// An attempt failed on `address` for `reason` and moved on.
    pub fn vault_address_failed(&self, address: &str, reason: &'static str) {
        let address = self.address_label(address).unwrap_or_else(|| OTHER_ADDRESS.to_string());
        self.vault_address_failures
            .get_or_create(&AddressFailureLabels { address, reason })
            .inc();
    }

    /// A request that had failed on an address ended, `ok` or not.
    pub fn vault_failover(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.vault_failovers.get_or_create(&RenewalLabels { result }).inc();
    }

    /// A mount reused a cached token.
    pub fn token_cache_hit(&self) {
        self.token_cache_hits.inc();
    }

    /// A mount found no usable cached token.
    pub fn token_cache_miss(&self) {
        self.token_cache_misses.inc();
    }

    /// A mount proved a new service-account token by a login (whose token
    /// is revoked) and kept the held token.
    pub fn token_proof_login(&self) {
        self.token_proof_logins.inc();
    }

    /// Vault refused to revoke a replaced lease (403).
    pub fn credential_revocation_denied(&self) {
        self.credential_revocations_denied.inc();
    }

    /// A deleted pod held `n` certificates issued without a lease: they
    /// cannot be revoked with its token and run out at their own expiry.
    pub fn certificates_left_to_expire(&self, n: usize) {
        self.certificates_left_to_expire.inc_by(n as u64);
    }

    /// A cached token was pushed out to make room.
    pub fn token_cache_evicted(&self) {
        self.token_cache_evictions.inc();
    }

    /// The number of cached tokens now.
    pub fn set_token_cache_size(&self, n: usize) {
        self.token_cache_size.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The number of dynamic credentials held now (for the lease ledger).
    pub fn set_credentials_held(&self, n: usize) {
        self.credentials_held.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A lease was renewed (for the lease ledger).
    pub fn credential_renewed(&self) {
        self.credential_renewals
            .get_or_create(&RenewalLabels { result: "ok" })
            .inc();
    }

    /// A lease renewal failed (for the lease ledger).
    pub fn credential_renewal_failed(&self) {
        self.credential_renewals
            .get_or_create(&RenewalLabels { result: "failed" })
            .inc();
    }

    /// A credential was replaced by a fresh one (for the lease ledger).
    pub fn credential_rotated(&self) {
        self.credential_rotations.inc();
    }

    /// A credential was revoked (for the lease ledger).
    pub fn credential_revoked(&self) {
        self.credential_revocations.inc();
    }

    /// Time until the soonest held credential expires; `None` when none is held.
    pub fn set_soonest_credential_expiry(&self, remaining: Option<Duration>) {
        self.credential_expiry
            .set(remaining.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN));
    }

    /// Whether the object-version key is loaded.
    pub fn set_hmac_key_loaded(&self, loaded: bool) {
        self.hmac_key_loaded.set(i64::from(loaded));
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; say so rather than panic.
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn operations_come_from_paths() {
        let op = |p| VaultOperation::of_path(p).label();
        assert_eq!(op("/v1/auth/kubernetes/login"), "login");
        assert_eq!(op("/v1/auth/team/k8s/login"), "login");
        assert_eq!(op("/v1/secret/data/app?version=2"), "read");
        assert_eq!(op("/v1/auth/token/renew-self"), "renew");
        assert_eq!(op("/v1/sys/leases/renew"), "renew");
        assert_eq!(op("/v1/auth/token/revoke-self"), "revoke");
        assert_eq!(op("/v1/sys/leases/revoke"), "revoke");
        assert_eq!(op("/v1/sys/health?standbyok=true"), "health");
        assert_eq!(op("/v1/database/creds/app"), "read");
    }

    #[test]
    fn every_metric_is_exported_from_the_start() {
        let m = Metrics::new();
        let text = m.encode();
        for name in [
            "vault_csi_provider_build_info{version=",
            "# TYPE vault_csi_provider_mounts counter",
            "# TYPE vault_csi_provider_mount_duration_seconds histogram",
            "# TYPE vault_csi_provider_vault_requests counter",
            "# TYPE vault_csi_provider_vault_request_duration_seconds histogram",
            "vault_csi_provider_vault_up 0",
            r#"vault_csi_provider_vault_failovers_total{result="ok"} 0"#,
            "vault_csi_provider_token_cache_size 0",
            "vault_csi_provider_token_cache_hits_total 0",
            "vault_csi_provider_token_cache_misses_total 0",
            "vault_csi_provider_token_cache_evictions_total 0",
            "vault_csi_provider_credentials_held 0",
            "# TYPE vault_csi_provider_credential_renewals counter",
            "vault_csi_provider_credential_rotations_total 0",
            "vault_csi_provider_credential_revocations_total 0",
            "vault_csi_provider_credential_soonest_expiry_seconds NaN",
            "vault_csi_provider_hmac_key_loaded 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }

    #[test]
    fn addresses_are_labelled_only_when_configured() {
        let m = Metrics::new();
        m.watch_addresses(["http://n1:8200".to_string(), "http://n2:8200".to_string()]);
        m.set_vault_address_up("http://n2:8200", false);
        m.set_vault_address_up("http://spc.example:8200", false);
        m.vault_address_failed("http://n2:8200", "sealed");
        m.vault_address_failed("http://spc.example:8200", "unreachable");
        m.vault_failover(true);
        let text = m.encode();
        for line in [
            r#"vault_csi_provider_vault_address_up{address="http://n1:8200"} 1"#,
            r#"vault_csi_provider_vault_address_up{address="http://n2:8200"} 0"#,
            r#"vault_csi_provider_vault_address_failures_total{address="http://n2:8200",reason="sealed"} 1"#,
            r#"vault_csi_provider_vault_address_failures_total{address="other",reason="unreachable"} 1"#,
            r#"vault_csi_provider_vault_failovers_total{result="ok"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("spc.example"), "{text}");
    }

    #[test]
    fn mounts_and_requests_are_counted_with_fixed_labels() {
        let m = Metrics::new();
        m.mount_finished(Ok(()), Duration::from_millis(3));
        m.mount_finished(
            Err(&Error::new(crate::error::ErrorKind::VaultDenied, "x")),
            Duration::from_millis(40),
        );
        m.vault_request("/v1/auth/kubernetes/login", Some(200), Duration::from_millis(2));
        m.vault_request("/v1/secret/data/app", None, Duration::from_millis(2));
        m.credential_renewed();
        m.set_soonest_credential_expiry(Some(Duration::from_secs(90)));
        let text = m.encode();
        for line in [
            r#"vault_csi_provider_mounts_total{result="ok",code="OK"} 1"#,
            r#"vault_csi_provider_mounts_total{result="vault_denied",code="PERMISSION_DENIED"} 1"#,
            r#"vault_csi_provider_mount_duration_seconds_bucket{le="0.005",outcome="ok"} 1"#,
            r#"vault_csi_provider_mount_duration_seconds_bucket{le="0.025",outcome="error"} 0"#,
            r#"vault_csi_provider_mount_duration_seconds_bucket{le="0.05",outcome="error"} 1"#,
            r#"vault_csi_provider_vault_requests_total{operation="login",status="2xx"} 1"#,
            r#"vault_csi_provider_vault_requests_total{operation="read",status="error"} 1"#,
            r#"vault_csi_provider_credential_renewals_total{result="ok"} 1"#,
            "vault_csi_provider_credential_soonest_expiry_seconds 90.0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
