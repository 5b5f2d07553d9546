#!/usr/bin/env python3
"""Feed log records into a Kafka topic.

  feed.py --brokers B --topic T [--partitions N] loghub DIR     JSON records built from loghub samples
  feed.py --brokers B --topic T --count N generate              synthetic JSON log records
  feed.py --brokers B --topic T lines FILE                      each line of FILE as is (text logs)

Each record is a JSON object in the shape common shippers send (timestamp, host, level,
message, plus extra fields), keyed by host. Prints how many records and bytes were sent.
"""
import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

HOSTS = ["web-1", "web-2", "db-1", "cache-1", "batch-7"]
LEVELS = ["INFO"] * 8 + ["WARN", "ERROR", "DEBUG"]


def ensure_topic(brokers, topic, partitions):
    admin = AdminClient({"bootstrap.servers": brokers})
    if topic in admin.list_topics(timeout=10).topics:
        return
    for _, f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).items():
        try:
            f.result()
        except Exception as e:  # already exists is fine
            if "already exists" not in str(e).lower() and "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def loghub_lines(directory):
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".log"):
            continue
        source = name.split("_")[0].lower()
        with open(os.path.join(directory, name), "rb") as f:
            for raw in f:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line:
                    yield source, line


def records_from_loghub(directory, repeat, base):
    lines = list(loghub_lines(directory))
    rng = random.Random(7)
    n = 0
    for r in range(repeat):
        for source, line in lines:
            ts = base + timedelta(seconds=n // 50)
            level = next((w for w in ("ERROR", "WARN", "INFO", "DEBUG", "FATAL") if w in line), "INFO")
            yield {
                "@timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "host": HOSTS[rng.randrange(len(HOSTS))],
                "level": level,
                "message": line,
                "service": source,
                "pid": 1000 + rng.randrange(500),
                "trace_id": "%016x" % rng.getrandbits(64),
            }
            n += 1


def records_generated(count, base):
    rng = random.Random(11)
    for n in range(count):
        ts = base + timedelta(milliseconds=n * 7)
        yield {
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "host": HOSTS[n % len(HOSTS)],
            "level": LEVELS[rng.randrange(len(LEVELS))],
            "msg": "request %d served path=/api/v1/items/%d status=%d took=%dms"
            % (n, rng.randrange(10000), rng.choice([200, 200, 200, 404, 500]), rng.randrange(900)),
            "request_id": "%016x" % rng.getrandbits(64),
            "user": {"id": rng.randrange(100000), "plan": rng.choice(["free", "pro"])},
        }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default=os.environ.get("LOGLAKE_KAFKA_BROKERS"))
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="loghub: passes over the samples")
    ap.add_argument("--count", type=int, default=10000, help="generate: records")
    ap.add_argument("--base", default="2026-01-02T00:00:00+00:00", help="event time of the first record")
    ap.add_argument("--dump", help="also write every payload, one per line, to this file")
    ap.add_argument("source", choices=["loghub", "generate", "lines"])
    ap.add_argument("dir", nargs="?")
    a = ap.parse_args()
    if not a.brokers:
        sys.exit("feed.py: --brokers or LOGLAKE_KAFKA_BROKERS is required")
    ensure_topic(a.brokers, a.topic, a.partitions)
    base = datetime.fromisoformat(a.base).astimezone(timezone.utc)
    if a.source == "loghub":
        if not a.dir or not os.path.isdir(a.dir):
            sys.exit(f"feed.py: loghub directory {a.dir!r} not found")
        records = records_from_loghub(a.dir, a.repeat, base)
    elif a.source == "lines":
        if not a.dir or not os.path.isfile(a.dir):
            sys.exit(f"feed.py: file {a.dir!r} not found")
        records = ({"host": HOSTS[i % len(HOSTS)], "raw": line.rstrip(b"\n")}
                   for i, line in enumerate(open(a.dir, "rb")) if line.strip())
    else:
        records = records_generated(a.count, base)
    p = Producer({"bootstrap.servers": a.brokers, "linger.ms": 20, "batch.size": 1000000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 500000})
    sent = nbytes = 0
    dump = open(a.dump, "wb") if a.dump else None
    t0 = time.time()
    for rec in records:
        value = rec["raw"] if "raw" in rec else json.dumps(rec, separators=(",", ":")).encode()
        while True:
            try:
                p.produce(a.topic, key=rec["host"].encode(), value=value)
                break
            except BufferError:
                p.poll(0.1)
        sent += 1
        nbytes += len(value)
        if dump:
            dump.write(value + b"\n")
        if sent % 10000 == 0:
            p.poll(0)
    if dump:
        dump.close()
    left = p.flush(120)
    if left:
        sys.exit(f"feed.py: {left} records were not acknowledged by the broker")
    print(json.dumps({"records": sent, "bytes": nbytes, "seconds": round(time.time() - t0, 3)}))


if __name__ == "__main__":
    main()
