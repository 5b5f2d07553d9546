#!/usr/bin/env python3
"""Query benchmark. Not a test: it prints numbers and never fails on them.

Tables shaped like ingest's (partitioned by host, date, hour; rows sorted by timestamp) are
written by an independent writer (Python deltalake) into a local-directory lake:
`day_logs` (1 day), `month_logs` (30 days) and `db_logs` (1 day, a second topic). Each query
runs through a real `loglake serve` (HTTP, JSON answer, wall time at the client) and through
DuckDB in-process over the same Parquet files (`read_parquet(..., hive_partitioning)`),
BENCH_REPEAT times each; the medians and their ratio are printed. Then the one-hour,
one-host query on the 1-day and the 30-day archive, through the service.
"""
import collections
import datetime
import json
import os
import random
import re
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import duckdb
import pyarrow as pa
from deltalake import write_deltalake

BIN = os.environ["LOGLAKE_BIN"]
HOSTS = int(os.environ.get("BENCH_HOSTS", "10"))
DAY_ROWS = int(os.environ.get("BENCH_DAY_ROWS", "2000"))
MONTH_ROWS = int(os.environ.get("BENCH_MONTH_ROWS", "100"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
START = datetime.datetime(2026, 2, 1, tzinfo=datetime.timezone.utc)
WORDS = ("connection accepted from client session opened closed timeout while reading block "
         "replica packet responder terminating served request user login failed retry backoff "
         "disk flush checkpoint commit").split()
TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([("timestamp", TS, False), ("level", pa.string()), ("message", pa.string()),
                    ("attributes", pa.string()), ("_kafka_partition", pa.int32(), False),
                    ("_kafka_offset", pa.int64(), False), ("_kafka_timestamp", TS),
                    ("host", pa.string(), False), ("date", pa.string(), False), ("hour", pa.string(), False)])


def write_table(path, days, per_hour, seed):
    rng = random.Random(seed)
    offsets = collections.Counter()
    for day in range(days):
        cols = collections.defaultdict(list)
        for h in range(24):
            base = START + datetime.timedelta(days=day, hours=h)
            for host in range(HOSTS):
                step = 3600 / per_hour
                for i in range(per_hour):
                    t = base + datetime.timedelta(seconds=i * step)
                    part = rng.randrange(8)
                    cols["timestamp"].append(t)
                    r = rng.random()
                    cols["level"].append("ERROR" if r < 0.02 * (1 + host % 3) else "WARN" if r < 0.1 else "INFO")
                    cols["message"].append(" ".join(rng.choice(WORDS) for _ in range(8)) + f" id={rng.randrange(10**6)}")
                    cols["attributes"].append(None)
                    cols["_kafka_partition"].append(part)
                    cols["_kafka_offset"].append(offsets[part])
                    offsets[part] += 1
                    cols["_kafka_timestamp"].append(t)
                    cols["host"].append(f"host-{host:02d}")
                    cols["date"].append(base.strftime("%Y-%m-%d"))
                    cols["hour"].append(base.strftime("%H"))
        write_deltalake(path, pa.table(cols, schema=SCHEMA), partition_by=["host", "date", "hour"], mode="append")


class Server:
    def __init__(self, cfg, tmp):
        self.log = open(Path(tmp) / "serve.log", "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LOGLAKE_"))}
        self.proc = subprocess.Popen([BIN, "serve", "--config", str(cfg), "--log", "info"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            m = re.search(r"serving SQL over HTTP addr=(\S+)", (Path(tmp) / "serve.log").read_text())
            if m:
                self.url = f"http://{m.group(1)}/v1/sql"
                return
            time.sleep(0.1)
        raise SystemExit("loglake serve did not start")

    def query(self, sql):
        req = urllib.request.Request(self.url, data=sql.encode(), headers={"Content-Type": "application/sql"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def median_time(f):
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    tmp = tempfile.mkdtemp(prefix="loglake-bench-query-")
    lake = Path(tmp) / "lake"
    t0 = time.time()
    write_table(str(lake / "day_logs"), 1, DAY_ROWS, 1)
    write_table(str(lake / "db_logs"), 1, DAY_ROWS // 4, 2)
    write_table(str(lake / "month_logs"), 30, MONTH_ROWS, 3)
    print(f"tables written in {time.time() - t0:.0f}s: day_logs {24 * HOSTS * DAY_ROWS} rows, "
          f"month_logs {30 * 24 * HOSTS * MONTH_ROWS} rows in {30 * 24 * HOSTS} files", flush=True)
    cfg = Path(tmp) / "loglake.toml"
    cfg.write_text(f'[lake]\nurl = "file://{lake}"\n[serve]\nhttp_listen = "127.0.0.1:0"\n')
    server = Server(cfg, tmp)
    duck = duckdb.connect()
    for t in ["day_logs", "db_logs", "month_logs"]:
        duck.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/**/*.parquet', hive_partitioning = true)")
    duck.execute("CREATE VIEW logs AS " + " UNION ALL ".join(
        f"SELECT *, '{t}' AS topic FROM {t}" for t in ["day_logs", "db_logs", "month_logs"]))
    hour = "timestamp >= '2026-02-01T13:00:00Z' AND timestamp < '2026-02-01T14:00:00Z'"
    queries = [
        ("count per level per hour, one day",
         "SELECT hour, level, count(*) AS n FROM day_logs GROUP BY hour, level ORDER BY hour, level"),
        ("top 10 hosts by errors",
         "SELECT host, count(*) AS n FROM day_logs WHERE level = 'ERROR' GROUP BY host ORDER BY n DESC, host LIMIT 10"),
        ("substring search in message",
         "SELECT count(*) AS n FROM day_logs WHERE message LIKE '%login failed retry%'"),
        ("one host, one hour", f"SELECT * FROM day_logs WHERE host = 'host-03' AND {hour}"),
        ("point lookup by partition/offset",
         "SELECT * FROM day_logs WHERE _kafka_partition = 3 AND _kafka_offset = 12345"),
        ("logs view across topics",
         f"SELECT topic, level, count(*) AS n FROM logs WHERE {hour} GROUP BY topic, level ORDER BY topic, level"),
    ]
    rows = []
    for name, sql in queries:
        a = server.query(sql)
        b = duck.execute(sql).to_arrow_table()
        if a["row_count"] != b.num_rows:
            print(f"warning: {name}: loglake {a['row_count']} rows, DuckDB {b.num_rows}")
        ours = median_time(lambda: server.query(sql))
        peer = median_time(lambda: duck.execute(sql).to_arrow_table())
        rows.append((name, ours, peer))
        print(json.dumps({"query": name, "loglake_s": round(ours, 4), "duckdb_s": round(peer, 4),
                          "ratio": round(ours / peer, 2), "rows": a["row_count"]}), flush=True)
    fixed = median_time(lambda: server.query("SELECT 1"))
    print(json.dumps({"query": "SELECT 1 (fixed cost of a request)", "loglake_s": round(fixed, 4)}), flush=True)
    one = f"SELECT level, count(*) AS n FROM {{t}} WHERE host = 'host-03' AND {hour} GROUP BY level"
    day = median_time(lambda: server.query(one.format(t="day_logs")))
    month = median_time(lambda: server.query(one.format(t="month_logs")))
    server.stop()
    print()
    print(f"{'query':36} {'loglake s':>10} {'DuckDB s':>10} {'ratio':>7}")
    for name, ours, peer in rows:
        print(f"{name:36} {ours:10.4f} {peer:10.4f} {ours / peer:7.2f}")
    print(f"\none host, one hour: 1-day archive {day:.4f}s, 30-day archive {month:.4f}s, "
          f"ratio {month / day:.2f}")


if __name__ == "__main__":
    main()
