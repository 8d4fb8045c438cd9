//! What only the double's own tests can show (the conformance list in
//! `tests/it/kubernetes_conformance.rs` covers what both backends share):
//! when bookmarks arrive, the end of a streamed list, impersonation rights.

use std::time::Duration;

use serde_json::Value;

use crate::kubernetes::control_plane::{Backend, ControlPlane, Signing};

async fn lines_until_end(mut rx: tokio::sync::mpsc::Receiver<String>) -> Vec<Value> {
    let mut out = Vec::new();
    let all = async {
        while let Some(line) = rx.recv().await {
            out.push(serde_json::from_str(&line).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(15), all)
        .await
        .expect("the watch ends at its timeout");
    out
}

#[tokio::test]
async fn a_watch_asked_for_bookmarks_gets_one_two_seconds_before_its_timeout() {
    let cp = ControlPlane::start(&Backend::Double, Signing::Es256).await.unwrap();
    let path = "/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true&timeoutSeconds=3";
    let (status, rx) = cp.admin().stream(path, &[]).await.unwrap();
    assert_eq!(status, 200);
    let events = lines_until_end(rx).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "BOOKMARK");
    assert_eq!(events[0]["object"]["kind"], "ConfigMap");
    assert!(events[0]["object"]["metadata"]["resourceVersion"].is_string());
    let (_, rx) = cp
        .admin()
        .stream("/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=3", &[])
        .await
        .unwrap();
    assert!(lines_until_end(rx).await.is_empty(), "no bookmark unless asked");
}

#[tokio::test]
async fn a_streamed_list_ends_its_initial_events_with_a_bookmark() {
    let cp = ControlPlane::start(&Backend::Double, Signing::Es256).await.unwrap();
    let path = "/api/v1/namespaces?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1";
    let (_, rx) = cp.admin().stream(path, &[]).await.unwrap();
    let events = lines_until_end(rx).await;
    let end = events.iter().position(|e| e["type"] == "BOOKMARK").expect("a bookmark");
    assert!(
        end >= 4,
        "the four namespaces the server starts with come first: {events:?}"
    );
    assert_eq!(
        events[end]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[tokio::test]
async fn only_who_may_impersonate_does() {
    let cp = ControlPlane::start(&Backend::Double, Signing::Es256).await.unwrap();
    let as_sa = [("impersonate-user", "system:serviceaccount:default:nobody")];
    let a = cp
        .admin()
        .send("GET", "/api/v1/namespaces/default/secrets", &as_sa, None)
        .await
        .unwrap();
    assert_eq!(
        a.status,
        403,
        "the admin may impersonate, and nobody may list: {:?}",
        a.json()
    );
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("system:serviceaccount:default:nobody"));
    let anonymous = crate::kubernetes::control_plane::Https::new(cp.addr(), cp.client_config().unwrap());
    let a = anonymous.send("GET", "/api", &as_sa, None).await.unwrap();
    assert_eq!(a.status, 403, "anonymous may not impersonate: {:?}", a.json());
}
