#!/usr/bin/env python3
"""Traces one ingest worker's RSS over time, next to its commits. Not a test.

Feeds the loghub records (BENCH_REPEAT passes; RSS_HOSTS: empty for the samples' own hosts,
a number of hosts, or `uuid` for a topic keyed by UUIDs with no host field) to a new topic,
runs one `loglake ingest` worker on a local lake, configured as the benchmark's are
(`bench.ingest_config`), for RSS_SECS seconds, and prints a line whenever RSS moved by 15 MiB
and one per commit (rows, files). Shows where a worker's memory goes between and during
flushes, e.g. that it grows with the files its tables hold (ARCHITECTURE.md, memory).
RSS_LAKE (a local lake directory) and RSS_TOPIC start the worker on a table that already
exists there, e.g. one aged by `cargo run --release --example open_cost`.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the feeding and the config shape are the benchmark's)


def main():
    hosts = os.environ.get("RSS_HOSTS") or None
    secs = float(os.environ.get("RSS_SECS", "60"))
    tmp = tempfile.mkdtemp(prefix="loglake-rss-")
    topic = os.environ.get("RSS_TOPIC") or f"rss-{uuid.uuid4().hex[:6]}"
    lake = os.environ.get("RSS_LAKE") or f"{tmp}/lake"
    fed = bench.feed(topic, None, "none", hosts)
    print(f"fed {fed['records']} records, {fed['bytes'] / 1e6:.1f} MB to {topic}", flush=True)
    cfg = Path(tmp) / "rss.toml"
    cfg.write_text(bench.ingest_config(f"file://{lake}", "", f"rss-{topic}", topic, tmp))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGLAKE_"))}
    t0 = time.time()
    p = subprocess.Popen([bench.BIN, "ingest", "--config", str(cfg), "--log", "info"], env=env,
                         stderr=subprocess.PIPE, text=True)

    def commits():
        for line in p.stderr:
            if "committed table=" in line:
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                print(f"{time.time() - t0:7.2f} s  commit  rows={fields.get('rows')} "
                      f"files={fields.get('files')} version={fields.get('version')}", flush=True)

    threading.Thread(target=commits, daemon=True).start()
    last = peak = 0
    while time.time() - t0 < secs and p.poll() is None:
        time.sleep(0.1)
        rss = round(bench.proc_status_mib(p.pid, "VmRSS"))
        peak = round(bench.proc_hwm_mib(p.pid))
        if abs(rss - last) >= 15:
            print(f"{time.time() - t0:7.2f} s  rss {rss} MiB", flush=True)
            last = rss
    p.terminate()
    p.wait(60)
    print(f"peak RSS {peak} MiB (VmHWM; memory_budget {bench.BUDGET_MIB} MiB)")


if __name__ == "__main__":
    main()
