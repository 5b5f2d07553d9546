"""One worker archives many topics, chosen by a pattern, including topics created after it
started; each topic is its own table. A worker that loses topics to another releases their
tables."""
import time
import uuid

from conftest import Lake, Worker, create_topic, log_record, produce


def test_topic_pattern_picks_up_new_topics(stack, tmp_path, workers):
    prefix = f"pat{uuid.uuid4().hex[:6]}"
    create_topic(stack, f"{prefix}-a", 2)
    lake = Lake(stack, "file", ["placeholder"], tmp_path,
                kafka_options={"topic.metadata.refresh.interval.ms": "1000"})
    lake.config.write_text(lake.config.read_text().replace('topics = ["placeholder"]', f'topic_pattern = "^{prefix}-.*"'))
    w = Worker(lake)
    workers.append(w)
    produce(stack, f"{prefix}-a", [(i % 2, b"h", log_record("2026-03-06T00:00:00Z", "h", i)) for i in range(300)])
    lake.wait_count(f"{prefix}_a", 300, workers=[w])

    create_topic(stack, f"{prefix}-b.logs", 1)
    produce(stack, f"{prefix}-b.logs", [(0, b"h", log_record("2026-03-06T00:00:00Z", "h", i)) for i in range(200)])
    lake.wait_count(f"{prefix}_b_logs", 200, timeout=90, workers=[w])
    assert lake.count(f"{prefix}_a") == 300
    tables = lake.run("tables").stdout.split()
    assert f"{prefix}_a" in tables and f"{prefix}_b_logs" in tables
    assert w.stop() == 0


def test_a_worker_releases_the_tables_of_topics_it_no_longer_owns(stack, tmp_path, workers):
    """A second worker joins: the first hands over one of its two topics and drops that table's
    snapshot (it does not keep every table it ever opened), and both keep archiving."""
    prefix = f"rel{uuid.uuid4().hex[:6]}"
    topics = [f"{prefix}-a", f"{prefix}-b"]
    for t in topics:
        create_topic(stack, t, 1)
    # Round robin hands one single-partition topic to each of two workers.
    lake = Lake(stack, "file", topics, tmp_path, kafka_options={"partition.assignment.strategy": "roundrobin"})
    tables = [t.replace("-", "_") for t in topics]
    key = "loglake_ingest_open_topics"

    def feed(start, n):
        for t in topics:
            produce(stack, t, [(0, b"h", log_record("2026-03-09T00:00:00Z", "h", i)) for i in range(start, start + n)])

    w1 = Worker(lake, "w1")
    workers.append(w1)
    feed(0, 100)
    for t in tables:
        lake.wait_count(t, 100, workers=[w1])
    assert w1.metrics()[key] == 2

    w2 = Worker(lake, "w2")
    workers.append(w2)
    deadline = time.time() + 90
    while time.time() < deadline:
        w1.assert_alive()
        w2.assert_alive()
        try:
            if w1.metrics().get(key) == 1 and w2.metrics().get(key) == 1:
                break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        raise AssertionError(f"open topics never split 1/1\n{w1.tail()}\n{w2.tail()}")
    assert "tables of topics no longer assigned released" in w1.log_path.read_text()

    feed(100, 50)
    for t in tables:
        lake.wait_count(t, 150, workers=[w1, w2])
    assert w1.stop() == 0 and w2.stop() == 0
