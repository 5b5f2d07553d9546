#!/usr/bin/env python3
"""End-to-end ingest benchmark. Not a test: it prints numbers and never fails on them.

Feeds JSON logs built from the loghub samples through the broker, runs one `loglake ingest`
worker per lake kind (local directory, S3) until every record is queryable, and reports
records/s, MB/s of raw JSON per core of ingest CPU time, peak RSS against the memory budget,
and stored bytes against raw bytes. Those runs feed uncompressed record batches; one more run
per producer codec in BENCH_CODECS (on the first lake kind) feeds the same records compressed,
so its ingest CPU includes decompressing them (raw MB are still the uncompressed JSON bytes).
A peer runs in the same pass on the same records: DuckDB converting the NDJSON to zstd Parquet
(its `read_json_auto` + `COPY`), as a JSON -> Parquet baseline. BENCH_HOSTS (default
`1000,uuid`) adds a run per host shape on the first lake kind: 1,000 distinct hosts, and a
topic keyed by UUIDs with no host field; the table shows each local run's data files per flush
(commit). Output: one JSON object per line, then a table.

To compare builds: BENCH_BINS=a,b (paths of kept `loglake` binaries) runs every shape with each
of them in turn on the same stack and the same fed topic (a consumer group per run), and
BENCH_ROUNDS=N repeats that N times, DuckDB once per round; the table then names the build of
each line and rates every line against the median DuckDB figure. One build's figure moves by
up to a third between runs on a shared machine, so only interleaved runs compare.
"""
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ["LOGLAKE_BIN"]
BINS = [b for b in os.environ.get("BENCH_BINS", "").split(",") if b] or [BIN]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
BROKERS = os.environ["LOGLAKE_KAFKA_BROKERS"]
S3 = os.environ["LOGLAKE_S3_ENDPOINT"]
REPEAT = int(os.environ.get("BENCH_REPEAT", "40"))
# BENCH_KINDS=file runs only the local-directory lake.
# BENCH_CODECS: producer codecs (feed.py --compression) measured in one extra run each on the
# first of BENCH_KINDS; BENCH_CODECS= (empty) skips those runs.
# BENCH_HOSTS: host shapes measured in one extra run each on the first of BENCH_KINDS
# (uncompressed): N distinct hosts, or "uuid" (no host field, a new UUID key per record, so
# every record would be its own partition); empty skips them.
HOSTS = [h for h in os.environ.get("BENCH_HOSTS", "1000,uuid").split(",") if h]
CODECS = [c for c in os.environ.get("BENCH_CODECS", "zstd,lz4").split(",") if c and c != "none"]
if set(CODECS) - {"gzip", "snappy", "lz4", "zstd"}:
    sys.exit(f"BENCH_CODECS: unknown codec in {CODECS} (gzip, snappy, lz4, zstd)")
BUDGET_MIB = int(os.environ.get("BENCH_BUDGET_MIB", "256"))
# Extra librdkafka settings for the ingest runs ("key=value,key=value"): to compare tunings.
KAFKA_OPTIONS = "".join(f'"{k.strip()}" = "{v.strip()}"\n' for k, v in
                        (kv.split("=", 1) for kv in os.environ.get("BENCH_KAFKA_OPTIONS", "").split(",") if kv))
LOGHUB = os.environ.get("LOGHUB_DIR", str(ROOT.parent / "shared" / "loghub"))
CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_status_mib(pid, field):
    """A memory figure of /proc/PID/status (VmRSS: now, VmHWM: the peak), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def proc_hwm_mib(pid):
    return proc_status_mib(pid, "VmHWM")


def ingest_config(url, s3, group, topic, tmp):
    """The benchmark's ingest worker: one topic, `max_latency` 5s, BENCH_BUDGET_MIB, no schema
    files, BENCH_KAFKA_OPTIONS."""
    return (f'[lake]\nurl = "{url}"\n{s3}[kafka]\nbrokers = "{BROKERS}"\ngroup_id = "{group}"\n'
            f'topics = ["{topic}"]\n[kafka.options]\n"session.timeout.ms" = "6000"\n{KAFKA_OPTIONS}'
            f'[ingest]\nmax_latency = "5s"\nmemory_budget = "{BUDGET_MIB}MiB"\nmetrics_listen = "off"\n'
            f'schemas_dir = "{tmp}/no-schemas"\n')


def feed(topic, dump, codec, hosts=None):
    src = ["loghub", LOGHUB, "--repeat", str(REPEAT)] if os.path.isdir(LOGHUB) else ["generate", "--count", str(16000 * REPEAT)]
    opts = (["--dump", dump] if dump else []) + (["--hosts", hosts] if hosts else [])
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "feed.py"), "--brokers", BROKERS, "--topic", topic,
                          "--partitions", "4", "--compression", codec, *opts, src[0], *src[1:]],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def stored_bytes(kind, where):
    if kind == "file":
        return sum(f.stat().st_size for f in Path(where).rglob("*") if f.is_file())
    import boto3
    s3 = boto3.client("s3", endpoint_url=S3, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="loglake", Prefix=where):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def files_per_flush(where):
    """Data files each commit of a local lake's data table added: (mean, max) over commits."""
    counts = []
    for log in Path(where).glob("*/_delta_log"):
        if log.parent.name.endswith("__rejected"):
            continue
        for commit in sorted(log.glob("*.json")):
            adds = sum(1 for line in commit.read_text().splitlines() if line.startswith('{"add"'))
            if adds:
                counts.append(adds)
    return (round(sum(counts) / len(counts), 1), max(counts)) if counts else (0, 0)


def run_ingest(kind, codec, topic, records, raw_bytes, tmp, hosts=None, binary=BIN):
    lake_id = uuid.uuid4().hex[:8]
    if kind == "file":
        url, where = f"file://{tmp}/lake-{lake_id}", f"{tmp}/lake-{lake_id}"
        s3 = ""
    else:
        url, where = f"s3://loglake/bench-{lake_id}", f"bench-{lake_id}/"
        s3 = f'[lake.s3]\nendpoint = "{S3}"\nregion = "us-east-1"\naccess_key_id = "testing"\nsecret_access_key = "testing"\nallow_http = true\n'
    cfg = Path(tmp) / f"bench-{lake_id}.toml"
    cfg.write_text(ingest_config(url, s3, f"bench-{lake_id}", topic, tmp))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGLAKE_"))}
    log = open(Path(tmp) / f"ingest-{lake_id}.log", "w")
    t0 = time.time()
    p = subprocess.Popen([binary, "ingest", "--config", str(cfg), "--log", "warn"], env=env, stderr=log)
    table = topic.replace("-", "_")
    cpu = hwm = 0.0
    while True:
        time.sleep(1)
        if p.poll() is not None:
            sys.exit(f"ingest exited early: see {log.name}")
        cpu, hwm = proc_cpu(p.pid), proc_hwm_mib(p.pid)
        q = subprocess.run([binary, "query", "--config", str(cfg), "--log", "error", "--format", "csv",
                            f"SELECT count(*) FROM {table}"], env=env, capture_output=True, text=True)
        if q.returncode == 0 and q.stdout.split()[-1] == str(records):
            break
        if time.time() - t0 > 1800:
            sys.exit("benchmark timed out")
    wall = time.time() - t0
    # Sample again now that every record is committed: the last flush may have run after the
    # sample taken before the query (the worker is idle from here, so nothing extra is counted).
    cpu, hwm = proc_cpu(p.pid), proc_hwm_mib(p.pid)
    p.terminate()
    p.wait(60)
    stored = stored_bytes(kind, where)
    shape = f", {hosts} hosts" if hosts and hosts != "uuid" else ", UUID keys as hosts" if hosts else ""
    mean_files, max_files = files_per_flush(where) if kind == "file" else (None, None)
    build = f" [{Path(binary).name}]" if len(BINS) > 1 else ""
    return {
        "system": f"loglake ingest ({kind} lake{'' if codec == 'none' else f', {codec} producer'}{shape}){build}",
        "files_per_flush_mean": mean_files, "files_per_flush_max": max_files,
        "compression": codec, "records": records, "raw_mb": round(raw_bytes / 1e6, 1),
        "wall_s": round(wall, 2), "records_per_s": round(records / wall), "cpu_s": round(cpu, 2),
        "mb_per_cpu_s": round(raw_bytes / 1e6 / cpu, 1), "peak_rss_mib": round(hwm),
        "rss_limit_mib": BUDGET_MIB + 128, "stored_mb": round(stored / 1e6, 1),
        "stored_pct_of_raw": round(100 * stored / raw_bytes, 1),
        "note": "wall includes consumer-group join and the final max_latency wait",
    }


def run_duckdb(dump, records, raw_bytes, tmp):
    out = Path(tmp) / "duckdb.parquet"
    code = (f"import duckdb, resource; duckdb.sql(\"COPY (SELECT * FROM read_json_auto('{dump}', format='newline_delimited')) "
            f"TO '{out}' (FORMAT parquet, COMPRESSION zstd)\"); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    maxrss_kib = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()[-1])
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "system": "duckdb read_json_auto -> zstd parquet (peer)", "records": records, "raw_mb": round(raw_bytes / 1e6, 1),
        "wall_s": round(wall, 2), "records_per_s": round(records / wall), "cpu_s": round(cpu, 2),
        "mb_per_cpu_s": round(raw_bytes / 1e6 / cpu, 1), "peak_rss_mib": round(maxrss_kib / 1024),
        "stored_mb": round(out.stat().st_size / 1e6, 1), "stored_pct_of_raw": round(100 * out.stat().st_size / raw_bytes, 1),
    }


def main():
    tmp = tempfile.mkdtemp(prefix="loglake-bench-")
    results = []
    kinds = os.environ.get("BENCH_KINDS", "file,s3").split(",")
    # Uncompressed batches on every lake kind; each codec on the first kind, right after it.
    runs = [(kind, "none", None) for kind in kinds]
    runs[1:1] = [(kinds[0], codec, None) for codec in CODECS] + [(kinds[0], "none", h) for h in HOSTS]
    dump = dumped = None
    for kind, codec, hosts in runs:
        topic = f"bench-{kind}-{codec}-{uuid.uuid4().hex[:6]}"
        # Every run feeds the same records (but for their hosts); the first one also writes
        # them out for DuckDB.
        fed = feed(topic, None if dump else str(Path(tmp) / f"{topic}.ndjson"), codec, hosts)
        if not dump:
            dump, dumped = str(Path(tmp) / f"{topic}.ndjson"), fed
        for _ in range(ROUNDS):
            for binary in BINS:
                results.append(run_ingest(kind, codec, topic, fed["records"], fed["bytes"], tmp, hosts, binary))
                print(json.dumps(results[-1]), flush=True)
    peers = []
    for _ in range(ROUNDS):
        results.append(run_duckdb(dump, dumped["records"], dumped["bytes"], tmp))
        peers.append(results[-1]["mb_per_cpu_s"])
        print(json.dumps(results[-1]), flush=True)
    peer = sorted(peers)[len(peers) // 2]
    width = max(56, *(len(r["system"]) for r in results))
    print()
    print(f"{'system':{width}} {'rec/s':>9} {'MB/cpu-s':>9} {'vs peer':>8} {'RSS MiB':>8} {'stored %':>9} {'files/flush':>12}")
    for r in results:
        files = "" if r.get("files_per_flush_mean") is None else f"{r['files_per_flush_mean']} (max {r['files_per_flush_max']})"
        print(f"{r['system']:{width}} {r['records_per_s']:>9} {r['mb_per_cpu_s']:>9} {r['mb_per_cpu_s'] / peer:>7.2f}x "
              f"{r['peak_rss_mib']:>8} {r['stored_pct_of_raw']:>8}% {files:>12}")
    print(f"(RSS limit: memory_budget + 128 = {BUDGET_MIB + 128} MiB)")


if __name__ == "__main__":
    main()
