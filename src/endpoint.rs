//! Where a server listens: an `http(s)://` URL or a unix socket. At the
//! bottom of the layers: the operator's policy names endpoints as much as
//! the Vault client connects to them.

use std::path::PathBuf;

use http::Uri;

/// Where a server listens: a URL, or a unix socket (`unix:///path`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Endpoint {
    /// `http://` or `https://` host and port, with an optional path prefix.
    Tcp {
        /// Whether to speak TLS.
        tls: bool,
        /// Host name or IP address.
        host: String,
        /// Port.
        port: u16,
        /// Path prefix without a trailing slash (usually empty).
        prefix: String,
    },
    /// A unix socket path; requests are plain HTTP over it.
    Unix(PathBuf),
}

impl Endpoint {
    /// Parses `http(s)://host[:port][/prefix]` or `unix:///path`.
    pub fn parse(addr: &str) -> Result<Endpoint, String> {
        let addr = addr.trim();
        if let Some(path) = addr.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "{addr:?}: a unix address needs an absolute path (unix:///path)"
                ));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let uri: Uri = addr.parse().map_err(|e| format!("{addr:?} is not a URL: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{addr:?} must start with https://, http:// or unix://")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("{addr:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        // `Uri::port_u16` is `None` both without a port and for one that is
        // not a u16, which would silently turn `:99999` into the default.
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let after_host = host_port.rfind(']').map_or(host_port, |i| &host_port[i..]);
        let port = match after_host.rsplit_once(':') {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some((_, p)) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("{addr:?}: {p:?} is not a port number (1 to 65535)")),
            },
        };
        if uri.query().is_some() {
            return Err(format!("{addr:?} must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(Endpoint::Tcp {
            tls,
            host,
            port,
            prefix,
        })
    }

    /// The URL requests are made against (`http://localhost` for a unix
    /// socket, whose connector ignores the host).
    pub(crate) fn base_url(&self) -> String {
        match self {
            Endpoint::Tcp {
                tls,
                host,
                port,
                prefix,
            } => {
                let scheme = if *tls { "https" } else { "http" };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                format!("{scheme}://{host}:{port}{prefix}")
            }
            // The connector ignores the host of a unix endpoint.
            Endpoint::Unix(_) => "http://localhost".to_string(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp { .. } => f.write_str(&self.base_url()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let tcp = |tls, host: &str, port| Endpoint::Tcp {
            tls,
            host: host.into(),
            port,
            prefix: String::new(),
        };
        assert_eq!(
            Endpoint::parse("https://vault.example:8200").unwrap(),
            tcp(true, "vault.example", 8200)
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1").unwrap(),
            tcp(false, "127.0.0.1", 80)
        );
        assert_eq!(
            Endpoint::parse("unix:///var/run/vault/agent.sock").unwrap(),
            Endpoint::Unix(PathBuf::from("/var/run/vault/agent.sock"))
        );
        assert_eq!(
            Endpoint::parse("https://[::1]:8200").unwrap().to_string(),
            "https://[::1]:8200"
        );
        assert!(Endpoint::parse("vault:8200").is_err());
        assert_eq!(
            Endpoint::parse("http://[::1]:8201").unwrap().to_string(),
            "http://[::1]:8201"
        );
        for bad in [
            "http://vault:99999",
            "http://vault:0",
            "https://[::1]:70000",
            "http://vault:",
        ] {
            let e = Endpoint::parse(bad).unwrap_err();
            assert!(e.contains("is not a port number"), "{bad}: {e}");
        }
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("unix://relative.sock").is_err());
    }
}
