#!/usr/bin/env bash
# Log-shipping benchmark (not a test): `loglake agent` and rsyslog (imfile + omkafka) tail the
# same log files into the local broker, side by side, for 1, 10 and 1000 files; prints
# lines/s, MB/s, MB/s per core of tailer CPU, peak RSS, the ratio and the issue's targets.
# BENCH_FILES (default 1,10,1000) file counts; BENCH_MB (default 200) MB of lines per file
# count; BENCH_JSON_PCT (default 20) % of JSON lines; BENCH_TOOLS (default loglake,rsyslog)
# runs only the tools listed. Builds nothing: it runs $CARGO_TARGET_DIR/debug/loglake
# (LOGLAKE_PROFILE=release: the release one), which must exist. Installs rsyslog and
# rsyslog-kafka with apt when missing (on a machine running systemd, apt also starts the
# system's rsyslog service; the benchmark runs its own rsyslogd with its own config).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rsyslog() {
  if dpkg -s rsyslog rsyslog-kafka >/dev/null 2>&1; then return 0; fi
  log "installing rsyslog and rsyslog-kafka (the benchmark's peer)"
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rsyslog rsyslog-kafka >/dev/null 2>&1 || {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rsyslog rsyslog-kafka >/dev/null
  }
}

tools=${BENCH_TOOLS:-loglake,rsyslog}
ensure_python
if [[ ,$tools, == *,loglake,* ]]; then
  LOGLAKE_BIN="$CARGO_TARGET_DIR/${LOGLAKE_PROFILE:-debug}/loglake"
  [ -x "$LOGLAKE_BIN" ] || { log "no loglake binary at $LOGLAKE_BIN: build it first (cargo build --bin loglake)"; exit 1; }
  "$LOGLAKE_BIN" agent --help >/dev/null 2>&1 \
    || { log "$LOGLAKE_BIN has no working 'agent' subcommand: rebuild it"; exit 1; }
  export LOGLAKE_BIN
fi
if [[ ,$tools, == *,rsyslog,* ]]; then
  ensure_rsyslog
  export RSYSLOGD=${RSYSLOGD:-$(command -v rsyslogd || echo /usr/sbin/rsyslogd)}
fi
export BENCH_TOOLS=$tools
with_stack "$PY" "$ROOT/scripts/bench_agent.py"
