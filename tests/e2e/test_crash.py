"""SIGKILL an ingest worker again and again while records stream in: still exactly once."""
import random
import threading
import time
import uuid

from conftest import Lake, Worker, create_topic, log_record, produce


def test_sigkill_mid_stream_keeps_exactly_once(stack, tmp_path, workers):
    topic = f"crash-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 4)
    lake = Lake(stack, "file", [topic], tmp_path, ingest={"max_latency": "700ms"})
    total, chunk = 12000, 400
    rng = random.Random(5)

    def feed():
        for start in range(0, total, chunk):
            produce(stack, topic, [(i % 4, b"h%d" % (i % 5),
                                    log_record(f"2026-03-02T0{i % 3}:00:{i % 60:02d}Z", f"h{i % 5}", i))
                                   for i in range(start, start + chunk)])
            time.sleep(0.25)

    feeder = threading.Thread(target=feed)
    feeder.start()
    kills = 0
    while kills < 5:
        w = Worker(lake, f"k{kills}")
        workers.append(w)
        time.sleep(rng.uniform(3.0, 6.0))
        w.assert_alive()
        w.kill()
        kills += 1
    feeder.join()
    last = Worker(lake, "final")
    workers.append(last)
    lake.wait_count(topic.replace("-", "_"), total, timeout=180, workers=[last])
    assert last.stop() == 0
    t = topic.replace("-", "_")
    assert lake.scalar(f"SELECT count(*) FROM (SELECT DISTINCT _kafka_partition, _kafka_offset FROM {t}) d") == total
    assert lake.scalar(f"SELECT count(DISTINCT attributes) FROM {t}") == total
