#!/usr/bin/env python3
"""Many-topics benchmark. Not a test: it prints numbers and never fails on them.

BENCH_TOPICS (default 200) topics of one partition, five records each, are archived by one
ingest worker (a `topic_pattern` subscription) into an S3 lake; then one `loglake compact`
pass runs over the lake's tables. Prints the worker's CPU-seconds and RSS once every topic's
table has its first commit, and the pass's wall time, CPU-seconds and peak RSS: what a lake
of many small topics costs per topic.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

BIN = os.environ["LOGLAKE_BIN"]
BROKERS = os.environ["LOGLAKE_KAFKA_BROKERS"]
S3 = os.environ["LOGLAKE_S3_ENDPOINT"]
TOPICS = int(os.environ.get("BENCH_TOPICS", "200"))
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGLAKE_"))}


def cpu_and_rss(pid):
    ticks = Path(f"/proc/{pid}/stat").read_text().split()
    cpu = (int(ticks[13]) + int(ticks[14])) / os.sysconf("SC_CLK_TCK")
    hwm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return cpu, int(hwm.split()[1]) / 1024


def main():
    tmp = Path(tempfile.mkdtemp(prefix="loglake-bench-topics-"))
    run = uuid.uuid4().hex[:6]
    topics = [f"bt-{run}-{i:05d}" for i in range(TOPICS)]
    admin = AdminClient({"bootstrap.servers": BROKERS})
    for f in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]).values():
        f.result(60)
    producer = Producer({"bootstrap.servers": BROKERS, "linger.ms": 5})
    for t in topics:
        for i in range(5):
            record = {"timestamp": "2026-03-11T00:00:00Z", "host": "h", "message": f"m{i}"}
            producer.produce(t, key=b"h", value=json.dumps(record).encode())
        producer.poll(0)
    assert producer.flush(60) == 0, "broker did not acknowledge every record"

    cfg = tmp / "loglake.toml"
    cfg.write_text(f'[lake]\nurl = "s3://loglake/bench-topics-{run}"\n[lake.s3]\nendpoint = "{S3}"\n'
                   f'region = "us-east-1"\naccess_key_id = "testing"\nsecret_access_key = "testing"\nallow_http = true\n'
                   f'[kafka]\nbrokers = "{BROKERS}"\ngroup_id = "bench-topics-{run}"\ntopic_pattern = "^bt-{run}-.*"\n'
                   f'[kafka.options]\n"session.timeout.ms" = "6000"\n'
                   f'[ingest]\nmax_latency = "2s"\nmetrics_listen = "off"\nschemas_dir = "{tmp}/no-schemas"\n'
                   f'[compactor]\nmetrics_listen = "off"\n')
    log = tmp / "ingest.log"
    t0 = time.time()
    worker = subprocess.Popen([BIN, "ingest", "--config", str(cfg), "--log", "info"], env=ENV,
                              stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        tables = set()
        while len(tables) < TOPICS:
            if time.time() - t0 > 900 or worker.poll() is not None:
                sys.exit(f"ingest did not commit every topic ({len(tables)}/{TOPICS}); see {log}")
            time.sleep(1)
            tables = {line.split("table=")[1].split()[0] for line in log.read_text().splitlines()
                      if " committed " in line and "table=" in line}
        ingest_s = time.time() - t0
        ingest_cpu, ingest_rss = cpu_and_rss(worker.pid)
    finally:
        worker.terminate()
        worker.wait(60)

    t0 = time.time()
    p = subprocess.Popen([BIN, "compact", "--config", str(cfg), "--log", "warn"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    out = p.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"compact failed:\n{p.stderr.read()[-3000:]}")
    result = {
        "topics": TOPICS,
        "ingest_s_to_commit_all": round(ingest_s, 1), "ingest_cpu_s": round(ingest_cpu, 2),
        "ingest_peak_rss_mib": round(ingest_rss),
        "compact_wall_s": round(time.time() - t0, 2), "compact_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "compact_peak_rss_mib": round(usage.ru_maxrss / 1024), "compact_summary": out.strip().splitlines()[-1],
    }
    print(json.dumps(result), flush=True)
    print(f"{TOPICS} topics: ingest {result['ingest_cpu_s']} CPU-s, peak RSS {result['ingest_peak_rss_mib']} MiB "
          f"({result['ingest_s_to_commit_all']} s until every table committed); one compaction pass "
          f"{result['compact_wall_s']} s wall, {result['compact_cpu_s']} CPU-s, peak RSS {result['compact_peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
