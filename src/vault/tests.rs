use super::*;

#[test]
fn paths_are_encoded_but_keep_slashes() {
    assert_eq!(encode_path("/v1/secret/data/my app"), "/v1/secret/data/my%20app");
    assert_eq!(encode_path("/v1/pki/issue/web-server"), "/v1/pki/issue/web-server");
    assert_eq!(encode_path("/v1/a?b#c"), "/v1/a%3Fb%23c");
}

fn resp(status: u16, body: &str) -> Result<transport::Response, HttpError> {
    Ok(transport::Response {
        status,
        headers: Default::default(),
        body: Bytes::from(body.to_string()),
    })
}

/// What a scripted node does with one request.
#[derive(Clone)]
enum Act {
    Answer(u16, &'static str),
    /// Read the request, then close without answering.
    Close,
}

/// A node that answers from a script (then repeats its last act), and
/// counts requests by path.
struct Node {
    addr: String,
    script: Arc<std::sync::Mutex<std::collections::VecDeque<Act>>>,
    hits: Arc<std::sync::Mutex<Vec<String>>>,
    /// What `sys/health` answers (not scripted, not counted).
    health: Arc<std::sync::atomic::AtomicU16>,
}

impl Node {
    async fn start(acts: &[Act]) -> Node {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(std::sync::Mutex::new(
            acts.iter().cloned().collect::<std::collections::VecDeque<_>>(),
        ));
        let hits: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let health = Arc::new(std::sync::atomic::AtomicU16::new(429));
        let (s, h, hl) = (script.clone(), hits.clone(), health.clone());
        tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let (s, h, hl) = (s.clone(), h.clone(), hl.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match c.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len = head
                            .lines()
                            .filter_map(|l| l.split_once(':'))
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        while buf.len() < end + 4 + len {
                            match c.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + 4 + len);
                        let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
                        let act = if path.starts_with("/v1/sys/health") {
                            Act::Answer(hl.load(std::sync::atomic::Ordering::SeqCst), "{}")
                        } else {
                            h.lock().unwrap().push(path);
                            let mut q = s.lock().unwrap();
                            if q.len() > 1 {
                                q.pop_front().unwrap()
                            } else {
                                q.front().cloned().unwrap()
                            }
                        };
                        match act {
                            Act::Close => return,
                            Act::Answer(status, body) => {
                                let extra = if (300..400).contains(&status) {
                                    "Location: http://127.0.0.1:1/v1/x\r\n"
                                } else {
                                    ""
                                };
                                let out = format!("HTTP/1.1 {status} X\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                                if c.write_all(out.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Node {
            addr,
            script,
            hits,
            health,
        }
    }

    fn health(&self, status: u16) {
        self.health.store(status, std::sync::atomic::Ordering::SeqCst);
    }

    fn hits(&self, prefix: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }

    fn then(&self, act: Act) {
        let mut q = self.script.lock().unwrap();
        q.clear();
        q.push_back(act);
    }
}

const OK: Act = Act::Answer(200, r#"{"data":{"k":"v"}}"#);
const LOGGED_IN: Act = Act::Answer(200, r#"{"auth":{"client_token":"t","lease_duration":60}}"#);
const SEALED: Act = Act::Answer(503, r#"{"errors":["Vault is sealed"]}"#);
const LEADERLESS: Act = Act::Answer(
    500,
    r#"{"errors":["local node not active but active cluster node not found"]}"#,
);

fn dead_addr() -> String {
    format!("http://127.0.0.1:{}", vcp_testbed::ports::free_port().unwrap())
}

fn client(addrs: &[&str]) -> VaultClient {
    let cfg = VaultConfig {
        addresses: crate::vault::failover::Addresses::parse(&addrs.join(",")).unwrap(),
        namespace: None,
        tls: Default::default(),
    };
    VaultClient::new(&cfg, Duration::from_secs(5)).unwrap()
}

fn kv() -> ReadKey {
    ReadKey {
        method: "GET".into(),
        path: "/v1/secret/data/app".into(),
        query: vec![],
        body: None,
    }
}

fn issue() -> ReadKey {
    ReadKey {
        method: "PUT".into(),
        path: "/v1/pki/issue/web".into(),
        query: vec![],
        body: Some("{}".into()),
    }
}

#[tokio::test]
async fn a_dead_or_sealed_node_is_skipped_and_then_avoided() {
    let dead = dead_addr();
    // Sealed after the first probe saw it as a standby.
    let sealed = Node::start(&[SEALED]).await;
    let good = Node::start(&[OK]).await;
    let c = client(&[&dead, &sealed.addr, &good.addr]);
    assert_eq!(c.read("t", &kv()).await.unwrap()["data"]["k"], "v");
    assert_eq!((sealed.hits("/v1/secret"), good.hits("/v1/secret")), (1, 1));
    // The failed nodes are cooling down: the next request goes straight
    // to the healthy one.
    c.read("t", &kv()).await.unwrap();
    assert_eq!((sealed.hits("/v1/secret"), good.hits("/v1/secret")), (1, 2));
    // Unsealed and probed: preferred again, in list order.
    sealed.health(429);
    let states = c.probe().await;
    assert!(states[0].1.is_err(), "the dead address stays down");
    assert_eq!(states[1].1.as_ref().unwrap(), &NodeState::Standby);
    sealed.then(OK);
    c.read("t", &kv()).await.unwrap();
    assert_eq!((sealed.hits("/v1/secret"), good.hits("/v1/secret")), (2, 2));
    // The node a probe finds active goes first.
    good.health(200);
    let _ = c.probe().await;
    c.read("t", &kv()).await.unwrap();
    assert_eq!((sealed.hits("/v1/secret"), good.hits("/v1/secret")), (2, 3));
}

#[tokio::test]
async fn a_login_refused_by_a_standby_is_asked_of_the_other_nodes() {
    let stale = Node::start(&[Act::Answer(403, r#"{"errors":["permission denied"]}"#)]).await;
    let good = Node::start(&[LOGGED_IN]).await;
    let c = client(&[&stale.addr, &good.addr]);
    c.login("kubernetes", "app", "jwt").await.unwrap();
    assert_eq!((stale.hits("/v1/auth"), good.hits("/v1/auth")), (1, 1));
    // A refusal by the active node stands.
    stale.health(200);
    let c = client(&[&stale.addr, &good.addr]);
    let e = c.login("kubernetes", "app", "jwt").await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert_eq!(good.hits("/v1/auth"), 1);
    // Reads are not retried on a 403.
    stale.health(429);
    let c = client(&[&stale.addr, &good.addr]);
    stale.then(Act::Answer(403, r#"{"errors":["permission denied"]}"#));
    assert_eq!(c.read("t", &kv()).await.unwrap_err().status(), Some(403));
}

#[tokio::test]
async fn a_login_or_write_is_resent_only_where_it_was_not_processed() {
    // A broken exchange may have minted a token or a certificate: the
    // other node is never asked.
    let breaks = Node::start(&[Act::Close]).await;
    let good = Node::start(&[LOGGED_IN]).await;
    let c = client(&[&breaks.addr, &good.addr]);
    let e = c.login("kubernetes", "app", "jwt").await.unwrap_err();
    assert!(!e.unprocessed(), "{e}");
    assert_eq!(good.hits("/v1/auth"), 0);
    let e = c.read("t", &issue()).await.unwrap_err();
    assert!(!e.unprocessed(), "{e}");
    assert_eq!(good.hits("/v1/pki"), 0);
    // A GET may be resent elsewhere.
    let c = client(&[&breaks.addr, &good.addr]);
    good.then(OK);
    c.read("t", &kv()).await.unwrap();
    // Refused, sealed, leaderless: provably unprocessed, so any request
    // goes on to the next node.
    let sealed = Node::start(&[SEALED]).await;
    sealed.health(503);
    let leaderless = Node::start(&[LEADERLESS]).await;
    good.then(LOGGED_IN);
    let c = client(&[&dead_addr(), &sealed.addr, &leaderless.addr, &good.addr]);
    c.login("kubernetes", "app", "jwt").await.unwrap();
    assert_eq!(good.hits("/v1/auth"), 1);
    // An unexplained 5xx may have been processed: a write stops there.
    let failing = Node::start(&[Act::Answer(500, r#"{"errors":["internal error"]}"#)]).await;
    let c = client(&[&failing.addr, &good.addr]);
    let e = c.read("t", &issue()).await.unwrap_err();
    assert_eq!(e.status(), Some(500), "{e}");
    assert_eq!(good.hits("/v1/pki"), 0);
}

#[tokio::test]
async fn an_election_is_waited_out_within_the_deadline() {
    // The leader is dead; the standbys redirect writes until one of them
    // takes over.
    let n2 = Node::start(&[Act::Answer(307, ""), Act::Answer(307, ""), LOGGED_IN]).await;
    let n3 = Node::start(&[Act::Answer(307, "")]).await;
    let c = client(&[&dead_addr(), &n2.addr, &n3.addr]);
    let started = Instant::now();
    let t = c
        .until(started + Duration::from_secs(5))
        .login("kubernetes", "app", "jwt")
        .await
        .unwrap();
    assert_eq!(t.token, "t");
    assert_eq!(n2.hits("/v1/auth"), 3, "tried again after each round's backoff");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn every_address_failing_is_reported_before_the_deadline() {
    let dead = dead_addr();
    let sealed = Node::start(&[SEALED]).await;
    sealed.health(503);
    let c = client(&[&dead, &sealed.addr]);
    let started = Instant::now();
    let deadline = started + Duration::from_millis(1500);
    let e = c.until(deadline).login("kubernetes", "app", "jwt").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1500) && elapsed > Duration::from_millis(900),
        "{elapsed:?}"
    );
    assert!(e.unprocessed(), "{e}");
    let m = e.to_string();
    for part in [
        "no Vault address could serve the request",
        &format!("{dead} ("),
        "cannot connect to Vault",
        &format!("{} (", sealed.addr),
        "Vault answered 503: Vault is sealed",
    ] {
        assert!(m.contains(part), "{part:?} missing from {m}");
    }
    assert!(
        sealed.hits("/v1/auth") >= 3,
        "retried with backoff: {}",
        sealed.hits("/v1/auth")
    );
    // One address: the same, in its own words.
    let c = client(&[&sealed.addr]);
    let e = c
        .until(Instant::now() + Duration::from_millis(600))
        .read("t", &kv())
        .await
        .unwrap_err();
    assert!(e.unprocessed());
    assert!(
        e.to_string().starts_with("Vault answered 503: Vault is sealed ("),
        "{e}"
    );
    // A redirect from the only address is configuration, reported at once.
    let redirects = Node::start(&[Act::Answer(307, "")]).await;
    let c = client(&[&redirects.addr]);
    let e = c
        .until(Instant::now() + Duration::from_secs(5))
        .login("kubernetes", "app", "jwt")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(307), "{e}");
    assert_eq!(redirects.hits("/v1/auth"), 1);
}

#[test]
fn vault_errors_are_extracted() {
    let e = interpret(resp(403, r#"{"errors":["permission denied"]}"#)).unwrap_err();
    assert_eq!(e.to_string(), "Vault answered 403: permission denied");
    let e = interpret(resp(404, r#"{"errors":[]}"#)).unwrap_err();
    assert_eq!(e.to_string(), "Vault answered 404: not found");
    let e = interpret(resp(502, "<html>bad gateway</html>")).unwrap_err();
    assert_eq!(e.to_string(), "Vault answered 502: Bad Gateway");
    assert_eq!(interpret(resp(204, "")).unwrap(), Json::Null);
    assert!(matches!(
        interpret(resp(200, "{not json")),
        Err(VaultError::BadResponse(_))
    ));
}

#[test]
fn vault_failures_become_error_kinds_in_one_place() {
    use crate::error::ErrorKind as K;
    let status = |status: u16, message: &str| VaultError::Status {
        status,
        message: message.to_string(),
    };
    // (failure, its kind for a login, for a read)
    let cases = [
        (status(403, "permission denied"), K::VaultDenied, K::VaultDenied),
        (status(404, "no handler for route"), K::VaultRejected, K::NotFound),
        (status(400, "invalid role name"), K::VaultRejected, K::VaultRejected),
        (status(500, "internal error"), K::VaultUnavailable, K::VaultFailed),
        (
            VaultError::Connect("refused".into()),
            K::VaultUnavailable,
            K::VaultFailed,
        ),
        (VaultError::Broken("reset".into()), K::VaultFailed, K::VaultFailed),
        (VaultError::TooLarge, K::BadResponse, K::TooLarge),
        (
            VaultError::BadResponse("not JSON".into()),
            K::BadResponse,
            K::BadResponse,
        ),
    ];
    for (e, login, read) in cases {
        assert_eq!(e.kind(Call::Login), login, "login: {e}");
        assert_eq!(e.kind(Call::Read), read, "read: {e}");
    }
    let e = status(403, "permission denied").classify(Call::Read, "object \"a\": secret/a failed");
    assert_eq!(e.kind(), K::VaultDenied);
    assert_eq!(
        e.to_string(),
        "object \"a\": secret/a failed: Vault answered 403: permission denied"
    );
}
