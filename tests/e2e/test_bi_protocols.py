"""BI tools connect: `loglake serve` speaks the Postgres wire protocol and Arrow Flight SQL on
the same engine as the HTTP API, proven with real, independent clients — psql, psycopg
(extended protocol, binary and text), SQLAlchemy's inspector, ADBC's Flight SQL driver —
against tables ingest wrote on the real S3 server. The same SQL answers the same over all
three protocols; auth, the sandbox, cancel and statement_timeout hold on each."""
import datetime
import json
import re
import subprocess
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy
from adbc_driver_flightsql import DatabaseOptions
from deltalake import DeltaTable

from conftest import Lake, Server, Worker, create_topic, log_record, produce

TOKEN = "bi-t0ken"
HOSTS = ["web-1", "web-2", "db-1"]
N = 1800
SLOW = "SELECT count(*) AS n FROM generate_series(1, 20000000000) AS t(v) WHERE v % 7 = 3"


def records(n):
    out = []
    for i in range(n):
        host = HOSTS[i % 3]
        ts = f"2026-03-01T{8 + i % 4:02d}:{(i * 7) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
        level = ["INFO", "WARN", "ERROR"][(i // 3) % 3]
        extra = {"status": 200 + i % 5, "path": f"/p/{i % 7}"} if i % 2 else {}
        out.append((i % 2, host.encode(), log_record(ts, host, i, level=level, **extra)))
    return out


def listen_addr(server, what):
    m = re.search(rf"serving SQL over {what} addr=(\S+)", server.log_path.read_text())
    assert m, server.tail()
    host, port = m.group(1).rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def bi(stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bi")
    topic = f"bi-logs-{time.time_ns() % 10**8}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "s3", [topic], tmp, serve={
        "http_listen": "127.0.0.1:0", "pg_listen": "127.0.0.1:0", "flight_listen": "127.0.0.1:0",
        "tokens": [TOKEN], "max_concurrent_queries": 4, "query_timeout": "60s"})
    # A malformed record too: the topic gets its quarantine table.
    produce(stack, topic, [(0, b"db-1", b"{not json")] + records(N))
    w = Worker(lake)
    try:
        lake.wait_count(topic.replace("-", "_"), N, workers=[w])
    finally:
        assert w.stop() == 0
    server = Server(lake)
    pg = listen_addr(server, "the Postgres wire protocol")
    flight = listen_addr(server, "Arrow Flight SQL")
    yield lake, server, topic.replace("-", "_"), pg, flight, topic
    server.stop()


def pg_connect(bi, password=TOKEN, **kw):
    _, _, _, (host, port), _, _ = bi
    return psycopg.connect(host=host, port=port, user="analyst", password=password, dbname="loglake",
                           sslmode="disable", connect_timeout=10, **kw)


def flight_connect(bi, token=TOKEN):
    _, _, _, _, (host, port), _ = bi
    return flight_sql.connect(f"grpc://{host}:{port}",
                              db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"})


def psql(bi, *args, password=TOKEN):
    _, _, _, (host, port), _, _ = bi
    env = {"PGPASSWORD": password, "PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(["psql", "-X", "-v", "VERBOSITY=verbose", "-h", host, "-p", str(port), "-U", "analyst",
                           "-d", "loglake", "--no-psqlrc", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def http_rows(bi, sql):
    _, server, _, _, _, _ = bi
    r = subprocess.run(["curl", "-sS", "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: application/sql",
                        "-H", "Accept: application/vnd.apache.arrow.stream", "--data-binary", sql,
                        server.url + "/v1/sql"], capture_output=True, timeout=60)
    return pa.ipc.open_stream(r.stdout).read_all().to_pylist()


def truth(bi):
    lake, _, _, _, _, topic = bi
    return DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options()).to_pyarrow_table()


def test_psql_lists_describes_queries_and_gets_sqlstates(bi):
    _, _, table, _, _, _ = bi
    r = psql(bi, "-A", "-t", "-c", f"SELECT count(*) FROM {table}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(N)

    r = psql(bi, "-c", r"\dt")
    assert r.returncode == 0, r.stderr
    assert table in r.stdout and f"{table}__rejected" in r.stdout

    r = psql(bi, "-c", rf"\d {table}")
    assert r.returncode == 0, r.stderr
    for column in ["timestamp", "host", "level", "message", "attributes", "_kafka_offset"]:
        assert column in r.stdout, r.stdout
    assert "timestamp with time zone" in r.stdout

    r = psql(bi, "-c", "SELECT 1", password="wrong")
    assert r.returncode != 0
    assert "password authentication failed" in r.stderr

    for sql, state in [("SELECT * FROM no_such_table", "42P01"), ("SELEC 1", "42601"),
                       (f"SELECT no_such_column FROM {table}", "42703"),
                       (f"DROP TABLE {table}", "42501"), (f"COPY {table} TO STDOUT", "42501"),
                       (f"INSERT INTO {table} (host) VALUES ('x')", "42501"),
                       ("SET datafusion.execution.batch_size = 1", "42501")]:
        r = psql(bi, "-c", sql)
        assert r.returncode != 0, sql
        assert f"ERROR:  {state}" in r.stderr, (sql, r.stderr)

    # Several statements in one simple query, like a script: each answers.
    r = psql(bi, "-A", "-t", "-c", f"SELECT 1; SELECT count(*) FROM {table} WHERE host = 'web-1'")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", str(N // 3)]


def test_psycopg_binds_parameters_and_every_type_round_trips(bi):
    _, _, table, _, _, _ = bi
    t = truth(bi)
    want = sum(1 for r in t.to_pylist() if r["host"] == "web-2" and r["level"] == "ERROR"
               and r["timestamp"] >= datetime.datetime(2026, 3, 1, 9, tzinfo=datetime.timezone.utc))
    assert want > 0
    by_offset = {(r["_kafka_partition"], r["_kafka_offset"]): r for r in t.to_pylist()}
    with pg_connect(bi) as conn:
        for binary in (False, True):
            with conn.cursor(binary=binary) as cur:
                # Server-side binding (extended protocol): $1, $2 with typed values.
                cur.execute(f"SELECT count(*) FROM {table} WHERE host = %s AND level = %s AND timestamp >= %s",
                            ("web-2", "ERROR", datetime.datetime(2026, 3, 1, 9, tzinfo=datetime.timezone.utc)))
                assert cur.fetchone()[0] == want
                # A value that would break SQL if it were spliced in is just a value.
                cur.execute(f"SELECT count(*) FROM {table} WHERE host = %s", ("x' OR '1'='1",))
                assert cur.fetchone()[0] == 0

                cur.execute(f"SELECT timestamp, host, level, message, attributes, _kafka_partition, _kafka_offset, "
                            f"CAST(NULL AS BIGINT) AS nothing FROM {table} ORDER BY _kafka_partition, _kafka_offset "
                            f"LIMIT 20")
                names = [d.name for d in cur.description]
                assert names[:3] == ["timestamp", "host", "level"]
                rows = cur.fetchall()
                assert len(rows) == 20
                for ts, host, level, message, attributes, partition, offset, nothing in rows:
                    expected = by_offset[(partition, offset)]
                    assert isinstance(ts, datetime.datetime) and ts.tzinfo is not None
                    assert ts == expected["timestamp"]
                    assert (host, level, message) == (expected["host"], expected["level"], expected["message"])
                    assert isinstance(partition, int) and isinstance(offset, int)
                    assert nothing is None
                    assert attributes == expected["attributes"]
                    if attributes is not None:
                        assert isinstance(json.loads(attributes), dict)
        # A statement prepared once and executed many times with different values.
        with conn.cursor() as cur:
            for host in HOSTS * 2:
                cur.execute(f"SELECT count(*) FROM {table} WHERE host = %s", (host,), prepare=True)
                assert cur.fetchone()[0] == N // 3

        # psycopg opens a transaction first (autocommit off): BEGIN/COMMIT are answered.
        conn.commit()
        with conn.cursor() as cur:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                cur.execute("CREATE TABLE t (x INT)")
        conn.rollback()
        with conn.cursor() as cur:
            with pytest.raises(psycopg.errors.UndefinedTable):
                cur.execute("SELECT * FROM nope WHERE x = %s", (1,))
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SHOW server_version")
            assert cur.fetchone()[0].startswith("16.")

    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        pg_connect(bi, password="nope")


def test_sqlalchemy_inspector_lists_schemas_tables_and_columns(bi):
    _, _, table, (host, port), _, _ = bi
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://analyst:{TOKEN}@{host}:{port}/loglake")
    try:
        inspector = sqlalchemy.inspect(engine)
        assert "public" in inspector.get_schema_names()
        tables = inspector.get_table_names()
        assert table in tables and f"{table}__rejected" in tables
        assert inspector.has_table(table) and not inspector.has_table("no_such_table")
        assert "logs" in inspector.get_view_names()
        columns = {c["name"]: c for c in inspector.get_columns(table)}
        for name in ["timestamp", "host", "level", "message", "attributes", "_kafka_offset"]:
            assert name in columns, columns
        assert isinstance(columns["timestamp"]["type"], sqlalchemy.types.TIMESTAMP)
        assert columns["timestamp"]["type"].timezone
        assert isinstance(columns["_kafka_offset"]["type"], sqlalchemy.types.BigInteger)
        assert columns["timestamp"]["nullable"] is False and columns["message"]["nullable"] is True
        assert columns["host"]["default"] is None
        with engine.connect() as conn:
            n = conn.execute(sqlalchemy.text(f"SELECT count(*) FROM {table} WHERE host = :h"), {"h": "db-1"}).scalar()
            assert n == N // 3
            # Columns and types, as a tool reads them from information_schema.
            columns = dict(conn.execute(sqlalchemy.text(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = :t"),
                {"t": table}).fetchall())
            for name in ["timestamp", "host", "level", "message", "attributes", "_kafka_offset"]:
                assert name in columns, columns
    finally:
        engine.dispose()


def cpu_idle(server, seconds=2.0, limit=0.5, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        a = server.cpu_seconds()
        time.sleep(seconds)
        if server.cpu_seconds() - a < limit:
            return True
    return False


def test_a_cancelled_or_timed_out_postgres_query_stops(bi):
    _, server, _, _, _, _ = bi
    with pg_connect(bi, autocommit=True) as conn:
        err = []

        def run():
            try:
                conn.execute(SLOW)
            except psycopg.Error as e:
                err.append(e)

        t = threading.Thread(target=run)
        t.start()
        time.sleep(1.5)
        assert t.is_alive()
        conn.cancel_safe()
        t.join(30)
        assert not t.is_alive()
        assert err and isinstance(err[0], psycopg.errors.QueryCanceled), err
        assert cpu_idle(server), server.tail()
        # The connection is usable after a cancel.
        assert conn.execute("SELECT 41 + 1").fetchone()[0] == 42

        conn.execute("SET statement_timeout = '700ms'")
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "700ms"
        started = time.time()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            conn.execute(SLOW)
        assert time.time() - started < 20
        assert cpu_idle(server), server.tail()


def server_metric(server, name):
    text = subprocess.run(["curl", "-sS", server.url + "/metrics"], capture_output=True, text=True).stdout
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


CLIENT = """
import sys, time
kind, host, port, token, sql = sys.argv[1:]
if kind == "pg":
    import psycopg
    conn = psycopg.connect(host=host, port=int(port), user="analyst", password=token, dbname="loglake",
                           sslmode="disable", autocommit=True)
    print("connected", flush=True)
    conn.execute(sql)
else:
    import adbc_driver_flightsql.dbapi as flight_sql
    from adbc_driver_flightsql import DatabaseOptions
    conn = flight_sql.connect(f"grpc://{host}:{port}",
                              db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"})
    print("connected", flush=True)
    cur = conn.cursor()
    cur.execute(sql)
    cur.fetchall()
"""


def start_client(bi, kind, sql):
    """A client in its own process, so that it can die the way a laptop's BI tool does."""
    _, _, _, pg, flight, _ = bi
    host, port = pg if kind == "pg" else flight
    import sys
    p = subprocess.Popen([sys.executable, "-c", CLIENT, kind, host, str(port), TOKEN, sql],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "connected", p.stderr.read()
    return p


@pytest.mark.parametrize("kind", ["pg", "flight"])
def test_a_client_that_dies_mid_query_stops_the_work(bi, kind):
    _, server, _, _, _, _ = bi
    protocol = "postgres" if kind == "pg" else "flight_sql"
    before = server_metric(server, f'loglake_serve_protocol_queries_total{{protocol="{protocol}"')
    a = server.cpu_seconds()
    p = start_client(bi, kind, SLOW)
    # The query is running: the server spends CPU on it (the cores may be shared: wait for it).
    deadline = time.time() + 20
    while server.cpu_seconds() - a < 1.0 and time.time() < deadline:
        time.sleep(0.2)
    assert p.poll() is None, p.stderr.read()
    assert server.cpu_seconds() - a >= 1.0, server.tail()
    p.kill()
    p.wait(10)
    assert cpu_idle(server), server.tail()
    # The abandoned query was counted as finished, and the connection as closed.
    deadline = time.time() + 15
    while time.time() < deadline:
        done = server_metric(server, f'loglake_serve_protocol_queries_total{{protocol="{protocol}"')
        open_now = server_metric(server, f'loglake_serve_open_connections{{protocol="{protocol}"}}')
        if done >= before + 1 and open_now == 0:
            break
        time.sleep(0.3)
    assert done >= before + 1 and open_now == 0, (done, before, open_now)


def test_past_max_concurrent_queries_postgres_and_flight_are_told_busy(bi):
    """The fixture allows 4 queries at once; a fifth, on either protocol, is refused at once with
    the protocol's own "busy" error (SQLSTATE 53300, gRPC RESOURCE_EXHAUSTED) and works again
    once a slot is free."""
    _, server, table, _, _, _ = bi
    clients = [start_client(bi, "pg" if i % 2 else "flight", SLOW) for i in range(4)]
    try:
        deadline = time.time() + 20
        while server_metric(server, "loglake_serve_queries_in_flight") < 4 and time.time() < deadline:
            time.sleep(0.2)
        assert server_metric(server, "loglake_serve_queries_in_flight") == 4, server.tail()
        with pg_connect(bi, autocommit=True) as conn:
            started = time.time()
            with pytest.raises(psycopg.errors.TooManyConnections) as e:
                conn.execute(f"SELECT count(*) FROM {table}")
            assert time.time() - started < 5
            assert e.value.sqlstate == "53300"
        with flight_connect(bi) as conn:
            with conn.cursor() as cur:
                with pytest.raises(Exception, match="(?i)resource.?exhausted|busy|too many"):
                    cur.execute(f"SELECT count(*) FROM {table}")
                    cur.fetchall()
    finally:
        for p in clients:
            p.kill()
            p.wait(10)
    assert cpu_idle(server), server.tail()
    deadline = time.time() + 15
    while server_metric(server, "loglake_serve_queries_in_flight") > 0 and time.time() < deadline:
        time.sleep(0.2)
    with pg_connect(bi, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == N


def test_flight_sql_queries_binds_lists_tables_and_refuses_a_wrong_token(bi):
    _, _, table, _, _, _ = bi
    t = truth(bi)
    with flight_connect(bi) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT host, count(*) AS n FROM {table} GROUP BY host ORDER BY host")
            got = cur.fetch_arrow_table().to_pylist()
            assert got == [{"host": h, "n": N // 3} for h in sorted(HOSTS)]

            cur.execute(f"SELECT count(*) AS n FROM {table} WHERE host = $1 AND level = $2",
                        parameters=("web-1", "WARN"))
            want = sum(1 for r in t.to_pylist() if r["host"] == "web-1" and r["level"] == "WARN")
            assert cur.fetchone()[0] == want

            cur.execute(f"SELECT * FROM {table}")
            served = cur.fetch_arrow_table()
            assert served.num_rows == N
            key = [("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")]
            assert served.sort_by(key).select(t.column_names).to_pylist() == t.sort_by(key).to_pylist()

            with pytest.raises(Exception, match="read-only"):
                cur.execute(f"DROP TABLE {table}")
                cur.fetchall()

        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        names = {tb["table_name"] for cat in objects for sch in (cat["catalog_db_schemas"] or [])
                 for tb in (sch["db_schema_tables"] or [])}
        assert table in names and f"{table}__rejected" in names and "logs" in names
        schema = conn.adbc_get_table_schema(table, catalog_filter="loglake", db_schema_filter="public")
        assert "timestamp" in schema.names and "host" in schema.names

    with pytest.raises(Exception, match="(?i)unauthenticated|token"):
        with flight_connect(bi, token="wrong") as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
                cur.fetchall()


TYPICAL = [
    "SELECT host, level, count(*) AS n FROM {t} GROUP BY host, level ORDER BY host, level",
    "SELECT date_trunc('hour', timestamp) AS hour, count(*) AS n FROM {t} GROUP BY 1 ORDER BY 1",
    "SELECT timestamp, host, message FROM {t} WHERE level = 'ERROR' AND host = 'db-1' "
    "ORDER BY timestamp DESC LIMIT 25",
    "SELECT count(*) AS n, min(timestamp) AS first, max(timestamp) AS last FROM {t} "
    "WHERE timestamp >= TIMESTAMP '2026-03-01T09:00:00Z' AND timestamp < TIMESTAMP '2026-03-01T10:00:00Z'",
    "SELECT level, count(*) AS n, count(attributes) AS with_attributes, sum(length(message)) AS chars "
    "FROM {t} GROUP BY level ORDER BY level",
    "SELECT topic, count(*) AS n FROM logs GROUP BY topic ORDER BY topic",
    # What Grafana's $__timeFilter(timestamp) expands to.
    "SELECT host, count(*) AS n FROM {t} WHERE timestamp BETWEEN '2026-03-01T08:30:00Z' AND '2026-03-01T10:15:00Z' "
    "GROUP BY host ORDER BY host",
]


def normalise(rows):
    out = []
    for r in rows:
        out.append(tuple(v.astimezone(datetime.timezone.utc) if isinstance(v, datetime.datetime) else v
                         for v in r))
    return out


def test_the_three_protocols_answer_the_same(bi):
    _, server, table, _, _, _ = bi
    with pg_connect(bi, autocommit=True) as pg, flight_connect(bi) as fl:
        for template in TYPICAL:
            sql = template.format(t=table)
            via_http = normalise(tuple(r.values()) for r in http_rows(bi, sql))
            assert via_http, sql
            via_pg = normalise(pg.execute(sql).fetchall())
            with fl.cursor() as cur:
                cur.execute(sql)
                via_flight = normalise(tuple(r.values()) for r in cur.fetch_arrow_table().to_pylist())
            assert via_pg == via_http, sql
            assert via_flight == via_http, sql
    text = subprocess.run(["curl", "-sS", server.url + "/metrics"], capture_output=True, text=True).stdout
    for protocol in ["http", "postgres", "flight_sql"]:
        assert re.search(rf'loglake_serve_protocol_queries_total\{{protocol="{protocol}",status="ok"\}} [1-9]',
                         text), (protocol, text)
    assert re.search(r'loglake_serve_connections_total\{protocol="postgres"\} [1-9]', text), text
    assert re.search(r'loglake_serve_connections_total\{protocol="flight_sql"\} [1-9]', text), text



def test_postgres_over_tls_with_the_configured_certificate(stack, tmp_path):
    from kafka_tls import make_certs
    certs = make_certs(tmp_path / "tls")
    lake = Lake(stack, "local", [], tmp_path, serve={
        "http_listen": "127.0.0.1:0", "pg_listen": "127.0.0.1:0", "tokens": [TOKEN],
        "pg_tls_cert": certs["cert"], "pg_tls_key": certs["key"]})
    server = Server(lake)
    try:
        host, port = listen_addr(server, "the Postgres wire protocol")
        with psycopg.connect(host="localhost", port=port, user="analyst", password=TOKEN, dbname="loglake",
                             sslmode="verify-full", sslrootcert=certs["ca"], connect_timeout=10) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("SELECT 40 + 2").fetchone()[0] == 42
        # A client that does not trust the certificate's CA refuses the server.
        with pytest.raises(psycopg.OperationalError, match="(?i)certificate"):
            psycopg.connect(host="localhost", port=port, user="analyst", password=TOKEN, dbname="loglake",
                            sslmode="verify-full", sslrootcert=certs["wrong_ca"], connect_timeout=10)
        r = subprocess.run(["psql", f"host=localhost port={port} user=analyst dbname=loglake sslmode=require",
                            "-A", "-t", "-c", "SELECT 1"], capture_output=True, text=True, timeout=60,
                           env={"PGPASSWORD": TOKEN, "PATH": "/usr/bin:/bin"})
        assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    finally:
        server.stop()


# What Grafana's and Metabase's Postgres data sources send on connect and when browsing, as
# recorded by the datafusion-postgres project from the tools themselves (its tests/grafana.rs
# and tests/metabase.rs).
GRAFANA = ['SELECT\n        CASE WHEN\n              quote_ident(table_schema) IN (\n              SELECT\n                CASE WHEN trim(s[i]) = \'"$user"\' THEN user ELSE trim(s[i]) END\n              FROM\n                generate_series(\n                  array_lower(string_to_array(current_setting(\'search_path\'),\',\'),1),\n                  array_upper(string_to_array(current_setting(\'search_path\'),\',\'),1)\n                ) as i,\n                string_to_array(current_setting(\'search_path\'),\',\') s\n              )\n          THEN quote_ident(table_name)\n          ELSE quote_ident(table_schema) || \'.\' || quote_ident(table_name)\n        END AS "table"\n        FROM information_schema.tables\n        WHERE quote_ident(table_schema) NOT IN (\'information_schema\',\n                                 \'pg_catalog\',\n                                 \'_timescaledb_cache\',\n                                 \'_timescaledb_catalog\',\n                                 \'_timescaledb_internal\',\n                                 \'_timescaledb_config\',\n                                 \'timescaledb_information\',\n                                 \'timescaledb_experimental\')\n        ORDER BY CASE WHEN\n              quote_ident(table_schema) IN (\n              SELECT\n                CASE WHEN trim(s[i]) = \'"$user"\' THEN user ELSE trim(s[i]) END\n              FROM\n                generate_series(\n                  array_lower(string_to_array(current_setting(\'search_path\'),\',\'),1),\n                  array_upper(string_to_array(current_setting(\'search_path\'),\',\'),1)\n                ) as i,\n                string_to_array(current_setting(\'search_path\'),\',\') s\n              ) THEN 0 ELSE 1 END, 1', 'SELECT quote_ident(column_name) AS "column", data_type AS "type"\n        FROM information_schema.columns\n        WHERE\n          CASE WHEN array_length(parse_ident(\'public.games\'),1) = 2\n            THEN quote_ident(table_schema) = (parse_ident(\'public.games\'))[1]\n              AND quote_ident(table_name) = (parse_ident(\'public.games\'))[2]\n            ELSE quote_ident(table_name) = \'public.games\'\n              AND\n              quote_ident(table_schema) IN (\n              SELECT\n                CASE WHEN trim(s[i]) = \'"$user"\' THEN user ELSE trim(s[i]) END\n              FROM\n                generate_series(\n                  array_lower(string_to_array(current_setting(\'search_path\'),\',\'),1),\n                  array_upper(string_to_array(current_setting(\'search_path\'),\',\'),1)\n                ) as i,\n                string_to_array(current_setting(\'search_path\'),\',\') s\n              )\n          END']
METABASE = ['SET extra_float_digits = 2', "SET application_name = 'Metabase v0.55.1 [f8f63fdf-d8f8-4573-86ea-4fe4a9548041]'", 'SHOW TRANSACTION ISOLATION LEVEL', 'SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED', 'SELECT nspname AS "TABLE_SCHEM", current_database() AS "TABLE_CATALOG" FROM pg_catalog.pg_namespace  WHERE nspname <> \'pg_toast\' AND (nspname !~ \'^pg_temp_\'  OR nspname = (pg_catalog.current_schemas(true))[1]) AND (nspname !~ \'^pg_toast_temp_\'  OR nspname = replace((pg_catalog.current_schemas(true))[1], \'pg_temp_\', \'pg_toast_temp_\'))  ORDER BY "TABLE_SCHEM"', 'with table_privileges as (\n         select\n           NULL as role,\n           t.schemaname as schema,\n           t.objectname as table,\n           pg_catalog.has_any_column_privilege(current_user, \'"\' || replace(t.schemaname, \'"\', \'""\') || \'"\' || \'.\' || \'"\' || replace(t.objectname, \'"\', \'""\') || \'"\',  \'update\') as update,\n           pg_catalog.has_any_column_privilege(current_user, \'"\' || replace(t.schemaname, \'"\', \'""\') || \'"\' || \'.\' || \'"\' || replace(t.objectname, \'"\', \'""\') || \'"\',  \'select\') as select,\n           pg_catalog.has_any_column_privilege(current_user, \'"\' || replace(t.schemaname, \'"\', \'""\') || \'"\' || \'.\' || \'"\' || replace(t.objectname, \'"\', \'""\') || \'"\',  \'insert\') as insert,\n           pg_catalog.has_table_privilege(     current_user, \'"\' || replace(t.schemaname, \'"\', \'""\') || \'"\' || \'.\' || \'"\' || replace(t.objectname, \'"\', \'""\') || \'"\',  \'delete\') as delete\n         from (\n           select schemaname, tablename as objectname from pg_catalog.pg_tables\n           union\n           select schemaname, viewname as objectname from pg_catalog.pg_views\n           union\n           select schemaname, matviewname as objectname from pg_catalog.pg_matviews\n         ) t\n         where t.schemaname !~ \'^pg_\'\n           and t.schemaname <> \'information_schema\'\n           and pg_catalog.has_schema_privilege(current_user, t.schemaname, \'usage\')\n        )\n        select t.*\n        from table_privileges t', 'SELECT "n"."nspname" AS "schema", "c"."relname" AS "name", CASE "c"."relkind" WHEN \'r\' THEN \'TABLE\' WHEN \'p\' THEN \'PARTITIONED TABLE\' WHEN \'v\' THEN \'VIEW\' WHEN \'f\' THEN \'FOREIGN TABLE\' WHEN \'m\' THEN \'MATERIALIZED VIEW\' ELSE NULL END AS "type", "d"."description" AS "description", "stat"."n_live_tup" AS "estimated_row_count" FROM "pg_catalog"."pg_class" AS "c" INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "c"."relnamespace" = "n"."oid" LEFT JOIN "pg_catalog"."pg_description" AS "d" ON ("c"."oid" = "d"."objoid") AND ("d"."objsubid" = \'0\') AND ("d"."classoid" = \'pg_class\'::regclass) LEFT JOIN "pg_stat_user_tables" AS "stat" ON ("n"."nspname" = "stat"."schemaname") AND ("c"."relname" = "stat"."relname") WHERE ("c"."relnamespace" = "n"."oid") AND ("n"."nspname" !~ \'^pg_\') AND ("n"."nspname" <> \'information_schema\') AND c.relkind in (\'r\', \'p\', \'v\', \'f\', \'m\') AND ("n"."nspname" IN (\'public\')) ORDER BY "type" ASC, "schema" ASC, "name" ASC', 'SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED', 'SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ UNCOMMITTED', 'show timezone']


def test_grafana_and_metabase_start_up_and_browsing_queries_answer(bi):
    _, _, table, _, _, _ = bi
    for sql in GRAFANA + METABASE:
        r = psql(bi, "-A", "-t", "-c", sql)
        assert r.returncode == 0, (sql, r.stderr)
    with pg_connect(bi, autocommit=True) as conn:
        for sql in GRAFANA + METABASE:
            conn.execute(sql)
        grafana_tables = [r[0] for r in conn.execute(GRAFANA[0]).fetchall()]
        # Grafana shows a table outside its search_path schema-qualified; either name queries.
        assert table in grafana_tables or f"public.{table}" in grafana_tables, grafana_tables
        metabase_tables = [r[1] for r in conn.execute(METABASE[-4]).fetchall()]
        assert table in metabase_tables, metabase_tables
