"""A rebalance while workers hold unflushed buffers: two workers buffer a stream (their flush
interval is long), a third joins mid-stream, the group's eager rebalance takes partitions from
the first two while their buffers hold records, and the stream goes on. Every record still
becomes exactly one row, with each partition's offsets contiguous from 0, and every worker
ends cleanly."""
import time
import uuid

from conftest import Lake, Worker, create_topic, log_record, produce

PARTITIONS = 6
HOSTS = ["web-1", "web-2", "db-1", "cache-1"]


def test_a_third_worker_joining_while_buffers_are_held_loses_and_doubles_nothing(stack, tmp_path, workers):
    topic = f"rebal-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, PARTITIONS)
    # Flushes only by time, and rarely: at the join, records are held in memory, not committed.
    lake = Lake(stack, "s3", [topic], tmp_path, ingest={"max_latency": "15s"})
    table = topic.replace("-", "_")
    a, b = Worker(lake, "a"), Worker(lake, "b")
    workers += [a, b]

    sent = 0

    def wave(n=240):
        nonlocal sent
        records = []
        for i in range(sent, sent + n):
            host = HOSTS[i % len(HOSTS)]
            ts = f"2026-03-02T{10 + i % 3:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z"
            records.append((i % PARTITIONS, host.encode(), log_record(ts, host, i)))
        produce(stack, topic, records)
        sent += n

    def buffered(w):
        return w.metrics().get("loglake_ingest_buffered_bytes", 0)

    # Both workers take partitions and buffer records.
    deadline = time.time() + 60
    while not (buffered(a) > 0 and buffered(b) > 0):
        assert time.time() < deadline, f"both workers never held buffers\n{a.tail()}\n{b.tail()}"
        a.assert_alive(), b.assert_alive()
        wave()
        time.sleep(0.5)
    held_at_join = sent
    assert lake.count(table) < held_at_join, "the join must come while records are only buffered"

    c = Worker(lake, "c")
    workers.append(c)
    # The stream goes on through the rebalance.
    for _ in range(12):
        wave()
        time.sleep(0.5)
    lake.wait_count(table, sent, timeout=180, workers=workers)

    for w in (a, b):
        w.log.flush()
        assert "partitions revoked" in w.log_path.read_text(), w.tail()
    # Each partition's offsets 0..n-1 exactly once.
    rows = lake.query(f"SELECT _kafka_partition AS p, count(*) AS n, count(DISTINCT _kafka_offset) AS d, "
                      f"min(_kafka_offset) AS lo, max(_kafka_offset) AS hi FROM {table} GROUP BY 1 ORDER BY 1")
    assert len(rows) == PARTITIONS, rows
    for r in rows:
        assert r["n"] == r["d"] == r["hi"] + 1 and r["lo"] == 0, r
    assert sum(r["n"] for r in rows) == sent
    assert lake.scalar(f"SELECT count(DISTINCT message) FROM {table}") == sent
    # Nothing more arrives later (a buffer flushed twice would add rows after the count matched).
    time.sleep(3)
    assert lake.count(table) == sent
    assert [w.stop() for w in workers] == [0, 0, 0]
    c_log = c.log_path.read_text()
    assert "committed" in c_log, "the third worker must have taken partitions"
    print(f"records: {sent}, of which {held_at_join} were produced before the third worker joined")
