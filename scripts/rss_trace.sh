#!/usr/bin/env bash
# One ingest worker's RSS over time next to its commits (not a test): see rss_trace.py.
# RSS_HOSTS (``, N or uuid), RSS_SECS (default 60), BENCH_REPEAT, BENCH_BUDGET_MIB,
# BENCH_KAFKA_OPTIONS; LOGLAKE_PROFILE=release traces the optimised binary, LOGLAKE_BIN=path
# a binary kept from another commit.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_python
if [ -n "${LOGLAKE_BIN:-}" ]; then
  [ -x "$LOGLAKE_BIN" ] || { log "LOGLAKE_BIN=$LOGLAKE_BIN is not an executable"; exit 1; }
  export LOGLAKE_BIN
else
  build_loglake
fi
with_stack "$PY" "$ROOT/scripts/rss_trace.py"
