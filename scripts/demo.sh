#!/usr/bin/env bash
# End-to-end demo on a fresh machine: installs OpenBao and builds the grpc-go
# client into .testbed/ when missing, builds the provider, and runs one real
# Mount through its socket with grpc-go (the CSI driver's gRPC library) on a
# Kubernetes control plane: the real kube-apiserver and etcd where
# KUBEBUILDER_ASSETS names them, the project's Kubernetes double otherwise.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/testbed.sh install
eval "$(scripts/testbed.sh env)"
export VCP_BAO_BIN VCP_GO_DRIVER
cargo build --locked --workspace --bins
"${CARGO_TARGET_DIR:-target}/debug/csi-testbed" kubernetes
exec "${CARGO_TARGET_DIR:-target}/debug/csi-testbed" demo
