#!/usr/bin/env python3
"""Compaction benchmark. Not a test: it prints numbers and never fails on them.

Generated JSON logs (5 hosts, one closed hour each) are fed in waves; two ingest workers in
two consumer groups archive them into two S3 lakes, one flush per wave, so both tables hold
the same many small files. Then:

- `loglake compact` runs on lake A: MB of input Parquet per CPU-second, peak RSS, files
  before/after, answers checked unchanged; then a pass with nothing left to merge, whose CPU
  is the fixed cost of a pass, so the merge's own rate is shown too;
- the peer, delta-rs's own `optimize.compact()` (Python deltalake, same target size), runs on
  lake B in the same run;
- a second peer, DuckDB, rewrites the same input files (downloaded from lake A before the
  compaction, so it reads local files: the easier job) into one file per partition, sorted
  by timestamp, zstd level 1, 128 Ki-row row groups: what decoding and re-encoding these
  files costs in an engine built for it (its CPU counts the COPY statements only);
- two typical queries (count per level over one host-day; a one-hour time range) are timed
  with `loglake query` on lake A before and after compaction (median of 3, wall time
  including the process start and the table open).

Output: one JSON object per line, then a table.
"""
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ["LOGLAKE_BIN"]
BROKERS = os.environ["LOGLAKE_KAFKA_BROKERS"]
S3 = os.environ["LOGLAKE_S3_ENDPOINT"]
RECORDS = int(os.environ.get("BENCH_RECORDS", "600000"))
WAVES = int(os.environ.get("BENCH_WAVES", "40"))
# Ingest's flush interval: one file per host per wave needs it longer than feeding one wave.
MAX_LATENCY = os.environ.get("BENCH_MAX_LATENCY", "1s")
TARGET = "256MiB"
STORAGE = {"AWS_ENDPOINT_URL": S3, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_ALLOW_HTTP": "true"}
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGLAKE_"))}


def config(tmp, name, topic):
    cfg = Path(tmp) / f"{name}.toml"
    cfg.write_text(f'[lake]\nurl = "s3://loglake/{name}"\n[lake.s3]\nendpoint = "{S3}"\nregion = "us-east-1"\n'
                   f'access_key_id = "testing"\nsecret_access_key = "testing"\nallow_http = true\n'
                   f'[kafka]\nbrokers = "{BROKERS}"\ngroup_id = "{name}"\ntopics = ["{topic}"]\n'
                   f'[kafka.options]\n"session.timeout.ms" = "6000"\n'
                   f'[ingest]\nmax_latency = "{MAX_LATENCY}"\nmetrics_listen = "off"\nschemas_dir = "{tmp}/no-schemas"\n'
                   f'[compactor]\ntarget_file_size = "{TARGET}"\ngrace = "1m"\nmetrics_listen = "off"\n')
    return cfg


def query(cfg, sql):
    out = subprocess.run([BIN, "query", "--config", str(cfg), "--log", "error", "--format", "json", sql],
                         env=ENV, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def count(cfg, table):
    try:
        return query(cfg, f"SELECT count(*) AS n FROM {table}")[0]["n"]
    except subprocess.CalledProcessError:
        return 0


def timed(cfg, sql):
    times = []
    for _ in range(3):
        t0 = time.time()
        query(cfg, sql)
        times.append(time.time() - t0)
    return round(statistics.median(times), 3)


def table_files(name, topic):
    from deltalake import DeltaTable
    import pyarrow as pa
    adds = pa.table(DeltaTable(f"s3://loglake/{name}/{topic}", storage_options=STORAGE).get_add_actions(flatten=True))
    return adds.num_rows, sum(adds["size_bytes"].to_pylist())


def run_measured(argv, tmp):
    """Runs argv to completion; returns (wall s, CPU s, peak RSS MiB, stdout) of that process
    alone (os.wait4 gives the child's own resource usage)."""
    out_path, err_path = Path(tmp) / "measured.out", Path(tmp) / "measured.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        t0 = time.time()
        p = subprocess.Popen(argv, env=ENV, stdout=out, stderr=err)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.time() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{argv[0]} failed:\n{err_path.read_text()[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out_path.read_text()


DUCKDB_PEER = """
import duckdb, json, os, resource, sys, time
src, out = sys.argv[1], sys.argv[2]
parts = sorted({os.path.dirname(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs if f.endswith(".parquet")})
con = duckdb.connect()
t0 = time.process_time()
for i, p in enumerate(parts):
    con.execute(f"COPY (SELECT * FROM read_parquet('{p}/*.parquet') ORDER BY timestamp) TO '{out}/{i}.parquet' "
                "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 131072)")
print(json.dumps({"cpu_s": time.process_time() - t0, "partitions": len(parts),
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def download_live_files(name, topic, dest):
    """Copies the table's live files to dest, partition directories kept; returns their bytes."""
    from deltalake import DeltaTable
    import pyarrow.fs as pafs
    s3 = pafs.S3FileSystem(endpoint_override=S3, scheme="http", access_key="testing", secret_key="testing",
                           region="us-east-1")
    total = 0
    for uri in DeltaTable(f"s3://loglake/{name}/{topic}", storage_options=STORAGE).file_uris():
        rel = uri.split(f"/{topic}/", 1)[1]
        local = Path(dest) / rel
        local.parent.mkdir(parents=True, exist_ok=True)
        with s3.open_input_stream(uri.removeprefix("s3://")) as f:
            data = f.read()
        local.write_bytes(data)
        total += len(data)
    return total


def main():
    tmp = tempfile.mkdtemp(prefix="loglake-bench-compact-")
    topic = f"bench-compact-{uuid.uuid4().hex[:6]}"
    table = topic.replace("-", "_")
    a, b = f"bench-a-{uuid.uuid4().hex[:6]}", f"bench-b-{uuid.uuid4().hex[:6]}"
    cfg_a, cfg_b = config(tmp, a, topic), config(tmp, b, topic)
    workers = [subprocess.Popen([BIN, "ingest", "--config", str(c), "--log", "warn"], env=ENV,
                                stderr=open(Path(tmp) / f"ingest-{n}.log", "w")) for n, c in ((a, cfg_a), (b, cfg_b))]
    per_wave = RECORDS // WAVES
    sent = 0
    try:
        for k in range(WAVES):
            # Each wave takes the next slice of the hour, as a stream's flushes do: one hour of
            # logs in all, each host's rows in time order across waves.
            start = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc) + k * datetime.timedelta(hours=1) / WAVES
            out = subprocess.run([sys.executable, str(ROOT / "scripts" / "feed.py"), "--brokers", BROKERS, "--topic", topic,
                                  "--partitions", "4", "--base", start.isoformat(), "--span", str(3600 / WAVES),
                                  "--count", str(per_wave), "generate"],
                                 check=True, capture_output=True, text=True)
            sent += json.loads(out.stdout)["records"]
            for cfg in (cfg_a, cfg_b):
                deadline = time.time() + 300
                while count(cfg, table) != sent:
                    if time.time() > deadline:
                        sys.exit("ingest did not catch up")
                    time.sleep(0.3)
    finally:
        for w in workers:
            w.terminate()
            w.wait(60)

    files_before, bytes_before = table_files(a, topic)
    per_level = f"SELECT level, count(*) AS n FROM {table} WHERE host = 'web-1' AND date = '2026-01-02' GROUP BY level ORDER BY level"
    one_hour = (f"SELECT count(*) AS n FROM {table} WHERE timestamp >= '2026-01-02T00:00:00Z' "
                f"AND timestamp < '2026-01-02T01:00:00Z'")
    before = {"per_level_s": timed(cfg_a, per_level), "one_hour_s": timed(cfg_a, one_hour)}
    answers = (query(cfg_a, per_level), query(cfg_a, one_hour))

    duck_in, duck_out = Path(tmp) / "duckdb-in", Path(tmp) / "duckdb-out"
    duck_out.mkdir()
    duck_bytes = download_live_files(a, topic, duck_in)

    wall, cpu, rss, _ = run_measured([BIN, "compact", "--config", str(cfg_a), "--log", "info"], tmp)
    shutil.copy(Path(tmp) / "measured.err", Path(tmp) / "compact.log")
    files_after, bytes_after = table_files(a, topic)
    # A pass with nothing to merge costs what every pass costs (start-up, listing, the vacuum
    # listing, checkpoint check): what is left of the first pass is the merging itself.
    _, idle_cpu, _, _ = run_measured([BIN, "compact", "--config", str(cfg_a), "--log", "warn"], tmp)
    after = {"per_level_s": timed(cfg_a, per_level), "one_hour_s": timed(cfg_a, one_hour)}
    assert (query(cfg_a, per_level), query(cfg_a, one_hour)) == answers, "answers changed"
    assert count(cfg_a, table) == sent
    results = [{
        "system": "loglake compact", "records": sent, "files_before": files_before, "files_after": files_after,
        "input_mb": round(bytes_before / 1e6, 1), "output_mb": round(bytes_after / 1e6, 1), "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2), "mb_per_cpu_s": round(bytes_before / 1e6 / cpu, 1), "peak_rss_mib": round(rss),
        "idle_pass_cpu_s": round(idle_cpu, 2),
        "merge_mb_per_cpu_s": round(bytes_before / 1e6 / max(cpu - idle_cpu, 1e-3), 1),
        "query_before": before, "query_after": after,
        "speedup_per_level": round(before["per_level_s"] / after["per_level_s"], 1),
        "speedup_one_hour": round(before["one_hour_s"] / after["one_hour_s"], 1),
    }]
    print(json.dumps(results[-1]), flush=True)
    print(f"compaction log: {Path(tmp) / 'compact.log'}", flush=True)

    peer = (f"import deltalake; t = deltalake.DeltaTable('s3://loglake/{b}/{topic}', storage_options={STORAGE!r}); "
            f"t.optimize.compact(target_size=256 * 1024 * 1024)")
    pb_files, pb_bytes = table_files(b, topic)
    wall, cpu, peer_rss, _ = run_measured([sys.executable, "-c", peer], tmp)
    pa_files, pa_bytes = table_files(b, topic)
    results.append({
        "system": "delta-rs optimize.compact (peer, python deltalake)", "records": sent, "files_before": pb_files,
        "files_after": pa_files, "input_mb": round(pb_bytes / 1e6, 1), "output_mb": round(pa_bytes / 1e6, 1),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "mb_per_cpu_s": round(pb_bytes / 1e6 / cpu, 1),
        "peak_rss_mib": round(peer_rss), "note": "does not sort by timestamp; no txn fence",
    })
    print(json.dumps(results[-1]), flush=True)

    wall, _, _, out = run_measured([sys.executable, "-c", DUCKDB_PEER, str(duck_in), str(duck_out)], tmp)
    duck = json.loads(out)
    out_files = list(duck_out.glob("*.parquet"))
    results.append({
        "system": "DuckDB COPY ... ORDER BY timestamp (peer, local)", "records": sent,
        "files_before": files_before, "files_after": len(out_files), "input_mb": round(duck_bytes / 1e6, 1),
        "output_mb": round(sum(f.stat().st_size for f in out_files) / 1e6, 1), "wall_s": round(wall, 2),
        "cpu_s": round(duck["cpu_s"], 2), "mb_per_cpu_s": round(duck_bytes / 1e6 / duck["cpu_s"], 1),
        "peak_rss_mib": round(duck["rss_mib"]),
        "note": "reads local copies of lake A's files; CPU of the COPY statements only; no Delta commit",
    })
    print(json.dumps(results[-1]), flush=True)
    print()
    print(f"{'system':52} {'files':>11} {'MB in':>7} {'MB/cpu-s':>9} {'RSS MiB':>8}")
    for r in results:
        print(f"{r['system']:52} {r['files_before']:>5}->{r['files_after']:<5} {r['input_mb']:>7} "
              f"{r['mb_per_cpu_s']:>9} {r['peak_rss_mib']:>8}")
    r = results[0]
    print(f"queries on lake A, before -> after compaction: per level over a host-day "
          f"{r['query_before']['per_level_s']}s -> {r['query_after']['per_level_s']}s ({r['speedup_per_level']}x); "
          f"one-hour range {r['query_before']['one_hour_s']}s -> {r['query_after']['one_hour_s']}s ({r['speedup_one_hour']}x)")


if __name__ == "__main__":
    main()
