"""`loglake serve`: the HTTP SQL API, driven with curl, pyarrow and DuckDB against a real
server over tables ingest wrote on the real S3 server (and, for pruning, a 30-day archive an
independent writer made in a local directory). Answers in every format equal what pyarrow and
DuckDB compute; every error has its status; the sandbox refuses writes and file reads; timed
out, cancelled and abandoned queries stop using CPU; ETags answer 304 until a commit lands."""
import collections
import datetime
import io
import json
import subprocess
import threading
import time
import urllib.parse

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from conftest import Lake, Server, Worker, create_topic, log_record, produce

TOKEN = "e2e-t0ken"
HOSTS = ["web-1", "web-2", "db-1"]
HOURS = ["08", "09", "10", "11"]
N = 2400
SLOW = "SELECT count(*) AS n FROM generate_series(1, 20000000000) AS t(v) WHERE v % 7 = 3"


def records(n, start=0):
    out = []
    for i in range(start, start + n):
        host = HOSTS[i % 3]
        ts = f"2026-03-01T{HOURS[i % 4]}:{(i * 7) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
        level = ["INFO", "WARN", "ERROR"][(i // 3) % 3]
        out.append((i % 2, host.encode(), log_record(ts, host, i, level=level)))
    return out


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory):
    """An S3 lake with `app-logs` (N rows) and `db-logs` (300 rows and 1 quarantined record)
    ingested from Kafka, and a
    server with a token, two query slots and a small per-query memory."""
    tmp = tmp_path_factory.mktemp("serve")
    topics = [f"app-logs-{time.time_ns() % 10**8}", f"db-logs-{time.time_ns() % 10**8}"]
    for t in topics:
        create_topic(stack, t, 2)
    lake = Lake(stack, "s3", topics, tmp, serve={
        "http_listen": "127.0.0.1:0", "tokens": [TOKEN, "second-token"], "max_concurrent_queries": 2,
        "memory_per_query": "24MiB", "query_timeout": "60s", "max_result_rows": 100000})
    produce(stack, topics[0], records(N))
    # A malformed record ahead of db-logs' rows: its quarantine commit lands before theirs.
    produce(stack, topics[1], [(0, b"db-1", b"{not json")] + records(300))
    w = Worker(lake)
    try:
        lake.wait_count(topics[0].replace("-", "_"), N, workers=[w])
        lake.wait_count(topics[1].replace("-", "_"), 300, workers=[w])
    finally:
        assert w.stop() == 0
    server = Server(lake)
    yield lake, server, topics
    server.stop()


def curl(server, path, *args, token=TOKEN, timeout=60):
    """(status, headers dict lowercased, body bytes, curl exit code)."""
    import tempfile
    with tempfile.NamedTemporaryFile() as body, tempfile.NamedTemporaryFile(mode="r") as head:
        cmd = ["curl", "-sS", "-o", body.name, "-D", head.name, "-w", "%{http_code}", "--max-time", str(timeout)]
        if token:
            cmd += ["-H", f"Authorization: Bearer {token}"]
        r = subprocess.run(cmd + list(args) + [server.url + path], capture_output=True, text=True)
        headers = {}
        for line in open(head.name).read().splitlines():
            k, sep, v = line.partition(":")
            if sep:
                headers[k.strip().lower()] = v.strip()
        return int(r.stdout or 0), headers, open(body.name, "rb").read(), r.returncode


def post(server, sql, *args, **kw):
    return curl(server, "/v1/sql", "-X", "POST", "-H", "Content-Type: application/sql", "--data-binary", sql,
                *args, **kw)


def get_sql(server, sql, *args, **kw):
    return curl(server, "/v1/sql?" + urllib.parse.urlencode({"sql": sql, **kw.pop("query", {})}), *args, **kw)


def truth(lake, topic):
    return DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options()).to_pyarrow_table()


def test_every_format_answers_what_pyarrow_and_duckdb_compute(served):
    lake, server, topics = served
    table = topics[0].replace("-", "_")
    arrow_truth = truth(lake, topics[0])
    con = duckdb.connect()
    con.register("t", arrow_truth)
    want = {(h, l): n for h, l, n in con.execute(
        "SELECT host, level, count(*) FROM t GROUP BY 1, 2").fetchall()}
    assert sum(want.values()) == N
    sql = f"SELECT host, level, count(*) AS n FROM {table} GROUP BY host, level ORDER BY host, level"

    status, h, body, _ = post(server, sql)
    assert status == 200, body
    doc = json.loads(body)
    assert [c["name"] for c in doc["columns"]] == ["host", "level", "n"]
    assert {(r["host"], r["level"]): r["n"] for r in doc["rows"]} == want
    assert doc["row_count"] == len(want) and doc["truncated"] is False
    assert h["x-loglake-query-id"] == doc["query_id"]

    status, h, body, _ = post(server, sql, "-H", "Accept: application/x-ndjson")
    assert status == 200 and h["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in body.decode().splitlines()]
    assert lines[-1]["end"]["rows"] == len(want)
    assert {(r["host"], r["level"]): r["n"] for r in lines[:-1]} == want

    status, _, body, _ = get_sql(server, sql, query={"format": "csv"})
    assert status == 200
    rows = body.decode().splitlines()
    assert rows[0] == "host,level,n"
    assert {tuple(r.split(",")[:2]): int(r.split(",")[2]) for r in rows[1:]} == want

    status, h, body, _ = post(server, sql, "-H", "Accept: application/vnd.apache.arrow.stream")
    assert status == 200 and h["content-type"] == "application/vnd.apache.arrow.stream"
    t = pa.ipc.open_stream(body).read_all()
    assert {(r["host"], r["level"]): r["n"] for r in t.to_pylist()} == want

    status, _, body, _ = get_sql(server, sql, query={"format": "parquet"})
    assert status == 200
    t = pq.read_table(io.BytesIO(body))
    assert {(r["host"], r["level"]): r["n"] for r in t.to_pylist()} == want

    # Every column of every row, through Arrow, equals the table an independent reader sees.
    status, _, body, _ = post(server, f"SELECT * FROM {table}", "-H", "Accept: application/vnd.apache.arrow.stream")
    served_rows = pa.ipc.open_stream(body).read_all()
    key = [("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")]
    a = served_rows.sort_by(key).select(arrow_truth.column_names).to_pylist()
    b = arrow_truth.sort_by(key).to_pylist()
    assert a == b

    # JSON timestamps are RFC 3339 UTC; gzip and zstd on request.
    status, _, body, _ = post(server, f"SELECT min(timestamp) AS t FROM {table}")
    assert json.loads(body)["rows"][0]["t"] == "2026-03-01T08:00:00+00:00"
    for enc in ["gzip", "zstd"]:
        status, h, body, _ = post(server, sql, "-H", f"Accept-Encoding: {enc}")
        assert status == 200 and h.get("content-encoding") == enc
    status, h, body, _ = post(server, sql, "--compressed")
    assert json.loads(body)["row_count"] == len(want)


def test_parameters_are_bound_never_spliced(served):
    lake, server, topics = served
    table = topics[0].replace("-", "_")
    body = json.dumps({"sql": f"SELECT count(*) AS n FROM {table} WHERE host = $1 AND timestamp >= $2",
                       "params": ["web-1", "2026-03-01T10:00:00Z"]})
    status, _, out, _ = curl(server, "/v1/sql", "-X", "POST", "-H", "Content-Type: application/json", "-d", body)
    assert status == 200, out
    want = sum(1 for i in range(N) if HOSTS[i % 3] == "web-1" and HOURS[i % 4] in ("10", "11"))
    assert json.loads(out)["rows"][0]["n"] == want
    # A value that would be an injection if spliced is just a string that matches nothing.
    body = json.dumps({"sql": f"SELECT count(*) AS n FROM {table} WHERE host = $h",
                       "params": {"h": "x' OR '1'='1"}})
    status, _, out, _ = curl(server, "/v1/sql", "-X", "POST", "-H", "Content-Type: application/json", "-d", body)
    assert status == 200 and json.loads(out)["rows"][0]["n"] == 0
    body = json.dumps({"sql": f"SELECT count(*) FROM {table} WHERE timestamp > $1", "params": ["not a time"]})
    status, _, out, _ = curl(server, "/v1/sql", "-X", "POST", "-H", "Content-Type: application/json", "-d", body)
    assert status == 400 and json.loads(out)["error"]["code"] == "bad_parameter"


def test_every_error_has_its_status_and_a_json_body(served):
    lake, server, topics = served
    table = topics[0].replace("-", "_")
    big = lake.tmp / "big.sql"
    big.write_text("SELECT 1 -- " + "x" * (1 << 20))
    cases = [
        (post(server, "SELEC 1"), 400, "invalid_sql"),
        (post(server, "SELECT * FROM no_such_table"), 400, "invalid_sql"),
        (post(server, f"SELECT no_such_column FROM {table}"), 400, "invalid_sql"),
        (post(server, "SELECT 1; SELECT 2"), 400, "invalid_sql"),
        (post(server, "SELECT $1 + 1"), 400, "bad_parameter"),
        (post(server, "SELECT 1", token=None), 401, "unauthorized"),
        (post(server, "SELECT 1", token="wrong"), 401, "unauthorized"),
        (post(server, f"DELETE FROM {table}"), 403, "read_only"),
        (post(server, "@" + str(big)), 413, "statement_too_large"),
        (curl(server, "/v1/sql?format=xml", "-X", "POST", "--data-binary", "SELECT 1"), 400, "bad_request"),
    ]
    for (status, h, body, _), want_status, want_code in cases:
        assert status == want_status, (want_code, body[:300])
        err = json.loads(body)["error"]
        assert err["code"] == want_code and err["message"], err
        if status == 401:
            assert TOKEN not in body.decode()
    # The second configured token works too; the probes need none.
    assert post(server, "SELECT 1 AS one", token="second-token")[0] == 200
    for path in ["/healthz", "/readyz", "/metrics", "/v1/openapi.json"]:
        assert curl(server, path, token=None)[0] == 200, path
    spec = json.loads(curl(server, "/v1/openapi.json", token=None)[2])
    assert "/v1/sql" in spec["paths"] and spec["openapi"].startswith("3.")


HOSTILE = [
    "CREATE TABLE t (x INT)",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
    "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://loglake/'",
    "DROP TABLE {t}",
    "DROP VIEW logs",
    "INSERT INTO {t} SELECT * FROM {t}",
    "DELETE FROM {t}",
    "UPDATE {t} SET level = 'x'",
    "TRUNCATE {t}",
    "COPY {t} TO '/tmp/loglake-pwned.csv'",
    "COPY (SELECT 1) TO '/tmp/loglake-pwned.parquet' STORED AS PARQUET",
    "EXPLAIN ANALYZE INSERT INTO {t} SELECT * FROM {t}",
    "SET datafusion.execution.batch_size = 1",
    "SET datafusion.runtime.memory_limit = '100G'",
    "PREPARE p AS SELECT 1",
    "BEGIN TRANSACTION",
    "CREATE SCHEMA s",
    "CREATE DATABASE d",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM 'file:///etc/passwd'",
    "SELECT * FROM 's3://loglake/'",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM {t} WHERE host IN (SELECT * FROM '/etc/hosts')",
]


def test_the_sandbox_refuses_writes_copies_and_file_reads(served):
    lake, server, topics = served
    table = topics[0].replace("-", "_")
    before = truth(lake, topics[0]).num_rows
    for sql in HOSTILE:
        status, _, body, _ = post(server, sql.format(t=table))
        code = json.loads(body)["error"]["code"]
        # Writes and statements: 403 by the plan check. Files and URLs: not tables (400).
        assert (status, code) in [(403, "read_only"), (400, "invalid_sql")], (sql, status, body[:300])
        if sql.split()[0] in ("INSERT", "DELETE", "UPDATE", "COPY", "CREATE", "DROP", "SET", "TRUNCATE"):
            assert status in (403, 400), sql
    assert truth(lake, topics[0]).num_rows == before
    import os
    assert not os.path.exists("/tmp/loglake-pwned.csv") and not os.path.exists("/tmp/loglake-pwned.parquet")


def wait_idle(server, seconds=2.0, limit=0.5, timeout=30):
    """Waits until the server uses less than `limit` CPU-seconds over `seconds`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        a = server.cpu_seconds()
        time.sleep(seconds)
        used = server.cpu_seconds() - a
        if used < limit:
            return used
    raise AssertionError(f"the server kept using CPU ({used:.2f}s per {seconds}s)\n" + server.tail())


def metric(server, name):
    text = curl(server, "/metrics", token=None)[2].decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_timeouts_cancels_and_disconnects_stop_the_work(served):
    lake, server, _ = served
    # A timeout: 504 in about the time asked for, then the CPU is free again.
    started = time.time()
    status, _, body, _ = curl(server, "/v1/sql", "-X", "POST", "-H", "Content-Type: application/json",
                              "-d", json.dumps({"sql": SLOW, "timeout_ms": 1500}))
    assert status == 504 and json.loads(body)["error"]["code"] == "timeout"
    assert time.time() - started < 15
    wait_idle(server)

    # DELETE /v1/queries/{id} cancels a running query; its request gets 409 "cancelled".
    result = {}
    t = threading.Thread(target=lambda: result.update(r=curl(
        server, "/v1/sql", "-X", "POST", "-H", "X-Loglake-Query-Id: slow-1", "--data-binary", SLOW)))
    t.start()
    deadline = time.time() + 10
    while time.time() < deadline:
        status = curl(server, "/v1/queries/slow-1", "-X", "DELETE")[0]
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200
    t.join(30)
    assert result["r"][0] == 409 and json.loads(result["r"][2])["error"]["code"] == "cancelled"
    assert curl(server, "/v1/queries/slow-1", "-X", "DELETE")[0] == 404
    wait_idle(server)

    # A client that goes away: its query stops.
    before = metric(server, 'loglake_serve_queries_total{status="disconnected"}')
    _, _, _, rc = post(server, SLOW, timeout=2)
    assert rc == 28  # curl: timed out, i.e. we hung up
    wait_idle(server)
    assert metric(server, 'loglake_serve_queries_total{status="disconnected"}') == before + 1


def test_past_the_concurrency_limit_429_and_over_memory_503_while_the_service_stays_up(served):
    lake, server, topics = served
    threads = [threading.Thread(target=post, args=(server, SLOW), kwargs={"timeout": 4}) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    status, h, body, _ = post(server, "SELECT 1")
    assert status == 429 and h["retry-after"] == "1", body
    assert curl(server, "/healthz", token=None)[0] == 200  # answers while both slots are busy
    for t in threads:
        t.join()
    wait_idle(server)

    status, _, body, _ = post(server, "SELECT array_agg(v) FROM generate_series(1, 20000000) AS t(v)")
    assert status == 503 and json.loads(body)["error"]["code"] == "resources_exhausted", body[:500]
    assert post(server, "SELECT 1 AS ok")[0] == 200
    assert server.proc.poll() is None


def test_an_error_after_streaming_began_is_visible_in_every_format(served):
    lake, server, _ = served
    # Rows up to 50000 convert (10 MB of them); the batch holding 50001 fails, long after the
    # first bytes left.
    sql = ("SELECT v, repeat('x', 200) AS pad, CAST(CASE WHEN v > 50000 THEN 'x' ELSE '1' END AS INT) AS one "
           "FROM generate_series(1, 60000) AS t(v)")
    status, _, body, rc = post(server, sql, "-H", "Accept: application/x-ndjson")
    assert status == 200
    last = json.loads(body.decode().splitlines()[-1])
    assert "error" in last and "end" not in last, last
    assert len(body.decode().splitlines()) > 2
    for accept in ["text/csv", "application/vnd.apache.arrow.stream"]:
        status, _, body, rc = post(server, sql, "-H", f"Accept: {accept}")
        assert status == 200 and rc == 18, (accept, rc)  # curl 18: transfer closed with data outstanding
    # Buffered formats have not started, so they get the status.
    status, _, body, _ = post(server, sql, "-H", "Accept: application/json")
    assert status == 500 and json.loads(body)["error"]["code"] == "execution_failed"


def test_new_commits_are_seen_without_restart_and_etags_answer_304_until_then(served, stack):
    lake, server, topics = served
    table = topics[1].replace("-", "_")
    sql = f"SELECT count(*) AS n FROM {table}"
    status, h, body, _ = get_sql(server, sql)
    assert status == 200 and json.loads(body)["rows"][0]["n"] == 300
    tag = h["etag"]
    assert "no-cache" in h["cache-control"]
    status, h2, body, _ = get_sql(server, sql, "-H", f"If-None-Match: {tag}")
    assert status == 304 and body == b"" and h2["etag"] == tag
    assert metric(server, "loglake_serve_not_modified_total") >= 1

    produce(stack, topics[1], records(50, start=300))
    w = Worker(lake)
    try:
        lake.wait_count(table, 350, workers=[w])
    finally:
        assert w.stop() == 0
    status, h3, body, _ = get_sql(server, sql, "-H", f"If-None-Match: {tag}")
    assert status == 200 and json.loads(body)["rows"][0]["n"] == 350
    assert h3["etag"] != tag

    # /v1/tables describes what is there.
    status, _, body, _ = curl(server, f"/v1/tables/{table}")
    d = json.loads(body)
    assert status == 200 and d["rows"] == 350 and d["partition_columns"] == ["host", "date", "hour"]
    assert d["first_event_time"].startswith("2026-03-01T08:00:00")
    names = [t["name"] for t in json.loads(curl(server, "/v1/tables")[2])["tables"]]
    assert table in names and topics[0].replace("-", "_") in names
    assert curl(server, "/v1/tables/nope")[0] == 404


def test_complete_through_is_the_slowest_partitions_newest_event_less_the_grace(served):
    """Analysts ask `/v1/tables` whether a day is final: the answer follows from what each Kafka
    partition archived, computed here independently from the rows themselves."""
    lake, server, topics = served
    table = topics[0].replace("-", "_")
    rows = truth(lake, topics[0])
    newest = rows.group_by("_kafka_partition").aggregate([("timestamp", "max")]).to_pylist()
    assert len(newest) == 2, newest
    expected = min(r["timestamp_max"] for r in newest) - datetime.timedelta(minutes=5)  # late_grace default
    d = json.loads(curl(server, f"/v1/tables/{table}")[2])
    got = datetime.datetime.fromisoformat(d["complete_through"].replace("Z", "+00:00"))
    assert got == expected, (d["complete_through"], newest)
    assert got < datetime.datetime.fromisoformat(d["last_event_time"].replace("Z", "+00:00"))
    quarantine = [t for t in json.loads(curl(server, "/v1/tables")[2])["tables"] if t["kind"] == "quarantine"]
    assert [t["topic"] for t in quarantine] == [topics[1]]
    assert quarantine[0]["complete_through"] is None and quarantine[0]["rows"] == 1


def test_the_logs_view_spans_topics(served):
    lake, server, topics = served
    status, _, body, _ = post(server, "SELECT topic, count(*) AS n FROM logs GROUP BY topic ORDER BY topic")
    assert status == 200, body
    got = {r["topic"]: r["n"] for r in json.loads(body)["rows"]}
    assert got[topics[0]] == N and got[topics[1]] >= 300


def write_archive(path, days, hosts=("h1", "h2"), per_hour=20, first_hour=0, hours=None, offset=0, mode="error"):
    """A table shaped like ingest's, `days` days of hourly partitions (or `hours` hours from
    `first_hour`), by an independent writer."""
    start = datetime.datetime(2026, 2, 1, tzinfo=datetime.timezone.utc)
    rows = collections.defaultdict(list)
    for h in range(first_hour, first_hour + (hours or days * 24)):
        base = start + datetime.timedelta(hours=h)
        for host in hosts:
            for i in range(per_hour):
                rows["timestamp"].append(base + datetime.timedelta(seconds=i * 170))
                rows["level"].append("ERROR" if i % 5 == 0 else "INFO")
                rows["message"].append(f"event {h} {i}")
                rows["attributes"].append(None)
                rows["_kafka_partition"].append(0)
                rows["_kafka_offset"].append(offset + len(rows["_kafka_offset"]))
                rows["_kafka_timestamp"].append(base)
                rows["host"].append(host)
                rows["date"].append(base.strftime("%Y-%m-%d"))
                rows["hour"].append(base.strftime("%H"))
    ts = pa.timestamp("us", tz="UTC")
    schema = pa.schema([("timestamp", ts, False), ("level", pa.string()), ("message", pa.string()),
                        ("attributes", pa.string()), ("_kafka_partition", pa.int32(), False),
                        ("_kafka_offset", pa.int64(), False), ("_kafka_timestamp", ts),
                        ("host", pa.string(), False), ("date", pa.string(), False), ("hour", pa.string(), False)])
    write_deltalake(path, pa.table(rows, schema=schema), partition_by=["host", "date", "hour"], mode=mode)


def test_a_one_hour_one_host_query_reads_one_hours_files_of_a_30_day_archive(stack, tmp_path):
    lake = Lake(stack, "local", ["unused"], tmp_path, serve={"http_listen": "127.0.0.1:0", "tokens": [TOKEN]})
    write_archive(str(lake.dir / "web_logs"), days=30)
    server = Server(lake)
    try:
        sql = ("EXPLAIN ANALYZE SELECT level, count(*) FROM web_logs WHERE host = 'h1' "
               "AND timestamp >= '2026-02-10T05:00:00Z' AND timestamp < '2026-02-10T06:00:00Z' GROUP BY level")
        status, _, body, _ = post(server, sql, "-H", "Accept: text/csv")
        assert status == 200, body
        plan = body.decode()
        files = set(p for p in plan.replace(",", " ").replace("[", " ").replace("]", " ").split()
                    if p.endswith(".parquet"))
        assert files, plan
        assert all("host=h1/date=2026-02-10/hour=05/" in f for f in files), files
        status, _, body, _ = post(server, sql.replace("EXPLAIN ANALYZE ", ""))
        assert sum(r["count(*)"] for r in json.loads(body)["rows"]) == 20
    finally:
        server.stop()


def explained_files(server, sql):
    status, _, body, _ = post(server, "EXPLAIN " + sql, "-H", "Accept: text/csv")
    assert status == 200, body
    words = body.decode().replace(",", " ").replace("[", " ").replace("]", " ").split()
    return {w.split("/web_logs/", 1)[1] for w in words if w.endswith(".parquet")}


def test_the_served_file_index_follows_appends_compaction_and_time_travel(stack, tmp_path):
    """The service keeps an index of each table's files per version and reuses it across
    versions: answers stay right as files are added and compaction swaps them, an older
    version reads its own files, and statistics prune files before the plan is made."""
    lake = Lake(stack, "local", ["unused"], tmp_path, serve={"http_listen": "127.0.0.1:0", "tokens": [TOKEN]})
    path = str(lake.dir / "web_logs")
    write_archive(path, days=2)
    server = Server(lake)

    def rows(sql):
        status, _, body, _ = post(server, sql)
        assert status == 200, body
        return json.loads(body)["rows"]

    one_hour = ("SELECT count(*) AS n FROM {t} WHERE host = 'h1' "
                "AND timestamp >= '2026-02-02T05:00:00Z' AND timestamp < '2026-02-02T06:00:00Z'")
    total = "SELECT count(*) AS n, max(_kafka_offset) AS top FROM {t}"
    try:
        assert rows(one_hour.format(t="web_logs")) == [{"n": 20}]
        assert rows(total.format(t="web_logs")) == [{"n": 1920, "top": 1919}]

        # Appended: late rows of that hour (version 1).
        late = dict(days=0, hours=1, hosts=("h1",), per_hour=10, first_hour=29, mode="append")
        write_archive(path, offset=5000, **late)
        write_archive(path, offset=6000, **late)
        assert rows(one_hour.format(t="web_logs")) == [{"n": 40}]
        assert rows(total.format(t="web_logs")) == [{"n": 1940, "top": 6009}]
        files = explained_files(server, one_hour.format(t="web_logs"))
        assert len(files) == 3 and all(f.startswith("host=h1/date=2026-02-02/hour=05/") for f in files), files

        # Compacted by another writer: its files are swapped for merged ones.
        DeltaTable(path).optimize.compact()
        live = {u.split("/web_logs/", 1)[1] for u in DeltaTable(path).file_uris()}
        assert rows(one_hour.format(t="web_logs")) == [{"n": 40}]
        assert rows(total.format(t="web_logs")) == [{"n": 1940, "top": 6009}]
        files = explained_files(server, one_hour.format(t="web_logs"))
        assert len(files) == 1 and files <= live, (files, live)

        # An older version reads its own files, the newest stays as it is.
        old = '"web_logs@v2"'
        assert rows(one_hour.format(t=old)) == [{"n": 40}]
        assert len(explained_files(server, one_hour.format(t=old))) == 3
        assert rows(one_hour.format(t='"web_logs@v0"')) == [{"n": 20}]
        assert len(explained_files(server, one_hour.format(t="web_logs"))) == 1

        # A point lookup's file is found from the Delta statistics: one file in the plan.
        lookup = "SELECT host, hour FROM web_logs WHERE _kafka_offset = 6005"
        assert rows(lookup) == [{"host": "h1", "hour": "05"}]
        assert len(explained_files(server, lookup)) == 1
    finally:
        server.stop()
