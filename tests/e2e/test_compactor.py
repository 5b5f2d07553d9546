"""`loglake compact` on tables ingest wrote in many small flushes: closed hours become a few
sorted files with every row unchanged (same rows, same offsets, same values, read back by an
independent reader), the open hour is untouched, a second pass changes nothing, two compactors
at once never duplicate a row, retention removes expired hours from the table and vacuum from
the store, and the compactor (not ingest) keeps the Delta log short."""
import collections
import datetime
import subprocess
import threading
import time
import urllib.parse
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from conftest import Lake, Worker, create_topic, log_record, loglake_bin, produce

HOSTS = ["web-1", "web-2"]
CLOSED_HOURS = ["10", "11"]


def now_hour():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H")


def wave(n, start, open_hour=False):
    out = []
    for i in range(start, start + n):
        host = HOSTS[i % 2]
        if open_hour:
            ts = f"{now_hour()}:00:{i % 60:02d}.{i % 1000:03d}Z"
        else:
            ts = f"2026-03-01T{CLOSED_HOURS[i % 2 if i % 3 else 0]}:{(i * 7) % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z"
        out.append((i % 2, host.encode(), log_record(ts, host, i, level=["INFO", "WARN", "ERROR"][i % 3])))
    return out


def ingest_in_waves(stack, lake, topic, waves, per_wave, workers, open_waves=1):
    """Each wave is committed before the next is sent: one small file per (host, hour) per wave."""
    w = Worker(lake)
    workers.append(w)
    table = topic.replace("-", "_")
    sent = 0
    for k in range(waves + open_waves):
        produce(stack, topic, wave(per_wave, sent, open_hour=k >= waves))
        sent += per_wave
        lake.wait_count(table, sent, workers=[w])
    assert w.stop() == 0
    return sent


def dt(lake, topic):
    opts = lake.storage_options() if lake.kind == "s3" else None
    return DeltaTable(lake.table_uri(topic), storage_options=opts)


def rows_by_offset(lake, topic):
    t = dt(lake, topic).to_pyarrow_table()
    t = t.sort_by([("_kafka_partition", "ascending"), ("_kafka_offset", "ascending")])
    return t.to_pylist()


def files_by_partition(lake, topic):
    d = dt(lake, topic)
    files = collections.defaultdict(list)
    for add in pa.table(d.get_add_actions(flatten=True)).to_pylist():
        files[(add["partition.host"], add["partition.date"], add["partition.hour"])].append(add["path"])
    return files


def compact(lake, *args, check=True):
    return lake.run("compact", *args, check=check, timeout=300)


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_one_pass_merges_closed_hours_and_changes_no_row(stack, tmp_path, workers, kind):
    topic = f"compact-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, kind, [topic], tmp_path, ingest={"max_latency": "300ms"},
                compactor={"grace": "1m", "min_files": 2})
    total = ingest_in_waves(stack, lake, topic, waves=4, per_wave=300, workers=workers)
    before = rows_by_offset(lake, topic)
    assert len(before) == total
    files_before = files_by_partition(lake, topic)
    closed = {k for k in files_before if k[1] == "2026-03-01"}
    open_ = {k: sorted(v) for k, v in files_before.items() if k[1] != "2026-03-01"}
    assert closed and open_ and all(len(files_before[k]) >= 3 for k in closed), files_before

    dry = compact(lake, "--dry-run")
    assert "merge" in dry.stdout and "plan:" in dry.stdout, dry.stdout
    assert files_by_partition(lake, topic) == files_before, "--dry-run changed the table"

    out = compact(lake)
    assert "partitions merged" in out.stdout, out.stdout
    after = rows_by_offset(lake, topic)
    assert after == before, "rows changed"
    files_after = files_by_partition(lake, topic)
    for k in closed:
        assert len(files_after[k]) == 1, (k, files_after[k])
    assert {k: sorted(v) for k, v in files_after.items() if k in open_} == open_, "open hour touched"
    # Merged files are sorted by timestamp, written as ingest writes them.
    d = dt(lake, topic)
    fs = d.to_pyarrow_dataset().files
    for path in fs:
        if "2026-03-01" not in path:
            continue
        table = pq.read_table(path, filesystem=d.to_pyarrow_dataset().filesystem)
        ts = table["timestamp"].to_pylist()
        assert ts == sorted(ts), path
    # The engine agrees.
    assert lake.scalar(f"SELECT count(*) FROM {topic.replace('-', '_')}") == total

    version = dt(lake, topic).version()
    out2 = compact(lake)
    assert " 0 partitions merged" in out2.stdout, out2.stdout
    assert dt(lake, topic).version() == version, "a second pass committed something"


def test_two_compactors_at_once_never_duplicate(stack, tmp_path, workers):
    topic = f"compact2-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "s3", [topic], tmp_path, ingest={"max_latency": "300ms"},
                compactor={"grace": "1m", "min_files": 2})
    total = ingest_in_waves(stack, lake, topic, waves=4, per_wave=200, workers=workers, open_waves=0)
    before = rows_by_offset(lake, topic)
    procs = [subprocess.Popen([loglake_bin(), "compact", "--config", str(lake.config)], env=lake.env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    after = rows_by_offset(lake, topic)
    assert len(after) == total and after == before
    # One more pass finishes whatever a fenced compactor left.
    compact(lake)
    assert rows_by_offset(lake, topic) == before
    assert all(len(v) == 1 for v in files_by_partition(lake, topic).values())


def test_retention_removes_old_hours_and_vacuum_removes_their_files(stack, tmp_path, workers):
    topic = f"retain-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "local", [topic], tmp_path, ingest={"max_latency": "300ms"},
                compactor={"grace": "1m", "retention": "2h", "vacuum_delay": "1s", "vacuum_min_delay": "0s"})
    ingest_in_waves(stack, lake, topic, waves=2, per_wave=200, workers=workers, open_waves=1)
    table_dir = lake.dir / topic
    old_files = list(table_dir.glob("host=*/date=2026-03-01/hour=*/*.parquet"))
    assert old_files
    compact(lake)
    table = topic.replace("-", "_")
    assert lake.scalar(f"SELECT count(*) FROM {table} WHERE date = '2026-03-01'") == 0
    assert lake.scalar(f"SELECT count(*) FROM {table}") == 200, "the open hour stays"
    # The removed files are gone from the store once the vacuum delay has passed.
    time.sleep(2)
    compact(lake)
    assert not [f for f in old_files if f.exists()], "expired files still in the store"
    assert not list(table_dir.glob("host=*/date=2026-03-01/hour=*/*.parquet"))
    assert lake.scalar(f"SELECT count(*) FROM {table}") == 200


def test_ingest_leaves_log_upkeep_to_the_compactor(stack, tmp_path, workers):
    topic = f"logs-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 1)
    lake = Lake(stack, "local", [topic], tmp_path, ingest={"max_latency": "200ms"},
                compactor={"grace": "1m", "checkpoint_every": 5, "log_retention": "1m"})
    w = Worker(lake)
    workers.append(w)
    table = topic.replace("-", "_")
    sent = 0
    for k in range(12):
        produce(stack, topic, [(0, b"web-1", log_record(f"2026-03-02T0{(k + i) % 3}:00:{i:02d}Z", "web-1", sent + i)) for i in range(20)])
        sent += 20
        lake.wait_count(table, sent, workers=[w])
    assert w.stop() == 0
    log_dir = lake.dir / topic / "_delta_log"
    assert not list(log_dir.glob("*.checkpoint.parquet")), "ingest wrote a checkpoint"
    commits = sorted(log_dir.glob("*.json"))
    assert len(commits) >= 12
    def codecs():
        return {pq.ParquetFile(uri.removeprefix("file://")).metadata.row_group(0).column(0).compression
                for uri in dt(lake, topic).file_uris()}
    # Ingest wrote these 6-7-row files with Snappy (too small for zstd); merged, they are zstd.
    assert codecs() == {"SNAPPY"}
    compact(lake)
    assert list(log_dir.glob("*.checkpoint.parquet")), "the compactor wrote no checkpoint"
    assert codecs() == {"ZSTD"}
    # Log entries older than log_retention and older than the checkpoint go on a later pass.
    old = time.time() - 120
    for f in log_dir.glob("*.json"):
        import os
        os.utime(f, (old, old))
    compact(lake)
    remaining = sorted(log_dir.glob("*.json"))
    assert len(remaining) < len(commits), (len(remaining), len(commits))
    # Progress survives the cleanup: a new worker resumes without duplicates.
    w2 = Worker(lake, "again")
    workers.append(w2)
    produce(stack, topic, [(0, b"web-1", log_record("2026-03-02T05:00:00Z", "web-1", sent))])
    lake.wait_count(table, sent + 1, workers=[w2])
    assert w2.stop() == 0
    assert lake.scalar(f"SELECT count(DISTINCT _kafka_offset) FROM {table}") == sent + 1


def test_compaction_passes_while_two_workers_stream_lose_and_duplicate_nothing(stack, tmp_path, workers):
    topic = f"busy-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "s3", [topic], tmp_path, ingest={"max_latency": "300ms"},
                compactor={"grace": "1m", "min_files": 2})
    table = topic.replace("-", "_")
    workers += [Worker(lake, "a"), Worker(lake, "b")]
    sent = 0
    stop = threading.Event()
    errors = []

    def stream():
        # Late records keep arriving for the closed hours the compactor rewrites.
        nonlocal sent
        while not stop.is_set():
            produce(stack, topic, wave(100, sent))
            sent += 100
            time.sleep(0.2)

    producer = threading.Thread(target=stream)
    producer.start()
    passes = 0
    try:
        deadline = time.time() + 25
        while time.time() < deadline:
            r = compact(lake, check=False)
            if r.returncode != 0:
                errors.append(r.stderr[-2000:])
            passes += 1
    finally:
        stop.set()
        producer.join()
    assert not errors, errors
    lake.wait_count(table, sent, workers=workers, timeout=180)
    metrics = [w.metrics() for w in workers]
    assert [w.stop() for w in workers] == [0, 0]
    assert passes >= 3
    assert lake.scalar(f"SELECT count(*) FROM (SELECT _kafka_partition, _kafka_offset FROM {table} "
                       f"GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
    assert lake.scalar(f"SELECT count(*) FROM {table}") == sent
    # The compactor never made ingest drop a batch.
    assert all(m.get("loglake_ingest_commit_conflicts_total", 0) == 0 for m in metrics), metrics
    compact(lake)
    assert all(len(v) == 1 for v in files_by_partition(lake, topic).values())
    assert lake.scalar(f"SELECT count(*) FROM {table}") == sent


def test_a_compactor_killed_anywhere_leaves_a_correct_table(stack, tmp_path, workers):
    topic = f"killed-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "local", [topic], tmp_path, ingest={"max_latency": "300ms"},
                compactor={"grace": "1m", "vacuum_delay": "1s", "vacuum_min_delay": "0s"})
    ingest_in_waves(stack, lake, topic, waves=6, per_wave=400, workers=workers, open_waves=0)
    before = rows_by_offset(lake, topic)
    for delay in (0.3, 0.6, 0.9, 1.2, 1.6):
        p = subprocess.Popen([loglake_bin(), "compact", "--config", str(lake.config)], env=lake.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        p.kill()
        p.wait()
        assert rows_by_offset(lake, topic) == before, f"rows changed after a kill at {delay}s"
    compact(lake)
    assert rows_by_offset(lake, topic) == before
    assert all(len(v) == 1 for v in files_by_partition(lake, topic).values())
    # Whatever the killed passes wrote and never committed is vacuumed.
    time.sleep(2)
    compact(lake)
    live = {p for v in files_by_partition(lake, topic).values() for p in v}
    on_disk = {str(f.relative_to(lake.dir / topic)) for f in (lake.dir / topic).glob("host=*/date=*/hour=*/*.parquet")}
    assert on_disk == live, on_disk - live


def test_queries_during_compaction_and_retention_see_consistent_snapshots(stack, tmp_path, workers):
    topic = f"readers-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "s3", [topic], tmp_path, ingest={"max_latency": "300ms"},
                compactor={"grace": "1m", "retention": "400d"})
    table = topic.replace("-", "_")
    kept = ingest_in_waves(stack, lake, topic, waves=4, per_wave=250, workers=workers, open_waves=0)
    w = Worker(lake, "old")
    workers.append(w)
    # Records from long ago: retention removes them during the pass.
    produce(stack, topic, [(i % 2, b"web-1", log_record(f"2024-01-05T0{i % 4}:00:{i % 60:02d}Z", "web-1", 10_000 + i))
                           for i in range(300)])
    lake.wait_count(table, kept + 300, workers=[w])
    assert w.stop() == 0
    p = subprocess.Popen([loglake_bin(), "compact", "--config", str(lake.config)], env=lake.env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answers = []
    while p.poll() is None or len(answers) < 3:
        rows = lake.query(f"SELECT count(*) AS total, count(*) FILTER (WHERE date = '2026-03-01') AS recent FROM {table}")
        answers.append((rows[0]["total"], rows[0]["recent"]))
    out, err = p.communicate()
    assert p.returncode == 0, err[-2000:]
    assert all(recent == kept for _, recent in answers), answers
    totals = [t for t, _ in answers]
    assert set(totals) <= {kept + 300, kept}, answers
    assert totals == sorted(totals, reverse=True), "an answer went back to an older snapshot"
    assert lake.scalar(f"SELECT count(*) FROM {table}") == kept


def busy_wave(k, per_host, hosts, start_seq):
    """Quarter-hour k of hour 10 for every host, each host's records in time order on its own
    partition: how a busy host's stream arrives, one flush per quarter."""
    out = []
    base = datetime.datetime(2026, 3, 1, 10, tzinfo=datetime.timezone.utc) + datetime.timedelta(minutes=15 * k)
    step = datetime.timedelta(minutes=15) / per_host
    for j in range(per_host):
        ts = (base + j * step).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for p, host in enumerate(hosts):
            seq = start_seq + j * len(hosts) + p
            extra = {"user": f"u{seq % 7}"} if seq % 3 == 0 else {}
            out.append((p, host.encode(), log_record(ts, host, seq, level=["INFO", "WARN", "ERROR"][seq % 3], **extra)))
    return out


def host_of(path, hosts):
    return next(h for h in hosts if f"host={h}/" in urllib.parse.unquote(path))


def row_groups_per_host(lake, topic, hosts):
    dataset = dt(lake, topic).to_pyarrow_dataset()
    groups = collections.Counter()
    for path in dataset.files:
        groups[host_of(path, hosts)] += pq.ParquetFile(dataset.filesystem.open_input_file(path)).num_row_groups
    return groups


def merged_lines(out, method):
    """How many merges the compactor's log says were done by `method`."""
    return sum(1 for line in out.stderr.splitlines() if f'method="{method}"' in line or f"method={method}" in line.split())


def delta_ms(ts):
    """A timestamp as Delta statistics write it (milliseconds, UTC)."""
    return ts.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_large_inputs_in_time_order_are_merged_by_copying_row_groups(stack, tmp_path, kind):
    """A busy host's flushes cover consecutive time ranges with row groups of a useful size: the
    merge copies their encoded row groups instead of decoding them. The table must read exactly
    as before, sorted, with statistics true to the data (queries prune by them); a late record
    into the hour makes the next pass decode and merge again."""
    topic = f"compact-copy-{uuid.uuid4().hex[:6]}"
    hosts = ["db-1:5432", "web-1"]  # ':' survives host sanitising and needs escaping in paths
    create_topic(stack, topic, len(hosts))
    lake = Lake(stack, kind, [topic], tmp_path, ingest={"max_latency": "5s"},
                compactor={"grace": "1m", "min_files": 2})
    table = topic.replace("-", "_")
    per_host, sent = 17_000, 0
    for k in range(3):
        # The wave is in Kafka before the worker starts: one file per host per wave.
        sent += produce(stack, topic, busy_wave(k, per_host, hosts, sent))
        w = Worker(lake, name=f"w{k}")
        lake.wait_count(table, sent, workers=[w])
        assert w.stop() == 0
    before = rows_by_offset(lake, topic)
    files_before = files_by_partition(lake, topic)
    assert sorted(len(v) for v in files_before.values()) == [3, 3], files_before
    groups_before = row_groups_per_host(lake, topic, hosts)
    # The statistics ingest's writer gives every file: the merged file must have them all.
    adds_before = pa.table(dt(lake, topic).get_add_actions(flatten=True)).to_pylist()
    with_stats = {k for a in adds_before for k, v in a.items() if k.startswith(("min.", "max.", "null_count.")) and v is not None}
    # Two compactors at once, as two overlapping cron runs would: the fence lets one commit
    # each hour; a copy the other made is an orphan, never a second copy of the rows.
    procs = [subprocess.Popen([loglake_bin(), "compact", "--log", "info", "--config", str(lake.config)],
                              env=lake.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    assert all(p.returncode == 0 for p in procs), [o.stderr[-3000:] for o in outs]
    assert sum(merged_lines(o, "copy") for o in outs) == 2, [o.stderr[-3000:] for o in outs]
    assert rows_by_offset(lake, topic) == before, "rows changed"
    d = dt(lake, topic)
    adds = {urllib.parse.unquote(a["path"]).rsplit("/", 1)[1]: a
            for a in pa.table(d.get_add_actions(flatten=True)).to_pylist()}
    assert sorted(len(v) for v in files_by_partition(lake, topic).values()) == [1, 1]
    dataset = d.to_pyarrow_dataset()
    assert row_groups_per_host(lake, topic, hosts) == groups_before
    rows_per_host = collections.Counter()
    for path in dataset.files:
        f = pq.ParquetFile(dataset.filesystem.open_input_file(path))
        # Copied: the inputs' row groups, each declaring its sort order.
        assert all(f.metadata.row_group(i).sorting_columns for i in range(f.num_row_groups)), path
        data = f.read()
        ts = data["timestamp"].to_pylist()
        assert ts == sorted(ts), path
        rows_per_host[host_of(path, hosts)] += len(ts)
        add = adds[path.rsplit("/", 1)[1]]
        assert add["num_records"] == len(ts)
        assert delta_ms(add["min.timestamp"]) == delta_ms(min(ts))
        assert delta_ms(add["max.timestamp"]) == delta_ms(max(ts))
        assert add["min.level"] == min(data["level"].to_pylist()) and add["max.level"] == max(data["level"].to_pylist())
        assert add["min._kafka_offset"] == min(data["_kafka_offset"].to_pylist())
        assert add["max._kafka_offset"] == max(data["_kafka_offset"].to_pylist())
        assert {k for k, v in add.items() if k in with_stats and v is not None} == with_stats, add
        for column in data.column_names:
            if f"null_count.{column}" in with_stats:
                assert add[f"null_count.{column}"] == data[column].null_count, (column, path)
    assert rows_per_host == {h: 3 * per_host for h in hosts}
    # The engine prunes by those statistics and still counts right.
    q = (f"SELECT count(*) FROM {table} WHERE timestamp >= '2026-03-01T10:20:00Z' "
         f"AND timestamp < '2026-03-01T10:35:00Z'")
    lo = datetime.datetime(2026, 3, 1, 10, 20, tzinfo=datetime.timezone.utc)
    hi = datetime.datetime(2026, 3, 1, 10, 35, tzinfo=datetime.timezone.utc)
    assert lake.scalar(q) == sum(1 for r in before if lo <= r["timestamp"] < hi)
    # The query service finds a host whose directory name is escaped by its partition value
    # and reads its files (the message lengths need the data, not only the statistics).
    for host in hosts:
        q = f"SELECT count(*) AS n, sum(length(message)) AS chars FROM {table} WHERE host = '{host}'"
        mine = [r for r in before if r["host"] == host]
        assert lake.query(q) == [{"n": len(mine), "chars": sum(len(r["message"] or "") for r in mine)}], host

    # A late record lands inside the copied hour: the next pass must decode and merge again.
    late = (0, hosts[0].encode(), log_record("2026-03-01T10:01:00.000Z", hosts[0], sent, level="ERROR"))
    sent += produce(stack, topic, [late])
    w = Worker(lake, name="late")
    lake.wait_count(table, sent, workers=[w])
    assert w.stop() == 0
    before = rows_by_offset(lake, topic)
    out = compact(lake, "--log", "info")
    assert merged_lines(out, "decode") == 1, out.stderr[-3000:]
    assert " 1 partitions merged (0 by copying row groups)" in out.stdout, out.stdout
    assert rows_by_offset(lake, topic) == before
    files = files_by_partition(lake, topic)
    assert sorted(len(v) for v in files.values()) == [1, 1], files
    dataset = dt(lake, topic).to_pyarrow_dataset()
    for path in dataset.files:
        ts = pq.read_table(dataset.filesystem.open_input_file(path))["timestamp"].to_pylist()
        assert ts == sorted(ts), path
