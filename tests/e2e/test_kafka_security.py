"""A cluster reached over TLS, as production clusters are: archiving works with the right CA;
an untrusted certificate or refused credentials fail at start, fast, non-zero, with the reason,
and a password never shows in the output.

TLS is terminated by a small proxy in front of Tansu (kafka_tls.py). Tansu 0.6 cannot
authenticate SASL clients librdkafka speaks (no PLAIN, SCRAM credentials are not stored), so
SASL's mapping onto librdkafka is covered by the ingest crate's unit tests; here a SASL client
meets a broker that offers no SASL, which must fail as cleanly as a wrong password."""
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Lake, Worker, log_record, loglake_bin
from kafka_tls import start_tls_broker, stop

PASSWORD = "hunter2-must-never-be-printed"


@pytest.fixture
def tls_broker(tmp_path):
    broker = start_tls_broker(tmp_path / "tls")
    yield broker
    stop(broker)


def client_config(broker):
    return {"bootstrap.servers": broker["brokers"], "security.protocol": "SSL", "ssl.ca.location": broker["ca"]}


def create_topic_over_tls(broker, topic, partitions):
    admin = AdminClient(client_config(broker))
    for _, f in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).items():
        f.result(15)


def test_archive_over_tls_with_the_clusters_ca(stack, tls_broker, tmp_path, workers):
    topic = f"tls-{uuid.uuid4().hex[:6]}"
    create_topic_over_tls(tls_broker, topic, 2)
    p = Producer({**client_config(tls_broker), "linger.ms": 5})
    for i in range(800):
        host = f"web-{i % 2}"
        p.produce(topic, key=host.encode(), partition=i % 2,
                  value=log_record(f"2026-05-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z", host, i))
    assert p.flush(30) == 0
    lake = Lake(stack, "local", [topic], tmp_path, brokers=tls_broker["brokers"],
                kafka={"security_protocol": "ssl", "ssl_ca_location": tls_broker["ca"]})
    workers.append(Worker(lake))
    table = topic.replace("-", "_")
    lake.wait_count(table, 800, workers=workers)
    assert workers[0].stop() == 0
    assert lake.scalar(f"SELECT count(DISTINCT _kafka_offset * 2 + _kafka_partition) FROM {table}") == 800


def run_ingest(lake, timeout=60):
    started = time.monotonic()
    r = lake.run("ingest", check=False, timeout=timeout)
    return r, time.monotonic() - started


def test_untrusted_certificate_fails_fast_with_the_reason(stack, tls_broker, tmp_path):
    lake = Lake(stack, "local", ["anything"], tmp_path, brokers=tls_broker["brokers"],
                kafka={"security_protocol": "ssl", "ssl_ca_location": tls_broker["wrong_ca"]})
    r, took = run_ingest(lake)
    assert r.returncode != 0
    assert "certificate verify failed" in r.stderr, r.stderr[-2000:]
    assert tls_broker["brokers"] in r.stderr
    assert took < 15, f"took {took:.1f}s to give up"


def test_refused_sasl_login_fails_fast_and_never_prints_the_password(stack, tls_broker, tmp_path):
    lake = Lake(stack, "local", ["anything"], tmp_path, brokers=tls_broker["brokers"],
                kafka={"security_protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_username": "archiver", "sasl_password": PASSWORD,
                       "ssl_ca_location": tls_broker["ca"]})
    env = lake.env()
    env["LOGLAKE_LOG"] = "debug"
    started = time.monotonic()
    r = subprocess.run([loglake_bin(), "ingest", "--config", str(lake.config)], env=env,
                       capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert r.returncode != 0
    assert "could not reach the Kafka cluster" in r.stderr, r.stderr[-2000:]
    assert "SASL" in r.stderr or "sasl" in r.stderr, r.stderr[-2000:]
    assert PASSWORD not in r.stderr + r.stdout
    assert took < 30, f"took {took:.1f}s to give up"


def test_password_from_the_environment_is_not_in_errors(stack, tmp_path):
    # A configuration error after the password was read: the message names the key, never the value.
    lake = Lake(stack, "local", ["anything"], tmp_path,
                kafka={"security_protocol": "sasl_ssl", "sasl_mechanism": "SCRAM-SHA-256",
                       "ssl_ca_location": "/nonexistent/ca.pem"})
    env = lake.env()
    env["LOGLAKE_KAFKA_SASL_USERNAME"] = "archiver"
    env["LOGLAKE_KAFKA_SASL_PASSWORD"] = PASSWORD
    r = subprocess.run([loglake_bin(), "ingest", "--config", str(lake.config)], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "kafka.ssl_ca_location" in r.stderr and "no such file" in r.stderr, r.stderr
    assert PASSWORD not in r.stderr + r.stdout
