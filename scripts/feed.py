#!/usr/bin/env python3
"""Feed log records into a Kafka topic.

  feed.py --brokers B --topic T [--partitions N] loghub DIR     JSON records built from loghub samples
  feed.py --brokers B --topic T --count N generate              synthetic JSON log records
  feed.py --brokers B --topic T --count N generate-hdfs         synthetic HDFS text lines
  feed.py --brokers B --topic T lines FILE                      each line of FILE as is (text logs)

JSON records are objects in the shape common shippers send (timestamp, host, level, message,
plus extra fields), keyed by host. `generate-hdfs` writes plain-text lines in the HDFS
DataNode/NameNode format that schemas/examples/hdfs.toml parses
(`260102 000000 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_... terminating`),
keyed by the node that logged them. Every mode is deterministic: the same arguments send the
same records. `--compression` sets the producer's codec (librdkafka `compression.type`).
Prints how many records and (uncompressed) value bytes were sent.
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


def records_generated(count, base, span=None):
    """`count` records from `base` on, 7 ms apart, or spread evenly over `span` seconds."""
    rng = random.Random(11)
    step = timedelta(seconds=span) / count if span else timedelta(milliseconds=7)
    for n in range(count):
        ts = base + n * step
        yield {
            "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "host": HOSTS[n % len(HOSTS)],
            "level": LEVELS[rng.randrange(len(LEVELS))],
            "msg": "request %d served path=/api/v1/items/%d status=%d took=%dms"
            % (n, rng.randrange(10000), rng.choice([200, 200, 200, 404, 500]), rng.randrange(900)),
            "request_id": "%016x" % rng.getrandbits(64),
            "user": {"id": rng.randrange(100000), "plan": rng.choice(["free", "pro"])},
        }


# HDFS: one NameNode (FSNamesystem lines) and a handful of DataNodes, as in a small cluster.
HDFS_DATANODES = ["10.250.%d.%d" % (10 + i * 3, 100 + i * 17) for i in range(8)]
HDFS_NAMENODE = "hdfs-nn-1"
HDFS_JOBS = ["rand", "rand2", "randtxt", "randtxt3", "sort", "wordcount"]


def hdfs_node(ip):
    return "hdfs-dn-%d" % (HDFS_DATANODES.index(ip) + 1)


def records_hdfs(count, base):
    """Text lines `YYMMDD HHMMSS PID LEVEL component: message` following blocks through their
    life: allocation, replication to three DataNodes, reads, scans and deletion, with the mix
    of components and the occasional WARN of a real HDFS log."""
    rng = random.Random(13)
    blocks = []  # (block id, size, replica IPs) of blocks that exist
    ts = base
    pids = [rng.randrange(10, 300) for _ in range(24)]
    n = task = 0

    def line(host, level, component, message):
        raw = "%s %d %s %s: %s" % (ts.strftime("%y%m%d %H%M%S"), rng.choice(pids), level, component, message)
        return {"host": host, "raw": raw.encode()}

    while n < count:
        ts += timedelta(seconds=rng.choice([0, 0, 0, 1, 1, 2, 5]))
        roll = rng.random()
        if roll < 0.22 or len(blocks) < 4:
            # A new block: allocated by the NameNode, written through a pipeline of 3 DataNodes.
            blk = rng.randrange(-2**63, 2**63)
            size = rng.choice([67108864] * 6 + [rng.randrange(1, 67108864)])
            replicas = rng.sample(HDFS_DATANODES, 3)
            task += 1
            job = rng.choice(HDFS_JOBS)
            out = [line(HDFS_NAMENODE, "INFO", "dfs.FSNamesystem",
                        "BLOCK* NameSystem.allocateBlock: /user/root/%s/_temporary/_task_%s_0001_m_%06d_0/part-%05d. blk_%d"
                        % (job, base.strftime("%Y%m%d%H%M"), task % 1000, task % 1000, blk))]
            src = rng.choice(HDFS_DATANODES)
            for ip in replicas:
                out.append(line(hdfs_node(ip), "INFO", "dfs.DataNode$DataXceiver",
                                "Receiving block blk_%d src: /%s:%d dest: /%s:50010" % (blk, src, rng.randrange(32768, 61000), ip)))
                src = ip
            for r, ip in enumerate(replicas):
                out.append(line(hdfs_node(ip), "INFO", "dfs.DataNode$PacketResponder",
                                "Received block blk_%d of size %d from /%s" % (blk, size, rng.choice(HDFS_DATANODES))))
                out.append(line(hdfs_node(ip), "INFO", "dfs.DataNode$PacketResponder",
                                "PacketResponder %d for block blk_%d terminating" % (2 - r, blk)))
                out.append(line(HDFS_NAMENODE, "INFO", "dfs.FSNamesystem",
                                "BLOCK* NameSystem.addStoredBlock: blockMap updated: %s:50010 is added to blk_%d size %d"
                                % (ip, blk, size)))
            blocks.append((blk, size, replicas))
        elif roll < 0.55:
            blk, _, replicas = rng.choice(blocks)
            ip = rng.choice(replicas)
            reader = rng.choice(HDFS_DATANODES)
            if rng.random() < 0.5:
                out = [line(hdfs_node(ip), "WARN", "dfs.DataNode$DataXceiver",
                            "%s:50010:Got exception while serving blk_%d to /%s:" % (ip, blk, reader))]
            else:
                out = [line(hdfs_node(ip), "INFO", "dfs.DataNode$DataXceiver",
                            "%s:50010 Served block blk_%d to /%s" % (ip, blk, reader))]
        elif roll < 0.62:
            blk, _, replicas = rng.choice(blocks)
            out = [line(hdfs_node(rng.choice(replicas)), "INFO", "dfs.DataBlockScanner", "Verification succeeded for blk_%d" % blk)]
        elif roll < 0.64:
            blk, _, replicas = rng.choice(blocks)
            ip, to = replicas[0], rng.choice([d for d in HDFS_DATANODES if d not in replicas])
            out = [line(hdfs_node(ip), "INFO", "dfs.DataNode",
                        "%s:50010 Starting thread to transfer block blk_%d to %s:50010" % (ip, blk, to))]
        elif roll < 0.645:
            blk, _, replicas = rng.choice(blocks)
            ip = rng.choice(replicas)
            out = [line(hdfs_node(ip), "ERROR", "dfs.DataNode",
                        "%s:50010:DataXceiver: java.io.IOException: Block blk_%d is valid, and cannot be written to." % (ip, blk))]
        else:
            # The NameNode invalidates a block; each replica's DataNode deletes its file.
            blk, _, replicas = blocks.pop(rng.randrange(len(blocks)))
            out = []
            for ip in replicas:
                out.append(line(HDFS_NAMENODE, "INFO", "dfs.FSNamesystem",
                                "BLOCK* NameSystem.delete: blk_%d is added to invalidSet of %s:50010" % (blk, ip)))
            for ip in replicas:
                out.append(line(hdfs_node(ip), "INFO", "dfs.FSDataset",
                                "Deleting block blk_%d file /mnt/hadoop/dfs/data/current/subdir%d/blk_%d" % (blk, rng.randrange(64), blk)))
        out = out[:count - n]
        n += len(out)
        yield from out


def rehosted(records, hosts):
    """JSON records with `hosts` distinct host names (host-0001, ...) instead of five, or with
    `hosts` = "uuid": no host field and a new UUID as the key of every record, as a topic keyed
    by request id sends them (the worker then takes the key as the host)."""
    rng = random.Random(17)
    n = None if hosts == "uuid" else int(hosts)
    for rec in records:
        if "raw" not in rec:
            if n is None:
                rec.pop("host", None)
                rec["_key"] = "%08x-%04x-4%03x-%04x-%012x" % (rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12),
                                                          0x8000 | rng.getrandbits(14), rng.getrandbits(48))
            else:
                rec["host"] = "host-%04d" % rng.randrange(n)
        yield rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", default=os.environ.get("LOGLAKE_KAFKA_BROKERS"))
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=1, help="loghub: passes over the samples")
    ap.add_argument("--count", type=int, default=10000, help="generate, generate-hdfs: records")
    ap.add_argument("--base", default="2026-01-02T00:00:00+00:00", help="event time of the first record")
    ap.add_argument("--span", type=float, help="generate: spread event times over this many seconds")
    ap.add_argument("--dump", help="also write every payload, one per line, to this file")
    ap.add_argument("--compression", choices=["none", "gzip", "snappy", "lz4", "zstd"], default="none",
                    help="producer codec for the record batches (librdkafka compression.type)")
    ap.add_argument("--hosts", help="JSON records: N distinct hosts instead of five, or 'uuid': no host "
                                     "field and a new UUID key per record")
    ap.add_argument("source", choices=["loghub", "generate", "generate-hdfs", "lines"])
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
    elif a.source == "generate-hdfs":
        records = records_hdfs(a.count, base)
    else:
        records = records_generated(a.count, base, a.span)
    if a.hosts:
        if a.hosts != "uuid" and not a.hosts.isdigit():
            sys.exit(f"feed.py: --hosts {a.hosts!r}: a number of hosts, or uuid")
        records = rehosted(records, a.hosts)
    p = Producer({"bootstrap.servers": a.brokers, "linger.ms": 20, "batch.size": 1000000,
                  "compression.type": a.compression, "queue.buffering.max.messages": 500000})
    sent = nbytes = 0
    dump = open(a.dump, "wb") if a.dump else None
    t0 = time.time()
    for rec in records:
        key = rec.pop("_key", None) or rec["host"]
        value = rec["raw"] if "raw" in rec else json.dumps(rec, separators=(",", ":")).encode()
        while True:
            try:
                p.produce(a.topic, key=key.encode(), value=value)
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
    print(json.dumps({"records": sent, "bytes": nbytes, "seconds": round(time.time() - t0, 3), "compression": a.compression}))


if __name__ == "__main__":
    main()
