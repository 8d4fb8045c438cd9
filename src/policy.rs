//! What a SecretProviderClass may ask of the provider.
//!
//! A class is written by a namespace's users; the provider is installed by
//! someone else (the operator) and serves every namespace of its node. Every
//! parameter a class controls is untrusted input, and this module holds the
//! operator's limits on the ones that reach beyond the class's own namespace:
//! files on the provider's filesystem, the address the pod's token is sent
//! to, plain-text and unverified connections, and the audience of the tokens
//! sent there. The defaults keep the incumbent's behaviour (anything a class
//! names is used), except that files are always read as bounded regular
//! files; operators opt in to the rest with `-spc-*` flags.
//!
//! Checks run while the Mount request is parsed, before anything is sent.

use std::path::{Component, Path, PathBuf};

use crate::endpoint::Endpoint;

/// The operator's limits on SecretProviderClass parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    /// Directories (canonical paths) under which the files a class names
    /// must resolve; empty allows any path.
    pub file_dirs: Vec<PathBuf>,
    /// Vault addresses a class may name besides the provider's default;
    /// empty allows any.
    pub vault_addrs: Vec<Endpoint>,
    /// Whether a class may name an `http://` address.
    pub allow_http: bool,
    /// Whether a class may name a `unix://` address.
    pub allow_unix: bool,
    /// Whether a class may set `vaultSkipTLSVerify`.
    pub allow_skip_verify: bool,
    /// Token audiences a class may use; the first is the default when the
    /// class names none. Empty: any audience, defaulting as the incumbent.
    pub audiences: Vec<String>,
    /// Names a class may have the server's certificate checked against
    /// (`vaultTLSServerName`) besides the operator's; empty allows any.
    pub tls_server_names: Vec<String>,
    /// Whether the pod's service-account tokens are taken from the request's
    /// `secrets` (a CSIDriver with `serviceAccountTokenInSecrets`, Kubernetes
    /// 1.35+). Off, they come from kubelet's attributes only: `secrets` is
    /// otherwise the pod's `nodePublishSecretRef`, whose values the tenant
    /// writes.
    pub tokens_in_secrets: bool,
}

impl Default for ClassPolicy {
    /// The incumbent's behaviour, plus bounded regular-file reads.
    fn default() -> ClassPolicy {
        ClassPolicy {
            file_dirs: Vec::new(),
            vault_addrs: Vec::new(),
            allow_http: true,
            allow_unix: true,
            allow_skip_verify: true,
            audiences: Vec::new(),
            tls_server_names: Vec::new(),
            tokens_in_secrets: false,
        }
    }
}

/// The flag that lifts each restriction, for error messages.
const FILE_DIRS_FLAG: &str = "-spc-file-dirs";
const ADDRS_FLAG: &str = "-spc-allowed-vault-addrs";
const AUDIENCES_FLAG: &str = "-spc-allowed-audiences";
const SERVER_NAMES_FLAG: &str = "-spc-allowed-tls-server-names";

/// A class parameter this provider's policy refuses: which parameter and
/// why (naming the operator's flag), with the system's error behind it
/// where there is one.
#[derive(Debug, thiserror::Error)]
#[error("parameter {param}: {reason}")]
pub struct Refused {
    /// The parameter, as the class wrote it.
    pub param: String,
    /// Why it is refused.
    pub reason: String,
    /// The I/O error behind it, if any.
    #[source]
    pub source: Option<std::io::Error>,
}

fn refused(param: &str, reason: String) -> Refused {
    Refused {
        param: param.to_string(),
        reason,
        source: None,
    }
}

impl From<Refused> for crate::error::Error {
    fn from(r: Refused) -> Self {
        crate::error::Error::new(crate::error::ErrorKind::InvalidRequest, r.to_string()).with_source(r)
    }
}

impl ClassPolicy {
    /// Canonicalises the allowed directories, which must exist: a typo in a
    /// flag should stop the provider at start, not fail every mount later.
    pub fn with_file_dirs(mut self, dirs: &[PathBuf]) -> Result<ClassPolicy, String> {
        self.file_dirs = dirs
            .iter()
            .map(|d| {
                let canonical =
                    std::fs::canonicalize(d).map_err(|e| format!("{FILE_DIRS_FLAG}: {}: {e}", d.display()))?;
                if !canonical.is_dir() {
                    return Err(format!("{FILE_DIRS_FLAG}: {} is not a directory", d.display()));
                }
                Ok(canonical)
            })
            .collect::<Result<_, String>>()?;
        Ok(self)
    }

    /// Whether a class may connect to `endpoint`, which is not the
    /// provider's default (that one the operator chose).
    pub fn check_endpoint(&self, endpoint: &Endpoint, param: &str) -> Result<(), Refused> {
        match endpoint {
            Endpoint::Tcp { tls: false, .. } if !self.allow_http => {
                return Err(refused(param, format!("{endpoint} is plain http, which this provider does not allow for SecretProviderClasses (-spc-allow-http=false): use https"
                )))
            }
            Endpoint::Unix(_) if !self.allow_unix => {
                return Err(refused(param, format!("{endpoint} is a unix socket, which this provider does not allow for SecretProviderClasses (-spc-allow-unix=false)"
                )))
            }
            _ => {}
        }
        if !self.vault_addrs.is_empty() && !self.vault_addrs.contains(endpoint) {
            let allowed: Vec<String> = self.vault_addrs.iter().map(ToString::to_string).collect();
            return Err(refused(
                param,
                format!(
                    "{endpoint} is not one of the Vault addresses this provider allows ({ADDRS_FLAG}: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Whether a class may turn off certificate verification.
    pub fn check_skip_verify(&self, param: &str) -> Result<(), Refused> {
        if self.allow_skip_verify {
            Ok(())
        } else {
            Err(refused(param, "this provider does not allow SecretProviderClasses to skip TLS verification (-spc-allow-skip-tls-verify=false); give a CA with vaultCACertPath instead".to_string()))
        }
    }

    /// Whether a class may have the server's certificate checked against
    /// `name` (which the operator did not configure): a name is who the
    /// pod's token is sent to, as much as an address is.
    pub fn check_tls_server_name(&self, name: &str, param: &str) -> Result<(), Refused> {
        if self.tls_server_names.is_empty() || self.tls_server_names.iter().any(|n| n == name) {
            return Ok(());
        }
        Err(refused(
            param,
            format!(
                "TLS server name {} is not one this provider allows ({SERVER_NAMES_FLAG}: {})",
                crate::error::Quoted(name),
                self.tls_server_names.join(", ")
            ),
        ))
    }

    /// What an operator left open to SecretProviderClasses, one phrase per
    /// switch, for the warning at start (empty: every switch closed).
    pub fn open_switches(&self) -> Vec<&'static str> {
        let mut open = Vec::new();
        if self.vault_addrs.is_empty() {
            open.push("any Vault address (-spc-allowed-vault-addrs)");
        }
        if self.allow_http {
            open.push("plain http (-spc-allow-http=true)");
        }
        if self.allow_unix {
            open.push("a unix socket on the node (-spc-allow-unix=true)");
        }
        if self.allow_skip_verify {
            open.push("unverified TLS (-spc-allow-skip-tls-verify=true)");
        }
        if self.file_dirs.is_empty() {
            open.push("any file of the provider's as a CA or client key (-spc-file-dirs)");
        }
        if self.audiences.is_empty() {
            open.push("any token audience (-spc-allowed-audiences)");
        }
        if self.tls_server_names.is_empty() {
            open.push("any TLS server name (-spc-allowed-tls-server-names)");
        }
        open
    }

    /// The audience to use: the class's, if allowed, else the operator's
    /// first allowed one. `None`: no restriction and none named.
    pub fn audience(&self, named: Option<&str>, param: &str) -> Result<Option<String>, Refused> {
        match named {
            Some(a) if self.audiences.is_empty() || self.audiences.iter().any(|x| x == a) => Ok(Some(a.to_string())),
            Some(a) => Err(refused(
                param,
                format!(
                    "audience {a:?} is not one this provider allows ({AUDIENCES_FLAG}: {})",
                    self.audiences.join(", ")
                ),
            )),
            None => Ok(self.audiences.first().cloned()),
        }
    }

    /// Resolves a file a class names: an absolute path that, once symlinks
    /// are resolved, lies under an allowed directory (when any are set).
    /// The canonical path is returned, so what is checked is what is read.
    pub fn class_file(&self, path: &str, param: &str) -> Result<PathBuf, Refused> {
        let given = Path::new(path);
        if !given.is_absolute() {
            return Err(refused(param, format!("{path:?} is not an absolute path")));
        }
        if given.components().any(|c| c == Component::ParentDir) {
            return Err(refused(param, format!("{path:?} must not contain '..'")));
        }
        if self.file_dirs.is_empty() {
            return Ok(given.to_path_buf());
        }
        let canonical = std::fs::canonicalize(given).map_err(|e| Refused {
            param: param.to_string(),
            reason: format!("cannot use {path:?}: {e}"),
            source: Some(e),
        })?;
        self.confined(&canonical, param, path)?;
        Ok(canonical)
    }

    /// Like [`class_file`](Self::class_file) for a CA directory: the
    /// directory and each of its entries must stay under the allowed
    /// directories.
    pub fn class_directory(&self, path: &str, param: &str) -> Result<PathBuf, Refused> {
        let dir = self.class_file(path, param)?;
        if self.file_dirs.is_empty() {
            return Ok(dir);
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| Refused {
            param: param.to_string(),
            reason: format!("cannot read {path:?}: {e}"),
            source: Some(e),
        })?;
        for entry in entries.take(crate::pem::MAX_DIRECTORY_FILES).flatten() {
            let entry_path = entry.path();
            let Ok(canonical) = std::fs::canonicalize(&entry_path) else {
                continue;
            };
            self.confined(&canonical, param, &entry_path.display().to_string())?;
        }
        Ok(dir)
    }

    fn confined(&self, canonical: &Path, param: &str, shown: &str) -> Result<(), Refused> {
        if self.file_dirs.iter().any(|d| canonical.starts_with(d)) {
            return Ok(());
        }
        let dirs: Vec<String> = self.file_dirs.iter().map(|d| d.display().to_string()).collect();
        Err(refused(param, format!("{shown:?} is outside the directories this provider reads for SecretProviderClasses ({FILE_DIRS_FLAG}: {})",
            dirs.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restricted(dir: &Path) -> ClassPolicy {
        ClassPolicy::default().with_file_dirs(&[dir.to_path_buf()]).unwrap()
    }

    #[test]
    fn files_must_resolve_inside_the_allowed_directories() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("ca.pem"), b"x").unwrap();
        std::fs::write(root.path().join("outside.pem"), b"x").unwrap();
        // Kubernetes projects ConfigMaps as symlinks into ..data: fine
        // while they stay inside.
        std::fs::create_dir(allowed.join("..data")).unwrap();
        std::fs::write(allowed.join("..data/real.pem"), b"x").unwrap();
        std::os::unix::fs::symlink("..data/real.pem", allowed.join("linked.pem")).unwrap();
        std::os::unix::fs::symlink(root.path().join("outside.pem"), allowed.join("escape.pem")).unwrap();
        let policy = restricted(&allowed);
        let p = |name: &str| allowed.join(name).display().to_string();

        assert!(policy.class_file(&p("ca.pem"), "vaultCACertPath").is_ok());
        assert_eq!(
            policy.class_file(&p("linked.pem"), "vaultCACertPath").unwrap(),
            std::fs::canonicalize(allowed.join("..data/real.pem")).unwrap()
        );
        let escape = policy.class_file(&p("escape.pem"), "vaultCACertPath").unwrap_err();
        assert_eq!(escape.param, "vaultCACertPath");
        assert!(escape.to_string().contains("outside the directories"), "{escape}");
        let outside = root.path().join("outside.pem").display().to_string();
        let missing = policy.class_file(&format!("{}/missing.pem", allowed.display()), "vaultCACertPath");
        assert!(missing.unwrap_err().source.is_some(), "the I/O error is kept");
        assert!(policy.class_file(&outside, "vaultCACertPath").is_err());
        assert!(policy.class_file("/dev/zero", "vaultCACertPath").is_err());
        assert!(policy.class_file("relative.pem", "vaultCACertPath").is_err());
        let dotdot = format!("{}/../outside.pem", allowed.display());
        assert!(policy
            .class_file(&dotdot, "vaultCACertPath")
            .unwrap_err()
            .to_string()
            .contains(".."));

        // A directory whose entries lead out is refused as a whole.
        assert!(policy
            .class_directory(&allowed.display().to_string(), "vaultCADirectory")
            .is_err());
        std::fs::remove_file(allowed.join("escape.pem")).unwrap();
        assert!(policy
            .class_directory(&allowed.display().to_string(), "vaultCADirectory")
            .is_ok());

        // Without allowed directories any absolute path is taken as given.
        assert!(ClassPolicy::default()
            .class_file("/dev/zero", "vaultCACertPath")
            .is_ok());
        assert!(ClassPolicy::default()
            .with_file_dirs(&[root.path().join("missing")])
            .is_err());
    }

    #[test]
    fn addresses_audiences_and_switches() {
        let mut policy = ClassPolicy::default();
        let https = Endpoint::parse("https://vault.example:8200").unwrap();
        let http = Endpoint::parse("http://vault.example:8200").unwrap();
        let unix = Endpoint::parse("unix:///run/vault.sock").unwrap();
        for e in [&https, &http, &unix] {
            assert!(policy.check_endpoint(e, "vaultAddress").is_ok());
        }
        assert_eq!(policy.audience(None, "audience").unwrap(), None);
        assert_eq!(policy.audience(Some("x"), "audience").unwrap().as_deref(), Some("x"));

        policy.allow_http = false;
        policy.allow_unix = false;
        policy.allow_skip_verify = false;
        assert!(policy.check_endpoint(&https, "vaultAddress").is_ok());
        assert!(policy
            .check_endpoint(&http, "vaultAddress")
            .unwrap_err()
            .reason
            .contains("-spc-allow-http"));
        assert!(policy
            .check_endpoint(&unix, "vaultAddress")
            .unwrap_err()
            .reason
            .contains("-spc-allow-unix"));
        assert!(policy.check_skip_verify("vaultSkipTLSVerify").is_err());

        policy.vault_addrs = vec![Endpoint::parse("https://vault.example:8200/").unwrap()];
        assert!(policy.check_endpoint(&https, "vaultAddress").is_ok());
        let other = Endpoint::parse("https://attacker.example").unwrap();
        assert!(policy
            .check_endpoint(&other, "vaultAddress")
            .unwrap_err()
            .reason
            .contains("-spc-allowed-vault-addrs"));

        policy.audiences = vec!["vault".into(), "openbao".into()];
        assert_eq!(policy.audience(None, "audience").unwrap().as_deref(), Some("vault"));
        assert_eq!(
            policy.audience(Some("openbao"), "audience").unwrap().as_deref(),
            Some("openbao")
        );
        assert!(policy.audience(Some(""), "audience").is_err());
        assert!(policy
            .audience(Some("https://kubernetes.default.svc"), "audience")
            .is_err());
    }
}
