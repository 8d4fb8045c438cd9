//! The driver's attributes: the class's parameters (each under its
//! `bao…`, `openbao…` and `vault…` names) over the socket's defaults, the
//! pod's identity and kubelet's tokens, `secrets` and `permission`.

use super::*;

/// A class's parameters, looked up by alias.
pub(super) struct Params<'a> {
    pub(super) attrs: &'a HashMap<String, String>,
}

impl<'a> Params<'a> {
    /// The first of `names` the class sets, and its value trimmed (`None`
    /// when empty): present wins, even when empty.
    pub(super) fn lookup(&self, names: &[&'static str]) -> Option<(&'static str, Option<&'a str>)> {
        names.iter().find_map(|n| {
            self.attrs
                .get(*n)
                .map(|v| (*n, Some(v.trim()).filter(|v| !v.is_empty())))
        })
    }

    /// The winning name and its value, when the value is not empty.
    pub(super) fn get(&self, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
        self.lookup(names).and_then(|(n, v)| v.map(|v| (n, v)))
    }

    /// A non-aliased key, when not empty.
    pub(super) fn plain(&self, key: &str) -> Option<&'a str> {
        self.attrs.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    /// For a message: a lower-precedence name the class also set to a
    /// value, which `winner` hid.
    pub(super) fn hidden(&self, names: &[&'static str], winner: &str) -> Option<&'static str> {
        names
            .iter()
            .skip_while(|n| **n != winner)
            .skip(1)
            .find(|n| self.attrs.get(**n).is_some_and(|v| !v.trim().is_empty()))
            .copied()
    }
}

pub(super) fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidRequest, msg)
}

/// The message of an [`invalid`] error, to prefix it.
pub(super) fn strip_invalid(e: Error) -> String {
    match e.kind() {
        ErrorKind::InvalidRequest => e.message().to_string(),
        _ => e.to_string(),
    }
}

/// A serde error in the words users wrote, not the names of our structs.
pub(super) fn plain(e: impl std::fmt::Display) -> String {
    e.to_string()
        .replace("struct RawObject", "an object (objectName, secretPath, ...)")
        .replace("struct RawSyncSecret", "a Secret (secretName, type, data, ...)")
        .replace("struct RawSyncData", "a data entry (key, objectName)")
        .replace("struct RawToken", "a token entry (token, expirationTimestamp)")
        .replace("unit value", "null")
}

pub(super) fn parse_secrets(secrets: &str) -> Result<HashMap<String, String>> {
    let trimmed = secrets.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(HashMap::new());
    }
    serde_json::from_str(trimmed).map_err(|e| invalid(format!("secrets are not a JSON object of strings: {e}")))
}

pub(super) fn parse_permission(permission: &str) -> Result<u32> {
    let p = permission.trim();
    if p.is_empty() {
        return Ok(0o644);
    }
    let mode: u32 = p
        .parse()
        .map_err(|_| invalid(format!("permission {p:?} is not a decimal file mode such as \"420\"")))?;
    if mode > MAX_MODE {
        return Err(invalid(format!("permission {p} is larger than 0777")));
    }
    Ok(mode)
}

/// The auth mount travels in the login URL (`/v1/auth/<mount>/login`), so it
/// must be a plain path: nothing that could change which URL is requested.
pub(super) fn check_auth_mount(mount: &str) -> Result<String> {
    if mount.is_empty() {
        return Err(invalid("the auth mount path is empty".to_string()));
    }
    let plain = mount
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if !plain || mount.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") || mount.len() > 256 {
        return Err(invalid(format!(
            "the auth mount path {:?} is not a plain path (letters, digits, '-', '_', '.', and '/' between non-empty segments other than '.' and '..')",
            shorten(mount)
        )));
    }
    Ok(mount.to_string())
}

/// At most 64 characters of a bad value, for an error message.
pub(super) fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

pub(super) fn parse_vault_config(params: &Params<'_>, defaults: &Defaults) -> Result<VaultConfig> {
    let policy = &defaults.policy;
    let addresses = match params.get(names::ADDRESS) {
        Some((name, list)) => {
            let addrs = Addresses::parse(list).map_err(|e| invalid(format!("parameter {name}: {e}")))?;
            // Each address the operator did not configure must pass the
            // class policy on its own.
            for e in addrs.iter().filter(|e| !defaults.vault.addresses.contains(e)) {
                policy.check_endpoint(e, name)?;
            }
            addrs
        }
        None => defaults.vault.addresses.clone(),
    };
    let mut tls = defaults.vault.tls.clone();
    if let Some((name, p)) = params.get(names::CA_CERT_PATH) {
        tls.ca_cert = Some(policy.class_file(p, name)?);
    }
    if let Some((name, p)) = params.get(names::CA_DIRECTORY) {
        tls.ca_directory = Some(policy.class_directory(p, name)?);
    }
    if let Some((name, n)) = params.get(names::TLS_SERVER_NAME) {
        if defaults.vault.tls.server_name.as_deref() != Some(n) {
            policy.check_tls_server_name(n, name)?;
        }
        tls.server_name = Some(n.to_string());
    }
    match (
        params.get(names::TLS_CLIENT_CERT_PATH),
        params.get(names::TLS_CLIENT_KEY_PATH),
    ) {
        (Some((cn, c)), Some((kn, k))) => {
            tls.client_cert = Some((policy.class_file(c, cn)?, policy.class_file(k, kn)?))
        }
        (None, None) => {}
        (Some((cn, _)), None) => {
            let kn = names::like(cn, names::TLS_CLIENT_CERT_PATH, names::TLS_CLIENT_KEY_PATH);
            return Err(invalid(format!("{cn} and {kn} must be set together")));
        }
        (None, Some((kn, _))) => {
            let cn = names::like(kn, names::TLS_CLIENT_KEY_PATH, names::TLS_CLIENT_CERT_PATH);
            return Err(invalid(format!("{cn} and {kn} must be set together")));
        }
    }
    if let Some((name, v)) = params.get(names::SKIP_TLS_VERIFY) {
        tls.skip_verify = parse_go_bool(v).map_err(|e| invalid(format!("parameter {name}: {e}")))?;
        if tls.skip_verify && !defaults.vault.tls.skip_verify {
            policy.check_skip_verify(name)?;
        }
    }
    let namespace = match params.get(names::NAMESPACE) {
        Some((name, ns)) => {
            // It travels as the X-Vault-Namespace header.
            if http::HeaderValue::from_str(ns).is_err() {
                return Err(invalid(format!(
                    "parameter {name} {ns:?} is not a valid namespace (it contains control characters)"
                )));
            }
            Some(ns.to_string())
        }
        None => defaults.vault.namespace.clone(),
    };
    if let Some(ns) = &namespace {
        if http::HeaderValue::from_str(ns).is_err() {
            return Err(invalid(format!(
                "the default namespace {ns:?} is not a valid namespace (it contains control characters)"
            )));
        }
    }
    Ok(VaultConfig {
        addresses,
        namespace,
        tls,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawToken {
    token: String,
    expiration_timestamp: Option<String>,
}

pub(super) fn select_token(json: &str, audience: &str) -> Result<Option<ProvidedToken>> {
    let tokens: HashMap<String, RawToken> = serde_json::from_str(json).map_err(|e| {
        invalid(format!(
            "attribute {} is not a JSON map of audience to token: {}",
            keys::SA_TOKENS,
            plain(e)
        ))
    })?;
    let Some(raw) = tokens.get(audience) else {
        return Ok(None);
    };
    let expires = match raw.expiration_timestamp.as_deref().filter(|s| !s.is_empty()) {
        Some(ts) => Some(humantime::parse_rfc3339_weak(ts).map_err(|e| {
            invalid(format!(
                "token for audience {audience:?} has a bad expirationTimestamp {ts:?}: {e}"
            ))
        })?),
        None => None,
    };
    Ok(Some(ProvidedToken {
        token: raw.token.clone(),
        expires,
    }))
}
