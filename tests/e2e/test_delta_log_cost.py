"""An ingest commit's cost on the store does not grow with the table's age: as many LISTs of
`_delta_log` and as many log GETs at commit 36 as at commit 10, with or without the compactor's
checkpoint in between. The store's requests are counted by a faithful proxy in front of the
real S3 server."""
import os
import re
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from conftest import Lake, Worker, create_topic, free_port, log_record, produce

HERE = Path(__file__).parent
COMMITS = 36
CHECKPOINT_AT = 22


def test_ingest_commits_cost_the_same_as_the_log_grows(stack, tmp_path, workers):
    port = free_port()
    requests = tmp_path / "requests.log"
    proxy = subprocess.Popen([sys.executable, str(HERE / "s3_ignoring_proxy.py"), str(port),
                              stack["LOGLAKE_S3_ENDPOINT"], "--count", str(requests)])
    try:
        time.sleep(0.5)
        topic = f"logcost-{uuid.uuid4().hex[:6]}"
        create_topic(stack, topic, 1)
        lake = Lake(stack, "s3", [topic], tmp_path, ingest={"max_latency": "300ms"},
                    compactor={"grace": "1m", "checkpoint_every": 5})
        lake.config.write_text(lake.config.read_text().replace(stack["LOGLAKE_S3_ENDPOINT"],
                                                               f"http://127.0.0.1:{port}"))
        table = topic.replace("-", "_")
        uri = lake.table_uri(topic)
        w = Worker(lake)
        workers.append(w)
        # Read straight from the S3 server, not through the counting proxy.
        def version_and_rows():
            try:
                dt = DeltaTable(uri, storage_options=lake.storage_options())
            except Exception:
                return -1, 0
            adds = pa.table(dt.get_add_actions(flatten=True)).to_pydict()
            return dt.version(), sum(adds.get("num_records", []))

        sent = 0
        for wave in range(COMMITS):
            if wave == CHECKPOINT_AT:
                # The compactor's scheduled pass: it checkpoints the log (straight to the S3
                # server: only ingest's requests are counted).
                proxied = lake.config.read_text()
                lake.config.write_text(proxied.replace(f"http://127.0.0.1:{port}", stack["LOGLAKE_S3_ENDPOINT"]))
                lake.run("compact", timeout=120)
                lake.config.write_text(proxied)
            before, _ = version_and_rows()
            produce(stack, topic, [(0, b"h", log_record("2026-03-11T00:00:00Z", "h", sent + i)) for i in range(10)])
            sent += 10
            # One commit per wave: wait until it landed.
            deadline = time.time() + 30
            while (state := version_and_rows())[0] <= before or state[1] < sent:
                w.assert_alive()
                assert time.time() < deadline, w.tail()
                time.sleep(0.1)
        assert w.stop() == 0
    finally:
        proxy.kill()
        proxy.wait()

    log_prefix = f"{urllib.parse.urlparse(uri).path.lstrip('/')}/_delta_log/"
    commit_put = re.compile(r"^PUT /[^/]+/.*/_delta_log/\d{20}\.json")
    segments = [[]]
    for line in requests.read_text().splitlines():
        method, path = line.split(" ", 1)
        query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
        if method == "GET" and "list-type" in query and query.get("prefix", [""])[0].startswith(log_prefix):
            segments[-1].append(("list", query.get("start-after", [""])[0]))
        elif method == "GET" and "/_delta_log/" in path and not query:
            segments[-1].append(("get", path))
        if commit_put.match(line) and "/" + log_prefix in path:
            segments.append([])
    per_commit = [(sum(1 for k, _ in s if k == "list"), sum(1 for k, _ in s if k == "get"))
                  for s in segments[1:-1]]
    assert len(per_commit) >= COMMITS - 2, per_commit
    before, after = per_commit[CHECKPOINT_AT - 12:CHECKPOINT_AT - 2], per_commit[-10:]
    print(f"(LIST, GET) of _delta_log per ingest commit, the 10 before the checkpoint: {before}; "
          f"the last 10: {after}")
    # Listing does not grow with the log, and always starts past a known version. One commit
    # may list more: the one that finds the compactor's commit and rebases on it.
    lists = sorted(n for n, _ in per_commit[2:])
    assert lists[-2] <= lists[0] + 2, lists
    assert all(after_key for s in segments[3:] for k, after_key in s if k == "list")
    # Log entries read per commit: a constant few (the commits since the previous flush, read
    # once for their txn actions, plus the snapshot's own advance), before the compactor's
    # checkpoint as after it and at commit 36 as at commit 10 — not a replay of the log since
    # the last checkpoint, which grew by one GET per commit (14 -> 22 GETs at versions 12-21).
    # One commit may read more: the one that finds the compactor's commit and rebases on it.
    gets = [g for _, g in per_commit[2:]]
    print(f"log GETs per commit: {gets}")
    assert max(g for _, g in after) <= max(g for _, g in per_commit[2:12]), (before, after)
    assert sorted(gets)[-2] <= 10, gets


def test_a_compaction_pass_reads_each_commit_a_few_times_not_once_per_partition(stack, tmp_path, workers):
    """Ingest leaves checkpoints to the compactor, so a pass starts on a log with every commit
    since the previous pass after its checkpoint. The pass reads those commits when it loads
    the table and its txns, then only what each merge commits: a table with 8 hosts' hours to
    merge does not read its log again per partition (delta-rs's `transaction_version`, which
    the compactor's fence used, replays the log since the checkpoint on every call: twice per
    merged partition)."""
    hosts, waves = 8, 12
    port = free_port()
    requests = tmp_path / "requests.log"
    proxy = subprocess.Popen([sys.executable, str(HERE / "s3_ignoring_proxy.py"), str(port),
                              stack["LOGLAKE_S3_ENDPOINT"], "--count", str(requests)])
    try:
        topic = f"passcost-{uuid.uuid4().hex[:6]}"
        create_topic(stack, topic, 1)
        lake = Lake(stack, "s3", [topic], tmp_path, ingest={"max_latency": "300ms"},
                    compactor={"grace": "1m", "min_files": 2})
        uri = lake.table_uri(topic)
        table = topic.replace("-", "_")
        w = Worker(lake)
        workers.append(w)
        sent = 0
        for wave in range(waves):
            produce(stack, topic, [(0, b"k", log_record("2026-03-11T05:10:00Z", f"host-{h}", sent + h))
                                   for h in range(hosts)])
            sent += hosts
            lake.wait_count(table, sent, workers=[w])
        assert w.stop() == 0
        version = DeltaTable(uri, storage_options=lake.storage_options()).version()
        assert version >= waves, "one commit per wave at least"

        direct = lake.config.read_text()
        lake.config.write_text(direct.replace(stack["LOGLAKE_S3_ENDPOINT"], f"http://127.0.0.1:{port}"))
        out = lake.run("compact", timeout=180)
        assert f" {hosts} partitions merged" in out.stdout, out.stdout
        lake.config.write_text(direct)
    finally:
        proxy.kill()
        proxy.wait()

    reads = {}
    commit = re.compile(r"^GET /[^?]*/_delta_log/(\d{20})\.json$")
    for line in requests.read_text().splitlines():
        if (m := commit.match(line)) and "/" + urllib.parse.urlparse(uri).path.lstrip("/") in line:
            reads[int(m.group(1))] = reads.get(int(m.group(1)), 0) + 1
    # The commits ingest wrote, but its newest two (what the merges' own commits follow).
    ingested = [reads.get(v, 0) for v in range(version - 1)]
    print(f"GETs per log commit in a pass merging {hosts} partitions: {ingested}")
    # Measured: 7 each (the table's load, the txn replay, the checkpoint at the end), however
    # many partitions; with the fence replaying the log it was 7 + 2 per merged partition.
    assert all(n >= 1 for n in ingested), ingested
    assert max(ingested) <= 7 < hosts, ingested
    assert lake.count(table) == sent


def test_a_worker_past_100_commits_outlives_log_cleanup_and_stays_exact(stack, tmp_path, workers):
    """A worker's table handle (version, schema, progress: no file list) goes on past 100
    commits, reading only the commits after its own. While it idles, the compactor merges,
    checkpoints and cleans the log up to the worker's own last commit: the worker reads on
    from the compactor's commit after its own (a local lake's handle reads the next commits
    rather than listing the log; one whose next commit is gone too loads the table afresh,
    `lake/tests/commit.rs`), and every record is archived once."""
    topic = f"reopen-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 2)
    lake = Lake(stack, "local", [topic], tmp_path, ingest={"max_latency": "150ms"},
                compactor={"grace": "1m", "checkpoint_every": 5, "log_retention": "1m"})
    table = topic.replace("-", "_")
    w = Worker(lake)
    workers.append(w)
    sent = 0

    def trickle(n=6):
        nonlocal sent
        produce(stack, topic, [(i % 2, b"h", log_record("2026-03-12T00:00:00Z", "h", i))
                               for i in range(sent, sent + n)])
        sent += n
        time.sleep(0.2)

    deadline = time.time() + 240
    while w.log_path.read_text().count(" committed ") < 105:
        assert time.time() < deadline, w.tail()
        w.assert_alive()
        trickle()
    lake.wait_count(table, sent, workers=[w])
    log_dir = lake.dir / topic / "_delta_log"
    last = max(int(f.name[:20]) for f in log_dir.glob("*.json"))
    assert "loaded afresh" not in w.log_path.read_text(), "a steady writer reads commits, not the table"
    # The pass merges the hour (a commit after the worker's) and checkpoints; the next one
    # deletes the log entries before that checkpoint, the worker's last commit among them.
    lake.run("compact", timeout=120)
    old = time.time() - 120
    for f in log_dir.glob("*.json"):
        os.utime(f, (old, old))
    lake.run("compact", timeout=120)
    assert not (log_dir / f"{last:020d}.json").exists(), sorted(f.name for f in log_dir.glob("*.json"))
    before = w.log_path.read_text()
    commits_before = before.count(" committed ")
    for _ in range(10):
        trickle()
    lake.wait_count(table, sent, workers=[w])
    text = w.log_path.read_text()
    assert text.count(" committed ") > commits_before, "commits after the cleanup"
    # Its commits after the cleanup come after the compactor's merge (last + 1): it read
    # that commit rather than missing it.
    versions = [int(v) for v in re.findall(r" committed table=.* version=(\d+)", text[len(before):])]
    assert versions and min(versions) > last + 1, (last, versions)
    assert w.stop() == 0
    assert lake.scalar(f"SELECT count(DISTINCT (_kafka_partition, _kafka_offset)) FROM {table}") == sent
    assert lake.count(table) == sent


def test_a_pass_over_many_tables_lists_each_table_once_and_leaves_each_merged(stack, tmp_path, workers):
    """A lake of many topics: a pass works on several tables at once (their merges one at a
    time) and leaves every one merged and exact. Vacuum lists a table with one flat listing
    (1,000 keys a request), not delta-rs's default walk for multi-column partitioning (a
    delimiter listing of the table, one per host, then one per host-day: ~31,000 requests a
    pass for 1,000 hosts kept 30 days). `--table` probes that table only, not every table's
    log."""
    n_topics, hosts, waves = 6, 3, 3
    run_id = uuid.uuid4().hex[:6]
    topics = [f"many-{run_id}-{i}" for i in range(n_topics)]
    for t in topics:
        create_topic(stack, t, 1)
    lake = Lake(stack, "s3", topics, tmp_path, ingest={"max_latency": "300ms"},
                compactor={"grace": "1m", "min_files": 2, "table_concurrency": 4})
    w = Worker(lake)
    workers.append(w)
    sent = 0
    for wave in range(waves):
        for t in topics:
            produce(stack, t, [(0, b"k", log_record("2026-03-11T05:10:00Z", f"host-{h}", sent + h))
                               for h in range(hosts)])
        sent += hosts
        for t in topics:
            lake.wait_count(t.replace("-", "_"), sent, workers=[w])
    assert w.stop() == 0

    port = free_port()
    requests = tmp_path / "requests.log"
    proxy = subprocess.Popen([sys.executable, str(HERE / "s3_ignoring_proxy.py"), str(port),
                              stack["LOGLAKE_S3_ENDPOINT"], "--count", str(requests)])
    direct = lake.config.read_text()
    try:
        time.sleep(0.5)
        lake.config.write_text(direct.replace(stack["LOGLAKE_S3_ENDPOINT"], f"http://127.0.0.1:{port}"))
        out = lake.run("compact", timeout=300)
        assert f"{n_topics} tables (0 failed): {n_topics * hosts} partitions merged" in out.stdout, out.stdout
        pass_requests = requests.read_text().splitlines()
        requests.write_text("")
        out = lake.run("compact", "--table", topics[0], timeout=120)
        assert "1 tables (0 failed)" in out.stdout, out.stdout
        one_table_requests = requests.read_text().splitlines()
    finally:
        lake.config.write_text(direct)
        proxy.kill()
        proxy.wait()

    root = urllib.parse.urlparse(lake.url).path.lstrip("/")

    def listings(lines, topic):
        """(prefix, delimiter?) of each LIST under the topic's table, its log excepted."""
        out = []
        for line in lines:
            method, path = line.split(" ", 1)
            query = urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
            prefix = query.get("prefix", [""])[0]
            if method == "GET" and "list-type" in query and prefix.startswith(f"{root}/{topic}/") \
                    and "/_delta_log/" not in prefix:
                out.append((prefix, "delimiter" in query))
        return out

    for t in topics:
        table_lists = listings(pass_requests, t)
        assert table_lists == [(f"{root}/{t}/", False)], (t, table_lists)
    others = [line for line in one_table_requests for t in topics[1:] if f"/{t}/" in urllib.parse.unquote(line)]
    assert others == [], others[:5]

    for t in topics:
        table = t.replace("-", "_")
        assert lake.count(table) == sent
        assert lake.scalar(f"SELECT count(DISTINCT _kafka_offset) FROM {table}") == sent
        adds = pa.table(DeltaTable(lake.table_uri(t), storage_options=lake.storage_options())
                        .get_add_actions(flatten=True)).to_pydict()
        assert sorted(adds["partition.host"]) == sorted(f"host-{h}" for h in range(hosts)), (t, adds["partition.host"])
