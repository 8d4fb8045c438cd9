//! Key material of the double: the TLS CA with its serving certificate, the
//! service-account token signer (ES256), and a failure-free uid source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

/// DER prefix of a SubjectPublicKeyInfo for an uncompressed P-256 point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (66 bytes) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// TLS pieces the server needs and the CA clients must trust.
pub(super) struct TlsMaterial {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Creates a fresh CA and a serving certificate valid for the loopback
/// address and the in-cluster service names clients might use.
pub(super) fn tls_material() -> Result<TlsMaterial> {
    let ca_key = rcgen::KeyPair::generate().context("generating CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-double-ca");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).context("self-signing CA")?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = rcgen::KeyPair::generate().context("generating server key")?;
    let mut server_params = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ])?;
    server_params.distinguished_name = rcgen::DistinguishedName::new();
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver");
    server_params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .context("signing server certificate")?;

    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    // An explicit provider keeps the double independent of whatever process-wide
    // default other code in the test binary may or may not have installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone()], key_der)
        .context("TLS server certificate")?;
    // The server speaks HTTP/1.1 only; advertising it lets Go clients skip h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(config),
    })
}

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// RFC 3339 timestamp with second precision, as Kubernetes writes them.
pub(super) fn rfc3339(unix_seconds: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix_seconds)).to_string()
}

/// Unique ids without a fallible RNG call per id: one random seed at start,
/// then SHA-256 over a counter, shaped as a version-4 UUID like Kubernetes uids.
pub(super) struct UidSource {
    seed: [u8; 32],
    counter: AtomicU64,
}

impl UidSource {
    /// Seeds the source from the system RNG.
    pub fn new(rng: &SystemRandom) -> Result<Self> {
        let mut seed = [0u8; 32];
        rng.fill(&mut seed).map_err(|_| anyhow!("system RNG unavailable"))?;
        Ok(UidSource {
            seed,
            counter: AtomicU64::new(0),
        })
    }

    /// The next uid, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(&self.seed);
        ctx.update(&n.to_be_bytes());
        let digest = ctx.finish();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest.as_ref()[..16]);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h = hex_lower(&b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Wraps DER in PEM armour with 64-column lines.
pub(super) fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Signs and verifies service-account JWTs with one P-256 key, like the
/// API server's `--service-account-signing-key-file`.
pub(super) struct TokenSigner {
    key: EcdsaKeyPair,
    spki_der: Vec<u8>,
    kid: String,
    rng: SystemRandom,
}

impl TokenSigner {
    /// A fresh key; `kid` is derived from the public key the way the API
    /// server does (base64url of the SHA-256 of the SPKI DER).
    pub fn generate(rng: SystemRandom) -> Result<Self> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow!("generating ES256 key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| anyhow!("loading ES256 key: {e}"))?;
        let mut spki_der = P256_SPKI_PREFIX.to_vec();
        spki_der.extend_from_slice(key.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki_der));
        Ok(TokenSigner {
            key,
            spki_der,
            kid,
            rng,
        })
    }

    /// The verification key as a JWK, as `/openid/v1/jwks` lists it.
    pub fn jwk(&self) -> Value {
        // The uncompressed point after the SPKI prefix: 0x04 || x || y.
        let point = &self.spki_der[P256_SPKI_PREFIX.len()..];
        let (x, y) = point[1..].split_at(32);
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        })
    }

    /// The verification key as `-----BEGIN PUBLIC KEY-----` (SPKI) PEM.
    pub fn public_key_pem(&self) -> String {
        pem("PUBLIC KEY", &self.spki_der)
    }

    /// Compact JWS over `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?)
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| anyhow!("ES256 signing failed"))?;
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// Checks the signature and returns the claims; the error text follows the
    /// API server's wording where it has one.
    pub fn verify(&self, token: &str) -> Result<Value> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            bail!("token is not a compact JWS");
        };
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|_| anyhow!("malformed JWT header"))?)
                .map_err(|_| anyhow!("malformed JWT header"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            bail!("unexpected signing algorithm");
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| anyhow!("malformed signature"))?;
        let signing_input = &token[..h.len() + 1 + c.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.spki_der[P256_SPKI_PREFIX.len()..])
            .verify(signing_input.as_bytes(), &sig)
            .map_err(|_| anyhow!("square/go-jose: error in cryptographic primitive"))?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).map_err(|_| anyhow!("malformed JWT claims"))?)
            .map_err(|_| anyhow!("malformed JWT claims"))
    }
}
