#!/usr/bin/env bash
# Compaction benchmark (not a test). BENCH_RECORDS (default 600000) generated JSON records are
# ingested in BENCH_WAVES (default 40) flushes into two S3 lakes at once (two consumer groups),
# so both hold the same small files; `loglake compact` runs on one and delta-rs's own
# optimize (Python deltalake, the peer) on the other. Prints throughput, peak RSS, files
# before/after and query times before/after.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_python
bench_loglake
with_stack "$PY" "$ROOT/scripts/bench_compact.py"
