#!/usr/bin/env bash
# End-to-end ingest benchmark (not a test). BENCH_REPEAT=N passes over the loghub samples
# (default 40, ~0.7M records, ~250 MB of JSON); BENCH_BUDGET_MIB sets ingest.memory_budget;
# BENCH_KINDS=file|s3|file,s3 (default) picks the lakes; BENCH_CODECS (default zstd,lz4) adds
# one run per producer codec on the first lake kind, empty skips them; BENCH_KAFKA_OPTIONS
# ("key=value,key=value") adds librdkafka settings to every ingest run, to compare tunings.
# LOGLAKE_BIN=path runs that binary instead of building one: a copy kept from an earlier
# commit, to compare two builds on the same stack and input. BENCH_BINS=a,b [BENCH_ROUNDS=N]
# runs each shape with every one of those binaries in turn, N times (see bench.py).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_python
bench_loglake
with_stack "$PY" "$ROOT/scripts/bench.py"
