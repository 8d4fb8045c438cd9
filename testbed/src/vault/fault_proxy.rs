//! A fault-injecting HTTP/1.1 proxy for the tests that break Vault: delays,
//! error statuses, redirects, connections cut mid-response or refused,
//! switchable at runtime and per path, and a record of what it saw.

use std::time::Duration;

/// What the [`Proxy`] does with the requests that reach it, switchable at
/// runtime with [`Proxy::set`]. The fault in force when a request has been
/// read decides its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward the request, relay the response.
    Pass,
    /// Forward, but hold every chunk of the response for this long (a slow server).
    Delay(Duration),
    /// Answer this status with a Vault-style `{"errors": [...]}` body; the
    /// request never reaches the server.
    Status(u16),
    /// Answer `307 Temporary Redirect` to this `Location` (a standby node).
    Redirect(String),
    /// Answer what a Vault node answers while its cluster elects a leader
    /// (503, no active node), forever.
    Leaderless,
    /// Forward the request, then relay only the first half of the response
    /// and close the connection: the server did the work, the client never
    /// learns the result.
    CloseMidResponse,
    /// Stop listening: connections are refused (nothing was sent).
    Refuse,
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Whether it was passed on to the server.
    pub forwarded: bool,
}

struct ProxyShared {
    fault: tokio::sync::watch::Sender<Fault>,
    /// When set, the fault applies only to paths starting with this.
    only: std::sync::Mutex<Option<String>>,
    up: std::sync::atomic::AtomicUsize,
    seen: std::sync::Mutex<Vec<Seen>>,
}

/// A fault-injecting HTTP/1.1 proxy in front of a plain-HTTP server (OpenBao).
///
/// It reads one request per connection and forces `Connection: close` on
/// both sides, so every request opens a fresh connection and a fault switched
/// on with [`Proxy::set`] applies to the very next request, never to a
/// connection pooled before. It counts the bytes passed to the server (to
/// prove that no request reached it) and records every request it saw.
pub struct Proxy {
    addr: std::net::SocketAddr,
    shared: std::sync::Arc<ProxyShared>,
    _task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream_url` (`http://host:port`) whose responses are
    /// held for `delay` (zero: pass through).
    pub async fn start(upstream_url: &str, delay: Duration) -> Proxy {
        let fault = if delay.is_zero() {
            Fault::Pass
        } else {
            Fault::Delay(delay)
        };
        Proxy::with_fault(upstream_url, fault).await
    }

    /// A proxy to `upstream_url` that starts with `fault`.
    pub async fn with_fault(upstream_url: &str, fault: Fault) -> Proxy {
        let upstream = upstream_url.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (tx, rx) = tokio::sync::watch::channel(fault);
        let shared = std::sync::Arc::new(ProxyShared {
            fault: tx,
            only: std::sync::Mutex::new(None),
            up: std::sync::atomic::AtomicUsize::new(0),
            seen: std::sync::Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, addr, upstream, shared.clone(), rx));
        Proxy {
            addr,
            shared,
            _task: task,
        }
    }

    /// Switches the fault for every request read from now on.
    pub fn set(&self, fault: Fault) {
        *self.shared.only.lock().expect("proxy lock") = None;
        self.shared.fault.send_replace(fault);
    }

    /// Applies `fault` only to requests whose path starts with `prefix`;
    /// the others pass. (Not for [`Fault::Refuse`], which acts before any
    /// request is read.)
    pub fn set_only(&self, prefix: &str, fault: Fault) {
        *self.shared.only.lock().expect("proxy lock") = Some(prefix.to_string());
        self.shared.fault.send_replace(fault);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes of requests passed on to the server.
    pub fn bytes_to_server(&self) -> usize {
        self.shared.up.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("proxy lock").clone()
    }

    /// Requests passed on to the server whose path starts with `prefix`.
    pub fn forwarded(&self, prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.forwarded && s.path.starts_with(prefix))
            .count()
    }

    /// Forgets the requests seen so far.
    pub fn clear_seen(&self) {
        self.shared.seen.lock().expect("proxy lock").clear();
    }
}

async fn accept_loop(
    mut listener: tokio::net::TcpListener,
    addr: std::net::SocketAddr,
    upstream: String,
    shared: std::sync::Arc<ProxyShared>,
    mut rx: tokio::sync::watch::Receiver<Fault>,
) {
    loop {
        if *rx.borrow_and_update() == Fault::Refuse {
            // Closing the listening socket makes connects fail with
            // ECONNREFUSED; bind the same port again once the fault is lifted
            // (tokio sets SO_REUSEADDR). Meanwhile a socket bound to the
            // port, not listening, keeps the kernel from choosing it as a
            // connecting client's own port: the port is in the ephemeral
            // range, and a client given it would connect to itself (TCP
            // simultaneous open) and read its own request back as the answer.
            drop(listener);
            let _held = hold_port(addr);
            loop {
                if rx.changed().await.is_err() {
                    return;
                }
                if *rx.borrow_and_update() != Fault::Refuse {
                    break;
                }
            }
            listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => panic!("proxy cannot listen on {addr} again: {e}"),
            };
            continue;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                tokio::spawn(serve_one(client, upstream.clone(), shared.clone()));
            }
        }
    }
}

/// A socket bound to `addr` without listening (see [`accept_loop`]).
fn hold_port(addr: std::net::SocketAddr) -> Option<tokio::net::TcpSocket> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .ok()?;
    socket.set_reuseaddr(true).ok()?;
    socket.bind(addr).ok()?;
    Some(socket)
}

/// Reads one request head and body; `None` if the client went away.
async fn read_request(client: &mut tokio::net::TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = buf[..head_end].to_vec();
    let length = String::from_utf8_lossy(&head)
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

/// The head with any `Connection` header replaced by `Connection: close`.
fn close_head(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut lines: Vec<&str> = text
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    lines.push("Connection: close");
    format!("{}\r\n\r\n", lines.join("\r\n")).into_bytes()
}

async fn serve_one(mut client: tokio::net::TcpStream, upstream: String, shared: std::sync::Arc<ProxyShared>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((head, body)) = read_request(&mut client).await else {
        return;
    };
    let first = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let only = shared.only.lock().expect("proxy lock").clone();
    let fault = match only {
        Some(prefix) if !path.starts_with(&prefix) => Fault::Pass,
        _ => shared.fault.borrow().clone(),
    };
    let forwarded = matches!(fault, Fault::Pass | Fault::Delay(_) | Fault::CloseMidResponse);
    shared.seen.lock().expect("proxy lock").push(Seen {
        method,
        path,
        forwarded,
    });
    let canned = |status: u16, extra: String, body: String| {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    match fault {
        Fault::Refuse => {}
        Fault::Status(code) => {
            let body = serde_json::json!({ "errors": [format!("injected fault: {code}")] }).to_string();
            let _ = client.write_all(canned(code, String::new(), body).as_bytes()).await;
        }
        Fault::Leaderless => {
            let body = serde_json::json!({
                "errors": ["local node not active but active cluster node not found"]
            })
            .to_string();
            let _ = client.write_all(canned(503, String::new(), body).as_bytes()).await;
        }
        Fault::Redirect(location) => {
            let _ = client
                .write_all(canned(307, format!("Location: {location}\r\n"), String::new()).as_bytes())
                .await;
        }
        Fault::Pass | Fault::Delay(_) | Fault::CloseMidResponse => {
            let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let head = close_head(&head);
            shared.up.fetch_add(head.len() + body.len(), Ordering::SeqCst);
            if server.write_all(&head).await.is_err() || server.write_all(&body).await.is_err() {
                return;
            }
            let mut buf = vec![0u8; 64 * 1024];
            if fault == Fault::CloseMidResponse {
                let mut response = Vec::new();
                let _ = server.read_to_end(&mut response).await;
                let _ = client.write_all(&response[..response.len() / 2]).await;
                return;
            }
            while let Ok(n) = server.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Fault::Delay(d) = fault {
                    tokio::time::sleep(d).await;
                }
                if client.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = client.shutdown().await;
}
