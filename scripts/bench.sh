#!/usr/bin/env bash
# The performance harness (docs/performance.md): release build of the
# provider and csi-bench, a real OpenBao and PostgreSQL, Kubernetes (the real
# kube-apiserver where KUBEBUILDER_ASSETS names it, else the project's
# double), then the run.
# Pass --quick for a short smoke run, --pod-hour for the Vault load per
# pod-hour only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=scripts/bed-env.sh
source scripts/bed-env.sh
cargo build --locked --release --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/release/csi-bench" "$@"
