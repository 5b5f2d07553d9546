#!/usr/bin/env bash
# One ingest worker's RSS over time next to its commits (not a test): see rss_trace.py.
# RSS_HOSTS (``, N or uuid), RSS_SECS (default 60), BENCH_REPEAT, BENCH_BUDGET_MIB,
# BENCH_KAFKA_OPTIONS; LOGLAKE_PROFILE=release traces the optimised binary, LOGLAKE_BIN=path
# a binary kept from another commit.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_python
bench_loglake
with_stack "$PY" "$ROOT/scripts/rss_trace.py"
