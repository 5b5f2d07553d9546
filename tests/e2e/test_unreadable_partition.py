"""A partition that cannot be read is never silent. A record batch no client can decode (a
zstd-flagged batch of garbage, written with the raw protocol) sits between good records:

- with skipping off, the partition is reported stalled (metric, ERROR log naming the offset,
  /healthz failing) and nothing after the batch is archived;
- with skipping on, the batch's offsets are quarantined as `undecodable_batch`, the records
  after it are archived, and every offset is accounted for exactly once."""
import json
import time
import urllib.error
import urllib.request
import uuid

from conftest import Lake, Worker, create_topic, log_record, produce
from kafka_raw import produce_undecodable_batch

BAD = 3


def good(start, n):
    return [(0, b"web-1", log_record(f"2026-06-01T08:00:{i:02d}Z", "web-1", i)) for i in range(start, start + n)]


def healthz(worker):
    try:
        return urllib.request.urlopen(worker.metrics_url() + "/healthz", timeout=5).status, ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(predicate, what, worker, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        worker.assert_alive()
        time.sleep(0.5)
    raise AssertionError(f"{what} after {timeout}s\n{worker.tail()}")


def test_undecodable_batch_is_reported_then_quarantined(stack, tmp_path, workers):
    topic = f"unreadable-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 1)
    produce(stack, topic, good(0, 5))
    base = produce_undecodable_batch(stack["LOGLAKE_KAFKA_BROKERS"], topic, 0, records=BAD, codec=4)
    assert base == 5
    produce(stack, topic, good(100, 5))
    table = topic.replace("-", "_")
    ingest = {"stall_after": "2s", "stall_unhealthy_after": "4s", "undecodable_attempts": 0}
    lake = Lake(stack, "local", [topic], tmp_path, ingest=ingest)

    # Skipping off: stuck at offset 5, and loudly so.
    w = Worker(lake, "stuck")
    workers.append(w)
    lake.wait_count(table, 5, workers=[w])
    stalled = f'loglake_ingest_partition_stalled{{topic="{topic}",partition="0"}}'
    wait_for(lambda: w.metrics().get(stalled) == 1, "no stall reported", w)
    wait_for(lambda: healthz(w)[0] == 503, "/healthz still 200", w)
    status, why = healthz(w)
    assert f"{topic}[0]" in why, why
    m = w.metrics()
    assert m.get('loglake_ingest_consumer_errors_total{code="BadCompression"}', 0) >= 1, m
    assert m.get(f'loglake_ingest_partition_stalls_total{{topic="{topic}",partition="0"}}') == 1, m
    log = w.log_path.read_text()
    stall_lines = [line for line in log.splitlines() if "partition stalled" in line]
    assert stall_lines and "offset=5" in stall_lines[0] and "ERROR" in stall_lines[0], stall_lines
    assert lake.count(table) == 5
    assert w.stop() == 0

    # Skipping on: the batch is probed, quarantined by offset, and the partition moves on.
    lake.config.write_text(lake.config.read_text().replace("undecodable_attempts = 0", "undecodable_attempts = 2"))
    w2 = Worker(lake, "skips")
    workers.append(w2)
    lake.wait_count(table, 10, workers=[w2])
    lake.wait_count(f"{table}__rejected", BAD, workers=[w2])
    wait_for(lambda: w2.metrics().get("loglake_ingest_undecodable_batches_total") == 1, "batch not counted", w2)
    wait_for(lambda: healthz(w2)[0] == 200, "/healthz still failing", w2)
    assert w2.stop() == 0

    rejected = lake.query(f"SELECT _kafka_offset AS o, reason_code AS code, reason, raw IS NULL AS no_raw FROM {table}__rejected ORDER BY o")
    assert [r["o"] for r in rejected] == [5, 6, 7]
    assert {r["code"] for r in rejected} == {"undecodable_batch"}
    assert all(r["no_raw"] for r in rejected)
    assert "offsets 5..=7" in rejected[0]["reason"], rejected[0]["reason"]
    offsets = sorted(r["o"] for r in lake.query(f"SELECT _kafka_offset AS o FROM {table}"))
    assert offsets == [0, 1, 2, 3, 4, 8, 9, 10, 11, 12]
    seqs = sorted(json.loads(a)["seq"] for a in
                  (r["a"] for r in lake.query(f"SELECT attributes AS a FROM {table}")))
    assert seqs == list(range(5)) + list(range(100, 105))
