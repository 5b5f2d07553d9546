"""A topic keyed by request ids: its records carry no host, so the host falls back to a key
that is new for every record. Ingest must stay within its memory budget and write a bounded
number of files, however many flushes it takes — past `max_open_partitions` hosts in an hour
the records go to the `_overflow` host, their own host kept in `attributes` — and lose
nothing."""
import json
import time
import uuid

import pyarrow as pa
from deltalake import DeltaTable

from conftest import Lake, Worker, create_topic, produce

N = 12_000
CAP = 300


def test_a_topic_keyed_by_request_ids_stays_bounded(stack, tmp_path, workers):
    topic = f"uuidkeys-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "s3", [topic], tmp_path,
                ingest={"memory_budget": "64MiB", "max_open_partitions": CAP, "max_latency": "2s"})
    keys = [uuid.uuid4().hex for _ in range(N)]
    records = [(i % 2, keys[i].encode(),
                json.dumps({"timestamp": f"2026-03-10T{10 + i % 2:02d}:{i % 60:02d}:00Z",
                            "level": "INFO", "message": f"request {i}", "seq": i}).encode())
               for i in range(N)]
    w = Worker(lake)
    workers.append(w)
    table = topic.replace("-", "_")
    # Two waves, so that the hours are written by more than one flush.
    produce(stack, topic, records[:N // 2])
    lake.wait_count(table, N // 2, timeout=180, workers=[w])
    produce(stack, topic, records[N // 2:])
    lake.wait_count(table, N, timeout=180, workers=[w])
    overflow = w.metrics()["loglake_ingest_overflow_rows_total"]
    assert w.stop() == 0
    # The operator is told, once for the hour, which topic reached the cap.
    warnings = [line for line in w.log_path.read_text().splitlines()
                if "hosts go to the _overflow host" in line]
    assert len(warnings) == 1 and topic in warnings[0], warnings

    dt = DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options())
    rows = dt.to_pyarrow_table().to_pylist()
    # Nothing lost, nothing doubled.
    assert sorted((r["_kafka_partition"], r["_kafka_offset"]) for r in rows) == \
        sorted((p, o) for p in (0, 1) for o in range(N // 2))
    # Every record's own host is there: as its partition, or kept beside the overflow host.
    hosts = set()
    for r in rows:
        if r["host"] == "_overflow":
            hosts.add(json.loads(r["attributes"])["_original_host"])
        else:
            hosts.add(r["host"])
    assert hosts == set(keys)
    assert overflow == sum(1 for r in rows if r["host"] == "_overflow") > 0
    # The cap holds over every flush of the hour the test takes: CAP hosts of their own.
    assert len({r["host"] for r in rows if r["host"] != "_overflow"}) == CAP

    # Files per commit are bounded by the cap (twice it, at most), however many keys.
    per_commit = []
    for version in range(dt.version() + 1):
        at = DeltaTable(lake.table_uri(topic), version=version, storage_options=lake.storage_options())
        per_commit.append(pa.table(at.get_add_actions(flatten=True)).num_rows)
    added = [b - a for a, b in zip([0] + per_commit, per_commit) if b > a]
    print(f"files added per commit: {added}; rows under _overflow: {int(overflow)} of {N}")
    assert len(added) >= 2 and max(added) <= 2 * CAP, added
    assert sum(added) <= 2 * CAP + 2 * len(added), "one overflow file per hour and flush"
