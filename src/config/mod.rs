//! Command-line flags, compatible with both incumbents' (HashiCorp's
//! `vault-csi-provider` and OpenBao's `openbao-csi-provider`).
//!
//! Existing DaemonSets and the vault-helm and openbao-helm charts pass
//! Go-style flags (`-endpoint=/provider/vault.sock`, `--debug=false`), so both
//! the single and the double dash are accepted for every long flag.
//!
//! Each socket has a flavour ([`Flavor`]) and takes its connection defaults
//! from its own flags and environment: `-vault-*` then `VAULT_*` for vault
//! sockets, `-openbao-*` then `BAO_*` then (only when the `BAO_*` variable is
//! unset) `VAULT_*` for openbao sockets. clap's `env` cannot say "fall back
//! only when unset", so the environment is read here, once, from an [`Env`]
//! snapshot ([`Flags::defaults_for`]). Precedence: env < flag < SPC.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::flavor::Flavor;
use crate::logging::{parse_log_level, LogFormat, LogLevel};
use crate::policy::ClassPolicy;
pub use crate::spc::DEFAULT_ADDR;
use crate::spc::{parse_go_bool, Defaults, DEFAULT_AUTH_MOUNT};
use crate::vault::failover::Addresses;
use crate::vault::{TlsConfig, VaultConfig};

/// Why the flags and the environment do not make a configuration the
/// provider can run with (exit code 64).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A flag's or environment variable's value is not valid: which, and why.
    #[error("{from}: {problem}")]
    Value {
        /// The flag or variable (`-vault-addr`, `BAO_ADDR`), or "built-in address".
        from: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An environment variable's value is not UTF-8.
    #[error("environment variable {0} is not valid UTF-8")]
    NotUtf8(String),
    /// Settings that cannot work (together): the text names them and
    /// what to change.
    #[error("{0}")]
    Invalid(String),
    /// No socket to serve.
    #[error("no socket to serve")]
    NoSocket,
}

fn value_error(from: impl Into<String>, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError::Value {
        from: from.into(),
        problem: problem.to_string(),
    }
}

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
    /// Path of the unix socket the CSI driver connects to (the driver dials
    /// `<provider>.sock`). Default: `/tmp/<flavour>.sock`.
    #[arg(long)]
    pub endpoint: Option<PathBuf>,

    /// Defaults the -endpoint socket gives a SecretProviderClass: vault or
    /// openbao. Default: openbao when the socket is named openbao.sock,
    /// else vault.
    #[arg(long, value_parser = Flavor::parse)]
    pub flavor: Option<Flavor>,

    /// Also serve this socket, with Vault defaults (audience vault, -vault-*
    /// flags, VAULT_* environment).
    #[arg(long = "vault-endpoint")]
    pub vault_endpoint: Option<PathBuf>,

    /// Also serve this socket, with OpenBao defaults (audience openbao,
    /// -openbao-* flags, BAO_* environment falling back to VAULT_*).
    #[arg(long = "openbao-endpoint")]
    pub openbao_endpoint: Option<PathBuf>,

    /// Log verbosity: trace, debug, info, warn, error or off (default info).
    /// When given, it wins over -debug.
    #[arg(long = "log-level", value_parser = parse_log_level)]
    pub log_level: Option<LogLevel>,

    /// Log format: text or json.
    #[arg(long = "log-format", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Debug logs (as openbao-helm's csi.debug); -log-level, when given, wins.
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
    /// Default: vault-csi-provider-hmac-key, or
    /// openbao-csi-provider-hmac-key when -endpoint is an openbao socket.
    #[arg(long = "hmac-secret-name")]
    pub hmac_secret_name: Option<String>,

    /// Namespace of the HMAC key Secret; defaults to the provider's own namespace.
    #[arg(long = "hmac-secret-namespace", env = "VAULT_CSI_PROVIDER_NAMESPACE")]
    pub hmac_secret_namespace: Option<String>,

    /// Number of Vault tokens cached (one per pod and connection); <= 0 disables the cache.
    #[arg(long = "cache-size", default_value_t = 1000, allow_negative_numbers = true)]
    pub cache_size: i64,

    /// Default Vault address of vault sockets, when a SecretProviderClass
    /// sets none: one URL, or a cluster's nodes as a comma-separated list
    /// (env VAULT_ADDR; built in: https://127.0.0.1:8200).
    #[arg(long = "vault-addr")]
    pub vault_addr: Option<String>,

    /// Default auth mount path of vault sockets (kubernetes or jwt method; built in: kubernetes).
    #[arg(long = "vault-mount")]
    pub vault_mount: Option<String>,

    /// Default Vault Enterprise namespace of vault sockets (env VAULT_NAMESPACE).
    #[arg(long = "vault-namespace")]
    pub vault_namespace: Option<String>,

    /// Default PEM CA file for Vault's TLS certificate (env VAULT_CACERT).
    #[arg(long = "vault-tls-ca-cert")]
    pub vault_tls_ca_cert: Option<String>,

    /// Default directory of PEM CA files for Vault's TLS certificate (env VAULT_CAPATH).
    #[arg(long = "vault-tls-ca-directory")]
    pub vault_tls_ca_directory: Option<String>,

    /// Default TLS server name used to verify Vault's certificate (env VAULT_TLS_SERVER_NAME).
    #[arg(long = "vault-tls-server-name")]
    pub vault_tls_server_name: Option<String>,

    /// Default client certificate for mTLS to Vault (env VAULT_CLIENT_CERT).
    #[arg(long = "vault-tls-client-cert")]
    pub vault_tls_client_cert: Option<String>,

    /// Default client key for mTLS to Vault (env VAULT_CLIENT_KEY).
    #[arg(long = "vault-tls-client-key")]
    pub vault_tls_client_key: Option<String>,

    /// Skip verification of Vault's TLS certificate (insecure; env VAULT_SKIP_VERIFY).
    #[arg(long = "vault-tls-skip-verify", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub vault_tls_skip_verify: Option<bool>,

    /// Default OpenBao address of openbao sockets, one URL or a comma-separated
    /// list of a cluster's nodes (env BAO_ADDR, else VAULT_ADDR).
    #[arg(long = "openbao-addr")]
    pub openbao_addr: Option<String>,

    /// Default auth mount path of openbao sockets (built in: kubernetes).
    #[arg(long = "openbao-mount")]
    pub openbao_mount: Option<String>,

    /// Default OpenBao namespace of openbao sockets (env BAO_NAMESPACE, else VAULT_NAMESPACE).
    #[arg(long = "openbao-namespace")]
    pub openbao_namespace: Option<String>,

    /// Default PEM CA file for OpenBao's TLS certificate (env BAO_CACERT, else VAULT_CACERT).
    #[arg(long = "openbao-tls-ca-cert")]
    pub openbao_tls_ca_cert: Option<String>,

    /// Default directory of PEM CA files (env BAO_CAPATH, else VAULT_CAPATH).
    #[arg(long = "openbao-tls-ca-directory")]
    pub openbao_tls_ca_directory: Option<String>,

    /// Default TLS server name (env BAO_TLS_SERVER_NAME, else VAULT_TLS_SERVER_NAME).
    #[arg(long = "openbao-tls-server-name")]
    pub openbao_tls_server_name: Option<String>,

    /// Default client certificate for mTLS (env BAO_CLIENT_CERT, else VAULT_CLIENT_CERT).
    #[arg(long = "openbao-tls-client-cert")]
    pub openbao_tls_client_cert: Option<String>,

    /// Default client key for mTLS (env BAO_CLIENT_KEY, else VAULT_CLIENT_KEY).
    #[arg(long = "openbao-tls-client-key")]
    pub openbao_tls_client_key: Option<String>,

    /// Skip verification of OpenBao's TLS certificate (insecure; env
    /// BAO_SKIP_VERIFY, else VAULT_SKIP_VERIFY).
    #[arg(long = "openbao-tls-skip-verify", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub openbao_tls_skip_verify: Option<bool>,

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

    /// How long a Vault request keeps retrying while every address refuses,
    /// is unreachable or sealed (about one leader election); past it, only
    /// while a node answers that an election is under way.
    #[arg(long = "retry-budget", default_value = "10s", value_parser = parse_duration)]
    pub retry_budget: Duration,

    /// How many Mount calls run at the same time; more wait for a free slot.
    #[arg(long = "max-concurrent-mounts", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub max_concurrent_mounts: u16,

    /// How many of those slots one namespace's mounts may hold at once
    /// (0: half of -max-concurrent-mounts), so that the rest always remains
    /// for other namespaces.
    #[arg(long = "max-concurrent-mounts-per-namespace", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=4096))]
    pub max_concurrent_mounts_per_namespace: u16,

    /// Most memory one mount may hold (response bytes as they arrive, their
    /// parsed form, rendered files): bytes, or with a KiB/MiB/GiB suffix.
    #[arg(long = "max-mount-bytes", default_value = "16MiB", value_parser = parse_size)]
    pub max_mount_bytes: usize,

    /// Most memory all running mounts together may hold; a mount that would
    /// exceed it fails as busy (kubelet retries it).
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

    /// Names a SecretProviderClass may have Vault's certificate checked
    /// against (vaultTLSServerName), besides the operator's own
    /// (-vault-tls-server-name); comma-separated. Empty: any.
    #[arg(long = "spc-allowed-tls-server-names", value_delimiter = ',')]
    pub spc_allowed_tls_server_names: Vec<String>,

    /// Whether SecretProviderClasses are authoritative: a mount whose
    /// attributes (the pod's volumeAttributes copied over the class's
    /// parameters) change the class's objects, role, address, auth mount or
    /// audience is refused. Reads the class from the API (get on
    /// secretproviderclasses).
    #[arg(long = "spc-authoritative-class", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "false")]
    pub spc_authoritative_class: bool,

    /// Whether the pod's service-account tokens are read from the Mount's
    /// `secrets` instead of kubelet's attributes: set it when the CSIDriver
    /// object has `serviceAccountTokenInSecrets: true` (Kubernetes 1.35+).
    /// Off, a token in `secrets` (the pod's nodePublishSecretRef, which its
    /// author writes) is ignored.
    #[arg(long = "service-account-token-in-secrets", num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool, default_value = "false")]
    pub service_account_token_in_secrets: bool,

    /// How many objects of one Mount are fetched from Vault at the same time.
    #[arg(long = "fetch-concurrency", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub fetch_concurrency: u16,
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

/// The process environment, read once at start-up and passed to whatever
/// resolves defaults from it (tests build one from a list of pairs).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<OsString, OsString>,
}

impl Env {
    /// A snapshot of this process's environment.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os().collect(),
        }
    }

    /// An environment holding exactly `pairs`.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
        }
    }

    /// The value of `name`: `None` when unset (an empty value is set).
    pub fn get(&self, name: &str) -> Result<Option<&str>, ConfigError> {
        match self.vars.get(std::ffi::OsStr::new(name)) {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .map(Some)
                .ok_or_else(|| ConfigError::NotUtf8(name.to_string())),
        }
    }
}

/// One socket the provider serves, and the defaults it gives classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// Where it listens.
    pub path: PathBuf,
    /// Which provider it stands in for.
    pub flavor: Flavor,
}

/// A default, and the flag or environment variable it came from (for
/// error messages).
struct Picked {
    value: String,
    from: String,
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

    /// The flavour of the `-endpoint` socket: `-flavor`, else what its file
    /// name says (`openbao.sock`), else vault.
    pub fn primary_flavor(&self) -> Flavor {
        self.flavor
            .or_else(|| self.endpoint.as_deref().and_then(Flavor::from_socket))
            .unwrap_or_default()
    }

    /// The `-endpoint` socket (default `/tmp/<flavour>.sock`).
    pub fn endpoint(&self) -> PathBuf {
        self.endpoint
            .clone()
            .unwrap_or_else(|| Path::new("/tmp").join(self.primary_flavor().socket_name()))
    }

    /// Every socket to serve: `-endpoint` first, then `-vault-endpoint` and
    /// `-openbao-endpoint`. Two sockets at one path are refused.
    pub fn sockets(&self) -> Result<Vec<Socket>, ConfigError> {
        let mut sockets = vec![Socket {
            path: self.endpoint(),
            flavor: self.primary_flavor(),
        }];
        let extra = [
            (&self.vault_endpoint, Flavor::Vault),
            (&self.openbao_endpoint, Flavor::OpenBao),
        ];
        for (path, flavor) in extra {
            let Some(path) = path.as_ref().filter(|p| !p.as_os_str().is_empty()) else {
                continue;
            };
            if let Some(same) = sockets.iter().find(|s| &s.path == path) {
                return Err(ConfigError::Invalid(format!(
                    "-{}-endpoint {} is also the {} socket: give each socket its own path",
                    flavor.flag_prefix(),
                    path.display(),
                    same.flavor
                )));
            }
            sockets.push(Socket {
                path: path.clone(),
                flavor,
            });
        }
        Ok(sockets)
    }

    /// The object-version key Secret: `-hmac-secret-name`, else the default
    /// of the `-endpoint` socket's flavour. One key serves every socket.
    pub fn hmac_secret_name(&self) -> String {
        self.hmac_secret_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| self.primary_flavor().default_hmac_secret_name().to_string())
    }

    /// Where the ledger state lives: `None` when disabled.
    pub fn state_path(&self) -> Option<PathBuf> {
        match self.state_file.as_deref() {
            Some("off") | Some("") => None,
            Some(p) => Some(PathBuf::from(p)),
            None => Some(
                self.endpoint()
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(format!("{}.state", self.primary_flavor().runtime_name())),
            ),
        }
    }

    /// The defaults of the `-endpoint` socket, from these flags and the
    /// process environment (for the `mount` subcommand).
    pub fn defaults(&self) -> Result<Defaults, ConfigError> {
        let env = Env::from_process();
        self.check_flavor_flags(&[self.primary_flavor()])?;
        self.defaults_for(self.primary_flavor(), &env)
    }

    /// Refuses connection flags of a flavour no socket serves: they would be
    /// ignored, and the server address is not something to ignore quietly.
    pub fn check_flavor_flags(&self, served: &[Flavor]) -> Result<(), ConfigError> {
        for flavor in Flavor::ALL {
            if served.contains(&flavor) {
                continue;
            }
            if let Some(flag) = self.connection_flags_given(flavor).first() {
                let other = match flavor {
                    Flavor::Vault => Flavor::OpenBao,
                    Flavor::OpenBao => Flavor::Vault,
                };
                return Err(ConfigError::Invalid(format!(
                    "{flag} sets a default for {flavor} sockets, but no {flavor} socket is served: use -{}{} for the {other} socket, or serve a {flavor} socket too (-{}-endpoint)",
                    other.flag_prefix(),
                    flag.trim_start_matches(&format!("-{}", flavor.flag_prefix())),
                    flavor.flag_prefix(),
                )));
            }
        }
        Ok(())
    }

    /// The connection flags of `flavor` given on the command line.
    fn connection_flags_given(&self, flavor: Flavor) -> Vec<String> {
        let p = flavor.flag_prefix();
        let strings = match flavor {
            Flavor::Vault => [
                &self.vault_addr,
                &self.vault_mount,
                &self.vault_namespace,
                &self.vault_tls_ca_cert,
                &self.vault_tls_ca_directory,
                &self.vault_tls_server_name,
                &self.vault_tls_client_cert,
                &self.vault_tls_client_key,
            ],
            Flavor::OpenBao => [
                &self.openbao_addr,
                &self.openbao_mount,
                &self.openbao_namespace,
                &self.openbao_tls_ca_cert,
                &self.openbao_tls_ca_directory,
                &self.openbao_tls_server_name,
                &self.openbao_tls_client_cert,
                &self.openbao_tls_client_key,
            ],
        };
        let skip = match flavor {
            Flavor::Vault => self.vault_tls_skip_verify,
            Flavor::OpenBao => self.openbao_tls_skip_verify,
        };
        let suffixes = [
            "addr",
            "mount",
            "namespace",
            "tls-ca-cert",
            "tls-ca-directory",
            "tls-server-name",
            "tls-client-cert",
            "tls-client-key",
        ];
        let mut given: Vec<String> = strings
            .iter()
            .zip(suffixes)
            .filter(|(v, _)| v.is_some())
            .map(|(_, s)| format!("-{p}-{s}"))
            .collect();
        if skip.is_some() {
            given.push(format!("-{p}-tls-skip-verify"));
        }
        given
    }

    /// One connection default for a socket of `flavor`: its own flag, else
    /// its environment variable; for openbao, `BAO_<var>` when it is set
    /// (even to an empty string), else `VAULT_<var>`. The first source that
    /// is present decides; an empty value there means the built-in default.
    fn pick(
        flavor: Flavor,
        env: &Env,
        flags: (&Option<String>, &Option<String>),
        suffix: &str,
        var: Option<&str>,
    ) -> Result<Option<Picked>, ConfigError> {
        let own = match flavor {
            Flavor::Vault => flags.0,
            Flavor::OpenBao => flags.1,
        };
        let found = match (own, var) {
            (Some(v), _) => Some(Picked {
                value: v.clone(),
                from: format!("-{}-{suffix}", flavor.flag_prefix()),
            }),
            (None, None) => None,
            (None, Some(var)) => {
                let names: &[String] = match flavor {
                    Flavor::Vault => &[format!("VAULT_{var}")],
                    Flavor::OpenBao => &[format!("BAO_{var}"), format!("VAULT_{var}")],
                };
                let mut found = None;
                for name in names {
                    if let Some(v) = env.get(name)? {
                        found = Some(Picked {
                            value: v.to_string(),
                            from: name.clone(),
                        });
                        break;
                    }
                }
                found
            }
        };
        Ok(found.filter(|p| !p.value.is_empty()))
    }

    /// The Vault connection and auth mount defaults a socket of `flavor`
    /// gives every SecretProviderClass: its flavour's flags, then its
    /// environment (env < flag < SPC).
    pub fn defaults_for(&self, flavor: Flavor, env: &Env) -> Result<Defaults, ConfigError> {
        let pick = |flags, suffix, var| Flags::pick(flavor, env, flags, suffix, var);
        let addresses = self.default_addresses(flavor, env)?;
        let mount = pick((&self.vault_mount, &self.openbao_mount), "mount", None)?
            .map(|p| p.value)
            .unwrap_or_else(|| DEFAULT_AUTH_MOUNT.to_string());
        let namespace = pick(
            (&self.vault_namespace, &self.openbao_namespace),
            "namespace",
            Some("NAMESPACE"),
        )?
        .map(|p| p.value);
        let tls = self.default_tls(flavor, env)?;
        Ok(Defaults {
            vault: VaultConfig {
                addresses,
                namespace,
                tls,
            },
            auth_mount: mount,
            policy: self.class_policy()?,
            flavor,
        })
    }

    /// The Vault address a socket of `flavor` gives: one URL, or the nodes
    /// of one cluster as a comma-separated list; the built-in one when
    /// neither flag nor environment names any.
    fn default_addresses(&self, flavor: Flavor, env: &Env) -> Result<Addresses, ConfigError> {
        let addr = Flags::pick(
            flavor,
            env,
            (&self.vault_addr, &self.openbao_addr),
            "addr",
            Some("ADDR"),
        )?;
        match &addr {
            Some(a) => Addresses::parse(&a.value).map_err(|e| value_error(&a.from, e)),
            None => Addresses::parse(DEFAULT_ADDR).map_err(|e| value_error("built-in address", e)),
        }
    }

    /// The TLS settings a socket of `flavor` gives: CA files, server name,
    /// client certificate and whether to skip verification.
    fn default_tls(&self, flavor: Flavor, env: &Env) -> Result<TlsConfig, ConfigError> {
        let pick = |flags, suffix, var| Flags::pick(flavor, env, flags, suffix, var);
        let ca_cert = pick(
            (&self.vault_tls_ca_cert, &self.openbao_tls_ca_cert),
            "tls-ca-cert",
            Some("CACERT"),
        )?;
        let ca_directory = pick(
            (&self.vault_tls_ca_directory, &self.openbao_tls_ca_directory),
            "tls-ca-directory",
            Some("CAPATH"),
        )?;
        let server_name = pick(
            (&self.vault_tls_server_name, &self.openbao_tls_server_name),
            "tls-server-name",
            Some("TLS_SERVER_NAME"),
        )?;
        let client_cert = self.default_client_cert(flavor, env)?;
        let skip_verify = self.default_skip_verify(flavor, env)?;
        Ok(TlsConfig {
            ca_cert: ca_cert.map(|p| PathBuf::from(p.value)),
            ca_directory: ca_directory.map(|p| PathBuf::from(p.value)),
            server_name: server_name.map(|p| p.value),
            client_cert,
            skip_verify,
        })
    }

    /// The mTLS certificate and key a socket of `flavor` presents: both or
    /// neither, since half a pair is a mistake.
    fn default_client_cert(&self, flavor: Flavor, env: &Env) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        let pick = |flags, suffix, var| Flags::pick(flavor, env, flags, suffix, var);
        let cert = pick(
            (&self.vault_tls_client_cert, &self.openbao_tls_client_cert),
            "tls-client-cert",
            Some("CLIENT_CERT"),
        )?;
        let key = pick(
            (&self.vault_tls_client_key, &self.openbao_tls_client_key),
            "tls-client-key",
            Some("CLIENT_KEY"),
        )?;
        match (cert, key) {
            (Some(c), Some(k)) => Ok(Some((PathBuf::from(c.value), PathBuf::from(k.value)))),
            (None, None) => Ok(None),
            (Some(one), None) | (None, Some(one)) => {
                let p = flavor.flag_prefix();
                Err(ConfigError::Invalid(format!(
                    "{} gives only half of the mTLS pair: -{p}-tls-client-cert and -{p}-tls-client-key (or their environment variables) must be set together",
                    one.from
                )))
            }
        }
    }

    /// Whether a socket of `flavor` skips TLS verification: its flag, else
    /// its environment (a Go boolean), else not.
    fn default_skip_verify(&self, flavor: Flavor, env: &Env) -> Result<bool, ConfigError> {
        let skip_flag = match flavor {
            Flavor::Vault => self.vault_tls_skip_verify,
            Flavor::OpenBao => self.openbao_tls_skip_verify,
        };
        Ok(match skip_flag {
            Some(b) => b,
            None => match Flags::pick(flavor, env, (&None, &None), "tls-skip-verify", Some("SKIP_VERIFY"))? {
                Some(p) => parse_go_bool(&p.value).map_err(|e| value_error(&p.from, e))?,
                None => false,
            },
        })
    }

    /// The operator's limits on SecretProviderClass parameters.
    pub fn class_policy(&self) -> Result<ClassPolicy, ConfigError> {
        let vault_addrs = self
            .spc_allowed_vault_addrs
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .map(|a| crate::endpoint::Endpoint::parse(a).map_err(|e| value_error("-spc-allowed-vault-addrs", e)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
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
        let tls_server_names: Vec<String> = self
            .spc_allowed_tls_server_names
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        ClassPolicy {
            vault_addrs,
            allow_http: self.spc_allow_http,
            allow_unix: self.spc_allow_unix,
            allow_skip_verify: self.spc_allow_skip_tls_verify,
            audiences,
            tls_server_names,
            tokens_in_secrets: self.service_account_token_in_secrets,
            ..Default::default()
        }
        .with_file_dirs(&dirs)
        .map_err(ConfigError::Invalid)
    }

    /// The log level: `-log-level` when given; else debug when `-debug` is
    /// true (openbao-helm passes only `--debug=<bool>`); else info.
    pub fn effective_log_level(&self) -> LogLevel {
        match (self.log_level, self.debug) {
            (Some(level), _) => level,
            (None, true) => LogLevel::Debug,
            (None, false) => LogLevel::Info,
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
mod tests;
