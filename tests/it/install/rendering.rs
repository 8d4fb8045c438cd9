//! What the install renders: every kustomize variant and the examples'
//! Kubernetes objects valid against the Kubernetes OpenAPI schemas, and the
//! provider's DaemonSet locked down in every variant.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{of_kind, provider_container, render, strings, variants, yaml_docs, EXAMPLES, REPO};
use serde_json::{json, Value};

/// Kubernetes versions the manifests must be valid for: the oldest still
/// commonly run, and the newest the validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// The `kubernetes-validate` tool that `scripts/testbed.sh install` puts in
/// `.testbed/`, or a failure that says how to get it.
fn validator() -> PathBuf {
    let path = std::env::var_os("VCP_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join(".testbed/kubernetes-validate/bin/kubernetes-validate"));
    assert!(
        path.is_file(),
        "kubernetes-validate not found at {}: run `scripts/testbed.sh install` (installs it from PyPI into .testbed/)",
        path.display()
    );
    path
}

/// Runs the validator in strict mode on `files` for one Kubernetes version,
/// and returns (success, output).
fn validate(files: &[PathBuf], version: &str) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "-k", version])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn every_variant_and_example_matches_the_kubernetes_schemas_with_no_unknown_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut expected = 0;
    for v in variants() {
        assert!(!v.objects.is_empty(), "{} renders nothing", v.name);
        let file = dir.path().join(format!("{}.yaml", v.name.replace('/', "-")));
        std::fs::write(&file, &v.yaml).unwrap();
        files.push(file);
        expected += v.objects.len();
    }
    // The examples' Kubernetes objects (the SecretProviderClass is a CRD the
    // validator has no schema for; it is checked field by field in `examples`).
    for ex in EXAMPLES {
        for entry in std::fs::read_dir(Path::new(REPO).join("examples").join(ex)).unwrap() {
            let file = entry.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".yaml") && name != "secretproviderclass.yaml" {
                expected += yaml_docs(&std::fs::read_to_string(&file).unwrap()).len();
                files.push(file);
            }
        }
    }
    for version in KUBERNETES_VERSIONS {
        let (ok, out) = validate(&files, version);
        assert!(ok, "kubernetes-validate -k {version} failed:\n{out}");
        let passed = out.lines().filter(|l| l.contains(" passed for resource ")).count();
        assert_eq!(
            passed, expected,
            "every object must be checked against a schema (no WARN for unknown kinds):\n{out}"
        );
    }

    // The check has teeth: a misspelt field is refused.
    let bad = dir.path().join("bad.yaml");
    let base = render("base", &[]);
    std::fs::write(
        &bad,
        base.yaml.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem"),
    )
    .unwrap();
    let (ok, out) = validate(&[bad], KUBERNETES_VERSIONS[0]);
    assert!(
        !ok && out.contains("readOnlyRootFileSystem"),
        "strict validation catches a typo:\n{out}"
    );
}

#[test]
fn the_daemonset_is_locked_down_in_every_variant() {
    for v in variants().iter().filter(|v| v.name != "deploy/driver") {
        let (pod, c) = provider_container(v);
        let n = &v.name;
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{n}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{n}");
        assert_eq!(sc["privileged"], false, "{n}");
        assert_eq!(strings(&sc["capabilities"]["drop"]), vec!["ALL"], "{n}");
        assert!(sc["capabilities"].get("add").is_none(), "{n}: no capability added");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{n}"
        );
        for forbidden in ["hostNetwork", "hostPID", "hostIPC"] {
            assert!(pod.get(forbidden).is_none(), "{n}: {forbidden}");
        }
        assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}), "{n}");
        assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]), "{n}");
        assert!(c["resources"]["requests"]["cpu"].is_string(), "{n}: cpu request");
        assert!(c["resources"]["requests"]["memory"].is_string(), "{n}: memory request");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{n}: memory limit");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health/live", "{n}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready", "{n}");
        // The only host path is the socket directory, mounted at /provider;
        // anything else is a read-only ConfigMap (the example's CA files).
        let all_volumes = pod["volumes"].as_array().unwrap();
        let volumes: Vec<&Value> = all_volumes.iter().filter(|v| v.get("hostPath").is_some()).collect();
        assert_eq!(volumes.len(), 1, "{n}");
        for v in all_volumes.iter().filter(|v| v.get("hostPath").is_none()) {
            assert!(
                v.get("configMap").is_some(),
                "{n}: only ConfigMaps besides the socket directory: {v}"
            );
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == v["name"])
                .unwrap_or_else(|| panic!("{n}: {v} is mounted"));
            assert_eq!(mount["readOnly"], true, "{n}: {mount}");
        }
        let host = volumes[0]["hostPath"]["path"].as_str().unwrap();
        assert!(
            [
                "/var/run/secrets-store-csi-providers",
                "/etc/kubernetes/secrets-store-csi-providers"
            ]
            .contains(&host),
            "{n}: {host}"
        );
        assert_eq!(
            c["volumeMounts"][0],
            json!({"name": "providervol", "mountPath": "/provider"}),
            "{n}"
        );
        assert!(strings(&c["args"]).contains(&"-endpoint=/provider/vault.sock".to_string()));
        let openbao = n == "openbao" || n == "all";
        assert_eq!(
            strings(&c["args"]).contains(&"-openbao-endpoint=/provider/openbao.sock".to_string()),
            openbao,
            "{n}: the openbao socket, in the same socket directory"
        );
        // Root only where the socket directory requires it.
        let user = pod["securityContext"]["runAsUser"].as_i64().unwrap();
        if n == "non-root" || n == "all" {
            assert_eq!(user, 65532, "{n}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{n}");
            assert_eq!(volumes[0]["hostPath"]["type"], "Directory", "{n}");
        } else {
            assert_eq!(user, 0, "{n}");
        }
        let env: Vec<&str> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        let revoke = n == "revoke-on-pod-delete" || n == "all" || n == "deploy/example";
        let flag = format!("-revoke-on-pod-delete={revoke}");
        let args = strings(&c["args"]);
        assert_eq!(
            args.iter()
                .filter(|a| a.contains("revoke-on-pod-delete"))
                .collect::<Vec<_>>(),
            vec![&flag],
            "{n}"
        );
        // Every variant knows its node: the node check before a token is
        // used or minted, and the revocation watch.
        assert!(env.contains(&"NODE_NAME"), "{n}");
        assert_eq!(env.iter().filter(|e| **e == "NODE_NAME").count(), 1, "{n}");
    }
    let driver = variants().into_iter().find(|v| v.name == "deploy/driver").unwrap();
    let spec = &of_kind(&driver.objects, "CSIDriver")[0]["spec"];
    assert_eq!(spec["tokenRequests"], json!([{"audience": "vault"}]));
    assert_eq!(spec["requiresRepublish"], true);
    assert_eq!(spec["podInfoOnMount"], true);
}
