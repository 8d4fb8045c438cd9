#!/usr/bin/env bash
# The performance harness (docs/performance.md): release build of the
# provider and csi-bench, a real OpenBao, PostgreSQL and kube-apiserver (the
# envtest assets, see scripts/testbed.sh envtest), then the run.
# Pass --quick for a short smoke run, --pod-hour for the Vault load per
# pod-hour only.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/testbed.sh install
KUBEBUILDER_ASSETS="$(scripts/testbed.sh envtest)"
export KUBEBUILDER_ASSETS
scripts/testbed.sh pg-start >/dev/null
eval "$(scripts/testbed.sh env)"
export VCP_BAO_BIN VCP_TEST_PG_URL VCP_GO_DRIVER VCP_PYTHON
cargo build --locked --release --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/release/csi-bench" "$@"
