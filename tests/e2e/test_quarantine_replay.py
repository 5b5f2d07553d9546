"""A worker dies between a flush's two commits (quarantine committed, data not), and the
topic's schema file changes before the next start, as users change them. Whatever the new
schema makes of the records in that range, each one ends up exactly once: a record the
quarantine table already holds is not stored again (it was bad, now good), and a record it
does not hold is stored or quarantined now (it was good, now bad) — never skipped.

The crash is the worker's test failpoint `LOGLAKE_TEST_FAILPOINT=after_quarantine_commit`,
which aborts the process right after the quarantine commit."""
import json
import subprocess
import uuid

from conftest import Lake, Worker, create_topic, loglake_bin, produce


def records(topic):
    """20 JSON records, six with a long text `n` (the rest: small integers), and 2
    malformed ones (bad under any schema)."""
    out = []
    for i in range(22):
        if i in (7, 15):
            value = b'{"timestamp": "2026-04-01T00:00:00Z", "host": "h1", broken'
        else:
            n = "x" * 150 if i % 4 == 0 else i
            value = json.dumps({"timestamp": f"2026-04-01T00:00:{i:02d}Z", "host": "h1", "message": f"m{i}",
                                "n": n}).encode()
        out.append((0, b"h1", value))
    return out


def crash_after_quarantine_commit(lake):
    env = {**lake.env(), "LOGLAKE_TEST_FAILPOINT": "after_quarantine_commit"}
    r = subprocess.run([loglake_bin(), "ingest", "--config", str(lake.config)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "after_quarantine_commit" in r.stderr, r.stderr[-2000:]


def setup(stack, tmp_path, name, first_schema):
    topic = f"qreplay-{name}-{uuid.uuid4().hex[:6]}"
    create_topic(stack, topic, 1)
    schemas = tmp_path / f"schemas-{name}"
    schemas.mkdir()
    schema_file = schemas / f"{topic}.toml"
    schema_file.write_text(first_schema)
    lake = Lake(stack, "s3", [topic], tmp_path, schemas_dir=schemas)
    produce(stack, topic, records(topic))
    crash_after_quarantine_commit(lake)
    return topic, topic.replace("-", "_"), schema_file, lake


def finish(lake, table, workers, data, quarantined):
    w = Worker(lake)
    workers.append(w)
    lake.wait_count(table, data, workers=[w])
    lake.wait_count(f"{table}__rejected", quarantined, workers=[w])
    assert w.stop() == 0
    offsets = [r["o"] for r in lake.query(f"SELECT _kafka_offset AS o FROM {table}")]
    offsets += [r["o"] for r in lake.query(f"SELECT _kafka_offset AS o FROM {table}__rejected")]
    assert sorted(offsets) == list(range(22)), f"every record exactly once: {sorted(offsets)}"


def test_good_then_bad_is_quarantined_not_lost(stack, tmp_path, workers):
    # v1 takes every JSON record; v2 adds a typed column `n` that the six long texts do not fit.
    topic, table, schema_file, lake = setup(stack, tmp_path, "gb", "")
    assert lake.count(f"{table}__rejected") == 2 and lake.count(table) == 0, "crashed between the commits"
    schema_file.write_text('[[columns]]\nname = "n"\ntype = "int64"\n')
    finish(lake, table, workers, data=14, quarantined=8)
    reasons = {r["reason_code"]: r["k"] for r in lake.query(
        f"SELECT reason_code, count(*) AS k FROM {table}__rejected GROUP BY reason_code")}
    assert sum(reasons.values()) == 8 and len(reasons) == 2, reasons


def test_bad_then_good_is_not_stored_twice(stack, tmp_path, workers):
    # v1 refuses records over 120 bytes (the six long ones); v2 takes them.
    topic, table, schema_file, lake = setup(stack, tmp_path, "bg", "max_record_bytes = 120\n")
    assert lake.count(f"{table}__rejected") == 8 and lake.count(table) == 0, "crashed between the commits"
    schema_file.write_text("")
    finish(lake, table, workers, data=14, quarantined=8)
