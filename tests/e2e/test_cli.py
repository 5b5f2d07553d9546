"""What an operator sees: clear config errors, clear SQL errors, graceful shutdown that
commits what it holds, and the metrics endpoint."""
import os
import subprocess
import time
import urllib.request
import uuid

from conftest import Lake, Worker, create_topic, log_record, loglake_bin, produce


def run(args, env=None):
    return subprocess.run([loglake_bin(), *args], capture_output=True, text=True, timeout=60, env=env)


def test_invalid_config_names_the_key(tmp_path):
    cases = {
        '[lake]\nurl = "file:///tmp/x"\n[ingest]\nmax_latency = "soonish"\n': "ingest.max_latency",
        '[lake]\nurl = "file:///tmp/x"\n[ingest]\nmax_file_sise = "1MiB"\n': "max_file_sise",
        '[lake]\nurl = "ftp://x"\n': "ftp",
        '[lake]\nurl = "file:///tmp/x"\n[kafka]\nbrokers = "b:1"\n': "kafka.topics",
        '[lake]\nurl = "file:///tmp/x"\n[kafka]\nbrokers = "b:1"\ntopics = ["t"]\n[kafka.options]\n"enable.auto.commit" = "true"\n': "enable.auto.commit",
        '[lake\n': "not valid TOML",
        '[kafka]\nbrokers = "b:1"\ntopics = ["t"]\n': "lake.url is required",
    }
    for text, needle in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        r = run(["ingest", "--config", str(path)])
        assert r.returncode != 0, text
        assert needle in r.stderr, (text, r.stderr)
    r = run(["ingest", "--config", str(tmp_path / "missing.toml")])
    assert r.returncode != 0 and "could not read config file" in r.stderr
    path = tmp_path / "nokafka.toml"
    path.write_text(f'[lake]\nurl = "file://{tmp_path}/lake"\n')
    r = run(["ingest", "--config", str(path)])
    assert r.returncode != 0 and "[kafka]" in r.stderr


def test_the_binary_allocates_with_jemalloc():
    # The memory budget counts text buffers in jemalloc's size classes (schemas/src/builder.rs)
    # and the ingest loop's speed was measured with it: a build that lost the allocator crate
    # would still pass every other test. jemalloc reads MALLOC_CONF and prints its statistics.
    r = run(["--version"], env={**os.environ, "MALLOC_CONF": "stats_print:true"})
    assert r.returncode == 0, r.stderr
    assert "Begin jemalloc statistics" in r.stderr, r.stderr[:500]


def test_bad_sql_is_a_clear_error(tmp_path):
    path = tmp_path / "q.toml"
    path.write_text(f'[lake]\nurl = "file://{tmp_path}/lake"\n')
    for sql, needle in [("SELEC 1", "SELEC"), ("SELECT * FROM nowhere", "nowhere"),
                        ("DROP TABLE x", "read-only"), ("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc'", "read-only")]:
        r = run(["query", "--config", str(path), sql])
        assert r.returncode != 0, sql
        assert needle in r.stderr, (sql, r.stderr)
    r = run(["query", "--config", str(path), "--format", "csv", "SELECT 41 + 1 AS answer"])
    assert r.returncode == 0 and r.stdout.split() == ["answer", "42"]


def test_query_reads_stdin_streams_every_format_and_writes_files(tmp_path):
    import io
    import json
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "q.toml"
    path.write_text(f'[lake]\nurl = "file://{tmp_path}/lake"\n')
    sql = "SELECT v, v % 3 AS m FROM generate_series(1, 20000) AS t(v)"
    r = subprocess.run([loglake_bin(), "query", "--config", str(path), "--format", "ndjson"], input=sql,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sorted(json.loads(x)["v"] for x in lines) == list(range(1, 20001))
    r = subprocess.run([loglake_bin(), "query", "--config", str(path), "--format", "arrow", sql],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and pa.ipc.open_stream(io.BytesIO(r.stdout)).read_all().num_rows == 20000
    out = tmp_path / "answer.parquet"
    r = run(["query", "--config", str(path), "--format", "parquet", "--output", str(out), sql])
    assert r.returncode == 0 and r.stdout == ""
    assert sorted(pq.read_table(out).column("v").to_pylist()) == list(range(1, 20001))
    r = run(["query", "--config", str(path), "--format", "json", "SELECT 1 AS a, NULL AS b"])
    assert json.loads(r.stdout) == [{"a": 1, "b": None}]
    # A failure part-way: non-zero exit and the reason, whatever was printed before.
    r = run(["query", "--config", str(path), "--format", "csv",
             "SELECT CAST(CASE WHEN v > 15000 THEN 'x' ELSE '1' END AS INT) FROM generate_series(1, 20000) AS t(v)"])
    assert r.returncode != 0 and "Cannot cast" in r.stderr, r.stderr[-500:]


def test_serve_refuses_an_exposed_address_without_tokens_and_reports_bad_settings(tmp_path):
    path = tmp_path / "s.toml"
    for section, needle in [('http_listen = "0.0.0.0:0"', "serve.tokens"),
                            ('http_listen = "localhost"', "serve.http_listen"),
                            ('max_concurrent_queries = 0', "max_concurrent_queries"),
                            ('memory_per_query = "lots"', "serve.memory_per_query"),
                            ('tokenz = ["x"]', "tokenz")]:
        path.write_text(f'[lake]\nurl = "file://{tmp_path}/lake"\n[serve]\n{section}\n')
        r = run(["serve", "--config", str(path)])
        assert r.returncode != 0 and needle in r.stderr, (section, r.stderr)
    env = {"LOGLAKE_SERVE_TOKENS": "a-secret-token", "PATH": "/usr/bin:/bin"}
    path.write_text(f'[lake]\nurl = "file://{tmp_path}/lake"\n[serve]\nhttp_listen = "0.0.0.0:0"\nquery_timeout = "0s"\n')
    r = run(["serve", "--config", str(path)], env=env)
    assert r.returncode != 0 and "query_timeout" in r.stderr and "a-secret-token" not in r.stderr

    # An address another process holds: said, not a panic, for each front end.
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        for key in ["http_listen", "pg_listen", "flight_listen"]:
            listen = {"http_listen": "127.0.0.1:0", key: f"127.0.0.1:{port}"}
            path.write_text(f'[lake]\nurl = "file://{tmp_path}/lake"\n[serve]\n'
                            + "".join(f'{k} = "{v}"\n' for k, v in listen.items()))
            r = run(["serve", "--config", str(path)])
            assert r.returncode == 1, (key, r.returncode, r.stderr)
            assert f"could not listen on 127.0.0.1:{port}" in r.stderr and "panicked" not in r.stderr, (key, r.stderr)
    finally:
        taken.close()


def test_sigterm_commits_what_is_buffered_and_metrics_tell(stack, tmp_path, workers):
    topic = f"term-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "file", [topic], tmp_path, ingest={"max_latency": "1h", "shutdown_grace": "20s"})
    w = Worker(lake)
    workers.append(w)
    produce(stack, topic, [(i % 2, b"h", log_record("2026-03-05T00:00:00Z", "h", i)) for i in range(500)])
    deadline = time.time() + 60
    # Counters move per record; the buffered-bytes gauge is refreshed on the 200 ms tick.
    while (m := w.metrics()).get("loglake_ingest_records_total", 0) < 500 or m["loglake_ingest_buffered_bytes"] == 0:
        assert time.time() < deadline, w.tail()
        time.sleep(0.3)
    assert urllib.request.urlopen(w.metrics_url() + "/healthz", timeout=5).status == 200
    assert m["loglake_ingest_rows_written_total"] == 0, "max_latency 1h: nothing flushed yet"
    started = time.time()
    assert w.stop(timeout=30) == 0
    assert time.time() - started < 25
    assert lake.count(topic.replace("-", "_")) == 500


def test_time_travel_reads_a_table_as_it_was(stack, tmp_path, workers):
    """`"table@v<N>"` reads version N, `"table@<RFC 3339 time>"` the last version committed at or
    before that time; the live table is unaffected, and a version the table never had is a
    clear error."""
    from deltalake import DeltaTable
    topic = f"tt-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 1)
    lake = Lake(stack, "s3", [topic], tmp_path)
    table = topic.replace("-", "_")
    w = Worker(lake)
    workers.append(w)
    produce(stack, topic, [(0, b"h", log_record("2026-03-12T00:00:00Z", "h", i)) for i in range(40)])
    lake.wait_count(table, 40, workers=[w])
    first = DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options()).version()
    time.sleep(1.5)
    between = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 0.5))
    time.sleep(1.0)
    produce(stack, topic, [(0, b"h", log_record("2026-03-12T01:00:00Z", "h", i)) for i in range(40, 100)])
    lake.wait_count(table, 100, workers=[w])
    assert w.stop() == 0

    assert lake.scalar(f'SELECT count(*) AS n FROM "{table}@v{first}"') == 40
    assert lake.scalar(f'SELECT count(*) AS n FROM "{table}@{between}"') == 40
    assert lake.scalar(f"SELECT count(*) AS n FROM {table}") == 100
    # Old and new state in one query.
    rows = lake.query(f'SELECT (SELECT count(*) FROM {table}) - (SELECT count(*) FROM "{table}@v{first}") AS added')
    assert rows == [{"added": 60}]
    r = lake.run("query", f'SELECT count(*) FROM "{table}@v{first + 1000}"', check=False)
    assert r.returncode != 0 and f"as of version {first + 1000}" in r.stderr, r.stderr
    r = lake.run("query", f'SELECT count(*) FROM "{table}@lastweek"', check=False)
    assert r.returncode != 0 and "after '@' give a version" in r.stderr, r.stderr
