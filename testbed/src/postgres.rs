//! The test PostgreSQL server started by `scripts/testbed.sh pg-start`.
//!
//! Tests never start PostgreSQL themselves (initdb needs the `postgres` OS user and takes
//! seconds); they find the running one through `VCP_TEST_PG_URL` or the env file the script
//! writes, and use it as the target of OpenBao's database secrets engine.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

const NOT_RUNNING: &str = "PostgreSQL not running: run scripts/testbed.sh pg-start";

/// A reachable PostgreSQL server with a superuser login (`vault_admin`).
#[derive(Debug, Clone)]
pub struct Postgres {
    /// `postgresql://vault_admin:<pw>@127.0.0.1:55432/postgres`
    pub url: String,
}

/// The parts of a `postgresql://user:password@host:port/database` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgConnInfo {
    /// Login role.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub database: String,
}

impl Postgres {
    /// From env `VCP_TEST_PG_URL`, else the file `<repo>/.testbed/pg/env`; fails with
    /// "PostgreSQL not running: run scripts/testbed.sh pg-start" when neither names a server
    /// that accepts TCP connections.
    pub fn from_env() -> anyhow::Result<Postgres> {
        let url = match std::env::var("VCP_TEST_PG_URL") {
            Ok(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => {
                let file = env_file();
                url_from_env_file(&file)
                    .with_context(|| format!("{NOT_RUNNING} (no VCP_TEST_PG_URL, no usable {})", file.display()))?
            }
        };
        let pg = Postgres { url };
        let info = pg.conn_info().context(NOT_RUNNING)?;
        let addrs: Vec<SocketAddr> = (info.host.as_str(), info.port)
            .to_socket_addrs()
            .with_context(|| format!("{NOT_RUNNING} (cannot resolve {})", info.host))?
            .collect();
        // A TCP connect is enough to tell "not started" from "started": login problems
        // surface later with PostgreSQL's own message.
        let reachable = addrs
            .iter()
            .any(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok());
        if !reachable {
            bail!("{NOT_RUNNING} (nothing listening on {}:{})", info.host, info.port);
        }
        Ok(pg)
    }

    /// Splits [`Postgres::url`] into its parts.
    pub fn conn_info(&self) -> anyhow::Result<PgConnInfo> {
        parse_url(&self.url)
    }

    /// Whether `user`/`password` can log in over TCP and run `SELECT 1`.
    ///
    /// `Ok(false)` means the server refused the login (wrong password, dropped role, expired
    /// `VALID UNTIL`); an unreachable server or a missing `psql` is an error instead, so a
    /// broken test bed never passes for a refused login.
    pub async fn can_login(&self, user: &str, password: &str) -> anyhow::Result<bool> {
        let info = self.conn_info()?;
        let psql = psql_binary()?;
        let mut cmd = tokio::process::Command::new(&psql);
        cmd.args(["-X", "-w", "-q", "-t", "-A", "-h"])
            .arg(&info.host)
            .arg("-p")
            .arg(info.port.to_string())
            .arg("-U")
            .arg(user)
            .arg("-d")
            .arg(&info.database)
            .args(["-c", "SELECT 1"])
            // Keep the user's ~/.pgpass or service files from answering instead of `password`.
            .env_remove("PGPASSFILE")
            .env_remove("PGSERVICE")
            .env_remove("PGSERVICEFILE")
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5")
            .env("PGSSLMODE", "disable")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(20), cmd.output())
            .await
            .map_err(|_| anyhow!("psql as {user} did not finish within 20 s"))?
            .with_context(|| format!("running {}", psql.display()))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).trim() == "1");
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        // psql exits 2 both for "bad password" and "no server": only the former is an answer.
        let unreachable = [
            "Connection refused",
            "timeout expired",
            "could not translate host",
            "No route to host",
        ];
        if unreachable.iter().any(|m| stderr.contains(m)) {
            bail!("{NOT_RUNNING}: {}", stderr.trim());
        }
        Ok(false)
    }
}

fn env_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.testbed/pg/env")
}

fn url_from_env_file(file: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("VCP_TEST_PG_URL="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .find(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("no VCP_TEST_PG_URL= line in {}", file.display()))
}

fn parse_url(url: &str) -> anyhow::Result<PgConnInfo> {
    let rest = url
        .strip_prefix("postgresql://")
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or_else(|| anyhow!("not a postgresql:// URL: {url}"))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    // The last '@' separates credentials, so a '@' inside a password still parses.
    let (creds, hostpart) = rest
        .rsplit_once('@')
        .ok_or_else(|| anyhow!("PostgreSQL URL lacks user:password@: {url}"))?;
    let (user, password) = creds
        .split_once(':')
        .ok_or_else(|| anyhow!("PostgreSQL URL lacks a password: {url}"))?;
    let (hostport, database) = hostpart.split_once('/').unwrap_or((hostpart, "postgres"));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().with_context(|| format!("bad port in {url}"))?),
        None => (hostport, 5432),
    };
    if user.is_empty() || host.is_empty() {
        bail!("PostgreSQL URL lacks user or host: {url}");
    }
    Ok(PgConnInfo {
        user: percent_decode(user),
        password: percent_decode(password),
        host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
        port,
        database: if database.is_empty() {
            "postgres".into()
        } else {
            percent_decode(database)
        },
    })
}

/// `%XX` decoding for URL userinfo; invalid escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // Works on bytes so a multi-byte character after '%' cannot split a str slice.
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `psql` on PATH, else Debian's versioned client directory.
fn psql_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("psql");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin/psql"))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .ok_or_else(|| anyhow!("psql not found: run scripts/testbed.sh install"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let info = parse_url("postgresql://vault_admin:p%40ss@127.0.0.1:55432/postgres").unwrap();
        assert_eq!(
            info,
            PgConnInfo {
                user: "vault_admin".into(),
                password: "p@ss".into(),
                host: "127.0.0.1".into(),
                port: 55432,
                database: "postgres".into(),
            }
        );
        let info = parse_url("postgres://u:pw@localhost?sslmode=disable").unwrap();
        assert_eq!((info.port, info.database.as_str()), (5432, "postgres"));
        assert!(parse_url("mysql://u:p@h/db").is_err());
        assert!(parse_url("postgresql://h:5432/db").is_err());
    }
}
