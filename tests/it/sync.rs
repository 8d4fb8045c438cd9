//! Provider-side sync to Kubernetes Secrets against real OpenBao and the
//! real kube-apiserver (server-side apply, managed fields, RBAC from
//! `deploy/components/secret-sync`): types, ownership, change detection,
//! refusal to touch foreign Secrets, RBAC and validation.

use std::collections::BTreeMap;

use crate::support::*;
use base64::Engine as _;
use serde_json::{json, Value};
use tonic::Code;
use vcp_testbed::driver::PodContext;
use vcp_testbed::kubernetes::cluster::PodOptions;

fn data(secret: &Value, key: &str) -> Vec<u8> {
    let b64 = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no data.{key} in {secret}"));
    base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
}

fn writes(bed: &Bed, name: &str) -> usize {
    bed.kube
        .requests()
        .iter()
        .filter(|(m, p)| (m == "PATCH" || m == "PUT" || m == "POST") && p.contains(&format!("/secrets/{name}")))
        .count()
}

const KV: &str = "- {objectName: user, secretPath: secret/data/app, secretKey: user}\n- {objectName: pass, secretPath: secret/data/app, secretKey: pass}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tls_and_dockerconfigjson_secrets_with_owners() {
    let bed = Bed::start().await;
    bed.allow_sync(bed.ns()).await;
    bed.kv(json!({"user": "u1", "pass": "p1"})).await;
    bed.world
        .bao
        .kv2_put(
            "secret",
            "docker",
            json!({"cfg": r#"{"auths":{"registry.example":{"auth":"dTpw"}}}"#}),
        )
        .await
        .unwrap();
    bed.world.bao.setup_pki("pki", "web", "24h").await.unwrap();
    let p = bed.provider("p", &[]).await;
    let owner = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9", "uid": "rs-uid-1", "controller": true});
    let uid = bed
        .kube
        .add_pod_with(
            bed.ns(),
            "web-7d9-abc",
            APP_SA,
            &bed.kube.node,
            PodOptions {
                owner_references: vec![owner],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ttl = std::time::Duration::from_secs(3600);
    let token = bed
        .kube
        .pod_token(bed.ns(), "web-7d9-abc", &["vault"], ttl)
        .await
        .unwrap();
    let pod = PodContext {
        name: "web-7d9-abc".into(),
        namespace: bed.ns().into(),
        uid,
        service_account: "app".into(),
        tokens: Some(PodContext::tokens_json(
            "vault",
            &token,
            std::time::SystemTime::now() + ttl,
        )),
    };
    let objects = format!(
        "{KV}- {{objectName: cfg, secretPath: secret/data/docker, secretKey: cfg}}\n\
         - {{objectName: crt, secretPath: pki/issue/web, method: PUT, secretArgs: {{common_name: web.example}}, secretKey: certificate}}\n\
         - {{objectName: key, secretPath: pki/issue/web, method: PUT, secretArgs: {{common_name: web.example}}, secretKey: private_key}}\n"
    );
    let sync = r#"
- secretName: app-creds
  labels: {team: payments}
  annotations: {note: synced}
  data:
    - {key: username, objectName: user}
    - {key: password, objectName: pass}
- secretName: web-tls
  type: kubernetes.io/tls
  data:
    - {key: tls.crt, objectName: crt}
    - {key: tls.key, objectName: key}
- secretName: pull
  type: kubernetes.io/dockerconfigjson
  keep: true
  data:
    - {key: .dockerconfigjson, objectName: cfg}
"#;
    p.mount(&params(&objects, &[("syncSecrets", sync)]), &pod)
        .await
        .expect("mount with sync");

    let app = bed.secret("app-creds").await;
    assert_eq!(app["type"], "Opaque");
    assert_eq!(data(&app, "username"), b"u1");
    assert_eq!(data(&app, "password"), b"p1");
    assert_eq!(app["metadata"]["labels"]["team"], "payments");
    assert_eq!(app["metadata"]["labels"]["vault-csi-provider.io/managed"], "true");
    assert_eq!(app["metadata"]["annotations"]["note"], "synced");
    let owners = app["metadata"]["ownerReferences"].as_array().expect("owner references");
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0]["kind"], "ReplicaSet");
    assert_eq!(owners[0]["uid"], "rs-uid-1");
    assert!(!app["metadata"]["annotations"]["vault-csi-provider.io/content-hmac"]
        .as_str()
        .unwrap()
        .contains("u1"));

    let tls = bed.secret("web-tls").await;
    assert_eq!(tls["type"], "kubernetes.io/tls");
    let cert_pub = openssl(&["x509", "-noout", "-pubkey"], &data(&tls, "tls.crt"));
    let key_pub = openssl(&["pkey", "-pubout"], &data(&tls, "tls.key"));
    assert_eq!(cert_pub, key_pub);

    let pull = bed.secret("pull").await;
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
    assert!(
        pull["metadata"].get("ownerReferences").is_none(),
        "keep: true means no owner references"
    );

    // A pod without a controller owns its Secret itself.
    let solo = bed.pod("solo").await;
    let sync_solo = "- {secretName: solo-creds, data: [{key: u, objectName: user}]}";
    p.mount(&params(KV, &[("syncSecrets", sync_solo)]), &solo)
        .await
        .expect("mount");
    let s = bed.secret("solo-creds").await;
    assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Pod");
    assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], solo.uid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_written_at_once_and_unchanged_mounts_write_nothing() {
    let bed = Bed::start().await;
    bed.allow_sync(bed.ns()).await;
    bed.kv(json!({"user": "u1", "pass": "p1"})).await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let sync =
        "- {secretName: app-creds, data: [{key: username, objectName: user}, {key: password, objectName: pass}]}";
    let ps = params(KV, &[("syncSecrets", sync)]);
    p.mount(&ps, &pod).await.unwrap();
    assert_eq!(writes(&bed, "app-creds"), 1);
    for _ in 0..5 {
        p.mount(&ps, &pod).await.unwrap();
    }
    assert_eq!(writes(&bed, "app-creds"), 1, "no write when nothing changed");
    bed.kv(json!({"user": "u1", "pass": "p2"})).await;
    p.mount(&ps, &pod).await.unwrap();
    assert_eq!(writes(&bed, "app-creds"), 2, "the change is written on the next mount");
    assert_eq!(data(&bed.secret("app-creds").await, "password"), b"p2");

    // A restarted provider compares the HMAC annotation: still no write.
    p.kill().await;
    let p = bed.provider("p2", &[]).await;
    p.mount(&ps, &pod).await.unwrap();
    assert_eq!(
        writes(&bed, "app-creds"),
        2,
        "the HMAC annotation spares a write after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_secret_is_never_touched() {
    let bed = Bed::start().await;
    bed.allow_sync(bed.ns()).await;
    bed.kv(json!({"user": "u1", "pass": "p1"})).await;
    bed.kube
        .put_secret(
            bed.ns(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app-creds"}, "type": "Opaque", "data": {"username": "b3JpZ2luYWw="}}),
        )
        .await
        .unwrap();
    let before = bed.secret("app-creds").await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let sync = "- {secretName: app-creds, data: [{key: username, objectName: user}]}";
    let e = p.mount(&params(KV, &[("syncSecrets", sync)]), &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_mentions(&e, &["not managed by vault-csi-provider"]);
    assert_eq!(bed.secret("app-creds").await, before, "byte-for-byte intact");
    assert_eq!(writes(&bed, "app-creds"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_binding_the_error_names_it_and_other_namespaces_are_never_written() {
    let bed = Bed::start().await;
    let other = bed.kube.namespace("other").await.unwrap();
    bed.allow_sync(&other).await;
    bed.kv(json!({"user": "u1", "pass": "p1"})).await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let sync = "- {secretName: app-creds, data: [{key: username, objectName: user}]}";
    let e = p.mount(&params(KV, &[("syncSecrets", sync)]), &pod).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains(&format!("RoleBinding in {}", bed.ns()))
            && e.message().contains("vault-csi-provider-secret-sync"),
        "{}",
        e.message()
    );
    let elsewhere = bed
        .kube
        .requests()
        .iter()
        .filter(|(_, p)| p.contains(&format!("/namespaces/{other}/")))
        .count();
    assert_eq!(elsewhere, 0, "only the pod's namespace is ever addressed");
    assert!(bed.kube.secret(&other, "app-creds").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_sync_specs_are_named() {
    let bed = Bed::start().await;
    bed.allow_sync(bed.ns()).await;
    bed.kv(json!({"user": "u1", "pass": "x".repeat(1024 * 1024)})).await;
    bed.world.bao.setup_pki("pki", "web", "24h").await.unwrap();
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let pki = "- {objectName: crt, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: a.example}, secretKey: certificate}\n\
               - {objectName: key, secretPath: pki/issue/web, method: PUT, secretArgs: {common_name: b.example}, secretKey: private_key}\n";
    let mismatch = "- {secretName: web-tls, type: kubernetes.io/tls, data: [{key: tls.crt, objectName: crt}, {key: tls.key, objectName: key}]}";
    let e = p
        .mount(&params(pki, &[("syncSecrets", mismatch)]), &pod)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_mentions(&e, &["\"web-tls\"", "does not match the certificate"]);

    let cases: BTreeMap<&str, (&str, &str)> = BTreeMap::from([
        ("bad key", ("- {secretName: s, data: [{key: 'a/b', objectName: user}]}", "key \"a/b\"")),
        ("unknown object", ("- {secretName: s, data: [{key: k, objectName: nope}]}", "objectName \"nope\" is not one of the objects")),
        ("tls keys", ("- {secretName: s, type: kubernetes.io/tls, data: [{key: tls.crt, objectName: user}]}", "needs key tls.key")),
        ("bad name", ("- {secretName: Bad_Name, data: [{key: k, objectName: user}]}", "not a valid Secret name")),
        ("oversize", ("- {secretName: big, data: [{key: k, objectName: pass}]}", "more than a Secret can hold")),
        ("docker", ("- {secretName: d, type: kubernetes.io/dockerconfigjson, data: [{key: .dockerconfigjson, objectName: user}]}", "is not valid JSON")),
    ]);
    for (what, (sync, expect)) in cases {
        let e = p.mount(&params(KV, &[("syncSecrets", sync)]), &pod).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {}", e.message());
        assert!(
            e.message().contains(expect),
            "{what}: expected {expect:?} in {}",
            e.message()
        );
    }
    let secret_writes = bed
        .kube
        .requests()
        .iter()
        .filter(|(m, p)| m == "PATCH" && p.contains("/secrets/"))
        .count();
    assert_eq!(secret_writes, 0, "nothing invalid was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_database_credentials_cause_no_secret_write() {
    let bed = Bed::start().await;
    let pg = bed.database("1h", "2h").await;
    bed.allow_sync(bed.ns()).await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let objects = "- {objectName: user, secretPath: database/creds/app, secretKey: username}\n- {objectName: pass, secretPath: database/creds/app, secretKey: password}\n";
    let sync = "- {secretName: db, type: kubernetes.io/basic-auth, data: [{key: username, objectName: user}, {key: password, objectName: pass}]}";
    for _ in 0..5 {
        p.mount(&params(objects, &[("syncSecrets", sync)]), &pod).await.unwrap();
    }
    assert_eq!(writes(&bed, "db"), 1, "one lease, one write");
    let s = bed.secret("db").await;
    let user = String::from_utf8(data(&s, "username")).unwrap();
    let pass = String::from_utf8(data(&s, "password")).unwrap();
    assert!(pg.can_login(&user, &pass).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synced_secret_belongs_to_its_class() {
    use vcp_testbed::driver::{mount_request, Generation};
    let bed = Bed::start().await;
    bed.allow_sync(bed.ns()).await;
    bed.kv(json!({"user": "u1", "pass": "p1"})).await;
    let p = bed.provider("p", &[]).await;
    let pod = bed.pod("web-0").await;
    let sync = "- secretName: app-creds\n  data:\n    - {key: username, objectName: user}\n";
    let ps = params(KV, &[("syncSecrets", sync)]);
    let mount = |generation, class: &str, rotation| mount_request(generation, class, &ps, &pod, rotation, Vec::new());

    p.mount_raw(Generation::V16, mount(Generation::V16, "class-a", false))
        .await
        .expect("class-a syncs");
    let secret = bed.secret("app-creds").await;
    assert_eq!(
        secret["metadata"]["annotations"]["vault-csi-provider.io/secret-provider-class"],
        "class-a"
    );
    let before = writes(&bed, "app-creds");

    // Another class of the same namespace naming the same Secret, with the
    // same or other content, is refused and changes nothing.
    let e = p
        .mount_raw(Generation::V16, mount(Generation::V16, "class-b", false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_mentions(&e, &["\"class-a\""]);
    assert_mentions(&e, &["\"class-b\""]);
    bed.kv(json!({"user": "u2", "pass": "p1"})).await;
    let e = p
        .mount_raw(Generation::V16, mount(Generation::V16, "class-b", false))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let secret = bed.secret("app-creds").await;
    assert_eq!(data(&secret, "username"), b"u1");
    assert_eq!(writes(&bed, "app-creds"), before);

    // A v1.5 rotation call names no class: it may update the content and
    // keeps the recorded owner.
    p.mount_raw(Generation::V15, mount(Generation::V15, "ignored", true))
        .await
        .expect("v1.5 rotation of class-a's pod");
    let secret = bed.secret("app-creds").await;
    assert_eq!(data(&secret, "username"), b"u2");
    assert_eq!(
        secret["metadata"]["annotations"]["vault-csi-provider.io/secret-provider-class"],
        "class-a"
    );
    p.mount_raw(Generation::V16, mount(Generation::V16, "class-a", false))
        .await
        .expect("class-a still syncs");
}
