//! The install manifests through `kubectl` (client-go, a client this
//! project did not write): the RBAC of the committed example install lets
//! the provider's ServiceAccount do what the example's features need and
//! nothing more, as the server's authorizer answers `kubectl auth can-i`
//! (on either backend); and, on the real kube-apiserver only, the whole
//! example install and the reference CSIDriver apply with the server's own
//! field validation (the double serves neither the workload kinds nor
//! their OpenAPI schemas).

use std::path::Path;
use std::process::Command;

use crate::support::*;
use vcp_testbed::kubernetes::deploy;

/// Runs kubectl with `kubeconfig`; (success, stdout, stderr).
fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(deploy::kubectl().expect("kubectl"))
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubectl --kubeconfig` of the cluster admin, with a discovery cache of
/// its own.
struct Kubectl {
    kubeconfig: std::path::PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn admin(kube: &vcp_testbed::kubernetes::cluster::Cluster, dir: &Path) -> Kubectl {
        let kubeconfig = dir.join("admin.kubeconfig");
        kube.write_admin_kubeconfig(&kubeconfig).unwrap();
        Kubectl {
            kubeconfig,
            cache: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let cache = format!("--cache-dir={}", self.cache.path().display());
        let mut all = vec![cache.as_str()];
        all.extend_from_slice(args);
        kubectl(&self.kubeconfig, &all)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_the_example_install_with_the_servers_field_validation() {
    let kube = vcp_testbed::kubernetes::cluster::Cluster::start().await.unwrap();
    if !real_server_only(
        &kube,
        "kubectl's discovery-driven apply of every kind the install has, against the server's OpenAPI schemas",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::admin(&kube, dir.path());
    let repo = deploy::repo();
    let mut applied = 0;
    for d in ["deploy/example", "deploy/driver"] {
        let yaml = deploy::kustomize(&repo.join(d)).unwrap();
        let file = dir.path().join(format!("{}.yaml", d.replace('/', "-")));
        std::fs::write(&file, &yaml).unwrap();
        // Server-side apply, validated by the server (this build serves no
        // protobuf OpenAPI v2, which client-side validation would need).
        let (ok, stdout, stderr) = k.run(&[
            "apply",
            "--server-side",
            "--field-manager=vcp-it",
            "--validate=false",
            "-f",
            &file.display().to_string(),
        ]);
        assert!(ok, "kubectl apply {d}: {stderr}");
        applied += stdout.lines().filter(|l| l.contains("serverside-applied")).count();
        assert_eq!(
            stdout.lines().count(),
            deploy::yaml_docs(&yaml).unwrap().len(),
            "{d}: every object applied:\n{stdout}"
        );
    }
    assert!(applied >= 8, "{applied} objects applied");

    // A misspelt field is refused by the server's strict validation.
    let bad = dir.path().join("bad.yaml");
    let yaml = deploy::kustomize(&repo.join("deploy/example")).unwrap();
    std::fs::write(&bad, yaml.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem")).unwrap();
    let (ok, _, stderr) = k.run(&[
        "apply",
        "--server-side",
        "--field-manager=vcp-it",
        "--validate=false",
        "--dry-run=server",
        "-f",
        &bad.display().to_string(),
    ]);
    assert!(!ok, "a misspelt field applied");
    assert!(
        stderr.contains("readOnlyRootFileSystem: field not declared in schema"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_installs_rbac_allows_exactly_its_features_as_kubectl_auth_can_i_says() {
    let kube = vcp_testbed::kubernetes::cluster::Cluster::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl::admin(&kube, dir.path());
    // The example's namespace, ServiceAccount and RBAC, as rendered.
    let objects = deploy::yaml_docs(&deploy::kustomize(&deploy::repo().join("deploy/example")).unwrap()).unwrap();
    let mut install: Vec<_> = objects.iter().filter(|o| o["kind"] == "Namespace").cloned().collect();
    install.extend(deploy::rbac(&objects));
    kube.apply(&install).await.expect("the example's RBAC applies");

    // What the provider's ServiceAccount may do, as the authorizer says.
    let who = "--as=system:serviceaccount:vault-csi:vault-csi-provider";
    let can = |verb: &str, what: &str, ns: Option<&str>| {
        let mut args = vec!["auth", "can-i", verb, what, who];
        match ns {
            Some(ns) => args.extend(["-n", ns]),
            None => args.push("--all-namespaces"),
        }
        let (_, stdout, stderr) = k.run(&args);
        match stdout.trim() {
            "yes" => true,
            "no" => false,
            other => panic!("kubectl auth can-i {verb} {what}: {other:?} {stderr}"),
        }
    };
    let key = format!("secrets/{KEY_SECRET}");
    let expected = [
        // The object-version key: by name, and creating it.
        ("get", key.as_str(), Some("vault-csi"), true),
        ("list", key.as_str(), Some("vault-csi"), true),
        ("watch", key.as_str(), Some("vault-csi"), true),
        ("create", "secrets", Some("vault-csi"), true),
        ("get", "secrets", Some("vault-csi"), false),
        ("list", "secrets", Some("vault-csi"), false),
        ("delete", key.as_str(), Some("vault-csi"), false),
        ("get", "secrets", Some("default"), false),
        // Revocation on pod deletion: the node's pods, listed and watched.
        ("list", "pods", None, true),
        ("watch", "pods", None, true),
        ("get", "pods", Some("default"), false),
        // No token minting in the example (the CSIDriver passes tokens), and
        // no Secret sync until an admin binds it in a namespace.
        ("create", "serviceaccounts/token", Some("default"), false),
        ("patch", "secrets", Some("default"), false),
    ];
    for (verb, what, ns, allowed) in expected {
        assert_eq!(can(verb, what, ns), allowed, "can-i {verb} {what} in {ns:?}");
    }
}
