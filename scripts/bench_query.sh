#!/usr/bin/env bash
# Query benchmark (not a test): typical log queries through `loglake serve` and through DuckDB
# over the same Parquet files, in one run, with the ratio; and the one-hour, one-host query on
# a 1-day and a 30-day archive. BENCH_HOSTS (default 10), BENCH_DAY_ROWS (rows per host-hour
# in the 1-day table, default 2000), BENCH_MONTH_ROWS (per host-hour in the 30-day table,
# default 100), BENCH_REPEAT (default 5; the median is printed).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ensure_python
bench_loglake
"$PY" "$ROOT/scripts/bench_query.py"
