#!/usr/bin/env bash
# End-to-end demo on a fresh machine: installs OpenBao into .testbed/ when
# missing, builds the provider, and runs one real Mount through its socket.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/testbed.sh install
eval "$(scripts/testbed.sh env)"
export VCP_BAO_BIN
cargo build --locked --bins
exec target/debug/csi-testbed demo
