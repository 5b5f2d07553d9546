#!/usr/bin/env bash
# The local stack: a Kafka-API broker (Tansu) and an S3-API server with conditional writes (moto).
#
#   scripts/stack.sh up   [DIR]   install if needed, start both on free ports, wait until ready,
#                                 create the bucket, write DIR/env and print it
#   scripts/stack.sh down [DIR]   stop both
#   scripts/stack.sh env  [DIR]   print the environment a client needs
#
# DIR defaults to $LOGLAKE_STACK_DIR or .stack under the repository. Ports: KAFKA_PORT and
# S3_PORT pick fixed ones, otherwise free ones are chosen. Idempotent: `up` on a running stack
# only prints its environment.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd=${1:-up}
DIR=${2:-${LOGLAKE_STACK_DIR:-$ROOT/.stack}}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

running() { [ -f "$DIR/$1.pid" ] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

up() {
  if running tansu && running moto && [ -f "$DIR/env" ]; then cat "$DIR/env"; return; fi
  down quiet
  ensure_python
  local kport=${KAFKA_PORT:-$(free_port)} sport=${S3_PORT:-$(free_port)}
  local tansu; tansu=$(tansu_bin)
  # Memory storage: topics vanish with the process. setsid so a test's process group signals
  # (SIGSTOP to simulate an outage) reach only the broker.
  setsid "$tansu" broker --listener-url "tcp://127.0.0.1:$kport" \
      --advertised-listener-url "tcp://127.0.0.1:$kport" --storage-engine memory://tansu/ \
      >"$DIR/tansu.log" 2>&1 < /dev/null &
  echo $! > "$DIR/tansu.pid"
  setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$sport" >"$DIR/moto.log" 2>&1 < /dev/null &
  echo $! > "$DIR/moto.pid"
  wait_port 127.0.0.1 "$kport" 30
  wait_port 127.0.0.1 "$sport" 30
  cat > "$DIR/env" <<ENV
export LOGLAKE_KAFKA_BROKERS=127.0.0.1:$kport
export LOGLAKE_S3_ENDPOINT=http://127.0.0.1:$sport
export AWS_ENDPOINT_URL=http://127.0.0.1:$sport
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1
export AWS_ALLOW_HTTP=true
export LOGLAKE_STACK_DIR=$DIR
export TANSU_PID=$(cat "$DIR/tansu.pid")
export MOTO_PID=$(cat "$DIR/moto.pid")
ENV
  # The bucket the examples and tests use.
  "$PY" - "$sport" <<'PYEOF'
import sys, urllib.request
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/loglake", method="PUT")
urllib.request.urlopen(req, timeout=10).read()
PYEOF
  log "broker on 127.0.0.1:$kport, S3 on 127.0.0.1:$sport (logs in $DIR)"
  cat "$DIR/env"
}

down() {
  for svc in tansu moto; do
    if running "$svc"; then
      local pid; pid=$(cat "$DIR/$svc.pid")
      kill -CONT "$pid" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$svc.pid"
  done
  rm -f "$DIR/env"
  [ "${1:-}" = quiet ] || log "stack in $DIR stopped"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  env) cat "$DIR/env" ;;
  *) echo "usage: $0 up|down|env [DIR]" >&2; exit 2 ;;
esac
