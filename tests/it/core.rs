//! Integration tests of the core provider against a real OpenBao, real
//! PostgreSQL and the Kubernetes API double, through the real binary and a
//! driver-like gRPC client.

use std::time::{Duration, Instant};

use crate::support::*;
use base64::Engine as _;
use serde_json::json;
use tonic::Code;
use vcp_testbed::driver::{mount_request, Generation};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_v2_objects_with_keys_modes_encodings_nesting_and_versions() {
    let bed = Bed::start().await;
    let v1 = bed
        .world
        .bao
        .kv2_put("secret", "app", json!({"password": "s3cret", "port": 5432}))
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let blob = base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2, 255]);
    bed.kv(json!({"password": "n3w", "port": 5432, "blob": blob, "hexed": "cafe"}))
        .await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = r#"
- objectName: password
  secretPath: secret/data/app
  secretKey: password
  filePermission: 0600
- objectName: config/port
  secretPath: /v1/secret/data/app
  secretKey: port
- objectName: whole.json
  secretPath: v1/secret/data/app
- objectName: blob.bin
  secretPath: secret/data/app
  secretKey: blob
  encoding: base64
- objectName: hexed.bin
  secretPath: secret/data/app
  secretKey: hexed
  encoding: HEX
- objectName: old-password
  secretPath: secret/data/app?version=1
  secretKey: password
"#;
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount succeeds");
    let f = files(&r);
    assert_eq!(f["password"], (0o600, b"n3w".to_vec()));
    assert_eq!(f["config/port"], (0o644, b"5432".to_vec()));
    assert_eq!(f["blob.bin"], (0o644, vec![0u8, 1, 2, 255]));
    assert_eq!(f["hexed.bin"], (0o644, vec![0xca, 0xfe]));
    assert_eq!(f["old-password"].1, b"s3cret");
    let whole: serde_json::Value = serde_json::from_slice(&f["whole.json"].1).unwrap();
    assert_eq!(whole["data"]["data"]["password"], "n3w");
    assert_eq!(whole["data"]["metadata"]["version"], 2);
    let v = versions(&r);
    assert_eq!(v.len(), 6);
    assert!(v.values().all(|x| x.len() == 64));

    // Same content → same versions; a change → only the changed objects move.
    let again = p.mount(&params(objects, &[]), &pod).await.unwrap();
    assert_eq!(versions(&again), v);
    bed.kv(json!({"password": "third", "port": 5432, "blob": blob, "hexed": "cafe"}))
        .await;
    let changed = versions(&p.mount(&params(objects, &[]), &pod).await.unwrap());
    assert_ne!(changed["password"], v["password"]);
    assert_ne!(changed["whole.json"], v["whole.json"]);
    assert_eq!(changed["config/port"], v["config/port"]);
    assert_eq!(changed["old-password"], v["old-password"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_v1() {
    let bed = Bed::start().await;
    bed.kv1(json!({"user": "admin", "nested": {"a": 1}})).await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = "- {objectName: user, secretPath: kv1/app, secretKey: user}\n- {objectName: nested, secretPath: kv1/app, secretKey: nested}\n";
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    assert_eq!(text(&r, "user"), "admin");
    assert_eq!(text(&r, "nested"), r#"{"a":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_one_issue_per_distinct_request() {
    let bed = Bed::start().await;
    bed.world.bao.setup_pki("pki", "web", "24h").await.unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = r#"
- objectName: tls.crt
  secretPath: pki/issue/web
  method: PUT
  secretArgs: {common_name: a.example.com, ttl: 1h}
  secretKey: certificate
- objectName: tls.key
  secretPath: pki/issue/web
  method: PUT
  secretArgs: {ttl: 1h, common_name: a.example.com}
  secretKey: private_key
- objectName: other.crt
  secretPath: pki/issue/web
  method: PUT
  secretArgs: {common_name: b.example.com, ttl: 1h}
  secretKey: certificate
"#;
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    let cert = text(&r, "tls.crt");
    let key = text(&r, "tls.key");
    let other = text(&r, "other.crt");
    // The certificate and key come from one issue: their public keys match.
    let cert_pub = openssl(&["x509", "-noout", "-pubkey"], cert.as_bytes());
    let key_pub = openssl(&["pkey", "-pubout"], key.as_bytes());
    assert_eq!(cert_pub, key_pub, "certificate and key come from one issue");
    // Different secretArgs → a second certificate.
    let serial = |pem: &str| openssl(&["x509", "-noout", "-serial"], pem.as_bytes());
    assert_ne!(serial(&cert), serial(&other));
    assert!(openssl(&["x509", "-noout", "-subject"], other.as_bytes()).contains("b.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_database_credentials_log_in() {
    let bed = Bed::start().await;
    let pg = bed.database("5m", "10m").await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = "- {objectName: db-user, secretPath: database/creds/app, secretKey: username}\n- {objectName: db-pass, secretPath: database/creds/app, secretKey: password}\n";
    let r = p.mount(&params(objects, &[]), &pod).await.expect("mount");
    let user = text(&r, "db-user");
    let pass = text(&r, "db-pass");
    assert!(
        pg.can_login(&user, &pass).await.unwrap(),
        "the pair from one read logs in"
    );
    assert_eq!(
        bed.world.bao.leases("database/creds/app").await.unwrap().len(),
        1,
        "one read → one lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_kubelet_from_token_request_and_custom_audience() {
    let (bed, p) = Bed::ready().await;
    let objects = KV_OBJECT;

    // 1. The kubelet-provided token.
    let pod = bed.pod("with-token").await;
    assert_eq!(text(&p.mount(&params(objects, &[]), &pod).await.unwrap(), "k"), "v");
    let requested = |kube: &vcp_testbed::kubernetes::cluster::Cluster| {
        kube.requests()
            .iter()
            .filter(|(m, path)| m == "POST" && path.split('?').next().is_some_and(|p| p.ends_with("/token")))
            .count()
    };
    assert_eq!(requested(&bed.kube), 0, "no TokenRequest when kubelet passed a token");

    // 2. No token in the volume context → TokenRequest, bound to the pod,
    // with the API server's default audience (as the incumbent does), so
    // the role must not insist on `vault`.
    bed.role("any-aud").write().await.unwrap();
    let bare = bed.pod_without_token("no-token").await;
    assert_eq!(
        text(
            &p.mount(&params(objects, &[("roleName", "any-aud")]), &bare)
                .await
                .unwrap(),
            "k"
        ),
        "v"
    );
    assert_eq!(requested(&bed.kube), 1);

    // 3. A custom audience, both from kubelet and requested.
    bed.role("custom").audience(Some("my-aud")).write().await.unwrap();
    let mut pod = bed.pod_without_token("custom-aud").await;
    let token = bed
        .kube
        .pod_token(bed.ns(), "custom-aud", &["my-aud"], Duration::from_secs(3600))
        .await
        .unwrap();
    pod.tokens = Some(vcp_testbed::driver::PodContext::tokens_json(
        "my-aud",
        &token,
        std::time::SystemTime::now() + Duration::from_secs(3600),
    ));
    let custom = params(objects, &[("roleName", "custom"), ("audience", "my-aud")]);
    assert_eq!(text(&p.mount(&custom, &pod).await.unwrap(), "k"), "v");
    let bare = bed.pod_without_token("custom-aud-2").await;
    assert_eq!(text(&p.mount(&custom, &bare).await.unwrap(), "k"), "v");
    assert_eq!(requested(&bed.kube), 2);
    // The `vault`-audience token is refused by a role that wants `my-aud`.
    let wrong = bed.pod("wrong-aud").await;
    let e = p
        .mount(&params(objects, &[("roleName", "custom")]), &wrong)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_auth_method() {
    let bed = Bed::start().await;
    bed.kv(json!({"k": "jwt"})).await;
    bed.world.bao.enable_auth("jwt", "jwt").await.unwrap();
    bed.world
        .bao
        .configure_jwt_auth("jwt", &bed.kube.jwt_public_key_pem())
        .await
        .unwrap();
    bed.world
        .bao
        .jwt_role(
            "jwt",
            "app-jwt",
            "vault",
            &format!("system:serviceaccount:{}:app", bed.ns()),
            &[READ_ALL],
            "1h",
        )
        .await
        .unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = KV_OBJECT;
    let r = p
        .mount(
            &params(objects, &[("roleName", "app-jwt"), ("vaultAuthMountPath", "jwt")]),
            &pod,
        )
        .await;
    assert_eq!(text(&r.expect("jwt mount"), "k"), "jwt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_failures_are_permission_denied_and_say_who() {
    let (bed, p) = Bed::ready().await;
    let objects = KV_OBJECT;

    // A service account the role does not bind.
    let pod = bed.world.pod(bed.ns(), "intruder-0", "intruder").await.unwrap();
    let e = refused(&p, objects, &pod).await;
    assert_eq!(e.code(), Code::PermissionDenied);
    let m = e.message();
    assert!(
        m.contains("role \"app\"")
            && m.contains(&format!("{}/intruder", bed.ns()))
            && m.contains("auth mount \"kubernetes\""),
        "{m}"
    );
    assert!(m.contains("bound_service_account_names"), "hint missing: {m}");

    // A deleted pod: its bound token no longer passes TokenReview.
    let gone = bed.pod("gone-0").await;
    bed.kube.delete_pod(bed.ns(), "gone-0").await.unwrap();
    let e = refused(&p, objects, &gone).await;
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    // A role that does not exist.
    let pod = bed.pod("web-0").await;
    let e = p
        .mount(&params(objects, &[("roleName", "nope")]), &pod)
        .await
        .unwrap_err();
    assert_mentions(&e, &["role \"nope\""]);

    // Read denied by policy.
    bed.world
        .bao
        .write("secret/data/private", json!({"data": {"k": "x"}}))
        .await
        .unwrap();
    let e = refused(
        &p,
        "- {objectName: k, secretPath: other/data/private, secretKey: k}\n",
        &pod,
    )
    .await;
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_mentions(&e, &["object \"k\"", "/v1/other/data/private"]);

    // Missing secret and missing key.
    let e = refused(
        &p,
        "- {objectName: k, secretPath: secret/data/none, secretKey: k}\n",
        &pod,
    )
    .await;
    assert_eq!(e.code(), Code::NotFound, "{}", e.message());
    let e = p
        .mount(
            &params(
                "- {objectName: k, secretPath: secret/data/app, secretKey: nokey}\n",
                &[],
            ),
            &pod,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_mentions(&e, &["\"nokey\""]);
    let logs = p.logs();
    assert!(!logs.contains("\"v\""), "a secret value reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_shared_across_restarts_and_providers_and_follow_the_key() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let objects = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n- {objectName: all, secretPath: secret/data/app}\n";
    let pod = bed.pod("web-0").await;
    let a = bed.provider("a", &[]).await;
    let first = versions(&a.mount(&params(objects, &[]), &pod).await.unwrap());
    let b = bed.provider("b", &[]).await;
    let from_b = versions(&b.mount(&params(objects, &[]), &pod).await.unwrap());
    assert_eq!(first["k"], from_b["k"], "two providers sharing the key agree");
    a.kill().await;
    let a2 = bed.provider("a", &[]).await;
    assert_eq!(
        versions(&a2.mount(&params(objects, &[]), &pod).await.unwrap())["k"],
        first["k"],
        "stable across restarts"
    );
    let key = bed.key_secret(KEY_SECRET).await;
    assert_eq!(key["immutable"], true);

    // Deleting the key Secret rotates the key.
    bed.kube.delete_secret(bed.provider_ns(), KEY_SECRET).await.unwrap();
    a2.kill().await;
    b.kill().await;
    let a3 = bed.provider("a", &[]).await;
    let rotated = versions(&a3.mount(&params(objects, &[]), &pod).await.unwrap());
    assert_ne!(rotated["k"], first["k"]);
    assert!(
        bed.kube.secret(bed.provider_ns(), KEY_SECRET).await.unwrap().is_some(),
        "a new key Secret was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_and_reaches_no_server() {
    let bed = Bed::start().await;
    let vault = Proxy::start(&bed.world.bao.addr(), Duration::ZERO).await;
    let p = bed.provider("p", &[&format!("-vault-addr={}", vault.url())]).await;
    let pod = bed.pod("web-0").await;
    let ok = "- {objectName: k, secretPath: secret/data/app, secretKey: k}\n";
    // One good mount first, so the version key is loaded and the counts
    // below only see what the bad requests cause.
    bed.kv_secret().await;
    p.mount(&params(ok, &[]), &pod).await.expect("a good mount");
    let before_vault = vault.bytes_to_server();
    let before_kube = bed.kube.requests().len();

    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], "- objectName: [unclosed", "not a YAML list"),
        (
            vec![],
            "- {objectName: k, secretPath: s/a, secretKey: k, encoding: base32}",
            "unknown encoding \"base32\"",
        ),
        (
            vec![],
            "- {objectName: k, secretPath: s/a}\n- {objectName: k, secretPath: s/b}",
            "used more than once",
        ),
        (
            vec![],
            "- {objectName: ../x, secretPath: s/a}",
            "must not contain \"..\"",
        ),
        (vec![], "- {objectName: /x, secretPath: s/a}", "must be a relative path"),
        (vec![], "- {objectName: a//b, secretPath: s/a}", "not a clean path"),
        (vec![], "- {objectName: ./a, secretPath: s/a}", "not a clean path"),
        (
            vec![("vaultKubernetesMountPath", "a"), ("vaultAuthMountPath", "b")],
            ok,
            "both set",
        ),
        (vec![("roleName", "")], ok, "roleName is missing"),
        (vec![("vaultSkipTLSVerify", "maybe")], ok, "vaultSkipTLSVerify"),
    ];
    for (extra, objects, expect) in cases {
        let e = p.mount(&params(objects, &extra), &pod).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{objects}: {}", e.message());
        assert!(
            e.message().contains(expect),
            "{objects}: expected {expect:?} in {:?}",
            e.message()
        );
    }
    // Malformed attributes JSON.
    let mut req = mount_request(Generation::V16, "spc", &params(ok, &[]), &pod, false, Vec::new());
    req.attributes = "{\"roleName\": ".to_string();
    let e = p.mount_raw(Generation::V16, req).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_mentions(&e, &["attributes are not a JSON object"]);

    assert_eq!(vault.bytes_to_server(), before_vault, "no request reached Vault");
    assert_eq!(bed.kube.requests().len(), before_kube, "no request reached Kubernetes");

    // Missing key and bad base64 are found only after the read, and say so.
    bed.kv(json!({"k": "not base64!"})).await;
    let e = p
        .mount(
            &params(
                "- {objectName: k, secretPath: secret/data/app, secretKey: k, encoding: base64}",
                &[],
            ),
            &pod,
        )
        .await
        .unwrap_err();
    assert!(
        e.message().contains("not valid base64") && !e.message().contains("not base64!"),
        "{}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_revoked_tokens_are_replaced_by_a_fresh_login() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    bed.role("short")
        .audience(Some("vault"))
        .ttl("4s", "4s")
        .write()
        .await
        .unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = KV_OBJECT;

    p.mount(&params(objects, &[]), &pod).await.unwrap();
    p.mount(&params(objects, &[]), &pod).await.unwrap();
    assert_eq!(token_reviews(&bed.kube), 1, "the second mount reuses the cached token");

    // Revoke every token issued by kubernetes logins behind the provider's back.
    bed.revoke_logins().await;
    let r = p
        .mount(&params(objects, &[]), &pod)
        .await
        .expect("a 403 with a cached token leads to one fresh login");
    assert_eq!(text(&r, "k"), "v");
    assert_eq!(token_reviews(&bed.kube), 2);

    // A token that cannot be extended (at its max TTL) is replaced before
    // it expires: with a 4 s TTL and max TTL, the background renewal finds
    // it capped, and a mount after the threshold logs in again.
    let short = params(objects, &[("roleName", "short")]);
    p.mount(&short, &pod).await.unwrap();
    let reviews = token_reviews(&bed.kube);
    p.mount(&short, &pod).await.unwrap();
    assert_eq!(token_reviews(&bed.kube), reviews, "still fresh");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    p.mount(&short, &pod).await.unwrap();
    // (Vault's kubernetes auth may also review the JWT again when the
    // background renewal renews the token, so count at least one login.)
    assert!(token_reviews(&bed.kube) > reviews, "near-expiry token replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_driver_generations_are_served() {
    let (bed, p) = Bed::ready().await;
    let pod = bed.pod("web-0").await;
    let objects = KV_OBJECT;
    let v16 = mount_request(Generation::V16, "spc", &params(objects, &[]), &pod, false, Vec::new());
    let r16 = p
        .mount_raw(Generation::V16, v16)
        .await
        .expect("v1.6 client (authority localhost)");
    let v15 = mount_request(Generation::V15, "spc", &params(objects, &[]), &pod, false, Vec::new());
    let r15 = p
        .mount_raw(Generation::V15, v15)
        .await
        .expect("v1.5 client (socket path as authority)");
    let rot = mount_request(
        Generation::V15,
        "spc",
        &params(objects, &[]),
        &pod,
        true,
        r15.object_version.clone(),
    );
    let r15rot = p.mount_raw(Generation::V15, rot).await.expect("v1.5 rotation call");
    assert_eq!(files(&r16), files(&r15));
    assert_eq!(versions(&r16), versions(&r15rot));
    let client = p.client(Generation::V15).await.unwrap();
    assert_eq!(client.version().await.unwrap().version, "v1alpha1");
}

/// Reads one HTTP/2 frame header (length, type, flags, stream) within 1 s.
async fn frame_header_within_a_second(stream: &mut tokio::net::UnixStream) -> (usize, u8, u8, u32) {
    use tokio::io::AsyncReadExt as _;
    let mut raw = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut raw))
        .await
        .expect("the provider sends a frame within 1 s without waiting for a request")
        .expect("read a frame header");
    let len = usize::from(raw[0]) << 16 | usize::from(raw[1]) << 8 | usize::from(raw[2]);
    let stream_id = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff;
    (len, raw[3], raw[4], stream_id)
}

/// grpc-go (every driver release) and gRPC C-core send their preface and
/// SETTINGS, then wait for the server's SETTINGS before any request: a
/// provider that waits for a request first deadlocks with every real driver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_sends_its_settings_before_any_request() {
    use tokio::io::AsyncWriteExt as _;
    const SETTINGS: u8 = 0x4;
    const ACK: u8 = 0x1;
    let bed = Bed::start().await;
    let p = bed.provider("p", &[]).await;

    // A client that has said nothing at all yet.
    let mut silent = tokio::net::UnixStream::connect(&p.socket).await.unwrap();
    let (_, kind, flags, stream) = frame_header_within_a_second(&mut silent).await;
    assert_eq!(
        (kind, flags & ACK, stream),
        (SETTINGS, 0, 0),
        "first frame is the server's SETTINGS"
    );

    // A client that sent exactly what grpc-go sends before it waits: the
    // preface and its SETTINGS.
    let mut waiting = tokio::net::UnixStream::connect(&p.socket).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, SETTINGS, 0, 0, 0, 0, 0]);
    waiting.write_all(&hello).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let (len, kind, flags, stream) = frame_header_within_a_second(&mut waiting).await;
        seen.push((kind, flags));
        if kind == SETTINGS && flags & ACK == 0 && stream == 0 {
            break;
        }
        let mut payload = vec![0u8; len];
        tokio::io::AsyncReadExt::read_exact(&mut waiting, &mut payload)
            .await
            .unwrap();
        assert!(seen.len() < 8, "no server SETTINGS among {seen:?}");
    }
    // And the connection is then served: a request on it is answered.
    let client = p.client(Generation::V16).await.unwrap();
    assert_eq!(client.version().await.unwrap().version, "v1alpha1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_slow_mount_then_removes_the_socket() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let slow = Proxy::start(&bed.world.bao.addr(), Duration::from_millis(1500)).await;
    let p = bed.provider("p", &[&format!("-vault-addr={}", slow.url())]).await;
    let pod = bed.pod("web-0").await;
    let client = p.client(Generation::V16).await.unwrap();
    let req = mount_request(
        Generation::V16,
        "spc",
        &params("- {objectName: k, secretPath: secret/data/app, secretKey: k}\n", &[]),
        &pod,
        false,
        Vec::new(),
    );
    let started = Instant::now();
    let mount = tokio::spawn(async move { client.mount(req, Duration::from_secs(60)).await });
    eventually(Duration::from_secs(10), "the mount's login to reach Vault", || async {
        slow.seen().iter().any(|s| s.path.contains("/auth/"))
    })
    .await;
    p.sigterm();
    let r = mount
        .await
        .unwrap()
        .expect("the in-flight mount completes during the drain");
    assert_eq!(text(&r, "k"), "v");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let mut p = p;
    let status = tokio::time::timeout(Duration::from_secs(20), p.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status}: {}", p.logs());
    assert!(!p.socket.exists(), "socket removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_options_and_unix_socket_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let world = vcp_testbed::world::World::start_tls(dir.path())
        .await
        .expect("TLS world");
    world.bao.kv2_put("secret", "app", json!({"k": "tls"})).await.unwrap();
    let ca = world.bao.ca_cert_path().expect("dev CA");
    let ca_dir = dir.path().join("cas");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::copy(&ca, ca_dir.join("ca.pem")).unwrap();
    let binary = provider_binary();
    let p = world.provider(binary, "p", &[]).await.unwrap();
    let pod = world.pod(world.ns(), "web-0", "app").await.unwrap();
    let objects = KV_OBJECT;
    let addr = world.bao.addr();
    let ca_s = ca.display().to_string();
    let ca_dir_s = ca_dir.display().to_string();
    let localhost_addr = addr.replace("127.0.0.1", "localhost");

    let ok: Vec<Vec<(&str, &str)>> = vec![
        vec![("vaultAddress", &addr), ("vaultCACertPath", &ca_s)],
        vec![("vaultAddress", &addr), ("vaultCADirectory", &ca_dir_s)],
        vec![("vaultAddress", &addr), ("vaultSkipTLSVerify", "true")],
        vec![
            ("vaultAddress", &localhost_addr),
            ("vaultCACertPath", &ca_s),
            ("vaultTLSServerName", "localhost"),
        ],
    ];
    for extra in ok {
        let r = p.mount(&params(objects, &extra), &pod).await;
        assert_eq!(
            text(&r.unwrap_or_else(|e| panic!("{extra:?}: {}", e.message())), "k"),
            "tls",
            "{extra:?}"
        );
    }
    // No CA: the certificate is not trusted, and the error says so at once
    // (a refused certificate is configuration, not weather to wait out).
    let started = Instant::now();
    let e = p
        .mount(&params(objects, &[("vaultAddress", &addr)]), &pod)
        .await
        .unwrap_err();
    assert_failed_as(&p, &e, "vault_unavailable");
    assert!(e.message().to_lowercase().contains("certificate"), "{}", e.message());
    assert_mentions(&e, &["TLS handshake refused"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // A server name the certificate does not carry.
    let e = p
        .mount(
            &params(
                objects,
                &[
                    ("vaultAddress", &addr),
                    ("vaultCACertPath", &ca_s),
                    ("vaultTLSServerName", "vault.example"),
                ],
            ),
            &pod,
        )
        .await
        .unwrap_err();
    assert!(e.message().to_lowercase().contains("certificate"), "{}", e.message());
    // A CA file that does not exist is a configuration error.
    let e = p
        .mount(
            &params(
                objects,
                &[("vaultAddress", &addr), ("vaultCACertPath", "/nonexistent/ca.pem")],
            ),
            &pod,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert_mentions(&e, &["/nonexistent/ca.pem"]);

    // unix:// — a socket in front of the TLS listener is not possible with
    // plain HTTP, so relay a unix socket to a plain-HTTP OpenBao.
    let plain = vcp_testbed::vault::openbao::OpenBao::start().await.unwrap();
    plain.kv2_put("secret", "app", json!({"k": "unix"})).await.unwrap();
    vcp_testbed::world::wire_vault(&plain, &world.kube).await.unwrap();
    let sock = dir.path().join("agent.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let upstream = plain.addr().trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut t) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut s, &mut t).await;
                }
            });
        }
    });
    let unix = format!("unix://{}", sock.display());
    let r = p
        .mount(&params(objects, &[("vaultAddress", &unix)]), &pod)
        .await
        .expect("unix:// address");
    assert_eq!(text(&r, "k"), "unix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mounts_are_bounded_and_a_waiting_mount_respects_its_deadline() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    // Every Vault answer takes 1 s, so a mount (login + read) takes over 2 s.
    let slow = Proxy::start(&bed.world.bao.addr(), Duration::from_millis(1000)).await;
    let p = bed
        .provider(
            "p",
            &[&format!("-vault-addr={}", slow.url()), "-max-concurrent-mounts=1"],
        )
        .await;
    let objects = KV_OBJECT;
    let a = bed.pod("a-0").await;
    let b = bed.pod("b-0").await;
    let ca = p.client(Generation::V16).await.unwrap();
    let cb = p.client(Generation::V16).await.unwrap();
    let ra = mount_request(Generation::V16, "spc", &params(objects, &[]), &a, false, Vec::new());
    let rb = mount_request(Generation::V16, "spc", &params(objects, &[]), &b, false, Vec::new());
    let started = Instant::now();
    let first = tokio::spawn(async move { ca.mount(ra, Duration::from_secs(30)).await });
    // The first mount holds the only slot once it has reached Vault.
    eventually(
        Duration::from_secs(10),
        "the first mount's login to reach Vault",
        || async { slow.seen().iter().any(|s| s.path.contains("/auth/")) },
    )
    .await;
    // The second mount waits for the only slot, past its own 3 s deadline
    // (1 s after the 2 s margin): it fails in time, saying why.
    let e = cb.mount(rb, Duration::from_millis(3000)).await;
    let first = first.await.unwrap().expect("the first mount completes");
    assert_eq!(text(&first, "k"), "v");
    let e = match e {
        Err(e) => e,
        // If the first finished early enough, the second may have run: then
        // it must have waited for the first.
        Ok(_) => panic!(
            "expected the waiting mount to hit its deadline: the first took {:?}",
            started.elapsed()
        ),
    };
    assert_failed_as(&p, &e, "busy");
    assert_mentions(&e, &["-max-concurrent-mounts"]);
    // With the slot free again, the next mount succeeds.
    let r = p
        .mount(&params(objects, &[]), &b)
        .await
        .expect("mount after the slot is free");
    assert_eq!(text(&r, "k"), "v");
}
