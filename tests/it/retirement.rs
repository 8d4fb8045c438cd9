//! No credential lost, duplicated or borrowed by a tenant's move (issue 33),
//! against real OpenBao and PostgreSQL: a 403 is the policy's answer for one
//! path, not a reason to log in again; one namespace's churn never evicts
//! another's credentials, and what is evicted is revoked; a forged key id
//! borrows nothing; a deleted pod's credentials are revoked even when Vault
//! refuses for a while; a state file that is a link or too large is refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde_json::json;
use tonic::Code;

use crate::support::*;

const DB_OBJECTS: &str = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";

/// Live leases under `prefix` in OpenBao (tokens of kubernetes logins live
/// under `auth/kubernetes/login`).
async fn live(bed: &Bed, prefix: &str) -> usize {
    bed.world.bao.leases(prefix).await.unwrap().len()
}

fn username(r: &vault_csi_provider::proto::MountResponse) -> String {
    text(r, "user")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partly_forbidden_class_mounted_ten_times_costs_one_login_and_one_database_user() {
    let bed = Bed::start().await;
    let _pg = bed.database("1h", "2h").await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    // The role may read database/creds/app, not forbidden/data/x: an
    // honest typo, or a tenant probing.
    let objects = format!("{DB_OBJECTS}- {{objectName: x, secretPath: forbidden/data/x, secretKey: x}}\n");
    let reviews = token_reviews(&bed.kube);
    for i in 0..10 {
        let e = p
            .mount(&params(&objects, &[]), &pod)
            .await
            .expect_err("a forbidden path");
        assert_eq!(e.code(), Code::PermissionDenied, "mount {i}: {e:?}");
        assert!(e.message().contains("forbidden/data/x"), "mount {i}: {}", e.message());
    }
    let logins = token_reviews(&bed.kube) - reviews;
    println!("RETIREMENT | 10 partly forbidden mounts: {logins} logins");
    assert!(logins <= 2, "{logins} logins for 10 mounts");
    assert_eq!(live(&bed, "database/creds/app").await, 1, "one database user");
    assert_eq!(
        live(&bed, "auth/kubernetes/login").await,
        1,
        "one live token: the one held"
    );
    // The class fixed: the same user, no new login.
    let r = p.mount(&params(DB_OBJECTS, &[]), &pod).await.expect("the fixed class");
    assert_eq!(live(&bed, "database/creds/app").await, 1);
    assert_eq!(token_reviews(&bed.kube) - reviews, logins);
    assert!(!username(&r).is_empty());
}

/// Identities one tenant makes: more than the ledger holds (`-cache-size`,
/// 1,000 by default).
const CHURN: usize = 1_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_namespace_making_1100_identities_evicts_nothing_of_another_and_leaves_no_token_live() {
    let bed = Bed::start().await;
    bed.kv_secret().await;
    let _pg = bed.database("1h", "2h").await;
    let p = bed.provider("p", &[]).await;
    // The victim: a pod of another namespace with its own Vault role.
    let other = format!("{}-other", bed.ns());
    bed.kube.add_namespace(&other).await.unwrap();
    vcp_testbed::world::app_role(&bed.world.bao, &other, "other")
        .audience(Some("vault"))
        .write()
        .await
        .unwrap();
    let victim = bed.world.pod(&other, "victim-0", APP_SA).await.unwrap();
    let victim_params = params(DB_OBJECTS, &[("roleName", "other")]);
    let before = username(&p.mount(&victim_params, &victim).await.unwrap());

    // The tenant: 1,100 pods of one namespace, each mounted once.
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let kv = params(KV_OBJECT, &[]);
    futures_util::stream::iter(0..CHURN)
        .map(|n| {
            let (bed, p, kv, done) = (&bed, &p, &kv, done.clone());
            async move {
                let pod = bed.pod(&format!("churn-{n}")).await;
                p.mount(kv, &pod).await.expect("a tenant mount");
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(done.load(Ordering::Relaxed), CHURN);
    println!("RETIREMENT | {CHURN} tenant identities in {:?}", started.elapsed());

    let after = username(&p.mount(&victim_params, &victim).await.unwrap());
    assert_eq!(after, before, "the other namespace's pod keeps its database user");
    assert_eq!(live(&bed, "database/creds/app").await, 1);
    // The ledger keeps at most a quarter of -cache-size per namespace; every
    // token it let go of is revoked, none left live in OpenBao.
    eventually(Duration::from_secs(60), "evicted tokens revoked", || async {
        live(&bed, "auth/kubernetes/login").await <= 250 + 1
    })
    .await;
    let held = live(&bed, "auth/kubernetes/login").await;
    println!("RETIREMENT | live tokens after the churn: {held} (250 of the tenant's, 1 of the victim)");
}

/// `token` with its header's key id replaced.
fn with_kid(token: &str, kid: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    header["kid"] = json!(kid);
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        parts[1],
        parts[2]
    )
}

/// A Vault of the tenant's choosing: it accepts any login and serves the
/// KV secret to anyone. Returns its address.
async fn tenant_vault() -> String {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/v1/auth/{mount}/login",
            post(|| async {
                axum::Json(
                    json!({"auth": {"client_token": "s.tenant", "accessor": "tenant", "lease_duration": 3600,
                    "renewable": false, "policies": ["default"]}}),
                )
            }),
        )
        .route(
            "/v1/secret/data/app",
            get(|| async { axum::Json(json!({"data": {"data": {"k": "tenant"}, "metadata": {"version": 1}}})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_key_id_borrows_no_held_token_with_or_without_the_issuer_keys() {
    let (bed, p) = Bed::ready().await;
    let victim = bed.pod("web-0").await;
    bed.pod("intruder-0").await;
    let ps = params(KV_OBJECT, &[]);
    p.mount(&ps, &victim)
        .await
        .expect("the victim's own mount: a held token");

    // The intruder's real token, its claims rewritten to name the victim and
    // its header to name a key the issuer never published.
    let intruders = bed
        .kube
        .pod_token(bed.ns(), "intruder-0", &["vault"], Duration::from_secs(3600))
        .await
        .unwrap();
    let uid = victim.uid.clone();
    let forged = with_kid(
        &forge(&intruders, |c| {
            c["kubernetes.io"]["pod"] = json!({"name": "web-0", "uid": uid})
        }),
        "forged-kid",
    );
    let tenant = tenant_vault().await;
    let to_tenant = params(KV_OBJECT, &[("vaultAddress", tenant.as_str())]);

    // With the keys loaded: refused outright, at the tenant's Vault and then
    // at the operator's, before anything reaches either.
    let reviews = token_reviews(&bed.kube);
    for (what, ps) in [("the tenant's Vault", &to_tenant), ("the operator's Vault", &ps)] {
        let e = p.mount(ps, &with_token(&victim, &forged)).await.expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(
            e.message().contains("publishes no key with id \"forged-kid\""),
            "{what}: {}",
            e.message()
        );
    }
    assert_eq!(token_reviews(&bed.kube), reviews, "nothing reached Vault");

    // Without the keys: the tenant's Vault accepts the forgery, but that
    // review proves nothing to the operator's Vault (another address), so
    // the request there is proven by a login, which OpenBao's TokenReview
    // refuses.
    bed.kube.set_issuer_discovery(false);
    let q = bed.provider("q", &[]).await;
    q.mount(&ps, &victim).await.expect("the victim's own mount on q");
    let r = q
        .mount(&to_tenant, &with_token(&victim, &forged))
        .await
        .expect("the tenant's own Vault takes what it likes");
    assert_eq!(text(&r, "k"), "tenant");
    let e = q
        .mount(&ps, &with_token(&victim, &forged))
        .await
        .expect_err("the forgery at the operator's Vault");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // And the victim's own next mount still gets its own secret.
    assert_eq!(text(&q.mount(&ps, &victim).await.unwrap(), "k"), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_vault_refuses_revocations_is_revoked_once_vault_is_back() {
    let bed = Bed::start().await;
    let pg = bed.database("1h", "2h").await;
    let proxy = Proxy::start(&bed.world.bao.addr(), Duration::ZERO).await;
    let p = bed
        .provider(
            "p",
            &[
                &format!("-node-name={}", bed.kube.node),
                &format!("-vault-addr={}", proxy.url()),
            ],
        )
        .await;
    let pod = bed.pod("web-0").await;
    let r = p.mount(&params(DB_OBJECTS, &[]), &pod).await.unwrap();
    let (user, pass) = (text(&r, "user"), text(&r, "pass"));
    assert!(pg.can_login(&user, &pass).await.unwrap());

    proxy.set_only("/v1/auth/token/revoke-self", Fault::Status(503));
    bed.kube.delete_pod(bed.ns(), "web-0").await.unwrap();
    let refused = || {
        proxy
            .seen()
            .iter()
            .filter(|s| s.path.starts_with("/v1/auth/token/revoke-self") && !s.forwarded)
            .count()
    };
    eventually(Duration::from_secs(10), "a refused revocation", || async {
        refused() >= 1
    })
    .await;
    // Refused for longer than any one attempt retries (-retry-budget and the
    // background budget are 10 s): only a queue that keeps the revocation
    // gets it done after this.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        pg.can_login(&user, &pass).await.unwrap(),
        "not revoked while Vault refuses"
    );
    println!("RETIREMENT | revocations refused {} times in 12 s", refused());

    proxy.set(Fault::Pass);
    eventually(Duration::from_secs(20), "the credentials revoked", || async {
        !pg.can_login(&user, &pass).await.unwrap()
    })
    .await;
    assert_eq!(live(&bed, "database/creds/app").await, 0);
    assert_eq!(live(&bed, "auth/kubernetes/login").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_that_is_a_link_or_too_large_is_refused_at_start() {
    let (bed, p) = Bed::ready().await;
    p.kill().await;
    let pod = bed.pod("web-0").await;
    let state = bed.dir.path().join("p.state");

    // A link in its place (the directory is a hostPath other providers
    // share): not followed, not read, and replaced by the next write.
    let target = bed.dir.path().join("another-providers-file");
    std::fs::write(&target, b"not the ledger's").unwrap();
    let _ = std::fs::remove_file(&state);
    std::os::unix::fs::symlink(&target, &state).unwrap();
    let p = bed.provider("p", &[]).await;
    assert_eq!(text(&p.mount(&params(KV_OBJECT, &[]), &pod).await.unwrap(), "k"), "v");
    let logs = p.logs();
    assert!(
        logs.contains("refusing the ledger state file") && logs.contains("symbolic link"),
        "{logs}"
    );
    eventually(
        Duration::from_secs(10),
        "the link replaced by the state file",
        || async { std::fs::symlink_metadata(&state).is_ok_and(|m| m.file_type().is_file()) },
    )
    .await;
    assert_eq!(std::fs::read(&target).unwrap(), b"not the ledger's");
    p.kill().await;

    // Over the size a state file can be (here 16 MiB + 2 x 64 KiB): refused
    // before a byte is read (a sparse file: its size is all there is).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&state)
        .unwrap();
    f.set_len(17 << 20).unwrap();
    drop(f);
    let p = bed.provider("p", &["-max-held-bytes=64KiB"]).await;
    assert_eq!(text(&p.mount(&params(KV_OBJECT, &[]), &pod).await.unwrap(), "k"), "v");
    let logs = p.logs();
    assert!(
        logs.contains("refusing the ledger state file") && logs.contains("over the"),
        "{logs}"
    );
}
