"""A minimal raw Kafka protocol producer (no client library), to put on a partition what no
client would produce: a record batch (magic v2) whose records nobody can decode.

  base = produce_undecodable_batch("127.0.0.1:9092", "topic", 0, records=3, codec=4)

appends one batch spanning offsets base .. base+records-1 whose attributes name a compression
codec (zstd by default) while its payload is garbage, or name a codec id Kafka never defined
(5, 6 or 7). The batch itself is well formed (lengths, CRC-32C), so the broker stores it; only
decompressing the records fails, in the consumer.

The connection goes to `bootstrap` directly, which must be the partition's leader (true for a
single-node Tansu; behind the TLS proxy of kafka_tls.py use its plain `tansu_port`).

What Tansu 0.6.0 and librdkafka 2.16 do with it (observed):
- codecs 1-4 with a garbage payload: Tansu stores the batch byte for byte (it does not
  decompress) and a Fetch at base, base+1, .. base+records-1 returns it from base.
- codecs 5-7: Tansu refuses the batch (partition error -1, UNKNOWN_SERVER_ERROR, logging
  UnknownCompressionType) yet still uses up its offsets: the next records land at base+records,
  a gap consumers skip silently.
- a librdkafka consumer delivers the records before the batch, then, every fetch.error.backoff.ms
  (500 ms) forever, an error event with offset = the batch's base offset, code -198
  _BAD_COMPRESSION, "Decompression (codec 0x4) of message at 5 of 120 bytes failed: Local:
  Invalid compressed data" (not retriable, not fatal); it never moves past the batch. Seeking
  to any offset inside the batch gives the same error (same base offset); seeking to
  base+records resumes normally.
"""
import socket
import struct
import time

PRODUCE, API_VERSIONS = 0, 18
PRODUCE_VERSION = 3  # the first version that takes only magic v2 batches; not flexible
CODECS = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd", 5: "undefined(5)", 6: "undefined(6)", 7: "undefined(7)"}
GARBAGE = b"loglake e2e: deliberately undecodable record batch payload\x00\xff" * 2

# -- CRC-32C (Castagnoli), as record batches v2 use ----------------------------------------


def _crc32c_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C of `data` (crc32c(b"123456789") == 0xE3069283)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- record batch v2 -------------------------------------------------------------------------


def _varint(n):
    z = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _bytes_field(b):
    return _varint(-1) if b is None else _varint(len(b)) + b


def encode_records(values, key=None):
    """The uncompressed records section for `values` (bytes or None each), offset deltas 0..n-1,
    timestamp delta 0, no headers: with codec 0 in record_batch() it makes a valid batch."""
    out = bytearray()
    for delta, value in enumerate(values):
        body = b"\x00" + _varint(0) + _varint(delta) + _bytes_field(key) + _bytes_field(value) + _varint(0)
        out += _varint(len(body)) + body
    return bytes(out)


def record_batch(records, count, codec=0, timestamp_ms=None):
    """A record batch v2 (base offset 0: the broker assigns the real one) around the records
    section `records` (as it would be after compression with `codec`, attributes bits 0-2),
    holding `count` records: lastOffsetDelta = count-1, no producer id, CRC-32C over
    attributes..end."""
    if timestamp_ms is None:
        timestamp_ms = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", codec, count - 1, timestamp_ms, timestamp_ms, -1, -1, -1, count) + records
    after_length = struct.pack(">ibI", -1, 2, crc32c(after_crc)) + after_crc  # leader epoch, magic, crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


# -- the wire ------------------------------------------------------------------------------


class BrokerError(Exception):
    """A broker's error code in a response (see the Kafka protocol's error table)."""

    def __init__(self, code, what):
        super().__init__(f"{what}: error code {code}")
        self.code = code


def _string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(bootstrap, api_key, api_version, body, timeout=10):
    """Send one request (header v1, client id "loglake-e2e-raw") on a fresh connection and return
    the response body after the correlation id (response header v0)."""
    host, _, port = bootstrap.rpartition(":")
    header = struct.pack(">hhi", api_key, api_version, 1) + _string("loglake-e2e-raw")
    with socket.create_connection((host, int(port)), timeout) as s:
        s.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", _recv(s, 4))[0]
        response = _recv(s, size)
    (correlation_id,) = struct.unpack_from(">i", response)
    assert correlation_id == 1, correlation_id
    return response[4:]


def _recv(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"broker closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def api_versions(bootstrap):
    """{api_key: (min_version, max_version)} the broker supports (ApiVersions v0)."""
    body = request(bootstrap, API_VERSIONS, 0, b"")
    error, n = struct.unpack_from(">hi", body)
    if error:
        raise BrokerError(error, "ApiVersions")
    return {k: (lo, hi) for k, lo, hi in (struct.unpack_from(">hhh", body, 6 + 6 * i) for i in range(n))}


def produce_batch(bootstrap, topic, partition, batch, timeout_ms=10_000):
    """Append the record batch bytes `batch` to topic/partition as they are (Produce v3,
    acks=all) and return the base offset the broker assigned; BrokerError if it refused."""
    lo, hi = api_versions(bootstrap).get(PRODUCE, (0, -1))
    if not lo <= PRODUCE_VERSION <= hi:
        raise RuntimeError(f"broker supports Produce v{lo}..v{hi}, not v{PRODUCE_VERSION}")
    body = (struct.pack(">hhi", -1, -1, timeout_ms)  # null transactional id, acks=all, timeout
            + struct.pack(">i", 1) + _string(topic)
            + struct.pack(">iii", 1, partition, len(batch)) + batch)
    response = request(bootstrap, PRODUCE, PRODUCE_VERSION, body, timeout=timeout_ms / 1000 + 5)
    # [topic: name [partition: index error_code base_offset log_append_time]] throttle_time
    (name_len,) = struct.unpack_from(">h", response, 4)
    index, error, base_offset, _ = struct.unpack_from(">ihqq", response, 6 + name_len + 4)
    assert index == partition, (index, partition)
    if error:
        raise BrokerError(error, f"Produce to {topic}/{partition}")
    return base_offset


def produce_undecodable_batch(bootstrap, topic, partition, records=3, codec=4, payload=GARBAGE):
    """Append one batch of `records` records that no client can decode: its attributes name
    compression `codec` (1 gzip, 2 snappy, 3 lz4, 4 zstd, or 5-7, never defined) but its records
    section is `payload`, garbage for every codec. The batch spans base .. base+records-1
    (lastOffsetDelta = records-1); returns base."""
    if codec not in CODECS:
        raise ValueError(f"codec {codec}: want one of {sorted(CODECS)} (0, none, would not compress)")
    return produce_batch(bootstrap, topic, partition, record_batch(payload, records, codec))
