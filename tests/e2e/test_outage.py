"""A frozen S3 server or broker delays ingest; it neither loses data nor kills the worker."""
import time
import uuid

from conftest import Lake, Worker, create_topic, freeze, log_record, produce, thaw


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
