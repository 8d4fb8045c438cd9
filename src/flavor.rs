//! The two providers this binary stands in for: HashiCorp's
//! `vault-csi-provider` (`provider: vault`) and its fork
//! `openbao-csi-provider` (`provider: openbao`).
//!
//! The driver dials `<spec.provider>.sock`, so each socket the provider
//! serves has a flavour, and the flavour decides the defaults that socket
//! gives a SecretProviderClass: the token audience looked up, which flags and
//! environment variables give the server address and auth mount, the runtime
//! name the Version RPC reports, and the product named in messages. Parameter
//! names are the same on every socket (see [`crate::spc::names`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which provider a socket stands in for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Flavor {
    /// HashiCorp's provider: `provider: vault`, audience `vault`, `-vault-*`
    /// flags, `VAULT_*` environment.
    #[default]
    Vault,
    /// OpenBao's fork: `provider: openbao`, audience `openbao`, `-openbao-*`
    /// flags, `BAO_*` environment falling back to `VAULT_*`.
    OpenBao,
}

impl Flavor {
    /// Both flavours.
    pub const ALL: [Flavor; 2] = [Flavor::Vault, Flavor::OpenBao];

    /// The SecretProviderClass `spec.provider` this flavour serves.
    pub fn provider(self) -> &'static str {
        match self {
            Flavor::Vault => "vault",
            Flavor::OpenBao => "openbao",
        }
    }

    /// The socket file name the driver dials for [`provider`](Self::provider).
    pub fn socket_name(self) -> &'static str {
        match self {
            Flavor::Vault => "vault.sock",
            Flavor::OpenBao => "openbao.sock",
        }
    }

    /// The Version RPC's `runtime_name`, as the incumbent of this flavour reports it.
    pub fn runtime_name(self) -> &'static str {
        match self {
            Flavor::Vault => "vault-csi-provider",
            Flavor::OpenBao => "openbao-csi-provider",
        }
    }

    /// The audience of the kubelet token used when a class names none.
    pub fn default_audience(self) -> &'static str {
        match self {
            Flavor::Vault => "vault",
            Flavor::OpenBao => "openbao",
        }
    }

    /// The default name of the object-version key Secret.
    pub fn default_hmac_secret_name(self) -> &'static str {
        match self {
            Flavor::Vault => "vault-csi-provider-hmac-key",
            Flavor::OpenBao => "openbao-csi-provider-hmac-key",
        }
    }

    /// The server's name in messages.
    pub fn product(self) -> &'static str {
        match self {
            Flavor::Vault => "Vault",
            Flavor::OpenBao => "OpenBao",
        }
    }

    /// The prefix of this flavour's connection flags (`-vault-addr`,
    /// `-openbao-addr`).
    pub fn flag_prefix(self) -> &'static str {
        match self {
            Flavor::Vault => "vault",
            Flavor::OpenBao => "openbao",
        }
    }

    /// The flavour a socket path implies: `openbao.sock` and `vault.sock`
    /// by their file name, anything else none.
    pub fn from_socket(path: &Path) -> Option<Flavor> {
        let name = path.file_name()?.to_str()?;
        Flavor::ALL.into_iter().find(|f| f.socket_name() == name)
    }

    /// Parses `vault` or `openbao` (as `-flavor` takes it).
    pub fn parse(s: &str) -> Result<Flavor, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "vault" => Ok(Flavor::Vault),
            "openbao" => Ok(Flavor::OpenBao),
            _ => Err(format!("unknown flavour {s:?}: use vault or openbao")),
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.provider())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_each_incumbent() {
        assert_eq!(Flavor::Vault.runtime_name(), "vault-csi-provider");
        assert_eq!(Flavor::OpenBao.runtime_name(), "openbao-csi-provider");
        assert_eq!(Flavor::Vault.default_audience(), "vault");
        assert_eq!(Flavor::OpenBao.default_audience(), "openbao");
        assert_eq!(
            Flavor::OpenBao.default_hmac_secret_name(),
            "openbao-csi-provider-hmac-key"
        );
        assert_eq!(Flavor::default(), Flavor::Vault);
    }

    #[test]
    fn the_socket_file_name_tells_the_flavour() {
        assert_eq!(
            Flavor::from_socket(Path::new("/provider/openbao.sock")),
            Some(Flavor::OpenBao)
        );
        assert_eq!(
            Flavor::from_socket(Path::new("/provider/vault.sock")),
            Some(Flavor::Vault)
        );
        assert_eq!(Flavor::from_socket(Path::new("/tmp/p.sock")), None);
        assert_eq!(Flavor::from_socket(Path::new("/provider/openbao.sock.bak")), None);
        assert_eq!(Flavor::parse("OpenBao"), Ok(Flavor::OpenBao));
        assert!(Flavor::parse("consul").is_err());
    }
}
