#!/usr/bin/env bash
# End-to-end demo on a fresh machine: installs OpenBao and builds the grpc-go
# client into .testbed/ when missing, unpacks the real Kubernetes control plane
# (kube-apiserver, etcd: the envtest assets), builds the provider, and runs one
# real Mount through its socket with grpc-go (the CSI driver's gRPC library).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/testbed.sh install
KUBEBUILDER_ASSETS="$(scripts/testbed.sh envtest)"
export KUBEBUILDER_ASSETS
eval "$(scripts/testbed.sh env)"
export VCP_BAO_BIN VCP_GO_DRIVER
cargo build --locked --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/csi-testbed" demo
