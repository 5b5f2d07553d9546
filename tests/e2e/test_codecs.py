"""Producers configured the way production clients are: each compression codec Kafka knows
(none, gzip, snappy, lz4, zstd) writes into one topic, two workers archive it, and every
record is there exactly once."""
import collections
import json
import uuid

from confluent_kafka import Producer

from conftest import Lake, Worker, create_topic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PER_CODEC = 1500
PARTITIONS = 4


def produce_compressed(stack, topic, codec, start):
    p = Producer({"bootstrap.servers": stack["LOGLAKE_KAFKA_BROKERS"], "compression.type": codec,
                  "linger.ms": 20, "batch.num.messages": 500})
    for i in range(start, start + PER_CODEC):
        host = f"web-{i % 3}"
        value = json.dumps({"timestamp": f"2026-04-02T07:{(i // 60) % 60:02d}:{i % 60:02d}Z", "host": host,
                            "level": "INFO", "message": f"event {i} sent with {codec}", "seq": i, "codec": codec})
        p.produce(topic, key=host.encode(), value=value.encode(), partition=i % PARTITIONS)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(60) == 0, f"{codec}: broker did not acknowledge every record"


def test_every_codec_is_archived_exactly_once(stack, tmp_path, workers):
    topic = f"codecs-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, PARTITIONS)
    lake = Lake(stack, "local", [topic], tmp_path)
    table = topic.replace("-", "_")
    workers += [Worker(lake, "a"), Worker(lake, "b")]
    for n, codec in enumerate(CODECS):
        produce_compressed(stack, topic, codec, n * PER_CODEC)
    total = PER_CODEC * len(CODECS)
    lake.wait_count(table, total, workers=workers)
    metrics = [w.metrics() for w in workers]
    assert [w.stop() for w in workers] == [0, 0]

    assert lake.count(f"{table}__rejected") == 0
    assert lake.scalar(f"SELECT count(*) FROM (SELECT _kafka_partition, _kafka_offset FROM {table} "
                       f"GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
    per_codec = {r["codec"]: r["n"] for r in lake.query(
        f"SELECT substr(message, strpos(message, 'with ') + 5) AS codec, count(*) AS n FROM {table} GROUP BY 1")}
    assert per_codec == {c: PER_CODEC for c in CODECS}
    seqs = [r["m"] for r in lake.query(f"SELECT CAST(split_part(message, ' ', 2) AS BIGINT) AS m FROM {table}")]
    assert collections.Counter(seqs) == collections.Counter(range(total))
    # No decode error on the way, and nothing stalled.
    for m in metrics:
        assert not any(k.startswith("loglake_ingest_consumer_errors_total") and v for k, v in m.items()), m
        assert not any(k.startswith("loglake_ingest_partition_stalled") and v for k, v in m.items()), m
