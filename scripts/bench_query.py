#!/usr/bin/env python3
"""Query benchmark. Not a test: it prints numbers and never fails on them.

Tables shaped like ingest's (partitioned by host, date, hour; rows sorted by timestamp) are
written by an independent writer (Python deltalake) into a local-directory lake:
`day_logs` (1 day), `month_logs` (30 days) and `db_logs` (1 day, a second topic), each
checkpointed as loglake keeps its tables. Each query
runs through a real `loglake serve` (HTTP, JSON answer, wall time at the client) and through
DuckDB in-process over the same Parquet files (`read_parquet(..., hive_partitioning)`),
BENCH_REPEAT times each; the medians and their ratio are printed. Then the one-hour,
one-host query on the 1-day and the 30-day archive, through the service. Then the BI
protocols: the same queries over the Postgres wire protocol (psycopg) and Arrow Flight SQL
(ADBC) against the HTTP API, and a 1M-row answer streamed over each protocol with the
service's peak RSS during the transfer (sampled from /proc every 20 ms).
"""
import atexit
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

import threading

import adbc_driver_flightsql.dbapi as flight_sql
import duckdb
import psycopg
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

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
        atexit.register(self.proc.kill)  # a failed run leaves no service behind
        for _ in range(300):
            text = (Path(tmp) / "serve.log").read_text()
            m = re.search(r"serving SQL over HTTP addr=(\S+)", text)
            if m:
                self.url = f"http://{m.group(1)}/v1/sql"
                pg = re.search(r"the Postgres wire protocol addr=(\S+)", text).group(1).rsplit(":", 1)
                self.pg = (pg[0], int(pg[1]))
                self.flight = "grpc://" + re.search(r"Arrow Flight SQL addr=(\S+)", text).group(1)
                return
            time.sleep(0.1)
        raise SystemExit("loglake serve did not start")

    def rss_mib(self):
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def peak_rss_during(self, f):
        """(f's result, the service's peak RSS in MiB while f ran)."""
        peak, done = [self.rss_mib()], threading.Event()

        def sample():
            while not done.wait(0.02):
                peak.append(self.rss_mib())
        t = threading.Thread(target=sample)
        t.start()
        try:
            out = f()
        finally:
            done.set()
            t.join()
        return out, max(peak)

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
    # As loglake keeps its tables (ingest and the compactor checkpoint the log): without a
    # checkpoint every query's refresh replays the 30 commits since the first one.
    for t in ["day_logs", "db_logs", "month_logs"]:
        DeltaTable(str(lake / t)).create_checkpoint()
    print(f"tables written in {time.time() - t0:.0f}s: day_logs {24 * HOSTS * DAY_ROWS} rows, "
          f"month_logs {30 * 24 * HOSTS * MONTH_ROWS} rows in {30 * 24 * HOSTS} files", flush=True)
    cfg = Path(tmp) / "loglake.toml"
    cfg.write_text(f'[lake]\nurl = "file://{lake}"\n[serve]\nhttp_listen = "127.0.0.1:0"\n'
                   f'pg_listen = "127.0.0.1:0"\nflight_listen = "127.0.0.1:0"\n')
    server = Server(cfg, tmp)
    duck = duckdb.connect()
    for t in ["day_logs", "db_logs", "month_logs"]:
        duck.execute(f"CREATE VIEW {t} AS SELECT * FROM read_parquet('{lake}/{t}/host=*/**/*.parquet', hive_partitioning = true)")
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
    protocols = bench_protocols(server, queries)
    server.stop()
    print()
    print(f"{'query':36} {'loglake s':>10} {'DuckDB s':>10} {'ratio':>7}")
    for name, ours, peer in rows:
        print(f"{name:36} {ours:10.4f} {peer:10.4f} {ours / peer:7.2f}")
    print(f"\none host, one hour: 1-day archive {day:.4f}s, 30-day archive {month:.4f}s, "
          f"ratio {month / day:.2f}")
    print(f"\n{'query (BI protocols)':36} {'HTTP s':>8} {'pg s':>8} {'ratio':>6} {'Flight s':>9} {'ratio':>6}")
    for name, http, pg, fl in protocols["queries"]:
        print(f"{name:36} {http:8.4f} {pg:8.4f} {pg / http:6.2f} {fl:9.4f} {fl / http:6.2f}")
    print(f"\n1M rows streamed (timestamp, host, level, message), the service's peak RSS:")
    for name, seconds, rss, n in protocols["large"]:
        print(f"  {name:28} {seconds:7.2f}s {n / seconds / 1e3:8.0f}k rows/s  peak RSS {rss:6.0f} MiB")


def bench_protocols(server, queries):
    """The same queries over HTTP (JSON), Postgres wire (psycopg) and Flight SQL (ADBC), and a
    1M-row answer streamed over each."""
    host, port = server.pg
    pg = psycopg.connect(host=host, port=port, user="bench", password="", dbname="loglake",
                         sslmode="disable", autocommit=True)
    fl = flight_sql.connect(server.flight)
    fl_cur = fl.cursor()

    def via_flight(sql):
        fl_cur.execute(sql)
        return fl_cur.fetch_arrow_table()

    out = {"queries": [], "large": []}
    for name, sql in queries:
        http = median_time(lambda: server.query(sql))
        p = median_time(lambda: pg.execute(sql).fetchall())
        f = median_time(lambda: via_flight(sql))
        out["queries"].append((name, http, p, f))
        print(json.dumps({"query": name, "http_s": round(http, 4), "postgres_s": round(p, 4),
                          "flight_sql_s": round(f, 4)}), flush=True)
    big = "SELECT timestamp, host, level, message FROM logs LIMIT 1000000"

    def http_arrow():
        req = urllib.request.Request(server.url, data=big.encode(), headers={
            "Content-Type": "application/sql", "Accept": "application/vnd.apache.arrow.stream"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return pa.ipc.open_stream(r).read_all().num_rows

    def http_ndjson():
        req = urllib.request.Request(server.url, data=big.encode(), headers={
            "Content-Type": "application/sql", "Accept": "application/x-ndjson"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return sum(1 for _ in r) - 1

    def postgres():
        n = 0
        with pg.cursor() as cur:
            cur.execute(big)
            while rows := cur.fetchmany(10000):
                n += len(rows)
        return n

    def flight():
        fl_cur.execute(big)
        return sum(b.num_rows for b in fl_cur.fetch_record_batch())

    for name, f in [("HTTP (Arrow stream)", http_arrow), ("HTTP (NDJSON)", http_ndjson),
                    ("Postgres wire (psycopg)", postgres), ("Flight SQL (ADBC)", flight)]:
        t0 = time.perf_counter()
        n, rss = server.peak_rss_during(f)
        seconds = time.perf_counter() - t0
        out["large"].append((name, seconds, rss, n))
        print(json.dumps({"large_answer": name, "rows": n, "seconds": round(seconds, 2),
                          "peak_rss_mib": round(rss)}), flush=True)
    fl_cur.close()
    fl.close()
    pg.close()
    return out


if __name__ == "__main__":
    main()
