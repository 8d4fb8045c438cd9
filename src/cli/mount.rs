//! `vault-csi-provider mount`: performs one Mount from a laptop with the
//! provider's own mount logic ([`Mounter`]) — same parsing, login, reads,
//! rendering and versions — for a SecretProviderClass file (or parameters),
//! a pod identity and a token, then writes the files as the driver would, or
//! with `--dry-run` lists them without their contents.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;

use super::{spc_file, usage_error, writer, EXIT_PROBLEMS, EXIT_USAGE};
use crate::app::{Core, CoreConfig};
use crate::config::Flags;
use crate::kubernetes::client::KubeClient;
use crate::ledger::{Ledger, LedgerSettings};
use crate::metrics::code_name;
use crate::mount::{MountInput, MountOutput, Settings};
use crate::spc::keys;
use crate::vault::VaultPool;
use crate::versions::{key_from_secret, Versions};

/// Arguments of `mount`: its own, plus every provider flag (`-vault-addr`,
/// `-kubeconfig`, `-hmac-secret-name`, ...) with the provider's defaults.
#[derive(Debug, Parser)]
#[command(
    about = "Perform one Mount as the provider would, and write or list the files",
    disable_help_subcommand = true,
    disable_version_flag = true
)]
pub struct MountArgs {
    /// SecretProviderClass YAML file (its `spec.parameters` are used).
    pub spc: Option<PathBuf>,

    /// Which SecretProviderClass of the file, when it holds several.
    #[arg(long = "spc-name")]
    pub spc_name: Option<String>,

    /// A parameter `key=value`, added to or overriding the file's;
    /// `key=@file` reads the value from a file. Repeatable.
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,

    /// Name of the pod to mount for (needed to request a token).
    #[arg(long = "pod-name", default_value = "")]
    pub pod_name: String,

    /// Namespace of the pod (default: the class's, else `default`).
    #[arg(long = "pod-namespace")]
    pub pod_namespace: Option<String>,

    /// UID of the pod (needed to request a token bound to it).
    #[arg(long = "pod-uid", default_value = "")]
    pub pod_uid: String,

    /// Service account the pod runs as.
    #[arg(long = "service-account", default_value = "default")]
    pub service_account: String,

    /// File holding the pod's service-account JWT; without it a token is
    /// requested through the TokenRequest API (needs -kubeconfig).
    #[arg(long = "token-file")]
    pub token_file: Option<PathBuf>,

    /// File holding the object-version key (raw, or base64 as in the
    /// Secret); without it the key Secret is read through -kubeconfig.
    #[arg(long = "hmac-key-file")]
    pub hmac_key_file: Option<PathBuf>,

    /// Directory to write the files into, as the driver does.
    #[arg(long = "target", required_unless_present = "dry_run")]
    pub target: Option<PathBuf>,

    /// List what would be written (paths, modes, sizes, versions), no values.
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// Default file mode, as the driver's `permission` (octal).
    #[arg(long = "permission", default_value = "0644", value_parser = parse_octal)]
    pub permission: u32,

    /// How long the whole mount may take.
    #[arg(long = "timeout", default_value = "60s", value_parser = |s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))]
    pub timeout: Duration,

    /// Provider flags.
    #[command(flatten)]
    pub provider: Flags,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not key=value"))?;
    let value = match v.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?,
        None => v.to_string(),
    };
    Ok((k.to_string(), value))
}

fn parse_octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 0644"))
}

/// Entry point of `mount`.
pub fn main(argv: Vec<String>) -> ExitCode {
    let args = match MountArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => return usage_error(e, Some("mount")),
    };
    // Logs go to stderr, so stdout is only the report.
    let _ = crate::logging::init(args.provider.effective_log_level(), args.provider.log_format);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vault-csi-provider mount: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(e)) => {
            eprintln!("vault-csi-provider mount: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Mount(e)) => {
            eprintln!("vault-csi-provider mount: {e}");
            ExitCode::from(EXIT_PROBLEMS)
        }
    }
}

/// Why `mount` failed: bad inputs, or the mount itself.
enum Failure {
    Usage(String),
    Mount(String),
}

async fn run(args: MountArgs) -> Result<String, Failure> {
    let flags = &args.provider;
    let Asked {
        params,
        class_name,
        namespace,
    } = parameters(&args)?;
    let defaults = flags.defaults().map_err(|e| Failure::Usage(e.to_string()))?;
    let kube = match &flags.kubeconfig {
        Some(path) => Some(
            KubeClient::load(Some(path), flags.request_timeout)
                .await
                .map_err(|e| Failure::Usage(e.to_string()))?,
        ),
        None => None,
    };
    let (versions, key_note) = versions(&args, kube.as_ref()).await?;
    let input = mount_input(&args, params, class_name, &namespace, kube.is_some())?;
    // The provider's own mount logic, built the same way, for one mount.
    let tasks = crate::tasks::Tasks::new();
    let core = Core::build(core_config(flags, defaults), kube, Arc::new(versions), tasks.clone());
    let (ledger, pool) = (core.ledger.clone(), core.pool.clone());
    let started = Instant::now();
    let result = core.mounter.mount(&input, started + args.timeout).await;
    let elapsed = started.elapsed();
    // A dry run shows no values, so nothing it minted can be of use: revoke
    // the login token, which takes any dynamic credentials with it.
    let revoked = if args.dry_run {
        revoke_login(&ledger, &pool, &args.pod_uid).await
    } else {
        0
    };
    tasks.shutdown(Duration::from_secs(1)).await;
    let output = result.map_err(|e| Failure::Mount(format!("mount failed ({}): {e}", code_name(e.code()))))?;
    let mut report = String::new();
    let pod = format!(
        "{namespace}/{}",
        if args.pod_name.is_empty() { "-" } else { &args.pod_name }
    );
    if args.dry_run {
        report.push_str(&format!(
            "dry run for pod {pod}: {} file(s) would be written ({} ms)\n",
            output.files.len(),
            elapsed.as_millis()
        ));
    } else if let Some(target) = &args.target {
        writer::write_atomic(target, &output.files).map_err(|e| Failure::Mount(e.to_string()))?;
        report.push_str(&format!(
            "wrote {} file(s) for pod {pod} to {} ({} ms)\n",
            output.files.len(),
            target.display(),
            elapsed.as_millis()
        ));
    }
    report.push_str(&listing(&output));
    if revoked > 0 {
        report
            .push_str("the Vault token of this dry run was revoked, and with it any dynamic credentials it created\n");
    }
    if let Some(note) = key_note {
        report.push_str(&format!("note: {note}\n"));
    }
    Ok(report)
}

/// What the command line asks to mount.
struct Asked {
    /// The class's parameters (from its file) with the `--param`s over them.
    params: BTreeMap<String, String>,
    /// The class's name.
    class_name: Option<String>,
    /// The pod's namespace.
    namespace: String,
}

/// What the command line asks to mount (see [`Asked`]).
fn parameters(args: &MountArgs) -> Result<Asked, Failure> {
    let (mut params, class_name, class_ns) = match &args.spc {
        Some(file) => class_parameters(file, args.spc_name.as_deref())?,
        None => (BTreeMap::new(), args.spc_name.clone(), None),
    };
    params.extend(args.params.iter().cloned());
    if params.is_empty() {
        return Err(Failure::Usage(
            "give a SecretProviderClass file or --param key=value (roleName, objects, ...)".to_string(),
        ));
    }
    let namespace = args
        .pod_namespace
        .clone()
        .or(class_ns)
        .unwrap_or_else(|| "default".to_string());
    Ok(Asked {
        params,
        class_name,
        namespace,
    })
}

/// The request the driver would send: the parameters, the pod's
/// attributes, and the token from `--token-file` (else, with a Kubernetes
/// client, one is requested through the TokenRequest API).
fn mount_input(
    args: &MountArgs,
    params: BTreeMap<String, String>,
    class_name: Option<String>,
    namespace: &str,
    has_kube: bool,
) -> Result<MountInput, Failure> {
    let mut attrs = params;
    attrs.insert(keys::POD_NAME.to_string(), args.pod_name.clone());
    attrs.insert(keys::POD_NAMESPACE.to_string(), namespace.to_string());
    attrs.insert(keys::POD_UID.to_string(), args.pod_uid.clone());
    attrs.insert(keys::SERVICE_ACCOUNT.to_string(), args.service_account.clone());
    if let Some(name) = class_name {
        attrs.insert(keys::SPC_NAME.to_string(), name);
    }
    if let Some(path) = &args.token_file {
        let jwt = std::fs::read_to_string(path)
            .map_err(|e| Failure::Usage(format!("cannot read the token file {}: {e}", path.display())))?;
        let audience = attrs
            .get("audience")
            .cloned()
            .unwrap_or_else(|| args.provider.primary_flavor().default_audience().to_string());
        let tokens = serde_json::json!({ audience: { "token": jwt.trim(), "expirationTimestamp": "" } });
        attrs.insert(keys::SA_TOKENS.to_string(), tokens.to_string());
    } else if !has_kube {
        return Err(Failure::Usage(
            "give --token-file, or -kubeconfig to request a token through the TokenRequest API".to_string(),
        ));
    }
    Ok(MountInput {
        attributes: serde_json::to_string(&attrs).map_err(|e| Failure::Usage(e.to_string()))?,
        secrets: String::new(),
        permission: args.permission.to_string(),
    })
}

/// The provider's mount settings for one mount from a laptop: a ledger in
/// memory only (never the provider's state file), and no node (a laptop is
/// none: the pod is named on the command line).
fn core_config(flags: &Flags, defaults: crate::spc::Defaults) -> CoreConfig {
    CoreConfig {
        settings: Settings {
            defaults,
            fetch_concurrency: usize::from(flags.fetch_concurrency),
            node_name: None,
            authoritative_classes: false,
        },
        ledger: LedgerSettings {
            reuse: false,
            threshold: flags.renew_threshold,
            grace: flags.rotation_grace,
            capacity: 1,
            state_file: None,
            node: None,
            max_held_bytes: flags.max_held_bytes,
        },
        request_timeout: flags.request_timeout,
        retry_window: flags.retry_budget,
        max_mount_bytes: flags.max_mount_bytes,
        max_inflight_bytes: flags.max_inflight_bytes,
    }
}

async fn revoke_login(ledger: &Ledger, pool: &VaultPool, pod_uid: &str) -> usize {
    let mut revoked = 0;
    for (vault, token) in ledger.remove_pod(pod_uid) {
        match pool.revoke(&vault, &token).await {
            Ok(()) => revoked += 1,
            Err(e) => eprintln!("warning: could not revoke the dry run's Vault token ({e}); it expires on its own"),
        }
    }
    revoked
}

/// One line per file: mode, size, version, path. Never the contents.
fn listing(output: &MountOutput) -> String {
    let versions: BTreeMap<&str, &str> = output
        .versions
        .iter()
        .map(|(id, v)| (id.as_str(), v.as_str()))
        .collect();
    let mut s = String::new();
    for f in &output.files {
        s.push_str(&format!(
            "  {:04o}  {:>8} B  {}  {}\n",
            f.mode,
            f.contents.len(),
            versions.get(f.path.as_str()).copied().unwrap_or("-"),
            f.path
        ));
    }
    s
}

type ClassParameters = (BTreeMap<String, String>, Option<String>, Option<String>);

/// The parameters, name and namespace of the chosen class in `file`.
fn class_parameters(file: &std::path::Path, name: Option<&str>) -> Result<ClassParameters, Failure> {
    let loaded = spc_file::load(file).map_err(Failure::Usage)?;
    let mut docs: Vec<(usize, &spc_file::SpcDocument)> = loaded
        .documents
        .iter()
        .enumerate()
        .filter(|(_, d)| name.is_none_or(|n| d.name == n))
        .collect();
    let (index, doc) = match docs.len() {
        1 => docs.remove(0),
        0 => {
            let mut why = format!(
                "no SecretProviderClass{} in {}",
                name.map(|n| format!(" named {n:?}")).unwrap_or_default(),
                file.display()
            );
            for p in &loaded.problems {
                why.push_str(&format!("; line {}: {}", p.line.unwrap_or(0), p.message));
            }
            return Err(Failure::Usage(why));
        }
        n => {
            return Err(Failure::Usage(format!(
                "{} holds {n} SecretProviderClasses: choose one with --spc-name",
                file.display()
            )))
        }
    };
    if let Some((_, p)) = loaded.document_problems.iter().find(|(d, _)| *d == index) {
        return Err(Failure::Usage(format!(
            "{}:{}: {} (run `vault-csi-provider check {}` for every problem)",
            file.display(),
            p.line.unwrap_or(doc.first_line),
            p.message,
            file.display()
        )));
    }
    Ok((doc.parameters.clone(), Some(doc.name.clone()), doc.namespace.clone()))
}

/// The version key: a file, else the provider's Secret read (never created)
/// through the kubeconfig, else a throwaway key with a note saying so.
async fn versions(args: &MountArgs, kube: Option<&KubeClient>) -> Result<(Versions, Option<String>), Failure> {
    if let Some(path) = &args.hmac_key_file {
        let raw = std::fs::read(path)
            .map_err(|e| Failure::Usage(format!("cannot read the key file {}: {e}", path.display())))?;
        return Ok((Versions::fixed(&decode_key(&raw).map_err(Failure::Usage)?), None));
    }
    if let Some(kube) = kube {
        let flags = &args.provider;
        let namespace = flags
            .hmac_secret_namespace
            .clone()
            .unwrap_or_else(|| kube.namespace().to_string());
        let name = &flags.hmac_secret_name();
        let secret = kube.get_secret(&namespace, name).await.map_err(|e| {
            Failure::Mount(format!(
                "cannot read the object-version key Secret {namespace}/{name}: {e}"
            ))
        })?;
        let Some(secret) = secret else {
            return Err(Failure::Usage(format!(
                "no object-version key Secret {namespace}/{name}: set -hmac-secret-namespace to the provider's namespace, or pass --hmac-key-file"
            )));
        };
        let raw = key_from_secret(&secret, &namespace, name).map_err(|e| Failure::Mount(e.to_string()))?;
        return Ok((Versions::fixed(&raw), None));
    }
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| Failure::Mount("cannot generate a random key".to_string()))?;
    Ok((
        Versions::fixed(&raw),
        Some("versions were computed with a throwaway key and will not match the driver's; pass --hmac-key-file or -kubeconfig".to_string()),
    ))
}

/// A key file holds the raw key, or its base64 as stored in the Secret.
fn decode_key(raw: &[u8]) -> Result<Vec<u8>, String> {
    let text = std::str::from_utf8(raw).map(str::trim).unwrap_or_default();
    let key = match base64::engine::general_purpose::STANDARD.decode(text) {
        Ok(decoded) if !text.is_empty() && decoded.len() >= 32 => decoded,
        _ => raw.to_vec(),
    };
    if key.len() < 32 {
        return Err(format!(
            "the key file holds {} bytes; the key is at least 32",
            key.len()
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_raw_or_base64() {
        let raw = [7u8; 32];
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(decode_key(&raw).unwrap(), raw);
        assert_eq!(decode_key(format!("{b64}\n").as_bytes()).unwrap(), raw);
        assert!(decode_key(b"short").is_err());
    }

    #[test]
    fn provider_flags_go_style_and_own_flags_parse_together() {
        let argv = crate::config::go_style_args(
            [
                "vault-csi-provider mount",
                "spc.yaml",
                "-vault-addr=http://127.0.0.1:1",
                "--param",
                "roleName=x",
                "-pod-name=web-0",
                "--dry-run",
            ]
            .into_iter()
            .map(String::from),
        );
        let a = MountArgs::try_parse_from(argv).unwrap();
        assert_eq!(a.provider.vault_addr.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(a.pod_name, "web-0");
        assert_eq!(a.params, vec![("roleName".to_string(), "x".to_string())]);
        assert!(a.dry_run);
        assert_eq!(a.permission, 0o644);
        assert!(
            MountArgs::try_parse_from(["m", "spc.yaml"]).is_err(),
            "--target or --dry-run"
        );
    }
}
