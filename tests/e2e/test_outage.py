"""A frozen S3 server or broker delays ingest; it neither loses data nor kills the worker. A
commit whose answer is lost is recognised as the worker's own."""
import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import Lake, Worker, create_topic, free_port, freeze, log_record, produce, thaw

HERE = Path(__file__).parent


def batch(start, n):
    return [(i % 3, b"h1", log_record(f"2026-03-04T01:00:{i % 60:02d}Z", "h1", i)) for i in range(start, start + n)]


def test_s3_and_broker_outages_lose_nothing(stack, tmp_path, workers):
    topic = f"outage-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 3)
    lake = Lake(stack, "s3", [topic], tmp_path)
    table = topic.replace("-", "_")
    w = Worker(lake)
    workers.append(w)
    produce(stack, topic, batch(0, 1000))
    lake.wait_count(table, 1000, workers=[w])

    moto = int(stack["MOTO_PID"])
    freeze(moto)
    try:
        produce(stack, topic, batch(1000, 1000))
        time.sleep(8)
        w.assert_alive()
    finally:
        thaw(moto)
    lake.wait_count(table, 2000, timeout=180, workers=[w])

    tansu = int(stack["TANSU_PID"])
    freeze(tansu)
    try:
        time.sleep(6)
        w.assert_alive()
    finally:
        thaw(tansu)
    produce(stack, topic, batch(2000, 1000))
    lake.wait_count(table, 3000, timeout=180, workers=[w])
    # The table can show a commit a moment before the worker has counted it.
    deadline = time.time() + 15
    while (m := w.metrics())["loglake_ingest_rows_written_total"] < 3000 and time.time() < deadline:
        time.sleep(0.2)
    assert m["loglake_ingest_rows_written_total"] == 3000
    assert m["loglake_ingest_commit_conflicts_total"] == 0
    assert w.stop() == 0
    assert lake.scalar(f"SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {table}) d") == 3000


def test_a_commit_whose_answer_is_lost_is_the_workers_own_not_a_conflict(stack, tmp_path, workers):
    """S3 wrote the commit but the worker did not hear so: a 500 that object_store retries into
    "already exists", then a connection closed before the answer. The worker reads the commit
    back, finds its own bytes and goes on: no conflict, no buffer dropped and read again."""
    topic = f"lostack-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 3)
    port = free_port()
    proxy = subprocess.Popen([sys.executable, str(HERE / "s3_ignoring_proxy.py"), str(port),
                              stack["LOGLAKE_S3_ENDPOINT"], "--lose-commits", "2"])
    try:
        lake = Lake(stack, "s3", [topic], tmp_path, ingest={"max_latency": "300ms"})
        direct = lake.config.read_text()
        table = topic.replace("-", "_")
        # The table is created (its first commit) straight against the S3 server.
        produce(stack, topic, batch(0, 10))
        w = Worker(lake)
        workers.append(w)
        lake.wait_count(table, 10, workers=[w])
        assert w.stop() == 0
        time.sleep(0.5)
        lake.config.write_text(direct.replace(stack["LOGLAKE_S3_ENDPOINT"], f"http://127.0.0.1:{port}"))
        w = Worker(lake, "through-proxy")
        workers.append(w)
        sent = 10
        for wave in range(4):
            produce(stack, topic, batch(sent, 100))
            sent += 100
            lake.wait_count(table, sent, timeout=120, workers=[w])
        log = w.log_path.read_text()
        assert log.count("the store had written this commit although its request failed") == 2, w.tail()
        assert "another writer committed" not in log, w.tail()
        assert w.metrics()["loglake_ingest_commit_conflicts_total"] == 0
        assert w.stop() == 0
    finally:
        proxy.kill()
        proxy.wait()
    lake.config.write_text(direct)
    assert lake.scalar(f"SELECT count(*) FROM {table}") == sent
    assert lake.scalar(f"SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {table}) d") == sent
