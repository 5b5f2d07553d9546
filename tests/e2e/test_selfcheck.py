"""The store self-check refuses a store that ignores put-if-absent, accepts moto's S3 server
and a local directory, and can be overridden only by an explicit single-writer setting."""
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import Lake, Worker, free_port

HERE = Path(__file__).parent


@pytest.fixture
def ignoring_endpoint(stack):
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "s3_ignoring_proxy.py"), str(port), stack["LOGLAKE_S3_ENDPOINT"]])
    time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def with_endpoint(lake, endpoint, single_writer=False):
    text = lake.config.read_text().replace(lake.stack["LOGLAKE_S3_ENDPOINT"], endpoint)
    if single_writer:
        text = text.replace("[lake.s3]", "single_writer = true\n[lake.s3]")
    lake.config.write_text(text)
    return lake


def test_store_ignoring_put_if_absent_is_refused(stack, tmp_path, ignoring_endpoint):
    lake = with_endpoint(Lake(stack, "s3", ["t"], tmp_path), ignoring_endpoint)
    r = lake.run("check-store", check=False)
    assert r.returncode != 0
    assert "does not enforce put-if-absent" in r.stderr, r.stderr
    r = lake.run("ingest", check=False, timeout=60)
    assert r.returncode != 0
    assert "does not enforce put-if-absent" in r.stderr and "single_writer" in r.stderr, r.stderr


def test_single_writer_acknowledges_the_risk(stack, tmp_path, ignoring_endpoint, workers):
    topic = f"sw-{uuid.uuid4().hex[:6]}"
    lake = with_endpoint(Lake(stack, "s3", [topic], tmp_path), ignoring_endpoint, single_writer=True)
    assert lake.run("check-store", check=False).returncode != 0, "check-store always probes"
    w = Worker(lake)
    workers.append(w)
    deadline = time.time() + 30
    while "ingest started" not in w.log_path.read_text():
        w.assert_alive()
        assert time.time() < deadline, w.tail()
        time.sleep(0.2)
    assert "self-check skipped" in w.log_path.read_text()
    assert w.stop() == 0


@pytest.mark.parametrize("kind", ["s3", "file"])
def test_conditional_stores_are_accepted(stack, tmp_path, kind):
    lake = Lake(stack, kind, ["t"], tmp_path)
    r = lake.run("check-store")
    assert "enforces put-if-absent" in r.stdout
