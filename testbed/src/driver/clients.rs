//! Real gRPC clients against the provider socket: programs built on the
//! libraries actual drivers use, run as child processes.
//!
//! - `testbed/go-driver` on grpc-go (every Secrets Store CSI driver release),
//!   dialing as driver v1.5 ([`RealClient::GoV15`]) or v1.6
//!   ([`RealClient::GoV16`]). Built by `scripts/testbed.sh go-driver`, found
//!   through `VCP_GO_DRIVER`.
//! - `testbed/python/vcp_driver_client.py` on PyPI's grpcio (gRPC C-core),
//!   target `unix:<path>`, with `:authority` as C-core chooses it (the path
//!   %-encoded, [`RealClient::CcoreDefault`]), `localhost`
//!   ([`RealClient::CcoreLocalhost`]) or the raw socket path
//!   ([`RealClient::CcorePath`]). Run with `VCP_PYTHON`.
//!
//! Unlike [`driver`](super)'s tonic client, these wait for the
//! server's HTTP/2 SETTINGS before sending a request, as real drivers do.
//! Requests and responses cross the process boundary as proto3 JSON
//! (lowerCamelCase names, bytes in base64), converted here by hand since the
//! prost types have no serde.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use vcp_proto::{Error as ProviderError, File, MountRequest, MountResponse, ObjectVersion, VersionResponse};

/// The environment variable naming the grpc-go client binary.
pub const GO_DRIVER_ENV: &str = "VCP_GO_DRIVER";
/// The environment variable naming the test bed's Python (with grpcio).
pub const PYTHON_ENV: &str = "VCP_PYTHON";
/// The C-core client script, in this repository.
pub const PYTHON_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/vcp_driver_client.py");

/// A real client and the way it dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealClient {
    /// grpc-go as driver v1.5 dials: a bare socket path (passthrough
    /// resolver) and a custom unix dialer, so `:authority` is the path.
    GoV15,
    /// grpc-go as driver v1.6 dials: `unix:<path>`, authority `localhost`.
    GoV16,
    /// gRPC C-core, target `unix:<path>` and nothing else: C-core sends the
    /// path %-encoded without its leading slash (`tmp%2Fd%2Fvault.sock`).
    CcoreDefault,
    /// gRPC C-core with `grpc.default_authority` `localhost`.
    CcoreLocalhost,
    /// gRPC C-core with `grpc.default_authority` set to the socket path.
    CcorePath,
}

impl RealClient {
    /// Every client.
    pub const ALL: [RealClient; 5] = [
        RealClient::GoV15,
        RealClient::GoV16,
        RealClient::CcoreDefault,
        RealClient::CcoreLocalhost,
        RealClient::CcorePath,
    ];

    /// A short name for messages and reports.
    pub fn name(self) -> &'static str {
        match self {
            RealClient::GoV15 => "grpc-go, driver v1.5 dialing",
            RealClient::GoV16 => "grpc-go, driver v1.6 dialing",
            RealClient::CcoreDefault => "gRPC C-core (grpcio), its own authority (%-encoded path)",
            RealClient::CcoreLocalhost => "gRPC C-core (grpcio), authority localhost",
            RealClient::CcorePath => "gRPC C-core (grpcio), authority = socket path",
        }
    }

    /// The program this client runs (the Go binary or the Python
    /// interpreter), or an error saying how to install it.
    pub fn program(self) -> anyhow::Result<PathBuf> {
        let var = self.program_env();
        locate(var, std::env::var_os(var))
    }

    fn program_env(self) -> &'static str {
        match self {
            RealClient::GoV15 | RealClient::GoV16 => GO_DRIVER_ENV,
            RealClient::CcoreDefault | RealClient::CcoreLocalhost | RealClient::CcorePath => PYTHON_ENV,
        }
    }

    /// The command line, up to (not including) the subcommand.
    fn command(self, socket: &Path, timeout: Duration) -> anyhow::Result<Command> {
        let program = self.program()?;
        let mut cmd = match self {
            RealClient::GoV15 | RealClient::GoV16 => {
                let mut cmd = crate::child::command(program);
                cmd.arg(format!("-socket={}", socket.display()))
                    .arg(format!(
                        "-dial={}",
                        if self == RealClient::GoV15 { "v15" } else { "v16" }
                    ))
                    .arg(format!("-timeout={}ms", timeout.as_millis()));
                cmd
            }
            RealClient::CcoreDefault | RealClient::CcoreLocalhost | RealClient::CcorePath => {
                let mut cmd = crate::child::command(program);
                cmd.arg(PYTHON_CLIENT)
                    .arg(format!("--socket={}", socket.display()))
                    .arg(match self {
                        RealClient::CcoreLocalhost => "--authority=localhost",
                        RealClient::CcorePath => "--authority=path",
                        _ => "--authority=default",
                    })
                    .arg(format!("--timeout={}", timeout.as_secs_f64()));
                cmd
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(cmd)
    }

    /// Flag spelling of each program (Go's `-n`, Python's `--request`).
    fn flag(self, name: &str) -> String {
        match (self, name) {
            (RealClient::GoV15 | RealClient::GoV16, _) | (_, "n") => format!("-{name}"),
            _ => format!("--{name}"),
        }
    }

    /// Runs one command to completion and parses its JSON document.
    /// `calls` bounds how long it may take: each call has `timeout`.
    async fn run(
        self,
        socket: &Path,
        timeout: Duration,
        calls: u32,
        args: &[String],
        requests: &[&MountRequest],
    ) -> anyhow::Result<Value> {
        let dir = Scratch::new()?;
        let mut cmd = self.command(socket, timeout)?;
        cmd.args(args);
        for (i, req) in requests.iter().enumerate() {
            let path = dir.0.join(format!("request-{i}.json"));
            std::fs::write(&path, request_to_json(req).to_string())
                .with_context(|| format!("writing {}", path.display()))?;
            let flag = if i == 0 { "request" } else { "then" };
            cmd.arg(self.flag(flag)).arg(&path);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the {} client", self.name()))?;
        // Each call is bounded by its own deadline; the margin covers start-up
        // (the Python client generates its stubs first).
        let bound = timeout * calls.max(1) + Duration::from_secs(20);
        let out = tokio::time::timeout(bound, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("the {} client ran longer than {bound:?} and was killed", self.name()))?
            .with_context(|| format!("waiting for the {} client", self.name()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 0: every call succeeded; 3: a call failed, and the outcome is printed.
        if !matches!(out.status.code(), Some(0) | Some(3)) {
            bail!(
                "the {} client failed ({}): {}{}",
                self.name(),
                out.status,
                stderr.trim(),
                stdout.trim()
            );
        }
        serde_json::from_str(stdout.trim()).with_context(|| {
            format!(
                "the {} client printed no JSON document: {stdout:?} (stderr: {})",
                self.name(),
                stderr.trim()
            )
        })
    }

    /// One Version call on a new connection.
    pub async fn version(self, socket: &Path, timeout: Duration) -> anyhow::Result<Call<VersionResponse>> {
        let doc = self.run(socket, timeout, 1, &["version".into()], &[]).await?;
        Call::parse(&doc, version_from_json)
    }

    /// One Mount on a new connection.
    pub async fn mount(
        self,
        socket: &Path,
        request: &MountRequest,
        timeout: Duration,
    ) -> anyhow::Result<Call<MountResponse>> {
        let doc = self.run(socket, timeout, 1, &["mount".into()], &[request]).await?;
        Call::parse(&doc, response_from_json)
    }

    /// A Mount, then on the same connection `then` carrying the first
    /// answer's object versions as `current_object_version` (what a v1.5
    /// driver's rotation sends). One or two calls: none after a failure.
    pub async fn rotate(
        self,
        socket: &Path,
        first: &MountRequest,
        then: &MountRequest,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Call<MountResponse>>> {
        let doc = self.run(socket, timeout, 2, &["rotate".into()], &[first, then]).await?;
        doc["calls"]
            .as_array()
            .ok_or_else(|| anyhow!("rotate printed no calls: {doc}"))?
            .iter()
            .map(|c| Call::parse(c, response_from_json))
            .collect()
    }

    /// `n` connections opened at once, each calling Version then Mount.
    pub async fn concurrent(
        self,
        socket: &Path,
        request: &MountRequest,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Connection>> {
        let args = ["concurrent".to_string(), self.flag("n"), n.to_string()];
        let doc = self.run(socket, timeout, 2, &args, &[request]).await?;
        let conns = doc["connections"]
            .as_array()
            .ok_or_else(|| anyhow!("concurrent printed no connections: {doc}"))?;
        conns
            .iter()
            .map(|c| {
                Ok(Connection {
                    version: Call::parse(&c["version"], version_from_json)?,
                    mount: match c.get("mount") {
                        Some(m) if !m.is_null() => Some(Call::parse(m, response_from_json)?),
                        _ => None,
                    },
                })
            })
            .collect()
    }

    /// `warmup` untimed then `n` timed Mounts on one persistent connection.
    pub async fn bench(
        self,
        socket: &Path,
        request: &MountRequest,
        n: usize,
        warmup: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Duration>> {
        let args = [
            "bench".to_string(),
            self.flag("n"),
            n.to_string(),
            self.flag("warmup"),
            warmup.to_string(),
        ];
        let calls = u32::try_from(n + warmup).unwrap_or(u32::MAX);
        let doc = self.run(socket, timeout, calls, &args, &[request]).await?;
        if let Some(failed) = doc.get("failed") {
            let call = Call::parse(failed, response_from_json)?;
            bail!(
                "bench: a {} call failed: {}",
                doc["phase"].as_str().unwrap_or("?"),
                call.result.err().map(|s| s.to_string()).unwrap_or_default()
            );
        }
        doc["latenciesMs"]
            .as_array()
            .ok_or_else(|| anyhow!("bench printed no latencies: {doc}"))?
            .iter()
            .map(|v| {
                v.as_f64()
                    .map(|ms| Duration::from_secs_f64(ms / 1000.0))
                    .ok_or_else(|| anyhow!("latency {v} is not a number"))
            })
            .collect()
    }

    /// Starts a long-lived client on one persistent connection that calls
    /// Mount with `request` whenever asked ([`Session::mount`]): for a
    /// harness interleaving these calls with its own.
    pub async fn session(self, socket: &Path, request: &MountRequest, timeout: Duration) -> anyhow::Result<Session> {
        let dir = Scratch::new()?;
        let path = dir.0.join("request.json");
        std::fs::write(&path, request_to_json(request).to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        let mut cmd = self.command(socket, timeout)?;
        cmd.arg("serve").arg(self.flag("request")).arg(&path);
        cmd.stdin(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the {} client", self.name()))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stdin pipe"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout pipe"))?;
        Ok(Session {
            client: self,
            timeout,
            _child: child,
            stdin,
            stdout: BufReader::new(stdout).lines(),
            _dir: dir,
        })
    }
}

/// A long-lived client process keeping one connection (see [`RealClient::session`]).
pub struct Session {
    client: RealClient,
    timeout: Duration,
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _dir: Scratch,
}

impl Session {
    /// One Mount with the session's request; the latency is measured inside
    /// the client, around the library call.
    pub async fn mount(&mut self) -> anyhow::Result<Call<MountResponse>> {
        let doc = self.ask("mount").await?;
        Call::parse(&doc, response_from_json)
    }

    /// One Mount with another request, on the same connection (the
    /// grpc-go client only).
    pub async fn mount_other(&mut self, request: &MountRequest) -> anyhow::Result<Call<MountResponse>> {
        if !matches!(self.client, RealClient::GoV15 | RealClient::GoV16) {
            bail!("only the grpc-go client takes a request per line");
        }
        let doc = self.ask(&format!("mount {}", request_to_json(request))).await?;
        Call::parse(&doc, response_from_json)
    }

    /// One Version call.
    pub async fn version(&mut self) -> anyhow::Result<Call<VersionResponse>> {
        let doc = self.ask("version").await?;
        Call::parse(&doc, version_from_json)
    }

    async fn ask(&mut self, command: &str) -> anyhow::Result<Value> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .with_context(|| format!("the {} client went away", self.client.name()))?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(self.timeout + Duration::from_secs(5), self.stdout.next_line())
            .await
            .map_err(|_| anyhow!("the {} client did not answer within its deadline", self.client.name()))??
            .ok_or_else(|| anyhow!("the {} client exited", self.client.name()))?;
        serde_json::from_str(&line).with_context(|| format!("the {} client printed {line:?}", self.client.name()))
    }
}

/// `value` of `var` as an existing file, or an error saying how to get one.
fn locate(var: &str, value: Option<OsString>) -> anyhow::Result<PathBuf> {
    let fix = "run scripts/testbed.sh install, then eval \"$(scripts/testbed.sh env)\" (scripts/test.sh does both)";
    let path = value
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("{var} is not set, so a real gRPC client cannot run: {fix}"))?;
    if !path.is_file() {
        bail!("{var}={} does not exist: {fix}", path.display());
    }
    Ok(path)
}

/// A private scratch directory for request files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vcp-client-{}-{n}", std::process::id()));
        // create_dir (not _all) fails if it exists: never reuse a stranger's.
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One call's outcome as the client saw it.
#[derive(Debug)]
pub struct Call<T> {
    /// Time spent in the library's call (the connection's setup included
    /// for a connection's first call).
    pub latency: Duration,
    /// The response, or the gRPC status the library returned.
    pub result: Result<T, tonic::Status>,
}

impl<T> Call<T> {
    fn parse(doc: &Value, response: fn(&Value) -> anyhow::Result<T>) -> anyhow::Result<Call<T>> {
        let ms = doc["latencyMs"]
            .as_f64()
            .ok_or_else(|| anyhow!("no latencyMs in {doc}"))?;
        let latency = Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        let result = if let Some(status) = doc.get("status") {
            let code = status["code"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .ok_or_else(|| anyhow!("status without a code: {status}"))?;
            Err(tonic::Status::new(
                tonic::Code::from_i32(code),
                status["message"].as_str().unwrap_or_default().to_string(),
            ))
        } else {
            Ok(response(doc.get("response").unwrap_or(&Value::Null))?)
        };
        Ok(Call { latency, result })
    }
}

/// What one of [`RealClient::concurrent`]'s connections saw.
#[derive(Debug)]
pub struct Connection {
    /// Its Version call.
    pub version: Call<VersionResponse>,
    /// Its Mount (absent when the client could not even create the channel).
    pub mount: Option<Call<MountResponse>>,
}

// ---------------------------------------------------------------- proto3 JSON

fn versions_to_json(versions: &[ObjectVersion]) -> Value {
    Value::Array(
        versions
            .iter()
            .map(|v| json!({"id": v.id, "version": v.version}))
            .collect(),
    )
}

/// A MountRequest in proto3 JSON.
pub fn request_to_json(r: &MountRequest) -> Value {
    json!({
        "attributes": r.attributes,
        "secrets": r.secrets,
        "targetPath": r.target_path,
        "permission": r.permission,
        "currentObjectVersion": versions_to_json(&r.current_object_version),
    })
}

/// A MountResponse in proto3 JSON.
pub fn response_to_json(r: &MountResponse) -> Value {
    let mut m = Map::new();
    m.insert("objectVersion".into(), versions_to_json(&r.object_version));
    if let Some(e) = &r.error {
        m.insert("error".into(), json!({"code": e.code}));
    }
    m.insert(
        "files".into(),
        Value::Array(
            r.files
                .iter()
                .map(|f| {
                    json!({
                        "path": f.path,
                        "mode": f.mode,
                        "contents": base64::engine::general_purpose::STANDARD.encode(&f.contents),
                    })
                })
                .collect(),
        ),
    );
    Value::Object(m)
}

/// A field of a proto3 JSON object by its JSON name or, as parsers must
/// also accept, its proto name. Absent and `null` both mean the default.
fn field<'a>(obj: &'a Value, json_name: &str, proto_name: &str) -> Option<&'a Value> {
    obj.get(json_name)
        .or_else(|| obj.get(proto_name))
        .filter(|v| !v.is_null())
}

fn string_field(obj: &Value, json_name: &str, proto_name: &str) -> anyhow::Result<String> {
    match field(obj, json_name, proto_name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => bail!("field {json_name} is not a string: {other}"),
    }
}

fn list_field<'a>(obj: &'a Value, json_name: &str, proto_name: &str) -> anyhow::Result<&'a [Value]> {
    match field(obj, json_name, proto_name) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => bail!("field {json_name} is not a list: {other}"),
    }
}

fn versions_from_json(items: &[Value]) -> anyhow::Result<Vec<ObjectVersion>> {
    items
        .iter()
        .map(|v| {
            Ok(ObjectVersion {
                id: string_field(v, "id", "id")?,
                version: string_field(v, "version", "version")?,
            })
        })
        .collect()
}

fn object(v: &Value, what: &str) -> anyhow::Result<()> {
    if v.is_object() {
        Ok(())
    } else {
        bail!("{what} is not a JSON object: {v}")
    }
}

/// A MountRequest from proto3 JSON.
pub fn request_from_json(v: &Value) -> anyhow::Result<MountRequest> {
    object(v, "MountRequest")?;
    Ok(MountRequest {
        attributes: string_field(v, "attributes", "attributes")?,
        secrets: string_field(v, "secrets", "secrets")?,
        target_path: string_field(v, "targetPath", "target_path")?,
        permission: string_field(v, "permission", "permission")?,
        current_object_version: versions_from_json(list_field(v, "currentObjectVersion", "current_object_version")?)?,
    })
}

/// A MountResponse from proto3 JSON (`contents` in standard or URL-safe
/// base64, `mode` a number or a decimal string, as proto3 JSON allows).
pub fn response_from_json(v: &Value) -> anyhow::Result<MountResponse> {
    object(v, "MountResponse")?;
    let files = list_field(v, "files", "files")?
        .iter()
        .map(|f| {
            let path = string_field(f, "path", "path")?;
            let mode = match field(f, "mode", "mode") {
                None => 0,
                Some(Value::Number(n)) => n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or_else(|| anyhow!("file {path}: mode {n} is not an int32"))?,
                Some(Value::String(s)) => s
                    .parse()
                    .with_context(|| format!("file {path}: mode {s:?} is not an int32"))?,
                Some(other) => bail!("file {path}: mode is not a number: {other}"),
            };
            let encoded = string_field(f, "contents", "contents")?;
            let contents = base64::engine::general_purpose::STANDARD
                .decode(&encoded)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(&encoded))
                .with_context(|| format!("file {path}: contents are not base64"))?;
            Ok(File { path, mode, contents })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let error = match field(v, "error", "error") {
        None => None,
        Some(e) => Some(ProviderError {
            code: string_field(e, "code", "code")?,
        }),
    };
    Ok(MountResponse {
        object_version: versions_from_json(list_field(v, "objectVersion", "object_version")?)?,
        error,
        files,
    })
}

/// A VersionResponse from proto3 JSON.
pub fn version_from_json(v: &Value) -> anyhow::Result<VersionResponse> {
    object(v, "VersionResponse")?;
    Ok(VersionResponse {
        version: string_field(v, "version", "version")?,
        runtime_name: string_field(v, "runtimeName", "runtime_name")?,
        runtime_version: string_field(v, "runtimeVersion", "runtime_version")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_response() -> MountResponse {
        MountResponse {
            object_version: vec![ObjectVersion {
                id: "db/password".into(),
                version: "v1-abc".into(),
            }],
            error: None,
            files: vec![File {
                path: "db/password".into(),
                mode: 0o600,
                contents: vec![0, 1, 2, 250, b'\n'],
            }],
        }
    }

    #[test]
    fn a_response_survives_the_json_round_trip() {
        let r = sample_response();
        assert_eq!(response_from_json(&response_to_json(&r)).unwrap(), r);
        let with_error = MountResponse {
            error: Some(ProviderError { code: "E".into() }),
            ..r
        };
        assert_eq!(response_from_json(&response_to_json(&with_error)).unwrap(), with_error);
    }

    #[test]
    fn a_request_survives_the_json_round_trip() {
        let r = MountRequest {
            attributes: r#"{"roleName":"app"}"#.into(),
            secrets: "{}".into(),
            target_path: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/s/mount".into(),
            permission: "420".into(),
            current_object_version: vec![ObjectVersion {
                id: "a".into(),
                version: "1".into(),
            }],
        };
        let v = request_to_json(&r);
        assert_eq!(v["targetPath"], r.target_path, "proto3 JSON names are lowerCamelCase");
        assert_eq!(request_from_json(&v).unwrap(), r);
    }

    #[test]
    fn json_as_the_libraries_print_it_is_read() {
        // jsonpb and json_format omit defaults and may use proto names.
        let v: Value = serde_json::from_str(
            r#"{"object_version":[{"id":"x","version":"1"}],"files":[{"path":"x","mode":"420","contents":"-_8="}]}"#,
        )
        .unwrap();
        let r = response_from_json(&v).unwrap();
        assert_eq!(r.object_version[0].id, "x");
        assert_eq!(r.files[0].mode, 420);
        assert_eq!(r.files[0].contents, vec![0xfb, 0xff]);
        assert_eq!(r.error, None);
        assert_eq!(response_from_json(&json!({})).unwrap(), MountResponse::default());
        assert!(response_from_json(&json!({"files":[{"path":"x","contents":"%%"}]})).is_err());
        assert!(response_from_json(&json!([])).is_err());
    }

    #[test]
    fn a_missing_program_names_the_install_step() {
        for value in [
            None,
            Some(OsString::new()),
            Some(OsString::from("/nonexistent/vcp-go-driver")),
        ] {
            let e = locate(GO_DRIVER_ENV, value).unwrap_err().to_string();
            assert!(
                e.contains(GO_DRIVER_ENV) && e.contains("scripts/testbed.sh install"),
                "{e}"
            );
        }
        assert!(locate(PYTHON_ENV, Some(OsString::from(PYTHON_CLIENT))).is_ok());
    }
}
