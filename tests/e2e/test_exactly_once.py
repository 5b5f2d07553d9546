"""Two workers, four partitions, three hosts, three event hours plus late records: every
record becomes exactly one row, laid out by topic/host/date/hour, readable by delta-rs's
Python reader and pyarrow with the same answer."""
import collections
import uuid

import boto3
import pyarrow.compute as pc
from deltalake import DeltaTable

from conftest import Lake, Worker, create_topic, log_record, produce

HOSTS = ["web-1", "web-2", "db-1"]


def make(hour, start, count):
    out = []
    for i in range(start, start + count):
        host = HOSTS[i % 3]
        ts = f"2026-03-01T{hour}:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
        out.append((i % 4, host.encode(), log_record(ts, host, i), (host, hour)))
    return out


def test_two_workers_on_s3_archive_every_record_exactly_once(stack, tmp_path, workers):
    topic = f"app-logs-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 4)
    lake = Lake(stack, "s3", [topic], tmp_path)
    table = topic.replace("-", "_")
    workers += [Worker(lake, "a"), Worker(lake, "b")]

    wave1 = make("10", 0, 1500) + make("11", 1500, 1500) + make("12", 3000, 1500)
    produce(stack, topic, [(p, k, v) for p, k, v, _ in wave1])
    lake.wait_count(table, len(wave1), workers=workers)
    # Late records for hour 10 arrive after hours 11 and 12 were archived.
    wave2 = make("10", 4500, 700) + make("12", 5200, 800)
    produce(stack, topic, [(p, k, v) for p, k, v, _ in wave2])
    total = len(wave1) + len(wave2)
    lake.wait_count(table, total, workers=workers)

    logs = [w.log_path for w in workers]
    assert [w.stop() for w in workers] == [0, 0]
    for log in logs:
        text = log.read_text()
        assert "committed" in text, f"{log} never committed: both workers must share the partitions"

    assert lake.scalar(f"SELECT count(*) FROM (SELECT _kafka_partition, _kafka_offset FROM {table} "
                       f"GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
    expected = collections.Counter(key for *_, key in wave1 + wave2)
    got = {(r["host"], r["hour"]): r["n"] for r in
           lake.query(f"SELECT host, hour, count(*) AS n FROM {table} GROUP BY host, hour")}
    assert got == dict(expected)
    assert lake.scalar(f"SELECT count(DISTINCT date) FROM {table}") == 1

    s3 = boto3.client("s3", endpoint_url=stack["LOGLAKE_S3_ENDPOINT"], region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    prefix = f"e2e-{lake.id}/{topic}/"
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="loglake", Prefix=prefix)
            for o in page.get("Contents", [])]
    data = [k[len(prefix):] for k in keys if k.endswith(".parquet")]
    assert data, keys
    dirs = collections.Counter(k.rsplit("/", 1)[0] for k in data)
    assert set(dirs) == {f"host={h}/date=2026-03-01/hour={hh}" for h, hh in expected}, dirs
    assert all(dirs[f"host={h}/date=2026-03-01/hour=10"] >= 2 for h in HOSTS), "late records get files of their own"

    dt = DeltaTable(lake.table_uri(topic), storage_options=lake.storage_options())
    arrow = dt.to_pyarrow_table()
    assert arrow.num_rows == total
    pairs = set(zip(arrow["_kafka_partition"].to_pylist(), arrow["_kafka_offset"].to_pylist()))
    assert len(pairs) == total
    hosts = pc.value_counts(arrow["host"]).to_pylist()
    assert {h["values"]: h["counts"] for h in hosts} == {h: sum(v for (hh, _), v in expected.items() if hh == h) for h in HOSTS}
    # Offsets are contiguous per partition: nothing skipped.
    for p in range(4):
        offsets = sorted(o for pp, o in pairs if pp == p)
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
