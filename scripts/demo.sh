#!/usr/bin/env bash
# The main job on the embedded default: a local-directory lake plus a local broker.
# Starts the broker, runs an ingest worker, feeds it the loghub samples (JSON, and HDFS as raw
# text lines), waits until every record is archived, prints query answers, and stops.
#   KEEP_STACK=1 scripts/demo.sh   leaves the broker running afterwards
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEMO=${LOGLAKE_DEMO_DIR:-$ROOT/.demo}
LOGHUB=${LOGHUB_DIR:-$ROOT/../shared/loghub}
ensure_python
build_loglake
rm -rf "$DEMO/lake"
mkdir -p "$DEMO"
eval "$("$ROOT/scripts/stack.sh" up "$DEMO/stack")"
INGEST_PID=
cleanup() {
  [ -n "$INGEST_PID" ] && kill "$INGEST_PID" 2>/dev/null && wait "$INGEST_PID" 2>/dev/null || true
  [ "${KEEP_STACK:-0}" = 1 ] || "$ROOT/scripts/stack.sh" down "$DEMO/stack"
}
trap cleanup EXIT

cat > "$DEMO/loglake.toml" <<TOML
[lake]
url = "file://$DEMO/lake"

[kafka]
brokers = "$LOGLAKE_KAFKA_BROKERS"
group_id = "loglake-demo"
topics = ["app-logs", "hdfs"]
[kafka.options]
"session.timeout.ms" = "6000"

[ingest]
max_latency = "2s"
metrics_listen = "127.0.0.1:0"
schemas_dir = "$ROOT/schemas/examples"
TOML

feed() { "$PY" "$ROOT/scripts/feed.py" --brokers "$LOGLAKE_KAFKA_BROKERS" "$@"; }
if [ -d "$LOGHUB" ]; then
  sent=$(feed --topic app-logs loghub "$LOGHUB" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["records"])')
  hdfs=$(feed --topic hdfs --partitions 2 lines "$LOGHUB/HDFS_2k.log" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["records"])')
else
  log "no loghub samples at $LOGHUB: generating records instead"
  sent=$(feed --topic app-logs --count 16000 generate | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["records"])')
  hdfs=0
  feed --topic hdfs --partitions 2 --count 0 generate >/dev/null
fi
log "fed $sent JSON records to app-logs and $hdfs text lines to hdfs"

LOGLAKE_LOG=${LOGLAKE_LOG:-warn,loglake_ingest=info} "$LOGLAKE_BIN" ingest --config "$DEMO/loglake.toml" 2> "$DEMO/ingest.log" &
INGEST_PID=$!
log "ingest running (pid $INGEST_PID, log $DEMO/ingest.log)"

q() { "$LOGLAKE_BIN" query --config "$DEMO/loglake.toml" --log error "$@"; }
# Rows + quarantined records over every table: the records consumed so far.
count() {
  local tables sql
  tables=$("$LOGLAKE_BIN" tables --config "$DEMO/loglake.toml" --log error | cut -f1)
  [ -n "$tables" ] || { echo 0; return; }
  sql=$(printf '(SELECT count(*) FROM %s) + ' $tables)
  q --format csv "SELECT ${sql% + } AS n" 2>/dev/null | tail -n 1
}
want=$((sent + hdfs))
for _ in $(seq 240); do
  have=$(count || true)
  [ "$have" = "$want" ] && break
  kill -0 "$INGEST_PID" 2>/dev/null || { cat "$DEMO/ingest.log" >&2; log "ingest exited early"; exit 1; }
  sleep 0.5
done
[ "$have" = "$want" ] || { tail -n 30 "$DEMO/ingest.log" >&2; log "only $have of $want records archived"; exit 1; }

echo "== $want records archived in $DEMO/lake; tables:"
"$LOGLAKE_BIN" tables --config "$DEMO/loglake.toml" --log error
echo "== records per level (app_logs)"
q "SELECT level, count(*) AS records FROM app_logs GROUP BY level ORDER BY records DESC"
echo "== records per host and hour"
q "SELECT host, date, hour, count(*) AS records, min(timestamp) AS first, max(timestamp) AS last FROM app_logs GROUP BY host, date, hour ORDER BY host, date, hour"
echo "== HDFS text lines parsed by schemas/examples/hdfs.toml: busiest components"
q "SELECT component, level, count(*) AS lines FROM hdfs GROUP BY component, level ORDER BY lines DESC LIMIT 5"
echo "== the latest errors"
q "SELECT timestamp, host, substr(message, 1, 70) AS message FROM app_logs WHERE level = 'ERROR' ORDER BY timestamp DESC LIMIT 5"

kill -TERM "$INGEST_PID"
wait "$INGEST_PID"; status=$?
INGEST_PID=
log "ingest stopped with status $status"
exit $status
