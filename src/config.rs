//! Command-line flags, compatible with the incumbent provider's.
//!
//! Existing DaemonSets and the vault-helm chart pass Go-style flags
//! (`-endpoint=/provider/vault.sock`, `--log-level=debug`), so both the single
//! and the double dash are accepted for every long flag. Environment variables
//! are the fallback for the Vault connection flags (env < flag < SPC).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Flags of the `vault-csi-provider` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vault-csi-provider",
    version,
    about,
    disable_help_subcommand = true,
    args_override_self = true
)]
pub struct Flags {
    /// Path of the unix socket the CSI driver connects to.
    #[arg(long, default_value = "/tmp/vault.sock")]
    pub endpoint: PathBuf,

    /// Log verbosity: trace, debug, info, warn, error or off.
    #[arg(long = "log-level", default_value = "info", value_parser = parse_log_level)]
    pub log_level: LogLevel,

    /// Log format: text or json.
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Deprecated: same as -log-level=debug.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "false")]
    pub debug: bool,

    /// Address of the health server (`/health/ready`, `/health/live`); empty disables it.
    #[arg(long = "health-addr", default_value = ":8080")]
    pub health_addr: String,

    /// Accept `PUT /log-level` on the health port from the network, not only
    /// from loopback (kubectl port-forward).
    #[arg(long = "health-remote-log-level", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "false")]
    pub health_remote_log_level: bool,

    /// Name of the Kubernetes Secret holding the key for object versions.
    #[arg(long = "hmac-secret-name", default_value = "vault-csi-provider-hmac-key")]
    pub hmac_secret_name: String,

    /// Namespace of the HMAC key Secret; defaults to the provider's own namespace.
    #[arg(long = "hmac-secret-namespace", env = "VAULT_CSI_PROVIDER_NAMESPACE")]
    pub hmac_secret_namespace: Option<String>,

    /// Number of Vault tokens cached (one per pod and connection); <= 0 disables the cache.
    #[arg(long = "cache-size", default_value_t = 1000, allow_negative_numbers = true)]
    pub cache_size: i64,

    /// Default Vault address, when a SecretProviderClass sets none.
    #[arg(long = "vault-addr", env = "VAULT_ADDR", default_value = "https://127.0.0.1:8200")]
    pub vault_addr: String,

    /// Default auth mount path (kubernetes or jwt method).
    #[arg(long = "vault-mount", default_value = "kubernetes")]
    pub vault_mount: String,

    /// Default Vault Enterprise namespace.
    #[arg(long = "vault-namespace", env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,

    /// Default PEM CA file for Vault's TLS certificate.
    #[arg(long = "vault-tls-ca-cert", env = "VAULT_CACERT")]
    pub vault_tls_ca_cert: Option<PathBuf>,

    /// Default directory of PEM CA files for Vault's TLS certificate.
    #[arg(long = "vault-tls-ca-directory", env = "VAULT_CAPATH")]
    pub vault_tls_ca_directory: Option<PathBuf>,

    /// Default TLS server name used to verify Vault's certificate.
    #[arg(long = "vault-tls-server-name", env = "VAULT_TLS_SERVER_NAME")]
    pub vault_tls_server_name: Option<String>,

    /// Default client certificate for mTLS to Vault.
    #[arg(long = "vault-tls-client-cert", env = "VAULT_CLIENT_CERT")]
    pub vault_tls_client_cert: Option<PathBuf>,

    /// Default client key for mTLS to Vault.
    #[arg(long = "vault-tls-client-key", env = "VAULT_CLIENT_KEY")]
    pub vault_tls_client_key: Option<PathBuf>,

    /// Skip verification of Vault's TLS certificate (insecure).
    #[arg(long = "vault-tls-skip-verify", env = "VAULT_SKIP_VERIFY", num_args = 0..=1,
          default_missing_value = "true", value_parser = parse_go_bool, default_value = "false")]
    pub vault_tls_skip_verify: bool,

    /// Kubeconfig to use instead of the in-cluster configuration.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Reuse leased responses (database credentials, certificates) across
    /// mounts of the same pod, renewing and rotating them; false re-reads on
    /// every mount like the incumbent.
    #[arg(long = "lease-reuse", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "true")]
    pub lease_reuse: bool,

    /// Fraction of a TTL after which tokens and leases are renewed, and
    /// non-extendable credentials rotated.
    #[arg(long = "renew-threshold", default_value_t = 0.67, value_parser = parse_threshold)]
    pub renew_threshold: f64,

    /// How long replaced credentials stay valid before they are revoked.
    #[arg(long = "rotation-grace", default_value = "2m", value_parser = parse_duration)]
    pub rotation_grace: Duration,

    /// Encrypted ledger state file for restart safety; default: next to the
    /// socket; `off` keeps the ledger in memory only.
    #[arg(long = "state-file")]
    pub state_file: Option<String>,

    /// Revoke a pod's Vault token and leases when the pod is deleted (needs
    /// list/watch on pods and the node name).
    #[arg(long = "revoke-on-pod-delete", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "true")]
    pub revoke_on_pod_delete: bool,

    /// This node's name (from the downward API), to watch its pods.
    #[arg(long = "node-name", env = "NODE_NAME")]
    pub node_name: Option<String>,

    /// How long in-flight mounts may finish after SIGTERM/SIGINT.
    #[arg(long = "shutdown-grace", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Upper bound for one Mount when the driver sends no deadline.
    #[arg(long = "mount-timeout", default_value = "110s", value_parser = parse_duration)]
    pub mount_timeout: Duration,

    /// Timeout of one HTTP request to Vault or Kubernetes.
    #[arg(long = "request-timeout", default_value = "15s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How many Mount calls run at the same time; more wait for a free slot.
    #[arg(long = "max-concurrent-mounts", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub max_concurrent_mounts: u16,

    /// Most memory one mount may hold (response bytes as they arrive, their
    /// parsed form, rendered files): bytes, or with a KiB/MiB/GiB suffix.
    #[arg(long = "max-mount-bytes", default_value = "16MiB", value_parser = parse_size)]
    pub max_mount_bytes: usize,

    /// Most memory all running mounts together may hold; a mount that would
    /// exceed it fails with RESOURCE_EXHAUSTED (the driver retries).
    #[arg(long = "max-inflight-bytes", default_value = "48MiB", value_parser = parse_size)]
    pub max_inflight_bytes: usize,

    /// Most memory the credential ledger's held responses may take; beyond
    /// it, new leased responses are returned but not held for reuse.
    #[arg(long = "max-held-bytes", default_value = "16MiB", value_parser = parse_size)]
    pub max_held_bytes: usize,

    /// Directories under which files a SecretProviderClass names
    /// (vaultCACertPath, vaultCADirectory, vaultTLSClientCertPath/KeyPath)
    /// must resolve; comma-separated. Empty: any path (files are always read
    /// as bounded regular files).
    #[arg(long = "spc-file-dirs", value_delimiter = ',')]
    pub spc_file_dirs: Vec<PathBuf>,

    /// Vault addresses a SecretProviderClass may name in vaultAddress, besides
    /// the default (-vault-addr); comma-separated. Empty: any.
    #[arg(long = "spc-allowed-vault-addrs", value_delimiter = ',')]
    pub spc_allowed_vault_addrs: Vec<String>,

    /// Whether a SecretProviderClass may name an http:// Vault address.
    #[arg(long = "spc-allow-http", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "true")]
    pub spc_allow_http: bool,

    /// Whether a SecretProviderClass may name a unix:// Vault address.
    #[arg(long = "spc-allow-unix", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "true")]
    pub spc_allow_unix: bool,

    /// Whether a SecretProviderClass may set vaultSkipTLSVerify.
    #[arg(long = "spc-allow-skip-tls-verify", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "true")]
    pub spc_allow_skip_tls_verify: bool,

    /// Service-account token audiences a SecretProviderClass may use; the
    /// first is used when a class names none, for kubelet's tokens and for
    /// tokens the provider requests. Comma-separated. Empty: any.
    #[arg(long = "spc-allowed-audiences", value_delimiter = ',')]
    pub spc_allowed_audiences: Vec<String>,

    /// How many objects of one Mount are fetched from Vault at the same time.
    #[arg(long = "fetch-concurrency", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub fetch_concurrency: u16,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log verbosity, named as the incumbent names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Details for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Problems that do not fail a mount.
    Warn,
    /// Failures only.
    Error,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// The matching `tracing` filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Off => "off",
        }
    }
}

/// Parses a log level name as `-log-level` accepts it.
pub fn parse_log_level(s: &str) -> Result<LogLevel, String> {
    match s.to_ascii_lowercase().as_str() {
        "trace" => Ok(LogLevel::Trace),
        "debug" => Ok(LogLevel::Debug),
        "info" => Ok(LogLevel::Info),
        "warn" | "warning" => Ok(LogLevel::Warn),
        "error" | "err" => Ok(LogLevel::Error),
        "off" => Ok(LogLevel::Off),
        _ => Err(format!(
            "unknown log level {s:?}: use trace, debug, info, warn, error or off"
        )),
    }
}

/// Parses a boolean the way Go's `strconv.ParseBool` does, since users carry
/// values such as `1`, `t` or `TRUE` over from the incumbent.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (use true or false)")),
    }
}

fn parse_threshold(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.1..=0.95).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0.1..0.95"))
    }
}

/// A size in bytes: `1048576`, `512KiB`, `16MiB`, `1GiB`.
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 16MiB or 1048576"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        other => return Err(format!("{s:?}: unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    let bytes = n.checked_mul(factor).ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < 64 * 1024 {
        return Err(format!("{s:?} is below the 64KiB minimum"));
    }
    Ok(bytes)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration such as 20s or 2m: {e}"))
}

impl Flags {
    /// Parses the process arguments, accepting Go-style `-flag` forms.
    pub fn parse_args<I, T>(args: I) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Flags::try_parse_from(go_style_args(args.into_iter().map(Into::into)))
    }

    /// Where the ledger state lives: `None` when disabled.
    pub fn state_path(&self) -> Option<PathBuf> {
        match self.state_file.as_deref() {
            Some("off") | Some("") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => Some(
                self.endpoint
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("vault-csi-provider.state"),
            ),
        }
    }

    /// The Vault connection and auth mount defaults these flags (and their
    /// environment fallbacks) give every SecretProviderClass.
    pub fn defaults(&self) -> Result<crate::spc::Defaults, String> {
        use crate::spc::{Defaults, TlsConfig, VaultConfig};
        let endpoint = crate::http::Endpoint::parse(&self.vault_addr).map_err(|e| format!("-vault-addr: {e}"))?;
        let client_cert = match (&self.vault_tls_client_cert, &self.vault_tls_client_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => return Err("-vault-tls-client-cert and -vault-tls-client-key must be set together".to_string()),
        };
        Ok(Defaults {
            vault: VaultConfig {
                endpoint,
                namespace: self.vault_namespace.clone().filter(|n| !n.is_empty()),
                tls: TlsConfig {
                    ca_cert: self.vault_tls_ca_cert.clone(),
                    ca_directory: self.vault_tls_ca_directory.clone(),
                    server_name: self.vault_tls_server_name.clone().filter(|n| !n.is_empty()),
                    client_cert,
                    skip_verify: self.vault_tls_skip_verify,
                },
            },
            auth_mount: self.vault_mount.clone(),
            policy: self.class_policy()?,
        })
    }

    /// The operator's limits on SecretProviderClass parameters.
    pub fn class_policy(&self) -> Result<crate::policy::ClassPolicy, String> {
        let vault_addrs = self
            .spc_allowed_vault_addrs
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .map(|a| crate::http::Endpoint::parse(a).map_err(|e| format!("-spc-allowed-vault-addrs: {e}")))
            .collect::<Result<Vec<_>, String>>()?;
        let audiences: Vec<String> = self
            .spc_allowed_audiences
            .iter()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        let dirs: Vec<PathBuf> = self
            .spc_file_dirs
            .iter()
            .filter(|d| !d.as_os_str().is_empty())
            .cloned()
            .collect();
        crate::policy::ClassPolicy {
            vault_addrs,
            allow_http: self.spc_allow_http,
            allow_unix: self.spc_allow_unix,
            allow_skip_verify: self.spc_allow_skip_tls_verify,
            audiences,
            ..Default::default()
        }
        .with_file_dirs(&dirs)
    }

    /// The effective log level, taking the deprecated `-debug` into account.
    pub fn effective_log_level(&self) -> LogLevel {
        if self.debug && matches!(self.log_level, LogLevel::Info | LogLevel::Warn | LogLevel::Error) {
            LogLevel::Debug
        } else {
            self.log_level
        }
    }
}

/// Rewrites Go-style single-dash long flags (`-endpoint=x`, `-version`) to the
/// double-dash form. Single-letter flags (`-h`) and everything after a bare
/// `--` are left alone.
pub fn go_style_args(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut passthrough = false;
    for (i, arg) in args.enumerate() {
        if i == 0 || passthrough {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            passthrough = true;
            out.push(arg);
            continue;
        }
        let is_single_dash_long =
            arg.starts_with('-') && !arg.starts_with("--") && arg.split('=').next().is_some_and(|name| name.len() > 2);
        if is_single_dash_long {
            out.push(format!("-{arg}"));
        } else {
            out.push(arg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        let mut v = vec!["vault-csi-provider"];
        v.extend_from_slice(args);
        Flags::parse_args(v).expect("flags parse")
    }

    #[test]
    fn defaults_match_the_incumbent() {
        let f = parse(&[]);
        assert_eq!(f.endpoint, PathBuf::from("/tmp/vault.sock"));
        assert_eq!(f.log_level, LogLevel::Info);
        assert_eq!(f.health_addr, ":8080");
        assert_eq!(f.hmac_secret_name, "vault-csi-provider-hmac-key");
        assert_eq!(f.cache_size, 1000);
        assert_eq!(f.vault_mount, "kubernetes");
        assert!(!f.vault_tls_skip_verify);
    }

    #[test]
    fn go_style_and_gnu_style_flags_both_work() {
        let f = parse(&[
            "-endpoint=/provider/vault.sock",
            "--log-level=debug",
            "-hmac-secret-name",
            "rel-csi-provider-hmac-key",
            "-vault-tls-skip-verify",
            "-cache-size=-1",
        ]);
        assert_eq!(f.endpoint, PathBuf::from("/provider/vault.sock"));
        assert_eq!(f.log_level, LogLevel::Debug);
        assert_eq!(f.hmac_secret_name, "rel-csi-provider-hmac-key");
        assert!(f.vault_tls_skip_verify);
        assert_eq!(f.cache_size, -1);
        let f = parse(&["-vault-tls-skip-verify=false", "-debug"]);
        assert!(!f.vault_tls_skip_verify);
        assert_eq!(f.effective_log_level(), LogLevel::Debug);
    }

    #[test]
    fn bad_values_are_rejected_with_a_message() {
        let err = Flags::parse_args(["p", "-log-level=loud"]).unwrap_err().to_string();
        assert!(err.contains("unknown log level"), "{err}");
        assert!(Flags::parse_args(["p", "-unknown-flag=1"]).is_err());
        assert!(Flags::parse_args(["p", "-vault-tls-skip-verify=maybe"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512Ki"), Ok(512 << 10));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("16MB").is_err());
        assert!(parse_size("1KiB").is_err());
        assert!(parse_size("huge").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        let f = parse(&[]);
        assert_eq!((f.max_mount_bytes, f.max_inflight_bytes), (16 << 20, 48 << 20));
    }

    #[test]
    fn go_bools() {
        for t in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false));
        }
        assert!(parse_go_bool("yes").is_err());
    }
}
