"""Malformed, non-UTF-8, huge and wrongly typed records among good ones: the good ones are
archived, the bad ones quarantined with their raw bytes and reason, counts are conserved and
the worker keeps running."""
import collections
import json
import time
import uuid

from deltalake import DeltaTable

from conftest import Lake, Worker, create_topic, log_record, produce


def test_bad_records_are_quarantined_and_counts_conserved(stack, tmp_path, workers):
    topic = f"mixed-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / f"{topic}.toml").write_text(
        'max_record_bytes = 65536\n[[columns]]\nname = "status"\ntype = "int64"\n')
    lake = Lake(stack, "s3", [topic], tmp_path, schemas_dir=schemas)
    table = topic.replace("-", "_")

    bad = {
        "malformed_json": [b'{"message": "cut short', b'{"a":1,,}'],
        "invalid_utf8": [b"\xff\xfe plain text with bad bytes", b'{"message": "caf\xe9"}'],
        "too_large": [json.dumps({"message": "x" * 100_000}).encode()],
        "wrong_type": [b'{"message": "teapot", "status": "four hundred eighteen"}', b'{"status": [1]}'],
        "empty": [None, b""],
    }
    records, good = [], 0
    for i in range(600):
        if i % 50 == 7:
            records.append((i % 2, b"web-1", b"a plain text line INFO with no JSON at all %d" % i))
        else:
            records.append((i % 2, b"web-1", log_record(f"2026-03-03T05:00:{i % 60:02d}Z", "web-1", i, status=200 + i % 3)))
        good += 1
        if i % 60 == 0:
            for code, payloads in bad.items():
                for payload in payloads:
                    records.append((i % 2, b"web-1", payload))
    n_bad = sum(len(v) for v in bad.values()) * 10
    assert len(records) == good + n_bad

    w = Worker(lake)
    workers.append(w)
    produce(stack, topic, records)
    lake.wait_count(table, good, workers=[w])
    lake.wait_count(f"{table}__rejected", n_bad, workers=[w])

    reasons = {r["reason_code"]: r["n"] for r in lake.query(
        f"SELECT reason_code, count(*) AS n FROM {table}__rejected GROUP BY reason_code")}
    assert reasons == {code: len(p) * 10 for code, p in bad.items()}
    detail = lake.scalar(f"SELECT reason FROM {table}__rejected WHERE reason_code = 'wrong_type' LIMIT 1")
    assert "status" in detail and "Int64" in detail, detail
    assert lake.scalar(f"SELECT count(*) FROM {table} WHERE status IS NOT NULL") == good - 12
    assert lake.scalar(f"SELECT count(*) FROM {table} WHERE message LIKE 'a plain text line%'") == 12

    # Raw bytes are kept exactly, with their coordinates.
    dt = DeltaTable(lake.table_uri(f"{topic}__rejected"), storage_options=lake.storage_options()).to_pyarrow_table()
    raws = collections.Counter(r for r in dt["raw"].to_pylist())
    assert raws[b"\xff\xfe plain text with bad bytes"] == 10
    assert raws[None] + raws[b""] == 20, "tombstones and empty values are kept as they came"
    coords = set(zip(dt["_kafka_partition"].to_pylist(), dt["_kafka_offset"].to_pylist()))
    assert len(coords) == n_bad

    # Still running: more good records still arrive.
    produce(stack, topic, [(0, b"web-2", log_record("2026-03-03T06:00:00Z", "web-2", 10_000 + i)) for i in range(50)])
    lake.wait_count(table, good + 50, workers=[w])
    deadline = time.time() + 15
    while (m := w.metrics())["loglake_ingest_rows_written_total"] < good + 50 and time.time() < deadline:
        time.sleep(0.2)
    assert m["loglake_ingest_quarantined_total"] == n_bad
    assert m["loglake_ingest_records_total"] == good + 50 + n_bad
    assert m["loglake_ingest_rows_written_total"] == good + 50
    assert w.stop() == 0
