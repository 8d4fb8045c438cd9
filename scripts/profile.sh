#!/usr/bin/env bash
# Profiles warm mounts (docs/performance.md, "Where a warm mount's CPU goes"):
# builds the provider and csi-bench with symbols (cargo profile `profiling`),
# runs `csi-bench --cpu --perf` (3,000 warm one-object mounts through grpc-go on
# one kept connection, the provider sampled by `perf record -g`), prints the
# hottest frames and writes a flame graph (inferno) to docs/ or to $1.
#
#   scripts/profile.sh [out.svg]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-docs/flamegraph-warm-mount.svg}"

# shellcheck source=scripts/bed-env.sh
source scripts/bed-env.sh
if ! command -v perf >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >&2
fi
if ! command -v inferno-flamegraph >/dev/null; then
  cargo install --locked inferno >&2
fi

cargo build --locked --profile profiling --workspace --bins
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
"${CARGO_TARGET_DIR:-target}/profiling/csi-bench" --cpu --perf "$scratch/perf.data"
perf report -i "$scratch/perf.data" --stdio --no-children --sort symbol --percent-limit 1.5 2>/dev/null |
  grep -E '^ +[0-9]' | head -30
perf script -i "$scratch/perf.data" 2>/dev/null | inferno-collapse-perf >"$scratch/folded"
inferno-flamegraph --minwidth 1 --title "vault-csi-provider: 3,000 warm one-object mounts (grpc-go, one kept connection)" \
  <"$scratch/folded" >"$out"
echo "flame graph: $out" >&2

# Shares by stack (docs/performance.md, "Where the rest goes"): each sample
# counts once, in the first group of this list that one of its frames names.
python3 - "$scratch/folded" <<'PY'
import sys
groups = [
    ("the log line (tracing)", ("Event::dispatch", "tracing_subscriber")),
    ("the Vault request (reqwest, hyper's HTTP/1 client)",
     ("VaultClient::send_within", "HttpClient::send_within", "reqwest::", "hyper::proto::h1", "hyper_util::client")),
    ("the provider's own code",
     ("Mounter::", "spc::", "kubernetes::identity", "render::", "versions::", "ledger::", "pod_labels")),
    ("the gRPC server (tonic, tower, h2)", ("h2::", "tonic::", "hyper::proto::h2", "hyper_util::server", "tower::", "vcp_proto::")),
    ("the runtime waiting (epoll_wait, switches)", ("park", "Driver::turn", "epoll_wait")),
]
counts = {name: 0 for name, _ in groups}
counts["other"] = 0
total = 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(" ", 1)
    n = int(n)
    total += n
    name = next((g for g, marks in groups if any(m in stack for m in marks)), "other")
    counts[name] += n
print("\n| part | share of the provider's samples |\n|---|---|")
for name, n in counts.items():
    print(f"| {name} | {100 * n / max(total, 1):.0f} % |")
PY
