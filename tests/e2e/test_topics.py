"""One worker archives many topics, chosen by a pattern, including topics created after it
started; each topic is its own table."""
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
