#!/usr/bin/env bash
# Many-topics benchmark (not a test): BENCH_TOPICS (default 200) small topics archived by one
# ingest worker into an S3 lake, then one compaction pass over their tables. Prints CPU and
# RSS per phase.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_python
bench_loglake
with_stack "$PY" "$ROOT/scripts/bench_topics.py"
